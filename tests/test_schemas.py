"""Contracts in schemas/: the config, the spike meta record and the manifest schema."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from schemas.atomic import atomic_path, atomic_write_bytes, remove_stale_temps, stale_temps, temp_name
from schemas.json_record import read_json_record, write_json_record
from schemas.config import MIN_STD, Config, ConfigError, NormConfig, load_config, parse_config
from schemas.manifest import (MANIFEST_COLUMNS, MANIFEST_SCHEMA, ManifestSchemaError,
                              validate_manifest_table)
from schemas.val_report import Arm, Metrics, ValReport, format_metric, read_val_report, write_val_report
from schemas.spike_meta import SpikeMeta
from schemas.validation import describe_validation_error

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "configs" / "deblur" / "vrt_spike_baseline.yaml"


def test_baseline_config_is_the_original_document_section_7():
    cfg = load_config(BASELINE)
    assert cfg.SEED == 123
    assert (cfg.DATA.CROP_SIZE, cfg.DATA.CLIP_LEN, cfg.DATA.K) == (256, 5, 32)
    assert (cfg.DATA.NORM.MEAN, cfg.DATA.NORM.STD) == (0.0, 1.0)
    assert cfg.MODEL.CHANNELS_PER_SCALE == [96, 96, 96, 96] and cfg.MODEL.LAYERS == 4
    assert cfg.MODEL.SPIKE_TSA.HEADS == 4 and cfg.MODEL.FUSE.HEADS == 4
    # the one measured departure (DESIGN section 9.6): the original's "TemporalCrossAttn" ignores its spikes
    assert cfg.MODEL.FUSE.TYPE == "ResidualTemporalCrossAttnMotionGatedSpikeHead"
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.EPOCHS, cfg.TRAIN.OPTIM.LR) == (8, 80, 2e-4)
    assert cfg.TRAIN.SCHED.WARMUP_STEPS == 5000
    assert cfg.LOG.TENSORBOARD is True and cfg.LOG.SAVE_DIR == "outputs"


def test_config_round_trip():
    cfg = load_config(BASELINE)
    again = parse_config(yaml.safe_load(yaml.safe_dump(cfg.model_dump())))
    assert again == cfg


@pytest.mark.parametrize("path, key", [
    (("DATA", "NORM"), "MEEN"),
    (("TRAIN",), "BATCH"),
    ((), "EXTRA_TOP"),
    (("MODEL", "FUSE"), "GATE"),
])
def test_unknown_key_is_named(path, key):
    raw = yaml.safe_load(BASELINE.read_text())
    node = raw
    for p in path:
        node = node[p]
    node[key] = 1
    dotted = ".".join((*path, key))
    with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
        parse_config(raw, "cfg.yaml")


@pytest.mark.parametrize("path, value", [
    (("DATA", "NORM", "STD"), 1e-7),
    (("DATA", "K"), 0),
    (("MODEL", "CHANNELS_PER_SCALE"), []),
    (("MODEL", "FUSE", "TYPE"), "Concat1x1"),
])
def test_invalid_values_are_named(path, value):
    raw = yaml.safe_load(BASELINE.read_text())
    node = raw
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=r"\.".join(path)):
        parse_config(raw)


@pytest.mark.parametrize("model, fragment", [
    ({"CHANNELS_PER_SCALE": [16, 16]}, "2 entries but LAYERS is 4"),
    ({"FUSE": {"TYPE": "TemporalCrossAttn", "HEADS": 5}}, "FUSE.HEADS is 5"),
    ({"SPIKE_TSA": {"HEADS": 7}}, "SPIKE_TSA.HEADS is 7"),
])
def test_inconsistent_model_sections_are_named(model, fragment):
    """Issue 16, item 10: these used to surface as a ValueError / AssertionError inside the model."""
    raw = yaml.safe_load(BASELINE.read_text())
    raw["MODEL"].update(model)
    with pytest.raises(ConfigError, match=fragment) as err:
        parse_config(raw, "cfg.yaml")
    assert "cfg.yaml" in str(err.value) and "MODEL" in str(err.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("DATA: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_config_is_frozen():
    cfg = load_config(BASELINE)
    with pytest.raises(Exception):
        cfg.SEED = 1
    assert isinstance(cfg.model_copy(update={"SEED": 7}), Config)


@pytest.mark.parametrize("record", [
    dict(format="dat", layout="stream", height=250, width=400, rate_hz=20000.0, start_s=0.0,
         stream_file="stream.dat"),
    dict(format="npz-events", layout="per-frame", height=180, width=320, rate_hz=40000.0),
    dict(format="npy-binary", layout="per-frame", height=3, width=5, rate_hz=1.5, flipud=False,
         file_start_s={"000000": 0.25, "000001": 0.5}),
])
def test_spike_meta_round_trip(record):
    meta = SpikeMeta.model_validate(record)
    assert SpikeMeta.model_validate_json(meta.to_json()) == meta
    assert meta.to_json() == SpikeMeta.model_validate_json(meta.to_json()).to_json()


def test_spike_meta_frame_time_formula():
    meta = SpikeMeta(format="dat", layout="stream", height=8, width=8, rate_hz=20000.0, start_s=1.5,
                     stream_file="s.dat")
    assert meta.frame_time(1.5, 7) == 1.5 + 7 / 20000.0


def _row(**over):
    row = dict(split="train", seq="seq_000", frame_idx=0, t0=0.0, t1=0.01, t0_recorded=0.0, t1_recorded=0.01,
               n_ticks=200, event_count=5,
               H=256, W=320, Hs=128, Ws=160, blur="train/seq_000/blur/000000.png",
               sharp="train/seq_000/sharp/000000.png", paired=True, spike_source="raw/train/seq_000/spike/stream.dat",
               vox_index=0, status="ok", reason=None, reason_code=None, audit_corr=0.9, audit_best_offset_ticks=0,
               audit_best_offset_s=0.0, audit_verdict="aligned", vox_checksum="ab" * 32)
    row.update(over)
    return row


def test_manifest_parquet_round_trip(tmp_path):
    table = pa.Table.from_pylist([_row(), _row(frame_idx=1, status="dropped", reason="empty window",
                                               reason_code="window_empty", vox_index=None, audit_corr=None)],
                                 schema=MANIFEST_SCHEMA)
    validate_manifest_table(table)
    pq.write_table(table, tmp_path / "manifest.parquet")
    back = pq.read_table(tmp_path / "manifest.parquet")
    validate_manifest_table(back)
    assert back.equals(table)
    assert tuple(back.schema.names) == MANIFEST_COLUMNS


def test_manifest_rejects_drift():
    table = pa.Table.from_pylist([_row()], schema=MANIFEST_SCHEMA)
    with pytest.raises(ManifestSchemaError, match="version"):
        validate_manifest_table(table.replace_schema_metadata({}))
    with pytest.raises(ManifestSchemaError, match="missing"):
        validate_manifest_table(table.drop_columns(["reason"]))
    wrong = table.set_column(2, pa.field("frame_idx", pa.int32(), nullable=False),
                             table.column("frame_idx").cast(pa.int32()))
    with pytest.raises(ManifestSchemaError, match="frame_idx"):
        validate_manifest_table(wrong)


# ---- one way to format validation errors --------------------------------------------------------------
def test_validation_errors_read_field_colon_message():
    raw = yaml.safe_load(BASELINE.read_text())
    raw["MODEL"]["CHANNELS_PER_SCALE"] = []
    raw["DATA"]["KK"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "cfg.yaml")
    text = str(err.value)
    assert "MODEL.CHANNELS_PER_SCALE: must be a non-empty list" in text  # no "Value error, " prefix
    assert "DATA.KK: unknown key (not in schemas/config.py)" in text
    with pytest.raises(ValidationError) as err:
        SpikeMeta.model_validate(dict(format="dat", layout="stream", height=2, width=4, rate_hz=1.0, start_s=0.0))
    assert describe_validation_error(err.value) == ("record: layout 'stream' needs 'stream_file' "
                                                    "(the file holding the stream)")


def test_std_floor_is_one_constant():
    import spikeprep.stats

    assert MIN_STD == 1e-6 and spikeprep.stats.MIN_STD is MIN_STD
    assert NormConfig(STD=MIN_STD).STD == MIN_STD
    with pytest.raises(ValidationError):
        NormConfig(STD=MIN_STD * 0.99)


# ---- atomic writes ------------------------------------------------------------------------------------
def test_temp_names_are_unique_hidden_and_keep_the_suffix(tmp_path):
    names = {temp_name(tmp_path / "a.npy") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and name.name.startswith(".a.npy.") and name.suffix == ".npy"
        assert f".{os.getpid()}-" in name.name


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    assert atomic_write_bytes(target, b"new content") == target
    assert target.read_bytes() == b"new content" and os.listdir(tmp_path) == ["x.bin"]


def test_atomic_path_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.npy"]
    with pytest.raises(FileNotFoundError):
        with atomic_path(target):
            pass  # wrote nothing: nothing to commit
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.npy"]


def dead_pid() -> int:
    """The pid of a process that has exited (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "manifest.parquet"
    target.write_bytes(b"the file")
    dead = tmp_path / f".manifest.parquet.{dead_pid()}-{'ab' * 6}.tmp.parquet"
    live = temp_name(target)                                         # this process: a writer still running
    other = tmp_path / f".dataset.json.{dead_pid()}-{'cd' * 6}.tmp.json"   # another destination's
    mine = tmp_path / ".manifest.parquet.notes"                      # not of the temp naming
    for f in (dead, live, other, mine):
        f.write_bytes(b"x")
    assert stale_temps(target) == [dead]
    assert remove_stale_temps(target) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (target, live, other, mine))
    assert remove_stale_temps(tmp_path / "missing" / "x.json") == []


