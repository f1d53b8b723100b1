#!/usr/bin/env bash
# Puts real CIFAR-10 (binary layout) into DIR (default: data), idempotently.
#
# From ../shared/data/cifar10-jpeg.tar.xz when it is there (all 60,000 images; converted by its
# make-cifar10-bin.py with the .venv's numpy and pillow), else with `worker data fetch`, which
# downloads the official archive (170 MB) and checks its MD5.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-data}
SHARED=${SHARED_DATA:-../shared/data}

if [ -f "$DIR/cifar-10-batches-bin/test_batch.bin" ] && [ -f "$DIR/cifar-10-batches-bin/data_batch_5.bin" ]; then
    echo "data: CIFAR-10 already in $DIR"
    exit 0
fi
if [ -f "$SHARED/cifar10-jpeg.tar.xz" ] && [ -f "$SHARED/make-cifar10-bin.py" ]; then
    echo "data: converting $SHARED/cifar10-jpeg.tar.xz into $DIR (about a minute)"
    scripts/setup-libtorch.sh >/dev/null
    .venv/bin/python "$SHARED/make-cifar10-bin.py" "$DIR"
else
    echo "data: no local copy in $SHARED; downloading the official archive"
    cargo build --release -p worker
    target/release/worker data fetch --dest "$DIR"
fi
