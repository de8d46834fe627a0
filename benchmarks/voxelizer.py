"""Voxelizer benchmark: the same spikes through every path, timed on one core.

    .venv/bin/python benchmarks/voxelizer.py                # 400x250 camera at 20 kHz, 2000 frames
    .venv/bin/python benchmarks/voxelizer.py --frames 500 --no-write

Rows (all on the same random spike frames, firing probability --p, one exposure window covering all
frames, K bins):

* reference  the original document's numpy ``voxelize`` (np.add.at; imported from tests/oracles.py)
             on the events ``[N, 3]`` float64;
* events     ``voxelize_events`` on the same events (t float64, y/x as uint16 and as int64);
* unpackbits numpy ``np.unpackbits(bitorder='little')`` + per-bin sum on the packed ``.dat`` bytes;
* packed     ``voxelize_packed`` on the same packed bytes (MB/s of packed input);
* binary     ``voxelize_binary`` on the unpacked bool frames (for reference).

Every output is asserted identical to the reference. Numba is JIT-warmed before timing; each figure
is the median of --repeats interleaved rounds (every path once per round, so background load
hits all paths alike). One core:
NUMBA_NUM_THREADS=1 (the kernels are serial anyway). Writes the table, the command and the machine
to benchmarks/RESULTS.md under "## Voxelizer" (other sections are kept).
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from spikeprep.voxelizer import voxelize_binary, voxelize_events, voxelize_packed  # noqa: E402
from _common import cpu_description, load_average, write_section  # noqa: E402
from oracles import voxelize  # noqa: E402  the original document's reference (section 3.3)

SECTION = "## Voxelizer"


def numpy_unpack_voxelize(packed, t, t0, t1, H, W, K, flipud=True):
    """The plain numpy packed path: select window frames, unpackbits per bin, sum, flip."""
    out = np.zeros((K, H, W), dtype=np.uint32)
    sel = (t >= t0) & (t < t1)
    b = np.clip(np.floor((t[sel] - t0) / (t1 - t0) * K).astype(np.int64), 0, K - 1)
    frames = packed[sel]
    for k in np.unique(b):
        bits = np.unpackbits(frames[b == k], axis=1, bitorder="little")
        img = bits.sum(axis=0, dtype=np.uint32).reshape(H, W)
        out[k] = img[::-1] if flipud else img
    return out


def machine() -> str:
    """CPU, Python, numpy and numba versions and the load average, for RESULTS.md."""
    return (f"{cpu_description()}, {platform.python_implementation()} "
            f"{platform.python_version()}, numpy {np.__version__}, numba "
            f"{__import__('numba').__version__}, {load_average()} at start")


def main(argv=None) -> int:
    """Time every path on the same spikes (each checked against the reference); print, and record unless
    --no-write."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: .venv/bin/python benchmarks/voxelizer.py --frames 2000")
    ap.add_argument("--height", type=int, default=250, help="sensor rows (default 250)")
    ap.add_argument("--width", type=int, default=400, help="sensor columns (default 400)")
    ap.add_argument("--rate", type=float, default=20000.0, help="spike frame rate in Hz (default 20000)")
    ap.add_argument("--frames", type=int, default=2000, help="spike frames in the window (default 2000)")
    ap.add_argument("--p", type=float, default=0.1, help="firing probability per pixel and frame")
    ap.add_argument("--bins", type=int, default=32, help="K (default 32)")
    ap.add_argument("--repeats", type=int, default=7,
                    help="interleaved rounds; each path runs once per round (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md",
                    help="markdown file whose '## Voxelizer' section is (re)written")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    H, W, N, K = args.height, args.width, args.frames, args.bins
    if (H * W) % 8:
        ap.error("height*width must be a multiple of 8 (.dat frames are whole bytes)")
    info = machine()
    rng = np.random.default_rng(args.seed)
    frames = rng.random((N, H, W), dtype=np.float32) < args.p
    start = 1.0
    t_frames = start + np.arange(N, dtype=np.float64) / args.rate
    t0, t1 = start, start + N / args.rate          # the window covers every frame
    j, y, x = np.nonzero(frames)
    t_ev = t_frames[j]
    events = np.stack([t_ev, y.astype(np.float64), x.astype(np.float64)], axis=1)
    y16, x16 = y.astype(np.uint16), x.astype(np.uint16)
    y64, x64 = y.astype(np.int64), x.astype(np.int64)
    packed = np.packbits(frames[:, ::-1, :].reshape(N, H * W), axis=1, bitorder="little")
    nbytes = packed.nbytes
    n_ev = t_ev.size

    # warm up: compile or load every specialisation used below
    small = slice(0, min(N, 8))
    voxelize_events(t_ev[:100], y16[:100], x16[:100], t0, t1, H, W, K)
    voxelize_events(t_ev[:100], y64[:100], x64[:100], t0, t1, H, W, K)
    voxelize_packed(packed[small], t_frames[small], t0, t1, H, W, K)
    voxelize_binary(frames[small], t_frames[small], t0, t1, K)

    # every path runs once per round, rounds interleaved, so background load hits all paths alike
    paths = {
        "ref": lambda: voxelize(events, t0, t1, H, W, K),
        "ev16": lambda: voxelize_events(t_ev, y16, x16, t0, t1, H, W, K),
        "ev64": lambda: voxelize_events(t_ev, y64, x64, t0, t1, H, W, K),
        "np": lambda: numpy_unpack_voxelize(packed, t_frames, t0, t1, H, W, K),
        "pk": lambda: voxelize_packed(packed, t_frames, t0, t1, H, W, K),
        "bin": lambda: voxelize_binary(frames, t_frames, t0, t1, K),
    }
    times = {k: [] for k in paths}
    outs = {}
    for _ in range(args.repeats):
        for key, fn in paths.items():
            s = time.perf_counter()
            outs[key] = fn()
            times[key].append(time.perf_counter() - s)
    med = {k: float(np.median(v)) for k, v in times.items()}
    ref = outs.pop("ref").astype(np.uint32)
    for key, out in outs.items():
        assert np.array_equal(out, ref), f"{key} differs from the reference"
    t_ref, t_np, t_pk = med["ref"], med["np"], med["pk"]
    realtime = (nbytes / t_pk) / (H * W / 8 * args.rate)
    rows = [
        ("reference numpy voxelize (np.add.at), events [N,3] float64", t_ref,
         f"{n_ev / t_ref / 1e6:.0f} Mev/s", "1.0x"),
        ("voxelize_events, t float64, y/x uint16", med["ev16"], f"{n_ev / med['ev16'] / 1e6:.0f} Mev/s",
         f"{t_ref / med['ev16']:.1f}x vs reference"),
        ("voxelize_events, t float64, y/x int64", med["ev64"], f"{n_ev / med['ev64'] / 1e6:.0f} Mev/s",
         f"{t_ref / med['ev64']:.1f}x vs reference"),
        ("numpy unpackbits(bitorder='little') + per-bin sum, packed", t_np,
         f"{nbytes / t_np / 1e6:.0f} MB/s", "1.0x"),
        ("voxelize_packed, packed .dat bytes", t_pk, f"{nbytes / t_pk / 1e6:.0f} MB/s",
         f"{t_np / t_pk:.1f}x vs unpackbits; {realtime:.1f}x real time"),
        ("voxelize_binary, unpacked bool frames", med["bin"],
         f"{frames.nbytes / med['bin'] / 1e6:.0f} MB/s", ""),
    ]
    end_load = "%.2f %.2f %.2f" % os.getloadavg()

    cmd = ".venv/bin/python benchmarks/voxelizer.py" + (
        " " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        if (argv if argv is not None else sys.argv[1:]) else "")
    head = (f"{W}x{H} camera (W x H) at {args.rate:g} Hz, {N} spike frames in one window, p = {args.p:g}, "
            f"K = {K}: {n_ev:,} events, {nbytes / 1e6:.1f} MB packed; median of {args.repeats} "
            f"interleaved rounds, JIT warmed, NUMBA_NUM_THREADS="
            f"{os.environ.get('NUMBA_NUM_THREADS')}; every output identical to the reference; "
            f"load average {end_load} at the end.")
    table = ["| path | time (ms) | throughput | ratio |", "|---|---:|---:|---|"]
    for name, tt, thr, ratio in rows:
        table.append(f"| {name} | {tt * 1e3:.1f} | {thr} | {ratio} |")
    body = "\n".join([SECTION, "", f"Command: `{cmd}`", "", f"Machine: {info}.", "", head, "", *table,
                      "", "Targets (issue 2): events >= 50x the reference; packed >= 1000 MB/s on one core "
                      f"(= {1000e6 / (H * W / 8 * args.rate):.1f}x real time for this camera).", ""])
    print(body)
    if not args.no_write:
        write_section(args.results, SECTION, body)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
