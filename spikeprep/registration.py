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
    # the raw frame's pixels a homography keeps form a convex region, so a block of scale x scale stored pixels
    # lies inside it when its four corner pixels do: the mask is evaluated at the blocks' first and last
    # columns and rows only (memory O(spike pixels), not O(stored pixels))
    cols = np.stack([np.arange(ws) * scale, np.arange(ws) * scale + scale - 1], axis=1).ravel()
    rows = np.stack([np.arange(hs) * scale, np.arange(hs) * scale + scale - 1], axis=1).ravel()
    v, u = np.meshgrid(rows, cols, indexing="ij")
    xy = apply(m_full, np.c_[u.ravel(), v.ravel()].astype(np.float64))
    half = linear_scale(m_full) / 2
    rh, rw = raw_hw
    inside = ((xy[:, 0] >= half - 0.5 - tolerance) & (xy[:, 0] <= rw - 0.5 - half + tolerance)
              & (xy[:, 1] >= half - 0.5 - tolerance) & (xy[:, 1] <= rh - 0.5 - half + tolerance))
    ok = inside.reshape(hs, 2, ws, 2).all(axis=(1, 3))
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



# ---- the audit's estimate -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistrationOptions:
    """How the audit estimates registration (module docstring).

    model: ``affine`` (6 parameters; a beam splitter's small homography is nearly one) or ``homography``;
    sigma_px: the Gaussian pre-blur of both images (store RGB pixels), so ECC sees the coarse structure both
    sensors share and not the spikes' shot noise; min_size: the pyramid's coarsest short side (pixels);
    min_structure: a frame whose pre-blurred blur luma has a mean gradient below this (luma per pixel, luma in
    [0, 1]) is flat: nothing to register; min_cc: a frame's ECC correlation below this is no estimate;
    min_frames: frames with an estimate needed; max_spread_px: the median distance (at the corners) of the
    frames' estimates from the sequence's robust transform above which they disagree; aligned_px: a residual
    below this leaves the registration as it is (resampling by a sub-pixel warp would only blur the frames);
    timing_px: a residual above this and the audit times the sequence's frames on their luma registered in
    memory (below it, a misregistration moves the shift curves by less than their noise);
    max_frames: frames estimated per sequence (evenly spaced), which bounds the audit's time.
    """

    model: str = "affine"
    sigma_px: float = 1.0
    min_size: int = 24
    min_structure: float = 2e-3
    min_cc: float = 0.5
    min_frames: int = 3
    max_spread_px: float = 1.0
    aligned_px: float = 0.3
    timing_px: float = 1.0
    max_frames: int = 16

    def __post_init__(self):
        if self.model not in ("affine", "homography"):
            raise ValueError(f"model must be affine or homography, got {self.model!r}")


@dataclass(frozen=True)
class FrameEstimate:
    """One frame's residual transform ``R`` (store px -> store px, ``blur(R u) ~ spikes(u)``), its ECC
    correlation, or why there is none (``problem``: ``flat`` or ``failed``); ``motion``: the image's motion
    from the first to the second half of the window (px, x and y; None when not measured)."""

    frame_idx: int
    matrix: np.ndarray | None
    cc: float | None
    problem: str | None
    motion: np.ndarray | None = None


@dataclass(frozen=True)
class SequenceEstimate:
    """A sequence's robust residual transform and whether it can be trusted (``reason_code``/``reason`` when
    not). ``residual_px``: the transform's largest corner displacement; ``spread_px``: the median over the
    frames used of their largest corner distance from it."""

    matrix: np.ndarray | None
    residual_px: float | None
    spread_px: float | None
    frames: list[FrameEstimate]
    used: list[int]
    reason_code: str | None
    reason: str | None

    @property
    def trusted(self) -> bool:
        return self.reason_code is None


