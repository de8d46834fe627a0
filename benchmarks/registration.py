"""Registration benchmark (issue 30): what a misregistered RGB camera costs the least-squares baseline and the
audit, and what ``audit --fix`` gives back, with and without a clock error.

    .venv/bin/python benchmarks/registration.py                 # demo preset 96x128, seed 53 (the issue's store)
    .venv/bin/python benchmarks/registration.py --seed 7 --no-write

Stores (``spikeprep synth --preset demo``, 96x128, 2 + 1 sequences x 12 frames, 64-tick exposures, K = 32):
``unwarped``; ``warped``: every sequence's RGB camera sees the spike camera's view through the issue's affine
(0.7 degrees, 1.5 % scale, a (2.6, -1.8) px shift about the frame's centre; ``synth``'s ``rgb_homography``: blur
and sharp frames alike, as a beam splitter does); ``warped + clock``: the same, its exposure tables also on
another clock (offset within one frame period, +-1000 ppm, drawn per sequence). Each is ingested and audited
(``--crop 64``); the warped ones again after ``audit --fix``. Per store: the audit's aligned / misaligned frames
(of 36), the registration it measures (largest corner residual over the sequences, RGB px), the clock fix's
largest |offset| (ticks), and the least-squares baseline's PSNR-Y on the val split (``spikeprep baselines``:
fitted on train). A registered store keeps the part of the spike grid both cameras see, and its ground truth is
the resampled sharp frame (smoother than a rendered one), so a fixed store compares with the store given the true
homography (``rgb_homography`` in meta.json), not with the unwarped one. Writes the table, the command and the machine
to benchmarks/RESULTS.md under "## Registration".

Then the estimate alone against motion blur (``--warps`` random warps per condition): a photograph (scikit-image's
astronaut, 128x160) seen by the spikes (Poisson counts of 32 ticks) and by the blur frame through a random
small warp (up to 3 px, 1 degree, 2 %; a perspective part for the homography model), both blurred alike by a
straight motion of the given length in a random direction; per condition the median and worst error of the
estimated warp at the frame corners (px) and the share of frames with an estimate.
"""
from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import cpu_description, load_average, write_section  # noqa: E402
from model.baseline_scores import score_baselines  # noqa: E402
from spikeprep.audit import ALIGNED, MISALIGNED, AuditOptions, audit  # noqa: E402
from spikeprep.clock_fix import fix_store  # noqa: E402
from spikeprep.ingest import IngestOptions, ingest  # noqa: E402
from spikeprep.registration import RegistrationOptions, corner_error, estimate_frame  # noqa: E402
from spikeprep.synth import SynthConfig, load_photo, sequence_names, synthesize  # noqa: E402

SECTION = "## Registration"
ANGLE_DEG, ZOOM, SHIFT = 0.7, 1.015, (2.6, -1.8)


def issue_affine(h: int, w: int) -> tuple[float, ...]:
    """The issue's beam-splitter affine about the frame's centre (spike and RGB grids equal: 96x128)."""
    a = math.radians(ANGLE_DEG)
    lin = ZOOM * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = c - lin @ c + np.array(SHIFT)
    return tuple(float(v) for v in m.ravel())


def measure(name: str, store: Path, options: AuditOptions, fix: bool) -> dict:
    fixed = fix_store(store, progress=False) if fix else None
    report = audit(store, options, progress=False)
    totals = report.totals()
    residuals = [e.residual_px for e in report.registration.values() if e.trusted]
    lsq = score_baselines(store, "val").row("lsq").overall
    return dict(name=name, aligned=totals[ALIGNED], misaligned=totals[MISALIGNED], frames=totals["frames"],
                reg=max(residuals) if residuals else None,
                clock=None if fixed is None else max(abs(r.offset_ticks or 0.0) for r in fixed.records),
                reg_fixed=None if fixed is None else sum(r.verdict == "fixed" for r in fixed.registrations),
                psnr_y=lsq.psnr_y, scored=lsq.frames)


def run(seed: int, tmp: Path) -> list[dict]:
    base = dict(height=96, width=128, seed=seed)
    cfg = SynthConfig.from_preset("demo", **base)
    warp = {name: issue_affine(96, 128) for _, name in sequence_names(cfg)}
    trees = {"unwarped": base, "warped, true homography in meta.json": dict(base, rgb_homography=warp,
                                                                              rgb_homography_in_meta=True),
             "warped": dict(base, rgb_homography=warp),
             "warped + clock": dict(base, rgb_homography=warp, clock_offset_ticks=80.0, clock_drift_ppm=1000.0)}
    options = AuditOptions(crop_size=64)
    rows = []
    for name, overrides in trees.items():
        raw = synthesize(tmp / name.replace(" ", "") / "raw", SynthConfig.from_preset("demo", **overrides),
                         progress=False)
        store = tmp / name.replace(" ", "") / "store"
        ingest(raw, store, IngestOptions(crop_size=64), log_dir=None, progress=False)
        rows.append(measure(name, store, options, fix=False))
        if name in ("warped", "warped + clock"):
            rows.append(measure(name + ", audit --fix", store, options, fix=True))
    return rows


