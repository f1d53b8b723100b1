#!/usr/bin/env bash
# What we ship, run as containers: builds the images from deploy/docker (base images from
# deploy/docker/bases.sh when no registry answers), then runs one coordinator and three CPU
# workers on a private Docker network, the way the Kubernetes manifests run them: the images'
# own command lines, mTLS with certificates from `coordinator tls init`, tokens mounted as
# files, non-root, read-only root filesystems (deploy/contract.yaml says how; this script
# reads it through deploy/contract.py). A sweep is submitted from the host with
# `coordinator submit --server`, and during it:
#   1. `docker kill` of a worker mid-trial (its trial is trained again elsewhere);
#   2. `docker network disconnect` of a worker mid-trial for longer than the heartbeat timeout,
#      then reconnect: its lease is given away, and the result it sends late is refused;
#   3. `docker restart` of the coordinator on the same volume;
#   4. at the end, `docker stop` (SIGTERM) of the coordinator: a clean checkpoint, after which
#      the database is one file (no -wal, -shm or -journal beside it).
# Then every trial must be finished exactly once: one accepted result per trial in the
# workers' logs, the one the database holds, attributed to that worker and attempt
# (scripts/containers_check.py). The coordinator is started again, and the report is fetched
# with `coordinator report --server`, the dashboard and /readyz through the published ports.
#
# Needs Docker, root (debootstrap) and real CIFAR-10 in $CIFAR10_DATA (scripts/prepare-data.sh).
# Every container, the network and the volume are labelled and removed at exit.
#   scripts/check-containers.sh              build the coordinator and CPU worker images, run
#   CHECK_CUDA_IMAGE=1 scripts/check-containers.sh   also build the CUDA worker image
#   SWEEP_BASE_ARGS=" " ...                  build from the public base images (a registry)
#   CHECK_CONTAINERS_PRUNE=1 ...             remove the build stages' images afterwards
# Image sizes and build times are written to out/containers/images.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/containers
contract() { python3 deploy/contract.py "$@"; }
say() { echo "check-containers: $*"; }
die() { echo "check-containers: FAILED: $*" >&2; exit 1; }

[[ -n ${CIFAR10_DATA:-} && -d ${CIFAR10_DATA:-} ]] || die "set CIFAR10_DATA to a CIFAR-10 directory (scripts/prepare-data.sh)"
docker info > /dev/null 2>&1 || die "no Docker engine answers"
rm -rf "$out" && mkdir -p "$out/bin" "$out/logs"

