#!/usr/bin/env bash
# The main job on a fresh machine: install libtorch, get CIFAR-10, build the coordinator and
# the worker, and run the sweep examples/quick.toml (or the sweep file given as $1) on local
# workers. The report lands in out/<sweep name>/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-libtorch.sh
scripts/prepare-data.sh data
cargo build --release -p worker -p coordinator
target/release/coordinator sweep "${1:-examples/quick.toml}"
