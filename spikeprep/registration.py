"""Spike and RGB images that do not line up: the registration of a sequence (DESIGN section 3).

Coordinates: pixel centres at integer coordinates in every image. A registration is a 3x3 homography ``H``
from spike pixels to the raw RGB frame's pixels (``schemas.registration``). The store keeps an RGB grid that
is the (cropped) spike grid times an integer ``s``: its pixel ``(u, v)`` lies at spike pixel
``(x0 + (u - (s - 1) / 2) / s, y0 + ...)`` (``store_to_spike``), so ``M = H @ store_to_spike`` maps a stored
RGB pixel to the raw frame, and the stored frame is the raw frame resampled through ``M``.

Ingest (``plan_registration``, ``resample_rgb``)
    * Which ``H``: the fixed record of ``audit --fix``, else the spike ``meta.json``'s ``rgb_homography``, else,
      when the frames are the spike grid times an integer per axis, none (the frames are stored pixel for
      pixel, as before), else the same field of view at another resolution (a pure scale; an aspect ratio more
      than ``MAX_ASPECT_ERROR`` off is an ``InputError``: those cameras do not see the same field of view).
    * ``s`` (registered sequences): ``rgb_scale`` when given, else the registration's scale rounded (at least 1).
    * Crop: the largest rectangle of spike pixels whose stored RGB pixels the raw frame covers entirely
      (``valid_spike_crop``); the spike counts of those pixels are stored as they are (integers, never
      resampled).
    * Resampling: area-aware when shrinking: the raw frame is first reduced by ``cv2.resize(INTER_AREA)`` to
      about the target resolution, then warped (``cv2.warpPerspective``, bilinear) by what remains of ``M``.
      A pure integer shrink is exactly ``cv2.resize(INTER_AREA)``.

The audit (``estimate_frame``, ``estimate_sequence``)
    Per frame, the residual transform ``R`` (stored RGB pixels -> stored RGB pixels) with ``blur(R u) ~
    spikes(u)``: the spike intensity over the exposure window (counts summed over the window: the same motion
    blur as the blur frame, and insensitive to a clock error of a few ticks), upsampled to the RGB grid, and the
    blur luma, both standardised and pre-blurred (Gaussian), by OpenCV's ECC (``cv2.findTransformECC``, affine or
    homography), coarse to fine over an image pyramid. Per sequence, one robust transform: the median of the
    frames' corner positions, and the transform through those four points. Its residual misregistration is the
    largest displacement of the four frame corners. Not trusted (left as it was, with a code and the reason):
    no frames; a flat scene (frames without structure to register); too few frames with an estimate; frames
    whose estimates disagree (median corner distance to the robust transform above ``max_spread_px``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from schemas.registration import Registration, RegistrationFix, as_matrix, flat
from schemas.spike_meta import SpikeMeta
from spikeprep.errors import InputError

log = logging.getLogger("spikeprep.registration")
MAX_ASPECT_ERROR = 0.02        # RGB and spike aspect ratios further apart than this are not one field of view
GIVE_REGISTRATION = ('give the registration: add "rgb_homography" (3x3, spike pixel -> RGB pixel) and "version": 3 '
                     "to spike/meta.json (schemas/spike_meta.py), or crop the RGB frames to the field of view the "
                     "spike camera sees")


# ---- geometry ---------------------------------------------------------------------------------------------
def scale_homography(sy: float, sx: float) -> np.ndarray:
    """The pure scale between a grid and one ``sy x sx`` times finer over the same field of view (pixel
    centres at integers: spike pixel x covers fine pixels ``[x sx, (x + 1) sx)``)."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def store_to_spike(scale: int, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Stored RGB pixel -> sensor spike pixel, for a store grid ``scale`` times the spike grid cropped at
    ``crop``'s corner."""
    y0, x0 = crop[0], crop[1]
    c = (scale - 1) / (2 * scale)
    return np.array([[1 / scale, 0.0, x0 - c], [0.0, 1 / scale, y0 - c], [0.0, 0.0, 1.0]])


def linear_scale(m: np.ndarray) -> float:
    """The mean scale of a homography's linear part (sqrt of its determinant)."""
    m = m / m[2, 2]
    return math.sqrt(abs(float(np.linalg.det(m[:2, :2]))))


def apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points ``[N, 2]`` (x, y) through the homography ``m``."""
    p = np.c_[xy, np.ones(len(xy))] @ m.T
    return p[:, :2] / p[:, 2:3]


def corners(hw: tuple[int, int]) -> np.ndarray:
    """The centres of an image's four corner pixels, (x, y)."""
    h, w = hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def corner_error(m: np.ndarray, hw: tuple[int, int]) -> float:
    """The largest displacement of the four corners of an ``hw`` image under ``m`` (pixels)."""
    c = corners(hw)
    return float(np.linalg.norm(apply(m, c) - c, axis=1).max())