def _report() -> ValReport:
    m = Metrics(frames=2, psnr_rgb=30.0, psnr_y=31.0, ssim=0.9)
    return ValReport(exp="e", arm="spike", step=1, split="val", overall=m, boundary=m, boundary_fraction=0.1,
                     static=m, static_fraction=0.5, per_sequence={"seq_000": m}, seconds=1.0)


def test_val_report_write_does_not_share_a_temp_file(tmp_path):
    # The old fixed temp name (val.json.tmp) was shared by parallel writers of the same report.
    path = tmp_path / "val.json"
    other = tmp_path / "val.json.tmp"
    other.write_text("another writer's half-written report")
    write_val_report(path, _report())
    assert read_val_report(path) == _report()
    assert other.read_text() == "another writer's half-written report"
    assert sorted(os.listdir(tmp_path)) == ["val.json", "val.json.tmp"]


def test_json_records_name_the_file_and_what_to_rerun(tmp_path):
    path = write_json_record(tmp_path / "sub" / "r.json", _report())
    assert read_json_record(path, ValReport, kind="validation report", versions=(1, 2, 3), rerun="x") == _report()
    raw = path.read_text()
    path.write_text(raw.replace('"version": 3', '"version": 7'))
    with pytest.raises(ValueError, match=r"r\.json: validation report version 7, this spikeprep reads versions 1, 2, 3; "
                                         r"re-run it"):
        read_json_record(path, ValReport, kind="validation report", versions=(1, 2, 3), rerun="re-run it")
    path.write_text(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="r.json: not a readable validation report"):
        read_val_report(path)
    path.write_text(raw.replace('"step": 1', '"step": -1'))
    with pytest.raises(ValueError, match="r.json: invalid validation report"):
        read_val_report(path)


