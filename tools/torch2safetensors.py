#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth / .th / .pt) into a float32 safetensors file with
torchvision state_dict names, the format resnet-c loads.

    python3 tools/torch2safetensors.py [--trust-pickle] CHECKPOINT OUT.safetensors

The checkpoint may be a bare state dict, a dict holding it under "state_dict" or "model"
(as training scripts save it), or a pickled nn.Module. "module." prefixes left by
DataParallel are stripped and BatchNorm's num_batches_tracked counters are dropped.
Floating tensors of any precision are written as F32; other tensors are reported and
skipped. The safetensors file is written by hand (8-byte little-endian header length,
JSON header padded with spaces to 8 bytes, raw data), atomically, so the `safetensors`
package is not needed.
"""
import argparse
import json
import os
import struct
import sys

import torch


def load_checkpoint(path, trust_pickle):
    """torch.load restricted to tensors and plain containers. Files it refuses (older
    restricted unpicklers refuse some plain values, e.g. floats in torch 1.13) need the
    full unpickler, which runs code the file names: only with trust_pickle."""
    why = "this torch has no restricted (weights_only) loading"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch without weights_only
        pass
    except Exception as e:
        why = f"restricted loading failed ({type(e).__name__}: the file holds non-tensor objects)"
    if not trust_pickle:
        sys.exit(f"{path}: {why}; the full unpickler would run code from the file: pass "
                 "--trust-pickle only if you trust where it comes from")
    print(f"note: {path}: {why}; using the full unpickler (--trust-pickle)", file=sys.stderr)
    try:
        return torch.load(path, map_location="cpu")
    except Exception as e:
        sys.exit(f"{path}: not a PyTorch checkpoint: {e}")


def find_state_dict(obj, path):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and any(torch.is_tensor(v) for v in inner.values()):
                return inner
        if any(torch.is_tensor(v) for v in obj.values()):
            return obj
    sys.exit(f"{path}: no state dict found (expected a dict of tensors, or one under "
             f"'state_dict' or 'model'; found {type(obj).__name__}"
             + (f" with keys {list(obj)[:8]}" if isinstance(obj, dict) else "") + ")")


def clean_name(name):
    while name.startswith("module."):
        name = name[len("module."):]
    return name


def convert(state, path):
    """-> ordered list of (name, float32 contiguous tensor)."""
    tensors, seen = [], {}
    for raw_name, value in state.items():
        name = clean_name(raw_name)
        if name.endswith("num_batches_tracked"):
            continue
        if not torch.is_tensor(value):
            print(f"skipping {raw_name}: not a tensor ({type(value).__name__})", file=sys.stderr)
            continue
        if not value.is_floating_point():
            print(f"skipping {raw_name}: dtype {value.dtype} is not floating point",
                  file=sys.stderr)
            continue
        if name in seen:
            sys.exit(f"{path}: '{raw_name}' and '{seen[name]}' both map to '{name}'")
        seen[name] = raw_name
        tensors.append((name, value.detach().to(torch.float32).contiguous()))
    if not tensors:
        sys.exit(f"{path}: no floating-point tensors to convert")
    return tensors


def write_safetensors(out, tensors, metadata):
    header = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name, t in tensors:
        data = t.numpy().astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)  # data starts 8-byte aligned
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return 8 + len(text) + offset


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="load files the restricted unpickler refuses with the full one, which "
                         "runs code from the file (only for files you trust)")
    args = ap.parse_args()
    if not os.path.isfile(args.checkpoint):
        sys.exit(f"{args.checkpoint}: no such file")
    state = find_state_dict(load_checkpoint(args.checkpoint, args.trust_pickle),
                            args.checkpoint)
    tensors = convert(state, args.checkpoint)
    size = write_safetensors(args.out, tensors,
                             {"source": os.path.basename(args.checkpoint)})
    n_values = sum(t.numel() for _, t in tensors)
    n_params = sum(t.numel() for n, t in tensors
                   if not n.endswith(("running_mean", "running_var")))
    print(f"{args.out}: {len(tensors)} tensors, {n_params:,} parameters "
          f"({n_values:,} values with BN statistics), {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
