"""``DATA_ROOT/<split>/<seq>/ingest.json``: what ingest built for one sequence (DESIGN section 5).

Ingest writes it last into the sequence's folder, which it then renames into place, so a sequence with a
record is complete. It holds the sequence's manifest rows (``ManifestRow``), the count histogram of every
stored frame (the audit recomputes the stats from them after dropping frames), its ``dataset.json`` entry
(``SequenceInfo``) and the fingerprint of the inputs and options it was built from (a rerun reuses the
sequence when the fingerprint still matches). ``write_sequence_record`` and ``read_sequence_record`` are the
one way to write and read it.

Version 0 is the same record written without a ``version`` field (spikeprep before issue 19): it is read
as is, so a rerun of ingest reuses its sequence when the fingerprint matches and the audit reads its
histograms, as before.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.json_record import read_json_record, write_json_record
from schemas.manifest import ManifestRow
from schemas.record import Record
from schemas.store import SequenceInfo

SEQUENCE_RECORD_FILENAME = "ingest.json"
SEQUENCE_RECORD_VERSION = 1
READ_VERSIONS = (0, 1)      # 0: the unversioned record, same fields
UNVERSIONED = 0


class SequenceRecord(Record):
    """One sequence as ingest built it: its manifest rows in frame order, ``histograms`` (frame_idx -> count
    histogram, ``histogram[c]`` voxels holding count ``c``) of the frames it stored, its ``dataset.json``
    entry, and the sha256 ``fingerprint`` of its inputs and ingest options."""

    version: Literal[0, 1] = SEQUENCE_RECORD_VERSION
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: list[ManifestRow]
    histograms: dict[int, list[int]]
    info: SequenceInfo

    @field_validator("histograms")
    @classmethod
    def _in_frame_order(cls, value: dict[int, list[int]]) -> dict[int, list[int]]:
        # JSON keys are strings (an unversioned record sorted them as strings): one order, whatever the source
        return dict(sorted(value.items()))

    @model_validator(mode="after")
    def _one_sequence(self) -> "SequenceRecord":
        names = {(r.split, r.seq) for r in self.rows}
        if len(names) > 1:
            raise ValueError(f"rows of more than one sequence: {sorted(names)[:3]}")
        if names and next(iter(names))[0] != self.info.split:
            raise ValueError(f"rows of split {next(iter(names))[0]!r} in a record of split {self.info.split!r}")
        stored = [r.frame_idx for r in self.rows if r.vox_index is not None]
        if len(stored) != self.info.n_frames:
            raise ValueError(f"{len(stored)} rows have voxels but info.n_frames is {self.info.n_frames}")
        if set(stored) != set(self.histograms):
            raise ValueError("histograms must cover exactly the frames with voxels (frame_idx "
                             f"{sorted(set(stored) ^ set(self.histograms))[:5]} differ)")
        return self


def write_sequence_record(path: str | os.PathLike, record: SequenceRecord) -> Path:
    """Write atomically (a reader never sees half a record)."""
    return write_json_record(path, record)


def read_sequence_record(path: str | os.PathLike) -> SequenceRecord:
    """Read and validate (an unversioned record as version 0); ``ValueError`` naming the file on a missing,
    unreadable, invalid or foreign record."""
    return read_json_record(path, SequenceRecord, kind="sequence record", versions=READ_VERSIONS,
                            unversioned=UNVERSIONED,
                            rerun="re-run `spikeprep ingest RAW --out DATA_ROOT`: it rebuilds that sequence")
