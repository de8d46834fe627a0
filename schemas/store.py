"""``DATA_ROOT/dataset.json`` and the voxel store's attributes (DESIGN section 5).

``dataset.json`` is written last by ingest, atomically: its presence means the store is complete.
Frozen validated records with a version field; a reader refuses another version instead of guessing.
"""
from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.manifest import name_problem
from schemas.spike_meta import SpikeMeta

STORE_VERSION = 2                    # 2: every chunk carries a crc32c and every chunk is stored
DATASET_FILENAME = "dataset.json"
VOX_DIRNAME = "spike_vox.zarr"
RGB_DIRNAME = "rgb.zarr"             # group with arrays blur, sharp: uint8 [N, 3, H, W] (RGB)
VOX_AXES = ("frame", "bin", "y", "x")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormStats(_Record):
    """Exact moments of ``log1p(count)`` over every voxel of every kept training frame.

    ``count_histogram[c]`` is how many voxels hold count ``c``; MEAN/STD follow from it exactly in
    float64 (counts are small integers). ``std`` below 1e-6 is refused when the stats are computed.
    """

    mean: float
    std: float
    n_voxels: int = Field(ge=0)
    n_frames: int = Field(ge=0)
    count_histogram: list[int]

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class SequenceInfo(_Record):
    """One sequence of the store."""

    split: str
    n_frames: int = Field(ge=0)           # rows of spike_vox.zarr and rgb.zarr (frames kept at ingest)
    H: int = Field(gt=0)                  # RGB grid
    W: int = Field(gt=0)
    Hs: int = Field(gt=0)                 # spike grid
    Ws: int = Field(gt=0)
    scale: tuple[int, int]                # RGB / spike, per axis (y, x); integer by contract
    dtype: Literal["uint8", "uint16"]
    rate_hz: float = Field(gt=0)
    spike_dir: str                        # raw spike directory (absolute), reopened by the audit
    spike_meta: SpikeMeta                 # how those spikes are stored (presets have no meta.json)
    checksum: str                         # sha256 over the sequence's per-frame voxel checksums


class StoreInfo(_Record):
    """Content of ``dataset.json``."""

    version: Literal[2] = STORE_VERSION
    K: int = Field(gt=0)
    raw_root: str
    layout: str                           # native | s-sdm | spk-gopro
    ingest_options: dict[str, str | int | float | bool | None]
    sequences: dict[str, SequenceInfo]    # key: "<split>/<seq>"
    stats: NormStats | None               # None when no training frame was kept

    @field_validator("sequences")
    @classmethod
    def _keys_inside_store(cls, value: dict[str, SequenceInfo]) -> dict[str, SequenceInfo]:
        for key, seq in value.items():
            split, _, name = key.partition("/")
            for what, part in (("split", split), ("sequence", name)):
                problem = name_problem(part)
                if problem:
                    raise ValueError(f"key {key!r}: {what} name {part!r} {problem} (a store's paths never "
                                     "leave DATA_ROOT)")
            if seq.split != split:
                raise ValueError(f"key {key!r} holds a sequence of split {seq.split!r}")
        return value

    def to_json(self) -> str:
        """The ``dataset.json`` text, keys sorted (stable bytes)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
