#!/usr/bin/env bash
# Installs libtorch for the worker, idempotently: the PyPI wheel torch==2.11.0 (+cu130; it runs
# on CPU too) into .venv, plus numpy/pillow for the data-preparation script and the PyTorch
# benchmark. .libtorch then points at the wheel's `torch` package, which .cargo/config.toml
# hands to tch as LIBTORCH. Re-running is a no-op once the right version is present.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi

have=$(.venv/bin/python -c 'import torch, numpy, PIL; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$TORCH_VERSION" ]; then
    echo "setup: installing torch==$TORCH_VERSION (about 4.7 GB with its CUDA libraries), numpy, pillow"
    .venv/bin/pip install --disable-pip-version-check --no-cache-dir -q "torch==$TORCH_VERSION" numpy pillow
fi

torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
if [ "$(readlink .libtorch 2>/dev/null)" != "$torch_dir" ]; then
    ln -sfn "$torch_dir" .libtorch
fi
echo "setup: libtorch $TORCH_VERSION at .libtorch -> $torch_dir"
