"""Exposure windows and the spike ticks inside them (DESIGN section 3).

A blur frame's exposure window is the half-open interval ``[t0, t1)`` in seconds on the spike camera's
clock. Spike frame ``j`` of a binary stream whose frame 0 is at ``start_s`` has time
``start_s + j / rate_hz`` (``SpikeMeta.frame_time``) and belongs to the window iff ``t0 <= t_j < t1``. Nothing here interpolates or
rescales time. ``tick_range`` gives the exact index range by evaluating that same float expression at
the boundary, so it agrees with a brute-force scan of every frame time.

Frame-based sources (``.dat``, binary arrays) decide membership and voxel bins on the tick axis instead
(DESIGN section 3): ``tick_position`` turns a window edge into the exact rational tick position it stands
for, ``tick_span`` gives the frames ``u0 <= j < u1``, and ``spikeprep.voxelizer.tick_bin_index`` bins
them with the reference formula evaluated exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from schemas.atomic import atomic_write_text
from schemas.manifest import Drop, DropCode
from spikeprep.errors import InputError

EXPOSURE_COLUMNS = ("frame_idx", "t0", "t1")                  # each window's start and end
START_EXPOSURE_COLUMNS = ("frame_idx", "t_start", "exposure_s")  # start times and per-frame exposure times
START_ONLY_COLUMNS = ("frame_idx", "t_start")                    # start times; one exposure time given apart
EXPOSURE_FORMS = (EXPOSURE_COLUMNS, START_EXPOSURE_COLUMNS, START_ONLY_COLUMNS)   # read_exposure_csv reads these


def _first_at_or_after(bound: float, start_s: float, rate_hz: float, n_frames: int) -> int:
    """Smallest j in [0, n_frames] with start_s + j / rate_hz >= bound (n_frames if none).

    Frame times are non-decreasing in j (correctly rounded division and addition are monotone), so a
    guess from the real-number solution is corrected by stepping while the float comparison disagrees.
    """
    guess = (bound - start_s) * rate_hz
    if not math.isfinite(guess):
        return 0 if guess < 0 else n_frames
    j = min(max(math.ceil(guess), 0), n_frames)
    while j > 0 and start_s + (j - 1) / rate_hz >= bound:
        j -= 1
    while j < n_frames and start_s + j / rate_hz < bound:
        j += 1
    return j


def tick_range(t0: float, t1: float, start_s: float, rate_hz: float, n_frames: int) -> tuple[int, int]:
    """Index range ``[lo, hi)`` of the frames of a binary stream that fall inside ``[t0, t1)``.

    ``n_frames`` is the stream length; the range is clipped to ``[0, n_frames]`` and empty (lo == hi)
    when the window misses the stream. Raises ``ValueError`` when ``t1 <= t0`` or a bound is not finite.
    """
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"window bounds must be finite, got [{t0!r}, {t1!r})")
    if not t1 > t0:
        raise ValueError(f"window must have t1 > t0, got [{t0!r}, {t1!r})")
    if rate_hz <= 0 or n_frames < 0:
        raise ValueError(f"rate_hz must be > 0 and n_frames >= 0, got {rate_hz!r}, {n_frames!r}")
    lo = _first_at_or_after(t0, start_s, rate_hz, n_frames)
    hi = _first_at_or_after(t1, start_s, rate_hz, n_frames)
    return lo, max(lo, hi)


#: Largest denominator (in ticks) a window edge is read as: integer ticks (frame times), half ticks (the
#: presets), microseconds at 20 or 40 kHz (1/50, 1/25 tick). Distinct such positions lie >= 1e-4 tick apart.
#: Shortest accepted window (seconds). The reference voxelizer divides by ``max(t1 - t0, 1e-9)``; rejecting
#: shorter windows keeps every accepted window's bins even *and* equal to the reference.
MIN_WINDOW_S = 1e-9
TICK_MAX_DENOMINATOR = 100


def tick_position(t: float, start_s: float, rate_hz: float) -> Fraction:
    """The tick position ``(t - start_s) * rate_hz`` of a window edge ``t``, as an exact rational.

    Float seconds carry rounding noise: ``3 / 20000`` is not exactly three ticks. When the exact value of
    the floats lies within that noise (a few ulps of ``t`` and ``start_s``, in ticks) of a rational with
    denominator at most ``TICK_MAX_DENOMINATOR``, that rational is what the edge stands for and is
    returned; otherwise the exact value of the floats is returned. So an edge written as
    ``start_s + j / rate_hz`` (however computed) is exactly tick ``j``, and ``j - 0.5`` stays a half tick.
    """
    if not (math.isfinite(t) and math.isfinite(start_s)) or not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"tick position needs finite t, start_s and rate_hz > 0, got {t!r}, {start_s!r}, "
                         f"{rate_hz!r}")
    exact = (Fraction(t) - Fraction(start_s)) * Fraction(rate_hz)
    tol = Fraction(8 * rate_hz * (math.ulp(t) + math.ulp(start_s)))
    near = exact.limit_denominator(TICK_MAX_DENOMINATOR)
    # Only snap when the noise is far below the spacing of the candidates (1 / 100**2 tick).
    if tol < Fraction(1, 4 * TICK_MAX_DENOMINATOR ** 2) and abs(near - exact) <= tol:
        return near
    return exact


def tick_span(u0: Fraction, u1: Fraction, n_frames: int) -> tuple[int, int]:
    """Frames ``[lo, hi)`` with ``u0 <= j < u1`` (tick positions from ``tick_position``), clipped to
    ``[0, n_frames]``; empty when the window misses the stream. ``ValueError`` unless ``u1 > u0``."""
    if not u1 > u0:
        raise ValueError(f"window must have u1 > u0 in ticks, got [{u0}, {u1})")
    lo = min(max(math.ceil(u0), 0), n_frames)
    hi = min(max(math.ceil(u1), 0), n_frames)
    return lo, max(lo, hi)


@dataclass(frozen=True)
class ExposureTable:
    """The exposure windows of one sequence: ``frame_idx`` int64 [N], ``t0``, ``t1`` float64 [N]."""

    path: Path
    frame_idx: np.ndarray
    t0: np.ndarray
    t1: np.ndarray

    def __len__(self) -> int:
        return int(self.frame_idx.shape[0])

    def problems(self) -> dict[int, Drop]:
        """Per-frame window sanity (DESIGN section 6): {frame_idx: why it is dropped} for every bad window.

        Checks: t0 < t1, a finite duration of at least ``MIN_WINDOW_S``; in frame order, a window neither
        starts before nor overlaps the last good window before it.
        """
        bad: dict[int, Drop] = {}
        prev: tuple[float, float] | None = None  # the last good window; a bad one is no reference
        for f, a, b in zip(self.frame_idx.tolist(), self.t0.tolist(), self.t1.tolist()):
            if not b > a:
                bad[f] = Drop(DropCode.WINDOW_REVERSED, f"empty or reversed exposure window: t1 {b!r} <= t0 {a!r}")
            elif not math.isfinite(b - a):
                bad[f] = Drop(DropCode.WINDOW_TOO_LONG,
                              f"exposure window [{a!r}, {b!r}) is too long: t1 - t0 overflows float64")
            elif b - a < MIN_WINDOW_S:
                bad[f] = Drop(DropCode.WINDOW_TOO_SHORT, f"exposure window [{a!r}, {b!r}) lasts {b - a:.3g} s, "
                              f"shorter than {MIN_WINDOW_S:g} s (below any exposure a camera makes; check the units "
                              "of exposure.csv: seconds)")
            elif prev is not None and a < prev[0]:
                bad[f] = Drop(DropCode.WINDOW_OUT_OF_ORDER,
                              f"windows out of order: t0 {a!r} is before the previous frame's t0 {prev[0]!r}")
            elif prev is not None and a < prev[1]:
                bad[f] = Drop(DropCode.WINDOW_OVERLAP, f"window overlaps the previous frame's window (t0 {a!r} < "
                              f"previous t1 {prev[1]!r})")
            else:
                prev = (a, b)
        return bad


MAX_FRAME_IDX = 10**12   # far beyond any video; keeps the manifest's int64 columns and file names safe


def read_exposure_csv(path: str | Path, exposure_s: float | None = None) -> ExposureTable:
    """Read ``exposure.csv``: one row per blur frame, in one of the forms of ``EXPOSURE_FORMS`` (header
    line first, columns in any order):

    - ``frame_idx,t0,t1``: each window's start and end;
    - ``frame_idx,t_start,exposure_s``: each frame's start time and its own exposure time (a rig's frame log;
      auto-exposure changes it per frame);
    - ``frame_idx,t_start`` with ``exposure_s`` given (``spikeprep ingest --exposure-s``): one exposure time
      for every frame (a camera set to a fixed shutter writes start timestamps only).

    All times in seconds on the spike camera's clock; ``t1 = t_start + exposure_s`` (float64). Structural
    problems (missing file, unknown header, non-numeric or non-finite values, a non-positive exposure,
    duplicate or negative frame indices, an option the table does not need or lacks) raise ``InputError``
    naming the file; per-frame window problems are left to ``ExposureTable.problems`` so that ingest can drop
    those frames with a logged reason. Times are parsed with Python's float(), so values written with repr()
    round-trip exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "exposure file not found",
                         fix="write exposure.csv with columns frame_idx,t0,t1 (or frame_idx,t_start,exposure_s), "
                         "one row per blur frame")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()   # -sig: a spreadsheet's byte-order mark
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"unreadable ({err})", fix="rewrite it as UTF-8 CSV") from None
    lines = [ln for ln in lines if ln.strip()]
    header = tuple(c.strip() for c in lines[0].split(",")) if lines else ()
    form = next((f for f in EXPOSURE_FORMS if len(header) == len(f) and set(header) == set(f)), None)
    if form is None:
        raise InputError(path, f"header is {','.join(header) or '(empty file)'}, expected one of "
                         f"{' | '.join(','.join(f) for f in EXPOSURE_FORMS)}",
                         fix="put one of these header lines first (any column order), then one row per blur frame "
                         "(times in seconds)")
    if form == START_ONLY_COLUMNS and exposure_s is None:
        raise InputError(path, "the table gives frame start times only (frame_idx,t_start) and no exposure time",
                         fix="pass the camera's exposure time: `spikeprep ingest ... --exposure-s SECONDS`, or add "
                         "an exposure_s column")
    if form != START_ONLY_COLUMNS and exposure_s is not None:
        raise InputError(path, f"--exposure-s {exposure_s!r} was given but the table has its own windows "
                         f"({','.join(header)})", fix="drop --exposure-s, or the table's end/exposure column")
    if exposure_s is not None and not (math.isfinite(exposure_s) and exposure_s > 0):
        raise InputError(path, f"exposure time {exposure_s!r} s is not a positive number",
                         fix="pass --exposure-s in seconds, e.g. 0.002 for a 2 ms shutter")
    where = {name: header.index(name) for name in form}
    idx, t0, t1 = [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(header):
            raise InputError(path, f"line {lineno} has {len(cells)} fields, expected {len(header)}",
                             fix=f"each row is {','.join(header)}")
        try:
            f = int(cells[where["frame_idx"]])
            values = {name: float(cells[i]) for name, i in where.items() if name != "frame_idx"}
        except ValueError:
            raise InputError(path, f"line {lineno} is not numbers: {line!r}",
                             fix="frame_idx is an integer, the times are seconds") from None
        if f < 0 or not all(math.isfinite(v) for v in values.values()):
            raise InputError(path, f"line {lineno} has a negative index or a non-finite time: {line!r}",
                             fix="frame_idx >= 0 and finite times")
        if f > MAX_FRAME_IDX:
            raise InputError(path, f"line {lineno}: frame_idx {f} is larger than {MAX_FRAME_IDX}",
                             fix="number the blur frames from 0")
        if form == EXPOSURE_COLUMNS:
            a, b = values["t0"], values["t1"]
        else:
            a, length = values["t_start"], values.get("exposure_s", exposure_s)
            if not length > 0:
                raise InputError(path, f"line {lineno}: exposure_s {length!r} is not positive",
                                 fix="exposure_s is the frame's exposure time in seconds (> 0)")
            b = a + length
            if not math.isfinite(b):
                raise InputError(path, f"line {lineno}: t_start + exposure_s overflows float64: {line!r}",
                                 fix="times are seconds on the spike camera's clock")
        idx.append(f), t0.append(a), t1.append(b)
    if not idx:
        raise InputError(path, "no rows after the header", fix="one row per blur frame")
    frame_idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(frame_idx, kind="stable")
    if np.any(np.diff(frame_idx[order]) == 0):
        dup = int(frame_idx[order][np.argmax(np.diff(frame_idx[order]) == 0)])
        raise InputError(path, f"frame_idx {dup} appears twice", fix="one row per blur frame")
    return ExposureTable(path, frame_idx[order], np.asarray(t0, np.float64)[order],
                         np.asarray(t1, np.float64)[order])


def write_exposure_csv(path: str | Path, frame_idx, t0, t1) -> Path:
    """Write ``exposure.csv`` (atomically) with times in repr() form, so reading gives back the same floats."""
    rows = ["frame_idx,t0,t1"]
    rows += [f"{int(f)},{float(a)!r},{float(b)!r}" for f, a, b in zip(frame_idx, t0, t1)]
    return atomic_write_text(Path(path), "\n".join(rows) + "\n")
