#!/usr/bin/env bash
# An exported model in PyTorch: trains a small dense trial with `worker train --save-model` on
# a learnable synthetic CIFAR-10 (or on real data with CIFAR10_DATA), then loads
# model.safetensors into the same architecture written in PyTorch
# (scripts/pytorch_export_check.py, with the torch of .venv) and checks it scores the test
# accuracy the worker measured, image for image.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKER=${WORKER:-target/debug/worker}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$WORKER" ] || cargo build -p worker
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=${CIFAR10_DATA:-}
if [ -z "$data" ]; then
    data=$work/data
    python3 - "$data" <<'PY'
import os, random, sys
d = os.path.join(sys.argv[1], "cifar-10-batches-bin"); os.makedirs(d)
rng = random.Random(7)
def write(name, n):
    out = bytearray()
    for i in range(n):
        label = i % 10
        out.append(label)
        out.extend(label * 20 + rng.randrange(40) for _ in range(3072))
    open(os.path.join(d, name), "wb").write(out)
for b in range(1, 6):
    write(f"data_batch_{b}.bin", 200)
write("test_batch.bin", 500)
PY
fi
printf 'model = "dense"\nepochs = 2\nbatch_size = 64\ntrain_images = 5000\ntest_images = 2000\nnormalization = "standard"\nlr = 0.0003\n' > "$work/trial.toml"
"$WORKER" train --quiet --device cpu --data "$data" --save-model "$work/model" "$work/trial.toml" > /dev/null
"$PYTHON" scripts/pytorch_export_check.py "$work/model" "$data"
