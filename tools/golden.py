#!/usr/bin/env python3
"""golden.py - PyTorch reference values for tests/test_golden.c.

Builds torchvision's resnet50, efficientnet_b0 and the CIFAR resnet20 (akamaster's
option-A topology), fills EVERY parameter and buffer from the counter-based hash generator that util.c's
hash_fill reproduces bit for bit, runs a few training steps and an eval forward, and
writes what happened as text: tests/fixtures/golden_resnet50.txt, golden_cifar20.txt,
golden_efficientnet_b0.txt.

    /usr/bin/python3 tools/golden.py                  # (re)write both fixtures
    /usr/bin/python3 tools/golden.py --check FIXTURE  # regenerate in memory and compare;
                                                      # exit 1 on a difference

The recipe (tests/test_golden.c implements the same one):
  generator  h = lowbias32(i ^ lowbias32(seed)), u = (h >> 8) * 2^-24,
             x[i] = (2u - 1) * bound + offset, in float32, i = flat index in the tensor
  seed       FNV-1a 32-bit hash of the state_dict name, plus BASE_SEED (mod 2^32)
  bound, offset by tensor:
    running_var                    0.5, 1.0       (in [0.5, 1.5))
    running_mean                   0.1, 0
    conv weight [o, i, kh, kw]     sqrt(6 / (i*kh*kw)), 0
    linear weight [o, i]           1 / sqrt(i), 0
    "*bn3.weight" (gamma of a bottleneck's last BN), "*.block.2.1.weight" /
    "*.block.3.1.weight" (an MBConv's projection BN)  0.02, 0.2
    other 1-d "*.weight" (BN gamma) 0.1, 1.0
    other 1-d (biases, BN beta)    0.1, 0
    num_batches_tracked            left at 0
  The small gamma closing each bottleneck branch (like zero_init_residual) keeps the deep
  net well conditioned: with gamma ~1 there, training-mode BN over the few values per
  channel of layer4 (2x2 maps, batch 2) makes even torch's float32 gradients differ from
  its float64 ones by 20%; with 0.2 they agree to 2e-5.
  input      x = hash(INPUT_SEED, bound 1) over [batch, 3, size, size]
  labels     y[i] = (3 i + 1) mod classes
  loss       CrossEntropyLoss(weight = w, label_smoothing = 0.1), w[k] = 0.5 + 0.1 k
  training   model.train(); for 3 steps: zero grads, forward, loss, backward, optimizer
             step (resnet50: SGD lr 0.01, momentum 0.9, Nesterov, weight_decay 1e-4;
             resnet20: Adam lr 1e-3, weight_decay 1e-4; efficientnet_b0 as resnet50 with
             lr 1e-3, stochastic depth and dropout p = 0: with lr 0.01 its three steps move
             torch's own float32 run from its float64 one by 3e-3). BN momentum 0.1, eps 1e-5.
  then       model.eval() forward of the same input.

Fixture lines ("%.9g" numbers; names are state_dict names):
  config ARCH CLASSES BATCH SIZE STEPS OPTIMIZER LR WEIGHT_DECAY MOMENTUM NESTEROV
         LABEL_SMOOTHING BASE_SEED INPUT_SEED
  tensor NAME NDIM D0 D1 ..         every parameter and buffer (not num_batches_tracked)
  logits0 V...                      train-mode logits of step 0, [batch, classes]
  loss STEP V                       loss of each step
  gradnorm NAME V / gradmax NAME V  L2 norm and max |g| of each gradient at step 0
  gradzero NAME                     instead of those (and of delta*), for a conv bias that a
                                    training-mode batch norm cancels (cancelled_biases)
  grad NAME INDEX V                 8 sampled gradient elements per tensor at step 0
  param NAME INDEX V                sampled parameter values after the steps
  parammax NAME V                   max |p| after the steps
  delta NAME INDEX V                p_after - p_initial (in double) at the same indices
  deltamax NAME V / deltanorm NAME V  max |p_after - p_initial|, || p_after - p_initial ||
  bn NAME INDEX V                   sampled running_mean / running_var after the steps
  vanishing NAME                    a parameter whose gradient is zero in exact arithmetic
                                    (no grad or delta lines for it)
  eval_logits V...                  eval-mode logits after the steps

Layer-dump fixtures (golden_dump_resnet18.txt, golden_dump_cifar20.txt,
golden_dump_efficientnet_b0.txt) hold what PyTorch's
forward hooks see in an eval forward of the freshly filled model: for every module call
(the n-th call of a module used n times, like torchvision's block ReLU, is "NAME.n-1"),
  config dump ARCH CLASSES BATCH SIZE BASE_SEED INPUT_SEED
  nodemax NAME V                    max |output| of the call
  node NAME INDEX V                 8 sampled output elements (flat NCHW index)
tests/test_golden.c holds infer's layer dumps (net_dump_forward) to them by name.
"""
import argparse
import math
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MASK = 0xFFFFFFFF
BASE_SEED = 1234
INPUT_SEED = 7
STEPS = 3
LABEL_SMOOTHING = 0.1
SAMPLES = 8

