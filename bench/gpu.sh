#!/usr/bin/env bash
# Everything issue 7 measures on a GPU, in one run, printing markdown tables:
#   1. images/s per model, fp32 vs bf16 (channels-last with bf16), worker vs PyTorch eager on
#      the same GPU, alternating so both see the same conditions; peak GPU memory of each;
#   2. sweep throughput with 1, 2 and 4 slots on one GPU for small trials;
#   3. time-to-accuracy of bench/recipes/fast.toml and bench/recipes/resnet56.toml (real
#      CIFAR-10, test accuracy and wall time from the worker's own JSON), the longest last so
#      that a run cut short by a lease's time limit still has the other tables.
# Builds nothing: run it where a worker binary built against torch 2.11.0 was carried.
#
#   bench/gpu.sh [ARCHIVE]      ARCHIVE: cifar10-jpeg.tar.xz (turned into data/ once, with
#                               make-cifar10-bin.py next to it); skipped when data/ is there.
# Env: WORKER (default target/release/worker), PYTHON (default /opt/torch/.venv/bin/python),
#      DEVICE (default cuda), SMOKE=1 (tiny sizes: checks the script itself, e.g. on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKER=${WORKER:-target/release/worker}
PYTHON=${PYTHON:-/opt/torch/.venv/bin/python}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-}
OUT=${OUT:-out/gpu-bench}
mkdir -p "$OUT"

echo "# GPU benchmark, $(date -u +%Y-%m-%d)"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/GPU: /'
fi
"$PYTHON" -c 'import torch; print("torch", torch.__version__)'

if [ ! -d data/cifar-10-batches-bin ] && [ -n "${1:-}" ]; then
    "$PYTHON" "$(dirname "$1")/make-cifar10-bin.py" data
fi

# Peak GPU memory in use while a command runs (MiB, whole device), sampled every 0.2 s.
peak_mem() {
    if [ "$DEVICE" != cuda ]; then "$@"; echo "-" > "$OUT/peak"; return; fi
    local log=$OUT/mem.log
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done) > "$log" &
    local sampler=$!
    "$@"
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    sort -n "$log" | tail -1 > "$OUT/peak"
}

field() { "$PYTHON" -c "import json,sys; print(json.loads(sys.stdin.readlines()[-1])$1)"; }

echo
echo "## Training throughput (random images, batch 512 unless noted)"
echo
echo "| model | precision | channels-last | worker img/s | PyTorch img/s | worker / PyTorch | worker peak MiB | PyTorch peak MiB |"
echo "|---|---|---|---|---|---|---|---|"
models=${MODELS:-dense seed-cnn resnet20 resnet56 fast}
images=51200; epochs=3; bs=512
[ -n "$SMOKE" ] && { models=${MODELS:-dense fast}; images=64; epochs=2; bs=32; }
for model in $models; do
    for mode in "fp32" "bf16 --channels-last"; do
        set -- $mode
        prec=$1; cl=${2:-}
        args=(--model "$model" --batch-size "$bs" --images "$images" --epochs "$epochs" --device "$DEVICE" --precision "$prec" $cl)
        peak_mem "$WORKER" bench "${args[@]}" > "$OUT/w.json"; wpeak=$(cat "$OUT/peak")
        peak_mem "$PYTHON" bench/train_speed.py "${args[@]}" > "$OUT/p.json"; ppeak=$(cat "$OUT/peak")
        w=$(field "['images_per_sec']" < "$OUT/w.json"); p=$(field "['images_per_sec']" < "$OUT/p.json")
        notes=$(field "['notes']" < "$OUT/w.json")
        printf '| %s | %s | %s | %.0f | %.0f | %.2f | %s | %s |%s\n' "$model" "$prec" "${cl:+yes}" "$w" "$p" \
            "$(awk -v a="$w" -v b="$p" "BEGIN{print a/b}")" "$wpeak" "$ppeak" "$([ "$notes" != "[]" ] && echo " $notes")"
    done
