"""Binary spike arrays in ``.npy`` / ``.npz``: ``[N, H, W]`` bool or uint8 holding 0/1.

Axis order ``[N, H, W]`` (spike frame, row, column) by default, or ``[H, W, N]`` (``axes="HWN"``, frames
last, as some simulators and the SpikingSIM sample store them); stored upright (no flip). Readers always
return ``[n, H, W]``. An ``.npz`` holds one array, under the key ``spikes`` or as its only entry. Loading
uses ``allow_pickle=False``. A memory-mapped ``[H, W, N]`` file is read through: a range of frames touches
every page, so such files read no faster in ranges than whole.
"""
from __future__ import annotations

import operator
from pathlib import Path

import numpy as np

from schemas.atomic import atomic_path
from spikeprep.errors import InputError

NPZ_SPIKES_KEY = "spikes"
AXES = ("NHW", "HWN")


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip


def _load_single_array(path: Path, key: str, what: str) -> np.ndarray:
    """Load a ``.npy`` (memory-mapped) or the one array of an ``.npz``; errors name the file.

    Every failure is an ``InputError``: missing or empty file, wrong magic bytes (e.g. a pickle or a
    zip named ``.npy``), a damaged header or archive, object arrays (never unpickled), an ``.npz``
    with several arrays and none named ``key``, or an archive member that is not a ``.npy``.
    """
    if not path.is_file():
        raise InputError(path, f"{what} file not found" + (" (it is a directory)" if path.is_dir() else ""),
                         fix="check the path and spike/meta.json")
    kind = "npz" if path.suffix == ".npz" else "npy"
    fix = f"re-export the {what} with numpy.save (.npy) or numpy.savez (.npz)"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise InputError(path, f"cannot read the {what} file ({err.strerror or err})",
                         fix="check the path and its permissions") from None
    if size == 0:
        raise InputError(path, "empty file (0 bytes)", fix=f"re-export the {what}")
    if kind == "npz" and not head.startswith(_ZIP_MAGICS):
        raise InputError(path, f"not an .npz (zip) archive: it starts with {head!r}", fix=fix)
    if kind == "npy" and not head.startswith(_NPY_MAGIC):
        looks = " (it is a zip archive: name it .npz)" if head.startswith(_ZIP_MAGICS) else ""
        raise InputError(path, f"not a .npy file: it starts with {head!r}{looks}", fix=fix)
    try:
        if kind == "npz":
            # Our own handle: np.load leaks the one it opens when the zip directory is damaged.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                names = list(npz.files)
                if key in names:
                    name = key
                elif len(names) == 1:
                    name = names[0]
                else:
                    raise InputError(path, f"holds arrays {names} but none named {key!r}",
                                     fix=f"save the {what} under the key {key!r} (or as the only array)")
                arr = npz[name]
                if not isinstance(arr, np.ndarray):
                    raise InputError(path, f"archive member {name!r} is not a .npy array",
                                     fix=fix)
                return arr
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(arr, np.ndarray):  # cannot happen after the magic check; keep it total
            raise InputError(path, f"not a single array ({type(arr).__name__})", fix=fix)
        return arr
    except InputError:
        raise
    except Exception as err:  # numpy / zipfile / zlib raise many types on damaged files
        problem = str(err)
        if "allow_pickle" in problem or "Python objects" in problem:
            raise InputError(path, "holds an object (pickled) array, which is never loaded",
                             fix=f"save the {what} as a plain numeric array") from None
        raise InputError(path, f"not a readable NumPy {kind} file ({type(err).__name__}: {err})",
                         fix=fix) from None


