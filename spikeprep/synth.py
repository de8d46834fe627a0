"""Realistic synthetic raw data in the native layout (DESIGN section 4): ``spikeprep synth OUT``.

The scene and the cameras
-------------------------
Each sequence takes a real photograph shipped with scikit-image as a static background (a different
one per sequence, from a seeded permutation) and a rounded crop of another photograph as a foreground
object. A virtual camera moves smoothly over the background (pan, zoom, small rotation: sums of a few
random low-frequency sinusoids of time) while the object follows its own smooth trajectory (translation,
rotation, slight scaling) inside the view. One sub-frame is rendered per spike tick with
``cv2.warpAffine`` (INTER_LINEAR, BORDER_REFLECT) in float32 intensity ``(pixel / 255) ** gamma``.

* RGB camera: blur frame ``i`` is the mean of the sub-frames of ticks ``[a_i, a_i + E)`` (encoded back
  with ``** (1 / gamma)``, rounded to uint8); the sharp frame is the sub-frame of tick ``a_i + E // 2``.
  Exposures follow each other with ``G`` ticks of gap; the stream has ``margin`` ticks before the first
  and after the last exposure.
* Spike camera: integrate-and-fire on Rec.601 luma of every sub-frame (block-averaged to the spike grid
  when ``spike_scale`` > 1), accumulator initialised uniformly in ``[0, threshold)``, ``+ luma`` per tick,
  a spike when ``acc >= threshold``, subtractive reset, at most one spike per tick; optional spurious
  spikes with probability ``noise`` per pixel per tick. It integrates over every tick of the stream,
  gaps included, so the spike stream is continuous.
* Time: spike tick ``j`` is at ``SpikeMeta.frame_time(start_s, j)``. The recorded window of frame ``i``
  is ``[frame_time(start_s, a_i + d - 0.5), frame_time(start_s, a_i + d + E - 0.5))``, ``d`` being the
  sequence's ``misalign`` shift (0 unless asked), so ``t0 <= t < t1`` selects exactly ``E`` ticks with
  half a tick of slack on both sides.
* A rig's clocks (``clock_offset_ticks``, ``clock_drift_ppm``, ``clock``, ``jitter_ticks``; the ``rig``
  preset): the exposure table is written by another clock, ``t_spike = (1 + drift) * t_recorded + offset``,
  so it records ``recorded_windows`` of the true windows (each moved by its own Gaussian jitter). Each
  sequence's offset and drift (drawn, or given in ``clock``) and jitter are its truth in ``synth.json``. The
  stream then extends at least one frame period (plus the largest shift the clocks make) past the first and
  last windows, so a fix can scan that far. ``unpaired_splits`` are written without sharp frames, as a rig
  records them (no ``sharp/`` folder).
* A rig's two images (``rgb_size``, ``rgb_warp``, ``rgb_homography``, ``rgb_homography_in_meta``): the RGB
  camera sees the spike camera's view through a homography ``H`` (spike pixel -> written RGB pixel): the same
  field of view at ``rgb_size`` (any ratio to the spike grid), then a small warp about the frame's centre
  (a shift, a rotation and a scale error drawn per sequence within ``rgb_warp``, or ``H`` given per sequence
  in ``rgb_homography``). The blur and sharp frames are rendered as before and resampled through ``H``
  (``spikeprep.registration.resample_rgb``, area-aware when shrinking); ``H`` and the size are the sequence's
  truth in ``synth.json``, and in its ``meta.json`` only with ``rgb_homography_in_meta``.

Reproducibility: every random choice of a sequence comes from a ``numpy`` generator seeded by
``(seed, sha256(sequence name))``, so sequences render independently (in parallel or not) and the
same configuration gives a byte-identical tree: no timestamps, fixed PNG settings, sorted JSON.
Each sequence is written into a hidden temporary directory and renamed into place when complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from schemas.atomic import atomic_write_text
from schemas.record import Record
from schemas.spike_meta import FORMAT_SUFFIX, SpikeFormat, SpikeMeta
from spikeprep.errors import InputError
from spikeprep.formats.arrays import write_binary_array
from spikeprep.formats.dat import pack_frames, write_dat
from spikeprep.formats.events import write_events
from spikeprep.formats.meta import write_spike_meta
from spikeprep.images import LUMA_601, write_rgb
from spikeprep.windows import write_exposure_csv

SYNTH_VERSION = 1
SYNTH_JSON = "synth.json"
SPLITS = ("train", "val")
# Colour photographs that scikit-image ships (no download). `cat` is the same image as `chelsea`.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "colorwheel")
_TMP_PREFIX = ".synth-tmp-"
_WARP_FLAGS = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

Layout = Literal["stream", "per-frame-dat"]


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
class SynthConfig(Record):
    """Every parameter of a synthetic data set (frozen, validated; unknown keys are rejected).

    The class defaults are the ``demo`` preset. Sizes are in RGB pixels; the spike grid is the RGB grid
    divided by ``spike_scale`` on each axis. Time is counted in spike ticks (1 / ``rate_hz`` seconds).
    """

    height: int = Field(256, ge=8, description="RGB frame height (pixels)")
    width: int = Field(320, ge=8, description="RGB frame width (pixels)")
    spike_scale: int = Field(1, ge=1, description="RGB grid / spike grid, per axis (integer)")
    train_seqs: int = Field(2, ge=0, description="sequences under train/")
    val_seqs: int = Field(1, ge=0, description="sequences under val/")
    frames: int = Field(12, ge=1, description="blur/sharp frames per sequence")
    exposure_ticks: int = Field(64, ge=1, description="spike ticks per exposure window")
    gap_ticks: int = Field(16, ge=0, description="spike ticks between two exposures")
    margin_ticks: int = Field(20, ge=0, description="ticks before the first / after the last exposure, "
                                                    "and around each exposure in per-frame files")
    rate_hz: float = Field(20000.0, gt=0, description="spike ticks per second")
    start_s: float = Field(0.0, description="time of spike tick 0 (seconds, spike clock)")
    threshold: float = Field(2.0, gt=0, description="integrate-and-fire threshold (luma 1.0 adds 1.0 per tick)")
    noise: float = Field(0.0, ge=0, le=1, description="probability of a spurious spike per pixel per tick")
    gamma: float = Field(1.0, gt=0, description="intensity = (pixel/255)**gamma for rendering and spikes")
    motion_px: float = Field(8.0, ge=0, description="typical camera travel during one exposure (RGB pixels)")
    seed: int = Field(0, ge=0, description="random seed; same seed and settings -> byte-identical output")
    spike_format: SpikeFormat = Field("dat", description="spike file format")
    layout: Layout = Field("stream", description="one spike stream, or one .dat per blur frame")
    misalign: dict[str, int] = Field(default_factory=dict,
                                     description="{sequence: ticks} shift of the recorded windows")
    clock_offset_ticks: float = Field(0.0, ge=0, description="largest |clock offset| of an exposure table (ticks): "
                                      "each sequence draws its own uniformly in [-this, this]")
    clock_drift_ppm: float = Field(0.0, ge=0, le=1e5, description="largest |clock drift| of an exposure table "
                                   "(ppm): each sequence draws its own uniformly in [-this, this]")
    clock: dict[str, tuple[float, float]] = Field(default_factory=dict, description="{sequence: (offset_ticks, "
                                                  "drift_ppm)}: that sequence's clock map instead of a draw")
    jitter_ticks: float = Field(0.0, ge=0, description="standard deviation of the Gaussian timing jitter of each "
                                "recorded window (ticks; the window moves as a whole)")
    unpaired_splits: tuple[str, ...] = Field((), description="splits written without sharp frames (no sharp/)")
    rgb_size: tuple[int, int] | None = Field(None, description="(height, width) of the written RGB frames: the "
                                             "same field of view at another resolution (None: height x width)")
    rgb_warp: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="largest (shift in RGB px, "
                                                 "rotation in degrees, relative scale error) between the two "
                                                 "cameras' views: each sequence draws its own uniformly")
    rgb_homography: dict[str, tuple[float, ...]] = Field(default_factory=dict, description="{sequence: 9 numbers}: "
                                                         "that sequence's spike px -> RGB px homography instead of a "
                                                         "draw")
    rgb_homography_in_meta: bool = Field(False, description="write each sequence's homography into its "
                                         "spike/meta.json (rgb_homography), as a calibrated rig would")

    @field_validator("rate_hz", "start_s", "threshold", "gamma", "motion_px", "clock_offset_ticks",
                     "clock_drift_ppm", "jitter_ticks")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SynthConfig":
        s = self.spike_scale
        if self.height % s or self.width % s:
            raise ValueError(f"height {self.height} and width {self.width} must be multiples of "
                             f"spike_scale {s} (the spike grid is the RGB grid divided by it)")
        if self.height // s < 2 or self.width // s < 2:
            raise ValueError(f"spike grid {self.height // s}x{self.width // s} is too small")
        if self.spike_format == "dat" and (self.spike_height * self.spike_width) % 8:
            raise ValueError(f"spike grid {self.spike_height}x{self.spike_width} has "
                             f"{self.spike_height * self.spike_width} pixels, not a multiple of 8 "
                             "(.dat frames are whole bytes); change the size or the spike format")
        if self.layout == "per-frame-dat" and self.spike_format != "dat":
            raise ValueError(f"layout per-frame-dat writes .dat files; it cannot be combined with "
                             f"spike_format {self.spike_format!r}")
        if self.train_seqs + self.val_seqs < 1:
            raise ValueError("no sequences: train_seqs + val_seqs must be at least 1")
        names = [name for _, name in sequence_names(self)]
        if self.rgb_size is not None and min(self.rgb_size) < 8:
            raise ValueError(f"rgb_size {self.rgb_size} must be at least 8 x 8")
        if any(not (math.isfinite(v) and v >= 0) for v in self.rgb_warp) or self.rgb_warp[2] >= 0.5:
            raise ValueError(f"rgb_warp {self.rgb_warp} must be finite, non-negative, the scale error below 0.5")
        for name, values in self.rgb_homography.items():
            from schemas.registration import homography_problem
            problem = homography_problem(values) if len(values) == 9 else "must be 9 numbers"
            if problem:
                raise ValueError(f"rgb_homography of {name} {problem}")
        for what, given in (("misalign", self.misalign), ("clock", self.clock), ("rgb_homography",
                                                                                 self.rgb_homography)):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ValueError(f"{what} names unknown sequence(s) {unknown}; this configuration has "
                                 f"{names[0]}..{names[-1]}")
        for name, (offset, drift) in self.clock.items():
            if not (math.isfinite(offset) and math.isfinite(drift) and abs(drift) <= 1e5):
                raise ValueError(f"clock of {name}: offset {offset!r} ticks and drift {drift!r} ppm must be finite, "
                                 "the drift within +-1e5 ppm")
        bad = sorted(set(self.unpaired_splits) - set(SPLITS))
        if bad:
            raise ValueError(f"unpaired_splits {bad} are not splits synth writes ({', '.join(SPLITS)})")
        return self

    @property
    def has_registration(self) -> bool:
        """Whether the RGB frames are not the rendered grid pixel for pixel (another size, or a warp)."""
        return bool(self.rgb_size is not None or any(self.rgb_warp) or self.rgb_homography)

    @property
    def has_clocks(self) -> bool:
        """Whether the exposure tables are written by another clock (offset, drift or jitter)."""
        return bool(self.clock_offset_ticks or self.clock_drift_ppm or self.jitter_ticks
                    or any(o or d for o, d in self.clock.values()))

    # ---- derived quantities ---------------------------------------------------------------------
    @property
    def spike_height(self) -> int:
        """Spike grid rows: ``height // spike_scale``."""
        return self.height // self.spike_scale

    @property
    def spike_width(self) -> int:
        """Spike grid columns: ``width // spike_scale``."""
        return self.width // self.spike_scale

    @property
    def effective_margin_ticks(self) -> int:
        """Margin actually used: ``margin_ticks``, widened so every misaligned window stays inside, and with
        clocks one frame period plus the largest shift they make (offset, drift over the stream, 4 sigma of
        jitter), so the stream extends a period past the windows, true and recorded."""
        margin = max([self.margin_ticks] + [abs(d) for d in self.misalign.values()])
        if not self.has_clocks:
            return margin
        offset = max([self.clock_offset_ticks] + [abs(o) for o, _ in self.clock.values()])
        drift = max([self.clock_drift_ppm] + [abs(d) for _, d in self.clock.values()]) * 1e-6
        far = abs(self.start_s) * self.rate_hz + self.frames * self.period_ticks + 2 * (margin + self.period_ticks
                                                                                        + offset) + 8
        shift = offset + drift * far + 4 * self.jitter_ticks + max(abs(d) for d in [0, *self.misalign.values()])
        return max(margin, self.period_ticks + math.ceil(shift) + 1)

    @property
    def period_ticks(self) -> int:
        """Ticks from one exposure start to the next: ``exposure_ticks + gap_ticks``."""
        return self.exposure_ticks + self.gap_ticks

    @property
    def n_ticks(self) -> int:
        """Length of each sequence's spike stream, in ticks."""
        return (2 * self.effective_margin_ticks + self.frames * self.exposure_ticks
                + (self.frames - 1) * self.gap_ticks)

    def exposure_starts(self) -> np.ndarray:
        """First tick ``a_i`` of every exposure (int64 [frames])."""
        return self.effective_margin_ticks + self.period_ticks * np.arange(self.frames, dtype=np.int64)

    @classmethod
    def from_preset(cls, name: str = "demo", **overrides) -> "SynthConfig":
        """The named preset (``demo`` | ``tiny``) with ``overrides`` applied, validated."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS: dict[str, dict] = {
    # 2 + 1 sequences x 12 frames at 256x320, 64-tick exposures: the `make demo` data (seconds).
    "demo": {},
    # For tests: 2 + 1 sequences x 4 frames at 48x64, 16-tick exposures (well under a second each).
    "tiny": dict(height=48, width=64, frames=4, exposure_ticks=16, gap_ticks=4, margin_ticks=6,
                 motion_px=3.0),
    # A hybrid rig's recording (tests and the README's walkthrough): 24 frames per sequence whose exposure
    # tables run on another clock, up to one frame period off and +-2000 ppm fast or slow, with 0.2 ticks of
    # jitter; the val split has no sharp frames.
    "rig": dict(height=64, width=80, frames=24, exposure_ticks=32, gap_ticks=8, motion_px=4.0,
                clock_offset_ticks=40.0, clock_drift_ppm=2000.0, jitter_ticks=0.2, unpaired_splits=("val",)),
}


def sequence_names(cfg: SynthConfig) -> list[tuple[str, str]]:
    """``[(split, name)]`` in generation order: ``seq_000``.. numbered across train then val."""
    splits = ["train"] * cfg.train_seqs + ["val"] * cfg.val_seqs
    return [(split, f"seq_{i:03d}") for i, split in enumerate(splits)]


# ------------------------------------------------------------------------------------------------
# the scene: photographs, trajectories, sub-frame renderer
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as uint8 RGB [H, W, 3] (read-only)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    img.setflags(write=False)
    return img


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize float32 [0, 1] RGB: area averaging to shrink, bicubic (clipped) to enlarge."""
    shrink = width <= img.shape[1] and height <= img.shape[0]
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0, out=out)


