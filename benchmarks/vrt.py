"""Benchmark our VRT: forward and forward+backward time and peak memory.

    python benchmarks/vrt.py                       # tiny 5x64x64 + official 5x256x256 forward,
                                                   # official fwd+bwd at 5x128x128 (checkpointed)
    python benchmarks/vrt.py --cases tiny:fwd:5x64x64 deblur:fwdbwd-ckpt:5x256x256 --repeats 1 --warmup 0
    python benchmarks/vrt.py --cases tiny:fwdbwd:5x64x64 --deform torchvision sampling   # DCN paths
    python benchmarks/vrt.py --cases tiny:fwdbwd:5x64x64 small:fwdbwd:5x96x96 --path reference fast --repeats 5

Each case runs in a fresh subprocess so that its peak memory is its own.

Memory method:
  * CPU: peak resident set size of the worker process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
    minus its resident size just before the first timed call (after building the model, weights and
    input), i.e. the extra memory the call needed at its peak. tracemalloc does not see torch's
    allocations, hence RSS. Includes allocator caching / fragmentation, so it is an upper bound.
  * CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call.
Time: median wall time of ``--repeats`` calls after ``--warmup`` untimed calls (same workload).
On a shared machine the times depend on what else runs; compare rows from one invocation.
Modes: ``fwd`` = inference forward under ``torch.no_grad()``; ``fwdbwd`` = training-mode forward plus
``loss.backward()`` with the constructor defaults (as in the official Stage, residual_group2's
attention is always checkpointed); ``fwdbwd-ckpt`` = the same with ``use_checkpoint_attn`` and
``use_checkpoint_ffn`` on for every block.
Sizes: the official preset's forward+backward at 5x256x256 needs far more than this machine's
24 GiB even with checkpointing (5x128x128 checkpointed peaks at ~11 GiB), hence 5x128x128 by default.
Presets: ``tiny`` (model.nets.vrt.vrt_tiny, 16/24 channels), ``small`` (the tiny topology at 32 channels),
``deblur`` (the official arguments).
Paths (issue 8): ``reference`` = torchvision's deform_conv2d and the explicit attention formula;
``fast`` = the sampling deformable convolution (on CPU) and torch's fused SDPA. Both compute the same
function (tests/test_deform_conv.py, tests/test_vrt.py); the table gives the time ratio.
Weights are random (timing and memory do not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rss_kib  # noqa: E402

DEFAULT_CASES = [
    "tiny:fwd:5x64x64",
    "tiny:fwdbwd:5x64x64",
    "deblur:fwd:5x64x64",
    "deblur:fwdbwd:5x64x64",
    "deblur:fwd:5x256x256",
    "deblur:fwdbwd-ckpt:5x128x128",
]


SMALL_ARGS = dict(embed_dims=(32,) * 11)          # issue 8's "small preset": tiny topology, 32 channels
PATHS = {"reference": ("torchvision", False), "fast": ("auto", True)}   # (deform impl, fused attention)


def worker(preset: str, mode: str, size: str, repeats: int, device: str, threads: int,
           warmup: int = 1, deform: str = "auto", fused: bool = True) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from model.nets.vrt import vrt_deblur, vrt_tiny

    torch.set_num_threads(threads)
    t, h, w = (int(v) for v in size.split("x"))
    ckpt = mode.endswith("-ckpt")
    kwargs = dict(use_checkpoint_attn=ckpt, use_checkpoint_ffn=ckpt, deform_impl=deform, fused_attention=fused)
    if preset == "small":
        kwargs.update(SMALL_ARGS)
    build = {"tiny": vrt_tiny, "small": vrt_tiny, "deblur": vrt_deblur}[preset]
    torch.manual_seed(0)
    model = build(**kwargs).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, t, 3, h, w, device=device)
    cuda = device.startswith("cuda")

    def step() -> None:
        if mode == "fwd":
            model.eval()
            with torch.no_grad():
                model(x)
        else:
            model.train()
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_kib() * 1024
    for _ in range(warmup):
        step()                                          # warm-up (counts towards the peak)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
        method = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        method = "ru_maxrss - rss before"
    return dict(preset=preset, mode=mode, size=size, params=n_params, device=device, threads=threads,
                deform=deform, fused=fused, time_s=statistics.median(times), times=times, peak_mib=peak / 2 ** 20, method=method)


def run_case(case: str, repeats: int, device: str, threads: int, timeout: float, warmup: int,
             deform: str = "auto", fused: bool = True) -> dict:
    preset, mode, size = case.split(":")
    cmd = [sys.executable, __file__, "--worker", case, "--repeats", str(repeats), "--device", device,
           "--threads", str(threads), "--warmup", str(warmup), "--deform", deform,
           "--attention", "fused" if fused else "explicit"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(preset=preset, mode=mode, size=size, error=f"timeout after {timeout:.0f} s")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        if proc.returncode < 0:
            tail = [f"killed by signal {-proc.returncode} (out of memory?)"]
        return dict(preset=preset, mode=mode, size=size, error=tail[0][:120])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    head = ("| preset | params | input (TxHxW) | mode | deform, attention | time (s, median) "
            "| peak extra memory (MiB) | device |")
    lines = [head, "|---|---:|---|---|---|---:|---:|---|"]
    for r in rows:
        d = f"{r.get('deform', 'auto')}, {'SDPA' if r.get('fused', True) else 'explicit'}"
        if "error" in r:
            lines.append(f"| {r['preset']} | | {r['size']} | {r['mode']} | {d} | {r['error']} | | |")
        else:
            lines.append(f"| {r['preset']} | {r['params']:,} | {r['size']} | {r['mode']} | {d} | "
                         f"{r['time_s']:.2f} | {r['peak_mib']:.0f} | {r['device']} x{r['threads']} threads |")
    return "\n".join(lines)


def speedup_table(rows: list[dict]) -> str:
    """reference / fast time per case (rows from one invocation)."""
    lines = ["| preset, input, mode | reference (s) | fast (s) | speedup | peak memory ref / fast (MiB) |",
             "|---|---:|---:|---:|---:|"]
    cases = dict.fromkeys((r["preset"], r["size"], r["mode"]) for r in rows)
    for case in cases:
        by = {r["path"]: r for r in rows if (r["preset"], r["size"], r["mode"]) == case and "time_s" in r}
        if set(by) != set(PATHS):
            lines.append(f"| {', '.join(case)} | | | failed | |")
            continue
        ref, fast = by["reference"], by["fast"]
        lines.append(f"| {', '.join(case)} | {ref['time_s']:.2f} | {fast['time_s']:.2f} | "
                     f"{ref['time_s'] / fast['time_s']:.2f}x | {ref['peak_mib']:.0f} / {fast['peak_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES,
                    help="preset:mode:TxHxW with preset tiny|deblur, mode fwd|fwdbwd|fwdbwd-ckpt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    ap.add_argument("--deform", nargs="+", default=["auto"], choices=["auto", "sampling", "torchvision"],
                    help="deformable-conv implementation(s); several run every case once per value")
    ap.add_argument("--attention", default="fused", choices=["fused", "explicit"],
                    help="window attention through SDPA (fused) or the explicit formula")
    ap.add_argument("--path", nargs="+", choices=sorted(PATHS),
                    help="issue 8's paths (overrides --deform/--attention): reference and/or fast; "
                         "with both, a speedup table follows")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        preset, mode, size = args.worker.split(":")
        print(json.dumps(worker(preset, mode, size, args.repeats, args.device, args.threads, args.warmup,
                                args.deform[0], args.attention == "fused")))
        return
    import torch

    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible; memory: CPU = ru_maxrss minus RSS before the call, "
          f"CUDA = max_memory_allocated minus allocation before the call", flush=True)
    variants = ([(PATHS[p][0], PATHS[p][1], p) for p in args.path] if args.path else
                [(d, args.attention == "fused", None) for d in args.deform])
    rows = []
    for case in args.cases:
        for deform, fused, name in variants:
            r = run_case(case, args.repeats, args.device, args.threads, args.timeout, args.warmup, deform, fused)
            r["path"] = name
            rows.append(r)
            print(f"# done {case} deform={deform} fused={fused}: {r.get('time_s', r.get('error'))}", flush=True)
    print(table(rows))
    if args.path and set(args.path) == set(PATHS):
        print()
        print(speedup_table(rows))


if __name__ == "__main__":
    main()
