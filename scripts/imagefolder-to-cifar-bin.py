#!/usr/bin/env python3
"""Write a 10-class image folder of 32x32 images in CIFAR-10's binary layout, for tests.

    python scripts/imagefolder-to-cifar-bin.py FOLDER OUT_DIR     # needs pillow and numpy

Decodes like ../shared/data/make-cifar10-bin.py (PIL, convert("RGB"), planes R, G, B) but
keeps the image folder's own order (class folders sorted, then file names), which is the
order the worker reads an image folder in: a trial on either sees the same images in the
same order. The training images are split into five consecutive files.
"""
import os
import sys

import numpy as np
from PIL import Image


def read(folder, split, classes):
    rows, labels = [], []
    for label, cls in enumerate(classes):
        d = os.path.join(folder, split, cls)
        for name in sorted(os.listdir(d)):
            if name.startswith("."):
                continue
            px = np.asarray(Image.open(os.path.join(d, name)).convert("RGB"), dtype=np.uint8)
            assert px.shape == (32, 32, 3), (name, px.shape)
            rows.append(px.transpose(2, 0, 1).reshape(-1))
            labels.append(label)
    return np.stack(rows), np.array(labels, dtype=np.uint8)


def write(path, x, y):
    np.concatenate([y[:, None], x], axis=1).astype(np.uint8).tofile(path)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    folder, out = sys.argv[1], os.path.join(sys.argv[2], "cifar-10-batches-bin")
    classes = sorted(c for c in os.listdir(os.path.join(folder, "train")) if not c.startswith("."))
    assert len(classes) == 10, f"the binary layout holds 10 classes, {folder} has {len(classes)}"
    os.makedirs(out, exist_ok=True)
    x, y = read(folder, "train", classes)
    for b, idx in enumerate(np.array_split(np.arange(len(y)), 5)):
        write(os.path.join(out, f"data_batch_{b + 1}.bin"), x[idx], y[idx])
    x, y = read(folder, "test", classes)
    write(os.path.join(out, "test_batch.bin"), x, y)
    with open(os.path.join(out, "batches.meta.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")


if __name__ == "__main__":
    main()
