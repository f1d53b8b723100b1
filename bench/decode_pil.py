#!/usr/bin/env python3
"""Decode an image folder with PIL, as torchvision's ImageFolder does, and time it.

    python bench/decode_pil.py FOLDER [--procs N] [--compare CACHE_FILE]

Files are read in the worker's order (class folders sorted, then file names), converted to
RGB and laid out as R, G, B planes. --compare checks the pixels against a decode cache the
worker wrote (FOLDER/.sweep-cache/decoded-*.bin) and prints how many values differ.
"""
import argparse
import json
import os
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image


def files(folder):
    out = []
    for split in ("train", "test"):
        root = os.path.join(folder, split)
        for cls in sorted(c for c in os.listdir(root) if not c.startswith(".")):
            d = os.path.join(root, cls)
            out += [os.path.join(d, n) for n in sorted(os.listdir(d)) if not n.startswith(".")]
    return out


def decode(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).reshape(-1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--compare")
    a = p.parse_args()
    paths = files(a.folder)
    t0 = time.perf_counter()
    if a.procs == 1:
        rows = [decode(f) for f in paths]
    else:
        with Pool(a.procs) as pool:
            rows = pool.map(decode, paths, chunksize=256)
    seconds = time.perf_counter() - t0
    out = {"images": len(paths), "procs": a.procs, "seconds": round(seconds, 3),
           "images_per_sec": round(len(paths) / seconds)}
    if a.compare:
        blob = open(a.compare, "rb").read()
        start = blob.index(b"\n", 10) + 1
        header = json.loads(blob[10:start - 1])
        n_train, n_test = header["train"], header["test"]
        at = start + n_train + n_test
        ours = np.frombuffer(blob, np.uint8, count=(n_train + n_test) * 3072, offset=at)
        # The cache holds all training images, then all test images: the order of `paths`.
        theirs = np.concatenate(rows)
        out["values_differing"] = int((ours != theirs).sum())
        out["values_compared"] = int(theirs.size)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