def test_val_report_versions_before_3_read_without_the_static_half(tmp_path):
    raw = _report().model_dump(mode="json")
    old = {k: v for k, v in raw.items() if k not in ("static", "static_fraction", "fuse_type")}
    path = tmp_path / "val.json"
    path.write_text(json.dumps({**old, "version": 2}))
    report = read_val_report(path)
    assert report.version == 2 and report.static is None and not report.fitted_head
    with pytest.raises(ValueError, match="static half"):              # a version 3 report without it
        path.write_text(json.dumps({**old, "version": 3}))
        read_val_report(path)
    with pytest.raises(ValidationError, match="both given or both absent"):
        ValReport.model_validate({**raw, "static_fraction": None})
    fitted = ValReport.model_validate({**raw, "fuse_type": "ResidualTemporalCrossAttnFittedSpikeHead"})
    assert fitted.fitted_head and not _report().fitted_head


def test_format_metric_is_the_one_cell_format():
    assert [format_metric(v, k) for v, k in ((31.234, "psnr_y"), (0.91234, "ssim_y"), (0.1, "lpips"),
                                            (0.5, "ssim"), (math.inf, "psnr_rgb"), (None, "ssim"))] == \
        ["31.23", "0.9123", "0.1000", "0.5000", "inf", "not computed"]


def test_arm_literal_is_the_val_report_arm():
    assert typing.get_args(Arm) == ("spike", "base")
    assert ValReport.model_fields["arm"].annotation == Arm
    with pytest.raises(ValidationError):
        _report().model_validate({**_report().model_dump(), "arm": "other"})


