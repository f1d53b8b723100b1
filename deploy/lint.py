#!/usr/bin/env python3
"""Checks the deployment files against each other and against the binaries.

The Dockerfiles are parsed (scripts/check-containers.sh builds them where Docker runs): every
base pinned (ARG defaults resolved) or an earlier stage, each image stage non-root, every `COPY
--from` naming an earlier stage, the packages built being workspace members and the entrypoint
a binary that was copied in.

deploy/contract.yaml is the one source of truth for image names and tags, command lines, ports,
the uid and mounts: each image's stage (CMD, EXPOSE, USER), each rendered Deployment (image,
args, ports, read-only root, mounts), each systemd unit (flags and ports) and the container
test (no literal image names or ports) must agree with it.

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

import contract

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


def dockerfile_stages(path):
    """The stages of a Dockerfile, with `${ARG}` in FROM resolved to the ARG's default."""
    df = DockerfileParser(path=str(path))
    args, stages = {}, []
    for ins in df.structure:
        cmd, value, line = ins["instruction"], ins["value"], ins["startline"] + 1
        if cmd == "ARG" and not stages and "=" in value:
            k, v = value.split("=", 1)
            args[k.strip()] = v.strip()
        elif cmd == "FROM":
            parts = value.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"name": name, "base": base, "line": line, "user": None, "copied": set(),
                           "entry": None, "cmd": None, "expose": set()})
        elif not stages:
            continue
        elif cmd == "USER":
            stages[-1]["user"] = value.split(":")[0]
        elif cmd == "COPY":
            m = re.match(r"--from=(\S+)\s+(\S+)\s+(\S+)", value)
            if m:
                stages[-1]["copied"].add((m.group(1), m.group(3), line))
        elif cmd == "RUN":
            stages[-1].setdefault("builds", []).extend(re.findall(r"cargo build [^&]*-p (\S+)", value))
        elif cmd == "ENTRYPOINT":
            stages[-1]["entry"] = yaml.safe_load(value)
        elif cmd == "CMD":
            stages[-1]["cmd"] = yaml.safe_load(value)
        elif cmd == "EXPOSE":
            stages[-1]["expose"] |= {int(p.split("/")[0]) for p in value.split()}
    return stages


def check_dockerfile(path, uses):
    """Every base pinned or an earlier stage, COPY --from an earlier stage, cargo builds of
    workspace members; each image stage non-root, running a binary it copied in."""
    where = path.relative_to(ROOT)
    stages = dockerfile_stages(path)
    for i, st in enumerate(stages):
        earlier = [s["name"] for s in stages[:i]]
        if st["base"] not in earlier and (":" not in st["base"] or st["base"].endswith(":latest")):
            fail(where, f"line {st['line']}: base image `{st['base']}` is not pinned to a tag")
        for src, _, line in st["copied"]:
            if src not in earlier:
                fail(where, f"line {line}: COPY --from={src} names no earlier stage")
        for pkg in st.get("builds", []):
            if pkg not in workspace_members():
                fail(where, f"builds `{pkg}`, which is not a workspace member")
        if st["entry"] is None:
            continue  # a build stage
        if st["user"] in (None, "0", "root"):
            fail(where, f"stage {st['name'] or i}: runs as root (add a USER with a non-zero uid)")
        if st["entry"][0] not in {dst for _, dst, _ in st["copied"]}:
            fail(where, f"stage {st['name'] or i}: ENTRYPOINT {st['entry']} is not a binary copied in")
        if st["cmd"]:
            uses.append((f"{where} ({st['name'] or 'final'})", Path(st["entry"][0]).name, st["cmd"]))


def normalized(args):
    """`--flag value` pairs as `--flag=value`, so CMD, args and the contract compare equal."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{a}={args[i + 1]}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def check_contract_images(c):
    """Each image of the contract: its stage exists, runs its binary as the contract's uid, with
    the contract's command line (CMD) and ports (EXPOSE); tags are the workspace version."""
    text = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'\[workspace.package\][^\[]*?version\s*=\s*"([^"]+)"', text, re.S).group(1)
    if version != c["version"]:
        fail("deploy/contract.yaml", f"version {c['version']} is not the workspace's {version}")
    # The contract agrees with itself: the ports in its command lines are its ports.
    for binary, args in c["commands"].items():
        for a in args:
            flag, _, value = a.partition("=")
            port = re.search(r":(\d+)$", value)
            want = c["ports"]["coordinator"]["grpc"] if flag == "--coordinator" else None
            if port and int(port.group(1)) not in ([want] if want else c["ports"][binary].values()):
                fail("deploy/contract.yaml", f"{binary} {a}: the port is not one of the contract's ports")
    for name, spec in c["images"].items():
        where = f"{spec['dockerfile']} (image {name})"
        stages = dockerfile_stages(ROOT / spec["dockerfile"])
        st = stages[-1] if spec["target"] is None else next((s for s in stages if s["name"] == spec["target"]), None)
        if st is None:
            fail(where, f"no stage `{spec['target']}`")
            continue
        if st["user"] != str(c["uid"]):
            fail(where, f"USER {st['user']}, the contract's uid is {c['uid']}")
        if st["entry"] != [f"/usr/local/bin/{spec['binary']}"]:
            fail(where, f"ENTRYPOINT {st['entry']} is not /usr/local/bin/{spec['binary']}")
        if normalized(st["cmd"] or []) != contract.command(c, name):
            fail(where, f"CMD {st['cmd']} is not the contract's {contract.command(c, name)}")
        if st["expose"] != set(c["ports"][spec["binary"]].values()):
            fail(where, f"EXPOSE {sorted(st['expose'])} is not the contract's ports {c['ports'][spec['binary']]}")


