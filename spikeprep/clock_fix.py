"""``spikeprep audit DATA_ROOT --fix``: estimate each sequence's clock map and rebuild the store with it.

An exposure table written by the RGB camera's clock disagrees with the spike clock by an offset and a drift:
``t_spike = (1 + drift) * t_recorded + offset`` (DESIGN section 6, "real rigs").

Estimate, per sequence
    1. Scan: for every frame with a readable blur frame, the audit's correlation of blur luma with the spike
       intensity over the recorded window shifted by ``d`` ticks, for every integer ``d`` within one frame
       period (plus what ``max_drift_ppm`` adds over the sequence, plus the audit's own scan) either way:
       beyond the audit's default +-D. The window's counts slide along the stream (add the tick that enters,
       subtract the one that leaves), so the whole curve costs one read of the scanned ticks instead of one
       voxelization per shift.
    2. Locate: coarse, the curve's maximum over the whole scan; fine, the audit's own judgement (``judge``:
       a single peak standing out of a flat or jittery curve, above ``min_corr``) on the +-D stretch around
       it, the peak placed at the middle of the curve's top to half a tick (``top_middle``). Frames whose
       peak cannot be located (static or flat content, a mismatch) are not used.
    3. Fit: a robust line through the located shifts against the recorded window centres: a Theil-Sen start,
       then least squares on the points within ``max(1.5 ticks, 3 sigma)`` of the line (sigma from the median
       absolute residual), repeated until the set of points used stops changing. Its slope is the drift, its
       value at recorded time 0 the offset; the residual is the RMS of the points used, in ticks.
    4. Trust: too few located peaks (a static scene), too few points on the line or a residual above
       ``max_residual_ticks`` leave the sequence ``unfixed``, with the reason. The drift itself is not bounded:
       over a short sequence it is poorly determined (2000 ppm over 500 ticks moves a window by one tick), and
       what matters, the windows, the residual already judges.

Registration first (``spikeprep.registration``)
    A misregistered sequence's shift curves peak at the wrong shifts (moving edges sit elsewhere), so each
    sequence's registration is estimated first, on the recorded windows (the spike sum over the whole window
    barely moves with a clock error, and ``estimate_sequence`` removes the part that moves with the image's
    motion); the clock is then estimated on the blur luma registered in memory, and the registration again on
    the clock's windows. It is kept as a ``schemas.registration`` record under ``DATA_ROOT/audit/registration/``:
    ingest resamples a fixed sequence's RGB frames from RAW with the refined homography.

Apply
    The fix of each sequence is written as a ``schemas.clock_fix`` record under ``DATA_ROOT/audit/clock/``;
    then the store is rebuilt through ingest's own code (``spikeprep.ingest.build_store``): ingest maps a
    sequence's recorded windows with its fixed record before voxelizing, and the map is part of the
    sequence's fingerprint, so exactly the fixed sequences are voxelized again from RAW (never written) and
    every later ingest rerun keeps the fix. The manifest's ``t0``/``t1`` become the corrected windows, its
    ``t0_recorded``/``t1_recorded`` keep the table's.

Kill-safety: under the store lock; before the rebuild, ``dataset.json`` is moved to
``audit/clock/fix_pending.json`` (the store is incomplete until the rebuild writes it again, last), so a
killed run leaves a store that looks incomplete and that a rerun (of ``audit --fix``, or of ingest) completes
byte-identical to an uninterrupted run. Registration fixes rewrite the store's blur PNGs, so a rerun that finds
``fix_pending.json`` does not estimate again: it completes the rebuild from the records written (all of them
are written before ``dataset.json`` is moved aside); a rerun killed before that estimates again from an
unchanged store.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from schemas.atomic import atomic_write_text, remove_stale_temps
from schemas.clock_fix import (FIXED, UNFIXED, ClockFix, clock_fix_path, read_clock_fix, recorded_digest,
                               write_clock_fix)
from schemas.manifest import ManifestRow
from schemas.registration import (ALIGNED as REG_ALIGNED, FIXED as REG_FIXED, UNFIXED as REG_UNFIXED,
                                  RegistrationFix, flat, read_registration_fix, registration_fix_path,
                                  write_registration_fix)
from schemas.store import SequenceInfo
from schemas.store import DATASET_FILENAME, StoreInfo
from spikeprep.audit import MISMATCH, UNDETERMINED, AuditOptions, LumaCorrelator, blur_luma, judge, shift_curve, \
    top_middle
from spikeprep.errors import InputError
from spikeprep.ingest import PENDING_FIX, build_store, check_replaceable, store_specs
from spikeprep.registration import (FrameEstimate, RegistrationOptions, SequenceEstimate, corner_error, estimate_frame,
                                    estimate_sequence, scale_homography, store_to_spike, upsampled_intensity,
                                    warp_luma)
from spikeprep.spike_source import SpikeSource, stored_source
from spikeprep.store import read_manifest_rows, read_store_info, store_lock
from spikeprep.windows import tick_position

log = logging.getLogger("spikeprep.clock_fix")
MAX_SCAN_BYTES = 256 * 2**20             # per-tick counts held at once while a frame's curve is scanned


@dataclass(frozen=True)
class ClockFixOptions:
    """How far to scan and when to trust a fit.

    periods: scan shifts up to this many frame periods either way (the period: the median start-to-start
    distance of the recorded windows); max_drift_ppm: plus the shift this drift adds over the sequence;
    min_frames: located peaks (and points on the line) needed; min_share: the line must hold at least this
    share of the located peaks; max_residual_ticks: RMS of the points used about the line, above which the fit
    is refused; max_uncertainty_ticks: the same for the fitted line's uncertainty at the window farthest from
    the frames used (``line_uncertainty``); audit: the content check's thresholds that locate a peak.
    """

    periods: float = 1.0
    max_drift_ppm: float = 2000.0
    min_frames: int = 6
    min_share: float = 0.5
    max_residual_ticks: float = 1.0
    max_uncertainty_ticks: float = 1.0
    audit: AuditOptions = field(default_factory=AuditOptions)


@dataclass(frozen=True)
class FrameWindow:
    """One blur frame as the estimate sees it: its recorded window and its luma (RGB grid)."""

    frame_idx: int
    t0: float
    t1: float
    luma: np.ndarray


@dataclass(frozen=True)
class ClockEstimate:
    """What the estimate found for one sequence (``ClockFix`` holds the part that is kept). ``shifts``:
    the located shift of each frame in ticks (NaN where none was located), in ``frame_idx`` order."""

    verdict: str
    reason: str | None
    offset_s: float | None
    drift: float | None
    residual_ticks: float | None
    uncertainty_ticks: float | None
    frame_idx: list[int]
    shifts: np.ndarray
    used: np.ndarray
    scan_ticks: int
    seconds: float

    @property
    def frames_located(self) -> int:
        return int(np.isfinite(self.shifts).sum())


# ---- 1. scan --------------------------------------------------------------------------------------------
class _TickFrames:
    """Per-tick spike counts ``[Hs, Ws]`` of ticks ``[lo, hi)`` of one file, read in chunks on demand (ticks
    asked for in increasing order)."""

    def __init__(self, source: SpikeSource, frame_idx: int, start_s: float, lo: int, hi: int):
        m = source.meta
        self.source, self.frame_idx, self.start_s, self.hi = source, frame_idx, start_s, hi
        self.chunk = max(1, MAX_SCAN_BYTES // (2 * 4 * m.height * m.width))   # two readers per scan
        self.first, self.data = lo, np.zeros((0, *source.grid), np.int64)

    def __getitem__(self, tick: int) -> np.ndarray:
        if not self.first <= tick < self.first + len(self.data):
            lo, hi = tick, min(self.hi, tick + self.chunk)
            # edges half a tick before the first and the last tick: bin k holds exactly tick lo + k
            ft = self.source.meta.frame_time
            wc = self.source.window(ft(self.start_s, lo - 0.5), ft(self.start_s, hi - 0.5), hi - lo,
                                    frame_idx=self.frame_idx)
            self.first, self.data = lo, wc.counts.astype(np.int64)
        return self.data[tick - self.first]


def scan_curve(source: SpikeSource, frame: FrameWindow, scale: tuple[int, int], max_shift: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """The audit's ``shift_curve`` for ``d = -max_shift .. max_shift`` ticks, by sliding sums: the same
    correlations, at the cost of reading the scanned ticks once. Shifts whose window leaves the spike data
    are NaN. Event lists (no frame axis) fall back to ``shift_curve``."""
    extent = source.tick_extent(frame.frame_idx)
    if extent is None:
        return shift_curve(source, frame.t0, frame.t1, frame.frame_idx, frame.luma, scale, max_shift)
    start_s, n_frames = extent
    rate = source.meta.rate_hz
    shifts = np.arange(-max_shift, max_shift + 1)
    corr = np.full(shifts.shape, np.nan)
    first = math.ceil(tick_position(frame.t0, start_s, rate))     # the window holds ticks [first, end)
    end = math.ceil(tick_position(frame.t1, start_s, rate))
    lo, hi = max(-max_shift, -first), min(max_shift, n_frames - end)
    if end <= first or lo > hi:
        return shifts, corr
    correlate = LumaCorrelator(frame.luma, scale)
    enter = _TickFrames(source, frame.frame_idx, start_s, first + lo, end + hi)
    leave = _TickFrames(source, frame.frame_idx, start_s, first + lo, end + hi)
    counts = np.zeros(source.grid, np.int64)
    for tick in range(first + lo, end + lo):
        counts += enter[tick]
    for d in range(lo, hi + 1):
        if d > lo:
            counts += enter[end + d - 1]
            counts -= leave[first + d - 1]
        corr[d + max_shift] = correlate(counts.astype(np.float64))
    return shifts, corr


# ---- 2. locate ------------------------------------------------------------------------------------------
def locate_peak(shifts: np.ndarray, corr: np.ndarray, n_ticks: int, num_bins: int,
                options: AuditOptions) -> float | None:
    """Where the curve peaks (ticks, to half a tick), or None when no single peak can be located: coarse, its
    maximum over the whole scan; fine, the audit's ``judge`` over the +-D stretch around that maximum."""
    if not np.isfinite(corr).any():
        return None
    centre = int(shifts[int(np.nanargmax(corr))])
    reach = options.max_shift_ticks or max(4, n_ticks // 4)
    near = np.abs(shifts - centre) <= reach
    verdict, _, _ = judge(shifts[near] - centre, corr[near], n_ticks, num_bins, options)
    if verdict in (UNDETERMINED, MISMATCH):
        return None
    return float(top_middle(shifts[near], corr[near], options.top_fraction))


# ---- 3. fit ---------------------------------------------------------------------------------------------
def robust_line(x: np.ndarray, y: np.ndarray, floor: float = 1.5) -> tuple[float, float, np.ndarray]:
    """``(a, b, used)`` with ``y ~ a + b * x`` over the points ``used``: a Theil-Sen start, then least squares
    on the points within ``max(floor, 3 sigma)`` of the line (sigma = 1.4826 x the median absolute residual of
    the points used), until the points used stop changing."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    slopes = (y[j] - y[i])[dx != 0] / dx[dx != 0]
    b = float(np.median(slopes)) if len(slopes) else 0.0
    a = float(np.median(y - b * x))
    used = np.ones(len(x), bool)
    for _ in range(50):
        resid = y - (a + b * x)
        sigma = 1.4826 * float(np.median(np.abs(resid[used])))
        now = np.abs(resid) <= max(floor, 3 * sigma)
        if now.sum() < 2:
            break
        if np.ptp(x[now]) > 0:
            b, a = (float(v) for v in np.polyfit(x[now], y[now], 1))
        else:
            b, a = 0.0, float(np.mean(y[now]))
        if np.array_equal(now, used):
            break
        used = now
    return a, b, used


def line_uncertainty(x_used: np.ndarray, x_all: np.ndarray, residual: float, floor: float = 0.25) -> float:
    """Two standard errors of a least-squares line through the points at ``x_used`` (RMS residual
    ``residual``, at least ``floor``: half-tick peaks are never exact), at the worst of ``x_all``: where the fit
    is extrapolated furthest. A few located frames, or all of them in one part of the sequence, give a line
    that is exact where they are and uncertain elsewhere."""
    n = len(x_used)
    sxx = float(np.sum((x_used - x_used.mean()) ** 2))
    if n < 2 or sxx == 0:
        return math.inf
    far = float(np.max((x_all - x_used.mean()) ** 2))
    return 2 * max(residual, floor) * math.sqrt(1 / n + far / sxx)


# ---- one sequence ---------------------------------------------------------------------------------------
def scan_reach(frames: list[FrameWindow], rate_hz: float, options: ClockFixOptions) -> int:
    """Shifts scanned either way, in ticks: ``periods`` frame periods, plus what ``max_drift_ppm`` adds over
    the sequence, plus the audit's own +-D (so a peak a whole period away is judged on a whole stretch)."""
    t0 = np.array([f.t0 for f in frames])
    length = float(np.median([f.t1 - f.t0 for f in frames])) * rate_hz
    period = float(np.median(np.diff(t0))) * rate_hz if len(frames) > 1 else length
    span = (float(t0.max() - t0.min()) if len(frames) else 0.0) * rate_hz
    local = options.audit.max_shift_ticks or max(4, int(round(length)) // 4)
    return int(math.ceil(options.periods * period + options.max_drift_ppm * 1e-6 * span)) + local


def estimate_clock(source: SpikeSource, frames: list[FrameWindow], scale: tuple[int, int], num_bins: int,
                   options: ClockFixOptions = ClockFixOptions()) -> ClockEstimate:
    """Estimate one sequence's clock map from its frames (steps 1-4 of the module docstring)."""
    started = time.perf_counter()
    rate = source.meta.rate_hz
    frames = sorted(frames, key=lambda f: f.frame_idx)
    reach = scan_reach(frames, rate, options) if frames else 0
    shifts = np.full(len(frames), np.nan)
    for k, frame in enumerate(frames):
        d, corr = scan_curve(source, frame, scale, reach)
        n_ticks = max(1, int(round((frame.t1 - frame.t0) * rate)))
        located = locate_peak(d, corr, n_ticks, num_bins, options.audit)
        if located is not None:
            shifts[k] = located
    centres = np.array([(f.t0 + f.t1) / 2 for f in frames], np.float64)
    found = np.isfinite(shifts)
    used = np.zeros(len(frames), bool)
    offset_s = drift = residual = uncertainty = None
    reason = None
    if not frames:
        reason = "no frame has a readable blur PNG of the sequence's RGB grid: nothing to estimate from"
    elif found.sum() < max(options.min_frames, 2):
        reason = (f"only {int(found.sum())} of {len(frames)} frames have a located correlation peak (at least "
                  f"{options.min_frames} needed): a static or flat scene, or spikes that do not show these frames")
    else:
        origin = float(np.median(centres[found]))      # centred: the offset and the drift fit independently
        a, b, on_line = robust_line(centres[found] - origin, shifts[found])
        used[np.flatnonzero(found)[on_line]] = True
        drift = b / rate
        offset_s = a / rate - drift * origin
        resid = shifts[used] - (a + b * (centres[used] - origin))
        residual = float(np.sqrt(np.mean(resid ** 2)))
        uncertainty = line_uncertainty(centres[used] - origin, centres - origin, residual)
        need = max(options.min_frames, math.ceil(options.min_share * found.sum()))
        if used.sum() < need:
            reason = (f"the located shifts do not lie on one line: {int(used.sum())} of {int(found.sum())} "
                      f"agree (at least {need} needed)")
        elif residual > options.max_residual_ticks:
            reason = (f"residual {residual:.2f} ticks about the fitted line is above {options.max_residual_ticks:g}"
                      " (jitter or content the map cannot explain)")
        elif uncertainty > options.max_uncertainty_ticks:
            reason = (f"the fitted windows are uncertain by up to {uncertainty:.2f} ticks (2 standard errors), above "
                      f"{options.max_uncertainty_ticks:g}: too few located frames, or all in one part of the sequence")
    return ClockEstimate(verdict=UNFIXED if reason else FIXED, reason=reason, offset_s=offset_s, drift=drift,
                         residual_ticks=residual, uncertainty_ticks=uncertainty,
                         frame_idx=[f.frame_idx for f in frames], shifts=shifts, used=used,
                         scan_ticks=reach, seconds=time.perf_counter() - started)


def clock_record(split: str, seq: str, estimate: ClockEstimate, rate_hz: float, digest: str) -> ClockFix:
    """The ``ClockFix`` record of one estimate."""
    def clean(v):
        return None if v is None or not math.isfinite(v) else float(v)

    return ClockFix(split=split, seq=seq, verdict=estimate.verdict, reason=estimate.reason, rate_hz=rate_hz,
                    offset_s=clean(estimate.offset_s),
                    offset_ticks=None if estimate.offset_s is None else clean(estimate.offset_s * rate_hz),
                    drift_ppm=None if estimate.drift is None else clean(estimate.drift * 1e6),
                    residual_ticks=clean(estimate.residual_ticks),
                    uncertainty_ticks=clean(estimate.uncertainty_ticks), frames_total=len(estimate.frame_idx),
                    frames_located=estimate.frames_located,
                    frames_used=[i for i, u in zip(estimate.frame_idx, estimate.used.tolist()) if u],
                    scan_ticks=estimate.scan_ticks, exposure_sha256=digest)


# ---- the whole store ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixReport:
    """Result of ``fix_store``: one clock and one registration record per sequence (in key order), what the
    rebuild said about each fix (``IngestResult.clock_notes`` and ``registration_notes``), the time taken and
    the frames scanned."""

    records: list[ClockFix]
    notes: list[str]
    seconds: float
    frames_scanned: int
    registrations: list[RegistrationFix] = field(default_factory=list)


# ---- registration (before the clock) -----------------------------------------------------------------
def estimate_registration(source: SpikeSource, frames: list[FrameWindow], hw: tuple[int, int],
                          options: RegistrationOptions) -> SequenceEstimate:
    """The sequence's residual misregistration on the windows of ``frames`` (at most ``options.max_frames``,
    evenly spaced): the raw spikes of each window (two halves, for the motion between them) against its
    blur luma."""
    chosen = frames if len(frames) <= options.max_frames else \
        [frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, options.max_frames)]
    estimates: list[FrameEstimate] = []
    for f in chosen:
        try:
            wc = source.window(f.t0, f.t1, 2, frame_idx=f.frame_idx)
        except InputError:
            continue
        if wc.covered is False or wc.n_ticks == 0:
            continue
        halves = (upsampled_intensity(wc.counts[0], hw), upsampled_intensity(wc.counts[1], hw))
        estimates.append(estimate_frame(upsampled_intensity(wc.counts, hw), f.luma, options, f.frame_idx, halves))
    return estimate_sequence(estimates, hw, options)


MAX_ROUNDS = 3      # registration and clock estimated in turn at most this many times


def _mapped(frames: list[FrameWindow], estimate: ClockEstimate) -> list[FrameWindow]:
    """``frames`` on the windows a clock estimate's fitted line gives (fixed or not), or as they are."""
    if estimate.offset_s is None or estimate.drift is None:
        return frames
    a, b = 1.0 + estimate.drift, estimate.offset_s
    return [replace(f, t0=a * f.t0 + b, t1=a * f.t1 + b) for f in frames]


def estimate_both(source: SpikeSource, frames: list[FrameWindow], hw: tuple[int, int], scale: tuple[int, int],
                  num_bins: int, options: ClockFixOptions) -> tuple[ClockEstimate, SequenceEstimate]:
    """A sequence's clock and registration, registration first: the registration on the recorded windows; then
    in turn (at most ``MAX_ROUNDS`` times) the clock on the luma registered in memory (when the registration is
    trusted and above ``timing_px``) and the registration again on the windows the clock's line gives (even a
    line not yet trusted: a large clock error makes the first registration's frames disagree, a misregistration
    makes the first clock fit jitter), until the clock is fixed and the registration stops moving. The final
    registration is the one on the final windows (the fixed clock's, else the recorded ones)."""
    reg_options = options.audit.registration
    registration = estimate_registration(source, frames, hw, reg_options)
    if registration.reason_code == "frames_disagree" and frames:
        registration = _registration_by_shift(source, frames, hw, options) or registration
    estimate = None
    for _ in range(MAX_ROUNDS):
        timing = frames
        if registration.trusted and registration.residual_px > reg_options.timing_px:
            timing = [replace(f, luma=warp_luma(f.luma, registration.matrix)) for f in frames]
        estimate = estimate_clock(source, timing, scale, num_bins, options)
        again = estimate_registration(source, _mapped(frames, estimate), hw, reg_options)
        settled = (registration.trusted and again.trusted
                   and corner_error(np.linalg.inv(registration.matrix) @ again.matrix, hw) <= reg_options.aligned_px)
        registration = again
        if estimate.offset_s is None or (estimate.verdict == FIXED and settled):
            break
    if estimate.verdict != FIXED:            # the clock stays as recorded: so do the registration's windows
        registration = estimate_registration(source, frames, hw, reg_options)
    return estimate, registration


SHIFT_CANDIDATES = 13     # offsets tried across the clock scan's reach when the frames' registrations disagree
SHIFT_FRAMES = 8          # frames (evenly spaced) each offset is tried on: the search only picks the offset


def _registration_by_shift(source: SpikeSource, frames: list[FrameWindow], hw: tuple[int, int],
                           options: ClockFixOptions) -> SequenceEstimate | None:
    """A clock error of many ticks moves each frame's picture by its own motion, so the frames' registrations
    disagree. A misregistration is the same in every frame, so the registration is sought on windows shifted by
    ``SHIFT_CANDIDATES`` offsets across the clock scan's reach: the trusted estimate whose frames agree best
    (least spread), or None. Only the registration is kept; the clock is then estimated on its own."""
    rate = source.meta.rate_hz
    reach = scan_reach(frames, rate, options)
    search = replace(options.audit.registration, max_frames=min(SHIFT_FRAMES, options.audit.registration.max_frames))
    best = None
    for d in np.linspace(-reach, reach, SHIFT_CANDIDATES):
        moved = [replace(f, t0=f.t0 + d / rate, t1=f.t1 + d / rate) for f in frames]
        found = estimate_registration(source, moved, hw, search)
        if found.trusted and (best is None or found.spread_px < best.spread_px):
            best = found
    return best


def current_registration(seq: SequenceInfo) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(H, A, from_fix)``: the spike -> raw RGB homography a sequence was stored with, the map from its stored
    RGB pixels to spike pixels, and whether ``H`` came from an earlier ``audit --fix``."""
    reg = seq.registration
    if reg is not None:
        return reg.matrix, store_to_spike(reg.scale, reg.spike_crop), reg.source == "audit_fix"
    h = scale_homography(*seq.scale)          # stored pixel for pixel: the integer scale
    return h, np.linalg.inv(h), False


def registration_record(split: str, name: str, seq: SequenceInfo, estimate: SequenceEstimate,
                        options: RegistrationOptions) -> RegistrationFix:
    """The ``RegistrationFix`` of one estimate: ``fixed`` with the refined homography (the stored one composed
    with the measured residual), ``aligned`` below ``aligned_px``, or ``unfixed``; the latter two keep an earlier
    fix's homography."""
    h, a, from_fix = current_registration(seq)
    keep = flat(h) if from_fix else None
    given = seq.spike_meta.rgb_homography
    common = dict(split=split, seq=name, given_homography=None if given is None else flat(np.asarray(given)),
                  raw_size=seq.registration.raw_size if seq.registration is not None else (seq.H, seq.W),
                  residual_px=estimate.residual_px, spread_px=estimate.spread_px,
                  frames_total=len(estimate.frames), frames_used=estimate.used)
    if not estimate.trusted:
        return RegistrationFix(verdict=REG_UNFIXED, reason_code=estimate.reason_code, reason=estimate.reason,
                               homography=keep, **common)
    if estimate.residual_px <= options.aligned_px:
        return RegistrationFix(verdict=REG_ALIGNED, reason_code=None, reason=None, homography=keep, **common)
    refined = h @ a @ estimate.matrix @ np.linalg.inv(a)
    return RegistrationFix(verdict=REG_FIXED, reason_code=None, reason=None, homography=flat(refined), **common)


def _store_info_for_fix(root: Path) -> StoreInfo:
    """``dataset.json``, or the copy an interrupted fix moved aside (a rerun completes that fix)."""
    pending = root / PENDING_FIX
    for stale in remove_stale_temps(pending):
        log.info("removed %s, left by an interrupted audit --fix", stale)
    if (root / DATASET_FILENAME).is_file():
        return read_store_info(root)
    if pending.is_file():
        try:
            return StoreInfo.model_validate_json(pending.read_text())
        except ValueError as err:
            raise InputError(pending, f"unreadable ({str(err)[:200]})",
                             fix="re-run `spikeprep ingest RAW --out DATA_ROOT`") from None
    return read_store_info(root)      # raises the store's own "incomplete" error


def sequence_frames(root: Path, rows: list[ManifestRow], expected: tuple[int, int]) -> list[FrameWindow]:
    """The frames of one sequence the estimate can use: a readable blur PNG of the RGB grid ``expected`` and
    a non-empty recorded window."""
    frames = []
    for r in rows:
        if not r.t1_recorded > r.t0_recorded:
            continue
        try:
            luma = blur_luma(root / r.blur)
        except InputError:
            continue
        if luma.shape == expected:
            frames.append(FrameWindow(r.frame_idx, r.t0_recorded, r.t1_recorded, luma))
    return frames


def fix_store(root: Path, options: ClockFixOptions = ClockFixOptions(), progress: bool = True,
              workers: int = 1) -> FixReport:
    """Estimate every sequence's clock map, write its record, rebuild the store with the fixes (see the
    module docstring); the raw tree is only read."""
    root = Path(root)
    started = time.perf_counter()
    if not root.is_dir():
        raise InputError(root, "not a folder", fix="give the DATA_ROOT that `spikeprep ingest` wrote")
    if not (root / DATASET_FILENAME).is_file() and not (root / PENDING_FIX).is_file():
        read_store_info(root)          # not a store (or an interrupted ingest): its error, before any file is made
    with store_lock(root, "audit --fix"):
        info = _store_info_for_fix(root)
        resumed = (root / PENDING_FIX).is_file()     # records complete, the rebuild interrupted: finish it
        rows = read_manifest_rows(root)
        by_seq: dict[str, list[ManifestRow]] = {}
        for r in rows:
            by_seq.setdefault(f"{r.split}/{r.seq}", []).append(r)
        records, registrations, scanned = [], [], 0
        reg_options = options.audit.registration
        for key in tqdm(sorted(info.sequences), desc="registration and clock fix", unit="seq",
                        disable=not progress):
            split, name = key.split("/", 1)
            for path in (clock_fix_path(root, split, name), registration_fix_path(root, split, name)):
                for stale in remove_stale_temps(path):        # a killed fix's half-written record
                    log.info("removed %s, left by an interrupted audit --fix", stale)
            if resumed:
                record, registration = _written_records(root, split, name)
                records.append(record)
                registrations.append(registration)
                continue
            seq = info.sequences[key]
            seq_rows = sorted(by_seq.get(key, []), key=lambda r: r.frame_idx)
            frames = sequence_frames(root, seq_rows, (seq.H, seq.W))
            scanned += len(frames)
            source = stored_source(seq)
            hw = (seq.H, seq.W)
            estimate, second = estimate_both(source, frames, hw, seq.scale, info.K, options)
            digest = recorded_digest([r.frame_idx for r in seq_rows], [r.t0_recorded for r in seq_rows],
                                     [r.t1_recorded for r in seq_rows])
            record = clock_record(split, name, estimate, seq.rate_hz, digest)
            registration = registration_record(split, name, seq, second, reg_options)
            write_clock_fix(clock_fix_path(root, split, name), record)
            write_registration_fix(registration_fix_path(root, split, name), registration)
            records.append(record)
            registrations.append(registration)

        raw, ingest_options, specs = store_specs(info)
        for spec in specs:
            check_replaceable(root / spec.split / spec.name)
        pending = root / PENDING_FIX
        if (root / DATASET_FILENAME).is_file():      # the store is incomplete until the rebuild ends
            pending.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(pending, info.to_json())
            (root / DATASET_FILENAME).unlink()
        result = build_store(raw, root, specs, ingest_options, workers=workers, log_dir=None, progress=progress)
    return FixReport(records, result.clock_notes + result.registration_notes, time.perf_counter() - started,
                     scanned, registrations)


def _written_records(root: Path, split: str, name: str) -> tuple[ClockFix, RegistrationFix]:
    """The records an interrupted ``audit --fix`` wrote for ``split/name`` before it moved dataset.json aside."""
    paths = clock_fix_path(root, split, name), registration_fix_path(root, split, name)
    try:
        return read_clock_fix(paths[0]), read_registration_fix(paths[1])
    except ValueError as err:
        raise InputError(root / PENDING_FIX, f"an interrupted audit --fix left no readable record of {split}/{name} "
                         f"({str(err)[:200]})", fix="re-run `spikeprep ingest RAW --out DATA_ROOT`, then "
                         "`spikeprep audit DATA_ROOT --fix`") from None
