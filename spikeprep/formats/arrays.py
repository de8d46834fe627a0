"""Binary spike arrays in ``.npy`` / ``.npz``: ``[N, H, W]`` bool or uint8 holding 0/1.

Axis order ``[N, H, W]`` (spike frame, row, column), stored upright (no flip). An ``.npz`` holds one
array, under the key ``spikes`` or as its only entry. Loading uses ``allow_pickle=False``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from spikeprep.errors import InputError

NPZ_SPIKES_KEY = "spikes"


def _load_single_array(path: Path, key: str, what: str) -> np.ndarray:
    """Load a ``.npy`` (memory-mapped) or the one array of an ``.npz``; errors name the file."""
    if not path.is_file():
        raise InputError(path, f"{what} file not found", fix="check the path and spike/meta.json")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)", fix=f"re-export the {what}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                if key in names:
                    return npz[key]
                if len(names) == 1:
                    return npz[names[0]]
                raise InputError(path, f"holds arrays {names} but none named {key!r}",
                                 fix=f"save the {what} under the key {key!r}")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(path, f"not a readable NumPy file ({err})",
                         fix=f"re-export the {what} with numpy.save / numpy.savez") from None


def read_binary_array(path: str | Path, height: int, width: int, start: int = 0,
                      stop: int | None = None) -> np.ndarray:
    """Read spike frames ``[start, stop)`` of a binary array file as ``[n, H, W]`` bool.

    ``.npy`` files are memory-mapped, so only the requested frames are read. Values other than 0/1,
    a wrong shape, or a dtype other than bool/uint8 raise ``InputError``.
    """
    path = Path(path)
    arr = _load_single_array(path, NPZ_SPIKES_KEY, "spike array")
    if arr.ndim != 3 or arr.shape[1:] != (height, width):
        raise InputError(path, f"spike array has shape {arr.shape}, expected [N, {height}, {width}]",
                         fix="check height/width in spike/meta.json, or save frames as [N, H, W]")
    if arr.dtype not in (np.bool_, np.uint8):
        raise InputError(path, f"spike array has dtype {arr.dtype}, expected bool or uint8 (0/1)",
                         fix="save binary spikes as bool or uint8; event lists use format *-events")
    n = arr.shape[0]
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise InputError(path, f"frame range [{start}, {stop}) is outside the file's {n} frames",
                         fix="check the exposure windows against the stream length")
    part = np.asarray(arr[start:stop])
    if part.dtype == np.uint8:
        if part.size and part.max() > 1:
            raise InputError(path, f"spike array holds value {int(part.max())}; binary spikes are 0/1",
                             fix="store one frame per tick with 0/1 values (counts are not spikes)")
        part = part.astype(np.bool_)
    return np.array(part, dtype=np.bool_, copy=True)


def binary_array_num_frames(path: str | Path, height: int, width: int) -> int:
    """Number of spike frames in a binary array file (validates shape and dtype, reads no frames)."""
    path = Path(path)
    arr = _load_single_array(path, NPZ_SPIKES_KEY, "spike array")
    if arr.ndim != 3 or arr.shape[1:] != (height, width):
        raise InputError(path, f"spike array has shape {arr.shape}, expected [N, {height}, {width}]",
                         fix="check height/width in spike/meta.json, or save frames as [N, H, W]")
    return int(arr.shape[0])


def write_binary_array(path: str | Path, frames: np.ndarray) -> Path:
    """Write ``[N, H, W]`` binary frames as bool ``.npy`` or ``.npz`` (by suffix), atomically."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [N, H, W], got shape {frames.shape}")
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: suffix must be .npy or .npz")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if path.suffix == ".npz":
            np.savez_compressed(tmp, **{NPZ_SPIKES_KEY: frames.astype(np.bool_)})
        else:
            np.save(tmp, frames.astype(np.bool_))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