def check_contract_manifests(c, docs):
    """Deployments run contract images at the contract's tag with its command line, ports,
    uid, a read-only root filesystem, and a mount for every writable path and Secret dir."""
    for path, doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        where = f"{path}: Deployment/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        for ctr in pod["containers"]:
            binary = ctr["name"]
            if binary not in BINARIES:
                continue
            name, _, tag = ctr["image"].partition(":")
            spec = c["images"].get(name)
            if spec is None or spec["binary"] != binary:
                fail(where, f"{binary}: image {ctr['image']} is not one of the contract's {binary} images")
                continue
            if tag != c["version"]:
                fail(where, f"{binary}: image tag `{tag}` is not the contract's {c['version']}")
            if normalized(ctr.get("args", [])) != contract.command(c, name):
                fail(where, f"{binary}: args are not the contract's command for {name}")
            ports = {p["containerPort"] for p in ctr.get("ports", [])}
            if ports != set(c["ports"][binary].values()):
                fail(where, f"{binary}: ports {sorted(ports)} are not the contract's {c['ports'][binary]}")
            if (ctr.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                fail(where, f"{binary}: the root filesystem is not read-only")
            if (pod.get("securityContext") or {}).get("runAsUser") != c["uid"]:
                fail(where, f"{binary}: the pod does not run as uid {c['uid']}")
            mounts = {m["mountPath"] for m in ctr.get("volumeMounts", [])}
            for p in [*c["writable"][binary], *c["secrets"][binary]]:
                if p not in mounts:
                    fail(where, f"{binary}: nothing is mounted at {p}")


def check_contract_systemd(c, unit, binary, args):
    """A unit passes the contract's flags (less `absent`, plus `extra`) on the same ports."""
    where = str(Path(unit).relative_to(ROOT))
    want = {a.split("=")[0] for a in c["commands"][binary] if a.startswith("--")}
    want = (want - set(c["systemd"][binary]["absent"])) | set(c["systemd"][binary]["extra"])
    have = {a.split("=")[0] for a in args if a.startswith("--")}
    if have != want:
        fail(where, f"flags differ from the contract's: missing {sorted(want - have)}, extra {sorted(have - want)}")
    values = dict(a.split("=", 1) for a in normalized(args) if a.startswith("--") and "=" in a)
    for a in c["commands"][binary]:
        flag, _, value = a.partition("=")
        port = re.search(r":(\d+)$", value)
        got = values.get(flag, "")
        if port and flag in values and "$" not in got and not got.endswith(":" + port.group(1)):
            fail(where, f"{flag} {got}: the contract's port is {port.group(1)}")


def check_container_test(c):
    """scripts/check-containers.sh takes image names and ports from the contract, never literally."""
    text = (ROOT / "scripts/check-containers.sh").read_text()
    literals = [str(p) for ports in c["ports"].values() for p in ports.values()] + list(c["images"])
    for lit in literals:
        if re.search(rf"(?<![\w-]){re.escape(lit)}(?![\w-])", text):
            fail("scripts/check-containers.sh", f"names `{lit}` literally; take it from deploy/contract.py")


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


def systemd_uses(path, uses, c):
    text = Path(path).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line[len("ExecStart="):])
            uses.append((str(Path(path).relative_to(ROOT)), Path(words[0]).name, words[1:]))
            check_contract_systemd(c, path, Path(words[0]).name, words[1:])


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
    uses, c = [], contract.load()
    for df in sorted((ROOT / "deploy/docker").glob("*.Dockerfile")):
        check_dockerfile(df, uses)
    check_contract_images(c)
    docs, keys = load_rendered(rendered)
    manifest_uses(docs, keys, uses)
    check_contract_manifests(c, docs)
    for unit in sorted((ROOT / "deploy/systemd").glob("*.service")):
        systemd_uses(unit, uses, c)
    check_container_test(c)
    check_flags(bin_dir, uses)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(f"deploy/lint.py: {len(uses)} command lines checked against --help, Dockerfiles parsed: ok")


if __name__ == "__main__":
    main()
