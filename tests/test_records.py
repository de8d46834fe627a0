"""The store's per-row and per-sequence records (``ManifestRow``, ``SequenceRecord``) and the preset override rules."""
from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import hypothesis.strategies as st
import pyarrow as pa
import pytest
from hypothesis import given
from pydantic import ValidationError

from schemas.config import CROP_MULTIPLE, MIN_CROP_SIZE, crop_size_problem, nearest_valid_crop

from schemas.manifest import (AUDIT_CODES, CROP_CODES, MANIFEST_COLUMNS, MANIFEST_SCHEMA, AuditVerdict, Drop, DropCode,
                              ManifestRow, ManifestSchemaError, validate_manifest_table)
from schemas.sequence_record import (SEQUENCE_RECORD_VERSION, SequenceRecord, read_sequence_record,
                                     write_sequence_record)
from schemas.spike_meta import SpikeMeta
from schemas.store import SequenceInfo
from spikeprep.audit import ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED
from spikeprep.raw_layout import preset_overrides, resolve_preset


def _row(**over) -> ManifestRow:
    fields = dict(split="train", seq="seq_000", frame_idx=0, t0=0.0, t1=0.01, t0_recorded=0.0, t1_recorded=0.01,
                  n_ticks=200, event_count=5,
                  H=256, W=320, Hs=128, Ws=160, blur="train/seq_000/blur/000000.png",
                  sharp="train/seq_000/sharp/000000.png", paired=True, spike_source="raw/train/seq_000/spike/stream.dat",
                  vox_index=0, status="ok", reason=None, reason_code=None, vox_checksum="ab" * 32)
    return ManifestRow(**{**fields, **over})


def _dropped(frame_idx: int) -> ManifestRow:
    return _row(frame_idx=frame_idx, blur=f"train/seq_000/blur/{frame_idx:06d}.png",
                sharp=f"train/seq_000/sharp/{frame_idx:06d}.png", vox_index=None, status="dropped",
                reason="empty window: no spike data inside [t0, t1)", reason_code="window_empty", vox_checksum=None,
                n_ticks=0, event_count=0)


# ---- ManifestRow and the Arrow schema: one list of columns ----------------------------------------------
def test_the_arrow_schema_is_the_row_record():
    fields = ManifestRow.model_fields
    assert tuple(fields) == MANIFEST_COLUMNS == tuple(MANIFEST_SCHEMA.names)
    for field in MANIFEST_SCHEMA:
        takes_none = type(None) in typing.get_args(fields[field.name].annotation)
        assert field.nullable == takes_none, field.name
        assert field.metadata[b"description"]
    assert MANIFEST_SCHEMA.field("H").type == pa.int32() and MANIFEST_SCHEMA.field("frame_idx").type == pa.int64()
    assert MANIFEST_SCHEMA.field("t0").metadata[b"unit"] == b"s"
    assert b"unit" not in MANIFEST_SCHEMA.field("seq").metadata


def test_rows_round_trip_through_the_arrow_table():
    rows = [_row(audit_corr=0.9, audit_best_offset_ticks=-2, audit_best_offset_s=-1e-4, audit_verdict="aligned"),
            _dropped(1), _row(frame_idx=2, t0=float("nan"))]
    table = validate_manifest_table(pa.Table.from_pylist([r.model_dump() for r in rows], schema=MANIFEST_SCHEMA))
    back = [ManifestRow.model_validate(d) for d in table.to_pylist()]
    assert back[:2] == rows[:2] and back[2].t0 != back[2].t0     # NaN survives (and never equals itself)
    assert rows[1].audit_corr is None and rows[1].audit_verdict is None   # ingest leaves the audit columns None


def test_reason_codes_are_checked_in_the_table_too():
    """Readers that read columns (the Dataset) see the same rule: a dropped row has a known code, a kept none."""
    good = pa.Table.from_pylist([_row().model_dump(), _dropped(1).model_dump()], schema=MANIFEST_SCHEMA)
    validate_manifest_table(good)
    codes = good.column("reason_code").to_pylist()
    for bad, fragment in (([None, None], "status 'dropped' with reason_code None"),
                          (["window_empty", "window_empty"], "status 'ok' with reason_code 'window_empty'"),
                          ([None, "because"], "unknown reason_code 'because'")):
        assert codes != bad
        table = good.set_column(good.schema.get_field_index("reason_code"), MANIFEST_SCHEMA.field("reason_code"),
                                pa.array(bad, pa.string()))
        with pytest.raises(ManifestSchemaError, match=fragment):
            validate_manifest_table(table)


