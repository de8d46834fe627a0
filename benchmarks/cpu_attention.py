"""Window attention with a trainable bias on the CPU: the explicit formula vs model.nets.cpu_attention's kernel.

    .venv/bin/python benchmarks/cpu_attention.py                  # the tiny preset's shapes, 5x64x64 clip
    .venv/bin/python benchmarks/cpu_attention.py --preset small --size 5x96x96

The shapes are those of one training step: a hook records every biased attention call (windows B, heads H,
tokens n, head_dim d, mask groups G) of a ``VRT`` forward+backward with random weights, then each distinct
shape is timed alone, forward+backward on random q, k, v, bias and (if masked) a shifted-window-like mask
of 0 / -100, the two paths interleaved per round, median of --repeats after one warm-up. "per step" sums
calls x time; it counts the recomputed forward of checkpointed blocks as a full call, so it overstates both
paths alike. Both paths compute the same function (tests/test_cpu_attention.py).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description  # noqa: E402
from model.nets import cpu_attention  # noqa: E402
from model.nets.vrt import vrt_tiny  # noqa: E402

PRESETS = {"tiny": {}, "small": dict(embed_dims=(32,) * 11)}      # as in benchmarks/vrt.py


def step_shapes(preset: str, size: str) -> Counter:
    """(B, H, n, d, G) of every biased attention call in one training step of the preset."""
    t, h, w = (int(v) for v in size.split("x"))
    shapes: Counter = Counter()
    original = cpu_attention.biased_attention

    def record(q, k, v, bias, mask, scale):
        shapes[(*q.shape, 0 if mask is None else mask.shape[0])] += 1
        return original(q, k, v, bias, mask, scale)

    torch.manual_seed(0)
    model = vrt_tiny(**PRESETS[preset]).train()
    cpu_attention.biased_attention = record
    try:
        model(torch.rand(1, t, 3, h, w)).square().mean().backward()
    finally:
        cpu_attention.biased_attention = original
    return shapes


def time_shape(shape: tuple, repeats: int) -> dict[str, float]:
    """Median seconds of one forward+backward per path for inputs of ``shape``."""
    b, h, n, d, g = shape
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, generator=gen, requires_grad=True) for _ in range(3))
    bias = (0.02 * torch.randn(h, n, n, generator=gen)).requires_grad_()
    mask = None
    if g:
        idx = torch.arange(n)
        mask = torch.where((idx[:, None] < n // 2) ^ (idx[None] < n // 2), -100.0, 0.0).expand(g, n, n).clone()
    paths = {"explicit": cpu_attention.explicit_attention, "kernel": cpu_attention._BiasedAttention.apply}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(repeats + 1):
        for name, fn in paths.items():
            for t in (q, k, v, bias):
                t.grad = None
            t0 = time.perf_counter()
            fn(q, k, v, bias, mask, d ** -0.5).square().mean().backward()
            if round_:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--size", default="5x64x64", help="clip TxHxW of the step whose shapes are timed")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not cpu_attention.available():
        sys.exit(f"the kernel is not available here: {cpu_attention.unavailable_reason()}")
    shapes = step_shapes(args.preset, args.size)
    print(f"# torch {torch.__version__}, {cpu_description()}, {platform.machine()}, {args.threads} threads; "
          f"preset {args.preset}, clip {args.size}; forward+backward, median of {args.repeats}")
    print("| B x H x n x d | mask groups | calls per step | explicit (ms) | kernel (ms) | speedup |")
    print("|---|---:|---:|---:|---:|---:|")
    total = {"explicit": 0.0, "kernel": 0.0}
    for shape, calls in sorted(shapes.items(), key=lambda kv: -kv[0][0] * kv[0][2] ** 2):
        t = time_shape(shape, args.repeats)
        for name in total:
            total[name] += calls * t[name]
        b, h, n, d, g = shape
        print(f"| {b} x {h} x {n} x {d} | {g or '-'} | {calls} | {t['explicit'] * 1e3:.1f} | "
              f"{t['kernel'] * 1e3:.1f} | {t['explicit'] / t['kernel']:.2f}x |", flush=True)
    print(f"| per step | | {sum(shapes.values())} | {total['explicit'] * 1e3:.0f} | {total['kernel'] * 1e3:.0f} | "
          f"{total['explicit'] / total['kernel']:.2f}x |")


if __name__ == "__main__":
    main()
