#!/usr/bin/env bash
# Image sizes and the time from `docker run` to ready, for the images scripts/check-containers.sh
# builds (run it first; CHECK_CUDA_IMAGE=1 for the CUDA worker image):
#   - coordinator: `docker run` until /readyz answers 200 through the published port (its
#     database is open: a fresh volume each run);
#   - each worker image: `docker run` until its /readyz answers 200 (it holds a session with a
#     running coordinator), mTLS and tokens mounted as in the cluster test.
# RUNS runs each (default 5); with COLD=1 (root) the host's page cache is dropped before each
# run, so the image's files are read from disk as on a node's first start; without it the
# cache is warm after the first run. Prints one line per run and a summary (median, min, max)
# per image, in seconds.
#   [COLD=1] bench/containers.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
out=out/bench-containers
contract() { python3 deploy/contract.py "$@"; }
rm -rf "$out" && mkdir -p "$out"
run=sweep-bench-$$
cleanup() {
    local ids; ids=$(docker ps -aq --filter "label=sweep-bench=$run")
    [[ -z $ids ]] || docker rm -f $ids > /dev/null 2>&1 || true
    docker network rm "$run-net" > /dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

coordinator=out/containers/bin/coordinator
[[ -x $coordinator ]] || { echo "bench: run scripts/check-containers.sh first" >&2; exit 1; }
alias=$(contract coordinator-host)
"$coordinator" tls init --out "$out/certs" --host "$alias" > /dev/null
contract stage-secrets coordinator "$out/certs" "$out/secrets/coordinator"
contract stage-secrets worker "$out/certs" "$out/secrets/worker"
docker network create --label "sweep-bench=$run" "$run-net" > /dev/null
http_port=$(contract get ports.coordinator.http)
health_port=$(contract get ports.worker.health)

now() { date +%s.%N; }
cold() { [[ -z ${COLD:-} ]] || { sync; echo 3 > /proc/sys/vm/drop_caches; }; }
ready_after() { # CONTAINER PORT START: seconds from START until /readyz on the published PORT
    local url
    for _ in $(seq 600); do
        url="http://$(docker port "$1" "$2/tcp" 2> /dev/null | head -n 1)/readyz"
        if curl -fsS -m 1 "$url" > /dev/null 2>&1; then
            awk -v a="$(now)" -v b="$3" 'BEGIN { printf "%.3f\n", a - b }'
            return 0
        fi
        sleep 0.05
    done
    docker logs "$1" 2>&1 | tail -n 20 >&2
    return 1
}
start_coordinator() { # NAME: a coordinator on a fresh volume; prints seconds to ready
    local t0; cold; t0=$(now)
    # shellcheck disable=SC2046
    docker run -d --name "$1" --label "sweep-bench=$run" --network "$run-net" --network-alias "$alias" \
        -p "127.0.0.1::$http_port" $(contract run-flags coordinator "$out/secrets/coordinator") \
        "$(contract image coordinator)" > /dev/null
    ready_after "$1" "$http_port" "$t0"
}

printf 'image\tsize_mb\trun\tseconds_to_ready\n' > "$out/runs.tsv"
size_mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f", $1 / 1e6 }'; }
for i in $(seq "$runs"); do
    s=$(start_coordinator "$run-c$i")
    printf '%s\t%s\t%s\t%.2f\n' "$(contract image coordinator)" "$(size_mb "$(contract image coordinator)")" "$i" "$s" | tee -a "$out/runs.tsv"
    [[ $i == "$runs" ]] || docker rm -f "$run-c$i" > /dev/null
done
for name in $(contract get images); do
    [[ $(contract get "images.$name.binary") == worker ]] || continue
    image=$name:$(contract get version)
    docker image inspect "$image" > /dev/null 2>&1 || continue
    for i in $(seq "$runs"); do
        cold
        t0=$(now)
        # shellcheck disable=SC2046
        docker run -d --name "$run-$name-$i" --label "sweep-bench=$run" --network "$run-net" \
            -p "127.0.0.1::$health_port" $(contract run-flags worker "$out/secrets/worker") \
            "$image" $(contract get commands.worker) --device=cpu > /dev/null
        s=$(ready_after "$run-$name-$i" "$health_port" "$t0")
        printf '%s\t%s\t%s\t%.2f\n' "$image" "$(size_mb "$image")" "$i" "$s" | tee -a "$out/runs.tsv"
        docker rm -f "$run-$name-$i" > /dev/null
    done
done
echo
python3 - "$out/runs.tsv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| image | size (MB) | runs | to ready, median (s) | min | max |")
print("|---|---|---|---|---|---|")
for image in dict.fromkeys(r["image"] for r in rows):
    s = [float(r["seconds_to_ready"]) for r in rows if r["image"] == image]
    size = next(r["size_mb"] for r in rows if r["image"] == image)
    print(f"| {image} | {size} | {len(s)} | {statistics.median(s):.2f} | {min(s):.2f} | {max(s):.2f} |")
PY
