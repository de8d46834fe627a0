"""``manifest.parquet``: one row per blur frame of every split (DESIGN section 5).

The pyarrow schema is the contract between ingest, audit and the Dataset. It carries its version in
the schema metadata (``spikeprep.manifest_version``); ``validate_manifest_table`` refuses a table whose
columns, types or version differ, naming the first difference.
"""
from __future__ import annotations

import pyarrow as pa

MANIFEST_VERSION = 1
MANIFEST_FILENAME = "manifest.parquet"
VERSION_KEY = b"spikeprep.manifest_version"

STATUS_OK = "ok"
STATUS_DROPPED = "dropped"

_FIELDS = [
    pa.field("split", pa.string(), nullable=False),         # train | val
    pa.field("seq", pa.string(), nullable=False),
    pa.field("frame_idx", pa.int64(), nullable=False),      # blur frame index within the sequence
    pa.field("t0", pa.float64(), nullable=False),           # exposure window [t0, t1), seconds
    pa.field("t1", pa.float64(), nullable=False),
    pa.field("n_ticks", pa.int64(), nullable=False),        # spike frames (ticks) inside the window
    pa.field("event_count", pa.int64(), nullable=False),    # spikes inside the window
    pa.field("H", pa.int32(), nullable=False),              # RGB grid
    pa.field("W", pa.int32(), nullable=False),
    pa.field("Hs", pa.int32(), nullable=False),             # spike grid
    pa.field("Ws", pa.int32(), nullable=False),
    pa.field("blur", pa.string(), nullable=False),          # paths relative to DATA_ROOT
    pa.field("sharp", pa.string(), nullable=False),
    pa.field("spike_source", pa.string(), nullable=False),  # raw spike file this frame came from
    pa.field("vox_index", pa.int64(), nullable=True),       # row of spike_vox.zarr; null when not stored
    pa.field("status", pa.string(), nullable=False),        # ok | dropped
    pa.field("reason", pa.string(), nullable=True),         # why dropped (null when ok)
    pa.field("audit_corr", pa.float64(), nullable=True),    # spike intensity vs blur luma at zero shift
    pa.field("audit_best_offset_ticks", pa.int64(), nullable=True),
    pa.field("audit_best_offset_s", pa.float64(), nullable=True),
    pa.field("audit_verdict", pa.string(), nullable=True),  # aligned | misaligned | mismatch | undetermined
    pa.field("vox_checksum", pa.string(), nullable=True),   # sha256 of the frame's stored counts
]

MANIFEST_SCHEMA = pa.schema(_FIELDS, metadata={VERSION_KEY: str(MANIFEST_VERSION).encode()})
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
