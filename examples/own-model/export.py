#!/usr/bin/env python3
"""Export model.py's SmallResNet to TorchScript for the sweep cluster.

    python export.py model.pt --classes 10 [--channels 3] [--seed 0]

The file holds the module's code and its initial weights; every trial that names it
(`model = "torchscript:model.pt"`) starts from these weights.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import SmallResNet  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    scripted = torch.jit.script(SmallResNet(a.classes, a.channels))
    scripted.save(a.out)
    print(f"wrote {a.out}: SmallResNet for {a.channels}-channel images, {a.classes} classes")


if __name__ == "__main__":
    main()
