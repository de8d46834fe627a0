"""``DATA_ROOT/dataset.json`` and the zarr groups' names and attributes (DESIGN section 5).

``dataset.json`` is written last by ingest, atomically: its presence means the store is complete.
Frozen validated records with a version field; a reader refuses another version instead of guessing.
"""
from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import Field, field_validator

from schemas.manifest import name_problem
from schemas.record import Record
from schemas.registration import Registration
from schemas.spike_meta import SpikeMeta

# 2: every chunk carries a crc32c and every chunk is stored; 3: spike_vox.zarr and rgb.zarr are groups whose
# arrays carry dimension_names and the frame_idx / t0 / t1 (and bin_edge) coordinates, so xarray opens them
STORE_VERSION = 3
DATASET_FILENAME = "dataset.json"
VOX_DIRNAME = "spike_vox.zarr"       # group: counts [frame, bin, y, x] + coordinates
VOX_ARRAY = "counts"                 # the voxel counts inside VOX_DIRNAME
RGB_DIRNAME = "rgb.zarr"             # group: blur, sharp uint8 [frame, channel, y, x] (RGB) + coordinates
RGB_ARRAYS = ("blur", "sharp")
FRAME_DIM = "frame"                          # one row per frame ingest kept (row n: the manifest's vox_index n)
VOX_AXES = (FRAME_DIM, "bin", "y", "x")      # dimension_names of counts (spike grid)
RGB_AXES = (FRAME_DIM, "channel", "y", "x")  # dimension_names of blur and sharp (RGB grid)
FRAME_COORDS = ("frame_idx", "t0", "t1")     # 1-d coordinates along FRAME_DIM, in both groups
BIN_EDGE = "bin_edge"                        # K + 1 bin edges (fractions of the window), spike_vox.zarr only


# ---- attributes of the zarr groups and arrays (CF-style: units, long_name, description) ---------------
_FRAME_AXIS = ("The frame axis holds only the frames ingest kept, in frame_idx order: row n is the manifest's "
               "vox_index n, and the frame_idx coordinate says which blur frame it is. A frame ingest dropped "
               "has no row (its manifest row: status dropped, vox_index null, the reason); one the audit "
               "dropped later keeps its row, so the manifest's status says which rows to use.")
VOX_GROUP_ATTRS = {
    "title": "spike voxel counts of one sequence (spikeprep store)",
    "description": "counts [frame, bin, y, x]: spikes per time bin and spike pixel in each kept blur frame's "
                   "exposure window [t0, t1), at the spike sensor's resolution. " + _FRAME_AXIS,
    "store_version": STORE_VERSION,
}
RGB_GROUP_ATTRS = {
    "title": "decoded blur and sharp frames of one sequence (spikeprep store)",
    "description": "blur, sharp [frame, channel, y, x]: the RGB frames ingest decoded from the PNGs, on the RGB "
                   "grid; the same rows as spike_vox.zarr. " + _FRAME_AXIS,
    "channels": "RGB",
    "store_version": STORE_VERSION,
}
COUNTS_ATTRS = {
    "units": "1",
    "long_name": "spike count",
    "description": "spikes per (time bin, spike pixel) of the blur frame's exposure window; bin k covers "
                   "[t0 + bin_edge[k] * (t1 - t0), t0 + bin_edge[k + 1] * (t1 - t0))",
    "coordinates": " ".join(FRAME_COORDS),
}
RGB_ATTRS = {kind: {"units": "1", "long_name": f"{kind} frame, 8-bit RGB",
                    "description": f"the {kind} PNG as decoded, channels R, G, B, values 0..255",
                    "coordinates": " ".join(FRAME_COORDS)}
             for kind in RGB_ARRAYS}
COORD_ATTRS = {
    "frame_idx": {"units": "1", "long_name": "blur frame index",
                  "description": "index of the blur frame (blur/NNNNNN.png, manifest column frame_idx) this row "
                                 "holds"},
    "t0": {"units": "s", "long_name": "exposure window start",
           "description": "start of the blur frame's exposure window [t0, t1), spike camera clock"},
    "t1": {"units": "s", "long_name": "exposure window end",
           "description": "end (exclusive) of the blur frame's exposure window [t0, t1), spike camera clock"},
    BIN_EDGE: {"units": "1", "long_name": "time bin edge, as a fraction of the exposure window",
               "description": "K equal bins split [t0, t1) (DESIGN section 3): bin k covers fractions "
                              "[bin_edge[k], bin_edge[k + 1]) of the window; in seconds, "
                              "t0 + bin_edge * (t1 - t0)"},
}


class NormStats(Record):
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


class SequenceInfo(Record):
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
    # None: the RGB frames are the spike grid times ``scale``, pixel for pixel; else what ingest resampled them
    # with, and the spike pixels it kept (Hs, Ws are the kept grid's)
    registration: Registration | None = None

    @property
    def spike_crop(self) -> tuple[int, int, int, int] | None:
        """(y0, x0, height, width) of the sensor's pixels the store keeps; None: all of them."""
        return None if self.registration is None else self.registration.spike_crop


class StoreInfo(Record):
    """Content of ``dataset.json``."""

    version: Literal[3] = STORE_VERSION
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
