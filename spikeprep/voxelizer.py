"""Spike voxelizer: spikes inside an exposure window -> counts ``[K, H, W]`` (DESIGN section 3).

Time is float64 seconds on the spike camera's clock. The exposure window ``[t0, t1)`` is half-open and
split evenly into ``K`` bins; a spike at time ``t`` with ``t0 <= t < t1`` lands in bin::

    k = floor((t - t0) / (t1 - t0) * K), clipped to [0, K - 1]

evaluated in float64 in exactly that order (no reciprocal, no fused multiply-add, no fastmath), so the
result is bit-identical to the original design document's reference ``voxelize`` (section 3.3) on the
spikes selected inside the window. Unlike that reference, spikes outside the window are *not counted*
(the reference clips them into the edge bins).

Three inputs, one output contract:

* ``voxelize_events``  event lists ``(t, y, x)``;
* ``voxelize_packed``  packed ``.dat`` frames ``[N, H*W/8]`` uint8, straight from the packed bytes;
* ``voxelize_binary``  unpacked binary frames ``[N, H, W]`` bool/uint8.

Frame-based sources (a ``.dat`` stream, a binary array) have a better clock than float seconds: frame
``j`` is tick ``j``. ``voxelize_packed_ticks`` and ``voxelize_binary_ticks`` take consecutive frames and
the window's edges as exact tick positions ``u0, u1`` (``spikeprep.windows.tick_position``) and bin
frame ``j`` by ``tick_bin_index``: the same formula evaluated in exact rational arithmetic, so a window
whose edges sit on frame times gets equal bins. ``SpikeSource`` uses these for ``.dat`` and binary
arrays; event lists keep the float formula.

Output: counts ``[K, H, W]`` (bin, row, column), dtype uint32, C-contiguous, a new array; inputs are
never modified; no spikes in the window -> all zeros of the same shape.

The compiled kernels use ``numba.njit(cache=True)`` (compiled once, cached on disk next to this
module) and never ``parallel=True``: no threads are started, so DataLoader / process-pool workers that
fork after import (or after the kernels ran in the parent) are safe.
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numba
import numpy as np

from schemas.config import DEFAULT_NUM_BINS
from spikeprep.windows import MIN_WINDOW_S, tick_span

__all__ = [
    "DEFAULT_NUM_BINS",
    "MIN_WINDOW_S",
    "bin_index",
    "tick_bin_index",
    "voxelize_events",
    "voxelize_packed",
    "voxelize_binary",
    "voxelize_packed_ticks",
    "voxelize_binary_ticks",
]


# Events path tuning: runs of equal t (one spike frame turned into events) shorter than _MIN_RUN are
# handled event by event, for at least _SLOW_STRETCH events before looking for a long run again.
_MIN_RUN = 32
_SLOW_STRETCH = 256
_RUN_CHUNK = 64
# Packed path: a uint64 accumulator holds 8 one-byte counters; flush before any can pass 255.
_MAX_ACC_FRAMES = 255


def _bit_lut() -> np.ndarray:
    """256-entry table: byte value -> uint64 whose memory byte j is bit j (LSB first) of the byte."""
    bits = ((np.arange(256, dtype=np.uint16)[:, None] >> np.arange(8, dtype=np.uint16)[None, :]) & 1)
    # A [256, 8] uint8 table viewed as native uint64: memory byte j of entry v is bit j of v, on any
    # endianness, so viewing the accumulator as uint8 yields the per-pixel counters in pixel order.
    return np.ascontiguousarray(bits.astype(np.uint8)).view(np.uint64).reshape(256)


_LUT = _bit_lut()
_LUT.flags.writeable = False


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------

def _as_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_window(t0, t1) -> tuple[float, float, float]:
    """Return ``(t0, t1, t1 - t0)`` as Python floats (float64); raise ValueError on a bad window."""
    for name, v in (("t0", t0), ("t1", t1)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name} must be a real number of seconds, got {v!r}")
    t0, t1 = float(t0), float(t1)
    if not (np.isfinite(t0) and np.isfinite(t1)):
        raise ValueError(f"exposure window must be finite, got [{t0!r}, {t1!r})")
    if not t1 > t0:
        raise ValueError(f"exposure window [t0, t1) needs t1 > t0, got t0={t0!r}, t1={t1!r}")
    dur = t1 - t0
    if not np.isfinite(dur):
        raise ValueError(f"exposure window [{t0!r}, {t1!r}) is too long: t1 - t0 overflows float64")
    if dur < MIN_WINDOW_S:
        raise ValueError(
            f"exposure window [{t0!r}, {t1!r}) lasts {dur!r} s, shorter than {MIN_WINDOW_S} s; "
            "such windows cannot be split into bins like the reference voxelizer does"
        )
    return t0, t1, dur


def _check_times(t, name: str = "t") -> np.ndarray:
    """1-D float array of seconds -> C-contiguous float64 (no copy when it already is one)."""
    arr = np.asarray(t)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of float64 seconds, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{name} must hold float seconds (float64), got dtype {arr.dtype}; "
            f"convert with {name}.astype(np.float64) after scaling ticks to seconds"
        )
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_non_decreasing(t: np.ndarray, name: str = "t") -> None:
    j = _first_unsorted(t)  # O(N), no temporary array
    if j < 0:
        return
    if np.isnan(t[j]) or (j > 0 and np.isnan(t[j - 1])):
        bad = j if np.isnan(t[j]) else j - 1
        raise ValueError(f"{name}[{bad}] is NaN; frame times must be non-decreasing float64 seconds")
    raise ValueError(
        f"{name} must be non-decreasing (one time per spike frame, in file order), but "
        f"{name}[{j}] = {float(t[j])!r} < {name}[{j - 1}] = {float(t[j - 1])!r}"
    )


def _window_frames(t: np.ndarray, t0: float, t1: float) -> tuple[int, int]:
    """Frames ``[lo, hi)`` of a non-decreasing ``t`` with ``t0 <= t < t1``."""
    lo = int(np.searchsorted(t, t0, side="left"))
    hi = int(np.searchsorted(t, t1, side="left"))
    return lo, max(lo, hi)


# --------------------------------------------------------------------------------------------------
# compiled kernels (no fastmath, no parallel)
# --------------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _first_unsorted(t):
    """First ``j`` with ``not t[j - 1] <= t[j]`` (a decrease or a NaN), ``0`` if ``t[0]`` is NaN, else -1."""
    n = t.shape[0]
    if n > 0 and t[0] != t[0]:
        return 0
    for j in range(1, n):
        if not t[j - 1] <= t[j]:
            return j
    return -1


@numba.njit(cache=True, inline="always")
def _bin_of(ti, t0, dur, kf, k_last):
    # exactly floor((t - t0) / (t1 - t0) * K); t >= t0 here so the result is >= 0
    b = np.int64(np.floor((ti - t0) / dur * kf))
    return k_last if b > k_last else b


@numba.njit(cache=True)
def _events_slow(t, y, x, s, e, t0, t1, dur, kf, k_last, height, width, flat):
    """Event by event over ``[s, e)``. Returns -1, the index of a bad y/x, or -2 - index of a NaN t."""
    uh = np.uint64(height)
    uw = np.uint64(width)
    hw = np.uint64(height * width)
    for i in range(s, e):
        uy = np.uint64(y[i])
        ux = np.uint64(x[i])
        if (uy >= uh) | (ux >= uw):
            return i
        ti = t[i]
        if (ti >= t0) & (ti < t1):
            b = np.uint64(_bin_of(ti, t0, dur, kf, k_last))
            flat[b * hw + uy * uw + ux] += np.uint32(1)
        elif ti != ti:
            return -2 - i
    return -1


@numba.njit(cache=True)
def _run_end(t, i, n, tb, chunk):
    """First index ``j > i`` with ``t[j] != tb`` (or ``n``); whole chunks are compared branch-free."""
    j = i + 1
    while j + chunk <= n:
        blk = t[j:j + chunk]
        d = 0
        for k in range(chunk):
            d |= np.int64(blk[k] != tb)
        if d != 0:
            break
        j += chunk
    while j < n and t[j] == tb:
        j += 1
    return j


@numba.njit(cache=True)
def _events_kernel(t, y, x, t0, t1, num_bins, height, width, out, min_run, slow_stretch, chunk):
    """Scatter events into ``out`` [K, H, W]. ``y``/``x`` are unsigned (negatives arrive wrapped).

    Spike-frame-derived events come in runs of equal ``t``: such a run has one bin, so it is checked
    with a vectorised max and scattered with no per-event branch. Returns as ``_events_slow``.
    """
    dur = t1 - t0
    kf = np.float64(num_bins)
    k_last = num_bins - 1
    flat = out.reshape(-1)
    hw = np.uint64(height * width)
    uw = np.uint64(width)
    n = t.shape[0]
    i = 0
    while i < n:
        tb = t[i]
        j = _run_end(t, i, n, tb, chunk)
        if j - i < min_run:
            e = max(j, min(n, i + slow_stretch))
            r = _events_slow(t, y, x, i, e, t0, t1, dur, kf, k_last, height, width, flat)
            if r != -1:
                return r
            i = e
            continue
        yb = y[i:j]
        xb = x[i:j]
        ymax = yb[0]
        xmax = xb[0]
        for k in range(yb.shape[0]):
            ymax = max(ymax, yb[k])
            xmax = max(xmax, xb[k])
        if (np.uint64(ymax) >= np.uint64(height)) | (np.uint64(xmax) >= uw):
            # locate the first bad index (the output is discarded by the caller)
            return _events_slow(t, y, x, i, j, t0, t1, dur, kf, k_last, height, width, flat)
        if (tb >= t0) & (tb < t1):
            base = np.uint64(_bin_of(tb, t0, dur, kf, k_last)) * hw
            for k in range(yb.shape[0]):
                flat[base + np.uint64(yb[k]) * uw + np.uint64(xb[k])] += np.uint32(1)
        i = j
    return -1


@numba.njit(cache=True)
def _flush(acc, out, b, height, width, flipud):
    """Add the 8-bit counters of ``acc`` (pixel order of the file) into ``out[b]``; zero ``acc``."""
    acc8 = acc.view(np.uint8)
    for r in range(height):
        orow = height - 1 - r if flipud else r
        dst = out[b, orow]
        src = acc8[r * width:(r + 1) * width]
        for c in range(width):
            dst[c] += np.uint32(src[c])
    acc[:] = 0


@numba.njit(cache=True)
def _packed_kernel(packed, bins, height, width, flipud, lut, out, max_acc):
    """Count packed frames ``[M, H*W/8]`` into ``out[bins[f]]`` (``bins`` non-decreasing, in range).

    One uint64 per packed byte accumulates ``lut[byte]`` (8 one-byte counters, one per pixel); it is
    flushed into the uint32 counts when the bin changes and before any counter could pass 255.
    Frames of the same bin are added four at a time (at most 4 per counter per add, no carries).
    """
    m = packed.shape[0]
    nb = packed.shape[1]
    acc = np.zeros(nb, np.uint64)
    cur = -1
    nacc = 0
    f = 0
    while f < m:
        b = bins[f]
        if b != cur or nacc >= max_acc:
            if nacc > 0:
                _flush(acc, out, cur, height, width, flipud)
                nacc = 0
            cur = b
        if f + 4 <= m and nacc + 4 <= max_acc and bins[f + 3] == b:
            # bins is non-decreasing, so frames f..f+3 all fall in bin b
            r0 = packed[f]
            r1 = packed[f + 1]
            r2 = packed[f + 2]
            r3 = packed[f + 3]
            for i in range(nb):
                acc[i] += (lut[r0[i]] + lut[r1[i]]) + (lut[r2[i]] + lut[r3[i]])
            nacc += 4
            f += 4
        else:
            r0 = packed[f]
            for i in range(nb):
                acc[i] += lut[r0[i]]
            nacc += 1
            f += 1
    if nacc > 0:
        _flush(acc, out, cur, height, width, flipud)


@numba.njit(cache=True)
def _binary_kernel(frames, bins, out):
    """Add each frame ``[H, W]`` (uint8 0/1) with ``bins[f] >= 0`` into ``out[bins[f]]``.

    Returns -1 or the index of a frame holding a value other than 0/1.
    """
    height = frames.shape[1]
    width = frames.shape[2]
    for f in range(frames.shape[0]):
        b = bins[f]
        if b >= 0:
            seen = np.uint8(0)
            for r in range(height):
                src = frames[f, r]
                dst = out[b, r]
                for c in range(width):
                    v = src[c]
                    seen |= v
                    dst[c] += np.uint32(v)
            if seen > 1:
                return f
    return -1


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------

def bin_index(t, t0: float, t1: float, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Bin of each time, the reference expression, vectorised.

    Parameters
    ----------
    t : array_like of float, any shape
        Times in float64 seconds.
    t0, t1 : float
        Exposure window ``[t0, t1)``; ``t1 - t0`` must be at least ``MIN_WINDOW_S``.
    num_bins : int
        ``K >= 1``.

    Returns
    -------
    numpy.ndarray of int64, same shape as ``t``
        ``clip(floor((t - t0) / (t1 - t0) * K), 0, K - 1)``. Times outside the window are clipped into
        the edge bins here (as in the reference); select ``t0 <= t < t1`` first to drop them.
        NaN times are an error.
    """
    t0, t1, dur = _check_window(t0, t1)
    k = _as_int(num_bins, "num_bins")
    arr = np.asarray(t)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"t must hold float seconds (float64), got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError(f"t[{int(np.flatnonzero(np.isnan(arr.ravel()))[0])}] is NaN")
    return _float_bins(arr, t0, dur, k)


