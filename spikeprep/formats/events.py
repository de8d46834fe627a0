"""Spike event lists in ``.npy`` / ``.npz``: one row per spike, columns ``t, y, x[, p]``.

Accepted layouts: a float array ``[N, 3]`` or ``[N, 4]`` (columns t, y, x[, p]), or a structured array
with fields ``t, y, x[, p]``. An ``.npz`` holds it under the key ``events`` or as its only entry.
``t`` is seconds on the spike camera's clock (float64), ``y`` the row (0 at the top), ``x`` the column.
Validation: finite times, non-decreasing times, integral in-range coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.atomic import atomic_path
from spikeprep.errors import InputError
from spikeprep.formats.arrays import _load_single_array

NPZ_EVENTS_KEY = "events"


@dataclass(frozen=True)
class Events:
    """Validated spike events: ``t`` float64 [N] (non-decreasing), ``y``, ``x`` int64 [N], ``p`` or None."""

    t: np.ndarray
    y: np.ndarray
    x: np.ndarray
    p: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def select(self, t0: float, t1: float) -> "Events":
        """Events with ``t0 <= t < t1`` (half-open, DESIGN section 3), by binary search on ``t``."""
        lo = int(np.searchsorted(self.t, t0, side="left"))
        hi = int(np.searchsorted(self.t, t1, side="left"))
        p = None if self.p is None else self.p[lo:hi]
        return Events(self.t[lo:hi], self.y[lo:hi], self.x[lo:hi], p)


def _is_number_dtype(dtype: np.dtype) -> bool:
    """Plain real numbers: signed/unsigned integers or floats (not bool, complex, strings, objects)."""
    return dtype.names is None and dtype.subdtype is None and dtype.kind in "iuf"


def _columns(path: Path, arr: np.ndarray) -> tuple[np.ndarray, ...]:
    if arr.dtype.names is not None:
        missing = [f for f in ("t", "y", "x") if f not in arr.dtype.names]
        if missing:
            raise InputError(path, f"structured events lack fields {missing} (has {list(arr.dtype.names)})",
                             fix="name the fields t, y, x[, p]")
        if arr.ndim != 1:
            raise InputError(path, f"structured events must be 1-D, got shape {arr.shape}",
                             fix="save a 1-D structured array")
        names = [f for f in ("t", "y", "x", "p") if f in arr.dtype.names]
        for name in names:
            if not _is_number_dtype(arr.dtype.fields[name][0]):
                raise InputError(path, f"events field {name!r} has dtype {arr.dtype.fields[name][0]}, "
                                       "expected a plain number type",
                                 fix="store t as float64 seconds and y, x[, p] as integers or floats")
        p = arr["p"] if "p" in arr.dtype.names else None
        return arr["t"], arr["y"], arr["x"], p
    if arr.ndim != 2 or arr.shape[1] not in (3, 4):
        raise InputError(path, f"events have shape {arr.shape}, expected [N, 3] or [N, 4] (t, y, x[, p])",
                         fix="save one row per spike with columns t, y, x[, p]")
    if not _is_number_dtype(arr.dtype):
        raise InputError(path, f"events have dtype {arr.dtype}, expected a float array",
                         fix="save events as float64 columns t, y, x[, p]")
    p = arr[:, 3] if arr.shape[1] == 4 else None
    return arr[:, 0], arr[:, 1], arr[:, 2], p


def _column(path: Path, name: str, values) -> np.ndarray:
    """A 1-D column of plain numbers (new array or view; never converted from strings)."""
    values = np.asarray(values)
    if not _is_number_dtype(values.dtype):
        raise InputError(path, f"event column {name} has dtype {values.dtype}, expected numbers",
                         fix=f"store {name} as " + ("float64 seconds" if name == "t" else "integers or floats"))
    if values.ndim != 1:
        raise InputError(path, f"event column {name} has shape {values.shape}, expected [N]",
                         fix="store one value per event")
    return values


def _coordinate(path: Path, name: str, values: np.ndarray, size: int) -> np.ndarray:
    values = _column(path, name, values)
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(path, f"event {i} has non-integral {name} = {values[i].item()!r}",
                             fix=f"{name} must be a whole pixel index")
    bad = (values < 0) | (values >= size)  # compared before the cast, so huge values cannot wrap
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(path, f"event {i} has {name} = {values[i].item()!r} outside [0, {size})",
                         fix="check height/width in spike/meta.json and the column order t, y, x")
    return values.astype(np.int64)


def validate_events(path: str | Path, t, y, x, p, height: int, width: int) -> Events:
    """Validate raw columns into ``Events`` (new arrays; the inputs are not modified)."""
    path = Path(path)
    t = _column(path, "t", t).astype(np.float64)
    if t.size:
        finite = np.isfinite(t)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InputError(path, f"event {i} has time {t[i].item()!r} (NaN or infinite)",
                             fix="drop or repair the events with invalid times")
        steps = np.diff(t)
        if (steps < 0).any():
            i = int(np.argmax(steps < 0)) + 1
            raise InputError(path, f"event times are not sorted: event {i} at t={t[i].item()!r} comes after "
                                   f"t={t[i - 1].item()!r}", fix="sort the events by time (stable sort on t)")
    columns = {"t": t, "y": y, "x": x} if p is None else {"t": t, "y": y, "x": x, "p": p}
    lengths = {name: int(np.shape(col)[0]) if np.ndim(col) else -1 for name, col in columns.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(path, f"event columns differ in length: {lengths}",
                         fix="store one row per event with columns t, y, x[, p]")
    ys = _coordinate(path, "y", y, height)
    xs = _coordinate(path, "x", x, width)
    pol = None
    if p is not None:
        pol = np.array(_column(path, "p", p), copy=True)
        if np.issubdtype(pol.dtype, np.floating) and not np.isfinite(pol).all():
            i = int(np.argmin(np.isfinite(pol)))
            raise InputError(path, f"event {i} has polarity {pol[i].item()!r} (NaN or infinite)",
                             fix="store polarity as finite numbers")
    return Events(np.array(t, copy=True), ys, xs, pol)


def read_events(path: str | Path, height: int, width: int) -> Events:
    """Read and validate an event file (see the module docstring); errors name the file and the fix."""
    path = Path(path)
    arr = _load_single_array(path, NPZ_EVENTS_KEY, "event list")
    t, y, x, p = _columns(path, arr)
    return validate_events(path, t, y, x, p, height, width)


def write_events(path: str | Path, t, y, x, p=None) -> Path:
    """Write events as a float64 ``[N, 3|4]`` array (``.npy`` or ``.npz`` by suffix), atomically."""
    path = Path(path)
    cols = [np.asarray(t, np.float64), np.asarray(y, np.float64), np.asarray(x, np.float64)]
    if p is not None:
        cols.append(np.asarray(p, np.float64))
    arr = np.stack(cols, axis=1) if cols[0].size else np.zeros((0, len(cols)), np.float64)
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: suffix must be .npy or .npz")
    with atomic_path(path) as tmp:  # the temp name keeps the suffix, so numpy does not append one
        if path.suffix == ".npz":
            np.savez_compressed(tmp, **{NPZ_EVENTS_KEY: arr})
        else:
            np.save(tmp, arr)
    return path
