"""Audit precision benchmark (issue 27): how often each candidate rule for the per-frame verdict flags a correctly
aligned frame "misaligned", and how often it catches a true misalignment of 2, 3, 4 and 8 ticks.

    .venv/bin/python benchmarks/audit_precision.py                 # 3 seeds, writes RESULTS.md "## Audit precision"
    .venv/bin/python benchmarks/audit_precision.py --seeds 1 --no-write

Stores (each ``spikeprep synth`` -> ``ingest`` (K = 16, crop 32) [-> ``audit --fix``] -> ``audit``, in-process, per
seed); the audit's correlation curves (``audit/curves.parquet``) are then judged by every candidate rule:

- aligned (false flags): ``rig`` preset after ``audit --fix`` (offset, drift and 0.2-tick jitter fixed: every window
  within ~0.6 tick of the truth); the ``rig`` geometry with no clock error (64x80, 32-tick windows, scan +-8,
  tolerance 1 tick); ``tiny`` (16-tick windows, scan +-4, tolerance 1); ``demo`` with 6 frames per sequence (64-tick
  windows, scan +-16, tolerance 2).
- misaligned (detections): the same clean stores with ``--misalign seq_000:+m --misalign seq_001:-m
  --misalign seq_002:+m``, m = 2, 3, 4, 8 ticks (on ``tiny`` a shift of 8 is beyond the +-4 scan).

A rate is over the frames whose verdict is not ``undetermined`` (a frame whose curve has no single peak is never
a pass or a failure; the undetermined share is given apart). Candidates: see ``CANDIDATES``; "before" is the rule
``judge`` had until this benchmark chose the one it has now (the last row).
"""
from __future__ import annotations

import argparse
import math
import pickle
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import cpu_description, load_average, write_section  # noqa: E402
from spikeprep.audit import (ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED, AuditOptions, alignment_tolerance,  # noqa: E402
                             around_maximum, audit, judge, peak_share, top_middle)
from spikeprep.clock_fix import fix_store  # noqa: E402
from spikeprep.ingest import IngestOptions, ingest  # noqa: E402
from spikeprep.synth import SynthConfig, synthesize  # noqa: E402

SECTION = "## Audit precision"
K, CROP = 16, 32
MISALIGNS = (2, 3, 4, 8)


# ---- the candidate rules ----------------------------------------------------------------------------------
def _gate(shifts, corr, options):
    """The checks every candidate shares (judge's): None when the curve has a peak to locate, else the verdict."""
    valid = np.isfinite(corr)
    if valid.sum() < 5 or not np.any(shifts == 0) or not np.isfinite(corr[shifts == 0][0]):
        return UNDETERMINED
    c = corr[valid]
    if float(c.max()) < options.min_corr:
        return MISMATCH
    if float(c.max() - c.min()) < options.flat_range or peak_share(c) < options.min_peak_share:
        return UNDETERMINED
    return None


def middle_rule(top_fraction: float, rounded: bool = True):
    """The middle of the top run (within ``top_fraction`` of the range of the maximum); aligned within the tolerance."""
    def rule(shifts, corr, n_ticks, num_bins, options):
        gate = _gate(shifts, corr, options)
        if gate is not None:
            return gate
        best = top_middle(shifts, corr, top_fraction)
        best = int(round(best)) if rounded else best
        return ALIGNED if abs(best) <= alignment_tolerance(n_ticks, num_bins) else MISALIGNED
    return rule


def parabola_rule(share: float, sigmas: float = 0.0):
    """Least-squares parabola through the points within ``share`` of the range of the maximum; its vertex (clipped to
    those points) is the peak. With ``sigmas`` > 0: misaligned only when the vertex is more than ``sigmas`` standard
    errors (delta method from the fit's covariance) beyond the tolerance."""
    def rule(shifts, corr, n_ticks, num_bins, options):
        gate = _gate(shifts, corr, options)
        if gate is not None:
            return gate
        x, y = around_maximum(shifts, corr, share)
        tol = alignment_tolerance(n_ticks, num_bins)
        coef, cov = np.polyfit(x, y, 2, cov=True) if len(x) > 3 else (np.polyfit(x, y, 2), None)
        a, b = coef[0], coef[1]
        if a >= 0:          # no cap: fall back on the middle of the top run
            v, se = top_middle(shifts, corr, options.top_fraction), 0.0
        else:
            v = float(np.clip(-b / (2 * a), x[0], x[-1]))
            grad = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
            se = float(math.sqrt(max(grad @ cov @ grad, 0.0))) if cov is not None and sigmas else 0.0
        return ALIGNED if abs(v) - sigmas * se <= tol else MISALIGNED
    return rule


