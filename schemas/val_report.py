"""What a training run writes for others to read: validation reports (DESIGN section 8).

``outputs/metrics/val_{exp}_{step}.json`` is a ``ValReport``; ``spikeprep compare`` reads two runs' reports
and refuses another version instead of guessing. Frozen validated records with a version field.

LPIPS is ``None`` when it was not computed; ``lpips_note`` then says why (for example "not computed
(weights unavailable: ...)"), and every report prints that note instead of a number.

Version 2 adds ``reliance`` (DESIGN section 8): the spike arm scored again with count-zero voxels, another
clip's voxels and time-reversed bins. These probes measure the arm's *sensitivity* to its voxels at test
time, not what the spikes are worth (that is measured by training: spike - base, spike - totals-only); the
count-zero sensitivity is the PSNR-Y with the true voxels minus the PSNR-Y with count-zero voxels (version 2
called it "dB from the spikes"; the field and method names stay for old reports).

Version 3 adds the static half (``static``, ``static_fraction``: per frame the pixels where sharp and blur
differ least), SSIM on Y (``Metrics.ssim_y``) beside SSIM on RGB, and the spike arm's ``fuse_type`` (a head
fitted with counts, ``FITTED_FUSE_TYPES``, has a count-zero sensitivity that is large by construction).
Version 1 and 2 reports are still read, with those fields None.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.fuse_types import FITTED_FUSE_TYPES
from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record

RUN_VERSION = 3
READ_VERSIONS = (1, 2, 3)   # 1: no ``reliance``; 2: no ``static``, ``ssim_y``, ``fuse_type``
Arm = Literal["spike", "base"]    # the spike arm and the spike-free arm (--no-spike)
NOT_COMPUTED = "not computed"
_FOUR_DECIMALS = ("ssim", "ssim_y", "lpips")


def format_metric(value: float | None, key: str) -> str:
    """One metric cell, the one number format of every report: 4 decimals for SSIM (RGB, Y) and LPIPS, 2 for
    PSNR (any other ``key``); ``inf`` for identical images; ``not computed`` for None."""
    if value is None:
        return NOT_COMPUTED
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}" if key in _FOUR_DECIMALS else f"{value:.2f}"


class Metrics(Record):
    """Mean over frames of per-frame metrics (uint8 images, basicsr's PSNR and SSIM; ``ssim_y`` None in
    reports before version 3)."""

    frames: int = Field(ge=0)
    psnr_rgb: float | None
    psnr_y: float | None
    ssim: float | None
    ssim_y: float | None = None
    lpips: float | None = None

    @field_validator("psnr_rgb", "psnr_y", "ssim", "ssim_y", "lpips")
    @classmethod
    def _finite_or_none(cls, value: float | None) -> float | None:
        # PSNR of identical images is +inf in basicsr; a mean over frames keeps it finite or inf.
        if value is not None and math.isnan(value):
            raise ValueError("must not be NaN")
        return value


class ProbeMetrics(Record):
    """The metrics of one voxel probe: the same frames, scored overall, on motion boundaries and (version 3)
    on the static half."""

    overall: Metrics
    boundary: Metrics
    static: Metrics | None = None


# The voxel probes of the spike-reliance measurement, in report order.
PROBES = ("zeroed", "other_clip", "reversed")
PROBE_TITLES = {"zeroed": "count-zero voxels", "other_clip": "another clip's voxels",
                "reversed": "bins reversed in time"}


class SpikeReliance(Record):
    """The spike arm fed altered voxels (DESIGN section 8): a model that ignores its spikes scores the same.
    A sensitivity diagnostic: a model that reads only the spike total and one that reads their timing can
    both lose under every probe.

    ``zeroed``: every count 0 (normalised like any count); ``other_clip``: the voxels of another val clip of
    the same size (None, with ``other_clip_note``, when the split has no such clip); ``reversed``: the K
    bins in reverse time order.
    """

    zeroed: ProbeMetrics
    other_clip: ProbeMetrics | None
    reversed: ProbeMetrics
    other_clip_note: str | None = None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


class ValReport(Record):
    """One validation of one run at one step.

    ``boundary`` restricts the same metrics to motion boundaries: per frame, the ``boundary_fraction``
    of pixels where the sharp and the blurred frame differ most (mean absolute difference over RGB);
    ``static`` to the static part: the ``static_fraction`` of pixels where they differ least (None in
    reports before version 3). ``fuse_type``: the spike arm's MODEL.FUSE.TYPE (None for the base arm and
    before version 3).
    ``images_dir`` holds ``{seq}/{frame:06d}_{blur,recon,sharp}.png`` of this validation when they were
    written (relative to the outputs root), else ``None``.
    """

    version: Literal[1, 2, 3] = RUN_VERSION
    exp: str
    arm: Arm
    step: int = Field(ge=0)
    split: str
    overall: Metrics
    boundary: Metrics
    boundary_fraction: float = Field(gt=0, le=1)
    per_sequence: dict[str, Metrics]
    lpips_note: str | None = None
    images_dir: str | None = None
    seconds: float = Field(ge=0)
    reliance: SpikeReliance | None = None
    reliance_note: str | None = None
    static: Metrics | None = None
    static_fraction: float | None = Field(None, gt=0, le=1)
    fuse_type: str | None = None

    @model_validator(mode="after")
    def _static_with_its_fraction(self) -> "ValReport":
        if (self.static is None) != (self.static_fraction is None):
            raise ValueError("static and static_fraction are both given or both absent")
        if self.version >= 3 and self.static is None:
            raise ValueError("a version 3 report scores the static half (static, static_fraction)")
        return self

    @property
    def fitted_head(self) -> bool:
        """Whether the spike arm's head was fitted with counts (its count-zero sensitivity is large by
        construction); False for the base arm and for reports before version 3."""
        return self.fuse_type in FITTED_FUSE_TYPES

    def db_from_spikes(self, key: str = "psnr_y", region: str = "overall") -> float | None:
        """The count-zero sensitivity: true minus count-zero voxels, in dB of ``key`` (``psnr_y`` or
        ``psnr_rgb``) over ``region`` (``overall`` or ``boundary``); None without a reliance measurement.
        A test-time sensitivity, not the spikes' worth (the name is version 2's)."""
        if self.reliance is None:
            return None
        return _difference(getattr(getattr(self, region), key), getattr(getattr(self.reliance.zeroed, region), key))


def val_image_path(images_dir: str | os.PathLike, seq: str, frame: int, kind: str) -> Path:
    """One image of a validation under its ``images_dir``: ``{seq}/{frame:06d}_{kind}.png``, ``kind`` one of blur,
    recon, sharp. The one spelling of that layout: validation writes these files, ``spikeprep compare`` reads them."""
    return Path(images_dir) / seq / f"{frame:06d}_{kind}.png"


def val_report_path(outputs: str | os.PathLike, exp: str, step: int) -> Path:
    """``<outputs>/metrics/val_<exp>_<step>.json``: where a run's validation report at ``step`` lives."""
    return Path(outputs) / "metrics" / f"val_{exp}_{step}.json"


def write_val_report(path: str | os.PathLike, report: ValReport) -> Path:
    """Write atomically (a reader never sees half a report)."""
    return write_json_record(path, report)


def read_val_report(path: str | os.PathLike) -> ValReport:
    """Read and validate; ``ValueError`` naming the file on a bad or foreign report."""
    return read_json_record(path, ValReport, kind="validation report", versions=READ_VERSIONS,
                            rerun="re-run the validation with this version")