done

echo
echo "## Slots: small trials sharing one GPU (8 seed-cnn trials, 5 epochs on 10,000 images)"
echo
echo "| slots | sweep seconds | trials/minute |"
echo "|---|---|---|"
n_trials=8; epochs=5; train=10000
[ -n "$SMOKE" ] && { n_trials=2; epochs=1; train=64; }
for slots in 1 2 4; do
    dir=$OUT/slots-$slots; rm -rf "$dir"; mkdir -p "$dir"
    cat > "$dir/sweep.toml" <<TOML
name = "slots-$slots"
data = "$PWD/data"
[defaults]
model = "seed-cnn"
epochs = $epochs
train_images = $train
test_images = 1000
batch_size = 128
[grid]
seed = [$(seq -s, 1 "$n_trials")]
TOML
    # Submitted before the server starts: `--db` refuses a database that a server holds.
    "$(dirname "$WORKER")/coordinator" submit "$dir/sweep.toml" --db "$dir/db" > /dev/null
    SWEEP_TOKEN=bench-token-0123456789 "$(dirname "$WORKER")/coordinator" serve --listen 127.0.0.1:50999 --db "$dir/db" > "$dir/serve.log" 2>&1 &
    server=$!
    start=$(date +%s.%N)
    SWEEP_TOKEN=bench-token-0123456789 "$WORKER" --coordinator http://127.0.0.1:50999 --device "$DEVICE" --slots "$slots" > "$dir/worker.log" 2>&1 &
    worker=$!
    # Read-only reads of the served database (WAL) until no trial is queued or running.
    left() {
        "$PYTHON" -c "import sqlite3, sys
c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
print(c.execute(\"SELECT COUNT(*) FROM trials WHERE state IN ('queued', 'running')\").fetchone()[0])" "$dir/db" 2>/dev/null || echo x
    }
    until [ "$(left)" = 0 ]; do sleep 1; done
    end=$(date +%s.%N)
    kill "$worker" "$server"; wait "$worker" "$server" 2>/dev/null || true
    secs=$(awk -v a="$end" -v b="$start" "BEGIN{print a-b}")
    printf '| %s | %.1f | %.2f |\n' "$slots" "$secs" "$(awk -v n="$n_trials" -v s="$secs" "BEGIN{print n*60/s}")"
done

echo
echo "## Time to accuracy (real CIFAR-10, 50,000 training images, 10,000 test images)"
echo
echo "| recipe | epochs | test accuracy | wall seconds | seconds in epochs | peak MiB |"
echo "|---|---|---|---|---|---|"
for recipe in ${RECIPES:-fast resnet56}; do
    file=bench/recipes/$recipe.toml
    if [ -n "$SMOKE" ]; then
        file=$OUT/$recipe-smoke.toml
        printf 'train_images = 64\ntest_images = 64\n' > "$file"
        sed -e 's/^epochs = .*/epochs = 1/' -e 's/^warmup_epochs = .*/warmup_epochs = 0.5/' -e 's/^batch_size = .*/batch_size = 32/' \
            bench/recipes/$recipe.toml >> "$file"
    fi
    start=$(date +%s.%N)
    peak_mem "$WORKER" train "$file" --device "$DEVICE" --quiet --json "$OUT/$recipe.json" > /dev/null
    end=$(date +%s.%N)
    "$PYTHON" - "$OUT/$recipe.json" "$recipe" "$(awk -v a="$end" -v b="$start" "BEGIN{print a-b}")" "$(cat "$OUT/peak")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
train = sum(e["seconds"] for e in r["epochs"])
print(f"| {sys.argv[2]} | {len(r['epochs'])} | {100 * r['test']['accuracy']:.2f}% | {float(sys.argv[3]):.1f} | {train:.1f} | {sys.argv[4]} |")
PY
done
