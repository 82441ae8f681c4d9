#!/usr/bin/env python3
"""PyTorch mirrors of Keras' ResNet50 and VGG16 graphs, .h5 files written in Keras' layout,
and the check that tools/keras2safetensors.py + ./infer reproduce the mirror's logits.

    /usr/bin/python3 tools/keras_mirror.py test [--size 64] [--photos DIR --count N]
        [--json ../shared/reference/keras_resnet50_v1_tfjs_model.json] [--infer ./infer]
        [--vgg]

The mirrors compute what Keras computes, op for op, in NCHW: ZeroPadding2D then a valid
conv or max pool (Keras' padded zeros take part in the max), biased convs, batch norm
with the file's epsilon, VGG's Flatten of the NHWC map. Their weights are random (batch
norm statistics too, calibrated on the input so activations stay O(1)) and are written
to .h5 exactly as Keras' save_weights stores them: a group per layer, its
"weight_names" attribute ("conv1/kernel:0", ...), HWIO kernels, [in, out] dense kernels,
the root's "layer_names". ResNet50 is written in both naming schemes (keras-applications
res2a_branch2a with epsilon 1e-3, tf.keras conv2_block1_1_conv with 1.001e-5), with and
without its top. Each file is converted, loaded by ./infer --arch keras_resnet50 (vgg16),
and its logits held within 1e-4 of the largest logit of the mirror's, same top-1.
With --json, every layer of a real Keras ResNet50 graph (the tfjs manifest) is checked
against the mirror: its weights' names map to the mirror's tensors with the same shapes,
and its strides, padding and epsilon are the mirror's.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras2safetensors as k2s  # noqa: E402

import h5py  # noqa: E402

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
STAGES = [(2, 3, 64, 1), (3, 4, 128, 2), (4, 6, 256, 2), (5, 3, 512, 2)]


# ------------------------------------------------------------------ the mirrors

class KerasResNet50(nn.Module):
    """Keras' ResNet50 (v1) with tf.keras layer names as module keys."""

    def __init__(self, classes, eps):
        super().__init__()
        L = nn.ModuleDict()
        self.eps = eps

        def conv_bn(name, cin, cout, k, stride):
            L[name + "_conv"] = nn.Conv2d(cin, cout, k, stride, 0, bias=True)
            L[name + "_bn"] = nn.BatchNorm2d(cout, eps=eps)

        conv_bn("conv1", 3, 64, 7, 2)
        cin = 64
        self.blocks = []
        for stage, n, filters, stride in STAGES:
            for b in range(1, n + 1):
                p = "conv%d_block%d" % (stage, b)
                s = stride if b == 1 else 1
                if b == 1:
                    conv_bn(p + "_0", cin, 4 * filters, 1, s)
                conv_bn(p + "_1", cin, filters, 1, s)
                conv_bn(p + "_2", filters, filters, 3, 1)
                conv_bn(p + "_3", filters, 4 * filters, 1, 1)
                self.blocks.append(p)
                cin = 4 * filters
        L["predictions"] = nn.Linear(2048, classes)
        self.layers = L

    def cb(self, name, x, pad=0):
        if pad:
            x = F.pad(x, (pad, pad, pad, pad))  # ZeroPadding2D / "same" for a 3x3 stride 1
        return self.layers[name + "_bn"](self.layers[name + "_conv"](x))

    def forward(self, x):
        L = self.layers
        x = F.relu(self.cb("conv1", x, 3))               # conv1_pad + conv1_conv (valid)
        x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)   # pool1_pad (zeros) + pool1_pool
        for p in self.blocks:
            short = self.cb(p + "_0", x) if (p + "_0_conv") in L else x
            y = F.relu(self.cb(p + "_1", x))
            y = F.relu(self.cb(p + "_2", y, 1))
            y = self.cb(p + "_3", y)
            x = F.relu(y + short)
        return L["predictions"](x.mean(dim=(2, 3)))