# ---- issue 28, items 8 and 11: one YAML loader refuses duplicate keys and names undecodable bytes ------
def test_duplicate_yaml_key_is_refused_naming_both_lines(tmp_path):
    text = BASELINE.read_text()
    lines = text.splitlines()
    k_line = next(i for i, line in enumerate(lines) if line.strip().startswith("K:"))
    indent = lines[k_line][:len(lines[k_line]) - len(lines[k_line].lstrip())]
    lines.insert(k_line + 1, f"{indent}K: 16")
    path = tmp_path / "dup.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "DATA.K" in message
    assert f"lines {k_line + 1} and {k_line + 2}" in message and "Fix:" in message


def test_vrt_config_file_uses_the_same_loader(tmp_path):
    from model.nets.vrt import vrt_from_config

    path = tmp_path / "vrt.yaml"
    path.write_text("preset: tiny\npreset: deblur\n")
    with pytest.raises(ConfigError, match="key preset is given twice, on lines 1 and 2"):
        vrt_from_config(path)


def _latin1_config(tmp_path) -> tuple[Path, int]:
    text = BASELINE.read_text()
    data = text.encode() + "# réglage du caméra\n".encode("latin-1")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(data)
    return path, len(text.encode()) + len("# r")


def test_non_utf8_config_names_the_file_and_byte(tmp_path):
    path, position = _latin1_config(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and f"byte 0xe9 at byte position {position}" in message
    assert "not UTF-8" in message and "Fix:" in message


def test_non_utf8_and_duplicate_configs_exit_2_in_every_command(tmp_path, train_store):
    """train, stats --write-config, ingest --config / --write-config, audit --config: one clear line, exit 2."""
    from click.testing import CliRunner

    from cli.main import main

    latin1, _ = _latin1_config(tmp_path)
    dup = tmp_path / "dup.yaml"
    dup.write_text(BASELINE.read_text() + "SEED: 7\n")
    for config, fragment in ((latin1, "not UTF-8"), (dup, "key SEED is given twice")):
        for args in (["train", "--config", str(config), "--dry-run", "--device", "cpu"],
                     ["stats", str(train_store), "--write-config", str(config)],
                     ["ingest", str(tmp_path), "--out", str(tmp_path / "never"), "--config", str(config)],
                     ["ingest", str(tmp_path), "--out", str(tmp_path / "never"), "--write-config", str(config)],
                     ["audit", str(train_store), "--config", str(config)]):
            res = CliRunner().invoke(main, args)
            assert res.exit_code == 2, (args, res.output, res.exception)
            assert fragment in res.output and str(config) in res.output, (args, res.output)
            assert "Traceback" not in res.output
    assert not (tmp_path / "never").exists()


# ---- issue 28, round one replayed: a record's validation error is one sentence, never pydantic's dump ----
def _assert_one_sentence(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    for dump in ("errors.pydantic.dev", "[type=", "input_value=", "validation error for", "\n"):
        assert dump not in message, (dump, message)


def test_record_errors_name_the_file_row_and_field(tmp_path, train_store):
    import json
    import shutil

    from schemas.sequence_record import read_sequence_record
    from spikeprep.errors import InputError
    from spikeprep.store import read_store_info

    store = tmp_path / "store"
    shutil.copytree(train_store, store)
    record = store / "train" / "seq_000" / "ingest.json"
    raw = json.loads(record.read_text())
    raw["rows"][1]["seq"] = "../../escape"
    raw["rows"][2]["frame_idx"] = -4
    record.write_text(json.dumps(raw))
    with pytest.raises(ValueError) as err:
        read_sequence_record(record)
    _assert_one_sentence(str(err.value), str(record), "row 1: seq '../../escape'", "row 2, field frame_idx:",
                         "greater than or equal to 0")

    info = json.loads((store / "dataset.json").read_text())
    info["sequences"]["train/seq_000"]["n_frames"] = -3
    (store / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(InputError) as err:
        read_store_info(store)
    _assert_one_sentence(str(err.value), str(store / "dataset.json"), "sequences.train/seq_000.n_frames:", "Fix:")


def test_many_bad_rows_are_one_line():
    from schemas.validation import describe_validation_error

    class Row(BaseModel):
        x: int

    class Rows(BaseModel):
        rows: list[Row]

    with pytest.raises(ValidationError) as err:
        Rows.model_validate({"rows": [{"x": "no"}] * 40})
    text = describe_validation_error(err.value)
    assert text.startswith("row 0, field x: ") and text.endswith("; and 35 more") and text.count("row ") == 5