def test_audit_codes_are_the_audit_prefix_and_rows_say_who_dropped():
    assert AUDIT_CODES == {c for c in DropCode if c.value.startswith("audit_")} and AUDIT_CODES
    assert CROP_CODES == {DropCode.SHORT_SIDE_BELOW_CROP, DropCode.AUDIT_SHORT_SIDE_BELOW_CROP}
    by_ingest = _dropped(1)
    by_audit = _row().dropped(Drop(DropCode.AUDIT_MISALIGNED, "exposure misaligned"))
    assert (by_ingest.dropped_by_audit, by_audit.dropped_by_audit) == (False, True)
    assert by_audit.audited and not by_ingest.audited and _row(audit_verdict="aligned").audited
    assert ManifestRow.model_validate(by_audit.model_dump()) == by_audit     # dropped() keeps the row valid


def test_audit_verdicts_are_the_rows_literal():
    assert typing.get_args(AuditVerdict) == (ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED)


@pytest.mark.parametrize("over, fragment", [
    (dict(seq="../x"), "starts with '.'"),
    (dict(blur="train/other/blur/000000.png"), "not inside its sequence folder train/seq_000/"),
    (dict(sharp="/abs/000000.png"), "not a normalised relative path"),
    (dict(status="kept"), "status"),
    (dict(status="dropped", reason_code="window_empty"), "needs the reason it was dropped for"),
    # issue 31: the code, for machines, exactly when the frame is dropped, and one of DropCode's
    (dict(status="dropped", reason="why"), "needs the reason_code it was dropped for"),
    (dict(reason_code="window_empty"), "has no reason_code"),
    (dict(status="dropped", reason="why", reason_code="because"), "reason_code"),
    (dict(reason="why"), "has no reason"),
    (dict(n_ticks=-1), "n_ticks"),
    (dict(vox_index=-1), "vox_index"),
    (dict(audit_verdict="fine"), "audit_verdict"),
    (dict(extra=1), "extra"),
])
def test_row_validation_names_the_problem(over, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _row(**over)


def test_row_is_frozen():
    with pytest.raises(ValidationError):
        _row().status = "dropped"


# ---- SequenceRecord (ingest.json) -------------------------------------------------------------------
def _info(n_frames: int = 2) -> SequenceInfo:
    meta = SpikeMeta(format="dat", layout="stream", height=128, width=160, rate_hz=20000.0, start_s=0.0,
                     stream_file="s.dat")
    return SequenceInfo(split="train", n_frames=n_frames, H=256, W=320, Hs=128, Ws=160, scale=(2, 2),
                        dtype="uint8", rate_hz=20000.0, spike_dir="/raw/train/seq_000/spike", spike_meta=meta,
                        checksum="cd" * 32)


def _record(**over) -> SequenceRecord:
    rows = [_row(), _dropped(1), _row(frame_idx=10, vox_index=1, blur="train/seq_000/blur/000010.png",
                                      sharp="train/seq_000/sharp/000010.png")]
    fields = dict(fingerprint="ef" * 32, rows=rows, histograms={10: [5, 3], 0: [7, 1]}, info=_info())
    return SequenceRecord(**{**fields, **over})


def test_sequence_record_round_trip(tmp_path):
    record = _record()
    assert record.version == SEQUENCE_RECORD_VERSION and list(record.histograms) == [0, 10]   # frame order
    path = write_sequence_record(tmp_path / "seq" / "ingest.json", record)
    assert read_sequence_record(path) == record
    assert json.loads(path.read_text())["version"] == SEQUENCE_RECORD_VERSION


def test_an_unversioned_record_reads_as_version_0(tmp_path):
    """What ingest wrote before the record had a version: the same fields, keys sorted as strings."""
    legacy = _record().model_dump(mode="json", exclude={"version"})
    path = tmp_path / "ingest.json"
    path.write_text(json.dumps(legacy, sort_keys=True, indent=1) + "\n")
    back = read_sequence_record(path)
    assert back.version == 0 and back.model_dump(exclude={"version"}) == _record().model_dump(exclude={"version"})
    assert list(back.histograms) == [0, 10]


def test_sequence_record_reader_names_the_file_and_the_fix(tmp_path):
    path = write_sequence_record(tmp_path / "ingest.json", _record())
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "version": 7}))
    with pytest.raises(ValueError, match=r"ingest\.json: sequence record version 7, this spikeprep reads versions "
                                         r"0, 1; re-run `spikeprep ingest RAW --out DATA_ROOT`"):
        read_sequence_record(path)
    path.write_text(json.dumps(raw)[:40])
    with pytest.raises(ValueError, match=r"ingest\.json: not a readable sequence record"):
        read_sequence_record(path)
    path.write_text(json.dumps({**raw, "fingerprint": "x"}))
    with pytest.raises(ValueError, match=r"(?s)ingest\.json: invalid sequence record.*fingerprint"):
        read_sequence_record(path)
    with pytest.raises(ValueError, match="not a readable sequence record"):
        read_sequence_record(tmp_path / "missing" / "ingest.json")