def _float_bins(t: np.ndarray, t0: float, dur: float, k: int) -> np.ndarray:
    """``clip(floor((t - t0) / dur * K), 0, K - 1)`` as int64, in float64 in exactly the reference's order.

    The compiled event kernels evaluate the same expression (``_bin_of``).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        b = np.floor((t - t0) / dur * k)
    return np.clip(b, 0, k - 1).astype(np.int64)


def tick_bin_index(ticks, u0, u1, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Bin of each spike frame of a frame-based source, the reference formula evaluated exactly.

    Parameters
    ----------
    ticks : array_like of int, any shape
        Frame indices ``j`` on the stream's tick axis (frame ``j`` is at ``start_s + j / rate_hz``).
    u0, u1 : int or fractions.Fraction
        The window's edges as tick positions (``spikeprep.windows.tick_position``), ``u1 > u0``.
    num_bins : int
        ``K >= 1``.

    Returns
    -------
    numpy.ndarray of int64, same shape as ``ticks``
        ``clip(floor((j - u0) / (u1 - u0) * K), 0, K - 1)`` in exact rational arithmetic. That is the
        reference's ``floor((t - t0) / (t1 - t0) * K)`` at the exact times ``t = s + j / r``,
        ``t0 = s + u0 / r``, ``t1 = s + u1 / r``; a window of ``n = m * K`` frames on frame times gets
        ``m`` frames in every bin (the float expression may put ``m - 1`` to ``m + 1`` there).
    """
    k = _as_int(num_bins, "num_bins")
    u0, u1 = Fraction(u0), Fraction(u1)
    if not u1 > u0:
        raise ValueError(f"tick window [u0, u1) needs u1 > u0, got [{u0}, {u1})")
    j = np.asarray(ticks)
    if j.dtype.kind not in "iu":
        raise ValueError(f"ticks must be integer frame indices, got dtype {j.dtype}")
    # first tick of bin b (b = 1..K-1): the least integer j with (j - u0) * K >= b * (u1 - u0); clipped to
    # just outside the ticks given, which leaves every tick's bin as it is and keeps a huge window
    # (t1 = 1e300 s) inside int64
    lo, hi = (int(j.min()) - 1, int(j.max()) + 1) if j.size else (0, 0)
    firsts = np.array([min(max(math.ceil(u0 + b * (u1 - u0) / k), lo), hi) for b in range(1, k)], dtype=np.int64)
    return np.searchsorted(firsts, j.astype(np.int64, copy=False), side="right").astype(np.int64)