# Adam's first update is lr * sign(g), so an element whose gradient is as small as float32
# rounding noise may step either way: torch's own float32 and float64 runs of resnet50 then
# differ by up to 96% in some parameters' updates after three steps. resnet50 therefore
# trains with SGD (Nesterov momentum), whose update is linear in the gradient; the CIFAR
# net with Adam (where it stays well conditioned). test_optim.c checks both bit for bit.
CONFIGS = {
    # name: (arch for resnet_create, classes, batch, size, optimizer, lr, weight decay,
    #        momentum, nesterov)
    "resnet50": ("resnet50", 10, 2, 64, "sgd", 0.01, 1e-4, 0.9, 1),
    "cifar20": ("cifar_resnet20", 10, 4, 32, "adam", 1e-3, 1e-4, 0.0, 0),
    # VGG-16-BN at 32 px (the smallest input: five 2x2 pools; avgpool then repeats the 1x1
    # map to 7x7), dropout p = 0 (build_vgg); SGD keeps the C side at 3 copies of 138 M
    # parameters (weights, gradients, momentum). lr 0.001: classifier.0 reads each of the
    # 512 values 49 times (the repeated 1x1 map): at 0.01 the loss jumps to 15 at step 2
    # and C and torch end 1% apart; at 0.001 it falls 2.28, 1.41, 0.90 and they agree
    "vgg16_bn": ("vgg16_bn", 10, 2, 32, "sgd", 0.001, 1e-4, 0.9, 1),
    "efficientnet_b0": ("efficientnet_b0", 10, 2, 64, "sgd", 1e-3, 1e-4, 0.9, 1),
}


# layer-dump fixtures: name: (arch, classes, batch, size)
DUMP_CONFIGS = {
    "dump_resnet18": ("resnet18", 10, 2, 64),
    "dump_cifar20": ("cifar_resnet20", 10, 2, 32),
    "dump_efficientnet_b0": ("efficientnet_b0", 10, 2, 64),
}


# ------------------------------------------------------------------ the hash generator

def hash_u32(x):
    """lowbias32 on an int64 tensor of values in [0, 2^32); products wrap in int64, but
    their low 32 bits are exact, and the mask keeps only those."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK
    x = x ^ (x >> 16)
    return x


def hash_u32_int(x):
    return int(hash_u32(torch.tensor([x & MASK], dtype=torch.int64))[0])


def hash_fill(n, seed, bound):
    """float32 tensor x[i] = (2 * u(seed, i) - 1) * bound, as util.c's hash_fill."""
    hs = hash_u32_int(seed)
    i = torch.arange(n, dtype=torch.int64)
    h = hash_u32(i ^ hs)
    u = (h >> 8).to(torch.float32) * (1.0 / 16777216.0)
    return (2.0 * u - 1.0) * torch.tensor(bound, dtype=torch.float32)


def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & MASK
    return h


def recipe(name, shape):
    """(bound, offset) of a tensor, by name and shape."""
    if name.endswith("running_var"):
        return 0.5, 1.0
    if name.endswith("running_mean"):
        return 0.1, 0.0
    if len(shape) == 4:
        return math.sqrt(6.0 / (shape[1] * shape[2] * shape[3])), 0.0
    if len(shape) == 2:
        return 1.0 / math.sqrt(shape[1]), 0.0
    if name.endswith("bn3.weight") or re.search(r"\.block\.[23]\.1\.weight$", name):
        return 0.02, 0.2
    if name.endswith(".weight"):
        return 0.1, 1.0
    return 0.1, 0.0


def tensor_seed(name):
    return (fnv1a32(name) + BASE_SEED) & MASK


