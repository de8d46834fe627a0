"""``spikeprep audit DATA_ROOT``: are the spikes and the blur frames of the same exposure? (DESIGN section 6)

Besides the structural checks (window sanity, pairs present, sizes, short side >= crop, which ingest
records and the audit re-checks on the store; an unpaired frame needs only its blur frame and spikes), the content check compares what the two sensors saw:
the spike intensity over the recorded window (count / n_ticks per pixel, replicated onto the RGB grid)
must correlate with the blur frame's luma. The window is then slid by ``d`` ticks,
``d = -D .. D``, and the correlation recomputed from the raw spikes: with motion in the scene the curve
peaks where the spikes cover the same interval as the exposure. A peak more than half a voxel bin away
from ``d = 0`` is a detected misalignment, reported with its offset (``d``: shift the recorded window by
``d`` ticks to realign), unless the curve's noise may explain it (``significant_peak``: on a flat top, noise
of ~1e-3 moves the maximum by a tick or two; benchmarks/audit_precision.py measured the rule). A curve too flat to locate a peak (static scene, flat content) is
``undetermined``: reported, never counted as a pass or a failure. A peak correlation below
``min_corr`` means the spikes do not show this frame at all (``mismatch``).

Registration (``measure_registration``): per sequence, the residual misregistration of the stored RGB frames
against the spikes (``spikeprep.registration``), in the manifest's ``audit_registration_px`` and the overlays'
labels; a sequence misregistered by more than ``timing_px`` is timed on its blur luma registered in memory, so
a spatial error is never read as an exposure misalignment (``audit --fix`` removes it from RAW).

Failing frames (``misaligned``, ``mismatch``, or a structural problem) become ``status = dropped`` with
the reason (prose) and its code (``reason_code``) in the manifest, so training never sees them; stats are
recomputed over the kept training frames. The audit's codes start with ``audit_`` (``AUDIT_CODES``), so a
rerun starts again from the ingest verdicts.
"""
from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from schemas.atomic import atomic_write_bytes
from schemas.config import DEFAULT_CROP_SIZE, MIN_CROP_SIZE, crop_size_rule, largest_valid_crop
from schemas.manifest import CROP_CODES, STATUS_DROPPED, STATUS_OK, AuditVerdict, Drop, DropCode, ManifestRow
from schemas.sequence_record import SEQUENCE_RECORD_FILENAME, read_sequence_record
from schemas.store import DATASET_FILENAME, VOX_ARRAY, VOX_DIRNAME, StoreInfo
from spikeprep.errors import InputError, SampleError
from spikeprep.images import LUMA_601, read_rgb
from spikeprep.registration import (FrameEstimate, RegistrationOptions, SequenceEstimate, estimate_frame,
                                    estimate_sequence, upsampled_intensity, warp_luma)
from spikeprep.spike_source import SpikeSource, stored_source
from spikeprep.stats import FrameKey, check_std, stats_from_records
from spikeprep.store import (read_frame, read_manifest_rows, read_store_info, store_lock,
                             write_manifest, write_store_info)

log = logging.getLogger("spikeprep.audit")
AUDIT_DIRNAME = "audit"
FAILING_CURVES_PNG = "failing_curves.png"
ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED = get_args(AuditVerdict)   # the manifest's audit_verdict values


@dataclass(frozen=True)
class AuditOptions:
    """Thresholds of the content check.

    max_shift_ticks: scan range D (None: a quarter of the window length, at least 4 ticks);
    flat_range: a curve whose max - min is below this is undetermined (nothing to locate);
    min_peak_share: a curve is single-peaked enough to locate its peak when at least this share of its
    total variation is the rise to its maximum and the fall after it (``peak_share``); jitter, a zigzag or
    a static scene's quantisation noise spend their variation going up and down and are undetermined;
    top_fraction: the curve's top is where it is within this fraction of its range of the maximum;
    vertex_fraction, vertex_sigmas: a top beyond the tolerance is checked with a parabola through the points
    within ``vertex_fraction`` of the range of the maximum; its vertex must lie beyond the tolerance (plus
    half a tick) by more than ``vertex_sigmas`` standard errors, or zero shift must lie below the top
    ``zero_fraction`` of the range (``significant_peak``);
    min_corr: a peak correlation below this is a content mismatch;
    crop_size: training frames need a short side of at least this;
    registration: how the sequence's registration is measured (``spikeprep.registration``).
    """

    max_shift_ticks: int | None = None
    flat_range: float = 1e-3
    min_peak_share: float = 0.9
    top_fraction: float = 0.05
    vertex_fraction: float = 0.3
    vertex_sigmas: float = 2.0
    zero_fraction: float = 0.15
    min_corr: float = 0.3
    crop_size: int = DEFAULT_CROP_SIZE
    registration: RegistrationOptions = field(default_factory=RegistrationOptions)


