#!/usr/bin/env bash
# Image-folder decoding throughput: the worker's loader (libjpeg-turbo through csrc/jpeg.c, one
# thread per core) against PIL (what torchvision's ImageFolder uses), on all 60,000 CIFAR-10
# JPEGs of ../shared/data, in one run; then the worker's second load, from its decode cache.
# Also checks that both decoders give the same pixels. Prints JSON lines; docs/PERFORMANCE.md
# quotes them.
#
#     bench/decode.sh            # needs scripts/setup-libtorch.sh (the .venv has pillow)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=${SHARED_DATA:-../shared/data}/cifar10-jpeg.tar.xz
[ -f "$ARCHIVE" ] || { echo "decode: no $ARCHIVE" >&2; exit 1; }
cargo build --release -q -p worker
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar -xJf "$ARCHIVE" -C "$WORK"
echo "{\"cores\": $(nproc), \"images\": $(find "$WORK" -name '*.jpg' | wc -l)}"
time_worker() {
    local t0 t1
    t0=$(date +%s.%N)
    target/release/worker data check --data "imagefolder:$WORK" >/dev/null
    t1=$(date +%s.%N)
    python3 -c "print('{\"decoder\": \"worker ($1)\", \"seconds\": %.3f, \"images_per_sec\": %d}' % ($t1 - $t0, 60000 / ($t1 - $t0)))"
}
SWEEP_IMAGE_CACHE=off time_worker "decode, $(nproc) threads"
SWEEP_IMAGE_CACHE=off time_worker "decode, $(nproc) threads, again"
.venv/bin/python bench/decode_pil.py "$WORK" --procs 1
.venv/bin/python bench/decode_pil.py "$WORK" --procs "$(nproc)"
time_worker "decode and write the cache"
time_worker "from the cache"
.venv/bin/python bench/decode_pil.py "$WORK" --procs "$(nproc)" --compare "$(ls "$WORK"/.sweep-cache/decoded-*.bin)"
