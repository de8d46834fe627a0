"""``manifest.parquet``: one row per blur frame of every split (DESIGN section 5).

A row is a ``ManifestRow`` record; the pyarrow schema is derived from its fields (one list, not two) and is
the contract between ingest, audit and the Dataset. It carries its version in the schema metadata
(``spikeprep.manifest_version``); ``validate_manifest_table`` refuses a table whose columns, types or version
differ, naming the first difference. Every column's unit (numeric columns) and description are defined here
once, on its ``ManifestRow`` field; they go into its Arrow field metadata and, as JSON, into the file's
key-value metadata (``spikeprep.columns``) for readers that do not read Arrow field metadata (DuckDB, Polars).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, get_args

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

MANIFEST_VERSION = 4   # 2: the paired column (sharp is null for unpaired frames); t0_recorded, t1_recorded
                       # (the exposure table's windows; audit --fix). 3: reason_code (DropCode). 4: rgb_homography
                       # (the registration ingest resampled with), audit_registration_px
MANIFEST_FILENAME = "manifest.parquet"
VERSION_KEY = b"spikeprep.manifest_version"

STATUS_OK = "ok"
STATUS_DROPPED = "dropped"

COLUMNS_KEY = b"spikeprep.columns"   # file metadata: JSON {column: {"unit": ..., "description": ...}}


class DropCode(StrEnum):
    """Why a frame was dropped, for machines: the manifest's ``reason_code`` (its ``reason`` is the same
    cause in prose, for people, and is never parsed). Codes of drops the audit made start with ``audit_``
    (``AUDIT_CODES``); a rerun of the audit judges those frames again, and ingest keeps them only for
    unchanged sequences."""

    # ingest: the exposure window (spikeprep.windows.ExposureTable.problems)
    WINDOW_REVERSED = "window_reversed"            # t1 <= t0
    WINDOW_TOO_SHORT = "window_too_short"          # shorter than any exposure a camera makes
    WINDOW_TOO_LONG = "window_too_long"            # t1 - t0 overflows float64
    WINDOW_OUT_OF_ORDER = "window_out_of_order"    # starts before the previous frame's window
    WINDOW_OVERLAP = "window_overlap"              # overlaps the previous frame's window
    # ingest: the images and the grids
    MISSING_BLUR = "missing_blur"
    UNREADABLE_IMAGE = "unreadable_image"          # not a decodable RGB PNG of the size its header says
    SHARP_SIZE_MISMATCH = "sharp_size_mismatch"    # blur and sharp frames differ in size
    FRAME_SIZE_MISMATCH = "frame_size_mismatch"    # the frame's size differs from its sequence's
    GRID_NOT_INTEGER = "grid_not_integer"          # RGB grid not an integer multiple of the spike grid
    SHORT_SIDE_BELOW_CROP = "short_side_below_crop"    # a paired training frame smaller than the crop
    # ingest: the spikes of the window
    UNREADABLE_SPIKES = "unreadable_spikes"
    WINDOW_PAST_SPIKES = "window_past_spikes"      # the window extends past the spike data
    WINDOW_EMPTY = "window_empty"                  # no spike data inside [t0, t1)
    # the audit (spikeprep.audit): structural re-checks on the store, then the content check
    AUDIT_MISSING_FRAME = "audit_missing_frame"
    AUDIT_SHORT_SIDE_BELOW_CROP = "audit_short_side_below_crop"
    AUDIT_WINDOW_REVERSED = "audit_window_reversed"
    AUDIT_UNREADABLE_IMAGE = "audit_unreadable_image"
    AUDIT_GRID_MISMATCH = "audit_grid_mismatch"    # blur size differs from spike grid x scale
    AUDIT_MISALIGNED = "audit_misaligned"          # the shift curve peaks away from the recorded window
    AUDIT_MISMATCH = "audit_mismatch"              # the spikes do not show the blur frame


AUDIT_CODES = frozenset(c for c in DropCode if c.startswith("audit_"))
CROP_CODES = frozenset({DropCode.SHORT_SIDE_BELOW_CROP, DropCode.AUDIT_SHORT_SIDE_BELOW_CROP})


@dataclass(frozen=True)
class Drop:
    """Why a frame is dropped: its ``code`` (the manifest's ``reason_code``) and its ``text`` (``reason``)."""

    code: DropCode
    text: str


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


@dataclass(frozen=True)
class Column:
    """A manifest column's Arrow type, unit (numeric columns; ``1`` for dimensionless) and description: the
    ``Annotated`` metadata of a ``ManifestRow`` field, from which the Arrow schema is derived."""

    arrow_type: pa.DataType
    unit: str | None
    description: str


AuditVerdict = Literal["aligned", "misaligned", "mismatch", "undetermined"]


class ManifestRow(BaseModel):
    """One row of ``manifest.parquet``: one blur frame. Its fields, in order, are the manifest's columns; a
    field that may be None is a nullable column. Ingest writes the audit columns None; the audit fills them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Annotated[str, Column(pa.string(), None, "train | val")]
    seq: Annotated[str, Column(pa.string(), None, "sequence name (its folder DATA_ROOT/<split>/<seq>/)")]
    frame_idx: Annotated[int, Field(ge=0), Column(pa.int64(), "1", "blur frame index within the sequence "
                                                                 "(NNNNNN of its PNG)")]
    t0: Annotated[float, Column(pa.float64(), "s", "exposure window start on the spike camera's clock; the "
                                "window is [t0, t1)")]
    t1: Annotated[float, Column(pa.float64(), "s", "exposure window end (exclusive) on the spike camera's clock")]
    t0_recorded: Annotated[float, Column(pa.float64(), "s", "window start as the exposure table recorded it; "
                                         "equals t0 unless `spikeprep audit --fix` mapped the table's clock onto "
                                         "the spike clock")]
    t1_recorded: Annotated[float, Column(pa.float64(), "s", "window end as the exposure table recorded it "
                                         "(see t0_recorded)")]
    n_ticks: Annotated[int, Field(ge=0), Column(pa.int64(), "ticks", "spike frames (ticks) inside the window")]
    event_count: Annotated[int, Field(ge=0), Column(pa.int64(), "spikes", "spikes inside the window (sum of the "
                                                                          "frame's counts)")]
    H: Annotated[int, Field(ge=0), Column(pa.int32(), "px", "RGB frame height")]
    W: Annotated[int, Field(ge=0), Column(pa.int32(), "px", "RGB frame width")]
    Hs: Annotated[int, Field(ge=0), Column(pa.int32(), "px", "spike sensor height (spike grid)")]
    Ws: Annotated[int, Field(ge=0), Column(pa.int32(), "px", "spike sensor width (spike grid)")]
    blur: Annotated[str, Column(pa.string(), None, "blurred PNG, path relative to DATA_ROOT")]
    sharp: Annotated[str | None, Column(pa.string(), None, "sharp PNG, path relative to DATA_ROOT; null when "
                     "the frame is unpaired")]
    paired: Annotated[bool, Column(pa.bool_(), None, "the frame has a sharp (ground-truth) frame: training, "
                      "validation and scoring use paired frames only; audit and test use both")]
    spike_source: Annotated[str, Column(pa.string(), None, "raw spike file (or folder) this frame's spikes "
                                        "came from")]
    vox_index: Annotated[int | None, Field(ge=0), Column(pa.int64(), "1", "row of the sequence's spike_vox.zarr "
                         "counts and rgb.zarr frames (their frame axis); null when the frame is not stored")]
    status: Annotated[Literal["ok", "dropped"], Column(pa.string(), None, "ok | dropped")]
    reason: Annotated[str | None, Column(pa.string(), None, "why the frame was dropped, in prose for people "
                      "(null when ok)")]
    reason_code: Annotated[DropCode | None, Column(pa.string(), None, "why the frame was dropped, as a code for "
                           "machines (schemas.manifest.DropCode; audit_* codes: dropped by the audit; null when "
                           "ok)")]
    audit_corr: Annotated[float | None, Column(pa.float64(), "1", "Pearson correlation of spike intensity and "
                          "blur luma at zero shift (spikeprep audit)")] = None
    audit_best_offset_ticks: Annotated[int | None, Column(pa.int64(), "ticks", "window shift with the highest "
                                       "correlation (spikeprep audit)")] = None
    audit_best_offset_s: Annotated[float | None, Column(pa.float64(), "s", "that shift in seconds "
                                   "(spikeprep audit)")] = None
    audit_verdict: Annotated[AuditVerdict | None, Column(pa.string(), None, "aligned | misaligned | mismatch | "
                             "undetermined (spikeprep audit)")] = None
    audit_registration_px: Annotated[float | None, Column(pa.float64(), "px", "the sequence's residual "
                                     "misregistration of the RGB frames against the spikes, at the frame corners "
                                     "(largest corner displacement, store RGB pixels; spikeprep audit); null when "
                                     "it could not be measured")] = None
    rgb_homography: Annotated[list[float] | None, Column(pa.list_(pa.float64()), None, "the registration ingest "
                              "resampled the RGB frames with: 3x3 homography, row-major, spike pixel -> raw RGB "
                              "pixel (schemas/registration.py); null when the RGB frames are the spike grid times "
                              "an integer, pixel for pixel")] = None
    vox_checksum: Annotated[str | None, Column(pa.string(), None, "sha256 of the frame's stored counts (dtype, "
                            "shape, bytes)")]

    @model_validator(mode="after")
    def _inside_store_and_consistent(self) -> "ManifestRow":
        for what, name in (("split", self.split), ("seq", self.seq)):
            problem = name_problem(name)
            if problem:
                raise ValueError(f"{what} {name!r} {problem} (a store's paths never leave DATA_ROOT)")
        for what, path in (("blur", self.blur), ("sharp", self.sharp)):
            problem = None if path is None and what == "sharp" else store_path_problem(path, self.split, self.seq)
            if problem:
                raise ValueError(f"{what} path {path!r} {problem} (a store's paths never leave DATA_ROOT)")
        if self.paired != (self.sharp is not None):
            raise ValueError(f"paired is {self.paired} but the sharp path is {self.sharp!r} (a paired frame has "
                             "a sharp path, an unpaired one none)")
        for what, value in (("reason", self.reason), ("reason_code", self.reason_code)):
            if (self.status == STATUS_DROPPED) != (value is not None):
                raise ValueError(f"a row with status {self.status} " + (
                    f"needs the {what} it was dropped for" if self.status == STATUS_DROPPED else f"has no {what}"))
        return self

    @property
    def dropped_by_audit(self) -> bool:
        """Dropped by the audit (an ``audit_*`` code), as opposed to by ingest."""
        return self.reason_code in AUDIT_CODES

    @property
    def audited(self) -> bool:
        """The audit judged this frame: a content verdict, or an audit drop."""
        return self.audit_verdict is not None or self.dropped_by_audit

    def dropped(self, drop: Drop) -> "ManifestRow":
        """This row with status dropped for ``drop`` (a copy: rows are frozen)."""
        return self.model_copy(update=dict(status=STATUS_DROPPED, reason=drop.text, reason_code=drop.code))


def _arrow_field(name: str, info: FieldInfo) -> pa.Field:
    """A ``ManifestRow`` field as an Arrow column, its unit and description in the field metadata
    (``description``, ``unit``), so they travel with the Parquet file; nullable when the field takes None."""
    column = next(m for m in info.metadata if isinstance(m, Column))
    meta = {b"description": column.description.encode()} | ({b"unit": column.unit.encode()} if column.unit else {})
    return pa.field(name, column.arrow_type, nullable=type(None) in get_args(info.annotation), metadata=meta)


_FIELDS = [_arrow_field(name, info) for name, info in ManifestRow.model_fields.items()]

# Field metadata is what pyarrow (and pandas through it) reads; DuckDB and Polars see only a Parquet file's
# key-value metadata, so the same units and descriptions go there too, as one JSON entry.
COLUMN_DOCS = {f.name: {k.decode(): v.decode() for k, v in f.metadata.items()} for f in _FIELDS}
MANIFEST_SCHEMA = pa.schema(_FIELDS, metadata={VERSION_KEY: str(MANIFEST_VERSION).encode(),
                                               COLUMNS_KEY: json.dumps(COLUMN_DOCS, sort_keys=True).encode()})
MANIFEST_COLUMNS = tuple(f.name for f in _FIELDS)


class ManifestSchemaError(ValueError):
    """A manifest table that does not match ``MANIFEST_SCHEMA``."""


def check_rows_inside_store(table: pa.Table, source: str) -> None:
    """Every row's split and seq are plain names and its blur/sharp paths lie in ``split/seq/``."""
    cols = table.select(["split", "seq", "blur", "sharp", "paired"]).to_pydict()
    for i, (split, seq, blur, sharp, paired) in enumerate(zip(cols["split"], cols["seq"], cols["blur"],
                                                               cols["sharp"], cols["paired"])):
        if paired != (sharp is not None):
            raise ManifestSchemaError(f"{source}: row {i}: paired is {paired} but sharp is {sharp!r} (a paired "
                                      "frame has a sharp path, an unpaired one none). Fix: re-run `spikeprep ingest`")
        for what, name in (("split", split), ("seq", seq)):
            problem = name_problem(name)
            if problem:
                raise ManifestSchemaError(f"{source}: row {i}: {what} {name!r} {problem}. Fix: re-run "
                                          "`spikeprep ingest` (a store's paths never leave DATA_ROOT)")
        for what, path in (("blur", blur), ("sharp", sharp)):
            problem = None if path is None and what == "sharp" else store_path_problem(path, split, seq)
            if problem:
                raise ManifestSchemaError(f"{source}: row {i}: {what} path {path!r} {problem}. Fix: re-run "
                                          "`spikeprep ingest` (a store's paths never leave DATA_ROOT)")


def check_reason_codes(table: pa.Table, source: str) -> None:
    """Every dropped row has a known ``reason_code`` and every kept row none (readers that read columns, not
    ``ManifestRow`` records, rely on it)."""
    cols = table.select(["status", "reason_code"]).to_pydict()
    known = {c.value for c in DropCode}
    for i, (status, code) in enumerate(zip(cols["status"], cols["reason_code"])):
        if code is not None and code not in known:
            raise ManifestSchemaError(f"{source}: row {i}: unknown reason_code {code!r}. Fix: re-run "
                                      "`spikeprep ingest` with this version of spikeprep")
        if (status == STATUS_DROPPED) != (code is not None):
            raise ManifestSchemaError(f"{source}: row {i}: status {status!r} with reason_code {code!r} (a dropped "
                                      "row has a code, a kept one none). Fix: re-run `spikeprep ingest`")


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
    check_reason_codes(table, source)
    return table
