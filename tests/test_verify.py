"""Issue 16, items 3 and 9: every chunk read is checked, a missing chunk is a missing sample (not zeros),
`spikeprep verify` finds damage against the manifest, and a damaged store is a clear error for every command."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.main import main
from schemas.manifest import MANIFEST_SCHEMA
from schemas.verify import read_verify_report
from spikeprep.errors import InputError, SampleError
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset
from spikeprep.store import ChunkReader, read_frame, read_manifest, read_store_info


@pytest.fixture
def store(train_store, tmp_path):
    return Path(shutil.copytree(train_store, tmp_path / "store"))


def first_row(store: Path, split: str = "train") -> dict:
    return next(r for r in read_manifest(store).to_pylist() if r["split"] == split and r["vox_index"] is not None)


def shard(store: Path, row: dict, array: str) -> Path:
    return Path(ChunkReader(store / row["split"] / row["seq"] / array).shard_path(row["vox_index"]))


def flip_bit(path: Path, offset: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def verify(store: Path, *args: str):
    return CliRunner().invoke(main, ["verify", str(store), "--no-progress", *args])


def test_a_clean_store_verifies(store, tmp_path):
    res = verify(store, "--json", str(tmp_path / "v.json"))
    assert res.exit_code == 0, res.output
    report = read_verify_report(tmp_path / "v.json")
    kept = [r for r in read_manifest(store).to_pylist() if r["status"] == "ok" and r["vox_index"] is not None]
    assert report.ok and report.frames == len(kept) and report.sequences == len(read_store_info(store).sequences)
    assert f"verified {len(kept)} frames" in res.output and "OK" in res.output


def test_a_flipped_bit_in_a_voxel_chunk_is_caught_by_every_reader(store):
    row = first_row(store)
    vox = store / row["split"] / row["seq"] / "spike_vox.zarr" / "counts"
    path = shard(store, row, "spike_vox.zarr/counts")
    good = read_frame(vox, row["vox_index"])
    flip_bit(path)
    with pytest.raises(OSError, match="checksum mismatch"):
        read_frame(vox, row["vox_index"])
    # the Dataset drops (and logs) every clip holding that frame instead of serving wrong voxels
    ds = SpikeDeblurDataset(store, "train", clip_len=1, train=False)
    items = [ds[i] for i in range(len(ds))]
    served = [it for it in items if it is not None]
    assert len(served) == len(items) - 1
    assert not any(it["meta"]["seq"] == row["seq"] and it["meta"]["frame_idx"] == [row["frame_idx"]] for it in served)
    res = verify(store)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{row['split']}/{row['seq']} frame {row['frame_idx']}" in res.output and str(path) in res.output
    assert "checksum mismatch" in res.output and "1 problem(s)" in res.output
    assert good.shape[0] == read_store_info(store).K


def test_a_deleted_frame_shard_is_a_missing_sample_not_zeros(store):
    row = first_row(store)
    path = shard(store, row, "rgb.zarr/sharp")
    path.unlink()
    with pytest.raises(SampleError, match="shard missing"):
        read_frame(store / row["split"] / row["seq"] / "rgb.zarr" / "sharp", row["vox_index"])
    ds = SpikeDeblurDataset(store, "train", clip_len=1, train=False)
    assert sum(ds[i] is None for i in range(len(ds))) == 1
    res = verify(store)
    assert res.exit_code == 1 and "shard missing" in res.output and str(path) in res.output


def test_an_all_zero_frame_is_stored_so_its_loss_is_seen(tmp_path):
    """Chunks of zeros are written too (write_empty_chunks): a store has a shard for every kept row."""
    from spikeprep.store import create_vox_array

    arr = create_vox_array(tmp_path / "v.zarr", 2, 4, 70, 70, np.uint8)
    arr[0] = 0
    arr[1] = 1
    reader = ChunkReader(tmp_path / "v.zarr")
    assert reader.fast and (reader.shard_index(0)[..., 0] != np.uint64(2**64 - 1)).all()
    np.testing.assert_array_equal(read_frame(tmp_path / "v.zarr", 0), 0)


def test_a_tampered_manifest_checksum_and_an_unknown_sequence_are_reported(store):
    rows = read_manifest(store).to_pylist()
    i = next(i for i, r in enumerate(rows) if r["vox_index"] is not None)
    rows[i]["vox_checksum"] = "0" * 64
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), store / "manifest.parquet")
    res = verify(store)
    assert res.exit_code == 1 and "differs from the manifest's vox_checksum" in res.output
    assert "disagree with dataset.json" in res.output
    info = json.loads((store / "dataset.json").read_text())
    del info["sequences"][f"{rows[i]['split']}/{rows[i]['seq']}"]
    (store / "dataset.json").write_text(json.dumps(info))
    res = verify(store)
    assert res.exit_code == 1 and "not in dataset.json" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["audit", str(store), "--no-progress"])
    assert res.exit_code == 2 and "not in dataset.json" in res.output and "Traceback" not in res.output


def test_audit_overlays_skip_a_damaged_shard_and_draw_the_rest(store, caplog):
    row = first_row(store)
    flip_bit(shard(store, row, "spike_vox.zarr/counts"))
    n = sum(r["vox_index"] is not None for r in read_manifest(store).to_pylist())
    res = CliRunner().invoke(main, ["audit", str(store), "--overlays", str(n), "--no-progress"])
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    assert len(list((store / "audit" / "overlays").glob("*.png"))) == n - 1


def test_audit_names_a_deleted_ingest_json(store):
    row = first_row(store)
    (store / row["split"] / row["seq"] / "ingest.json").unlink()
    res = CliRunner().invoke(main, ["audit", str(store), "--no-progress"])
    assert res.exit_code == 2 and "ingest.json" in res.output and "Traceback" not in res.output
    assert "re-run `spikeprep ingest" in res.output


def _as_version_2_layout(seq_dir: Path) -> None:
    """What spikeprep wrote for store version 2: ``spike_vox.zarr`` a bare counts array, no coordinates."""
    vox = seq_dir / "spike_vox.zarr"
    (vox / "counts").rename(seq_dir / "counts.tmp")
    shutil.rmtree(vox)
    (seq_dir / "counts.tmp").rename(vox)
    shutil.rmtree(seq_dir / "rgb.zarr")


@pytest.mark.parametrize("old_version", [1, 2])
def test_an_older_store_says_reingest_and_an_ingest_rerun_rebuilds_it(store, synth_tree, monkeypatch, old_version):
    from conftest import TRAIN_K, TRAIN_TREE

    import spikeprep.ingest as ingest_mod
    from spikeprep.raw_layout import discover

    raw, options = synth_tree(**TRAIN_TREE), IngestOptions(num_bins=TRAIN_K, crop_size=64)
    info = json.loads((store / "dataset.json").read_text())
    info["version"] = old_version
    (store / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match=f"store version {old_version}.*re-run `spikeprep ingest"):
        read_store_info(store)
    res = verify(store)
    assert res.exit_code == 2 and f"store version {old_version}" in res.output and "Traceback" not in res.output
    # the sequence records an older spikeprep wrote: its record version (3 for store version 2) in the fingerprint
    monkeypatch.setattr(ingest_mod, "SEQ_BUILD_VERSION", old_version + 1)
    for spec in discover(raw, "native"):
        seq_dir = store / spec.split / spec.name
        rec = json.loads((seq_dir / "ingest.json").read_text())
        rec["fingerprint"] = ingest_mod.sequence_fingerprint(spec, options)
        (seq_dir / "ingest.json").write_text(json.dumps(rec))
        if old_version == 2:
            _as_version_2_layout(seq_dir)
    monkeypatch.undo()
    ingest(raw, store, options, log_dir=None, progress=False)
    assert read_store_info(store).version == 3 and verify(store).exit_code == 0
    xr = pytest.importorskip("xarray")
    for key in read_store_info(store).sequences:
        assert xr.open_zarr(store / key / "spike_vox.zarr", chunks={}).counts.dims == ("frame", "bin", "y", "x")