run=sweep-check-$$
net=$run-net
vol=$run-data
cleanup() {
    local ids
    ids=$(docker ps -aq --filter "label=sweep-check=$run")
    [[ -z $ids ]] || docker rm -f $ids > /dev/null 2>&1 || true
    docker network rm "$net" > /dev/null 2>&1 || true
    docker volume rm "$vol" > /dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# --- Images ---------------------------------------------------------------------------------
if [[ -z ${SWEEP_BASE_ARGS:-} ]]; then
    deploy/docker/bases.sh
    SWEEP_BASE_ARGS=$(deploy/docker/bases.sh --args)
fi
printf 'image\tbytes\tbuild_seconds\n' > "$out/images.tsv"
build() { # NAME:TAG
    local ref=$1 name=${1%%:*} dockerfile target start
    dockerfile=$(contract get "images.$name.dockerfile")
    target=$(contract get "images.$name.target")
    start=$(date +%s)
    say "building $ref from $dockerfile${target:+ (stage $target)}"
    # shellcheck disable=SC2086
    docker build -q $SWEEP_BASE_ARGS -f "$dockerfile" ${target:+--target "$target"} -t "$ref" . \
        > "$out/logs/build-$name.log" 2>&1 \
        || { tail -n 40 "$out/logs/build-$name.log" >&2; die "docker build of $ref failed"; }
    printf '%s\t%s\t%s\n' "$ref" "$(docker image inspect -f '{{.Size}}' "$ref")" \
        "$(($(date +%s) - start))" >> "$out/images.tsv"
}
coordinator_image=$(contract image coordinator)
worker_image=$(contract image worker cpu)
build "$coordinator_image"
build "$worker_image"
cuda_image=$(contract image worker cuda)
[[ -z ${CHECK_CUDA_IMAGE:-} ]] || build "$cuda_image"
column -t "$out/images.tsv"
# CHECK_CONTAINERS_PRUNE=1 (.ci/run): drop the build stages' images (the untagged ones, several
# GB: a compiled target/ and the torch wheel) once the images are built, as CI's disk is small.
if [[ -n ${CHECK_CONTAINERS_PRUNE:-} ]]; then
    docker image prune -f > /dev/null
    say "pruned the build stages' images ($(docker system df --format '{{.Type}} {{.Size}}' | head -n 1))"
fi

# The host's admin commands are the image's own coordinator binary; both binaries are left in
# $out/bin for scripts/check-deploy.sh (DEPLOY_BIN_DIR) and scripts/check-systemd.sh.
for image in "$coordinator_image" "$worker_image"; do
    binary=$(contract get "images.${image%%:*}.binary")
    docker create --name "$run-extract" --label "sweep-check=$run" "$image" > /dev/null
    docker cp "$run-extract:/usr/local/bin/$binary" "$out/bin/$binary" > /dev/null
    docker rm "$run-extract" > /dev/null
done
coordinator=$out/bin/coordinator

# --- Certificates, tokens, network ----------------------------------------------------------
# The workers reach the coordinator by the name in their command line; the host by 127.0.0.1.
alias=$(contract coordinator-host)
"$coordinator" tls init --out "$out/certs" --host "$alias" --host 127.0.0.1 > /dev/null
contract stage-secrets coordinator "$out/certs" "$out/secrets/coordinator"
contract stage-secrets worker "$out/certs" "$out/secrets/worker"
docker network create --label "sweep-check=$run" "$net" > /dev/null
docker volume create --label "sweep-check=$run" "$vol" > /dev/null
grpc_port=$(contract get ports.coordinator.grpc)
http_port=$(contract get ports.coordinator.http)

# --- The cluster ----------------------------------------------------------------------------
# shellcheck disable=SC2046
docker run -d --name "$run-coordinator" --label "sweep-check=$run" --network "$net" \
    --network-alias "$alias" -e RUST_LOG=info -p "127.0.0.1::$grpc_port" -p "127.0.0.1::$http_port" \
    $(contract run-flags coordinator "$out/secrets/coordinator" "/data=$vol") "$coordinator_image" > /dev/null
# Each worker on one core (three share this machine's two), the dataset mounted read-only
# where the image looks for it (/work/data).
for w in w1 w2 w3; do
    # shellcheck disable=SC2046
    docker run -d --name "$run-$w" --hostname "$w" --label "sweep-check=$run" --network "$net" \
        -e RUST_LOG=info -e OMP_NUM_THREADS=1 -v "$(cd "$CIFAR10_DATA" && pwd):/work/data:ro" \
        $(contract run-flags worker "$out/secrets/worker") "$worker_image" > /dev/null
done

published() { docker port "$run-coordinator" "$1/tcp" | head -n 1; }
wait_ready() { # the coordinator's /readyz through its published port
    local url
    for _ in $(seq 120); do
        url="http://$(published "$http_port" 2> /dev/null)/readyz"
        curl -fsS -m 2 "$url" > /dev/null 2>&1 && return 0
        sleep 0.5
    done
    docker logs "$run-coordinator" 2>&1 | tail -n 30 >&2
    die "the coordinator's /readyz did not answer through the published port"
}
admin() { # COMMAND [ARGS]: an admin command from the host, over mTLS with the admin token
    local cmd=$1; shift
    "$coordinator" "$cmd" "$@" --server "https://$(published "$grpc_port")" --tls-ca "$out/certs/ca.pem" \
        --tls-cert "$out/certs/worker.pem" --tls-key "$out/certs/worker-key.pem" \
        --token-file "$out/certs/admin-token"
}
wait_ready
say "coordinator ready at https://$(published "$grpc_port") (gRPC) and http://$(published "$http_port")"

# Twelve trials of about 30 s (4 epochs of 2,000 images, one core each), so that every fault
# lands mid-trial and the sweep outlasts them.
sweep=containers
cat > "$out/$sweep.toml" <<TOML
name = "$sweep"

[defaults]
model = "seed-cnn"
train_images = 2000
test_images = 200
epochs = 4
batch_size = 50

[grid]
seed = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
TOML
trials=12
admin submit "$out/$sweep.toml" > "$out/logs/submit.log" 2>&1 || { cat "$out/logs/submit.log" >&2; die "submit --server failed"; }
say "submitted $sweep ($trials trials) from the host with submit --server"

status() { admin status "$sweep" 2> /dev/null || true; }
# The worker id (NAME-N) training a trial with at least one epoch done, on a worker named $1.
running_on() {
    status | awk -F'|' -v w="$1" '$3 ~ /running/ && $5 !~ /^ *0\// && $8 ~ "^ *" w "-" { gsub(/ /, "", $2); gsub(/ /, "", $8); print $2, $8; exit }'
}
wait_for() { # SECONDS WHAT COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 2))); do "$@" && return 0; sleep 0.5; done
    status >&2
    die "waited ${seconds}s for: $what"
}
finished_count() { local n; n=$(status | sed -n 's/.* \([0-9][0-9]*\) finished.*/\1/p' | head -n 1); echo "${n:-0}"; }
busy() { [[ -n $(running_on "$1") ]]; }
at_least() { (( $(finished_count) >= $1 )); }

# 1. A worker killed mid-trial.
wait_for 180 "w1 mid-trial" busy w1
read -r killed_trial _ <<< "$(running_on w1)"
docker kill "$run-w1" > /dev/null
say "1. killed w1 while it trained $killed_trial"

# 2. A partition longer than the heartbeat timeout (the image's default, 15 s).
wait_for 180 "w2 mid-trial" busy w2
read -r cut_trial cut_worker <<< "$(running_on w2)"
docker network disconnect "$net" "$run-w2"
say "2. cut w2 ($cut_worker) off the network while it trained $cut_trial"
requeued() { status | awk -F'|' -v t="$cut_trial" '{ gsub(/ /, "", $2) } $2 == t && $4 + 0 >= 2' | grep -q .; }
wait_for 60 "$cut_trial given to another worker" requeued
docker network connect "$net" "$run-w2"
say "   reconnected w2 after its lease of $cut_trial was given away"
docker start "$run-w1" > /dev/null
say "   restarted w1 (as a pod's restart policy would)"

# 3. The coordinator restarted on the same volume, mid-sweep.
wait_for 300 "a third of the trials finished" at_least $((trials / 3))
docker restart "$run-coordinator" > /dev/null
wait_ready
say "3. restarted the coordinator at $(finished_count)/$trials finished"

wait_for 900 "all $trials trials finished" at_least "$trials"
say "all $trials trials finished"

# 4. SIGTERM: a clean stop leaves the database as one file.
docker stop "$run-coordinator" > /dev/null
for w in w1 w2 w3; do docker logs "$run-$w" > "$out/logs/$w.log" 2>&1; done
docker logs "$run-coordinator" > "$out/logs/coordinator-1.log" 2>&1
files=$(docker run --rm --label "sweep-check=$run" -v "$vol:/data:ro" --entrypoint ls "$coordinator_image" -A /data | tr '\n' ' ')
say "4. stopped the coordinator (SIGTERM); its volume holds: $files"
mkdir -p "$out/db"
docker cp "$run-coordinator:/data/sweep.db" "$out/db/sweep.db" > /dev/null
# One database file: no -wal, -shm or -journal beside it (the lock file, which names the
# last holder, and the checkpoint directory stay).
for f in $files; do
    case $f in
        sweep.db-wal | sweep.db-shm | sweep.db-journal) die "the volume holds $f after a clean stop: the database is not one file" ;;
    esac