@pytest.mark.parametrize("over, fragment", [
    (dict(histograms={0: [7, 1]}), "histograms must cover exactly the frames with voxels"),
    (dict(info=_info(n_frames=3)), "2 rows have voxels but info.n_frames is 3"),
    (dict(rows=[_row(), _row(split="val", blur="val/seq_000/blur/000000.png", sharp="val/seq_000/sharp/000000.png")]),
     "rows of more than one sequence"),
    (dict(rows=[_row(split="val", blur="val/seq_000/blur/000000.png", sharp="val/seq_000/sharp/000000.png")],
          histograms={0: [1]}, info=_info(n_frames=1)), "in a record of split 'train'"),
    (dict(version=2), "version"),
])
def test_sequence_record_validation(over, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _record(**over)


# ---- the preset override rules (the ingest command's --height ... --exposure-length) -----------------
def test_no_override_gives_the_preset():
    assert preset_overrides("s-sdm") == {} and preset_overrides("native") == {}


def test_numbers_given_replace_the_preset_fields():
    assert preset_overrides("s-sdm", height=48, width=64, rate_hz=1e4) == dict(height=48, width=64, rate_hz=1e4)


def test_an_exposure_length_alone_makes_a_centred_preset_measuring_each_file():
    over = preset_overrides("s-sdm", exposure_length=16)
    assert over == dict(exposure_length=16, exposure_start=None, exposure_stop=None, frames_per_file=None)
    preset = resolve_preset("s-sdm", **over)
    assert preset.exposure_span(28) == (6, 22) and preset.frames_per_file is None
    over = preset_overrides("s-sdm", exposure_length=16, frames_per_file=30)    # a length given is kept
    assert over["frames_per_file"] == 30


def test_an_exposure_start_or_stop_makes_a_span_preset():
    over = preset_overrides("spk-gopro", exposure_start=6, exposure_stop=22)
    assert over == dict(exposure_start=6, exposure_stop=22, exposure_length=None)
    assert resolve_preset("spk-gopro", **over).exposure_span(28) == (6, 22)
    assert preset_overrides("s-sdm", exposure_stop=100) == dict(exposure_stop=100, exposure_length=None)


def test_overrides_for_the_native_layout_are_refused():
    with pytest.raises(ValueError, match="preset overrides apply to --layout s-sdm / spk-gopro only; native data "
                                         "describe themselves in spike/meta.json and exposure.csv"):
        preset_overrides("native", height=48)


# ---- issue 31: codes, not prose, for the machine; the crop rule has one home ----------------------------
@given(short_side=st.integers(min_value=1, max_value=5000))
def test_the_crop_hint_never_advises_a_crop_the_trainer_refuses(short_side):
    from spikeprep.audit import CropDrops

    hint = CropDrops(frames=1, by_ingest=1, short_side=short_side, crop_size=short_side + 1).crop_hint
    if short_side < MIN_CROP_SIZE:
        assert hint is None
    else:
        assert crop_size_problem(hint) is None and hint <= short_side < hint + CROP_MULTIPLE


@given(crop=st.integers(min_value=1, max_value=5000))
def test_the_crop_rule_and_its_nearest_valid_crop(crop):
    assert (crop_size_problem(crop) is None) == (crop % 8 == 0 and crop >= 64)
    assert crop_size_problem(nearest_valid_crop(crop)) is None
    assert nearest_valid_crop(crop) == crop or crop_size_problem(crop)


ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [p for d in ("spikeprep", "cli", "model", "schemas") for p in (ROOT / d).rglob("*.py")]


def test_every_drop_code_is_written_by_a_drop_path():
    text = "\n".join(p.read_text() for p in PRODUCT if p.name != "manifest.py")
    unused = [c.name for c in DropCode if f"DropCode.{c.name}" not in text]
    assert not unused, f"codes no drop path writes: {unused}"


def test_no_module_parses_the_reason_text():
    """The reason is prose for people; machines read reason_code (no startswith, regex or prefix on it)."""
    pattern = re.compile(r"""reason["')\]]*\s*(or ""\))?\.(startswith|endswith|split|removeprefix)|re\.\w+\([^)]*reason"""
                         r"""|AUDIT_PREFIX|short side \(\\d""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in PRODUCT for n, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line)]
    assert not found, found