def _unsigned_view(a: np.ndarray) -> np.ndarray:
    """Reinterpret a signed integer array as unsigned of the same width (negatives become huge)."""
    return a.view(np.dtype(f"u{a.dtype.itemsize}")) if a.dtype.kind == "i" else a


def voxelize_events(t, y, x, t0: float, t1: float, height: int, width: int,
                    num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Voxelize an event list: events with ``t0 <= t < t1`` -> counts ``[K, H, W]``.

    Parameters
    ----------
    t : array_like, shape [N], float
        Event times, float64 seconds (float32 is widened exactly). Any order; all N events are read
        (O(N)), so for many windows over a long list pass each window's neighbourhood. Events from
        spike frames (runs of equal t) take a vectorised path. NaN is an error.
    y, x : array_like, shape [N], integer
        Row and column of each event, ``0 <= y < height``, ``0 <= x < width`` (checked for every
        event, also those outside the window). Any integer dtype; narrow ones (uint16) are fastest.
    t0, t1 : float
        Exposure window ``[t0, t1)`` in seconds, ``t1 - t0 >= MIN_WINDOW_S``.
    height, width : int
        Sensor size ``H, W``.
    num_bins : int
        Number of time bins ``K`` (default 32).

    Returns
    -------
    numpy.ndarray, shape [K, H, W] (bin, row, column), uint32, C-contiguous, new
        ``counts[k, y, x]`` = number of events at ``(y, x)`` with ``t0 <= t < t1`` in bin ``k``
        (see the module docstring). Events outside the window are not counted.

    Raises
    ------
    ValueError
        Bad shapes or dtypes, a bad window, NaN in ``t``, or ``y``/``x`` out of range (the message
        names the first bad index).
    """
    t0, t1, _ = _check_window(t0, t1)
    height = _as_int(height, "height")
    width = _as_int(width, "width")
    k = _as_int(num_bins, "num_bins")
    tt = _check_times(t)
    y0 = np.asarray(y)
    x0 = np.asarray(x)
    for name, a in (("y", y0), ("x", x0)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be a 1-D integer array, got shape {a.shape}")
        if a.dtype.kind not in "iu":
            raise ValueError(
                f"{name} must be an integer array (pixel index), got dtype {a.dtype}; "
                f"convert with np.asarray({name}).astype(np.int64) after checking it holds whole numbers"
            )
    n = tt.shape[0]
    if y0.shape[0] != n or x0.shape[0] != n:
        raise ValueError(f"t, y, x must have the same length, got {n}, {y0.shape[0]}, {x0.shape[0]}")
    out = np.zeros((k, height, width), dtype=np.uint32)
    if n == 0:
        return out
    yu = np.ascontiguousarray(_unsigned_view(y0))
    xu = np.ascontiguousarray(_unsigned_view(x0))
    if yu.dtype != xu.dtype:  # one compiled variant per dtype: widen the narrower one
        wide = yu.dtype if yu.dtype.itemsize >= xu.dtype.itemsize else xu.dtype
        yu, xu = yu.astype(wide, copy=False), xu.astype(wide, copy=False)
    r = _events_kernel(tt, yu, xu, t0, t1, k, height, width, out, _MIN_RUN, _SLOW_STRETCH, _RUN_CHUNK)
    if r == -1:
        return out
    if r <= -2:
        raise ValueError(f"t[{-2 - r}] is NaN; event times must be float64 seconds")
    raise ValueError(
        f"event {r} is outside the {height}x{width} sensor: y[{r}] = {y0[r]}, x[{r}] = {x0[r]} "
        f"(need 0 <= y < {height} and 0 <= x < {width})"
    )


def _check_packed(packed, height, width) -> tuple[np.ndarray, int, int]:
    """``(packed as a uint8 [N, H*W/8] array, height, width)``; ValueError on bad shapes or sizes."""
    height = _as_int(height, "height")
    width = _as_int(width, "width")
    if (height * width) % 8:
        raise ValueError(f"packed frames are whole bytes: height*width = {height * width} "
                         "is not a multiple of 8")
    nbytes = height * width // 8
    p = np.asarray(packed)  # a memmap becomes a plain ndarray view, no copy
    if p.dtype != np.uint8:
        raise ValueError(f"packed must be uint8 bytes, got dtype {p.dtype}")
    if p.ndim != 2 or p.shape[1] != nbytes:
        raise ValueError(
            f"packed must be [N, H*W/8] = [N, {nbytes}] for a {height}x{width} sensor, got shape "
            f"{p.shape}; reshape a flat buffer with packed.reshape(-1, {nbytes})"
        )
    return p, height, width


def _count_packed(p: np.ndarray, bins: np.ndarray, k: int, height: int, width: int,
                  flipud: bool) -> np.ndarray:
    """Counts ``[K, H, W]`` of packed frames ``p`` (all counted) in their non-decreasing ``bins``."""
    out = np.zeros((k, height, width), dtype=np.uint32)
    if p.shape[0]:
        sub = np.ascontiguousarray(p)  # copies only if the window's rows are strided
        _packed_kernel(sub, np.ascontiguousarray(bins, np.int64), height, width, bool(flipud), _LUT, out,
                       _MAX_ACC_FRAMES)
    return out


def _check_frames(frames) -> np.ndarray:
    """Binary frames ``[N, H, W]`` bool/uint8 -> a uint8 view; ValueError on bad shapes or dtypes."""
    fr = np.asarray(frames)
    if fr.ndim != 3:
        raise ValueError(f"frames must be [N, H, W], got shape {fr.shape}")
    if fr.dtype == np.bool_:
        fr = fr.view(np.uint8)
    elif fr.dtype != np.uint8:
        raise ValueError(f"frames must be bool or uint8 holding 0/1, got dtype {fr.dtype}")
    if fr.shape[1] == 0 or fr.shape[2] == 0:
        raise ValueError(f"frames must have a non-empty [H, W], got shape {fr.shape}")
    return fr


def _count_binary(fr: np.ndarray, bins: np.ndarray, k: int) -> np.ndarray:
    """Counts ``[K, H, W]`` of the frames with ``bins >= 0``; ValueError on a value other than 0/1."""
    out = np.zeros((k, fr.shape[1], fr.shape[2]), dtype=np.uint32)
    if fr.shape[0]:
        r = _binary_kernel(fr, np.ascontiguousarray(bins, np.int64), out)
        if r != -1:
            yy, xx = np.argwhere(fr[r] > 1)[0]
            raise ValueError(f"frames must hold 0/1 spikes, but frames[{r}, {yy}, {xx}] = {fr[r, yy, xx]}")
    return out


def voxelize_packed(packed, t, t0: float, t1: float, height: int, width: int,
                    num_bins: int = DEFAULT_NUM_BINS, flipud: bool = True) -> np.ndarray:
    """Voxelize packed ``.dat`` spike frames straight from their bytes (nothing is unpacked).

    Parameters
    ----------
    packed : array_like, shape [N, H*W/8], uint8
        Packed frames as stored in a ``.dat`` file (e.g. a ``np.memmap`` or a slice of one): frame ``j``
        is ``H*W`` bits, row-major, pixel ``i`` is bit ``i mod 8`` (LSB first) of byte ``i div 8``.
        Only the frames inside the window are read.
    t : array_like, shape [N], float
        Time of each frame, float64 seconds, non-decreasing (checked in O(N); NaN is an error). For
        many windows over a long stream, pass each window's neighbourhood (``packed[a:b], t[a:b]``).
    t0, t1 : float
        Exposure window ``[t0, t1)``; frames outside it are skipped.
    height, width : int
        Frame size ``H, W``; ``H*W`` must be a multiple of 8.
    num_bins : int
        Number of time bins ``K`` (default 32).
    flipud : bool
        ``True`` (default, the camera's layout): output row ``y`` comes from stored row ``H-1-y``.

    Returns
    -------
    numpy.ndarray, shape [K, H, W] (bin, row, column), uint32, C-contiguous, new
        Per-pixel spike counts of the frames with ``t0 <= t < t1``, binned like ``voxelize_events``
        (the float formula; ``voxelize_packed_ticks`` bins frames of a stream exactly on ticks).
    """
    t0, t1, dur = _check_window(t0, t1)
    k = _as_int(num_bins, "num_bins")
    p, height, width = _check_packed(packed, height, width)
    tt = _check_times(t)
    if tt.shape[0] != p.shape[0]:
        raise ValueError(f"t has {tt.shape[0]} times for {p.shape[0]} packed frames")
    _check_non_decreasing(tt)
    lo, hi = _window_frames(tt, t0, t1)
    return _count_packed(p[lo:hi], _float_bins(tt[lo:hi], t0, dur, k), k, height, width, flipud)


def voxelize_binary(frames, t, t0: float, t1: float, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Voxelize unpacked binary spike frames.

    Parameters
    ----------
    frames : array_like, shape [N, H, W] (frame, row, column), bool or uint8 holding 0/1
        Spike frames, already upright (no flip is applied). Frames inside the window are read and
        checked: a value other than 0/1 is an error.
    t : array_like, shape [N], float
        Time of each frame, float64 seconds, any order. NaN times are never inside a window.
    t0, t1 : float
        Exposure window ``[t0, t1)``; frames outside it are skipped.
    num_bins : int
        Number of time bins ``K`` (default 32).

    Returns
    -------
    numpy.ndarray, shape [K, H, W] (bin, row, column), uint32, C-contiguous, new
        Per-pixel spike counts of the frames with ``t0 <= t < t1``, binned like ``voxelize_events``
        (the float formula; ``voxelize_binary_ticks`` bins frames of a stream exactly on ticks).
    """
    t0, t1, dur = _check_window(t0, t1)
    k = _as_int(num_bins, "num_bins")
    fr = _check_frames(frames)
    tt = _check_times(t)
    if tt.shape[0] != fr.shape[0]:
        raise ValueError(f"t has {tt.shape[0]} times for {fr.shape[0]} frames")
    inside = (tt >= t0) & (tt < t1)  # NaN is never inside
    return _count_binary(fr, np.where(inside, _float_bins(tt, t0, dur, k), -1), k)


def _tick_window(first_tick, n: int, u0, u1, k: int) -> tuple[int, int, np.ndarray]:
    """Frames ``[a, b)`` (of ``n`` starting at tick ``first_tick``) with ``u0 <= j < u1``, and their bins."""
    if isinstance(first_tick, (bool, np.bool_)) or not isinstance(first_tick, numbers.Integral):
        raise ValueError(f"first_tick must be an integer frame index, got {first_tick!r}")
    first_tick = int(first_tick)
    u0, u1 = Fraction(u0), Fraction(u1)
    a, b = tick_span(u0 - first_tick, u1 - first_tick, n)
    return a, b, tick_bin_index(np.arange(first_tick + a, first_tick + b, dtype=np.int64), u0, u1, k)


def voxelize_packed_ticks(packed, first_tick: int, u0, u1, height: int, width: int,
                          num_bins: int = DEFAULT_NUM_BINS, flipud: bool = True) -> np.ndarray:
    """Voxelize consecutive packed ``.dat`` frames on the tick axis, binned exactly (``tick_bin_index``).

    Parameters
    ----------
    packed : array_like, shape [N, H*W/8], uint8
        Consecutive packed frames (the ``.dat`` layout, see ``voxelize_packed``); ``packed[i]`` is tick
        ``first_tick + i``.
    first_tick : int
        Tick index of ``packed[0]``.
    u0, u1 : int or fractions.Fraction
        The window ``[u0, u1)`` in ticks (``spikeprep.windows.tick_position``); frames with
        ``u0 <= j < u1`` are counted.
    height, width, num_bins, flipud
        As ``voxelize_packed``.

    Returns
    -------
    numpy.ndarray, shape [K, H, W], uint32, C-contiguous, new
    """
    k = _as_int(num_bins, "num_bins")
    p, height, width = _check_packed(packed, height, width)
    a, b, bins = _tick_window(first_tick, p.shape[0], u0, u1, k)
    return _count_packed(p[a:b], bins, k, height, width, flipud)


def voxelize_binary_ticks(frames, first_tick: int, u0, u1, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Voxelize consecutive binary frames ``[N, H, W]`` (``frames[i]`` is tick ``first_tick + i``) on the
    tick axis, binned exactly (``tick_bin_index``); frames with ``u0 <= j < u1`` are counted. Output as
    ``voxelize_binary``."""
    k = _as_int(num_bins, "num_bins")
    fr = _check_frames(frames)
    a, b, bins = _tick_window(first_tick, fr.shape[0], u0, u1, k)
    return _count_binary(fr[a:b], bins, k)
