#!/usr/bin/env python3
"""compare_dump.py - hold a resnet-c layer dump to PyTorch, layer by layer.

    ./infer --arch resnet50 --weights W.safetensors --batch 1 --dump-nodes dump.safetensors photo.jpg
    /usr/bin/python3 tools/compare_dump.py dump.safetensors W.safetensors [--tol 1e-5]

The dump (net_dump_forward) holds every node's output for one batch under torchvision's
module names, the preprocessed input included ("input"). This script builds the same
architecture in PyTorch (torchvision's for resnet*, akamaster's CIFAR ResNet for
cifar_resnet*), loads the same weights, runs the dump's own input through it in eval mode
with a forward hook on every module (a module's n-th call, n > 1, is "NAME.(n-1)", as
torchvision's block ReLU is called twice), and prints for every layer both name:
max |difference|, that relative to the layer's max |output| (PyTorch's), and the first
layer past --tol. Exit status 1 when some layer is past it. Needs Debian's python3-torch
and python3-torchvision; nothing else in resnet-c needs Python.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import CifarResNet, hook_outputs  # noqa: E402

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    """({name: numpy array}, metadata) of a safetensors file (little-endian on disk)."""
    with open(path, "rb") as fh:
        blob = fh.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, t in header.items():
        if t["dtype"] == "BF16":
            raw = np.frombuffer(data[t["data_offsets"][0]:t["data_offsets"][1]], "<u2")
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(data[t["data_offsets"][0]:t["data_offsets"][1]],
                                np.dtype(DTYPES[t["dtype"]]).newbyteorder("<"))
        tensors[name] = arr.reshape(t["shape"]).astype(np.float32)
    return tensors, meta


def build(arch, weights):
    classes = next((weights[n] for n in ("fc.weight", "linear.weight", "classifier.1.weight")
                    if n in weights), None)
    k = classes.shape[0] if classes is not None else 1000
    if arch.startswith("cifar_resnet"):
        model = CifarResNet((int(arch[len("cifar_resnet"):]) - 2) // 6, k)
    else:
        model = getattr(torchvision.models, arch)(num_classes=k)
    state = model.state_dict()
    missing = [n for n in state if n not in weights and not n.endswith("num_batches_tracked")]
    if missing:
        sys.exit("compare_dump.py: the weights lack %s (%d tensors)" % (missing[0], len(missing)))
    model.load_state_dict({n: torch.from_numpy(weights[n].copy()) if n in weights else v
                           for n, v in state.items()})
    return model.float().eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", help="infer --dump-nodes output")
    ap.add_argument("weights", help="the weights infer ran (torchvision names, .safetensors)")
    ap.add_argument("--tol", type=float, default=1e-5, help="relative tolerance (1e-5)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dump, meta = read_safetensors(args.dump)
    weights, _ = read_safetensors(args.weights)
    arch = meta.get("arch", "")
    model = build(arch, weights)
    outputs = hook_outputs(model, torch.from_numpy(dump["input"].copy()))
    ops = json.loads(meta.get("ops", "{}"))
    first_bad, compared, worst = None, 0, 0.0
    print("%-28s %-10s %12s %12s %10s" % ("layer", "op", "max |torch|", "max |diff|", "relative"))
    for name in ops:
        if name not in outputs:
            continue
        ref = outputs[name].numpy().reshape(dump[name].shape)
        diff = float(np.abs(dump[name] - ref).max())
        scale = max(float(np.abs(ref).max()), 1e-30)
        rel = diff / scale
        compared += 1
        worst = max(worst, rel)
        mark = ""
        if rel > args.tol and first_bad is None:
            first_bad, mark = name, "  <- first past %g" % args.tol
        print("%-28s %-10s %12.5g %12.3g %10.3g%s" % (name, ops[name], scale, diff, rel, mark))
    print("%s: %d layers compared, worst relative difference %.3g; %s" % (
        arch, compared, worst, "first past %g: %s" % (args.tol, first_bad) if first_bad
        else "none past %g" % args.tol))
    return 1 if first_bad or compared == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
