#!/usr/bin/env bash
# Training throughput, worker (tch) vs the same model in PyTorch eager, side by side.
#
#   bench/train-speed.sh [REPEATS] [MODELS...]       (defaults: 3; dense seed-cnn resnet20 resnet56)
#
# For each model it alternates `worker bench` and bench/train_speed.py REPEATS times (so both see
# the same machine load), on random images at batch 128, fp32, and prints a markdown table of
# median images/s and the ratio worker / PyTorch. Env: DEVICE (default cpu), WORKER (binary path,
# default target/release/worker), PYTHON (default .venv/bin/python), BATCH (default 128).
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${1:-3}
shift || true
MODELS=${*:-dense seed-cnn resnet20 resnet56}
DEVICE=${DEVICE:-cpu}
WORKER=${WORKER:-target/release/worker}
PYTHON=${PYTHON:-.venv/bin/python}
BATCH=${BATCH:-128}

if [ ! -x "$WORKER" ]; then
    cargo build --release -p worker
fi

# Images per epoch: enough for a few seconds per epoch on a 2-core CPU; a GPU gets more.
images_for() {
    local scale=1
    [ "$DEVICE" = cuda ] && scale=20
    case "$1" in
        dense) echo $((25600 * scale)) ;;
        seed-cnn|resnet20) echo $((2560 * scale)) ;;
        *) echo $((1280 * scale)) ;;
    esac
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for model in $MODELS; do
    n=$(images_for "$model")
    for rep in $(seq "$REPEATS"); do
        echo "bench: $model rep $rep/$REPEATS ($n images, batch $BATCH, $DEVICE)" >&2
        "$WORKER" bench --model "$model" --batch-size "$BATCH" --images "$n" --epochs 2 --device "$DEVICE" >>"$results"
        "$PYTHON" bench/train_speed.py --model "$model" --batch-size "$BATCH" --images "$n" --epochs 2 --device "$DEVICE" >>"$results"
    done
done

"$PYTHON" - "$results" <<'PY'
import json, statistics, sys, platform, torch
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
models = list(dict.fromkeys(r["model"] for r in rows))
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
print()
print("| model | device | batch | worker (tch) img/s | PyTorch eager img/s | ratio worker/PyTorch |")
print("|---|---|---|---|---|---|")
for m in models:
    w = [r["images_per_sec"] for r in rows if r["model"] == m and r["impl_name"].startswith("worker")]
    p = [r["images_per_sec"] for r in rows if r["model"] == m and r["impl_name"].startswith("pytorch")]
    dev = rows[0]["device"]; bs = rows[0]["batch_size"]
    wm, pm = statistics.median(w), statistics.median(p)
    print(f"| {m} | {dev} | {bs} | {wm:,.0f} | {pm:,.0f} | {wm / pm:.2f} |")
print()
print(f"medians of {len(w)} alternating runs each; second epoch of two (the first warms up)")
PY
