"""What ``spikeprep baselines`` writes: non-learned restorations of a store's split, scored like validation.

``DATA_ROOT/baselines/<split>.json`` is a ``BaselinesReport``; ``spikeprep compare --baselines`` prints its
rows under the two arms. Frozen validated records with a version field; another version is refused.
A row that does not apply to the store (TFI on bins wider than one spike frame) has no metrics and a note.

Version 2 adds the static half (each row's ``static``, the report's ``static_fraction``: per frame the pixels
where sharp and blur differ least) and SSIM on Y (``Metrics.ssim_y``), the columns validation reports; version
1 reports are still read, with those None.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record
from schemas.val_report import Metrics

BASELINES_VERSION = 2
READ_VERSIONS = (1, 2)
BASELINES_DIRNAME = "baselines"



class BaselineRow(Record):
    """One restoration: its name (``blur``, ``tfp_<w>``, ``tfi``, ``lsq``), what it is, and its scores
    (``static`` None in version 1 reports)."""

    name: str
    description: str
    overall: Metrics | None
    boundary: Metrics | None
    note: str | None = None
    static: Metrics | None = None

    def regions(self) -> dict[str, Metrics | None] | None:
        """``{overall, static, boundary: Metrics}`` (None for a row without metrics), as tables take them."""
        if self.overall is None:
            return None
        return {"overall": self.overall, "static": self.static, "boundary": self.boundary}

    @model_validator(mode="after")
    def _scored_or_explained(self) -> "BaselineRow":
        if (self.overall is None) != (self.boundary is None):
            raise ValueError("overall and boundary are both scored or both absent")
        if self.overall is None and not self.note:
            raise ValueError("a row without metrics needs a note saying why")
        if self.overall is None and self.static is not None:
            raise ValueError("a row without metrics has no static metrics either")
        return self


class BaselinesReport(Record):
    """The baselines of one split of one store.

    ``lsq_coefficients`` is the fitted map, ``[K + 4][3]``: rows are the K counts, blur R, G, B and the
    constant; columns the sharp R, G, B it predicts. ``clip_len`` is the clip length the frames were
    grouped in (the one of the validation they are compared with: frames in shorter runs are not scored).
    """

    version: Literal[1, 2] = BASELINES_VERSION
    store: str
    split: str
    fit_split: str
    num_bins: int = Field(gt=0)
    clip_len: int = Field(gt=0)
    frames: int = Field(ge=0)
    fit_frames: int = Field(ge=0)
    boundary_fraction: float = Field(gt=0, le=1)
    static_fraction: float | None = Field(None, gt=0, le=1)
    rows: list[BaselineRow]
    lsq_coefficients: list[list[float]] | None = None
    lpips_note: str | None = None
    seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _static_scored(self) -> "BaselinesReport":
        if self.version >= 2 and (self.static_fraction is None or
                                  any(r.overall is not None and r.static is None for r in self.rows)):
            raise ValueError("a version 2 report scores the static half of every scored row (static_fraction, "
                             "each row's static)")
        return self

    def row(self, name: str) -> BaselineRow:
        """The row called ``name``; ``KeyError`` naming the rows there are."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no baseline {name!r}; the report has {[r.name for r in self.rows]}")


def baselines_path(root: str | os.PathLike, split: str) -> Path:
    """``DATA_ROOT/baselines/<split>.json``: where ``spikeprep baselines`` writes by default."""
    return Path(root) / BASELINES_DIRNAME / f"{split}.json"


def write_baselines_report(path: str | os.PathLike, report: BaselinesReport) -> Path:
    """Write atomically (a reader never sees half a report)."""
    return write_json_record(path, report)


def read_baselines_report(path: str | os.PathLike) -> BaselinesReport:
    """Read and validate; ``ValueError`` naming the file on a bad or foreign report."""
    return read_json_record(path, BaselinesReport, kind="baselines report", versions=READ_VERSIONS,
                            rerun="re-run `spikeprep baselines`")
