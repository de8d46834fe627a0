"""What ``spikeprep test`` writes besides its images: the test report (original section 9; DESIGN section 8).

``<LOG.SAVE_DIR>/metrics/test_<YYYYmmdd_HHMMSS>.json`` is a ``TestReport``: which checkpoint deblurred which
inputs, how many frames and clips, and how fast (model and total seconds per frame) in how much memory.
Frozen validated records with a version field, written atomically; another version is refused.

Version 2 is version 1's free dictionary as this record: the same keys with the same meaning.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.config import NormConfig
from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record
from schemas.val_report import Arm

TEST_REPORT_VERSION = 2



class TestModel(Record):
    """The checkpoint's model as far as its inputs go: the VRT preset, K and the voxel normalisation."""

    __test__ = False  # not a pytest class

    VRT_CFG: str
    K: int = Field(ge=1)
    NORM: NormConfig


class TestInputs(Record):
    """Where the frames and voxels came from (resolved paths; None when not used)."""

    __test__ = False

    blur: str | None          # --input_blur
    spike_vox: str | None     # the voxels read (None for the spike-free arm)
    store: str | None         # the store read (voxels, and frames without --input_blur)
    splits: list[str] | None  # the store splits the sequences came from


class TestReport(Record):
    """One ``spikeprep test`` run.

    ``sequences``: frames written per sequence (``OUTPUT/<seq>/``), ``frames`` their total;
    ``seconds_model``: the model alone (CUDA synchronised), ``seconds_per_frame`` that over the frames,
    ``seconds_per_frame_total`` the whole loop (reading, the model, writing) over the frames;
    ``peak_memory_mib`` measured as ``peak_memory_method`` says (``torch.cuda.max_memory_allocated``, or the
    process's peak RSS on CPU; None where unavailable).
    """

    __test__ = False

    version: Literal[2] = TEST_REPORT_VERSION
    created: str
    checkpoint: str
    arm: Arm
    exp: str
    step: int = Field(ge=0)
    model: TestModel
    inputs: TestInputs
    output: str
    format: Literal["png", "jpg"]    # spikeprep.images.IMAGE_FORMATS
    sequences: dict[str, int]
    frames: int = Field(gt=0)
    clips: int = Field(gt=0)
    clip_len: int = Field(ge=0)         # 0: whole runs
    tile: list[int] = Field(min_length=3, max_length=3)
    overlap: list[int] = Field(min_length=3, max_length=3)
    device: str
    device_name: str
    torch_threads: int = Field(ge=1)
    seconds_model: float = Field(ge=0)
    seconds_first_clip: float = Field(ge=0)
    seconds_per_frame: float = Field(ge=0)
    seconds_per_frame_total: float = Field(ge=0)
    seconds_setup: float = Field(ge=0)
    peak_memory_mib: float | None
    peak_memory_method: str
    peak_rss_mib: float | None
    notes: list[str]


def write_test_report(path: str | os.PathLike, report: TestReport) -> Path:
    """Write atomically (a reader never sees half a report)."""
    return write_json_record(path, report)


def read_test_report(path: str | os.PathLike) -> TestReport:
    """Read and validate; ``ValueError`` naming the file on a bad or foreign report."""
    return read_json_record(path, TestReport, kind="test report", versions=(TEST_REPORT_VERSION,),
                            rerun="re-run `spikeprep test` with this version")
