#!/usr/bin/env bash
# The lab-machine install under real systemd: a Debian bookworm container (debootstrap, then
# `docker import`) with systemd as PID 1, where deploy/systemd/install.sh installs the
# coordinator and a worker exactly as docs/DEPLOY.md tells a user to. Checked, each in turn:
#   1. install of the coordinator: the unit is active and /readyz answers;
#   2. install of a worker (sweep-worker@cpu): it registers, and a sweep submitted with
#      `coordinator submit --server` over mTLS finishes;
#   3. `kill -9` of the worker: systemd restarts it (a new main PID, active again);
#   4. both units' lines are in `journalctl`;
#   5. `systemctl stop` of the coordinator: a clean stop (Result=success) that leaves the
#      database as one file;
#   6. `install.sh uninstall`: no unit, binary or /etc/sweep left; the database kept.
# The binaries are the images' own (scripts/check-containers.sh builds them; this script
# builds them if missing); libtorch is this checkout's (.venv, scripts/setup-libtorch.sh),
# mounted where install.sh would have put it. Needs Docker, root, CIFAR10_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/systemd
contract() { python3 deploy/contract.py "$@"; }
say() { echo "check-systemd: $*"; }
die() { echo "check-systemd: FAILED: $*" >&2; [[ -z ${box:-} ]] || docker exec "$box" journalctl --no-pager -n 60 >&2 || true; exit 1; }
[[ -n ${CIFAR10_DATA:-} && -d ${CIFAR10_DATA:-} ]] || die "set CIFAR10_DATA to a CIFAR-10 directory (scripts/prepare-data.sh)"
[[ -f .venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so ]] || die "no libtorch in .venv (scripts/setup-libtorch.sh)"
rm -rf "$out" && mkdir -p "$out/bin"

image=sweep-local/systemd:bookworm
if ! docker image inspect "$image" > /dev/null 2>&1; then
    say "making $image (debootstrap with systemd)"
    root=$(mktemp -d /var/tmp/sweep-systemd.XXXXXX)
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,python3,ca-certificates \
        bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$out/debootstrap.log" 2>&1 \
        || { tail -n 20 "$out/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import --change 'CMD ["/sbin/init"]' - "$image" > /dev/null
    rm -rf "$root"
fi

# The release binaries from the images.
for binary in coordinator worker; do
    if [[ $binary == worker ]]; then name=$(contract image worker cpu); else name=$(contract image coordinator); fi
    docker image inspect "$name" > /dev/null 2>&1 || die "no image $name: run scripts/check-containers.sh first"
    id=$(docker create "$name")
    docker cp "$id:/usr/local/bin/$binary" "$out/bin/$binary" > /dev/null
    docker rm "$id" > /dev/null
done
"$out/bin/coordinator" tls init --out "$out/certs" --host 127.0.0.1 --host localhost > /dev/null

box=sweep-systemd-$$
trap 'docker rm -f "$box" > /dev/null 2>&1 || true' EXIT INT TERM
# systemd as PID 1 needs its own /run and the cgroup tree (read-only is enough), and for the
# units' sandboxing (ProtectSystem=, PrivateTmp=, PrivateDevices=: mount namespaces)
# CAP_SYS_ADMIN. (--privileged is refused by this machine's engine: "unable to apply caps".)
docker run -d --name "$box" --cap-add SYS_ADMIN --tmpfs /run --tmpfs /run/lock \
    -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
    -v "$PWD/deploy:/src/deploy:ro" -v "$PWD/docs:/src/docs:ro" -v "$PWD/$out:/src/out:ro" \
    -v "$PWD/.venv:/opt/sweep/torch:ro" -v "$(cd "$CIFAR10_DATA" && pwd):/srv/cifar10:ro" \
    "$image" > /dev/null
in_box() { docker exec "$box" "$@"; }
for _ in $(seq 120); do
    state=$(in_box systemctl is-system-running 2> /dev/null || true)
    [[ $state == running || $state == degraded ]] && break
    sleep 0.5
