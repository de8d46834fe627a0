"""What ``spikeprep verify DATA_ROOT`` finds: every stored frame of a store checked against its manifest.

A frozen validated record with a version field (``--json PATH`` writes it; another version is refused).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record

VERIFY_VERSION = 1



class VerifyProblem(Record):
    """One damaged or inconsistent frame (or sequence, ``frame_idx`` None): where, and what is wrong."""

    split: str
    seq: str
    frame_idx: int | None
    path: str                            # the file at fault (absolute)
    problem: str


class VerifyReport(Record):
    """Frames checked and problems found; ``ok`` when there are none."""

    version: Literal[1] = VERIFY_VERSION
    store: str
    sequences: int = Field(ge=0)
    frames: int = Field(ge=0)            # kept manifest rows checked (voxels, blur and sharp of each)
    unpaired: int = Field(0, ge=0)       # of them unpaired: voxels and blur checked, their sharp row must be empty
    problems: list[VerifyProblem]
    seconds: float = Field(ge=0)

    @property
    def ok(self) -> bool:
        return not self.problems


def write_verify_report(path: str | os.PathLike, report: VerifyReport) -> Path:
    """Write atomically."""
    return write_json_record(path, report)


def read_verify_report(path: str | os.PathLike) -> VerifyReport:
    """Read and validate; ``ValueError`` naming the file on a bad or foreign report."""
    return read_json_record(path, VerifyReport, kind="verify report", versions=(VERIFY_VERSION,),
                            rerun="re-run `spikeprep verify`")