def valid_spike_crop(m_full: np.ndarray, spike_hw: tuple[int, int], scale: int, raw_hw: tuple[int, int],
                     tolerance: float = 1e-3) -> tuple[int, int, int, int] | None:
    """The largest (greedily peeled) rectangle ``(y0, x0, h, w)`` of spike pixels whose ``scale x scale`` RGB
    pixels all lie inside the raw frame (each pixel's whole footprint), ``m_full`` mapping the uncropped store
    grid to raw pixels; None when no spike pixel is covered."""
    hs, ws = spike_hw
    v, u = np.mgrid[0:hs * scale, 0:ws * scale]
    xy = apply(m_full, np.c_[u.ravel(), v.ravel()].astype(np.float64))
    half = linear_scale(m_full) / 2
    rh, rw = raw_hw
    inside = ((xy[:, 0] >= half - 0.5 - tolerance) & (xy[:, 0] <= rw - 0.5 - half + tolerance)
              & (xy[:, 1] >= half - 0.5 - tolerance) & (xy[:, 1] <= rh - 0.5 - half + tolerance))
    ok = inside.reshape(hs, scale, ws, scale).all(axis=(1, 3))
    y0, y1, x0, x1 = 0, hs, 0, ws
    while y1 > y0 and x1 > x0:
        sub = ok[y0:y1, x0:x1]
        if sub.all():
            return y0, x0, y1 - y0, x1 - x0
        bad = {"top": (~sub[0]).mean(), "bottom": (~sub[-1]).mean(), "left": (~sub[:, 0]).mean(),
               "right": (~sub[:, -1]).mean()}
        side = max(bad, key=bad.get)
        if side == "top":
            y0 += 1
        elif side == "bottom":
            y1 -= 1
        elif side == "left":
            x0 += 1
        else:
            x1 -= 1
    return None


# ---- ingest -----------------------------------------------------------------------------------------------
def plan_registration(meta: SpikeMeta, raw_hw: tuple[int, int], blur_path, fix: RegistrationFix | None = None,
                      rgb_scale: int | None = None) -> Registration | None:
    """The registration ingest resamples a sequence with (module docstring), or None when its RGB frames are
    the spike grid times an integer and nothing else was given. ``InputError`` naming ``blur_path`` when the
    frames cannot be the spike camera's field of view, or the registration leaves no overlap."""
    hs, ws = meta.height, meta.width
    rh, rw = raw_hw
    if fix is not None:
        h, source = as_matrix(fix.homography), "audit_fix"
    elif meta.rgb_homography is not None:
        h, source = as_matrix(meta.rgb_homography), "meta"
    elif rh % hs == 0 and rw % ws == 0:
        return None          # an integer scale per axis: stored pixel for pixel, as before
    else:
        sy, sx = rh / hs, rw / ws
        if abs(sx / sy - 1) > MAX_ASPECT_ERROR:
            raise InputError(blur_path, f"the RGB frames are {rh}x{rw} and the spike grid {hs}x{ws}: aspect "
                             f"ratios {rw / rh:.4f} and {ws / hs:.4f} differ by {abs(sx / sy - 1):.1%}, more than "
                             f"{MAX_ASPECT_ERROR:.0%}, so the two cameras cannot see the same field of view",
                             fix=GIVE_REGISTRATION)
        h, source = scale_homography(sy, sx), "assumed_scale"
    s = int(rgb_scale) if rgb_scale else max(1, int(round(linear_scale(h))))
    crop = valid_spike_crop(h @ store_to_spike(s, (0, 0, hs, ws)), (hs, ws), s, raw_hw)
    if crop is None:
        raise InputError(blur_path, f"the registration maps no spike pixel inside the {rh}x{rw} RGB frame "
                         "(the two images do not overlap)", fix=GIVE_REGISTRATION)
    return Registration(homography=flat(h), source=source, raw_size=(rh, rw), scale=s, spike_crop=crop)


def store_matrix(reg: Registration) -> np.ndarray:
    """Stored RGB pixel -> raw RGB pixel."""
    return reg.matrix @ store_to_spike(reg.scale, reg.spike_crop)


def resample_rgb(image: np.ndarray, m: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``image`` (uint8 ``[H, W, C]`` or ``[H, W]``) resampled onto an ``out_hw`` grid whose pixel ``u`` lies at
    ``m @ u`` in it: area-averaged first when ``m`` shrinks (module docstring), then warped bilinearly."""
    m = np.asarray(m, np.float64) / m[2, 2]
    ratio = linear_scale(m)
    src = image
    if ratio > 1 + 1e-9:
        h, w = image.shape[:2]
        nw, nh = max(1, int(round(w / ratio))), max(1, int(round(h / ratio)))
        src = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        m = scale_homography(nh / h, nw / w) @ m      # raw pixel -> pixel of the reduced frame
    out_h, out_w = out_hw
    if np.allclose(m, np.eye(3), atol=1e-9) and src.shape[:2] == (out_h, out_w):
        return np.ascontiguousarray(src)
    return cv2.warpPerspective(src, m, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)

