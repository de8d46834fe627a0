"""What ``spikeprep compare`` writes: the spike arm judged against the spike-free arm (DESIGN section 8).

``outputs/metrics/compare_{spike}_vs_{base}_{step}.json`` is a ``CompareReport``: both runs, the table of
their validation metrics at every common step (overall and on motion boundaries), the spike run's
reliance, the store's baselines when given, the acceptance verdict, and the crops of the side-by-side
picture. Frozen validated records with a version field; another version is refused. The metrics are the
validation reports' own ``Metrics`` records, the baselines the ``BaselinesReport`` as read.

Version 2 is version 1's layout written as these records, plus ``reliance_note`` (why the spike run's
reliance was not measured, which version 1 said only inside ``table_markdown``).

Version 3 adds the static half (each table row's ``static``, the report's ``static_fraction``), SSIM on Y
(``Metrics.ssim_y``) and the spike run's ``spike_fuse_type``; its reliance rows are the test-time
*sensitivity* probes (``db_from_spikes`` is the count-zero sensitivity, version 2's name kept). Version 2
reports are still read, with those None; version 1 is refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from schemas.baselines import BaselinesReport
from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record
from schemas.val_report import Arm, Metrics

COMPARE_VERSION = 3
READ_VERSIONS = (2, 3)
RuleStatus = Literal["PASS", "FAIL", "not evaluated"]



class RunRef(Record):
    """One compared run: its experiment, arm, the metrics directory its reports came from, their steps."""

    exp: str
    arm: Arm
    source: str
    steps: list[int]


class SkippedSteps(Record):
    """Steps validated in one run only (not tabled, not judged)."""

    spike_only: list[int]
    base_only: list[int]


class ArmMetrics(Record):
    """One region's metrics of both arms at one step."""

    spike: Metrics
    base: Metrics


class TableRow(Record):
    """Both arms at one common step, overall, on motion boundaries and on the static half (None where a
    run's validation report predates it)."""

    step: int = Field(ge=0)
    overall: ArmMetrics
    boundary: ArmMetrics
    static: ArmMetrics | None = None


class RegionPsnrY(Record):
    """PSNR-Y overall and on motion boundaries (None where the report has none)."""

    overall: float | None
    boundary: float | None


class RelianceRow(Record):
    """The spike run's sensitivity probes at one step: PSNR-Y with the true voxels and with each voxel probe
    (``schemas.val_report.PROBES``; None where the probe was not run), and the count-zero sensitivity
    ``db_from_spikes`` (true minus count-zero; NaN when both are infinite). A diagnostic, not the spikes'
    worth."""

    step: int = Field(ge=0)
    db_from_spikes: float | None
    boundary_db_from_spikes: float | None
    true: RegionPsnrY
    zeroed: RegionPsnrY | None
    other_clip: RegionPsnrY | None
    reversed: RegionPsnrY | None


class RuleResult(Record):
    """One rule of the acceptance test. ``margin`` is spike - base (None when not finite or not evaluated);
    a rule that was not evaluated says why in ``reason``."""

    rule: str
    status: RuleStatus
    spike: float | None
    base: float | None
    margin: float | None
    reason: str | None = None

    @model_validator(mode="after")
    def _judged_or_explained(self) -> "RuleResult":
        if self.status == "not evaluated":
            if not self.reason:
                raise ValueError("a rule that was not evaluated needs a reason")
        elif self.spike is None or self.base is None or self.reason is not None:
            raise ValueError(f"a {self.status} rule has both numbers and no reason")
        return self