def fill_model(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.zero_()
                continue
            bound, offset = recipe(name, list(t.shape))
            x = hash_fill(t.numel(), tensor_seed(name), bound)
            if offset != 0.0:
                x = x + torch.tensor(offset, dtype=torch.float32)
            t.copy_(x.view(t.shape))


# ------------------------------------------------------------------ the CIFAR ResNet

class BasicBlockA(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        else:
            short = x
        return F.relu(out + short)


class CifarResNet(nn.Module):
    def __init__(self, n, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        for li, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlockA(planes_in, planes, stride if b == 0 else 1))
                planes_in = planes
            setattr(self, "layer%d" % li, nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


def build_vgg(arch, classes):
    """torchvision's VGG with its classifier's two dropouts at p = 0, so that the C side
    (which sets p = 0 on its dropout nodes for the golden run) computes the same thing."""
    return getattr(torchvision.models, arch)(num_classes=classes, dropout=0.0, init_weights=False)


def cancelled_biases(model):
    """Names of conv biases feeding a batch norm straight away (vgg16_bn's features.N.bias):
    a training-mode batch norm subtracts the batch mean, which cancels the bias, so its
    gradient is zero but for rounding, which torch and C do differently. The fixture says
    "gradzero NAME" for them (test_golden.c checks the gradient is that small) and records
    no parameter updates for them (weight decay plus that rounding)."""
    names = set()
    for prefix, m in model.named_modules():
        if not isinstance(m, nn.Sequential):
            continue
        for i in range(len(m) - 1):
            if (isinstance(m[i], nn.Conv2d) and m[i].bias is not None and
                    isinstance(m[i + 1], nn.BatchNorm2d)):
                names.add("%s%d.bias" % (prefix + "." if prefix else "", i))
    return names


def build(key):
    arch, classes = (CONFIGS.get(key) or DUMP_CONFIGS[key])[:2]
    if arch.startswith("vgg"):
        return build_vgg(arch, classes)
    if arch in ("resnet18", "resnet50"):
        return getattr(torchvision.models, arch)(num_classes=classes)
    if arch == "efficientnet_b0":  # stochastic depth and dropout off: deterministic
        model = torchvision.models.efficientnet_b0(num_classes=classes, stochastic_depth_prob=0.0)
        model.classifier[0].p = 0.0
        return model
    return CifarResNet(3, classes)


def hook_outputs(model, x):
    """{name: output} of every module call of an eval forward, as forward hooks see them;
    a module's n-th call (n > 1) is named "name.(n-1)"."""
    outputs, calls, handles = {}, {}, []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, inputs, output, name=name):
            k = calls.get(name, 0)
            calls[name] = k + 1
            outputs[name if k == 0 else "%s.%d" % (name, k)] = output.detach().clone()
        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return outputs


def run_dump(key):
    torch.set_num_threads(1)
    arch, classes, batch, size = DUMP_CONFIGS[key]
    model = build(key).float()
    fill_model(model)
    model.eval()
    x = hash_fill(batch * 3 * size * size, INPUT_SEED, 1.0).view(batch, 3, size, size)
    lines = ["# tools/golden.py layer-dump fixture for %s (see the recipe there); do not edit"
             % arch]
    lines.append("config dump %s %d %d %d %d %d" % (arch, classes, batch, size, BASE_SEED,
                                                    INPUT_SEED))
    for name, out in hook_outputs(model, x).items():
        flat = out.flatten()
        lines.append("nodemax %s %s" % (name, fmt(flat.abs().max())))
        for idx in sample_indices(name, flat.numel()):
            lines.append("node %s %d %s" % (name, idx, fmt(flat[idx])))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the run

def fmt(v):
    return "%.9g" % float(v)


def sample_indices(name, numel, avoid=None):
    """SAMPLES distinct indices per tensor from the hash; with `avoid` (a flat tensor),
    skip elements whose magnitude is below 1e-3 of the tensor's max (there, summation
    order alone could flip the sign of an Adam update)."""
    seed = tensor_seed(name) ^ 0x5EED
    out, j = [], 0
    limit = float(avoid.abs().max()) * 1e-3 if avoid is not None else 0.0
    while len(out) < min(SAMPLES, numel) and j < 64 * SAMPLES:
        idx = hash_u32_int(seed + j) % numel
        j += 1
        if idx in out:
            continue
        if avoid is not None and abs(float(avoid[idx])) < limit:
            continue
        out.append(idx)
    return out


def run(key):
    torch.set_num_threads(1)
    torch.backends.cudnn.enabled = False
    arch, classes, batch, size, optimizer, lr, wd, momentum, nesterov = CONFIGS[key]
    model = build(key).float()
    fill_model(model)
    lines = ["# tools/golden.py fixture for %s (see the recipe there); do not edit" % arch]
    lines.append("config %s %d %d %d %d %s %s %s %s %d %s %d %d" % (
        arch, classes, batch, size, STEPS, optimizer, fmt(lr), fmt(wd), fmt(momentum),
        nesterov, fmt(LABEL_SMOOTHING), BASE_SEED, INPUT_SEED))
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for name, t in sd.items():
        lines.append("tensor %s %d %s" % (name, t.dim(), " ".join(str(d) for d in t.shape)))
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}

    x = hash_fill(batch * 3 * size * size, INPUT_SEED, 1.0).view(batch, 3, size, size)
    y = torch.tensor([(3 * i + 1) % classes for i in range(batch)], dtype=torch.int64)
    w = torch.tensor([0.5 + 0.1 * k for k in range(classes)], dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=w, label_smoothing=LABEL_SMOOTHING)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                              nesterov=bool(nesterov))

    model.train()
    grads0 = None
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        if step == 0:
            lines.append("logits0 " + " ".join(fmt(v) for v in logits.detach().flatten()))
            grads0 = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
        lines.append("loss %d %s" % (step, fmt(loss.item())))
        opt.step()

    # A gradient that is zero in exact arithmetic is float32 rounding noise in any two
    # implementations. Cancelled conv biases (cancelled_biases) are "gradzero". Others
    # vanish: an MBConv's projection BN feeds only 1x1 convs into training-mode batch norms,
    # which remove any per-channel shift, so its beta's gradient vanishes (torch's float64
    # run: 1e-15 of the median gradient norm); they are listed as "vanishing". For neither
    # are gradients or updates recorded.
    cancelled = cancelled_biases(model)
    norms = sorted(float(g.double().norm()) for g in grads0.values())
    median = norms[len(norms) // 2]
    vanishing = {k for k, g in grads0.items()
                 if float(g.double().norm()) < 1e-5 * median} - cancelled
    for name in grads0:
        if name in vanishing:
            lines.append("vanishing %s" % name)
    for name, g in grads0.items():
        if name in cancelled:
            lines.append("gradzero %s" % name)
            continue
        if name in vanishing:
            continue
        flat = g.flatten()
        lines.append("gradnorm %s %s" % (name, fmt(flat.double().norm())))
        lines.append("gradmax %s %s" % (name, fmt(flat.abs().max())))
        for idx in sample_indices(name, flat.numel()):
            lines.append("grad %s %d %s" % (name, idx, fmt(flat[idx])))
    for name, p in model.named_parameters():
        flat = p.detach().flatten()
        delta = flat.double() - initial[name].flatten().double()
        lines.append("parammax %s %s" % (name, fmt(flat.abs().max())))
        if name not in cancelled and name not in vanishing:
            lines.append("deltamax %s %s" % (name, fmt(delta.abs().max())))
            lines.append("deltanorm %s %s" % (name, fmt(delta.norm())))
        avoid = grads0[name].flatten() if optimizer != "sgd" else None
        for idx in sample_indices(name, flat.numel(), avoid=avoid):
            lines.append("param %s %d %s" % (name, idx, fmt(flat[idx])))
            if name not in cancelled and name not in vanishing:
                lines.append("delta %s %d %s" % (name, idx, fmt(delta[idx])))
    for name, b in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            continue
        flat = b.flatten()
        for idx in sample_indices(name, flat.numel()):
            lines.append("bn %s %d %s" % (name, idx, fmt(flat[idx])))

    model.eval()
    with torch.no_grad():
        logits = model(x)
    lines.append("eval_logits " + " ".join(fmt(v) for v in logits.flatten()))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ --check

def parse(text):
    """{(kind, name, index): value} plus the per-(kind, name) max |value| (the scale)."""
    values, scale, words = {}, {}, {}
    for line in text.splitlines():
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        kind = f[0]
        if kind in ("config", "tensor", "gradzero", "vanishing"):
            words[(kind, f[1] if kind != "config" else "")] = " ".join(f[1:])
        elif kind in ("logits0", "eval_logits"):
            for i, v in enumerate(f[1:]):
                values[(kind, "", i)] = float(v)
        elif kind == "loss":
            values[(kind, "", int(f[1]))] = float(f[2])
        elif kind in ("gradnorm", "gradmax", "parammax", "deltamax", "deltanorm", "nodemax"):
            values[(kind, f[1], 0)] = float(f[2])
        else:
            values[(kind, f[1], int(f[2]))] = float(f[3])
    for (kind, name, _), v in values.items():
        group = {"grad": "gradmax", "param": "parammax", "delta": "deltamax",
                 "node": "nodemax"}.get(kind)
        key = (kind, name)
        if group and (group, name, 0) in values:
            scale[key] = values[(group, name, 0)]
        else:
            scale[key] = max(scale.get(key, 0.0), abs(v))
    return values, scale, words


# --check tolerances, relative to the value's scale (its tensor's max |value|). The same
# machine regenerates every fixture bit for bit; another machine's oneDNN kernels sum in
# another order, which moves values about as much as float32 vs float64 does. Measured
# (torch float32 vs float64, this recipe): forward values <= 2e-6, step-0 gradients
# <= 1.3e-5, parameters after the steps <= 1.8e-5, their updates (delta) <= 8.5e-4.
CHECK_TOL = {"logits0": 1e-5, "loss": 1e-6, "eval_logits": 1e-5, "grad": 1e-4,
             "gradnorm": 1e-4, "gradmax": 1e-4, "param": 1e-4, "parammax": 1e-4,
             "delta": 1e-2, "deltamax": 1e-2, "deltanorm": 1e-2, "bn": 1e-4,
             "node": 1e-5, "nodemax": 1e-5}


# vgg16_bn at 32 px, batch 2 is ill-conditioned (test_golden.c's Conditioning table says
# why): regenerated on an AVX-512 machine, its fixture (written on an AVX2 one) moved by
# 2.0e-2 in sampled step-0 gradients, 9.2e-2 in deltas, 5.5e-3 in BN statistics, 2.0e-3 in
# eval logits, 1.8e-4 in losses and 4.2e-4 in parameters; its forward by 8e-6, within the
# default. Its gradients and everything after the first update get these bounds.
CHECK_TOL_OF = {"vgg16_bn": {"grad": 5e-2, "gradnorm": 5e-2, "gradmax": 5e-2, "bn": 1e-2,
                             "eval_logits": 1e-2, "loss": 1e-3, "param": 1e-3,
                             "parammax": 1e-3, "delta": 2e-1, "deltamax": 2e-1,
                             "deltanorm": 2e-1}}


def check(path, tol=None):
    name = os.path.basename(path)
    keys = list(CONFIGS) + list(DUMP_CONFIGS)
    key = next((k for k in keys if name == "golden_%s.txt" % k), None)
    if key is None:
        print("golden.py: %s: expected golden_{%s}.txt" % (path, ",".join(keys)))
        return 1
    with open(path) as fh:
        old_values, old_scale, old_words = parse(fh.read())
    new_values, _, new_words = parse(run(key) if key in CONFIGS else run_dump(key))
    bad = 0
    for k in sorted(set(old_words) | set(new_words)):
        if old_words.get(k) != new_words.get(k):
            print("differs: %s %s: fixture %r, now %r" % (k[0], k[1], old_words.get(k),
                                                          new_words.get(k)))
            bad += 1
    worst = 0.0
    for k in sorted(set(old_values) | set(new_values)):
        if k not in old_values or k not in new_values:
            print("differs: %s %s %d: only in the %s" % (
                k[0], k[1], k[2], "fixture" if k in old_values else "new run"))
            bad += 1
            continue
        a, b = new_values[k], old_values[k]
        s = max(abs(b), old_scale[(k[0], k[1])], 1e-30)
        err = abs(a - b) / s
        worst = max(worst, err)
        bound = CHECK_TOL_OF.get(key, {}).get(k[0], CHECK_TOL.get(k[0], 1e-6))
        if err > (tol if tol is not None else bound):
            print("differs: %s %s %d: fixture %.9g, now %.9g (relative %.3g)" % (
                k[0], k[1], k[2], b, a, err))
            bad += 1
    print("%s: %d values, max relative difference %.3g, %d differ" % (
        path, len(old_values), worst, bad))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", metavar="FIXTURE", help="regenerate in memory and compare")
    ap.add_argument("--tol", type=float, help="--check: one relative tolerance for all")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures"))
    ap.add_argument("--only", choices=sorted(list(CONFIGS) + list(DUMP_CONFIGS)),
                    help="write one fixture")
    args = ap.parse_args()
    if args.check:
        return check(args.check, args.tol)
    os.makedirs(args.out, exist_ok=True)
    for key in ([args.only] if args.only else list(CONFIGS) + list(DUMP_CONFIGS)):
        path = os.path.join(args.out, "golden_%s.txt" % key)
        text = run(key) if key in CONFIGS else run_dump(key)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        print("wrote %s (%d bytes)" % (path, len(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