def table(rows: list[dict]) -> str:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| store | aligned / misaligned (of frames) | registration residual (px) | clock fix max offset (ticks) "
             "| registrations fixed | lsq PSNR-Y (dB) | val frames scored |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['aligned']} / {r['misaligned']} (of {r['frames']}) | {num(r['reg'], '.2f')} "
                     f"| {num(r['clock'], '.2f')} | {num(r['reg_fixed'], 'd')} | {num(r['psnr_y'], '.2f')} | {r['scored']} |")
    return "\n".join(lines)


def blurred(scene: np.ndarray, length: float, angle: float) -> np.ndarray:
    import cv2

    steps = max(1, int(math.ceil(length * 2)))
    out = np.zeros_like(scene)
    for t in np.linspace(-0.5, 0.5, steps):
        m = np.float32([[1, 0, t * length * math.cos(angle)], [0, 1, t * length * math.sin(angle)]])
        out += cv2.warpAffine(scene, m, scene.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out / steps


def blur_robustness(warps: int, seed: int) -> str:
    import cv2

    gray = cv2.cvtColor(load_photo("astronaut"), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    scene = cv2.resize(gray, (160, 128), interpolation=cv2.INTER_AREA)
    hw = scene.shape
    c = np.array([(hw[1] - 1) / 2, (hw[0] - 1) / 2])
    rng = np.random.default_rng(seed)
    lines = ["| model | motion blur (px) | median corner error (px) | worst (px) | frames with an estimate |",
             "|---|---:|---:|---:|---:|"]
    for model in ("affine", "homography"):
        for length in (0.0, 4.0, 8.0, 16.0):
            errors, found = [], 0
            for _ in range(warps):
                a = math.radians(rng.uniform(-1, 1))
                m = np.eye(3)
                m[:2, :2] = (1 + rng.uniform(-0.02, 0.02)) * np.array([[math.cos(a), -math.sin(a)],
                                                                        [math.sin(a), math.cos(a)]])
                m[:2, 2] = c - m[:2, :2] @ c + rng.uniform(-3, 3, 2)
                if model == "homography":
                    m[2, :2] = rng.uniform(-4e-5, 4e-5, 2)
                exposed = blurred(scene, length, rng.uniform(0, math.pi)) if length else scene
                spikes = rng.poisson(exposed * 32).astype(np.float32)
                luma = cv2.warpPerspective(exposed, np.linalg.inv(m), hw[::-1], flags=cv2.INTER_LINEAR
                                           | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
                est = estimate_frame(spikes, np.round(luma * 255) / 255, RegistrationOptions(model=model))
                if est.matrix is not None:
                    found += 1
                    errors.append(corner_error(np.linalg.inv(m) @ est.matrix, hw))
            med = f"{np.median(errors):.3f}" if errors else "-"
            worst = f"{np.max(errors):.3f}" if errors else "-"
            lines.append(f"| {model} | {length:g} | {med} | {worst} | {found}/{warps} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=53)
    parser.add_argument("--warps", type=int, default=50, help="random warps per estimate condition")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.seed, Path(tmp))
    text = table(rows)
    print(text)
    robust = blur_robustness(args.warps, args.seed)
    print(robust)
    seconds = time.perf_counter() - started
    if not args.no_write:
        command = "benchmarks/registration.py " + shlex.join(sys.argv[1:])
        body = (f"{SECTION}\n\n`{command.strip()}` ({seconds:.0f} s; {cpu_description()}, {load_average()}, "
                f"Python {platform.python_version()}).\n\n"
                f"`spikeprep synth --preset demo` at 96x128, seed {args.seed}; warped: the RGB camera sees the spike "
                f"camera's view through a {ANGLE_DEG} degree, {ZOOM - 1:.1%} scale, {SHIFT} px affine (blur and sharp "
                "frames); + clock: exposure tables on another clock (offset within a frame period, +-1000 ppm). "
                "Audit `--crop 64`; lsq: the least-squares baseline on val, fitted on train. A registered store's ground "
                "truth is the resampled sharp frame: compare a fixed store with the one given the true homography, "
                "not with the unwarped one. The plain audit of the warped store times its misregistered sequences on their "
                "luma registered in memory; the audit before issue 30 (main at 9ab178c, same store, meta.json "
                "version 2) called 33 of its 36 frames misaligned.\n\n" + text + "\n\n"
                f"The estimate against motion blur ({args.warps} random warps per row: up to 3 px, 1 degree, 2 %, "
                "a perspective part for the homography; spikes and blur frame blurred alike; 128x160):\n\n"
                + robust + "\n")
        write_section(ROOT / "benchmarks" / "RESULTS.md", SECTION, body)


if __name__ == "__main__":
    main()
