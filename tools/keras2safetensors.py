#!/usr/bin/env python3
"""Convert Keras weights (.h5) of ResNet50 or VGG16 into a float32 safetensors file with
resnet-c's names, the format `infer --weights` and `train --weights` load.

    /usr/bin/python3 tools/keras2safetensors.py [--bn-eps EPS] WEIGHTS.h5 OUT.safetensors

Needs h5py and numpy only (Debian: python3-h5py). Reads a file written by
model.save_weights() or model.save() (then the weights under "model_weights"), with or
without the top (classifier):

  ResNet50, keras-applications names (conv1, bn_conv1, res2a_branch2a, bn2a_branch2a, ...,
    res2a_branch1, fc1000; BN epsilon 1e-3) or tf.keras 2.x names (conv1_conv, conv1_bn,
    conv2_block1_1_conv, ..., conv2_block1_0_conv, predictions; epsilon 1.001e-5)
    -> arch keras_resnet50, whose names are tf.keras' with torch's parameter suffixes:
    conv2_block1_1_conv.weight / .bias, conv2_block1_1_bn.weight (gamma) / .bias (beta) /
    .running_mean / .running_var, predictions.weight / .bias.
  VGG16 (block1_conv1 ... block5_conv3, fc1, fc2, predictions)
    -> arch vgg16, torchvision's names: features.0 ... features.28, classifier.0/3/6.
    Keras' fc1 reads the block5 map flattened in NHWC order (h, w, c); torchvision's
    classifier.0 reads it in NCHW order (c, h, w): its input columns are permuted.

Kernels are transposed from Keras' HWIO (conv) and [in, out] (dense) to torch's OIHW and
[out, in]. ResNet50's batch-norm epsilon goes into the metadata ("bn_eps"), which resnet-c
applies on load: the model's config when the file has one (model.save), else the naming
scheme's default, else --bn-eps. Keras ResNet50 and VGG16 weights expect `caffe`
preprocessing (BGR, 0-255, ImageNet mean subtracted, no scaling): keras_resnet50 defaults to
it; with vgg16 pass --preprocess caffe to infer and train. A VGG16 file without its top has
no fc1/fc2: only an inception head (which reads the 512x7x7 map) can use it.
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

try:
    import h5py
except ImportError:
    sys.exit("keras2safetensors.py needs h5py (Debian: apt-get install python3-h5py)")

BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}
# torchvision vgg16's features index of each Keras conv, block by block
VGG_CONV_INDEX = {(1, 1): 0, (1, 2): 2, (2, 1): 5, (2, 2): 7, (3, 1): 10, (3, 2): 12,
                  (3, 3): 14, (4, 1): 17, (4, 2): 19, (4, 3): 21, (5, 1): 24, (5, 2): 26,
                  (5, 3): 28}
EPS_KERAS_APPLICATIONS = 1e-3
EPS_TF_KERAS = 1.001e-5


def weight_root(f):
    """The group whose attrs list the layers: the file root (save_weights) or
    model_weights (model.save)."""
    if "layer_names" in f.attrs:
        return f
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return f["model_weights"]
    sys.exit(f"{f.filename}: not a Keras weights file (no 'layer_names' attribute at the root "
             "or under 'model_weights')")


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_layers(f):
    """{layer name: {weight field: array}} in file order, e.g. {"conv1": {"kernel": ...}}."""
    root = weight_root(f)
    layers = {}
    for lname in (text(n) for n in root.attrs["layer_names"]):
        g = root[lname]
        fields = {}
        for wname in (text(n) for n in g.attrs.get("weight_names", [])):
            field = wname.split("/")[-1].split(":")[0]
            fields[field] = np.asarray(g[wname], dtype=np.float32)
        if fields:
            layers[lname] = fields
    return layers


def config_epsilon(f):
    """The batch norms' epsilon from a full model's config (model.save), or None."""
    cfg = f.attrs.get("model_config")
    if cfg is None:
        return None
    eps = {layer["config"].get("epsilon") for layer in json.loads(text(cfg))["config"]["layers"]
           if layer.get("class_name") == "BatchNormalization"}
    if len(eps) != 1:
        return None
    return float(eps.pop())


# ------------------------------------------------------------------ name mapping

def resnet_name(lname):
    """Project-side module name of a Keras ResNet50 layer (either naming scheme), or None."""
    if lname in ("conv1", "conv1_conv"):
        return "conv1_conv"
    if lname in ("bn_conv1", "conv1_bn"):
        return "conv1_bn"
    if lname in ("fc1000", "predictions", "probs"):
        return "predictions"
    m = re.fullmatch(r"(res|bn)([2-5])([a-f])_branch(1|2a|2b|2c)", lname)
    if m:
        kind, stage, block, branch = m.groups()
        idx = {"1": 0, "2a": 1, "2b": 2, "2c": 3}[branch]
        return "conv%s_block%d_%d_%s" % (stage, ord(block) - ord("a") + 1, idx,
                                         "conv" if kind == "res" else "bn")
    if re.fullmatch(r"conv[2-5]_block[1-6]_[0-3]_(conv|bn)", lname):
        return lname
    return None


def vgg_name(lname):
    m = re.fullmatch(r"block([1-5])_conv([1-3])", lname)
    if m:
        key = (int(m.group(1)), int(m.group(2)))
        return "features.%d" % VGG_CONV_INDEX[key] if key in VGG_CONV_INDEX else None
    return {"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"}.get(lname)


def detect(layers):
    names = set(layers)
    if "block1_conv1" in names:
        return "vgg16", None
    if "res2a_branch2a" in names:
        return "keras_resnet50", EPS_KERAS_APPLICATIONS
    if "conv2_block1_1_conv" in names:
        return "keras_resnet50", EPS_TF_KERAS
    sys.exit("unrecognised Keras model: expected ResNet50 (res2a_branch2a or "
             "conv2_block1_1_conv) or VGG16 (block1_conv1); layers: %s" % sorted(names)[:8])


def convert_tensor(arch, module, field, a):
    """(torch suffix, array) of one Keras weight."""
    if field in BN_FIELDS:
        return BN_FIELDS[field], a
    if field == "bias":
        return "bias", a
    if field != "kernel":
        sys.exit(f"{module}: unexpected weight '{field}'")
    if a.ndim == 4:  # conv HWIO -> OIHW
        return "weight", np.ascontiguousarray(a.transpose(3, 2, 0, 1))
    if a.ndim != 2:
        sys.exit(f"{module}: kernel of {a.ndim} dimensions")
    if arch == "vgg16" and module == "classifier.0":
        # rows are the flattened (7, 7, 512) NHWC map; torch's columns the (512, 7, 7) one
        n_in, n_out = a.shape
        c = 512
        side = int(round((n_in // c) ** 0.5))
        if side * side * c != n_in:
            sys.exit(f"fc1: {n_in} inputs are not a 512-channel square map")
        a = a.reshape(side, side, c, n_out).transpose(3, 2, 0, 1).reshape(n_out, n_in)
        return "weight", np.ascontiguousarray(a)
    return "weight", np.ascontiguousarray(a.T)  # dense [in, out] -> [out, in]


def convert(layers):
    arch, eps = detect(layers)
    mapper = vgg_name if arch == "vgg16" else resnet_name
    tensors, skipped = [], []
    for lname, fields in layers.items():
        module = mapper(lname)
        if module is None:
            skipped.append(lname)
            continue
        for field, a in fields.items():
            suffix, t = convert_tensor(arch, module, field, a)
            tensors.append(("%s.%s" % (module, suffix), t))
    if skipped:
        sys.exit("layers with weights that %s does not have: %s" % (arch, ", ".join(skipped)))
    return arch, eps, tensors


# ------------------------------------------------------------------ safetensors

def write_safetensors(out, tensors, metadata):
    header = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name, t in tensors:
        data = t.astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - (8 + len(raw)) % 8) % 8)
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for c in chunks:
                fh.write(c)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="Keras .h5 weights (save_weights or model.save)")
    ap.add_argument("out", help="output .safetensors")
    ap.add_argument("--bn-eps", type=float,
                    help="ResNet50's batch-norm epsilon (default: the file's config, else "
                         "1e-3 for keras-applications names, 1.001e-5 for tf.keras names)")
    args = ap.parse_args()
    try:
        f = h5py.File(args.weights, "r")
    except OSError as e:
        sys.exit(f"{args.weights}: not an HDF5 file: {e}")
    with f:
        arch, eps, tensors = convert(read_layers(f))
        if arch == "keras_resnet50":
            eps = args.bn_eps or config_epsilon(f) or eps
    if args.bn_eps and arch != "keras_resnet50":
        sys.exit("--bn-eps: only for ResNet50 (VGG16 has no batch norm)")
    meta = {"arch": arch, "source": "keras:" + os.path.basename(args.weights)}
    if eps is not None:
        if not 0 < eps < 1:
            sys.exit(f"--bn-eps {eps}: expected a value in (0, 1)")
        meta["bn_eps"] = "%.9g" % eps
    write_safetensors(args.out, tensors, meta)
    top = any(n.startswith(("predictions.", "classifier.6.")) for n, _ in tensors)
    print("%s: %s, %d tensors%s%s -> %s" % (
        args.weights, arch, len(tensors), "" if top else " (no top)",
        ", bn_eps %s" % meta["bn_eps"] if "bn_eps" in meta else "", args.out))
    if arch == "vgg16":
        print("note: Keras' VGG16 weights expect caffe preprocessing: pass --preprocess caffe",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