def _waves(rng: np.random.Generator, u: np.ndarray, speed: float, n: int = 2,
           f_lo: float = 0.03, f_hi: float = 0.2) -> np.ndarray:
    """Smooth random motion: a sum of ``n`` sinusoids of ``u`` (frame periods), zero at ``u = 0``.

    Frequencies are log-uniform in [f_lo, f_hi] cycles per frame period; each component's peak speed is
    ``speed * U(0.35, 0.75)`` (units per frame period), so the excursion stays bounded for any length.
    """
    f = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), n))
    phase = rng.uniform(0.0, 2 * np.pi, n)
    amp = speed * rng.uniform(0.35, 0.75, n) / (2 * np.pi * f)
    arg = 2 * np.pi * f[:, None] * u[None, :] + phase[:, None]
    return (amp[:, None] * (np.sin(arg) - np.sin(phase)[:, None])).sum(axis=0)


def _rot(theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # [T, 2, 2]


def _affine(lin: np.ndarray, src_center: np.ndarray, dst_center: np.ndarray) -> np.ndarray:
    """[T, 2, 3] matrices mapping dst -> src: ``src = src_center + lin @ (dst - dst_center)``."""
    offset = src_center - np.einsum("tij,tj->ti", lin, dst_center)
    return np.concatenate([lin, offset[:, :, None]], axis=2)


def _rounded_alpha(h: int, w: int) -> np.ndarray:
    """Anti-aliased rounded-rectangle mask [h, w] in [0, 1], one pixel inside the patch border."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    hx, hy = w / 2 - 1.0, h / 2 - 1.0
    rad = 0.3 * min(hx, hy)
    qx = np.abs(xs + 0.5 - w / 2) - (hx - rad)
    qy = np.abs(ys + 0.5 - h / 2) - (hy - rad)
    dist = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - rad
    return np.clip(0.5 - dist, 0.0, 1.0).astype(np.float32)


def sequence_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed of one sequence, from the global seed and the sequence name (order-independent)."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.SeedSequence([seed, key])


@dataclass(frozen=True)
class SequencePlan:
    """Everything random about one sequence, drawn up front; ``render(j)`` draws the sub-frame of tick j."""

    cfg: SynthConfig
    split: str
    name: str
    index: int
    background: str
    foreground: str
    background_scale: float
    bg_image: np.ndarray      # float32 [Hb, Wb, 3] intensity
    fg_image: np.ndarray      # float32 [hp, wp, 4]: premultiplied intensity RGB, alpha
    bg_matrices: np.ndarray   # float64 [T, 2, 3], view -> background (for WARP_INVERSE_MAP)
    fg_matrices: np.ndarray   # float64 [T, 2, 3], view -> foreground patch
    fg_boxes: np.ndarray      # int64 [T, 4], the object's bounding box in the view: x0, y0, x1, y1
    spike_seed: np.random.SeedSequence  # accumulator start values
    noise_seed: np.random.SeedSequence  # spurious spikes

    @property
    def shift_ticks(self) -> int:
        """This sequence's ``misalign`` shift of the recorded windows, in ticks (0 unless asked)."""
        return int(self.cfg.misalign.get(self.name, 0))

    def render(self, tick: int) -> np.ndarray:
        """The sub-frame of spike tick ``tick``: float32 [H, W, 3] intensity in [0, 1].

        The background is warped over the whole view; the object only over its bounding box (outside
        it the object's alpha is exactly 0), then composited there: ``bg * (1 - alpha) + rgb * alpha``.
        """
        out = cv2.warpAffine(self.bg_image, self.bg_matrices[tick], (self.cfg.width, self.cfg.height),
                             flags=_WARP_FLAGS, borderMode=cv2.BORDER_REFLECT)
        x0, y0, x1, y1 = (int(v) for v in self.fg_boxes[tick])
        if x1 > x0 and y1 > y0:
            m = self.fg_matrices[tick].copy()
            m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)  # ROI origin at (x0, y0)
            fg = cv2.warpAffine(self.fg_image, m, (x1 - x0, y1 - y0), flags=_WARP_FLAGS,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0, 0.0))
            roi = out[y0:y1, x0:x1]
            roi *= 1.0 - fg[..., 3:4]
            roi += fg[..., :3]
            np.clip(roi, 0.0, 1.0, out=roi)
        return out

    def object_alpha(self, tick: int) -> np.ndarray:
        """The object's coverage of the view at ``tick``: float32 [H, W] in [0, 1] (what ``render`` composites)."""
        alpha = np.ascontiguousarray(self.fg_image[..., 3])
        return cv2.warpAffine(alpha, self.fg_matrices[tick], (self.cfg.width, self.cfg.height), flags=_WARP_FLAGS,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def true_flow(self, ref_tick: int, supp_tick: int) -> np.ndarray:
        """Where each view pixel of ``ref_tick`` is at ``supp_tick``: float32 [H, W, 2] (dx, dy) in pixels.

        The convention of VRT's SpyNet and ``model.nets.vrt.flow_warp``: sampling the frame of ``supp_tick`` at
        ``(x + dx, y + dy)`` gives the frame of ``ref_tick`` wherever the content stays in view and is not
        covered or uncovered by the object. Pixels the object covers by more than half at ``ref_tick``
        follow the object's motion, all others the background's (pixel centres at integers, as cv2's).
        """
        h, w = self.cfg.height, self.cfg.width
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        view = np.stack([xs, ys, np.ones_like(xs)], axis=-1)             # [H, W, 3]

        def follow(matrices: np.ndarray) -> np.ndarray:
            src = view @ matrices[ref_tick].T                            # view (ref) -> scene [H, W, 2]
            lin, off = matrices[supp_tick][:, :2], matrices[supp_tick][:, 2]
            return (src - off) @ np.linalg.inv(lin).T                    # scene -> view (supp)

        target = np.where((self.object_alpha(ref_tick) > 0.5)[..., None], follow(self.fg_matrices),
                          follow(self.bg_matrices))
        return (target - view[..., :2]).astype(np.float32)


def read_synth_config(root: Path) -> SynthConfig:
    """The configuration a ``spikeprep synth`` tree was made with (its ``synth.json``), to redraw its plans."""
    path = Path(root) / SYNTH_JSON
    try:
        return SynthConfig.model_validate(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"is not the synth.json of a spikeprep synth tree ({err})",
                         "give the folder `spikeprep synth` wrote") from None


def recorded_windows(t0, t1, offset_s: float, drift_ppm: float, jitter_s=0.0) -> tuple[np.ndarray, np.ndarray]:
    """What an exposure table on another clock records for the true windows ``[t0, t1)`` (spike clock): the
    inverse of ``t_spike = (1 + drift) * t_recorded + offset``, each window then moved by its ``jitter_s``."""
    scale = 1.0 + drift_ppm * 1e-6
    jitter = np.asarray(jitter_s, np.float64)
    return ((np.asarray(t0, np.float64) - offset_s) / scale + jitter,
            (np.asarray(t1, np.float64) - offset_s) / scale + jitter)


def clock_truth(cfg: SynthConfig, index: int) -> tuple[float, float, np.ndarray]:
    """``(offset_ticks, drift_ppm, jitter_ticks per frame)`` of sequence ``index``'s exposure table: given in
    ``cfg.clock`` or drawn (uniformly within ``clock_offset_ticks`` / ``clock_drift_ppm``), from its own
    stream of the sequence's seed (the scene does not change with them)."""
    _, name = sequence_names(cfg)[index]
    rng = np.random.default_rng(sequence_seed(cfg.seed, name).spawn(4)[3])
    offset = float(rng.uniform(-cfg.clock_offset_ticks, cfg.clock_offset_ticks))
    drift = float(rng.uniform(-cfg.clock_drift_ppm, cfg.clock_drift_ppm))
    jitter = rng.normal(0.0, 1.0, cfg.frames) * cfg.jitter_ticks
    if name in cfg.clock:
        offset, drift = (float(v) for v in cfg.clock[name])
    return offset, drift, jitter


def registration_truth(cfg: SynthConfig, index: int) -> np.ndarray:
    """Sequence ``index``'s homography from spike pixels to the written RGB frame's pixels: given in
    ``cfg.rgb_homography`` or the same field of view at ``rgb_size`` followed by a warp about the frame's centre
    drawn within ``rgb_warp`` (from its own stream of the sequence's seed: the scene does not change with it)."""
    from spikeprep.registration import scale_homography

    _, name = sequence_names(cfg)[index]
    if name in cfg.rgb_homography:
        h = np.asarray(cfg.rgb_homography[name], np.float64).reshape(3, 3)
        return h / h[2, 2]
    rh, rw = cfg.rgb_size or (cfg.height, cfg.width)
    base = scale_homography(rh / cfg.spike_height, rw / cfg.spike_width)
    rng = np.random.default_rng(sequence_seed(cfg.seed, name).spawn(5)[4])
    shift_max, deg_max, scale_max = cfg.rgb_warp
    angle = math.radians(float(rng.uniform(-deg_max, deg_max)))
    zoom = 1.0 + float(rng.uniform(-scale_max, scale_max))
    shift = rng.uniform(-1.0, 1.0, 2) * shift_max / math.sqrt(2)
    cx, cy = (rw - 1) / 2, (rh - 1) / 2
    warp = np.eye(3)
    warp[:2, :2] = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    warp[:2, 2] = np.array([cx, cy]) - warp[:2, :2] @ np.array([cx, cy]) + shift
    return warp @ base


def make_plan(cfg: SynthConfig, index: int) -> SequencePlan:
    """Draw the scene, the photographs and both trajectories of sequence ``index`` (deterministic)."""
    split, name = sequence_names(cfg)[index]
    scene_seed, spike_seed, noise_seed = sequence_seed(cfg.seed, name).spawn(3)
    rng = np.random.default_rng(scene_seed)
    order = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5eed])).permutation(len(PHOTOS))
    background = PHOTOS[int(order[index % len(PHOTOS)])]
    others = [p for p in PHOTOS if p != background]
    foreground = others[int(rng.integers(len(others)))]

    H, W = cfg.height, cfg.width
    T = cfg.n_ticks
    u = np.arange(T, dtype=np.float64) / cfg.period_ticks          # time in frame periods
    speed = cfg.motion_px * cfg.period_ticks / cfg.exposure_ticks  # view pixels per frame period
    view_c = np.array([(W - 1) / 2, (H - 1) / 2])
    half_diag = 0.5 * math.hypot(W, H)

    # camera over the background: pan (tx, ty), zoom exp(logz), rotation theta
    tx, ty = _waves(rng, u, speed), _waves(rng, u, speed)
    logz = _waves(rng, u, 0.25 * speed / half_diag)
    theta = _waves(rng, u, 0.25 * speed / half_diag)
    lin = _rot(theta) / np.exp(logz)[:, None, None]
    corners = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [-0.5, H - 0.5], [W - 0.5, H - 0.5]]) - view_c
    reach = np.einsum("tij,cj->tci", lin, corners) + np.stack([tx, ty], -1)[:, None, :]
    lo, hi = reach.min(axis=(0, 1)), reach.max(axis=(0, 1))

    photo = load_photo(background).astype(np.float32) / 255.0
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
    ph, pw = photo.shape[:2]
    cover = max((hi[0] - lo[0] + 4) / pw, (hi[1] - lo[1] + 4) / ph)
    frac = rng.uniform(0.4, 0.8)                     # share of the photograph the view spans
    scale = max(cover, min(1.0, max(W / (frac * pw), H / (frac * ph))))
    bw, bh = math.ceil(scale * pw), math.ceil(scale * ph)
    bg_image = _resize(np.ascontiguousarray(photo), bw, bh) ** np.float32(cfg.gamma)
    c0 = np.array([rng.uniform(1 - lo[0], max(1 - lo[0], bw - 2 - hi[0])),
                   rng.uniform(1 - lo[1], max(1 - lo[1], bh - 2 - hi[1]))])
    bg_matrices = _affine(lin, c0 + np.stack([tx, ty], -1), np.broadcast_to(view_c, (T, 2)))

    # foreground object: a rounded crop of another photograph, moving on its own
    hp = max(4, round(H * rng.uniform(0.28, 0.45)))
    wp = max(4, round(W * rng.uniform(0.28, 0.45)))
    fphoto = load_photo(foreground).astype(np.float32) / 255.0
    fh, fw = fphoto.shape[:2]
    ffrac = rng.uniform(0.3, 0.6)
    fscale = max(wp / (ffrac * fw), hp / (ffrac * fh))
    fbig = _resize(fphoto, max(wp, math.ceil(fscale * fw)), max(hp, math.ceil(fscale * fh)))
    y0 = int(rng.integers(fbig.shape[0] - hp + 1))
    x0 = int(rng.integers(fbig.shape[1] - wp + 1))
    patch = fbig[y0:y0 + hp, x0:x0 + wp] ** np.float32(cfg.gamma)
    alpha = _rounded_alpha(hp, wp)
    fg_image = np.ascontiguousarray(np.concatenate([patch * alpha[..., None], alpha[..., None]], axis=2))

    obj_speed = 1.5 * speed
    path = np.stack([_waves(rng, u, obj_speed), _waves(rng, u, obj_speed)], -1)
    limit = 0.3 * np.array([W, H])
    path *= np.minimum(1.0, limit / np.maximum(np.abs(path).max(axis=0), 1e-9))
    center = view_c + rng.uniform(-0.15, 0.15, 2) * np.array([W, H]) + path
    patch_r = 0.5 * math.hypot(wp, hp)
    phi = rng.uniform(-0.3, 0.3) + _waves(rng, u, 0.3 * obj_speed / patch_r)
    size = np.exp(_waves(rng, u, 0.1 * obj_speed / patch_r))
    flin = _rot(-phi) / size[:, None, None]
    patch_c = np.array([(wp - 1) / 2, (hp - 1) / 2])
    fg_matrices = _affine(flin, np.broadcast_to(patch_c, (T, 2)), center)
    pcorners = np.array([[-0.5, -0.5], [wp - 0.5, -0.5], [-0.5, hp - 0.5], [wp - 0.5, hp - 0.5]]) - patch_c
    seen = np.einsum("tij,cj->tci", np.linalg.inv(flin), pcorners) + center[:, None, :]
    fg_boxes = np.stack([
        np.clip(np.floor(seen[..., 0].min(1)) - 1, 0, W), np.clip(np.floor(seen[..., 1].min(1)) - 1, 0, H),
        np.clip(np.ceil(seen[..., 0].max(1)) + 2, 0, W), np.clip(np.ceil(seen[..., 1].max(1)) + 2, 0, H),
    ], axis=1).astype(np.int64)

    return SequencePlan(cfg=cfg, split=split, name=name, index=index, background=background,
                        foreground=foreground, background_scale=float(scale), bg_image=bg_image,
                        fg_image=fg_image, bg_matrices=bg_matrices, fg_matrices=fg_matrices, fg_boxes=fg_boxes,
                        spike_seed=spike_seed, noise_seed=noise_seed)


