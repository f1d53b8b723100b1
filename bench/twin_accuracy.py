#!/usr/bin/env python3
"""PyTorch-eager twin of the worker's trainer, for accuracy: does our trainer train right?

    python bench/twin_accuracy.py --data data --model resnet20 --epochs 4 --seeds 1 2 3 [--json out.json]

The same recipe as a worker trial with `semantics = "pytorch"`, `train_batches = 1`,
`layout = "standard"`, `normalization = "standard"`, `validation_split = 0`, Adam (lr 0.001,
PyTorch's defaults otherwise), batch 128, cross-entropy, no augmentation: the same data (the
10,000 images of data_batch_1.bin, all 10,000 test images), the same per-channel
standardisation (mean and population std over the training images, std at least 1e-3), the
same layers (bench/train_speed.py builds the worker's models layer for layer) and the same
initialisation scheme (PyTorch's module defaults, which is what the worker's pytorch
semantics sets explicitly; batch-norm gamma 1, beta 0). Each epoch visits the images in a fresh
random order; test accuracy is measured in eval mode. Seeds give independent runs, not the
worker's random streams: compare distributions (bench/twin.sh), not single numbers.
Prints one JSON object per run.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_speed import build  # noqa: E402


def load(path):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    # The official layout: 1024 R, 1024 G, 1024 B bytes per image, each plane row-major.
    images = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def run(model_name, epochs, seed, train, test, lr, batch_size):
    torch.manual_seed(seed)
    x_train, y_train = train
    x_test, y_test = test
    xf = x_train.double()
    mean = xf.mean(dim=(0, 2, 3)).float().view(1, 3, 1, 1)
    std = xf.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3).float().view(1, 3, 1, 1)
    model = build(model_name)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n, bs = len(y_train), batch_size
    # A trailing batch of one image is dropped, as the worker does (batch norm needs two).
    steps = n // bs if n > 1 and n % bs == 1 else (n + bs - 1) // bs
    t0 = time.perf_counter()
    curve = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        loss_sum, correct = 0.0, 0
        for step in range(steps):
            idx = perm[step * bs:(step + 1) * bs]
            x = (x_train.index_select(0, idx).float() - mean) / std
            y = y_train.index_select(0, idx)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        seen = min(n, steps * bs)
        curve.append({"train_loss": loss_sum / seen, "train_accuracy": correct / seen})
    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(y_test), 1000):
            x = (x_test[start:start + 1000].float() - mean) / std
            hits += (model(x).argmax(1) == y_test[start:start + 1000]).sum().item()
    return {
        "model": model_name,
        "epochs": epochs,
        "seed": seed,
        "test_accuracy": hits / len(y_test),
        "epoch_metrics": curve,
        "seconds": time.perf_counter() - t0,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data")
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", help="append one JSON line per run to this file")
    a = p.parse_args()
    root = os.path.join(a.data, "cifar-10-batches-bin")
    train = load(os.path.join(root, "data_batch_1.bin"))
    test = load(os.path.join(root, "test_batch.bin"))
    for seed in a.seeds:
        r = run(a.model, a.epochs, seed, train, test, a.lr, a.batch_size)
        line = json.dumps(r)
        print(line, flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