# ---- the content check -------------------------------------------------------------------------------
def blur_luma(path: Path) -> np.ndarray:
    """Rec.601 luma of an RGB PNG, float64 [H, W] in [0, 1]."""
    r, g, b = read_rgb(path).astype(np.float64) / 255.0
    return LUMA_601[0] * r + LUMA_601[1] * g + LUMA_601[2] * b


def spike_intensity(counts: np.ndarray, n_ticks: int, scale: tuple[int, int]) -> np.ndarray:
    """Spikes per tick [Hs, Ws] -> replicated onto the RGB grid [Hs*sy, Ws*sx] (float64)."""
    inten = counts.astype(np.float64) / max(n_ticks, 1)
    return np.repeat(np.repeat(inten, scale[0], axis=0), scale[1], axis=1)


class LumaCorrelator:
    """Pearson correlation of spike-grid intensities, replicated onto the RGB grid, with one luma image.

    Exactly the Pearson correlation of ``spike_intensity(counts, n, scale)`` with ``luma``, without building
    the replicated image: replicating a spike pixel s_y x s_x times multiplies its terms, so the sums reduce
    to the spike grid with the luma summed per block. The luma terms are computed once per frame, not once per shift.
    """

    def __init__(self, luma: np.ndarray, scale: tuple[int, int]):
        sy, sx = scale
        h, w = luma.shape
        centred = luma - luma.mean()
        self.block_sums = centred.reshape(h // sy, sy, w // sx, sx).sum(axis=(1, 3))
        self.luma_norm2 = float((centred * centred).sum())
        self.area = sy * sx

    def __call__(self, intensity: np.ndarray) -> float:
        centred = intensity - intensity.mean()
        den = math.sqrt(self.area * float((centred * centred).sum()) * self.luma_norm2)
        return float((centred * self.block_sums).sum()) / den if den > 0 else math.nan


def shift_curve(source: SpikeSource, t0: float, t1: float, frame_idx: int, luma: np.ndarray,
                scale: tuple[int, int], max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of blur luma with spike intensity over ``[t0 + d/r, t1 + d/r)``, d = -D..D ticks."""
    rate = source.meta.rate_hz
    correlate = LumaCorrelator(luma, scale)
    shifts = np.arange(-max_shift, max_shift + 1)
    corr = np.full(shifts.shape, np.nan)
    for i, d in enumerate(shifts.tolist()):
        wc = source.window(t0 + d / rate, t1 + d / rate, 1, frame_idx=frame_idx)
        if wc.covered is False or wc.n_ticks == 0:
            continue  # the shifted window leaves the spike data: no point on the curve
        corr[i] = correlate(wc.counts[0] / wc.n_ticks)
    return shifts, corr


def peak_share(curve: np.ndarray) -> float:
    """Share of a curve's total variation that is its rise to the maximum and its fall after it.

    1 for a curve that only rises to one peak and then only falls (sharp or smooth, at any shift, or a
    monotone curve whose peak is at the scan's edge); jitter, a zigzag or a static scene's quantisation
    noise go up and down and score lower (static synthetic scenes: 0.08-0.88; white noise of 9 points
    reaches 0.9 in 0.4% of draws, a random walk of 9 points in 9%, of 17 points in 0.6%). It weighs the
    steps, not the curvature, so a smooth peak's steady curvature, which a second-difference jitter
    estimate mistook for noise (issue 18), costs nothing.
    """
    variation = float(np.abs(np.diff(curve)).sum())
    if variation == 0:
        return 0.0
    top = float(curve.max())
    return (2 * top - float(curve[0]) - float(curve[-1])) / variation


def judge(shifts: np.ndarray, corr: np.ndarray, n_ticks: int, num_bins: int,
          options: AuditOptions) -> tuple[str, int | None, float]:
    """(verdict, best shift in ticks or None, correlation at zero shift) from a correlation curve.

    The best shift is the middle of the curve's top (within ``top_fraction`` of its range of the
    maximum), which is robust to the broad flat peaks of slow motion. The curve is too flat to tell
    when its range is below ``flat_range`` or its ``peak_share`` is below ``min_peak_share`` (no
    single peak stands out of the jitter). A top beyond the tolerance is a misalignment only when the
    curve's noise cannot explain it (``significant_peak``): on a flat top, noise of ~1e-3 moves the
    maximum by a tick or two (benchmarks/audit_precision.py).
    """
    zero = float(corr[shifts == 0][0]) if np.any(shifts == 0) else math.nan
    valid = np.isfinite(corr)
    if valid.sum() < 5 or not np.isfinite(zero):
        return UNDETERMINED, None, zero
    c = corr[valid]
    peak, span = float(c.max()), float(c.max() - c.min())
    if peak < options.min_corr:
        return MISMATCH, int(shifts[valid][np.argmax(c)]), zero
    if span < options.flat_range or peak_share(c) < options.min_peak_share:
        return UNDETERMINED, None, zero
    tolerance = alignment_tolerance(n_ticks, num_bins)
    best = int(round(top_middle(shifts, corr, options.top_fraction)))
    if abs(best) <= tolerance:
        return ALIGNED, best, zero
    vertex = significant_peak(shifts, corr, tolerance, options)
    if vertex is None:
        return MISALIGNED, best, zero
    return ALIGNED, int(round(vertex)), zero


def significant_peak(shifts: np.ndarray, corr: np.ndarray, tolerance: int, options: AuditOptions) -> float | None:
    """None when the curve's peak lies beyond ``tolerance`` ticks of zero shift beyond doubt, else the peak's
    location from a least-squares parabola through the points around the maximum (within ``vertex_fraction``
    of the range of it, at least 5): the vertex, within the tolerance once its standard error
    (``vertex_sigmas`` of them, the fit's covariance by the delta method) and half a tick (the audit reports
    whole ticks) are allowed for. Beyond doubt: a maximum at the scan's edge or a fit without a cap inside
    its points (the curve still rises there), or a correlation at zero shift below the top ``zero_fraction``
    of the curve's range (a clear drop, however poorly a parabola fits the curve's shape)."""
    valid = np.flatnonzero(np.isfinite(corr))
    top = int(np.nanargmax(corr))
    peak, low = float(corr[top]), float(np.nanmin(corr))
    if top in (valid[0], valid[-1]) or float(corr[shifts == 0][0]) < peak - options.zero_fraction * (peak - low):
        return None
    x, y = around_maximum(shifts, corr, options.vertex_fraction)
    if len(x) < 5:
        return None
    (a, b, _), cov = np.polyfit(x, y, 2, cov=True)
    if not a < 0 or not x[0] <= -b / (2 * a) <= x[-1]:
        return None
    vertex = -b / (2 * a)
    gradient = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
    error = math.sqrt(max(float(gradient @ cov @ gradient), 0.0))
    return float(vertex) if abs(vertex) - options.vertex_sigmas * error <= tolerance + 0.5 else None


def _top_run(corr: np.ndarray, fraction: float) -> tuple[int, int]:
    """Indices ``[i, j]`` of the contiguous finite points around the curve's maximum that stay within ``fraction``
    of its range of the maximum (NaN points end the run)."""
    valid = np.isfinite(corr)
    peak, low = float(np.nanmax(corr)), float(np.nanmin(corr))
    keep = valid & (np.nan_to_num(corr, nan=-np.inf) >= peak - fraction * (peak - low))
    i = j = int(np.nanargmax(corr))
    while i > 0 and keep[i - 1]:
        i -= 1
    while j < len(corr) - 1 and keep[j + 1]:
        j += 1
    return i, j


def around_maximum(shifts: np.ndarray, corr: np.ndarray, fraction: float, min_points: int = 5):
    """(shifts, corr) of the contiguous finite points around the maximum within ``fraction`` of the curve's
    range of it, widened (both sides where the curve allows) to at least ``min_points``."""
    valid = np.isfinite(corr)
    i, j = _top_run(corr, fraction)
    while j - i + 1 < min_points:
        grow_left, grow_right = i > 0 and valid[i - 1], j < len(corr) - 1 and valid[j + 1]
        if not (grow_left or grow_right):
            break
        i -= int(grow_left)
        if j - i + 1 < min_points and grow_right:
            j += 1
    return shifts[i:j + 1].astype(np.float64), corr[i:j + 1]


def top_middle(shifts: np.ndarray, corr: np.ndarray, top_fraction: float) -> float:
    """The middle (in ticks, a multiple of half a tick) of the run of shifts around the curve's maximum where
    it stays within ``top_fraction`` of its range of the maximum: robust to the broad flat peaks of slow
    motion. NaN points end the run."""
    i, j = _top_run(corr, top_fraction)
    return (float(shifts[i]) + float(shifts[j])) / 2


def alignment_tolerance(n_ticks: int, num_bins: int) -> int:
    """Half a voxel bin, in ticks (at least 1): a peak within this of zero shift is aligned; smaller
    shifts move spikes by less than a bin and are harmless."""
    return max(1, n_ticks // (2 * num_bins))


# ---- one sequence ------------------------------------------------------------------------------------
def _structural_problem(root: Path, row: ManifestRow, options: AuditOptions) -> Drop | None:
    # an unpaired frame (no sharp frame: a rig recording) needs only its blur frame and its spikes
    for kind in ("blur", "sharp") if row.paired else ("blur",):
        path = getattr(row, kind)
        if not (root / path).is_file():
            return Drop(DropCode.AUDIT_MISSING_FRAME, f"{kind} frame missing from the store: {path}")
    if row.split == "train" and row.paired and min(row.H, row.W) < options.crop_size:
        return Drop(DropCode.AUDIT_SHORT_SIDE_BELOW_CROP,
                    f"short side {min(row.H, row.W)} < crop size {options.crop_size}")
    if not row.t1 > row.t0:
        return Drop(DropCode.AUDIT_WINDOW_REVERSED, f"empty or reversed window [{row.t0!r}, {row.t1!r})")
    return None


NOT_JUDGED = dict(audit_corr=None, audit_best_offset_ticks=None, audit_best_offset_s=None, audit_verdict=None,
                  audit_registration_px=None)


def evenly(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced (first and last included)."""
    if len(items) <= n:
        return list(items)
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, n)]