done

# Exactly once, against the database and the workers' logs.
python3 scripts/containers_check.py "$out/db/sweep.db" "$trials" "$killed_trial" "$cut_trial" w2 \
    "$out"/logs/w?.log || die "the results are not each counted exactly once (above)"

# The report, the dashboard and /readyz through the published ports, after a start.
docker start "$run-coordinator" > /dev/null
wait_ready
admin report "$sweep" --out "$out/report" > "$out/logs/report.log" 2>&1 || { cat "$out/logs/report.log" >&2; die "report --server failed"; }
rows=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["trials"]))' "$out/report/results.json" 2> /dev/null \
    || python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$out/report/results.json")
[[ $rows == "$trials" ]] || die "report --server: results.json has $rows trials, not $trials"
# Off loopback the dashboard needs the admin token (docs/DEPLOY.md); /readyz never does.
dash=http://$(published "$http_port")
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$dash/api/sweeps")
[[ $code == 401 ]] || die "the dashboard answered $code without the admin token (expected 401)"
auth=(-H "Authorization: Bearer $(cat "$out/certs/admin-token")")
curl -fsS -m 5 "${auth[@]}" "$dash/" -o "$out/dashboard.html" || die "the dashboard page did not answer"
curl -fsS -m 5 "${auth[@]}" "$dash/api/sweeps" | grep -q "\"$sweep\"" || die "the dashboard does not list $sweep"
docker logs "$run-coordinator" > "$out/logs/coordinator-2.log" 2>&1
say "ok: report --server ($rows trials), the dashboard and /readyz answered through the published ports"
