#!/usr/bin/env bash
# Does the worker train right, not only fast? Trains dense and resnet20 with the same recipe in
# the worker (bench/recipes/twin.toml, three seeds) and in PyTorch eager
# (bench/twin_accuracy.py, three seeds), then compares the accuracy distributions
# (bench/twin_compare.py: means, 95% intervals, Welch's t-test). About 25 minutes on 2 CPU cores.
#
#   scripts/setup-libtorch.sh && scripts/prepare-data.sh && cargo build --release -p coordinator -p worker
#   bench/twin.sh [OUT]          # default out/twin
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/twin}
mkdir -p "$out"
py=.venv/bin/python
[ -x "$py" ] || { echo "no .venv: run scripts/setup-libtorch.sh first" >&2; exit 1; }
[ -f data/cifar-10-batches-bin/data_batch_1.bin ] || { echo "no data: run scripts/prepare-data.sh first" >&2; exit 1; }

target/release/coordinator sweep bench/recipes/twin.toml --out "$out" --quiet
rm -f "$out/pytorch.jsonl"
"$py" bench/twin_accuracy.py --data data --model dense --epochs 10 --seeds 1 2 3 --json "$out/pytorch.jsonl" >/dev/null
"$py" bench/twin_accuracy.py --data data --model resnet20 --epochs 2 --seeds 1 2 3 --json "$out/pytorch.jsonl" >/dev/null
"$py" bench/twin_compare.py "$out/results.json" "$out/pytorch.jsonl" | tee "$out/twin.md"
