"""The ``.dat`` spike format of the PKU spike camera and SpikeCV (DESIGN section 3).

Layout: no header; frames are concatenated; each frame is ``H*W`` bits in row-major order, pixel ``i``
is bit ``i mod 8`` (LSB first) of byte ``i div 8``. The image is stored upside down, so readers flip
rows by default (``flipud=True``). We require ``H*W`` to be a multiple of 8 (every published camera
resolution is), so a frame is ``H*W/8`` whole bytes and frame ``j`` starts at byte ``j*H*W/8``.

Axis order of unpacked frames: ``[N, H, W]`` (frame, row, column), dtype bool.
Packed frames: ``[N, H*W/8]`` uint8, exactly the file's bytes.

Head columns (SpikeCV's SPS10 raw files): every stored row holds ``W + head_columns`` pixels, the last
``head_columns`` of which carry no image (rows of 416 columns of which columns 400..415 are dropped). Such a
file is the layout above with width ``W + head_columns``; ``read_dat(..., head_columns=16)`` drops them.
"""
from __future__ import annotations

import operator
from pathlib import Path

import numpy as np

from schemas.atomic import atomic_write_bytes
from spikeprep.errors import InputError


def frame_nbytes(height: int, width: int) -> int:
    """Bytes per packed frame; ``height*width`` must be a multiple of 8."""
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if (height * width) % 8:
        raise ValueError(f".dat frames are whole bytes: height*width = {height * width} is not a multiple of 8")
    return height * width // 8


def pack_frames(frames: np.ndarray, flipud: bool = True) -> np.ndarray:
    """Pack binary frames ``[N, H, W]`` (bool, or uint8 holding 0/1) into ``[N, H*W/8]`` uint8 bytes.

    ``flipud=True`` writes the image upside down, as the camera does. The input is not modified.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [N, H, W], got shape {frames.shape}")
    if frames.dtype != np.bool_:
        if frames.dtype != np.uint8 or frames.size and frames.max() > 1:
            raise ValueError(f"frames must be bool or uint8 0/1, got {frames.dtype}")
    n, height, width = frames.shape
    nbytes = frame_nbytes(height, width)
    if flipud:
        frames = frames[:, ::-1, :]
    flat = np.ascontiguousarray(frames, dtype=np.bool_).reshape(n, height * width)
    return np.packbits(flat, axis=1, bitorder="little").reshape(n, nbytes)


def unpack_frames(packed: np.ndarray, height: int, width: int, flipud: bool = True) -> np.ndarray:
    """Inverse of ``pack_frames``: ``[N, H*W/8]`` uint8 -> ``[N, H, W]`` bool (a new array)."""
    nbytes = frame_nbytes(height, width)
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1, nbytes)
    bits = np.unpackbits(packed, axis=1, bitorder="little").astype(np.bool_)
    frames = bits.reshape(-1, height, width)
    return np.ascontiguousarray(frames[:, ::-1, :]) if flipud else frames


def write_dat(path: str | Path, frames: np.ndarray, flipud: bool = True) -> Path:
    """Write binary frames ``[N, H, W]`` (``N >= 1``) as a ``.dat`` file, atomically (temp file + rename)."""
    path = Path(path)
    packed = pack_frames(frames, flipud=flipud)
    if packed.shape[0] == 0:  # readers reject an empty .dat, so never write one
        raise ValueError(f"{path}: no frames to write (a .dat file needs at least one frame)")
    return atomic_write_bytes(path, packed.tobytes())


def _frame_nbytes_for(path: Path, height: int, width: int) -> int:
    """``frame_nbytes`` whose error names the file being read (an ``InputError``)."""
    try:
        return frame_nbytes(operator.index(height), operator.index(width))
    except (TypeError, ValueError) as err:
        raise InputError(path, f"cannot read as {height!r}x{width!r} .dat frames: {err}",
                         fix="set height and width in spike/meta.json to the sensor size "
                             "(height*width must be a multiple of 8)") from None


def dat_num_frames(path: str | Path, height: int, width: int) -> int:
    """Number of frames in a ``.dat`` file; a size that is not whole frames is an ``InputError``."""
    path = Path(path)
    nbytes = _frame_nbytes_for(path, height, width)
    try:
        if not path.is_file():
            raise InputError(path, "spike file not found" + (" (it is a directory)" if path.is_dir() else ""),
                             fix="check the path and spike/meta.json")
        size = path.stat().st_size
    except OSError as err:
        raise InputError(path, f"cannot read the spike file ({err.strerror or err})",
                         fix="check the path and its permissions") from None
    if size == 0:
        raise InputError(path, f"empty .dat file (0 bytes; a {height}x{width} frame is {nbytes} bytes)",
                         fix="re-export the spike stream")
    if size % nbytes:
        raise InputError(
            path,
            f"size {size} bytes is not a whole number of {height}x{width} frames "
            f"({nbytes} bytes each; {size // nbytes} frames + {size % nbytes} bytes)",
            fix="check height/width in spike/meta.json, or re-export the truncated file",
        )
    return size // nbytes


def open_dat(path: str | Path, height: int, width: int) -> np.ndarray:
    """Memory-map a ``.dat`` file as packed frames ``[N, H*W/8]`` uint8 (read-only, nothing loaded)."""
    n = dat_num_frames(path, height, width)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(n, _frame_nbytes_for(Path(path), height, width)))


def read_dat_packed(path: str | Path, height: int, width: int, start: int = 0,
                    stop: int | None = None) -> np.ndarray:
    """Read packed frames ``[start, stop)`` (``[n, H*W/8]`` uint8), seeking past the rest of the file."""
    path = Path(path)
    n = dat_num_frames(path, height, width)
    start = operator.index(start)
    stop = n if stop is None else operator.index(stop)
    if not 0 <= start <= stop <= n:
        raise InputError(path, f"frame range [{start}, {stop}) is outside the file's {n} frames",
                         fix="check the exposure windows against the stream length")
    nbytes = _frame_nbytes_for(path, height, width)
    want = (stop - start) * nbytes
    try:
        with open(path, "rb") as fh:
            fh.seek(start * nbytes)
            data = fh.read(want)
    except OSError as err:
        raise InputError(path, f"cannot read the spike file ({err.strerror or err})",
                         fix="check the path and its permissions") from None
    if len(data) != want:  # the file shrank after it was sized
        raise InputError(path, f"short read: got {len(data)} of {want} bytes for frames [{start}, {stop})",
                         fix="do not modify spike files while they are read")
    return np.frombuffer(data, dtype=np.uint8).reshape(stop - start, nbytes)


def read_dat(path: str | Path, height: int, width: int, start: int = 0, stop: int | None = None,
             flipud: bool = True, head_columns: int = 0) -> np.ndarray:
    """Read frames ``[start, stop)`` of a ``.dat`` file as ``[n, H, W]`` bool (flipped upright by default).

    ``head_columns``: extra columns at the end of every stored row (SPS10: 16), read and dropped.
    """
    head_columns = operator.index(head_columns)
    if head_columns < 0:
        raise ValueError(f"head_columns must be >= 0, got {head_columns}")
    stored = width + head_columns
    packed = read_dat_packed(path, height, stored, start, stop)
    frames = unpack_frames(packed, height, stored, flipud=flipud)
    return np.ascontiguousarray(frames[:, :, :width]) if head_columns else frames