def upsampled_intensity(counts: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Spike counts ``[Hs, Ws]`` (or ``[K, Hs, Ws]``, summed) as a float32 image on the ``hw`` RGB grid
    (bilinear, pixel centres kept)."""
    counts = np.asarray(counts)
    total = counts.sum(axis=0) if counts.ndim == 3 else counts
    image = total.astype(np.float32)
    if image.shape != tuple(hw):
        image = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return image


def _prepared(image: np.ndarray, sigma: float) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    std = float(image.std())
    return (image - float(image.mean())) / (std if std > 0 else 1.0)


def structure(luma: np.ndarray, sigma: float) -> float:
    """Mean gradient magnitude of the pre-blurred luma (per pixel): near zero for a flat scene."""
    image = cv2.GaussianBlur(np.asarray(luma, np.float32), (0, 0), sigma) if sigma > 0 else np.asarray(luma, np.float32)
    gy, gx = np.gradient(image)
    return float(np.hypot(gx, gy).mean())


def estimate_frame(intensity: np.ndarray, luma: np.ndarray, options: RegistrationOptions = RegistrationOptions(),
                   frame_idx: int = 0, halves: tuple[np.ndarray, np.ndarray] | None = None) -> FrameEstimate:
    """The residual transform of one frame: ECC of the blur ``luma`` onto the spike ``intensity`` (both on the
    store's RGB grid), coarse to fine; with ``halves`` (the spike intensity of the window's first and second
    halves), also the image motion between them (``FrameEstimate.motion``), which lets ``estimate_sequence``
    tell a clock error from a spatial one."""
    if structure(luma, options.sigma_px) < options.min_structure:
        return FrameEstimate(frame_idx, None, None, "flat")
    found = ecc(intensity, luma, options, options.model)
    if found is None:
        return FrameEstimate(frame_idx, None, None, "failed")
    warp, cc = found
    if cc < options.min_cc:
        return FrameEstimate(frame_idx, None, cc, "failed")
    motion = None
    if halves is not None:
        moved = ecc(halves[0], halves[1], options, "translation")
        if moved is not None:
            motion = moved[0][:2, 2].copy()
    return FrameEstimate(frame_idx, warp, cc, None, motion)


def ecc(template_image: np.ndarray, moving_image: np.ndarray, options: RegistrationOptions,
        model: str) -> tuple[np.ndarray, float] | None:
    """``(W, cc)``: OpenCV's ECC of ``moving_image`` onto ``template_image`` (``moving(W u) ~ template(u)``),
    both standardised and pre-blurred, coarse to fine; None when it does not converge."""
    template, moving = _prepared(template_image, options.sigma_px), _prepared(moving_image, options.sigma_px)
    h, w = template.shape
    levels = 0
    while min(h, w) / 2 ** (levels + 1) >= options.min_size and levels < 4:
        levels += 1
    motion = {"affine": cv2.MOTION_AFFINE, "homography": cv2.MOTION_HOMOGRAPHY,
              "translation": cv2.MOTION_TRANSLATION}[model]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-7)
    warp = np.eye(3)
    cc = None
    try:
        for level in range(levels, -1, -1):
            f = 2 ** level
            size = (max(1, int(round(w / f))), max(1, int(round(h / f))))
            t = cv2.resize(template, size, interpolation=cv2.INTER_AREA) if f > 1 else template
            m = cv2.resize(moving, size, interpolation=cv2.INTER_AREA) if f > 1 else moving
            down = scale_homography(size[1] / h, size[0] / w)          # full px -> level px
            start = down @ warp @ np.linalg.inv(down)
            start = start / start[2, 2]
            guess = (start if motion == cv2.MOTION_HOMOGRAPHY else start[:2]).astype(np.float32)
            cc, found = cv2.findTransformECC(t, m, guess, motion, criteria, None, 1)
            found = np.vstack([found, [0, 0, 1]]) if found.shape[0] == 2 else found
            warp = np.linalg.inv(down) @ found.astype(np.float64) @ down
            warp = warp / warp[2, 2]
    except cv2.error:
        return None
    if cc is None or not np.isfinite(warp).all() or not math.isfinite(cc):
        return None
    return warp, float(cc)


MIN_MOTION_SPREAD_PX = 0.5     # the frames' motions must differ by this much to tell a clock error from a shift


def clock_part(frames: list[FrameEstimate], moved: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The translation each frame's estimate owes to a clock error (``[frames, 2]``, px; zeros when it cannot
    be told). A clock error of ``tau`` ticks moves the spikes' picture by the image's velocity times ``tau``:
    a different translation in every frame, proportional to its motion, while a misregistration is the same in
    every frame. So the frames' translations ``t_f`` are fitted as ``T + k m_f`` (``m_f``: the motion between
    the window's halves, least squares over the frames), and ``k m_f`` is removed before the frames are
    combined. Frames whose motions barely differ (spread below ``MIN_MOTION_SPREAD_PX``) cannot separate the two:
    nothing is removed."""
    zeros = np.zeros((len(frames), 2))
    have = np.array([f.motion is not None for f in frames])
    if have.sum() < 3:
        return zeros
    m = np.stack([f.motion for f, h in zip(frames, have) if h])
    if float(np.sqrt(((m - m.mean(axis=0)) ** 2).sum(axis=1).mean())) < MIN_MOTION_SPREAD_PX:
        return zeros
    t = (moved[have] - c).mean(axis=1)                                    # each frame's mean corner shift
    # unknowns: T_x, T_y, k; rows: x and y of every frame
    a = np.zeros((2 * len(t), 3))
    a[0::2, 0] = 1
    a[1::2, 1] = 1
    a[0::2, 2], a[1::2, 2] = m[:, 0], m[:, 1]
    sol, *_ = np.linalg.lstsq(a, t.reshape(-1), rcond=None)
    out = zeros.copy()
    out[have] = sol[2] * m
    return out


def transform_through(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """The transform taking the four points ``src`` to ``dst``: exactly (homography), or by least squares
    (affine)."""
    if model == "homography":
        return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
    a = np.c_[src, np.ones(len(src))]
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return np.vstack([sol.T, [0, 0, 1]])


def estimate_sequence(frames: list[FrameEstimate], hw: tuple[int, int],
                      options: RegistrationOptions = RegistrationOptions()) -> SequenceEstimate:
    """One robust transform from the frames' estimates: the median of their corner positions (frames further
    than three times the median spread, and at least ``max_spread_px``, from it are set aside once), and whether
    it can be trusted."""
    c = corners(hw)
    good = [f for f in frames if f.matrix is not None]
    flat_frames = sum(f.problem == "flat" for f in frames)

    def unfixed(code: str, reason: str, matrix=None, residual=None, spread=None, used=()) -> SequenceEstimate:
        return SequenceEstimate(matrix, residual, spread, frames, list(used), code, reason)

    if not frames:
        return unfixed("no_frames", "no frame has a readable blur PNG and spikes to register")
    if flat_frames * 2 >= len(frames) and len(good) < options.min_frames:
        return unfixed("flat_scene", f"{flat_frames} of {len(frames)} frames are flat (mean luma gradient below "
                       f"{options.min_structure:g} per pixel): no structure to register")
    if len(good) < options.min_frames:
        return unfixed("too_few_frames", f"only {len(good)} of {len(frames)} frames gave an estimate (at least "
                       f"{options.min_frames} needed; the others: {flat_frames} flat, {len(frames) - len(good) - flat_frames} "
                       f"without a converged ECC fit of correlation >= {options.min_cc:g})")
    moved = np.stack([apply(f.matrix, c) for f in good])                 # [frames, 4, 2]
    moved = moved - clock_part(good, moved, c)[:, None, :]
    robust = np.median(moved, axis=0)
    dist = np.linalg.norm(moved - robust, axis=2).max(axis=1)
    keep = dist <= max(3 * float(np.median(dist)), options.max_spread_px)
    if keep.sum() >= options.min_frames and not keep.all():
        robust = np.median(moved[keep], axis=0)
        dist = np.linalg.norm(moved - robust, axis=2).max(axis=1)
    matrix = transform_through(c, robust, options.model)
    residual = corner_error(matrix, hw)
    used = [f.frame_idx for f, k in zip(good, keep) if k]
    spread = float(np.median(dist[keep]))
    if keep.sum() < options.min_frames or spread > options.max_spread_px:
        return unfixed("frames_disagree", f"the frames' estimates disagree: median corner distance {spread:.2f} px "
                       f"from the robust transform (at most {options.max_spread_px:g}), {int(keep.sum())} of "
                       f"{len(good)} agree", matrix, residual, spread, used)
    return SequenceEstimate(matrix, residual, spread, frames, used, None, None)


def refined_homography(reg_matrix: np.ndarray, scale: int, crop: tuple[int, int, int, int],
                       residual: np.ndarray) -> np.ndarray:
    """The spike -> raw RGB homography after a store measured ``residual`` (store px -> store px) on frames
    resampled with ``reg_matrix`` at ``scale`` and ``crop``."""
    a = store_to_spike(scale, crop)
    h = reg_matrix @ a @ residual @ np.linalg.inv(a)
    return h / h[2, 2]


def warp_luma(luma: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The blur luma registered by ``residual`` in memory: ``luma(R u)`` (the audit times a misregistered
    sequence's frames on it, so a spatial error never reads as a clock error)."""
    return cv2.warpPerspective(np.asarray(luma, np.float64), residual, (luma.shape[1], luma.shape[0]),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