class KerasVGG16(nn.Module):
    """Keras' VGG16: block convs ("same" = pad 1), 2x2 pools, Flatten of the NHWC map."""

    def __init__(self, classes):
        super().__init__()
        L = nn.ModuleDict()
        cin = 3
        self.order = []
        for (block, i), _ in sorted(k2s.VGG_CONV_INDEX.items()):
            cout = [64, 128, 256, 512, 512][block - 1]
            name = "block%d_conv%d" % (block, i)
            L[name] = nn.Conv2d(cin, cout, 3, 1, 1)
            self.order.append((name, i == (2 if block <= 2 else 3)))  # block's last: pool
            cin = cout
        L["fc1"] = nn.Linear(7 * 7 * 512, 4096)
        L["fc2"] = nn.Linear(4096, 4096)
        L["predictions"] = nn.Linear(4096, classes)
        self.layers = L

    def forward(self, x):
        L = self.layers
        for name, pool in self.order:
            x = F.relu(L[name](x))
            if pool:
                x = F.max_pool2d(x, 2, 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # Keras' Flatten: (h, w, c) order
        x = F.relu(L["fc1"](x))
        x = F.relu(L["fc2"](x))
        return L["predictions"](x)


def randomise(model, x, seed):
    """Kaiming-normal convs and dense layers, random biases; batch-norm statistics measured
    on x then perturbed (as tools/check_torch.py does), random gamma and beta."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
                m.reset_running_stats()
        model.train()
        model(x)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_var.mul_(0.5 + torch.rand(c, generator=g))
                m.running_mean.add_(0.1 * torch.randn(c, generator=g) * m.running_var.sqrt())
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
    model.eval()


# ------------------------------------------------------------------ Keras' .h5 layout

def applications_name(name):
    """tf.keras layer name -> keras-applications' (conv2_block1_1_conv -> res2a_branch2a)."""
    if name == "conv1_conv":
        return "conv1"
    if name == "conv1_bn":
        return "bn_conv1"
    if name == "predictions":
        return "fc1000"
    stage, block, idx, kind = name[4], int(name[11]), name[13], name[15:]
    branch = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}[idx]
    return "%s%s%s_branch%s" % ("res" if kind == "conv" else "bn", stage, chr(96 + block), branch)


def keras_weights(module):
    """[(field, array)] of one torch module as Keras stores its layer's weights."""
    if isinstance(module, nn.Conv2d):
        return [("kernel", module.weight.detach().numpy().transpose(2, 3, 1, 0)),
                ("bias", module.bias.detach().numpy())]
    if isinstance(module, nn.Linear):
        return [("kernel", module.weight.detach().numpy().T), ("bias", module.bias.detach().numpy())]
    return [("gamma", module.weight.detach().numpy()), ("beta", module.bias.detach().numpy()),
            ("moving_mean", module.running_mean.numpy()),
            ("moving_variance", module.running_var.numpy())]


def write_h5(path, model, rename=lambda n: n, top=True):
    """model.save_weights()'s layout: root attrs layer_names, backend, keras_version; a
    group per layer with attrs weight_names and datasets NAME/FIELD:0."""
    names = [n for n in model.layers if top or n != "predictions"]
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4-tf"
        f.attrs["layer_names"] = np.array([rename(n).encode() for n in names])
        for n in names:
            k = rename(n)
            g = f.create_group(k)
            fields = keras_weights(model.layers[n])
            g.attrs["weight_names"] = np.array([("%s/%s:0" % (k, fld)).encode() for fld, _ in fields])
            for fld, a in fields:
                g.create_dataset("%s/%s:0" % (k, fld), data=np.ascontiguousarray(a, dtype=np.float32))


# ------------------------------------------------------------------ checks

def convert(h5, out):
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                     "keras2safetensors.py"), h5, out],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        sys.exit("conversion of %s failed:\n%s" % (h5, r.stderr))
    return r.stdout.strip()


def header(path):
    raw = open(path, "rb").read(8)
    n = int.from_bytes(raw, "little")
    with open(path, "rb") as fh:
        fh.seek(8)
        return json.loads(fh.read(n))


