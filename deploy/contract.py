#!/usr/bin/env python3
"""Reads deploy/contract.yaml, the one source of truth for images, command lines, ports and
mounts, for deploy/lint.py (import) and scripts/check-containers.sh (command line):

    deploy/contract.py get KEY[.KEY...]          a value (lists space-separated)
    deploy/contract.py image BINARY [DEVICE]     NAME:VERSION of the image that runs BINARY
                                                 (on DEVICE, for the worker: cpu or cuda)
    deploy/contract.py coordinator-host          the host name workers dial (their --coordinator)
    deploy/contract.py run-flags BINARY SECRETS [PATH=VOLUME...]
        `docker run` flags that run BINARY's image as Kubernetes runs its pod: the uid, a
        read-only root filesystem, no capabilities, no privilege escalation, SECRETS/<dir>
        mounted read-only at each Secret directory, and each writable path a tmpfs (as an
        emptyDir) unless PATH=VOLUME names a volume for it.
    deploy/contract.py stage-secrets BINARY CERT_DIR SECRETS
        copies the files of `coordinator tls init` (CERT_DIR) that BINARY's Secrets hold into
        SECRETS/<dir>/<key>, readable by the contract's uid only (mode 0400), as a Secret
        volume with defaultMode 0400 mounts them.
"""

import os
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PATH = ROOT / "deploy/contract.yaml"


def load():
    return yaml.safe_load(PATH.read_text())


def image_ref(c, name):
    return f"{name}:{c['version']}"


def command(c, image):
    """The full command line of an image: the binary's command, plus its device if it has one."""
    spec = c["images"][image]
    args = list(c["commands"][spec["binary"]])
    if spec.get("device"):
        args.append(f"--device={spec['device']}")
    return args


def run_flags(c, binary, secrets, volumes):
    uid = c["uid"]
    flags = ["--user", f"{uid}:{uid}", "--read-only", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges"]
    for d in c["secrets"][binary]:
        flags += ["-v", f"{Path(secrets).resolve()}{d}:{d}:ro"]
    for p in c["writable"][binary]:
        if p in volumes:
            flags += ["-v", f"{volumes[p]}:{p}"]
        else:
            # Owned by the uid, as an emptyDir is under the pod's fsGroup (mode= is not honoured
            # by every engine; Docker 20.10 here left such a tmpfs root-owned).
            flags += ["--tmpfs", f"{p}:rw,uid={uid},gid={uid}"]
    return flags


def stage_secrets(c, binary, cert_dir, secrets):
    uid = c["uid"]
    for d, keys in c["secrets"][binary].items():
        dest = Path(secrets + d)
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o755)
        for k in keys:
            shutil.copyfile(Path(cert_dir) / k, dest / k)
            os.chown(dest / k, uid, uid)
            os.chmod(dest / k, 0o400)


def main(argv):
    c = load()
    if len(argv) >= 2 and argv[0] == "get":
        value = c
        for k in argv[1].split("."):
            value = value[k]
        if isinstance(value, (list, dict)):
            print(" ".join(map(str, value)))
        elif value is not None:
            print(value)
    elif len(argv) in (2, 3) and argv[0] == "image":
        device = argv[2] if len(argv) == 3 else None
        names = [n for n, s in c["images"].items() if s["binary"] == argv[1] and s.get("device") == device]
        if len(names) != 1:
            sys.exit(f"contract: no single image runs {argv[1]} on {device}: {names}")
        print(image_ref(c, names[0]))
    elif argv == ["coordinator-host"]:
        url = next(a.split("=", 1)[1] for a in c["commands"]["worker"] if a.startswith("--coordinator="))
        print(url.split("://", 1)[1].rsplit(":", 1)[0])
    elif len(argv) >= 3 and argv[0] == "run-flags":
        volumes = dict(v.split("=", 1) for v in argv[3:])
        print(" ".join(run_flags(c, argv[1], argv[2], volumes)))
    elif len(argv) == 4 and argv[0] == "stage-secrets":
        stage_secrets(c, *argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