class Verdict(Record):
    """The acceptance rule judged at ``step``: both rules, ``result`` and a one-line ``summary``.

    ``result`` is PASS when the PSNR rule passes and the LPIPS rule did not fail (it may be not evaluated;
    ``summary`` then says so).
    """

    step: int = Field(ge=0)
    psnr: RuleResult
    lpips: RuleResult
    result: Literal["PASS", "FAIL"]
    summary: str                  # "PASS", "FAIL: ...", or "PASS on PSNR only; the LPIPS rule was not evaluated ..."

    @model_validator(mode="after")
    def _result_follows_the_rules(self) -> "Verdict":
        follows = "PASS" if self.psnr.status == "PASS" and self.lpips.status != "FAIL" else "FAIL"
        if self.result != follows:
            raise ValueError(f"result {self.result} contradicts the rules (PSNR {self.psnr.status}, "
                             f"LPIPS {self.lpips.status})")
        return self

    @property
    def passed(self) -> bool:
        """Whether the spike arm passed."""
        return self.result == "PASS"


Box = tuple[int, int, int, int]   # x0, y0, x1, y1 in the picture's pixels


class CropSpot(Record):
    """One crop: where in the val frame, how strong, its PSNRs and (once drawn) its tiles in the picture."""

    seq: str
    frame: int = Field(ge=0)
    y: int = Field(ge=0)
    x: int = Field(ge=0)
    size: int = Field(gt=0)
    score: float = Field(ge=0)             # mean |sharp - blur| over the window and RGB, 0..255
    psnr_rgb_base: float | None = None
    psnr_rgb_spike: float | None = None
    boxes: dict[str, Box] = {}             # column (blur, base, spike, sharp) -> its tile


class CompareReport(Record):
    """One comparison of a spike run with a base run; ``steps`` are the steps both validated.

    ``split``, ``frames``, ``boundary_fraction`` and ``static_fraction`` are those of the judged step's
    validation (both runs were checked to agree; ``static_fraction`` None when a run predates it);
    ``spike_fuse_type`` is the spike run's MODEL.FUSE.TYPE (None when its reports predate
    version 3); ``table_markdown`` is the table as ``spikeprep compare`` prints it.
    ``picture`` / ``curves`` are the written PNGs (None with ``picture_note`` / per-arm ``curves_notes``
    saying why); ``lpips_notes`` say per arm why LPIPS is missing, where it is.
    """

    version: Literal[2, 3] = COMPARE_VERSION
    spike: RunRef
    base: RunRef
    split: str
    frames: int = Field(ge=0)
    boundary_fraction: float = Field(gt=0, le=1)
    static_fraction: float | None = Field(None, gt=0, le=1)
    spike_fuse_type: str | None = None
    steps: list[int] = Field(min_length=1)
    skipped_steps: SkippedSteps
    table: list[TableRow]
    table_markdown: str
    lpips_notes: dict[Arm, str]
    reliance: list[RelianceRow]
    reliance_note: str | None = None
    baselines: BaselinesReport | None = None
    verdict: Verdict
    picture: str | None = None
    picture_note: str | None = None
    crops: list[CropSpot] = []
    curves: str | None = None
    curves_notes: dict[Arm, str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> "CompareReport":
        if (self.spike.arm, self.base.arm) != ("spike", "base"):
            raise ValueError(f"spike and base must be the spike and the base arm, not {self.spike.arm} and "
                             f"{self.base.arm}")
        if [r.step for r in self.table] != self.steps:
            raise ValueError("the table has one row per common step, in order")
        if self.verdict.step not in self.steps:
            raise ValueError(f"verdict step {self.verdict.step} is not a common step {self.steps}")
        if not {r.step for r in self.reliance} <= set(self.steps):
            raise ValueError("reliance rows are for common steps only")
        return self

    @property
    def passed(self) -> bool:
        """Whether the spike arm passed the acceptance rule (``verdict.passed``)."""
        return self.verdict.passed


def write_compare_report(path: str | os.PathLike, report: CompareReport) -> Path:
    """Write atomically (a reader never sees half a report)."""
    return write_json_record(path, report)


def read_compare_report(path: str | os.PathLike) -> CompareReport:
    """Read and validate; ``ValueError`` naming the file on a bad or foreign report."""
    return read_json_record(path, CompareReport, kind="compare report", versions=READ_VERSIONS,
                            rerun="re-run `spikeprep compare`")
