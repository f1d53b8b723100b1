#!/usr/bin/env bash
# The main job on a fresh machine: install libtorch, get CIFAR-10, build the worker and train
# the example trial (the study's CNN, shortened to run in a few minutes on a laptop CPU).
# The result lands in out/trial.json. Until the coordinator exists this is a single trial.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-libtorch.sh
scripts/prepare-data.sh data
cargo build --release -p worker
mkdir -p out
target/release/worker train "${1:-examples/trial.toml}" --data data --json out/trial.json
echo "quickstart: result written to out/trial.json"