def measure_registration(root: Path, key: str, info: StoreInfo, rows: list[ManifestRow],
                         options: RegistrationOptions) -> SequenceEstimate:
    """The sequence's residual misregistration as stored: per frame (at most ``options.max_frames``, evenly
    spaced, among the stored frames), the stored counts summed over the window against the blur PNG's luma
    (``spikeprep.registration.estimate_frame``), then one robust transform (``estimate_sequence``)."""
    seq = info.sequences[key]
    hw = (seq.H, seq.W)
    stored = [r for r in rows if r.vox_index is not None and (r.status == STATUS_OK or r.dropped_by_audit)]
    estimates: list[FrameEstimate] = []
    for r in evenly(stored, options.max_frames):
        try:
            luma = blur_luma(root / r.blur)
            counts = read_frame(root / r.split / r.seq / VOX_DIRNAME / VOX_ARRAY, r.vox_index)
        except (InputError, SampleError, OSError):
            continue
        if luma.shape != hw:
            continue
        half = counts.shape[0] // 2
        halves = ((upsampled_intensity(counts[:half], hw), upsampled_intensity(counts[half:], hw))
                  if half else None)
        estimates.append(estimate_frame(upsampled_intensity(counts, hw), luma, options, r.frame_idx, halves))
    return estimate_sequence(estimates, hw, options)