def luma(frame: np.ndarray, spike_scale: int = 1) -> np.ndarray:
    """Rec.601 luma of an intensity frame [H, W, 3], block-averaged by ``spike_scale``: [H/s, W/s]."""
    y = (np.float32(LUMA_601[0]) * frame[..., 0] + np.float32(LUMA_601[1]) * frame[..., 1]
         + np.float32(LUMA_601[2]) * frame[..., 2])
    if spike_scale > 1:
        h, w = y.shape
        y = y.reshape(h // spike_scale, spike_scale, w // spike_scale, spike_scale).mean(axis=(1, 3))
    return y


def encode_frame(intensity: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Intensity [H, W, 3] in [0, 1] -> uint8 RGB (``** (1 / gamma)``, x255, rounded, clipped)."""
    x = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 1.0)
    if gamma != 1.0:
        x = x ** (1.0 / gamma)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# one sequence
# ------------------------------------------------------------------------------------------------
class _Spikes:
    """The spike stream of one sequence, held bit-packed ([T, ceil(Hs*Ws/8)] uint8, upright)."""

    def __init__(self, n_ticks: int, height: int, width: int):
        self.h, self.w = height, width
        self.packed = np.zeros((n_ticks, (height * width + 7) // 8), dtype=np.uint8)

    def __setitem__(self, tick: int, fire: np.ndarray) -> None:
        self.packed[tick] = np.packbits(fire.ravel())

    def frames(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Ticks [lo, hi) as bool [n, Hs, Ws] (upright)."""
        bits = np.unpackbits(self.packed[lo:hi], axis=1, count=self.h * self.w)
        return bits.reshape(-1, self.h, self.w).astype(bool)


def _write_spikes(cfg: SynthConfig, spike_dir: Path, spikes: _Spikes,
                  homography: np.ndarray | None = None) -> SpikeMeta:
    """Write the spike files and ``meta.json`` (with ``rgb_homography`` when given); returns the meta record."""
    spike_dir.mkdir()
    common = dict(format=cfg.spike_format, height=cfg.spike_height, width=cfg.spike_width,
                  rate_hz=cfg.rate_hz, flipud=cfg.spike_format == "dat")
    if homography is not None:
        common["rgb_homography"] = [[float(v) for v in row] for row in homography]
    T, chunk = cfg.n_ticks, 256
    if cfg.layout == "per-frame-dat":
        meta_args = dict(common, layout="per-frame", file_start_s={})
        ref = SpikeMeta(layout="stream", stream_file="x", start_s=cfg.start_s, **common)
        margin = cfg.effective_margin_ticks
        for i, a in enumerate(cfg.exposure_starts().tolist()):
            lo, hi = max(0, a - margin), min(T, a + cfg.exposure_ticks + margin)
            write_dat(spike_dir / f"{i:06d}.dat", spikes.frames(lo, hi), flipud=True)
            meta_args["file_start_s"][f"{i:06d}"] = float(ref.frame_time(cfg.start_s, lo))
        meta = SpikeMeta(**meta_args)
    else:
        stream_file = "stream" + FORMAT_SUFFIX[cfg.spike_format]
        meta = SpikeMeta(layout="stream", stream_file=stream_file, start_s=cfg.start_s, **common)
        path = spike_dir / stream_file
        if cfg.spike_format == "dat":
            with open(path, "wb") as fh:  # chunked: never the whole unpacked stream in memory
                for lo in range(0, T, chunk):
                    fh.write(pack_frames(spikes.frames(lo, lo + chunk), flipud=True).tobytes())
        elif meta.is_events:
            parts = []
            for lo in range(0, T, chunk):
                j, y, x = np.nonzero(spikes.frames(lo, lo + chunk))
                parts.append((j + lo, y, x))
            j, y, x = (np.concatenate(c) for c in zip(*parts))
            write_events(path, meta.frame_time(cfg.start_s, j.astype(np.int64)), y, x)
        else:
            write_binary_array(path, spikes.frames())
    write_spike_meta(spike_dir, meta)
    return meta


def render_sequence(cfg: SynthConfig, index: int, seq_dir: Path,
                    progress: Callable[[int], None] | None = None) -> dict:
    """Render sequence ``index`` into ``seq_dir`` (which must not exist); returns its synth.json entry."""
    plan = make_plan(cfg, index)
    paired = plan.split not in cfg.unpaired_splits
    seq_dir.mkdir(parents=True)
    (seq_dir / "blur").mkdir()
    if paired:
        (seq_dir / "sharp").mkdir()

    E, T, s, thr = cfg.exposure_ticks, cfg.n_ticks, cfg.spike_scale, float(cfg.threshold)
    starts = cfg.exposure_starts()
    which = np.full(T, -1, dtype=np.int64)
    for i, a in enumerate(starts.tolist()):
        which[a:a + E] = i
    acc = np.random.default_rng(plan.spike_seed).uniform(0.0, thr, (cfg.spike_height, cfg.spike_width))
    noise_rng = np.random.default_rng(plan.noise_seed)
    spikes = _Spikes(T, cfg.spike_height, cfg.spike_width)
    total = np.zeros((cfg.height, cfg.width, 3), dtype=np.float64)
    sharp = None
    write_frame = lambda path, intensity: write_rgb(path, encode_frame(intensity, cfg.gamma))   # noqa: E731
    if cfg.has_registration:
        from spikeprep.registration import resample_rgb, store_to_spike

        truth = registration_truth(cfg, index)
        rgb_hw = cfg.rgb_size or (cfg.height, cfg.width)
        # written RGB pixel -> rendered pixel: the rendered grid is the spike grid times spike_scale
        to_rendered = np.linalg.inv(truth @ store_to_spike(s, (0, 0, cfg.spike_height, cfg.spike_width)))

        def write_frame(path, intensity):
            write_rgb(path, encode_frame(resample_rgb(intensity, to_rendered, rgb_hw), cfg.gamma))

    for j in range(T):
        sub = plan.render(j)
        acc += luma(sub, s)
        fire = acc >= thr
        acc[fire] -= thr
        if thr < 1.0:  # a pixel brighter than one threshold per tick saturates at one spike per tick
            np.minimum(acc, thr, out=acc)
        if cfg.noise > 0:
            fire |= noise_rng.random(fire.shape) < cfg.noise
        spikes[j] = fire
        i = int(which[j])
        if i < 0:
            continue
        np.add(total, sub, out=total)
        if j == starts[i] + E // 2:
            sharp = sub.copy()
        if j == starts[i] + E - 1:
            write_frame(seq_dir / "blur" / f"{i:06d}.png", total / E)
            if paired:
                write_frame(seq_dir / "sharp" / f"{i:06d}.png", sharp)
            total[...] = 0.0
            if progress is not None:
                progress(1)

    homography = registration_truth(cfg, index) if cfg.has_registration else None
    meta = _write_spikes(cfg, seq_dir / "spike", spikes,
                         homography if cfg.rgb_homography_in_meta else None)
    d = plan.shift_ticks
    t0 = meta.frame_time(cfg.start_s, starts + (d - 0.5))
    t1 = meta.frame_time(cfg.start_s, starts + (d + E - 0.5))
    entry = dict(split=plan.split, name=plan.name, background=plan.background,
                 foreground=plan.foreground, background_scale=round(plan.background_scale, 6),
                 misalign_ticks=d, spike_count=int(np.unpackbits(spikes.packed).sum(dtype=np.int64)))
    if cfg.has_clocks:
        offset, drift, jitter = clock_truth(cfg, index)
        t0, t1 = recorded_windows(t0, t1, offset / cfg.rate_hz, drift, jitter / cfg.rate_hz)
        entry.update(clock_offset_ticks=offset, clock_offset_s=offset / cfg.rate_hz, clock_drift_ppm=drift,
                     jitter_ticks=cfg.jitter_ticks, jitter_rms_ticks=float(np.sqrt(np.mean(jitter ** 2))))
    if cfg.unpaired_splits:
        entry["paired"] = paired
    if homography is not None:
        entry.update(rgb_homography=[round(float(v), 12) for v in homography.ravel()],
                     rgb_size=list(cfg.rgb_size or (cfg.height, cfg.width)))
    write_exposure_csv(seq_dir / "exposure.csv", np.arange(cfg.frames), t0, t1)
    return entry


# ------------------------------------------------------------------------------------------------
# the whole tree
# ------------------------------------------------------------------------------------------------
_SEQ_DIR_NAME = "seq_"


def _looks_like_synth_tree(out: Path) -> bool:
    if (out / SYNTH_JSON).is_file():
        return True
    for entry in out.iterdir():
        if entry.name not in SPLITS or not entry.is_dir():
            return False
        if any(not (c.name.startswith(_SEQ_DIR_NAME) or c.name.startswith(_TMP_PREFIX))
               for c in entry.iterdir()):
            return False
    return True


def prepare_out_dir(out: Path, overwrite: bool = False) -> None:
    """Make ``out`` ready: it must be absent or empty, or (``overwrite``) an earlier synth output.

    With ``overwrite``, only what synth writes (train/, val/, synth.json) is removed; a directory holding
    anything else is refused, so a mistyped OUT cannot wipe unrelated data.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory", fix="choose a directory path for OUT")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "output directory is not empty",
                             fix="pass --overwrite to replace an earlier synth output, or choose an empty directory")
        if not _looks_like_synth_tree(out):
            raise InputError(out, "holds files that synth did not write; --overwrite only replaces an "
                                  "earlier synth output", fix="choose an empty or new directory for OUT")
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
        (out / SYNTH_JSON).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _render_into_place(out: Path, cfg: SynthConfig, index: int,
                       progress: Callable[[int], None] | None) -> dict:
    split, name = sequence_names(cfg)[index]
    final = out / split / name
    tmp = out / split / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        entry = render_sequence(cfg, index, tmp, progress)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


_progress_queue = None


def _worker_init(queue) -> None:
    global _progress_queue
    _progress_queue = queue
    cv2.setNumThreads(1)  # one sequence per process; do not oversubscribe the cores


def _worker_task(out: Path, cfg: SynthConfig, index: int) -> dict:
    queue = _progress_queue
    return _render_into_place(out, cfg, index, None if queue is None else queue.put)


def _versions() -> dict:
    import skimage

    return {"numpy": np.__version__, "opencv": cv2.__version__, "scikit-image": skimage.__version__}


def describe(cfg: SynthConfig, sequences: list[dict]) -> dict:
    """The content of ``synth.json``: the resolved configuration plus every derived number."""
    return {
        "synth_version": SYNTH_VERSION,
        "config": cfg.model_dump(mode="json"),
        "spike_grid": {"height": cfg.spike_height, "width": cfg.spike_width, "scale": cfg.spike_scale},
        "timeline": {
            "n_ticks": cfg.n_ticks,
            "effective_margin_ticks": cfg.effective_margin_ticks,
            "exposure_start_ticks": cfg.exposure_starts().tolist(),
            "sharp_tick_offset": cfg.exposure_ticks // 2,
            "recorded_window": "[frame_time(start_s, a_i + d - 0.5), frame_time(start_s, a_i + d + E - 0.5))",
            **({"clock_map": "recorded by another clock: t_spike = (1 + drift) * t_recorded + offset (offset and "
                             "drift per sequence below), each window moved by its jitter"} if cfg.has_clocks else {}),
        },
        "photos": list(PHOTOS),
        "versions": _versions(),
        "sequences": sequences,
    }


def synthesize(out: Path, cfg: SynthConfig, workers: int = 1, progress: bool = True,
               overwrite: bool = False) -> Path:
    """Write a synthetic raw data set for ``cfg`` under ``out`` (native layout); returns ``out``.

    ``workers`` > 1 renders sequences in parallel processes; the output does not depend on it.
    ``out`` must be absent or empty unless ``overwrite`` (see ``prepare_out_dir``).
    ``synth.json`` is written last: a tree without it is incomplete.
    """
    from tqdm import tqdm

    out = Path(out)
    prepare_out_dir(out, overwrite)
    names = sequence_names(cfg)
    for split in sorted({s for s, _ in names}):
        (out / split).mkdir(exist_ok=True)
    workers = max(1, min(int(workers), len(names)))
    bar = tqdm(total=len(names) * cfg.frames, unit="frame", desc="synth", disable=not progress)
    try:
        if workers == 1:
            entries = [_render_into_place(out, cfg, k, bar.update) for k in range(len(names))]
        else:
            entries = _run_pool(out, cfg, len(names), workers, bar)
    finally:
        bar.close()
    text = json.dumps(describe(cfg, entries), indent=2, sort_keys=True) + "\n"
    atomic_write_text(out / SYNTH_JSON, text)
    return out


def _run_pool(out: Path, cfg: SynthConfig, n: int, workers: int, bar) -> list[dict]:
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")  # no fork of a process that may hold threads (cv2, tqdm)
    queue = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                bar.update(queue.get_nowait())
            except queue_mod.Empty:
                return

    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(queue,)) as pool:
        futures = [pool.submit(_worker_task, out, cfg, k) for k in range(n)]
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for fut in done:
                    fut.result()  # raise a worker's error now
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        entries = [f.result() for f in futures]
    drain()
    return entries
