"""Issue 16, item 4: no path read from a store leaves DATA_ROOT, whichever command reads it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from conftest import tiny_config_dict
from schemas.manifest import MANIFEST_SCHEMA
from spikeprep.errors import InputError
from spikeprep.store import read_manifest, read_store_info


def tampered_manifest(store: Path, column: str, value: str) -> None:
    """Write the store's manifest with ``column`` of its first row set to ``value`` (schema kept)."""
    rows = read_manifest(store).to_pylist()
    rows[0][column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), store / "manifest.parquet")


@pytest.fixture
def store(train_store, tmp_path):
    copy = Path(shutil.copytree(train_store, tmp_path / "root" / "store"))
    outside = tmp_path / "root" / "outside"
    outside.mkdir()
    shutil.copyfile(next((copy / "train").rglob("blur/*.png")), outside / "stolen.png")
    return copy


@pytest.mark.parametrize("column, value", [("blur", "../outside/stolen.png"), ("sharp", "/etc/passwd"),
                                           ("blur", "train/seq_000/../../../outside/stolen.png"),
                                           ("seq", "../../outside_seq"), ("split", "..")])
def test_a_manifest_path_outside_the_store_is_refused_by_every_reader(store, column, value):
    tampered_manifest(store, column, value)
    with pytest.raises(InputError, match="never leave DATA_ROOT") as err:
        read_manifest(store)
    assert str(store / "manifest.parquet") in str(err.value)
    res = CliRunner().invoke(main, ["audit", str(store)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "never leave DATA_ROOT" in res.output
    assert not (store / "audit").exists() or not any((store / "audit").iterdir())


def test_a_dataset_json_sequence_outside_the_store_is_refused(store, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(store, tmp_path / "outputs")))
    info = json.loads((store / "dataset.json").read_text())
    key = next(iter(info["sequences"]))
    info["sequences"]["train/../../outside_seq"] = info["sequences"].pop(key)
    (store / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="never leave DATA_ROOT"):
        read_store_info(store)
    res = CliRunner().invoke(main, ["train", "--config", str(cfg), "--dry-run", "--no-vgg", "--device", "cpu"])
    assert res.exit_code == 2 and "Traceback" not in res.output and "never leave DATA_ROOT" in res.output
    assert not (tmp_path / "root" / "outside_seq").exists()


def test_a_damaged_manifest_is_a_clear_error(store):
    """Issue 16, item 9: a manifest that is not Parquet, or whose version is not a number."""
    table = read_manifest(store)
    (store / "manifest.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="not a readable Parquet manifest") as err:
        read_manifest(store)
    assert "Fix:" in str(err.value)
    pq.write_table(table.replace_schema_metadata({b"spikeprep.manifest_version": b"one"}), store / "manifest.parquet")
    res = CliRunner().invoke(main, ["audit", str(store)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "manifest version" in res.output
