#!/usr/bin/env python3
"""PyTorch-eager twin of `worker bench`: the same models and the same per-step work.

    python bench/train_speed.py --model resnet20 [--batch-size 128] [--images 2560] [--epochs 2] [--device cpu]
                                [--precision fp32|bf16] [--channels-last]

Per step, exactly as the worker's training loop: gather a batch of uint8 images resident on the
device by a random permutation, convert to float, normalise per channel, forward, cross-entropy,
backward, SGD(momentum 0.9) step, and on-device sums of loss and correct predictions (the loss is
read back every 25 steps, as the worker does to catch divergence). Prints one JSON line shaped
like the worker's.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def dense(c):
    return nn.Sequential(nn.Flatten(), nn.Linear(c * 1024, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(),
                         nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def seed_cnn(c):
    return nn.Sequential(
        nn.Conv2d(c, 128, 8, padding="same"), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(128, 256, 4, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(256, 512, 2, padding="same"), nn.ReLU(), nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(4 * 4 * 512, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out))
        self.b = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


def resnet(depth, c):
    n = (depth - 2) // 6
    layers = [nn.Conv2d(c, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for stage, c_out in enumerate([16, 32, 64]):
        for block in range(n):
            layers.append(Block(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def conv_bn_relu(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(c, c), conv_bn_relu(c, c))

    def forward(self, x):
        return x + self.body(x)


class Scale(nn.Module):
    def forward(self, x):
        return x * 0.125


def fast(c):
    """The worker's `fast` model (ResNet-9), layer for layer."""
    return nn.Sequential(conv_bn_relu(c, 64), conv_bn_relu(64, 128), nn.MaxPool2d(2), Residual(128),
                         conv_bn_relu(128, 256), nn.MaxPool2d(2), conv_bn_relu(256, 512), nn.MaxPool2d(2),
                         Residual(512), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(512, 10, bias=False), Scale())


def build(name, c=3):
    if name == "fast":
        return fast(c)
    if name == "dense":
        return dense(c)
    if name == "seed-cnn":
        return seed_cnn(c)
    if name.startswith("resnet"):
        return resnet(int(name[len("resnet"):]), c)
    raise SystemExit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=2560)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    dev = torch.device(a.device)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_all = torch.randint(0, 256, (a.images, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev)
    y_all = torch.randint(0, 10, (a.images,), generator=g).to(dev)
    xf = x_all.double()
    mean = xf.mean(dim=(0, 2, 3)).float().view(1, 3, 1, 1)
    std = xf.std(dim=(0, 2, 3), unbiased=False).float().view(1, 3, 1, 1)
    del xf
    model = build(a.model).to(dev, memory_format=fmt)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    n, bs = a.images, a.batch_size
    steps = (n + bs - 1) // bs
    ips = []
    for epoch in range(a.epochs):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.float64, device=dev)
        perm = torch.randperm(n, device=dev)
        for step in range(steps):
            idx = perm[step * bs:(step + 1) * bs]
            x = ((x_all.index_select(0, idx).float() - mean) / std).contiguous(memory_format=fmt)
            y = y_all.index_select(0, idx)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double() * len(idx)
            correct += (logits.detach().argmax(1) == y).sum().double()
            if step % 25 == 0 or step + 1 == steps:
                loss.item()
        loss_sum.item(), correct.item()
        ips.append(n / (time.perf_counter() - t0))
    steady = max(ips[1:]) if len(ips) > 1 else ips[0]
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    print(json.dumps({"impl_name": "pytorch eager", "model": a.model, "batch_size": bs, "images": n,
                      "device": str(dev), "precision": a.precision, "channels_last": a.channels_last,
                      "epoch_images_per_sec": ips, "images_per_sec": steady, "peak_allocated_mib": peak}))


if __name__ == "__main__":
    main()
