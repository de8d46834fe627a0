"""``DATA_ROOT/audit/clock/<split>/<seq>.json``: one sequence's clock fix (``spikeprep audit --fix``).

An exposure table written by the RGB camera's clock (or from its nominal frame rate) disagrees with the
spike camera's clock by an offset and a slow drift. ``audit --fix`` estimates, per sequence, the map

    t_spike = (1 + drift) * t_recorded + offset

from where the spikes match each blur frame best, and keeps what it found here: the map (``offset_s``,
``offset_ticks``, ``drift_ppm``), how well it fits (``residual_ticks``: RMS over the frames used), which frames
it used, and its verdict. ``fixed``: ingest maps the sequence's recorded windows with it before voxelizing
(every later ingest rerun too: the map is part of the sequence's fingerprint). ``unfixed``: the fit could not
be trusted (``reason`` says why) and the sequence keeps its recorded windows.

``exposure_sha256`` is the digest of the recorded windows the map was estimated from (``recorded_digest``):
ingest applies a fix only to the table it was fitted to, so an edited ``exposure.csv`` drops it (and says so).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record

CLOCK_FIX_VERSION = 1
CLOCK_DIRNAME = "clock"          # under DATA_ROOT/audit/
FIXED, UNFIXED = "fixed", "unfixed"


def clock_fix_path(root: str | os.PathLike, split: str, seq: str) -> Path:
    """Where the clock fix of ``split/seq`` lives in the store at ``root``."""
    return Path(root) / "audit" / CLOCK_DIRNAME / split / f"{seq}.json"


def recorded_digest(frame_idx, t0, t1) -> str:
    """sha256 of a sequence's recorded windows (frame_idx int64, t0 and t1 float64, in frame order)."""
    h = hashlib.sha256()
    for values, dtype in ((frame_idx, np.int64), (t0, np.float64), (t1, np.float64)):
        h.update(np.ascontiguousarray(np.asarray(values, dtype)).tobytes())
    return h.hexdigest()


class ClockFix(Record):
    """One sequence's clock fix; ``map_times`` applies it. ``offset_s`` is the offset at recorded time 0
    (``offset_ticks`` the same in spike ticks), ``drift_ppm`` the rate error in parts per million;
    ``residual_ticks`` the RMS of the located shifts about the fitted line over the ``frames_used``,
    ``uncertainty_ticks`` two standard errors of the fitted windows where the line is extrapolated furthest;
    ``frames_located`` of ``frames_total`` frames had a correlation peak to locate. Unfixed records keep the
    figures of the fit that was refused, where there was one."""

    version: Literal[1] = CLOCK_FIX_VERSION
    split: str
    seq: str
    verdict: Literal["fixed", "unfixed"]
    reason: str | None
    rate_hz: float = Field(gt=0)
    offset_s: float | None
    offset_ticks: float | None
    drift_ppm: float | None
    residual_ticks: float | None
    uncertainty_ticks: float | None
    frames_total: int = Field(ge=0)
    frames_located: int = Field(ge=0)
    frames_used: list[int]
    scan_ticks: int = Field(ge=0)
    exposure_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _consistent(self) -> "ClockFix":
        if (self.verdict == UNFIXED) != (self.reason is not None):
            raise ValueError(f"a {self.verdict} clock fix " + ("needs the reason it was left unfixed"
                                                               if self.verdict == UNFIXED else "has no reason"))
        if self.verdict == FIXED and None in (self.offset_s, self.offset_ticks, self.drift_ppm, self.residual_ticks):
            raise ValueError("a fixed clock fix needs offset_s, offset_ticks, drift_ppm and residual_ticks")
        return self

    def map_times(self, t):
        """Recorded times (float or array, seconds) on the spike clock: ``(1 + drift) * t + offset``; the
        identity for an unfixed sequence."""
        if self.verdict != FIXED:
            return t
        return (1.0 + self.drift_ppm * 1e-6) * np.asarray(t, np.float64) + self.offset_s


def write_clock_fix(path: str | os.PathLike, record: ClockFix) -> Path:
    """Write atomically (a reader never sees half a record); the folder is created."""
    return write_json_record(path, record)


def read_clock_fix(path: str | os.PathLike) -> ClockFix:
    """Read and validate; ``ValueError`` naming the file on a missing, unreadable, invalid or foreign record."""
    return read_json_record(path, ClockFix, kind="clock fix", versions=(CLOCK_FIX_VERSION,),
                            rerun="re-run `spikeprep audit DATA_ROOT --fix`: it writes it again")
