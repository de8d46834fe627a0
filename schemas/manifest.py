"""``manifest.parquet``: one row per blur frame of every split (DESIGN section 5).

The pyarrow schema is the contract between ingest, audit and the Dataset. It carries its version in
the schema metadata (``spikeprep.manifest_version``); ``validate_manifest_table`` refuses a table whose
columns, types or version differ, naming the first difference. Every column's unit (numeric columns) and
description are defined here once, in its field metadata, and repeated as JSON in the file's key-value
metadata (``spikeprep.columns``) for readers that do not read Arrow field metadata (DuckDB, Polars).
"""
from __future__ import annotations

import json

import pyarrow as pa

MANIFEST_VERSION = 1
MANIFEST_FILENAME = "manifest.parquet"
VERSION_KEY = b"spikeprep.manifest_version"

STATUS_OK = "ok"
STATUS_DROPPED = "dropped"

COLUMNS_KEY = b"spikeprep.columns"   # file metadata: JSON {column: {"unit": ..., "description": ...}}


def _field(name: str, type_: pa.DataType, nullable: bool, unit: str | None, description: str) -> pa.Field:
    """A manifest column with its unit (numeric columns; ``1`` for dimensionless) and description in its
    field metadata (``unit``, ``description``), so they travel with the Parquet file."""
    meta = {b"description": description.encode()} | ({b"unit": unit.encode()} if unit else {})
    return pa.field(name, type_, nullable=nullable, metadata=meta)


_FIELDS = [
    _field("split", pa.string(), False, None, "train | val"),
    _field("seq", pa.string(), False, None, "sequence name (its folder DATA_ROOT/<split>/<seq>/)"),
    _field("frame_idx", pa.int64(), False, "1", "blur frame index within the sequence (NNNNNN of its PNG)"),
    _field("t0", pa.float64(), False, "s", "exposure window start on the spike camera's clock; the window is "
           "[t0, t1)"),
    _field("t1", pa.float64(), False, "s", "exposure window end (exclusive) on the spike camera's clock"),
    _field("n_ticks", pa.int64(), False, "ticks", "spike frames (ticks) inside the window"),
    _field("event_count", pa.int64(), False, "spikes", "spikes inside the window (sum of the frame's counts)"),
    _field("H", pa.int32(), False, "px", "RGB frame height"),
    _field("W", pa.int32(), False, "px", "RGB frame width"),
    _field("Hs", pa.int32(), False, "px", "spike sensor height (spike grid)"),
    _field("Ws", pa.int32(), False, "px", "spike sensor width (spike grid)"),
    _field("blur", pa.string(), False, None, "blurred PNG, path relative to DATA_ROOT"),
    _field("sharp", pa.string(), False, None, "sharp PNG, path relative to DATA_ROOT"),
    _field("spike_source", pa.string(), False, None, "raw spike file (or folder) this frame's spikes came from"),
    _field("vox_index", pa.int64(), True, "1", "row of the sequence's spike_vox.zarr counts and rgb.zarr "
           "frames (their frame axis); null when the frame is not stored"),
    _field("status", pa.string(), False, None, "ok | dropped"),
    _field("reason", pa.string(), True, None, "why the frame was dropped (null when ok)"),
    _field("audit_corr", pa.float64(), True, "1", "Pearson correlation of spike intensity and blur luma at "
           "zero shift (spikeprep audit)"),
    _field("audit_best_offset_ticks", pa.int64(), True, "ticks", "window shift with the highest correlation "
           "(spikeprep audit)"),
    _field("audit_best_offset_s", pa.float64(), True, "s", "that shift in seconds (spikeprep audit)"),
    _field("audit_verdict", pa.string(), True, None, "aligned | misaligned | mismatch | undetermined "
           "(spikeprep audit)"),
    _field("vox_checksum", pa.string(), True, None, "sha256 of the frame's stored counts (dtype, shape, bytes)"),
]

