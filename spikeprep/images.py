"""RGB frames on disk: the one way spikeprep reads and writes them, and the one luma definition.

Frames are 8-bit RGB. In memory a decoded frame is uint8 ``[3, H, W]`` (channels first, as the store and
the model hold them) from :func:`read_rgb`; :func:`write_rgb` takes uint8 ``[H, W, 3]`` (channels last,
as metrics and image grids produce them). OpenCV does the coding (BGR on its side; the channel flips
happen here and nowhere else).

``LUMA_601`` is the grey level that spikes integrate (DESIGN sections 4 and 6): ``spikeprep synth`` fires
spikes on this luma and the alignment audit correlates spike intensity with the blur frame's luma.

EXIF orientation is ignored: a frame is read as its pixels are stored. The spikes come from a sensor that
knows no EXIF, so a frame turned by its EXIF tag (OpenCV's default, for JPEG and for a PNG's eXIf chunk)
would be fused with spikes of another orientation, silently; a camera pipeline's frames are what the
sensor saw. Every image read goes through :func:`read_rgb` (or ``IMREAD_FLAGS``).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from spikeprep.errors import InputError

__all__ = ["IMREAD_FLAGS", "LUMA_601", "PNG_PARAMS", "read_rgb", "write_rgb"]

LUMA_601 = (0.299, 0.587, 0.114)  # weights of R, G, B
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]  # lossless at compression level 3
# 8-bit BGR as stored, EXIF orientation ignored (module docstring): the flags of every cv2.imread here
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def read_rgb(path: str | Path, hw: tuple[int, int] | None = None, *, expected: str = "expected") -> np.ndarray:
    """Decode a PNG/JPEG as uint8 ``[3, H, W]`` RGB, as its pixels are stored (EXIF orientation ignored).

    ``hw``: the size the frame must have, else InputError ``"decodes to AxB, {expected} CxD"`` (e.g.
    ``expected="its PNG header says"``). An undecodable file is an InputError naming it.
    """
    img = cv2.imread(str(path), IMREAD_FLAGS)
    if img is None:
        raise InputError(path, "unreadable image (does not decode)",
                         fix="re-export the frame as an 8-bit PNG or JPEG")
    if hw is not None and img.shape[:2] != tuple(hw):
        raise InputError(path, f"decodes to {img.shape[0]}x{img.shape[1]}, {expected} {hw[0]}x{hw[1]}",
                         fix="re-export the frame; all frames of a sequence must have one size")
    return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))


# Output image formats of `spikeprep test` (--format): suffix and the cv2 flag its quality option sets.
IMAGE_FORMATS = {"png": (".png", []), "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY])}


def write_rgb(path: str | Path, rgb: np.ndarray, params: list[int] | None = None) -> None:
    """Write uint8 ``[H, W, 3]`` RGB to ``path`` (format from the suffix; ``params`` default ``PNG_PARAMS``)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: write_rgb takes uint8 [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), PNG_PARAMS if params is None else params):
        raise InputError(path, "cannot write the image", fix="check that the folder exists, is writable and has space")
