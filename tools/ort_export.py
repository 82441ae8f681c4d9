#!/usr/bin/env python3
"""ONNX graphs for the ONNX Runtime side of `make bench` (tools/bench_ort.js).

    /usr/bin/python3 tools/ort_export.py ARCH OUT.onnx

ARCH: resnet50 | efficientnet_b0. torchvision's model with random weights (seed 1, as
tools/bench_torch.py), exported by torch.onnx.export at opset 13 with the batch and the
image size dynamic, so one graph serves every configuration.
"""
import os
import sys

import torch
import torchvision


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("resnet50", "efficientnet_b0"):
        sys.exit("usage: ort_export.py resnet50|efficientnet_b0 OUT.onnx")
    arch, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(1)
    model = getattr(torchvision.models, arch)(num_classes=1000).eval()
    x = torch.rand(1, 3, 224, 224)
    tmp = out + ".tmp"
    torch.onnx.export(model, x, tmp, opset_version=13, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                    "logits": {0: "batch"}})
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
