"""Voxelizer benchmark: the same spikes through every path, timed on one core.

    .venv/bin/python benchmarks/voxelizer.py                # 400x250 camera at 20 kHz, 2000 frames
    .venv/bin/python benchmarks/voxelizer.py --frames 500 --no-write
    .venv/bin/python benchmarks/voxelizer.py --dat ../shared/data/real/hist_sflow_car_250x400.dat --dat-frames 400

Rows (all on the same random spike frames, firing probability --p, one exposure window covering all
frames, K bins):

* reference  the original document's numpy ``voxelize`` (np.add.at; imported from tests/oracles.py)
             on the events ``[N, 3]`` float64;
* events     ``voxelize_events`` on the same events (t float64, y/x as uint16 and as int64);
* unpackbits numpy ``np.unpackbits(bitorder='little')`` + per-bin sum on the packed ``.dat`` bytes;
* packed     ``voxelize_packed`` on the same packed bytes (MB/s of packed input);
* binary     ``voxelize_binary`` on the unpacked bool frames (for reference);
* readers    ``SpikeSource.window`` on the same frames written as a ``.dat`` (memory map + tick-exact
             binning, what ingest runs) and ``read_dat`` of the whole file.

``--dat FILE`` runs the same on a real recording (its own spike density; repeated end to end to
``--dat-frames``), side by side with the synthetic spikes in one table.

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


def measure(frames: np.ndarray, rate: float, K: int, repeats: int, tmpdir: Path) -> tuple[dict, dict]:
    """Time every path (and the two readers) on ``frames`` [N, H, W] bool, one window over all of them.

    Returns (median seconds per path, sizes: events, packed bytes); every output is checked against the
    reference first.
    """
    from schemas.spike_meta import SpikeMeta
    from spikeprep.formats import read_dat, write_dat
    from spikeprep.spike_source import SpikeSource

    N, H, W = frames.shape
    start = 1.0
    t_frames = start + np.arange(N, dtype=np.float64) / rate
    t0, t1 = start, start + N / rate          # the window covers every frame
    j, y, x = np.nonzero(frames)
    t_ev = t_frames[j]
    events = np.stack([t_ev, y.astype(np.float64), x.astype(np.float64)], axis=1)
    y16, x16 = y.astype(np.uint16), x.astype(np.uint16)
    y64, x64 = y.astype(np.int64), x.astype(np.int64)
    del j, y, x
    packed = np.packbits(frames[:, ::-1, :].reshape(N, H * W), axis=1, bitorder="little")
    dat = write_dat(tmpdir / "stream.dat", frames)
    source = SpikeSource(tmpdir, meta=SpikeMeta(format="dat", layout="stream", height=H, width=W, rate_hz=rate,
                                                start_s=start, stream_file=dat.name))

    # warm up: compile or load every specialisation used below
    small = slice(0, min(N, 8))
    voxelize_events(t_ev[:100], y16[:100], x16[:100], t0, t1, H, W, K)
    voxelize_events(t_ev[:100], y64[:100], x64[:100], t0, t1, H, W, K)
    voxelize_packed(packed[small], t_frames[small], t0, t1, H, W, K)
    voxelize_binary(frames[small], t_frames[small], t0, t1, K)
    source.window(t0, t0 + 8 / rate, K)

    # every path runs once per round, rounds interleaved, so background load hits all paths alike
    paths = {
        "ref": lambda: voxelize(events, t0, t1, H, W, K),
        "ev16": lambda: voxelize_events(t_ev, y16, x16, t0, t1, H, W, K),
        "ev64": lambda: voxelize_events(t_ev, y64, x64, t0, t1, H, W, K),
        "np": lambda: numpy_unpack_voxelize(packed, t_frames, t0, t1, H, W, K),
        "pk": lambda: voxelize_packed(packed, t_frames, t0, t1, H, W, K),
        "bin": lambda: voxelize_binary(frames, t_frames, t0, t1, K),
        "src": lambda: source.window(t0, t1, K).counts,
        "read": lambda: read_dat(dat, H, W),
    }
    times = {k: [] for k in paths}
    outs = {}
    for _ in range(repeats):
        for key, fn in paths.items():
            s = time.perf_counter()
            outs[key] = fn()
            times[key].append(time.perf_counter() - s)
    med = {k: float(np.median(v)) for k, v in times.items()}
    ref = outs.pop("ref").astype(np.uint32)
    assert np.array_equal(outs.pop("read"), frames), "read_dat differs from the frames written"
    for key, out in outs.items():
        # SpikeSource bins on ticks; on this window (edges on frame times) the float formula can differ
        # bin by bin, so it is checked on its totals
        if key == "src":
            assert np.array_equal(out.sum(axis=0), ref.sum(axis=0)), "SpikeSource totals differ"
        else:
            assert np.array_equal(out, ref), f"{key} differs from the reference"
    return med, {"events": int(t_ev.size), "packed": int(packed.nbytes), "frames": int(frames.nbytes),
                 "density": float(t_ev.size) / frames.size}


ROWS = [  # key, label, throughput basis, ratio against
    ("ref", "reference numpy voxelize (np.add.at), events [N,3] float64", "events", None),
    ("ev16", "voxelize_events, t float64, y/x uint16", "events", "ref"),
    ("ev64", "voxelize_events, t float64, y/x int64", "events", "ref"),
    ("np", "numpy unpackbits(bitorder='little') + per-bin sum, packed", "packed", None),
    ("pk", "voxelize_packed, packed .dat bytes", "packed", "np"),
    ("bin", "voxelize_binary, unpacked bool frames", "frames", None),
    ("src", "SpikeSource.window on the .dat (memory map + tick-exact voxelize_packed_ticks)", "packed", "np"),
    ("read", "read_dat, whole file (read + unpackbits + flip)", "packed", None),
]


def _cell(key: str, basis: str, ratio_of: str | None, med: dict, size: dict, realtime_bytes: float) -> str:
    t = med[key]
    thr = f"{size[basis] / t / 1e6:.0f} {'Mev/s' if basis == 'events' else 'MB/s'}"
    ratio = f", {med[ratio_of] / t:.1f}x" if ratio_of else ""
    if key in ("pk", "src"):
        ratio += f", {(size['packed'] / t) / realtime_bytes:.1f}x real time"
    return f"{t * 1e3:.1f} ms ({thr}{ratio})"


def main(argv=None) -> int:
    """Time every path on the same spikes (each checked against the reference); print, and record unless
    --no-write. With --dat, the same on a real recording, side by side."""
    import tempfile

    from spikeprep.formats import dat_num_frames, read_dat

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: .venv/bin/python benchmarks/voxelizer.py --dat "
                                        "../shared/data/real/hist_sflow_car_250x400.dat --dat-frames 400")
    ap.add_argument("--height", type=int, default=250, help="sensor rows (default 250; also --dat's)")
    ap.add_argument("--width", type=int, default=400, help="sensor columns (default 400; also --dat's)")
    ap.add_argument("--rate", type=float, default=20000.0, help="spike frame rate in Hz (default 20000)")
    ap.add_argument("--frames", type=int, default=2000, help="spike frames in the window (default 2000)")
    ap.add_argument("--p", type=float, default=0.1, help="firing probability per pixel and frame")
    ap.add_argument("--bins", type=int, default=32, help="K (default 32)")
    ap.add_argument("--repeats", type=int, default=7,
                    help="interleaved rounds; each path runs once per round (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dat", type=Path, help="also time a real .dat recording (--height x --width, read upright)")
    ap.add_argument("--dat-frames", type=int,
                    help="frames of the --dat window: the recording repeated end to end as needed [its length]")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md",
                    help="markdown file whose '## Voxelizer' section is (re)written")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    H, W, N, K = args.height, args.width, args.frames, args.bins
    if (H * W) % 8:
        ap.error("height*width must be a multiple of 8 (.dat frames are whole bytes)")
    info = machine()
    realtime_bytes = H * W / 8 * args.rate
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(args.seed)
        frames = rng.random((N, H, W), dtype=np.float32) < args.p
        (Path(tmp) / "synth").mkdir()
        med, size = measure(frames, args.rate, K, args.repeats, Path(tmp) / "synth")
        runs.append((f"synthetic, p = {args.p:g}, {N} frames", med, size))
        del frames
        if args.dat is not None:
            n_file = dat_num_frames(args.dat, H, W)
            want = args.dat_frames or n_file
            real = read_dat(args.dat, H, W)
            real = np.concatenate([real] * -(-want // n_file), axis=0)[:want]
            (Path(tmp) / "real").mkdir()
            med, size = measure(real, args.rate, K, args.repeats, Path(tmp) / "real")
            how = (f"its first {want} of {n_file} frames" if want <= n_file
                   else f"its {n_file} frames repeated to {want}")
            runs.append((f"real: {args.dat.name} ({how}), density {size['density']:.3f}", med, size))
            del real
    end_load = "%.2f %.2f %.2f" % os.getloadavg()

    rest = argv if argv is not None else sys.argv[1:]
    cmd = ".venv/bin/python benchmarks/voxelizer.py" + "".join(" " + shlex.quote(a) for a in rest)
    head = (f"{W}x{H} camera (W x H) at {args.rate:g} Hz, one window over all frames, K = {K}; median of "
            f"{args.repeats} interleaved rounds, JIT warmed, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}; "
            "every output identical to the reference (SpikeSource, which bins on ticks: identical totals); "
            f"load average {end_load} at the end. Ratios: events paths vs the reference, packed paths vs numpy "
            "unpackbits; real time = packed bytes per second the camera produces.")
    sizes = "; ".join(f"{name}: {s['events']:,} events, {s['packed'] / 1e6:.1f} MB packed" for name, _, s in runs)
    table = ["| path | " + " | ".join(name for name, _, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
    for key, label, basis, ratio_of in ROWS:
        table.append(f"| {label} | " + " | ".join(_cell(key, basis, ratio_of, med, size, realtime_bytes)
                                               for _, med, size in runs) + " |")
    body = "\n".join([SECTION, "", f"Command: `{cmd}`", "", f"Machine: {info}.", "", head, "", sizes + ".", "",
                      *table, "", "Targets (issue 2): events >= 50x the reference; packed >= 1000 MB/s on one core "
                      f"(= {1000e6 / realtime_bytes:.1f}x real time for this camera).", ""])
    print(body)
    if not args.no_write:
        write_section(args.results, SECTION, body)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
