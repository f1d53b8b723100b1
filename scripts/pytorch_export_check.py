"""Loads a model exported by the worker (model.safetensors + model.json) into the same
architecture written in PyTorch, evaluates it on the CIFAR-10 test set the trial used, and
checks that it gets the accuracy the worker measured.

    python scripts/pytorch_export_check.py MODEL_DIR DATA_DIR

Reads safetensors without the `safetensors` package (8-byte header length, JSON header, raw
little-endian data), so only torch is needed; `safetensors.torch.load_file` reads the same
file. Only the dense model is written out here (the layer names match the worker's:
fc1..fc4)."""
import json
import struct
import sys
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def load_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        buf = bytearray(body[start:end])
        out[name] = torch.frombuffer(buf, dtype=DTYPES[t["dtype"]]).reshape(t["shape"]).clone()
    return out


def dense(channels):
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(channels * 1024, 1024)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(1024, 256)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(256, 64)), ("relu3", nn.ReLU()),
        ("fc4", nn.Linear(64, 10)),
    ]))


def test_images(data_dir, count):
    raw = (Path(data_dir) / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    n = len(raw) // 3073 if count is None else min(count, len(raw) // 3073)
    rows = torch.frombuffer(bytearray(raw[:n * 3073]), dtype=torch.uint8).reshape(n, 3073)
    return rows[:, 1:].reshape(n, 3, 32, 32), rows[:, 0].long()


def main():
    model_dir, data_dir = Path(sys.argv[1]), sys.argv[2]
    info = json.loads((model_dir / "model.json").read_text())
    trial = info["trial"]
    if trial["model"] != "dense" or trial.get("layout", "standard") != "standard":
        sys.exit(f"this check writes out the dense model on the standard layout, not {trial['model']}")
    channels = info["input"][0]
    model = dense(channels)
    model.load_state_dict(load_safetensors(model_dir / "model.safetensors"), strict=True)
    model.eval()
    x, y = test_images(data_dir, trial.get("test_images"))
    x = x.float()
    if trial.get("color") == "grayscale":
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x * luma).sum(1, keepdim=True).round().clamp(0, 255)
    norm = trial.get("normalization", "standard")
    if norm == "standard":
        mean = torch.tensor(info["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(info["std"], dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
    elif norm == "scale":
        x = x / 255.0
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                      for i in range(0, len(y), 1000))
    accuracy = correct / len(y)
    print(json.dumps({"pytorch_test_accuracy": accuracy, "worker_test_accuracy": info["test_accuracy"],
                      "images": len(y)}))
    if round(accuracy * len(y)) != round(info["test_accuracy"] * len(y)):
        sys.exit("PyTorch and the worker disagree on the exported model's test accuracy")


if __name__ == "__main__":
    main()
