#!/usr/bin/env python3
"""Check that ./infer agrees with PyTorch on real images (optional; needs Debian's
python3-torch and python3-torchvision, PIL comes with them).

  imagenet: random torchvision ResNet weights (random batch-norm statistics too), real
            photos resized to 224x224 PNG; compares ./infer --crop-pct 1 --save-logits with
            PyTorch's logits (max |diff| relative to the image's largest |logit|, top-1).
  cifar:    a real CIFAR-10 checkpoint converted with tools/torch2safetensors.py, on the test
            set converted losslessly to PNG (identical pixels on both sides: prediction
            agreement) and on the JPEGs themselves (accuracy, PIL/libjpeg vs stb_image).

  /usr/bin/python3 tools/check_torch.py imagenet --arch resnet50 --photos ../shared/data/hymenoptera/val
  /usr/bin/python3 tools/check_torch.py cifar --ckpt ../shared/weights/cifar-resnet/resnet56-4bfd9763.th \
      --arch cifar_resnet56 --test ../shared/data/cifar10/test
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch2safetensors import convert, find_state_dict, load_checkpoint, write_safetensors  # noqa: E402
from golden import CifarResNet  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pnm", ".psd")


def to_tensor(rgb):
    """uint8 HWC -> normalised float32 NCHW, the same arithmetic as data.c."""
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def run_infer(args, extra):
    cmd = [args.infer] + extra
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r, time.time() - t0


def listing(root):
    """Files in ./infer's order: sorted class folders, then sorted file names (bytewise)."""
    out = []
    for cls in sorted(os.listdir(root)):
        d = os.path.join(root, cls)
        if cls.startswith(".") or not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXT):
                out.append((os.path.join(d, f), cls))
    return out


