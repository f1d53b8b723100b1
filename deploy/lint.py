#!/usr/bin/env python3
"""Checks the deployment files against each other and against the binaries.

There is no Docker engine (and no hadolint) where CI runs, so the Dockerfiles are parsed here:
every stage pinned, the final stage non-root, every `COPY --from` naming an earlier stage, the
packages built being workspace members and the entrypoint a binary that was copied in.

Then every command-line flag that the Kubernetes manifests (Deployments and Jobs, such as the
sweep-submit Job's `coordinator submit`), the Dockerfiles and the systemd units pass to
`coordinator` or `worker` is looked up in that binary's (or subcommand's) own `--help`, so
renaming a flag cannot leave a deployment that fails at start.

In the manifests, every absolute path a container is given must lie under one of its
volumeMounts, and a path into a Secret or ConfigMap volume must name a key that the object of
that name has in one of the rendered files (so a Job applied on its own still finds what the
base defines, by its exact name).

    deploy/lint.py BIN_DIR RENDERED.yaml...
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
BINARIES = ("coordinator", "worker")
errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def workspace_members():
    text = (ROOT / "Cargo.toml").read_text()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", text).group(1)
    names = set()
    for m in re.findall(r'"([^"]+)"', members):
        pkg = re.search(r'^name\s*=\s*"([^"]+)"', (ROOT / m / "Cargo.toml").read_text(), re.M)
        names.add(pkg.group(1))
    return names


def check_dockerfile(path, uses):
    where = path.relative_to(ROOT)
    df = DockerfileParser(path=str(path))
    stages, final_user, copied, entry = [], None, set(), None
    for ins in df.structure:
        cmd, value = ins["instruction"], ins["value"]
        if cmd == "FROM":
            parts = value.split()
            image = parts[0]
            if ":" not in image or image.endswith(":latest"):
                fail(where, f"line {ins['startline'] + 1}: base image `{image}` is not pinned to a tag")
            stages.append(parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None)
            final_user, copied, entry = None, set(), None
        elif cmd == "USER":
            final_user = value.split(":")[0]
        elif cmd == "COPY":
            m = re.match(r"--from=(\S+)\s+(\S+)\s+(\S+)", value)
            if m:
                if m.group(1) not in stages[:-1]:
                    fail(where, f"line {ins['startline'] + 1}: COPY --from={m.group(1)} names no earlier stage")
                copied.add(m.group(3))
        elif cmd == "RUN":
            for pkg in re.findall(r"cargo build [^&]*-p (\S+)", value):
                if pkg not in workspace_members():
                    fail(where, f"builds `{pkg}`, which is not a workspace member")
        elif cmd == "ENTRYPOINT":
            entry = yaml.safe_load(value)
        elif cmd == "CMD":
            args = yaml.safe_load(value)
            uses.append((str(where), path.stem.split(".")[0], args))
    if final_user in (None, "0", "root"):
        fail(where, "the final stage runs as root (add a USER with a non-zero uid)")
    if not entry or entry[0] not in copied:
        fail(where, f"ENTRYPOINT {entry} is not a binary copied into the final stage")


def load_rendered(paths):
    """Every object of the rendered files, and their Secrets' and ConfigMaps' keys by name."""
    docs, keys = [], {}
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc:
                continue
            docs.append((path, doc))
            if doc.get("kind") in ("Secret", "ConfigMap"):
                meta = doc["metadata"]
                names = set(doc.get("data") or {}) | set(doc.get("stringData") or {})
                ident = (doc["kind"], meta.get("namespace"), meta["name"])
                keys[ident] = keys.get(ident, set()) | names
    return docs, keys


def check_paths(where, spec, container, keys, namespace):
    """Absolute paths in the args must be mounted, and keys of Secret/ConfigMap volumes exist."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = [(m["mountPath"].rstrip("/"), volumes.get(m["name"])) for m in container.get("volumeMounts", [])]
    for a in container.get("args", []):
        value = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
        if not value.startswith("/"):
            continue
        under = [(mp, v) for mp, v in mounts if value.startswith(mp + "/")]
        if not under:
            fail(where, f"{container['name']}: {value} is under no volumeMount")
            continue
        mp, vol = max(under, key=lambda m: len(m[0]))
        for kind, field, name_field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if not vol or field not in vol or vol[field].get("optional"):
                continue
            name = vol[field][name_field]
            ident = (kind, namespace, name)
            if ident not in keys:
                fail(where, f"{container['name']}: {value}: no rendered {kind} {name} in namespace {namespace}")
            elif value[len(mp) + 1:].split("/")[0] not in keys[ident]:
                fail(where, f"{container['name']}: {value}: {kind} {name} has no key {value[len(mp) + 1:]}")


def manifest_uses(docs, keys, uses):
    for path, doc in docs:
        if doc.get("kind") not in ("Deployment", "Job", "StatefulSet"):
            continue
        where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("containers", []):
            name = c["name"]
            if name in BINARIES:
                uses.append((where, name, c.get("args", [])))
            check_paths(where, spec, c, keys, doc["metadata"].get("namespace"))


def systemd_uses(path, uses):
    text = Path(path).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line[len("ExecStart="):])
            uses.append((str(Path(path).relative_to(ROOT)), Path(words[0]).name, words[1:]))


def check_flags(bin_dir, uses):
    helps = {}
    for where, binary, args in uses:
        sub = [args[0]] if args and not args[0].startswith("-") else []
        key = (binary, tuple(sub))
        if key not in helps:
            out = subprocess.run([str(Path(bin_dir) / binary), *sub, "--help"], capture_output=True, text=True)
            if out.returncode != 0:
                fail(where, f"`{binary} {' '.join(sub)} --help` failed: {out.stderr.strip()}")
            helps[key] = set(re.findall(r"--[a-z0-9-]+", out.stdout))
        for a in args:
            if a.startswith("--"):
                flag = a.split("=")[0]
                if flag not in helps[key]:
                    fail(where, f"`{binary} {' '.join(sub)}` has no flag {flag}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bin_dir, rendered = sys.argv[1], sys.argv[2:]
    uses = []
    for df in sorted((ROOT / "deploy/docker").glob("*.Dockerfile")):
        check_dockerfile(df, uses)
    manifest_uses(*load_rendered(rendered), uses)
    for unit in sorted((ROOT / "deploy/systemd").glob("*.service")):
        systemd_uses(unit, uses)
    check_flags(bin_dir, uses)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(f"deploy/lint.py: {len(uses)} command lines checked against --help, Dockerfiles parsed: ok")


if __name__ == "__main__":
    main()