def noise_top_rule(k: float):
    """The top run is where the curve is within max(top_fraction of its range, ``k`` noise sigmas) of the maximum,
    sigma from the median absolute second difference (sigma = MAD / 0.6745 / sqrt 6); aligned when the top run's
    middle is within the tolerance or zero shift is inside the top run (indistinguishable from the peak)."""
    def rule(shifts, corr, n_ticks, num_bins, options):
        gate = _gate(shifts, corr, options)
        if gate is not None:
            return gate
        c = corr[np.isfinite(corr)]
        d2 = np.diff(c, 2)
        sigma = float(np.median(np.abs(d2 - np.median(d2)))) / 0.6745 / math.sqrt(6) if len(d2) else 0.0
        span = float(c.max() - c.min())
        frac = max(options.top_fraction, k * sigma / span)
        best = top_middle(shifts, corr, frac)
        zero_in_top = float(corr[shifts == 0][0]) >= float(c.max()) - frac * span
        tol = alignment_tolerance(n_ticks, num_bins)
        return ALIGNED if abs(round(best)) <= tol or (zero_in_top and abs(best) <= 2 * tol) else MISALIGNED
    return rule


def shipped(shifts, corr, n_ticks, num_bins, options):
    return judge(shifts, corr, n_ticks, num_bins, options)[0]


CANDIDATES = {
    "before (top 5%, middle rounded)": middle_rule(0.05),
    "top 5%, middle as float": middle_rule(0.05, rounded=False),
    "top 10%": middle_rule(0.10),
    "top 20%": middle_rule(0.20),
    "top 30%": middle_rule(0.30),
    "parabola, top 50%": parabola_rule(0.5),
    "parabola, top 50%, 2 SE": parabola_rule(0.5, 2.0),
    "noise top, 3 sigma": noise_top_rule(3.0),
    "shipped (spikeprep.audit.judge): top 5%, else parabola top 30% vertex 2 SE + 0.5 tick and zero in top 15%": shipped,
}


# ---- the stores ------------------------------------------------------------------------------------------
def conditions(seed: int):
    """(name, preset, overrides, fix, misalign m or 0) per store of one seed."""
    clean_rig = dict(clock_offset_ticks=0.0, clock_drift_ppm=0.0, jitter_ticks=0.0, unpaired_splits=())
    demo = dict(frames=6)
    out = [("rig after --fix", "rig", {}, True, 0),
           ("rig, no clock error", "rig", clean_rig, False, 0),
           ("tiny", "tiny", {}, False, 0),
           ("demo (6 frames)", "demo", demo, False, 0)]
    for m in MISALIGNS:
        mis = dict(misalign={"seq_000": m, "seq_001": -m, "seq_002": m})
        out += [(f"rig misaligned {m}", "rig", {**clean_rig, **mis}, False, m),
                (f"tiny misaligned {m}", "tiny", mis, False, m),
                (f"demo misaligned {m}", "demo", {**demo, **mis}, False, m)]
    return out


def store_curves(tmp: Path, preset: str, overrides: dict, fix: bool, seed: int) -> list[tuple]:
    """(shifts, corr, n_ticks) of every audited frame of one store."""
    raw, store = tmp / "raw", tmp / "store"
    synthesize(raw, SynthConfig.from_preset(preset, seed=seed, **overrides), progress=False)
    ingest(raw, store, IngestOptions(num_bins=K, crop_size=CROP), log_dir=None, progress=False)
    if fix:
        fix_store(store, progress=False)
    report = audit(store, AuditOptions(crop_size=CROP), progress=False)
    n_ticks = {(r.split, r.seq, r.frame_idx): r.n_ticks for r in report.rows}
    return [(np.asarray(c["shift_ticks"]), np.array([np.nan if v is None else v for v in c["corr"]], float),
             n_ticks[(c["split"], c["seq"], c["frame_idx"])]) for c in report.curves]