def audit_sequence(root: Path, key: str, info: StoreInfo, rows: list[ManifestRow],
                   options: AuditOptions) -> tuple[list[ManifestRow], list[dict], SequenceEstimate]:
    """Audit one sequence's rows (judged copies returned), its curves and its measured registration. A
    sequence measured misregistered (a trusted estimate above ``timing_px``) is timed on its blur luma
    registered in memory, so a spatial error never reads as an exposure misalignment."""
    seq = info.sequences[key]
    source = stored_source(seq)
    registration = measure_registration(root, key, info, rows, options.registration)
    register = (registration.matrix if registration.trusted
                and registration.residual_px > options.registration.timing_px else None)
    reg_px = registration.residual_px if registration.trusted else None
    out, curves = [], []
    for row in rows:
        if row.dropped_by_audit:  # a previous audit's verdict: judge again
            row = row.model_copy(update=dict(status=STATUS_OK, reason=None, reason_code=None))
        row = row.model_copy(update=NOT_JUDGED)
        if row.vox_index is None or row.status == STATUS_DROPPED:
            out.append(row)  # ingest already dropped it (and said why): nothing to compare
            continue
        problem = _structural_problem(root, row, options)
        if problem is None:
            max_shift = options.max_shift_ticks or max(4, row.n_ticks // 4)
            try:
                luma = blur_luma(root / row.blur)
            except InputError as err:
                problem = Drop(DropCode.AUDIT_UNREADABLE_IMAGE, str(err))
        if problem is None and luma.shape != (seq.Hs * seq.scale[0], seq.Ws * seq.scale[1]):
            problem = Drop(DropCode.AUDIT_GRID_MISMATCH, f"blur is {luma.shape[0]}x{luma.shape[1]}, spike grid x "
                           f"scale is {seq.Hs * seq.scale[0]}x{seq.Ws * seq.scale[1]}")
        if problem is not None:
            out.append(row.dropped(problem))
            continue
        row = row.model_copy(update=dict(audit_registration_px=reg_px))
        if register is not None:
            luma = warp_luma(luma, register)
        shifts, corr = shift_curve(source, row.t0, row.t1, row.frame_idx, luma, seq.scale, max_shift)
        verdict, best, zero = judge(shifts, corr, row.n_ticks, info.K, options)
        row = row.model_copy(update=dict(audit_corr=None if math.isnan(zero) else zero, audit_verdict=verdict,
                                         audit_best_offset_ticks=best,
                                         audit_best_offset_s=None if best is None else best / seq.rate_hz))
        if verdict == MISALIGNED:
            row = row.dropped(Drop(DropCode.AUDIT_MISALIGNED, f"exposure misaligned: spikes match the blur best "
                                   f"{best:+d} ticks ({best / seq.rate_hz:+.3e} s) away from the recorded window"))
        elif verdict == MISMATCH:
            row = row.dropped(Drop(DropCode.AUDIT_MISMATCH, f"spikes do not match the blur frame (peak correlation "
                                   f"{np.nanmax(corr):.2f} < {options.min_corr})"))
        curves.append(dict(split=row.split, seq=row.seq, frame_idx=row.frame_idx,
                           shift_ticks=shifts.tolist(),
                           corr=[None if not np.isfinite(c) else float(c) for c in corr]))
        out.append(row)
    return out, curves, registration


def unaudited_note(root: Path, split: str) -> str | None:
    """A warning when the store at ``root`` was audited but some kept paired frames of ``split`` were not
    (an ingest rerun (re)built their sequences after the audit), else None. Such frames may be misaligned;
    the trainer says so rather than refusing, since a store never audited trains too."""
    rows = read_manifest_rows(root)
    if not any(r.audited for r in rows):
        return None
    gap = [r for r in rows if r.split == split and r.status == STATUS_OK and r.paired
           and r.vox_index is not None and r.audit_verdict is None]
    if not gap:
        return None
    seqs = sorted({r.seq for r in gap})
    return (f"{root}: {len(gap)} kept {split} frames ({len(seqs)} sequence(s): {', '.join(seqs[:5])}"
            f"{', ...' if len(seqs) > 5 else ''}) were ingested after the last audit and are unaudited. "
            f"Fix: run `spikeprep audit {root}` before training on them")


# ---- overlays and curve plots ----------------------------------------------------------------------
# One colour per verdict, in the overlay labels, the failing-curves PNG and the notebook (matplotlib's
# tab10 green, red, purple, grey): the same verdict always looks the same.
VERDICT_COLOURS = {ALIGNED: "#2ca02c", MISALIGNED: "#d62728", MISMATCH: "#9467bd", UNDETERMINED: "#7f7f7f"}
DROPPED_COLOUR = "#ff7f0e"       # dropped before the content check (a structural problem): orange
OVERLAY_MIN_WIDTH = 480           # small frames are enlarged (nearest, integer factor) so their label fits
OVERLAY_PANELS = "blur | spike intensity | vox.sum(K) over blur | checkerboard spikes/blur"
CHECKER_PX = 8                    # squares of the checkerboard panel (store RGB pixels)
_OVERLAY_NAME = re.compile(r"^(\d{3}_[a-z]+_)?.+_\d{6}\.png$")   # what write_overlays writes (and wrote)


def frame_key(row: ManifestRow | dict) -> tuple[str, str, int]:
    """``(split, seq, frame_idx)``: a frame's identity in the manifest (a row) and in the curves (a dict)."""
    if isinstance(row, ManifestRow):
        return row.split, row.seq, row.frame_idx
    return row["split"], row["seq"], int(row["frame_idx"])


def frame_verdict(row: ManifestRow) -> str:
    """The content check's verdict, or ``dropped`` for a frame the audit dropped before it (a structural
    problem), or ``not audited`` (ingest dropped it: never voxelized)."""
    if row.audit_verdict:
        return row.audit_verdict
    return "dropped" if row.status == STATUS_DROPPED else "not audited"


def _to_u8(img: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(img)), float(np.max(img))
    return np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) / (hi - lo) * 255).round().astype(np.uint8)