done
[[ $state == running || $state == degraded ]] || die "systemd did not start (state: $state)"
say "systemd $(in_box systemctl --version | head -n 1 | awk '{ print $2 }') is PID 1 ($state)"
wait_for() { # SECONDS WHAT COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 2))); do "$@" > /dev/null 2>&1 && return 0; sleep 0.5; done
    die "waited ${seconds}s for: $what"
}
http_port=$(contract get ports.coordinator.http)
grpc_port=$(contract get ports.coordinator.grpc)
readyz() { in_box python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$http_port/readyz', timeout=2)"; }

# 1. The coordinator.
in_box /src/deploy/systemd/install.sh coordinator /src/out/bin /src/out/certs > "$out/install-coordinator.log" 2>&1 \
    || { cat "$out/install-coordinator.log" >&2; die "install.sh coordinator failed"; }
wait_for 30 "sweep-coordinator active" in_box systemctl is-active sweep-coordinator
wait_for 30 "/readyz of the coordinator unit" readyz
say "1. install.sh coordinator: active, /readyz answers"

# 2. A worker, pointed at it before install (install.sh keeps an existing worker.env).
in_box sh -c "mkdir -p /etc/sweep /var/lib/sweep && printf 'SWEEP_COORDINATOR=https://127.0.0.1:$grpc_port\nSWEEP_DEVICE=cpu\n' > /etc/sweep/worker.env"
in_box /src/deploy/systemd/install.sh worker /src/out/bin /src/out/certs > "$out/install-worker.log" 2>&1 \
    || { cat "$out/install-worker.log" >&2; die "install.sh worker failed"; }
in_box ln -sfn /srv/cifar10 /var/lib/sweep/data
wait_for 30 "sweep-worker@cpu active" in_box systemctl is-active sweep-worker@cpu
admin() {
    in_box /usr/local/bin/coordinator "$@" --server "https://127.0.0.1:$grpc_port" --tls-ca /src/out/certs/ca.pem \
        --tls-cert /src/out/certs/worker.pem --tls-key /src/out/certs/worker-key.pem --token-file /src/out/certs/admin-token
}
printf 'name = "lab"\n[defaults]\nmodel = "seed-cnn"\ntrain_images = 200\ntest_images = 50\nepochs = 1\n[grid]\nseed = [1, 2]\n' > "$out/certs/lab.toml"
admin submit /src/out/certs/lab.toml > "$out/submit.log" 2>&1 || { cat "$out/submit.log" >&2; die "submit --server failed"; }
done_both() { admin status lab | grep -q '2 finished'; }
wait_for 300 "the sweep on the systemd units to finish" done_both
say "2. install.sh worker: sweep-worker@cpu trained a sweep submitted with submit --server"

# 3. kill -9: systemd restarts the worker.
pid=$(in_box systemctl show -p MainPID --value sweep-worker@cpu)
in_box kill -9 "$pid"
restarted() { local now; now=$(in_box systemctl show -p MainPID --value sweep-worker@cpu); [[ $now != 0 && $now != "$pid" ]] && in_box systemctl is-active sweep-worker@cpu; }
wait_for 30 "systemd to restart the killed worker" restarted
say "3. kill -9 of the worker (pid $pid): restarted by systemd as pid $(in_box systemctl show -p MainPID --value sweep-worker@cpu)"

# 4. The journal.
in_box journalctl --no-pager -u sweep-worker@cpu > "$out/journal-worker.log"
in_box journalctl --no-pager -u sweep-coordinator > "$out/journal-coordinator.log"
grep -q "registered" "$out/journal-worker.log" || die "no worker lines in journalctl -u sweep-worker@cpu"
grep -q "Main process exited, code=killed, status=9/KILL" "$out/journal-worker.log" || die "journalctl does not show the kill"
grep -q "coordinator" "$out/journal-coordinator.log" || die "no coordinator lines in journalctl -u sweep-coordinator"
say "4. journalctl: $(wc -l < "$out/journal-worker.log") worker lines, $(wc -l < "$out/journal-coordinator.log") coordinator lines"

# 5. A clean stop.
in_box systemctl stop sweep-coordinator
result=$(in_box systemctl show -p Result --value sweep-coordinator)
[[ $result == success ]] || die "the coordinator stopped with Result=$result"
files=$(in_box sh -c 'ls -A /var/lib/sweep | grep "^sweep.db" | tr "\n" " "')
case " $files" in
    *" sweep.db-wal "* | *" sweep.db-shm "* | *" sweep.db-journal "*) die "after a clean stop /var/lib/sweep holds: $files" ;;
esac
say "5. systemctl stop: Result=success, the database is one file ($files)"

# 6. Uninstall.
in_box /src/deploy/systemd/install.sh uninstall > "$out/uninstall.log" 2>&1 || { cat "$out/uninstall.log" >&2; die "install.sh uninstall failed"; }
left=$(in_box sh -c 'ls -d /etc/sweep /usr/local/bin/coordinator /usr/local/bin/worker /etc/systemd/system/sweep-* 2>/dev/null; systemctl list-units --all --plain --no-legend "sweep-*" | grep -v not-found' || true)
[[ -z $left ]] || die "uninstall left: $left"
in_box test -f /var/lib/sweep/sweep.db || die "uninstall removed the database (only --purge should)"
say "6. install.sh uninstall: no unit, binary or /etc/sweep left; /var/lib/sweep/sweep.db kept"
say "ok"