# Field metadata is what pyarrow (and pandas through it) reads; DuckDB and Polars see only a Parquet file's
# key-value metadata, so the same units and descriptions go there too, as one JSON entry.
COLUMN_DOCS = {f.name: {k.decode(): v.decode() for k, v in f.metadata.items()} for f in _FIELDS}
MANIFEST_SCHEMA = pa.schema(_FIELDS, metadata={VERSION_KEY: str(MANIFEST_VERSION).encode(),
                                               COLUMNS_KEY: json.dumps(COLUMN_DOCS, sort_keys=True).encode()})
MANIFEST_COLUMNS = tuple(f.name for f in _FIELDS)


class ManifestSchemaError(ValueError):
    """A manifest table that does not match ``MANIFEST_SCHEMA``."""


# ---- names and paths that come from a store: never outside DATA_ROOT -----------------------------------
def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a split or sequence name (one visible path component), or None."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if name in (".", "..") or name.startswith("."):
        return "starts with '.' (hidden or parent folder)"
    if any(c in name for c in ("/", "\\", "\0")):
        return "holds a path separator or NUL"
    return None


def store_path_problem(path: str, split: str, seq: str) -> str | None:
    """Why ``path`` is not a normalised relative path inside its sequence folder ``split/seq/``, or None."""
    parts = path.split("/")
    if path.startswith("/") or any(c in path for c in ("\\", "\0")) or any(p in ("", ".", "..") for p in parts):
        return "is not a normalised relative path"
    if parts[:2] != [split, seq] or len(parts) < 3:
        return f"is not inside its sequence folder {split}/{seq}/"
    return None


def check_rows_inside_store(table: pa.Table, source: str) -> None:
    """Every row's split and seq are plain names and its blur/sharp paths lie in ``split/seq/``."""
    cols = table.select(["split", "seq", "blur", "sharp"]).to_pydict()
    for i, (split, seq, blur, sharp) in enumerate(zip(cols["split"], cols["seq"], cols["blur"], cols["sharp"])):
        for what, name in (("split", split), ("seq", seq)):
            problem = name_problem(name)
            if problem:
                raise ManifestSchemaError(f"{source}: row {i}: {what} {name!r} {problem}. Fix: re-run "
                                          "`spikeprep ingest` (a store's paths never leave DATA_ROOT)")
        for what, path in (("blur", blur), ("sharp", sharp)):
            problem = store_path_problem(path, split, seq)
            if problem:
                raise ManifestSchemaError(f"{source}: row {i}: {what} path {path!r} {problem}. Fix: re-run "
                                          "`spikeprep ingest` (a store's paths never leave DATA_ROOT)")


def validate_manifest_table(table: pa.Table, source: str = "manifest") -> pa.Table:
    """Check a table against the schema (names, order, types, version); return it unchanged."""
    meta = table.schema.metadata or {}
    version = meta.get(VERSION_KEY)
    if version is None or version.strip() != str(MANIFEST_VERSION).encode():
        found = "none" if version is None else version.decode(errors="replace")
        raise ManifestSchemaError(f"{source}: manifest version {found}, expected {MANIFEST_VERSION}. "
                                  "Fix: re-run `spikeprep ingest` with this version of spikeprep")
    names = table.schema.names
    if tuple(names) != MANIFEST_COLUMNS:
        missing = [c for c in MANIFEST_COLUMNS if c not in names]
        extra = [c for c in names if c not in MANIFEST_COLUMNS]
        raise ManifestSchemaError(f"{source}: columns differ from the schema (missing {missing}, "
                                  f"unexpected {extra}). Fix: re-run `spikeprep ingest`")
    for field in MANIFEST_SCHEMA:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise ManifestSchemaError(f"{source}: column {field.name!r} has type {got}, "
                                      f"expected {field.type}. Fix: re-run `spikeprep ingest`")
        if not field.nullable and table.column(field.name).null_count:
            raise ManifestSchemaError(f"{source}: column {field.name!r} has nulls but is required")
    check_rows_inside_store(table, source)
    return table
