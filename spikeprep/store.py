"""The store under ``DATA_ROOT`` (DESIGN section 5): Zarr voxel arrays, the manifest, ``dataset.json``.

Voxel counts of a sequence live in ``{split}/{seq}/spike_vox.zarr`` (and its decoded blur/sharp frames in
``{split}/{seq}/rgb.zarr``, uint8 ``[N, 3, H, W]``, chunks ``(1, 3, 128, 128)``): shape ``[N, K, Hs, Ws]`` (frame,
time bin, spike row, spike column), uint8 or uint16, at the spike sensor's native resolution. Chunks are
``(1, K, 64, 64)`` so a random crop reads only the tiles under it; chunks are grouped into one shard per
frame so a sequence is a handful of files, not thousands. Every file is written atomically (temp file +
rename: ``schemas.atomic``, re-exported here) and ``dataset.json`` last, so a store without it is
incomplete whatever else it holds.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import BloscCodec

from schemas.atomic import atomic_write_bytes  # also importable from here, as before
from schemas.manifest import MANIFEST_FILENAME, MANIFEST_SCHEMA, ManifestSchemaError, validate_manifest_table
from schemas.store import DATASET_FILENAME, VOX_AXES, StoreInfo
from spikeprep.errors import InputError

VOX_TILE = 64  # spike pixels per chunk side
RGB_TILE = 128  # RGB pixels per chunk side of the decoded frames


def create_vox_array(path: Path, n_frames: int, num_bins: int, height: int, width: int,
                     dtype: np.dtype, attributes: dict | None = None) -> zarr.Array:
    """Create an empty voxel array ``[n_frames, K, Hs, Ws]`` chunked for crop reads."""
    tile_h, tile_w = min(VOX_TILE, height), min(VOX_TILE, width)
    shard = (1, num_bins, -(-height // tile_h) * tile_h, -(-width // tile_w) * tile_w)
    attrs = {"axes": list(VOX_AXES), "units": "spike counts", **(attributes or {})}
    return zarr.create_array(
        store=str(path), shape=(n_frames, num_bins, height, width), dtype=dtype,
        chunks=(1, num_bins, tile_h, tile_w), shards=shard, fill_value=0,
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
        attributes=attrs, overwrite=True)


def create_rgb_arrays(path: Path, n_frames: int, height: int, width: int) -> dict[str, zarr.Array]:
    """Create the group of decoded frames: arrays ``blur`` and ``sharp``, uint8 ``[n, 3, H, W]`` (RGB).

    Chunks ``(1, 3, 128, 128)`` in one shard per frame, like the voxels, so a crop reads its tiles only.
    """
    group = zarr.open_group(str(path), mode="w", attributes={"axes": ["frame", "channel", "y", "x"],
                                                               "channels": "RGB"})
    tile_h, tile_w = min(RGB_TILE, height), min(RGB_TILE, width)
    shard = (1, 3, -(-height // tile_h) * tile_h, -(-width // tile_w) * tile_w)
    return {kind: group.create_array(kind, shape=(n_frames, 3, height, width), dtype=np.uint8,
                                     chunks=(1, 3, tile_h, tile_w), shards=shard, fill_value=0,
                                     compressors=BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle"))
            for kind in ("blur", "sharp")}


def open_vox(path: Path) -> zarr.Array:
    """Open a voxel (or frame) array read-only (cheap: reads only its metadata)."""
    try:
        return zarr.open_array(str(path), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot open the voxel store ({err})",
                         fix="re-run `spikeprep ingest` to rebuild it") from None


def counts_checksum(counts: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of one frame's stored counts."""
    h = hashlib.sha256(f"{counts.dtype.str}{counts.shape}".encode())
    h.update(np.ascontiguousarray(counts).tobytes())
    return h.hexdigest()


def write_manifest(root: Path, rows: list[dict]) -> Path:
    """Validate rows against the manifest schema and write ``manifest.parquet`` atomically."""
    table = validate_manifest_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return atomic_write_bytes(Path(root) / MANIFEST_FILENAME, sink.getvalue().to_pybytes())


def read_manifest(root: Path) -> pa.Table:
    """Read and validate ``manifest.parquet``."""
    path = Path(root) / MANIFEST_FILENAME
    if not path.is_file():
        raise InputError(path, "manifest not found", fix="run `spikeprep ingest RAW --out DATA_ROOT` first")
    try:
        return validate_manifest_table(pq.read_table(path), str(path))
    except ManifestSchemaError as err:
        raise InputError(path, str(err)) from None


def write_store_info(root: Path, info: StoreInfo) -> Path:
    """Write ``dataset.json`` atomically; ingest calls it last, so its presence marks a complete store."""
    return atomic_write_bytes(Path(root) / DATASET_FILENAME, info.to_json().encode())


def read_store_info(root: Path) -> StoreInfo:
    """Read ``dataset.json``; its absence means the store is incomplete (an interrupted ingest)."""
    path = Path(root) / DATASET_FILENAME
    if not path.is_file():
        raise InputError(path, "no dataset.json: the store is missing or incomplete (interrupted ingest?)",
                         fix="run `spikeprep ingest RAW --out DATA_ROOT` (a rerun resumes)")
    try:
        return StoreInfo.model_validate_json(path.read_text())
    except ValueError as err:
        raise InputError(path, f"invalid dataset.json ({err})", fix="re-run `spikeprep ingest`") from None