def build_curves(seeds: int, started: float) -> dict[str, list[tuple]]:
    """Every condition's curves over ``seeds`` seeds; each store is removed once its curves are read."""
    curves: dict[str, list[tuple]] = {}
    with tempfile.TemporaryDirectory(prefix="audit_precision_") as tmp:
        for seed in range(seeds):
            for k, (name, preset, overrides, fix, _) in enumerate(conditions(seed)):
                where = Path(tmp) / f"{seed}_{k}"
                curves.setdefault(name, []).extend(store_curves(where, preset, overrides, fix, seed))
                shutil.rmtree(where, ignore_errors=True)
                print(f"seed {seed}: {name}: {len(curves[name])} curves ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    return curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per condition")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--curves", type=Path, help="a pickle of the curves: read when it exists (judge again without "
                    "rebuilding the stores), else written")
    args = ap.parse_args()
    started = time.perf_counter()
    options = AuditOptions(crop_size=CROP)
    if args.curves is not None and args.curves.is_file():
        curves = pickle.loads(args.curves.read_bytes())
    else:
        curves = build_curves(args.seeds, started)
        if args.curves is not None:
            args.curves.write_bytes(pickle.dumps(curves))
    names = [c[0] for c in conditions(0)]
    clean = [n for n, *_, m in conditions(0) if m == 0]
    header = "| rule | " + " | ".join(f"false flags: {n}" for n in clean) + " | " + \
        " | ".join(f"detected {m} ticks (rig / tiny / demo)" for m in MISALIGNS) + " |"
    lines = [header, "|" + "---|" * (1 + len(clean) + len(MISALIGNS))]

    def rate(rule, name, want):
        verdicts = [rule(s, c, n, K, options) for s, c, n in curves[name]]
        judged = [v for v in verdicts if v != UNDETERMINED]
        return sum(v == want for v in judged), len(judged)

    for label, rule in CANDIDATES.items():
        cells = []
        for n in clean:
            hit, tot = rate(rule, n, MISALIGNED)
            cells.append(f"{hit}/{tot} ({100 * hit / max(tot, 1):.1f}%)")
        for m in MISALIGNS:
            parts = []
            for geo in ("rig", "tiny", "demo"):
                hit, tot = rate(rule, f"{geo} misaligned {m}", MISALIGNED)
                parts.append(f"{100 * hit / max(tot, 1):.0f}%")
            cells.append(" / ".join(parts))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    und = ", ".join(f"{n}: {sum(shipped(s, c, t, K, options) == UNDETERMINED for s, c, t in curves[n])}"
                    f"/{len(curves[n])}" for n in names)
    table = "\n".join(lines)
    elapsed = time.perf_counter() - started
    print(table)
    print(f"undetermined (shipped rule), not counted above: {und}")
    print(f"{elapsed:.0f} s")
    if args.no_write:
        return
    command = "python benchmarks/audit_precision.py " + shlex.join(sys.argv[1:])
    body = f"""{SECTION}

`{command.strip()}` ({elapsed:.0f} s; {cpu_description()}, {load_average()}, Python {platform.python_version()}).
Seeds 0..{args.seeds - 1} per condition; K = {K}. Stores: `spikeprep synth` (preset and overrides below) -> `ingest`
[-> `audit --fix`] -> `audit`, in-process; every candidate judges the same correlation curves. False flags:
frames called "misaligned" among the judged (not undetermined) frames of correctly aligned stores; detected:
the share of judged frames called "misaligned" when the recorded windows are shifted by m ticks (`--misalign
seq_000:+m --misalign seq_001:-m --misalign seq_002:+m`). Tolerance: half a bin (rig and tiny 1 tick, demo 2).

{table}

Undetermined (shipped rule; not counted above): {und}.

Choice: the shipped rule is the only one without a false flag on the rig stores (after the fix and clean) that keeps
the old rule's detection of 4 and 8 ticks; it gives up some detection of 2-tick shifts (one tick beyond the tolerance,
inside a flat top's own wander). Wider top fractions, an unrounded middle or a noise-widened top each leave flags or
lose 3-tick (demo) and edge-of-scan (tiny, 8 ticks beyond the +-4 scan) detections.
"""
    write_section(ROOT / "benchmarks" / "RESULTS.md", SECTION, body)
    print(f"wrote {SECTION} to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
