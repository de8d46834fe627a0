"""The deformable convolution alone: torchvision's op vs the sampling formulation, forward+backward.

    .venv/bin/python benchmarks/deform_conv.py                       # the tiny preset's shapes
    .venv/bin/python benchmarks/deform_conv.py --channels 32 --sizes 96 48 24 12

One ``DCNv2PackFlowGuided`` call of a VRT stage: N = 8 (4 neighbouring frame pairs x 2 directions, clip of
5), C channels in and out, G offset groups, 3x3 kernel, offsets = 3 px noise (inside and outside the image),
masks in [0, 1]. Time: median of --repeats forward+backward calls after one warm-up, the two paths
interleaved per round. The VRT's stages 1-7 run the scales 1, 1/2, 1/4, 1/8, 1/4, 1/2, 1, so one training
step holds two calls at each of the sizes 64, 32, 16 and one at 8 (tiny preset, 64x64 clip); the "per VRT
step" row adds them up, which bounds what any deformable convolution can save in a step.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from model.nets.deform_conv import deform_conv2d  # noqa: E402

IMPLS = ("torchvision", "sampling")


def time_call(impl: str, tensors: tuple) -> float:
    """Seconds of one forward+backward of ``deform_conv2d`` with ``impl`` on fresh gradients."""
    x, off, mask, w, b = tensors
    for t in tensors:
        t.grad = None
    t0 = time.perf_counter()
    deform_conv2d(x, off, w, b, 1, 1, 1, mask, impl=impl).square().mean().backward()
    return time.perf_counter() - t0


def inputs(n: int, c: int, groups: int, size: int, seed: int) -> tuple:
    """Random (input, offset, mask, weight, bias) of one stage call, all requiring gradients."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, size, size, generator=g)
    off = torch.randn(n, 2 * groups * 9, size, size, generator=g) * 3.0
    mask = torch.rand(n, groups * 9, size, size, generator=g)
    w = torch.randn(c, c, 3, 3, generator=g) / (3.0 * c ** 0.5)
    b = torch.randn(c, generator=g)
    return tuple(t.requires_grad_() for t in (x, off, mask, w, b))


def main(argv: list[str] | None = None) -> None:
    """Print the table (one row per size, plus the per-VRT-step sum)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=16, help="C (tiny preset: 16)")
    ap.add_argument("--groups", type=int, default=4, help="offset groups G (tiny preset: 4)")
    ap.add_argument("--batch", type=int, default=8, help="N = 2 x (T - 1) for a clip of T (default 8)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 32, 16, 8], help="H = W per stage scale")
    ap.add_argument("--calls", type=int, nargs="+", default=[2, 2, 2, 1],
                    help="calls per VRT step at each size (default 2 2 2 1: stages 1/7, 2/6, 3/5, 4)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if len(args.calls) != len(args.sizes):
        ap.error("--calls needs one number per --sizes entry")
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"N={args.batch}, C={args.channels}, G={args.groups}, 3x3; median of {args.repeats} fwd+bwd")
    print("| H x W | calls per step | torchvision (ms) | sampling (ms) | speedup |")
    print("|---|---:|---:|---:|---:|")
    totals = dict.fromkeys(IMPLS, 0.0)
    for size, calls in zip(args.sizes, args.calls):
        tensors = inputs(args.batch, args.channels, args.groups, size, seed=size)
        for impl in IMPLS:
            time_call(impl, tensors)                      # warm-up
        times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for _ in range(args.repeats):
            for impl in IMPLS:
                times[impl].append(time_call(impl, tensors))
        med = {impl: statistics.median(v) for impl, v in times.items()}
        for impl in IMPLS:
            totals[impl] += calls * med[impl]
        print(f"| {size} x {size} | {calls} | {1e3 * med['torchvision']:.1f} | {1e3 * med['sampling']:.1f} "
              f"| {med['torchvision'] / med['sampling']:.1f}x |")
    print(f"| per VRT step | {sum(args.calls)} | {1e3 * totals['torchvision']:.0f} | {1e3 * totals['sampling']:.0f} "
          f"| {totals['torchvision'] / totals['sampling']:.1f}x |")


if __name__ == "__main__":
    main()