def _check_binary(path: Path, arr: np.ndarray, height: int, width: int, axes: str = "NHW") -> int:
    """Shape ``[N, H, W]`` (or ``[H, W, N]``) and dtype bool/uint8; returns N (values are checked on the
    frames actually read)."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}, got {axes!r}")
    if arr.dtype.names is not None or arr.dtype not in (np.bool_, np.uint8):
        raise InputError(path, f"spike array has dtype {arr.dtype}, expected bool or uint8 (0/1)",
                         fix="save binary spikes as bool or uint8; event lists use format *-events")
    hw = (height, width)
    ok = arr.ndim == 3 and (arr.shape[1:] == hw if axes == "NHW" else arr.shape[:2] == hw)
    if not ok:
        want = f"[N, {height}, {width}]" if axes == "NHW" else f"[{height}, {width}, N]"
        if arr.ndim == 3 and axes == "NHW" and arr.shape[:2] == hw:
            fix = 'the array looks like [H, W, N] (frames last): set "axes": "HWN" in spike/meta.json'
        elif arr.ndim == 3 and axes == "HWN" and arr.shape[1:] == hw:
            fix = 'the array looks like [N, H, W]: remove "axes" from spike/meta.json (or set "NHW")'
        else:
            fix = "check height/width in spike/meta.json, or save frames as [N, H, W]"
        raise InputError(path, f"spike array has shape {arr.shape}, expected {want} (axes {axes})", fix=fix)
    return int(arr.shape[0] if axes == "NHW" else arr.shape[2])


def read_binary_array(path: str | Path, height: int, width: int, start: int = 0,
                      stop: int | None = None, axes: str = "NHW") -> np.ndarray:
    """Read spike frames ``[start, stop)`` of a binary array file as ``[n, H, W]`` bool.

    ``axes``: the stored axis order, ``NHW`` or ``HWN``. ``.npy`` files are memory-mapped, so only the
    requested frames are read (``NHW``). Values other than 0/1, a wrong shape, or a dtype other than
    bool/uint8 raise ``InputError``.
    """
    path = Path(path)
    arr = _load_single_array(path, NPZ_SPIKES_KEY, "spike array")
    n = _check_binary(path, arr, height, width, axes)
    start = operator.index(start)
    stop = n if stop is None else operator.index(stop)
    if not 0 <= start <= stop <= n:
        raise InputError(path, f"frame range [{start}, {stop}) is outside the file's {n} frames",
                         fix="check the exposure windows against the stream length")
    part = arr[start:stop] if axes == "NHW" else np.moveaxis(arr[:, :, start:stop], 2, 0)
    raw = np.ascontiguousarray(part).view(np.uint8)
    if arr.dtype == np.uint8 and raw.size and raw.max() > 1:
        raise InputError(path, f"spike array holds value {int(raw.max())}; binary spikes are 0/1",
                         fix="store one frame per tick with 0/1 values (counts are not spikes)")
    # A new, writable, canonical bool array (a bool file may hold bytes other than 0/1; they mean True).
    return raw != 0


def binary_array_num_frames(path: str | Path, height: int, width: int, axes: str = "NHW") -> int:
    """Number of spike frames in a binary array file (validates shape and dtype, reads no frames)."""
    path = Path(path)
    arr = _load_single_array(path, NPZ_SPIKES_KEY, "spike array")
    return _check_binary(path, arr, height, width, axes)


def binary_array_shape(path: str | Path) -> tuple[int, int, int]:
    """The stored shape of a 3-D binary spike array file (reads no frames), e.g. to infer the sensor size."""
    path = Path(path)
    arr = _load_single_array(path, NPZ_SPIKES_KEY, "spike array")
    if arr.ndim != 3:
        raise InputError(path, f"spike array has shape {arr.shape}, expected 3 axes ([N, H, W] or [H, W, N])",
                         fix="save binary spike frames as [N, H, W]")
    return tuple(int(v) for v in arr.shape)


def write_binary_array(path: str | Path, frames: np.ndarray) -> Path:
    """Write ``[N, H, W]`` binary frames as bool ``.npy`` or ``.npz`` (by suffix), atomically."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [N, H, W], got shape {frames.shape}")
    if frames.dtype != np.bool_ and not (frames.dtype.kind in "iu" and np.isin(frames, (0, 1)).all()):
        raise ValueError(f"frames must be bool or integers 0/1, got {frames.dtype}")
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: suffix must be .npy or .npz")
    with atomic_path(path) as tmp:  # the temp name keeps the suffix, so numpy does not append one
        if path.suffix == ".npz":
            np.savez_compressed(tmp, **{NPZ_SPIKES_KEY: frames.astype(np.bool_)})
        else:
            np.save(tmp, frames.astype(np.bool_))
    return path
