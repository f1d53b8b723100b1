#!/usr/bin/env bash
# Installs the coordinator or a worker as systemd services on a lab machine (run as root).
#
#   deploy/systemd/install.sh coordinator BIN_DIR CERT_DIR
#   deploy/systemd/install.sh worker      BIN_DIR CERT_DIR
#   deploy/systemd/install.sh uninstall [--purge]
#
# BIN_DIR holds the release binaries (cargo build --release: target/release); CERT_DIR is the
# output of `coordinator tls init` (only the files each role needs are copied: the admin token
# and the server key go to the coordinator only). Idempotent.
# `uninstall` stops and disables every sweep unit and removes what install.sh installed; the
# database and datasets in /var/lib/sweep stay unless --purge (the user and libtorch too).
# Tested under real systemd by scripts/check-systemd.sh.
set -euo pipefail
role=${1:-}; bin_dir=${2:-}; cert_dir=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "install.sh: $*" >&2; exit 1; }

if [[ $role == uninstall ]]; then
    [[ $(id -u) == 0 ]] || die "run as root"
    units=$(systemctl list-units --all --plain --no-legend 'sweep-coordinator.service' 'sweep-worker@*.service' | awk '{ print $1 }')
    [[ -z $units ]] || systemctl disable --now $units
    rm -f /etc/systemd/system/sweep-coordinator.service /etc/systemd/system/sweep-worker@.service
    systemctl daemon-reload
    rm -rf /etc/sweep /usr/local/share/doc/sweep /usr/local/bin/coordinator /usr/local/bin/worker
    if [[ ${2:-} == --purge ]]; then
        rm -rf /var/lib/sweep /opt/sweep
        id sweep > /dev/null 2>&1 && userdel sweep
    fi
    echo "uninstalled${2:+ ($2)}; ${2:+nothing kept}${2:-/var/lib/sweep (database, datasets) kept}"
    exit 0
fi
[[ $role == coordinator || $role == worker ]] || die "first argument: coordinator, worker or uninstall"
[[ -x $bin_dir/$role ]] || die "no executable $bin_dir/$role (build with: cargo build --release -p $role)"
[[ -d $cert_dir ]] || die "no certificate directory $cert_dir (make one with: coordinator tls init)"
[[ $role == worker || -f $cert_dir/admin-token ]] ||
    die "no $cert_dir/admin-token (\`coordinator tls init\` writes it; a directory from an older version lacks it)"
[[ $(id -u) == 0 ]] || die "run as root"

id sweep >/dev/null 2>&1 || useradd --system --home-dir /var/lib/sweep --shell /usr/sbin/nologin sweep
install -d -m 0755 /etc/sweep /usr/local/share/doc/sweep
install -d -m 0750 -o root -g sweep /etc/sweep/tls
install -m 0755 "$bin_dir/$role" "/usr/local/bin/$role"
install -m 0640 -o root -g sweep "$cert_dir/token" /etc/sweep/token
install -m 0644 "$cert_dir/ca.pem" /etc/sweep/tls/ca.pem
[[ -f $here/../../docs/DEPLOY.md ]] && install -m 0644 "$here/../../docs/DEPLOY.md" /usr/local/share/doc/sweep/

if [[ $role == coordinator ]]; then
    install -m 0644 "$cert_dir/server.pem" /etc/sweep/tls/server.pem
    install -m 0640 -o root -g sweep "$cert_dir/server-key.pem" /etc/sweep/tls/server-key.pem
    install -m 0640 -o root -g sweep "$cert_dir/admin-token" /etc/sweep/admin-token
    install -m 0644 "$here/sweep-coordinator.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now sweep-coordinator
    echo "coordinator running; dashboard on http://127.0.0.1:8080 here. Submit sweeps from any machine with:"
    echo "  coordinator submit FILE --server https://$(hostname):50051 --tls-ca CERT_DIR/ca.pem \\"
    echo "      --tls-cert CERT_DIR/worker.pem --tls-key CERT_DIR/worker-key.pem --token-file CERT_DIR/admin-token"
else
    install -m 0644 "$cert_dir/worker.pem" /etc/sweep/tls/worker.pem
    install -m 0640 -o root -g sweep "$cert_dir/worker-key.pem" /etc/sweep/tls/worker-key.pem
    [[ -f /etc/sweep/worker.env ]] || install -m 0644 "$here/worker.env.example" /etc/sweep/worker.env
    # The libtorch the worker was built against (tch 0.24.0 <-> torch 2.11.0).
    if [[ ! -f /opt/sweep/torch/lib/python3.11/site-packages/torch/lib/libtorch.so ]]; then
        python3.11 -m venv /opt/sweep/torch
        /opt/sweep/torch/bin/pip install --no-cache-dir torch==2.11.0
    fi
    install -m 0644 "$here/sweep-worker@.service" /etc/systemd/system/
    systemctl daemon-reload
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    if (( gpus > 0 )); then
        for ((i = 0; i < gpus; i++)); do systemctl enable --now "sweep-worker@$i"; done
    else
        systemctl enable --now sweep-worker@cpu
    fi
    echo "edit /etc/sweep/worker.env (SWEEP_COORDINATOR), then: systemctl restart 'sweep-worker@*'"
fi
