"""What a training run writes for others to read: validation reports (DESIGN section 8).

``outputs/metrics/val_{exp}_{step}.json`` is a ``ValReport``; ``spikeprep compare`` reads two runs' reports
and refuses another version instead of guessing. Frozen validated records with a version field.

LPIPS is ``None`` when it was not computed; ``lpips_note`` then says why (for example "not computed
(weights unavailable: ...)"), and every report prints that note instead of a number.

Version 2 adds ``reliance`` (DESIGN section 8): the spike arm scored again with count-zero voxels, another
clip's voxels and time-reversed bins; "dB from the spikes" is the PSNR-Y with the true voxels minus the
PSNR-Y with count-zero voxels. Version 1 reports (no reliance) are still read, with ``reliance`` None.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record

RUN_VERSION = 2
READ_VERSIONS = (1, 2)   # version 1: the same record without ``reliance``
Arm = Literal["spike", "base"]    # the spike arm and the spike-free arm (--no-spike)



class Metrics(Record):
    """Mean over frames of per-frame metrics (uint8 images, basicsr's PSNR and SSIM)."""

    frames: int = Field(ge=0)
    psnr_rgb: float | None
    psnr_y: float | None
    ssim: float | None
    lpips: float | None = None

    @field_validator("psnr_rgb", "psnr_y", "ssim", "lpips")
    @classmethod
    def _finite_or_none(cls, value: float | None) -> float | None:
        # PSNR of identical images is +inf in basicsr; a mean over frames keeps it finite or inf.
        if value is not None and math.isnan(value):
            raise ValueError("must not be NaN")
        return value


class ProbeMetrics(Record):
    """The metrics of one voxel probe: the same frames, scored overall and on motion boundaries."""

    overall: Metrics
    boundary: Metrics


# The voxel probes of the spike-reliance measurement, in report order.
PROBES = ("zeroed", "other_clip", "reversed")
PROBE_TITLES = {"zeroed": "count-zero voxels", "other_clip": "another clip's voxels",
                "reversed": "bins reversed in time"}


class SpikeReliance(Record):
    """The spike arm fed altered voxels (DESIGN section 8): a model that ignores its spikes scores the same.

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
    of pixels where the sharp and the blurred frame differ most (mean absolute difference over RGB).
    ``images_dir`` holds ``{seq}/{frame:06d}_{blur,recon,sharp}.png`` of this validation when they were
    written (relative to the outputs root), else ``None``.
    """

    version: Literal[1, 2] = RUN_VERSION
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

    def db_from_spikes(self, key: str = "psnr_y", region: str = "overall") -> float | None:
        """True minus count-zero voxels, in dB of ``key`` (``psnr_y`` or ``psnr_rgb``) over ``region``
        (``overall`` or ``boundary``); None without a reliance measurement."""
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
