#!/usr/bin/env python3
"""PyTorch side of `make bench`: the same configurations as tools/bench.c, same output.

    python3 tools/bench_torch.py CONFIG THREADS

CONFIG: gemm | infer224b1 | infer224b8 | infer96b32 | train96b32 | train224b8 (ResNet-50) |
infer224b1_effb0 | infer224b8_effb0 | train96b32_effb0 (EfficientNet-B0).
Inference runs eager (eval mode, no_grad), then torch.jit.trace +
torch.jit.optimize_for_inference (frozen, batch norm folded); training runs eager
channels_last with cross-entropy and Adam. Times are medians after warm-up.
Prints lines
    RESULT <config> threads=<t> rate=<x> unit=<img/s|GFLOP/s> gflops=<g> peak=0 rss_mb=<m>
        [mode=eager|jit]
(the FMA peak is measured by the C bench; tools/bench.sh puts the two side by side).
"""
import resource
import statistics
import sys
import time

import torch
import torchvision

GEMM_SHAPES = [  # (trans_a, trans_b, m, n, k) as in tools/bench.c
    (0, 0, 256, 3136, 576), (0, 0, 256, 3136, 64), (0, 0, 2048, 49, 512),
    (0, 1, 64, 576, 3136), (1, 0, 576, 3136, 64), (0, 1, 2048, 512, 49),
    (1, 0, 512, 49, 2048),
]
NETS = {  # name: (train, size, batch)
    "infer224b1": (False, 224, 1), "infer224b8": (False, 224, 8),
    "infer96b32": (False, 96, 32), "train96b32": (True, 96, 32),
    "train96b32keep": (True, 96, 32),  # PyTorch has no such mode: the same run
    "train224b8": (True, 224, 8),
    "infer224b1_effb0": (False, 224, 1), "infer224b8_effb0": (False, 224, 8),
    "train96b32_effb0": (True, 96, 32),
}


def median_seconds(fn, min_reps, min_seconds, warmup=1, max_seconds=6.0):
    """Median after warm-up, as in tools/bench.c (slow configs stop after max_seconds)."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < 50 and (len(times) < min_reps or time.perf_counter() - start < min_seconds):
        if times and time.perf_counter() - start > max_seconds:
            break
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(config, threads, rate, unit, gflops, mode=""):
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    label = f"torch {mode}" if mode else "torch"
    print(f"{config:<28} threads={threads} {rate:9.2f} {unit:<8} {gflops:7.1f} GFLOP/s  "
          f"rss {rss_mb} MB ({label})")
    extra = f" mode={mode}" if mode else ""
    print(f"RESULT {config} threads={threads} rate={rate:.4f} unit={unit} gflops={gflops:.2f} "
          f"peak=0 rss_mb={rss_mb}{extra}", flush=True)


def bench_gemm(threads):
    for ta, tb, m, n, k in GEMM_SHAPES:
        g = torch.Generator().manual_seed(0)
        a = torch.rand((k, m) if ta else (m, k), generator=g)
        b = torch.rand((n, k) if tb else (k, n), generator=g)
        opa, opb = (a.t() if ta else a), (b.t() if tb else b)
        c = torch.empty(m, n)
        flops = 2.0 * m * n * k
        t0 = time.perf_counter()
        torch.mm(opa, opb, out=c)
        torch.mm(opa, opb, out=c)
        inner = int(0.04 / (time.perf_counter() - t0 + 1e-9)) + 1

        def run():
            for _ in range(inner):
                torch.mm(opa, opb, out=c)
        t = median_seconds(run, 7, 0.0) / inner
        name = f"gemm{'T' if ta else 'N'}{'T' if tb else 'N'}_{m}x{n}x{k}"
        report(name, threads, flops / t * 1e-9, "GFLOP/s", flops / t * 1e-9)


def forward_flops(model, x):
    """Convolution and linear FLOPs of one forward pass, counted like tools/bench.c."""
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            total[0] += 2.0 * out.numel() * mod.in_channels // mod.groups * kh * kw
        else:
            total[0] += 2.0 * out.numel() * mod.in_features
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total[0]


def bench_net(config, threads):
    train, size, batch = NETS[config]
    torch.manual_seed(1)
    arch = "efficientnet_b0" if config.endswith("_effb0") else "resnet50"
    model = getattr(torchvision.models, arch)(num_classes=1000)
    x = torch.rand(batch, 3, size, size) * 4 - 2
    labels = torch.arange(batch) * 37 % 1000
    flops = forward_flops(model.eval(), x)
    if train:
        model = model.train().to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), labels).backward()
            opt.step()
        t = median_seconds(step, 3, 2.0)
        flops *= 3
        report(config, threads, batch / t, "img/s", flops / t * 1e-9, "eager")
    else:
        # eager first (its RSS is then the lower of the two), then jit-optimised
        with torch.no_grad():
            model = model.eval()

            def eager():
                model(x)
            t = median_seconds(eager, 3, 1.5)
            report(config, threads, batch / t, "img/s", flops / t * 1e-9, "eager")
            traced = torch.jit.optimize_for_inference(torch.jit.trace(model, x))

            def jit():
                traced(x)
            t = median_seconds(jit, 3, 1.5, warmup=3)
            report(config, threads, batch / t, "img/s", flops / t * 1e-9, "jit")


def main():
    if len(sys.argv) != 3 or (sys.argv[1] != "gemm" and sys.argv[1] not in NETS):
        sys.exit("usage: bench_torch.py gemm|" + "|".join(NETS) + " THREADS")
    config, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    if config == "gemm":
        bench_gemm(threads)
    else:
        bench_net(config, threads)


if __name__ == "__main__":
    main()