def caffe(rgb):
    """uint8 HWC RGB -> float32 NCHW BGR minus the ImageNet mean, as data.c's caffe."""
    x = rgb.astype(np.float32)[:, :, ::-1] - CAFFE_MEAN_BGR
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def images(args, work):
    """PNGs at size x size: photos resized here (both sides read identical pixels), else
    smooth synthetic scenes."""
    from PIL import Image
    d = os.path.join(work, "png")
    os.makedirs(d, exist_ok=True)
    paths = []
    if args.photos:
        files = []
        for root, _, names in sorted(os.walk(args.photos)):
            files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith((".jpg", ".png"))]
        for i, p in enumerate(files[: args.count]):
            out = os.path.join(d, "%04d.png" % i)
            Image.open(p).convert("RGB").resize((args.size, args.size), Image.BILINEAR).save(out)
            paths.append(out)
    else:
        yy, xx = np.mgrid[0:args.size, 0:args.size] / args.size
        for i in range(args.count):
            img = np.stack([np.sin(6 * xx + i) * 0.5 + 0.5, np.cos(5 * yy * (i + 1)) * 0.5 + 0.5,
                            (xx * yy + 0.1 * i) % 1.0], axis=2)
            out = os.path.join(d, "%04d.png" % i)
            Image.fromarray((img * 255).astype(np.uint8)).save(out)
            paths.append(out)
    x = torch.cat([caffe(np.asarray(Image.open(p).convert("RGB"))) for p in paths])
    return d, x


def compare(args, arch, weights, d, want, label, extra=()):
    out = os.path.join(os.path.dirname(weights), "logits.npy")
    cmd = args.runner.split() + [args.infer, "--arch", arch, "--weights", weights, "--img-size", str(args.size),
           "--crop-pct", "1", "--preprocess", "caffe", "--batch", "4", "--save-logits", out,
           "--json", d] + list(extra)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        print("%s: %s failed (%d):\n%s" % (label, " ".join(cmd), r.returncode, r.stderr[-2000:]))
        return False
    c = np.load(out)
    rel = np.abs(c - want).max(axis=1) / np.abs(want).max(axis=1)
    same = int((c.argmax(1) == want.argmax(1)).sum())
    ok = rel.max() <= 1e-4 and same == len(want)
    print("%s: %d images at %d px, max |diff| / max |logit| = %.3g, same top-1 %d/%d: %s" % (
        label, len(want), args.size, rel.max(), same, len(want), "ok" if ok else "FAIL"))
    return ok


def check_json(path, model):
    """The tfjs graph of a real Keras ResNet50 against the mirror: names, shapes, strides,
    padding, epsilon."""
    m = json.load(open(path))
    layers = {l["name"]: l for l in m["modelTopology"]["model_config"]["config"]["layers"]}
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped, bad = set(), []
    for w in (w for g in m["weightsManifest"] for w in g["weights"]):
        lname, field = w["name"].split("/")
        module = k2s.resnet_name(lname)
        key = module and "layers.%s.%s" % (module, k2s.BN_FIELDS.get(field, "weight" if field == "kernel" else field))
        shape = tuple(w["shape"])
        if field == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        if shape[0] == 1000 and key and key.endswith("predictions.weight"):
            shape = (sd[key][0],) + shape[1:]
        if key and key.endswith("predictions.bias"):
            shape = sd[key]
        if key not in sd or sd[key] != shape:
            bad.append("%s -> %s %s (mirror %s)" % (w["name"], key, shape, sd.get(key)))
        mapped.add(key)
        cfg = layers[lname]["config"]
        if layers[lname]["class_name"] == "Conv2D":
            conv = model.layers[module]
            k = cfg["kernel_size"][0]
            if tuple(cfg["strides"]) != conv.stride or not cfg["use_bias"]:
                bad.append("%s: strides %s, mirror %s" % (lname, cfg["strides"], conv.stride))
            if cfg["padding"] != ("same" if k == 3 else "valid"):
                bad.append("%s: padding %s" % (lname, cfg["padding"]))
        if layers[lname]["class_name"] == "BatchNormalization" and cfg["epsilon"] != 1e-3:
            bad.append("%s: epsilon %s" % (lname, cfg["epsilon"]))
    pads = {l["name"]: l["config"]["padding"] for l in layers.values() if l["class_name"] == "ZeroPadding2D"}
    if pads != {"conv1_pad": [[3, 3], [3, 3]], "pool1_pad": [[1, 1], [1, 1]]}:
        bad.append("zero paddings %s" % pads)
    pool = [l["config"] for l in layers.values() if l["class_name"] == "MaxPooling2D"]
    if len(pool) != 1 or pool[0]["pool_size"] != [3, 3] or pool[0]["strides"] != [2, 2] or pool[0]["padding"] != "valid":
        bad.append("max pool %s" % pool)
    missing = set(k for k in sd if not k.endswith("num_batches_tracked")) - mapped
    print("tfjs graph: %d weights mapped onto the mirror, %d problems, %d mirror tensors unmapped"
          % (len(mapped), len(bad), len(missing)))
    for b in bad[:10]:
        print("  " + b)
    return not bad and not missing