def randomize_batchnorm(model, batch, seed, calibrated):
    """Random batch-norm statistics around the photos' real statistics, so activations stay
    O(1). ResNets: statistics from a train-mode forward, then random gamma, beta and
    statistics around them. calibrated (EfficientNet, whose 16 blocks with squeeze-and-
    excitation gates compound a mismatch between train-mode and eval activations until
    PyTorch's own float32 logits differ from its float64 ones by 4 %): random gamma and beta
    first, then the statistics from a train-mode forward, then perturbed by at most 20 %."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in bns:
            if calibrated:
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.momentum = None
            m.reset_running_stats()
        model.train()
        model(batch)
        for m in bns:
            c = m.num_features
            if calibrated:
                m.running_var.mul_(0.8 + 0.4 * torch.rand(c, generator=g))
                m.running_mean.add_(0.05 * torch.randn(c, generator=g) * m.running_var.sqrt())
            else:
                m.running_var.mul_(0.5 + torch.rand(c, generator=g))
                m.running_mean.add_(0.1 * torch.randn(c, generator=g) * m.running_var.sqrt())
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))


def imagenet(args):
    os.makedirs(args.work, exist_ok=True)
    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, args.arch)()
    # photos -> 224x224 PNG (the resize happens here, once; both sides read identical pixels)
    photos = [p for p, _ in listing(args.photos)][: args.count] if os.path.isdir(args.photos) else []
    png_dir = os.path.join(args.work, "png")
    os.makedirs(png_dir, exist_ok=True)
    pngs = []
    for i, p in enumerate(photos):
        out = os.path.join(png_dir, f"{i:04d}.png")
        Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR).save(out)
        pngs.append(out)
    batch = torch.cat([to_tensor(np.asarray(Image.open(p).convert("RGB"))) for p in pngs])
    randomize_batchnorm(model, batch[: min(16, len(batch))], args.seed + 1,
                        args.arch.startswith("efficientnet"))
    model.eval()
    weights = os.path.join(args.work, f"{args.arch}_random.safetensors")
    write_safetensors(weights, convert(model.state_dict(), "model"), {"source": "check_torch.py"})
    logits_path = os.path.join(args.work, "logits.npy")
    r, secs = run_infer(args, ["--arch", args.arch, "--weights", weights, "--img-size", "224",
                               "--crop-pct", "1", "--batch", "8", "--save-logits", logits_path,
                               "--json", png_dir])
    c = np.load(logits_path)
    with torch.no_grad():
        t = torch.cat([model(batch[i:i + 8]) for i in range(0, len(batch), 8)]).numpy()
        t64 = model.double()(batch.double()).numpy()
    if c.shape != t.shape:
        sys.exit(f"shape mismatch: infer {c.shape}, torch {t.shape}")
    rel = np.abs(c - t).max(axis=1) / np.abs(t).max(axis=1)
    rel64 = np.abs(c - t64).max(axis=1) / np.abs(t64).max(axis=1)
    torch64 = np.abs(t - t64).max(axis=1) / np.abs(t64).max(axis=1)
    same = int((c.argmax(1) == t.argmax(1)).sum())
    print(f"{args.arch}: {len(pngs)} photos, max |diff| / max |logit| = {rel.max():.3g} "
          f"(median {np.median(rel):.3g}), same top-1 on {same}/{len(pngs)}; infer took {secs:.1f}s")
    print(f"  against PyTorch in float64: C {rel64.max():.3g}, PyTorch float32 {torch64.max():.3g} "
          f"(largest |logit| {np.abs(t64).max():.3g})")
    ok = rel.max() <= 1e-4 and same == len(pngs)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def cifar(args):
    os.makedirs(args.work, exist_ok=True)
    name = os.path.basename(args.ckpt).split(".")[0]
    weights = os.path.join(args.work, name + ".safetensors")
    # the project's own ../shared checkpoint: trusted
    state = find_state_dict(load_checkpoint(args.ckpt, True), args.ckpt)
    write_safetensors(weights, convert(state, args.ckpt), {"source": os.path.basename(args.ckpt)})
    depth = int(args.arch.replace("cifar_resnet", ""))
    model = CifarResNet((depth - 2) // 6, 10)
    model.load_state_dict({k.replace("module.", ""): v for k, v in state.items()})
    model.eval()
    files = listing(args.test)
    classes = sorted({c for _, c in files})
    labels = np.array([classes.index(c) for _, c in files])
    # lossless PNG copy of the test set: identical pixels for both sides
    png_root = os.path.join(args.work, "png")
    pil = []
    for p, c in files:
        img = np.asarray(Image.open(p).convert("RGB"))
        pil.append(img)
        out = os.path.join(png_root, c, os.path.splitext(os.path.basename(p))[0] + ".png")
        if not os.path.exists(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            Image.fromarray(img).save(out)
    with torch.no_grad():
        x = torch.cat([to_tensor(i) for i in pil])
        t = torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()
    torch_acc = 100.0 * (t.argmax(1) == labels).mean()
    labels_path = os.path.join(args.work, "classes.txt")
    with open(labels_path, "w") as f:
        f.write("\n".join(classes) + "\n")
    common = ["--arch", args.arch, "--weights", weights, "--labels", labels_path, "--img-size", "32",
              "--crop-pct", "1", "--batch", "100"]
    lp = os.path.join(args.work, "png_logits.npy")
    r, secs_png = run_infer(args, common + ["--eval", png_root, "--out", os.path.join(args.work, "eval_png"),
                                            "--save-logits", lp])
    c = np.load(lp)
    agree = int((c.argmax(1) == t.argmax(1)).sum())
    rel = (np.abs(c - t).max(axis=1) / np.abs(t).max(axis=1)).max()
    png_acc = 100.0 * (c.argmax(1) == labels).mean()
    lj = os.path.join(args.work, "jpg_logits.npy")
    r, secs_jpg = run_infer(args, common + ["--eval", args.test, "--out", os.path.join(args.work, "eval_jpg"),
                                            "--save-logits", lj])
    cj = np.load(lj)
    jpg_acc = 100.0 * (cj.argmax(1) == labels).mean()
    print(f"{args.arch} ({os.path.basename(args.ckpt)}), {len(files)} test images")
    print(f"  PNG (identical pixels): same prediction on {agree}/{len(files)}, max |diff|/max|logit| {rel:.3g}; "
          f"accuracy C {png_acc:.2f} %, PyTorch {torch_acc:.2f} %; infer {secs_png:.1f}s")
    print(f"  JPEG (stb_image in C, PIL in PyTorch): accuracy C {jpg_acc:.2f} %, PyTorch {torch_acc:.2f} % "
          f"(difference {jpg_acc - torch_acc:+.2f} points); infer {secs_jpg:.1f}s")
    ok = agree >= len(files) - len(files) // 1000 and abs(jpg_acc - torch_acc) <= 0.2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("imagenet")
    a.add_argument("--arch", default="resnet50")
    a.add_argument("--photos", required=True)
    a.add_argument("--count", type=int, default=48)
    a.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("cifar")
    b.add_argument("--ckpt", required=True)
    b.add_argument("--arch", required=True)
    b.add_argument("--test", required=True)
    for p in (a, b):
        p.add_argument("--infer", default="./infer")
        p.add_argument("--work", default="/tmp/resnet-c-check")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sys.exit(imagenet(args) if args.cmd == "imagenet" else cifar(args))


if __name__ == "__main__":
    main()
