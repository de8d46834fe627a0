"""Both arms side by side: parameters, forward+backward time and peak memory, spike-arm overhead.

    .venv/bin/python benchmarks/arms.py                          # tiny preset, 5x64x64, K=32, CPU
    .venv/bin/python benchmarks/arms.py --preset deblur --size 5x64x64 --repeats 1

Each (arm) runs in a fresh subprocess so its peak memory is its own; the arms alternate per repeat so
a shared machine's load hits both alike. Time: median wall time of a training step's forward +
``loss.backward()`` (random weights and inputs; timing does not depend on them). Memory: peak RSS of
the worker minus its RSS before the first timed call (CPU; tracemalloc does not see torch's
allocations), or ``torch.cuda.max_memory_allocated`` growth on CUDA. The overhead ratio is spike-arm
time / spike-free-arm time (target: <= 1.3x, issue 5).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rss_kib  # noqa: E402


def worker(preset: str, use_spike: bool, size: str, bins: int, repeats: int, warmup: int, device: str) -> dict:
    """In the worker process: time ``repeats`` forward+backward steps of one arm on a random ``size`` clip.

    Returns ``times`` (s per step), ``peak_mib`` (peak memory growth over the timed steps), ``params`` and
    ``spike_params``.
    """
    import resource

    import torch

    sys.path.insert(0, str(REPO))
    from model.nets.integrate_vrt import SpikeVRT
    from model.nets.vrt import VRT_PRESETS

    torch.manual_seed(0)
    vrt = VRT_PRESETS[preset]()
    model = SpikeVRT(vrt, num_bins=bins, channels_per_scale=vrt.feature_dims(), use_spike=use_spike).to(device)
    t, h, w = (int(v) for v in size.split("x"))
    blur = torch.rand(1, t, 3, h, w, device=device)
    spike = torch.randn(1, t, bins, h, w, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(blur, spike).square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    rss0 = rss_kib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    n_all = sum(p.numel() for p in model.parameters())
    n_spike = sum(p.numel() for p in model.spike_parameters())
    return dict(times=times, peak_mib=peak, params=n_all, spike_params=n_spike)


def run_case(args, use_spike: bool) -> dict:
    """One timed step of one arm in a fresh ``--worker`` subprocess; its ``worker`` result."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(dict(
        preset=args.preset, use_spike=use_spike, size=args.size, bins=args.bins, repeats=1,
        warmup=args.warmup, device=args.device))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    """Alternate the arms over --repeats fresh processes and print the table and the time ratio."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "deblur"])
    ap.add_argument("--size", default="5x64x64", help="T x H x W of the clip")
    ap.add_argument("--bins", type=int, default=32, help="K")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per arm (each in its own process)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return 0
    results = {True: [], False: []}
    for r in range(args.repeats):
        for use_spike in ((True, False) if r % 2 == 0 else (False, True)):
            results[use_spike].append(run_case(args, use_spike))
    rows = ["| arm | parameters | spike-branch parameters | fwd+bwd (s, median) | peak extra (MiB) |",
            "|---|---:|---:|---:|---:|"]
    med = {}
    for use_spike, name in ((False, "VRT (--no-spike)"), (True, "VRT + spike branch")):
        rs = results[use_spike]
        med[use_spike] = statistics.median(x["times"][0] for x in rs)
        rows.append(f"| {name} | {rs[0]['params']:,} | {rs[0]['spike_params']:,} | {med[use_spike]:.2f} | "
                    f"{max(x['peak_mib'] for x in rs):,.0f} |")
    ratio = med[True] / med[False]
    print(f"preset {args.preset}, clip {args.size}, K={args.bins}, device {args.device}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {args.repeats} repeats")
    print("\n".join(rows))
    print(f"spike arm / spike-free arm time: {ratio:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