def check_vgg_flatten():
    """keras2safetensors' fc1 permutation on a small VGG-named layout: torch's NCHW-order
    weights on the NCHW flatten = Keras' kernel on the NHWC flatten."""
    rng = np.random.default_rng(0)
    fmap = rng.standard_normal((512, 2, 2)).astype(np.float32)
    kernel = rng.standard_normal((2 * 2 * 512, 8)).astype(np.float32)
    _, w = k2s.convert_tensor("vgg16", "classifier.0", "kernel", kernel)
    keras = fmap.transpose(1, 2, 0).reshape(-1) @ kernel
    torch_side = w @ fmap.reshape(-1)
    ok = np.allclose(keras, torch_side, rtol=1e-5, atol=1e-4)
    print("vgg16 fc1 NHWC -> NCHW permutation: %s" % ("ok" if ok else "FAIL"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["test"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--count", type=int, default=2)
    ap.add_argument("--photos")
    ap.add_argument("--json")
    ap.add_argument("--vgg", action="store_true", help="also VGG16 end to end (needs --size 224)")
    ap.add_argument("--infer", default="./infer")
    ap.add_argument("--runner", default="", help="an emulator to run --infer under (qemu-...)")
    ap.add_argument("--work", default="/tmp/resnet-c-keras")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.work, exist_ok=True)
    d, x = images(args, args.work)
    ok = check_vgg_flatten()
    for scheme, eps, rename in (("keras-applications", 1e-3, applications_name),
                                ("tf.keras", 1.001e-5, lambda n: n)):
        model = KerasResNet50(5, eps)
        randomise(model, x, 1 if eps == 1e-3 else 2)
        if args.json and scheme == "keras-applications":
            ok &= check_json(args.json, model)
        with torch.no_grad():
            want = model(x).numpy()
        h5 = os.path.join(args.work, "resnet50_%s.h5" % scheme)
        st = os.path.join(args.work, "resnet50_%s.safetensors" % scheme)
        write_h5(h5, model, rename)
        print(convert(h5, st))
        meta = header(st)["__metadata__"]
        if meta.get("bn_eps") != "%.9g" % eps:
            print("%s: bn_eps %s, expected %g" % (scheme, meta.get("bn_eps"), eps))
            ok = False
        ok &= compare(args, "keras_resnet50", st, d, want, "keras_resnet50 (%s names)" % scheme)
        # without the top: every backbone tensor, no classifier
        write_h5(h5, model, rename, top=False)
        convert(h5, st)
        names = set(header(st)) - {"__metadata__"}
        if any(n.startswith("predictions.") for n in names) or len(names) != 318:
            print("%s without top: %d tensors" % (scheme, len(names)))
            ok = False
    if args.vgg:
        model = KerasVGG16(5)
        randomise(model, x, 3)
        with torch.no_grad():
            want = model(x).numpy()
        h5 = os.path.join(args.work, "vgg16.h5")
        st = os.path.join(args.work, "vgg16.safetensors")
        write_h5(h5, model)
        print(convert(h5, st))
        ok &= compare(args, "vgg16", st, d, want, "vgg16 (Keras)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