def overlay_image(root: Path, row: ManifestRow, info: StoreInfo) -> np.ndarray:
    """blur | spike intensity | spike_vox.sum(K) over blur (the original document's check 13.1), BGR."""
    seq = info.sequences[f"{row.split}/{row.seq}"]
    blur = np.ascontiguousarray(read_rgb(root / row.blur)[::-1].transpose(1, 2, 0))   # BGR, as cv2 draws
    counts = read_frame(root / row.split / row.seq / VOX_DIRNAME / VOX_ARRAY, row.vox_index)
    total = counts.sum(axis=0, dtype=np.int64)
    inten = _to_u8(spike_intensity(total, row.n_ticks, seq.scale))
    heat = cv2.applyColorMap(inten, cv2.COLORMAP_INFERNO)
    gray = cv2.cvtColor(cv2.cvtColor(blur, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    blend = cv2.addWeighted(gray, 0.5, heat, 0.5, 0)
    return np.concatenate([blur, cv2.cvtColor(inten, cv2.COLOR_GRAY2BGR), blend, checkerboard(gray, inten)], axis=1)


def checkerboard(gray: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Squares of the blur (grey) and of the spike intensity (its contrast matched to the blur's): edges that
    jump at the squares' borders show misregistration at a glance."""
    g = gray[..., 0].astype(np.float64)
    i = intensity.astype(np.float64)
    matched = (i - i.mean()) / (i.std() or 1.0) * g.std() + g.mean()
    y, x = np.indices(g.shape)
    spikes = ((y // CHECKER_PX + x // CHECKER_PX) % 2).astype(bool)
    out = np.where(spikes, np.clip(matched, 0, 255), g).round().astype(np.uint8)
    board = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    board[spikes, 2] = np.clip(board[spikes, 2].astype(np.int32) + 40, 0, 255)   # spike squares tinted red
    return board


def overlay_label(row: ManifestRow, curve: dict | None) -> list[str]:
    """The lines drawn above an overlay: which frame, the verdict and offset, the peak correlation."""
    verdict = frame_verdict(row)
    lines = [f"{row.split}/{row.seq} frame {row.frame_idx}"]
    best = row.audit_best_offset_ticks
    if verdict == "dropped":
        lines.append(f"dropped ({row.reason_code}): {row.reason}")
    else:
        lines.append(verdict + ("" if best is None else f", offset {best:+d} ticks"))
    corr = None if curve is None else np.array([np.nan if c is None else c for c in curve["corr"]], float)
    if corr is not None and np.isfinite(corr).any():
        i = int(np.nanargmax(corr))
        zero = row.audit_corr
        lines.append(f"peak corr {corr[i]:.3f} at shift {curve['shift_ticks'][i]:+d}"
                     + ("" if zero is None else f"; at 0: {zero:.3f}"))
    else:
        lines.append("no correlation curve")
    reg = row.audit_registration_px
    lines.append("registration residual: " + ("not measured" if reg is None else f"{reg:.2f} px at the corners"))
    lines.append(OVERLAY_PANELS)
    return lines


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return b, g, r


def labelled_overlay(panels: np.ndarray, lines: list[str], verdict: str) -> np.ndarray:
    """``panels`` (BGR), enlarged by an integer factor to at least ``OVERLAY_MIN_WIDTH`` wide, under a
    banner holding ``lines`` (the verdict line in the verdict's colour)."""
    factor = max(1, -(-OVERLAY_MIN_WIDTH // panels.shape[1]))
    image = cv2.resize(panels, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    width, font, thick = image.shape[1], cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = 0.5
    widest = max(cv2.getTextSize(t, font, 1.0, thick)[0][0] for t in lines)
    scale = max(0.3, min(scale, (width - 12) / max(widest, 1)))
    line_h = int(round(30 * scale)) + 4
    banner = np.full((line_h * len(lines) + 6, width, 3), 24, np.uint8)
    colour = _bgr(VERDICT_COLOURS.get(verdict, DROPPED_COLOUR))
    for k, text in enumerate(lines):
        cv2.putText(banner, text, (6, line_h * (k + 1)), font, scale,
                    colour if k == 1 else (235, 235, 235), thick, cv2.LINE_AA)
    return np.concatenate([banner, image], axis=0)


def overlay_choice(rows: list[ManifestRow], n: int, seed: int = 0) -> list[ManifestRow]:
    """The frames that get overlays: the audit's failures first, then a seeded choice of the other
    voxelized frames; each group in manifest order, each a seeded choice where it has more than needed."""
    rng = np.random.default_rng(seed)
    drawable = [r for r in rows if r.vox_index is not None]
    failing = [r for r in drawable if r.dropped_by_audit]
    rest = [r for r in drawable if not r.dropped_by_audit]

    def pick(group: list[ManifestRow], k: int) -> list[ManifestRow]:
        if k >= len(group):
            return group
        return [group[i] for i in sorted(rng.choice(len(group), size=k, replace=False).tolist())]

    first = pick(failing, max(n, 0))
    return first + pick(rest, max(n - len(first), 0))


def write_overlays(root: Path, rows: list[ManifestRow], info: StoreInfo, n: int, seed: int = 0,
                   curves: list[dict] = ()) -> list[Path]:
    """Labelled overlays for ``n`` frames (``overlay_choice``) as PNG under ``DATA_ROOT/audit/overlays``,
    named ``<rank>_<verdict>_<split>_<seq>_<frame>.png`` so a file listing shows the failures first.
    The overlays a previous audit wrote there are removed first (other files are left alone)."""
    folder = root / AUDIT_DIRNAME / "overlays"
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_file() and _OVERLAY_NAME.match(old.name):
                old.unlink()
    chosen = overlay_choice(rows, n, seed)
    if not chosen:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    by_key = {frame_key(c): c for c in curves}
    paths = []
    for rank, r in enumerate(chosen):
        verdict = frame_verdict(r)
        path = folder / f"{rank:03d}_{verdict.replace(' ', '')}_{r.split}_{r.seq}_{r.frame_idx:06d}.png"
        try:
            image = labelled_overlay(overlay_image(root, r, info), overlay_label(r, by_key.get(frame_key(r))),
                                     verdict)
        except (SampleError, OSError) as err:       # a damaged shard: say so, draw the others
            log.warning("no overlay for %s/%s frame %d: %s", r.split, r.seq, r.frame_idx, err)
            continue
        ok, buf = cv2.imencode(".png", image)
        if not ok:  # never write an empty PNG
            raise OSError(f"{path}: cv2.imencode could not encode the overlay as PNG")
        atomic_write_bytes(path, buf.tobytes())
        paths.append(path)
    return paths


def curves_figure(rows: list[ManifestRow], curves: list[dict], num_bins: int, max_panels: int = 12):
    """A matplotlib Figure (Agg, no pyplot state): one panel per failing frame's correlation curve
    (misaligned or mismatch, in manifest order, at most ``max_panels``), with the band where a peak counts
    as aligned, the recorded window (shift 0) and the best shift; None when no failing frame has a curve."""
    from matplotlib.figure import Figure

    by_key = {frame_key(c): c for c in curves}
    failing = [r for r in rows if r.audit_verdict in (MISALIGNED, MISMATCH) and frame_key(r) in by_key]
    if not failing:
        return None
    shown = failing[:max_panels]
    cols = min(3, len(shown))
    nrows = -(-len(shown) // cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.ravel()[len(shown):]:
        ax.set_visible(False)
    for ax, r in zip(axes.ravel(), shown):
        c = by_key[frame_key(r)]
        corr = np.array([np.nan if v is None else v for v in c["corr"]], float)
        tol = alignment_tolerance(r.n_ticks, num_bins)
        ax.axvspan(-tol, tol, color=VERDICT_COLOURS[ALIGNED], alpha=0.15, lw=0, label="aligned if the peak is here")
        ax.axvline(0, color="k", lw=0.8, label="recorded window")
        colour = VERDICT_COLOURS[r.audit_verdict]
        ax.plot(c["shift_ticks"], corr, "o-", ms=3, color=colour, label=r.audit_verdict)
        best = r.audit_best_offset_ticks
        if best is not None:
            ax.axvline(best, color=colour, ls="--", lw=1, label=f"best shift {best:+d}")
        ax.set_title(f"{r.split}/{r.seq} frame {r.frame_idx}: {r.audit_verdict}"
                     + ("" if best is None else f" {best:+d} ticks"), fontsize=9)
        ax.set_xlabel("window shift (ticks)", fontsize=8)
        ax.set_ylabel("corr(spikes, blur luma)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    more = f" (first {len(shown)} of {len(failing)})" if len(failing) > len(shown) else ""
    fig.suptitle(f"correlation vs window shift of the failing frames{more}", fontsize=10)
    return fig


def write_failing_curves(path: Path, rows: list[ManifestRow], curves: list[dict], num_bins: int) -> Path | None:
    """``curves_figure`` as a PNG at ``path`` (atomically); None, and nothing written, without failures."""
    fig = curves_figure(rows, curves, num_bins)
    if fig is None:
        return None
    sink = io.BytesIO()
    fig.savefig(sink, format="png", dpi=100)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(Path(path), sink.getvalue())


# ---- frames dropped for the crop size ---------------------------------------------------------------
@dataclass(frozen=True)
class CropDrops:
    """Training frames dropped because their short side is below the crop size (``CROP_CODES``).
    ``by_ingest`` of them were never voxelized (only a re-ingest with a smaller crop brings them back); the
    rest were dropped by an audit with a larger ``--crop`` than ingest's."""

    frames: int
    by_ingest: int
    short_side: int     # the smallest short side among them (their rows' H and W)
    crop_size: int      # the largest crop size they were dropped for (ingest's or the audit's option)

    @property
    def crop_hint(self) -> int | None:
        """A ``--crop`` every one of these frames fits and training accepts (``schemas.config.
        largest_valid_crop``), None when their short side is below the smallest crop training accepts."""
        return largest_valid_crop(self.short_side)

    def advice(self, fix: str) -> str:
        """What to do: ``fix`` (a command line with ``{crop}`` for the hint), or, when no crop fits, that these
        frames are too small to train on."""
        if self.crop_hint is not None:
            return fix.format(crop=self.crop_hint)
        return (f"no training crop fits them ({crop_size_rule()}): train on frames whose short side is at least "
                f"{MIN_CROP_SIZE} px")

    def summary(self, fix: str) -> str:
        """The line the CLI prints: how many frames, why, and ``advice(fix)``."""
        return (f"{self.frames} training frame(s) dropped for the crop size (short side {self.short_side} < crop "
                f"size {self.crop_size}): {self.advice(fix)}")


def crop_drops(rows: list[ManifestRow], ingest_crop: int, audit_crop: int | None = None) -> CropDrops | None:
    """The rows dropped for a short side below the crop size (their codes, ``CROP_CODES``): by ingest, whose
    crop option was ``ingest_crop``, or by the audit, whose option was ``audit_crop``; None when there is
    none."""
    found = [r for r in rows if r.reason_code in CROP_CODES]
    if not found:
        return None
    by_ingest = sum(not r.dropped_by_audit for r in found)
    crops = ([ingest_crop] if by_ingest else []) + ([audit_crop] if by_ingest < len(found) else [])
    return CropDrops(frames=len(found), by_ingest=by_ingest, short_side=min(min(r.H, r.W) for r in found),
                     crop_size=max(c for c in crops if c is not None))


# ---- the whole store ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditReport:
    """Result of ``audit``: the rewritten manifest rows, one correlation curve per audited frame
    (``split, seq, frame_idx, shift_ticks, corr``), the overlay PNGs written and the failing frames'
    curves PNG (None when no failing frame has a curve)."""

    rows: list[ManifestRow]
    curves: list[dict]
    overlays: list[Path]
    curves_png: Path | None = None
    registration: dict[str, SequenceEstimate] = field(default_factory=dict)   # by "split/seq"

    @property
    def failed(self) -> list[ManifestRow]:
        """Manifest rows with ``status == dropped`` (by ingest or by this audit)."""
        return [r for r in self.rows if r.status == STATUS_DROPPED]

    def summary(self) -> list[dict]:
        """One line per sequence: frames, kept, dropped, verdict counts, median best offset (ticks) of
        the frames whose peak could be located."""
        by_seq: dict[tuple[str, str], list[ManifestRow]] = {}
        for r in self.rows:
            by_seq.setdefault((r.split, r.seq), []).append(r)
        return [dict(split=split, seq=seq, **_tally(rows)) for (split, seq), rows in by_seq.items()]

    def totals(self) -> dict:
        """The ``summary`` columns over every frame of the store (median offset over all located peaks)."""
        return _tally(self.rows)


def _tally(rows: list[ManifestRow]) -> dict:
    out = dict(frames=len(rows), ok=sum(r.status == STATUS_OK for r in rows),
               dropped=sum(r.status != STATUS_OK for r in rows),
               **{v: sum(r.audit_verdict == v for r in rows) for v in (ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED)})
    offsets = [r.audit_best_offset_ticks for r in rows
               if r.audit_best_offset_ticks is not None and r.audit_verdict != UNDETERMINED]
    out["median_offset_ticks"] = float(np.median(offsets)) if offsets else None
    return out


def audit(root: Path, options: AuditOptions = AuditOptions(), overlays: int = 0, seed: int = 0,
          progress: bool = True, curves_png: Path | None = None) -> AuditReport:
    """Audit the store at ``root``; rewrites the manifest (status, reason, audit columns) and the stats,
    writes ``audit/curves.parquet``, ``overlays`` labelled overlay PNGs (``write_overlays``) and the failing
    frames' curves as a PNG (``curves_png``, default ``DATA_ROOT/audit/failing_curves.png``).

    Under the store's write lock (``store_lock``): an ingest must not interleave its files with these, and a
    training must not read the manifest while it changes. A read-only store is a clear error."""
    read_store_info(root)          # a folder that is no store gets no lock file
    with store_lock(root, "audit"):
        return _audit_store(Path(root), options, overlays, seed, progress, curves_png)


def _audit_store(root: Path, options: AuditOptions, overlays: int, seed: int, progress: bool,
                 curves_png: Path | None) -> AuditReport:
    info = read_store_info(root)
    rows = read_manifest_rows(root)
    by_seq: dict[str, list[ManifestRow]] = {}
    for r in rows:
        by_seq.setdefault(f"{r.split}/{r.seq}", []).append(r)
    unknown = sorted(set(by_seq) - set(info.sequences))
    if unknown:
        raise InputError(root / DATASET_FILENAME, f"sequences {unknown[:5]} are in the manifest but not in "
                         "dataset.json (a damaged or mixed store)", fix="re-run `spikeprep ingest RAW --out DATA_ROOT`")
    new_rows, curves, registration = [], [], {}
    for key in tqdm(sorted(by_seq), desc="audit", unit="seq", disable=not progress):
        seq_rows, seq_curves, registration[key] = audit_sequence(root, key, info, by_seq[key], options)
        new_rows += seq_rows
        curves += seq_curves
    order = {frame_key(r): i for i, r in enumerate(rows)}
    new_rows.sort(key=lambda r: order[frame_key(r)])

    histograms: dict[FrameKey, list[int]] = {}  # keyed by split too: train/X and val/X differ
    for key in by_seq:
        path = root / key / SEQUENCE_RECORD_FILENAME
        try:
            record = read_sequence_record(path)
        except ValueError as err:
            raise InputError(path, f"missing or unreadable, and the stats are recomputed from its count "
                             f"histograms ({str(err).removeprefix(f'{path}: ')[:300]})",
                             fix=f"move {root / key} away and re-run `spikeprep ingest RAW --out DATA_ROOT`: it "
                             "rebuilds that sequence") from None
        split, seq_name = key.split("/", 1)
        histograms.update({(split, seq_name, idx): hist for idx, hist in record.histograms.items()})
    stats = stats_from_records(new_rows, histograms)
    if stats is not None:
        check_std(stats.std, str(root / DATASET_FILENAME))

    (root / AUDIT_DIRNAME).mkdir(exist_ok=True)
    curve_table = pa.Table.from_pylist(curves, schema=pa.schema([
        ("split", pa.string()), ("seq", pa.string()), ("frame_idx", pa.int64()),
        ("shift_ticks", pa.list_(pa.int64())), ("corr", pa.list_(pa.float64()))]))
    sink = pa.BufferOutputStream()
    pq.write_table(curve_table, sink)
    atomic_write_bytes(root / AUDIT_DIRNAME / "curves.parquet", sink.getvalue().to_pybytes())
    write_manifest(root, new_rows)
    write_store_info(root, info.model_copy(update={"stats": stats}))
    paths = write_overlays(root, new_rows, info, overlays, seed, curves)
    default_png = root / AUDIT_DIRNAME / FAILING_CURVES_PNG
    default_png.unlink(missing_ok=True)        # a previous audit's: it would show failures fixed since
    png = write_failing_curves(curves_png or default_png, new_rows, curves, info.K)
    return AuditReport(new_rows, curves, paths, png, registration)
