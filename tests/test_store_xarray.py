"""Issue 18, item 2: a store the field's tools open. xarray opens each sequence's ``spike_vox.zarr`` and
``rgb.zarr`` with named dimensions, coordinates and CF-style units, dask-backed, holding exactly what
ChunkReader and the Dataset read; the manifest's columns carry their units and descriptions (pyarrow field
metadata, and the file's key-value metadata for DuckDB and Polars)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.main import main
from schemas.manifest import COLUMN_DOCS, COLUMNS_KEY, MANIFEST_SCHEMA
from schemas.store import VOX_AXES, RGB_AXES
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset
from spikeprep.store import ChunkReader, read_manifest, read_store_info

xr = pytest.importorskip("xarray")
dask_array = pytest.importorskip("dask.array")

ROOT = Path(__file__).resolve().parents[1]
K = 8
DROPPED = ("train", "seq_000", 1)      # its blur frame is deleted from the raw tree: dropped at ingest


@pytest.fixture(scope="module")
def store(synth_tree, tmp_path_factory) -> Path:
    """A store of the tiny raw tree with one frame dropped at ingest."""
    base = tmp_path_factory.mktemp("xr")
    raw = Path(shutil.copytree(synth_tree(), base / "raw"))
    split, seq, idx = DROPPED
    (raw / split / seq / "blur" / f"{idx:06d}.png").unlink()
    ingest(raw, base / "store", IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    return base / "store"


def stored_rows(store: Path, key: str) -> list[dict]:
    """The manifest rows of ``key`` that have voxels, in row (``vox_index``) order."""
    rows = [r for r in read_manifest(store).to_pylist() if f"{r['split']}/{r['seq']}" == key
            and r["vox_index"] is not None]
    return sorted(rows, key=lambda r: r["vox_index"])


def open_seq(store: Path, key: str, group: str):
    return xr.open_zarr(store / key / group, chunks={})


def test_every_zarr_array_of_the_store_has_dimension_names(store):
    arrays = [p.parent for p in store.rglob("zarr.json") if json.loads(p.read_text())["node_type"] == "array"]
    assert len(arrays) == 3 * 10           # 3 sequences x (counts + 4 coordinates, blur + sharp + 3 coordinates)
    for path in arrays:
        names = json.loads((path / "zarr.json").read_text()).get("dimension_names")
        assert names and all(isinstance(n, str) and n for n in names), path


def test_spike_vox_opens_with_named_dims_coordinates_and_units(store):
    info = read_store_info(store)
    for key, seq in info.sequences.items():
        rows = stored_rows(store, key)
        ds = open_seq(store, key, "spike_vox.zarr")
        assert ds.counts.dims == VOX_AXES and ds.counts.shape == (len(rows), K, seq.Hs, seq.Ws)
        assert isinstance(ds.counts.data, dask_array.Array)              # lazy: chunks={} keeps it on disk
        assert ds.counts.dtype == np.dtype(seq.dtype)
        assert set(ds.coords) == {"frame_idx", "t0", "t1", "bin_edge"}
        for name in ("frame_idx", "t0", "t1"):
            assert ds[name].dims == ("frame",)
            assert ds[name].values.tolist() == [r[name] for r in rows]   # exactly the manifest's values
        assert ds.bin_edge.dims == ("bin_edge",) and "bin_edge" in ds.indexes
        np.testing.assert_array_equal(ds.bin_edge.values, np.arange(K + 1) / K)
        assert ds.t0.attrs["units"] == ds.t1.attrs["units"] == "s" and ds.counts.attrs["units"] == "1"
        for var in ("counts", "frame_idx", "t0", "t1", "bin_edge"):
            assert {"units", "long_name", "description"} <= set(ds[var].attrs), var
        assert ds.attrs["K"] == K and ds.attrs["seq"] == key and ds.attrs["store_version"] == info.version
        assert "dropped" in ds.attrs["description"] and "vox_index" in ds.attrs["description"]


def test_a_frame_dropped_at_ingest_has_no_row_and_frame_idx_says_which_are_there(store):
    split, seq, idx = DROPPED
    key = f"{split}/{seq}"
    manifest = [r for r in read_manifest(store).to_pylist() if r["split"] == split and r["seq"] == seq]
    dropped = next(r for r in manifest if r["frame_idx"] == idx)
    assert dropped["status"] == "dropped" and dropped["vox_index"] is None
    for group in ("spike_vox.zarr", "rgb.zarr"):
        frame_idx = open_seq(store, key, group).frame_idx.values.tolist()
        assert idx not in frame_idx and len(frame_idx) == len(manifest) - 1
        assert frame_idx == sorted(r["frame_idx"] for r in manifest if r["vox_index"] is not None)


def test_xarray_values_equal_what_chunkreader_and_the_dataset_read(store):
    info = read_store_info(store)
    for key in info.sequences:
        vox, rgb = open_seq(store, key, "spike_vox.zarr"), open_seq(store, key, "rgb.zarr")
        reader = ChunkReader(store / key / "spike_vox.zarr" / "counts")
        _, _, h, w = reader.shape
        for n in range(vox.sizes["frame"]):
            np.testing.assert_array_equal(vox.counts.isel(frame=n).values, reader.read(n, 0, h, 0, w))
        for kind in ("blur", "sharp"):
            frames = ChunkReader(store / key / "rgb.zarr" / kind)
            for n in range(rgb.sizes["frame"]):
                full = frames.read(n, 0, frames.shape[2], 0, frames.shape[3])
                np.testing.assert_array_equal(rgb[kind].isel(frame=n).values, full)
    for split in ("train", "val"):     # the Dataset's full frames, one per clip, looked up by frame_idx
        ds = SpikeDeblurDataset(store, split, clip_len=1, train=False, voxels="counts")
        checked = 0
        for i in range(len(ds)):
            item = ds[i]
            meta = item["meta"]
            key = f"{split}/{meta['seq']}"
            vox = open_seq(store, key, "spike_vox.zarr").set_xindex("frame_idx")
            rgb = open_seq(store, key, "rgb.zarr").set_xindex("frame_idx")
            frame = vox.sel(frame_idx=meta["frame_idx"][0])
            assert float(frame.t0) == meta["t0"][0] and float(frame.t1) == meta["t1"][0]
            np.testing.assert_array_equal(item["spike_counts"][0].numpy(), frame.counts.values)
            for kind in ("blur", "sharp"):
                served = item[kind][0].numpy()
                stored = rgb[kind].sel(frame_idx=meta["frame_idx"][0]).values
                np.testing.assert_array_equal(np.round(served * 255).astype(np.uint8), stored)
            checked += 1
        assert checked == sum(r["status"] == "ok" for r in read_manifest(store).to_pylist() if r["split"] == split)


def test_rgb_opens_with_the_same_frame_coordinates(store):
    for key, seq in read_store_info(store).sequences.items():
        vox, rgb = open_seq(store, key, "spike_vox.zarr"), open_seq(store, key, "rgb.zarr")
        for kind in ("blur", "sharp"):
            assert rgb[kind].dims == RGB_AXES and rgb[kind].shape == (vox.sizes["frame"], 3, seq.H, seq.W)
            assert rgb[kind].dtype == np.uint8 and isinstance(rgb[kind].data, dask_array.Array)
            assert {"units", "long_name", "description"} <= set(rgb[kind].attrs)
        assert set(rgb.coords) == {"frame_idx", "t0", "t1"} and rgb.attrs["channels"] == "RGB"
        for name in ("frame_idx", "t0", "t1"):
            np.testing.assert_array_equal(rgb[name].values, vox[name].values)
            assert rgb[name].attrs == vox[name].attrs


def test_verify_finds_a_coordinate_that_disagrees_with_the_manifest(store, tmp_path):
    import zarr

    copy = Path(shutil.copytree(store, tmp_path / "store"))
    t0 = zarr.open_array(str(copy / "val" / "seq_002" / "rgb.zarr" / "t0"), mode="r+")
    t0[1] = t0[1] + 1e-3
    res = CliRunner().invoke(main, ["verify", str(copy), "--no-progress"])
    assert res.exit_code == 1 and "coordinate t0" in res.output and "rgb.zarr" in res.output
    assert "disagrees with the manifest" in res.output and "from row 1" in res.output


# ---- the manifest's units ------------------------------------------------------------------------------
NUMERIC = {"frame_idx", "t0", "t1", "t0_recorded", "t1_recorded", "n_ticks", "event_count", "H", "W", "Hs", "Ws", "vox_index", "audit_corr",
           "audit_best_offset_ticks", "audit_best_offset_s", "audit_registration_px"}


def test_manifest_fields_carry_units_and_descriptions(store):
    schema = pq.read_schema(store / "manifest.parquet")
    for field in MANIFEST_SCHEMA:
        meta = schema.field(field.name).metadata
        assert meta == field.metadata, field.name                      # read back as written
        assert meta[b"description"].strip(), field.name
        assert (b"unit" in meta) == (field.name in NUMERIC), field.name
    units = {f.name: f.metadata[b"unit"].decode() for f in schema if b"unit" in f.metadata}
    assert units["t0"] == units["t1"] == units["audit_best_offset_s"] == "s"
    assert units["n_ticks"] == "ticks" and units["H"] == "px" and units["event_count"] == "spikes"
    file_meta = pq.read_metadata(store / "manifest.parquet").metadata
    assert json.loads(file_meta[COLUMNS_KEY]) == COLUMN_DOCS
    assert COLUMN_DOCS["t0"] == {"unit": "s", "description": MANIFEST_SCHEMA.field("t0").metadata[b"description"].decode()}


def test_an_audited_manifest_keeps_its_units(store, tmp_path):
    from spikeprep.audit import audit

    copy = Path(shutil.copytree(store, tmp_path / "store"))
    audit(copy, progress=False)                       # rewrites the manifest with its figures
    assert read_manifest(copy).column("audit_verdict").null_count < len(read_manifest(copy))
    assert pq.read_schema(copy / "manifest.parquet").field("t0").metadata[b"unit"] == b"s"


def test_duckdb_reads_the_units(store):
    duckdb = pytest.importorskip("duckdb")
    path = str(store / "manifest.parquet")
    value = duckdb.sql(f"SELECT value FROM parquet_kv_metadata('{path}') WHERE key = 'spikeprep.columns'").fetchall()[0][0]
    assert json.loads(value)["t0"]["unit"] == "s"
    n_ok = duckdb.sql(f"SELECT count(*) FROM '{path}' WHERE status = 'ok'").fetchall()[0][0]
    assert n_ok == sum(r["status"] == "ok" for r in read_manifest(store).to_pylist())


def test_polars_reads_the_units(store):
    pl = pytest.importorskip("polars")
    path = store / "manifest.parquet"
    assert json.loads(pl.read_parquet_metadata(path)["spikeprep.columns"])["t1"]["unit"] == "s"
    assert pl.read_parquet(path).filter(pl.col("status") == "ok").height == sum(
        r["status"] == "ok" for r in read_manifest(store).to_pylist())


# ---- the README's example ------------------------------------------------------------------------------
def readme_store_example() -> list[str]:
    """The Python blocks of the README's "The store (DATA_ROOT)" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The store (DATA_ROOT)", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_store_example_runs(store, capsys):
    """Every block runs against a real store; one whose query tool (duckdb, polars) is not installed is
    skipped, the others still run."""
    import importlib.util

    blocks = readme_store_example()
    assert len(blocks) >= 2, "README: the python examples of 'The store (DATA_ROOT)' are missing"
    ran = []
    for code in blocks:
        needs = [m for m in ("duckdb", "polars") if re.search(rf"^import {m}\b", code, re.M)]
        if any(importlib.util.find_spec(m) is None for m in needs):
            continue
        exec(compile(code.replace("DATA_ROOT", str(store)), "README.md", "exec"), {})
        ran.append(code)
    out = capsys.readouterr().out
    assert ran[0] == blocks[0] and "spike count" in out and "'t0': 's'" in out


def test_spikeprep_test_takes_a_spike_vox_group_or_its_sequence_folder(store):
    """``spikeprep test --input_spike_vox`` given a store's ``spike_vox.zarr`` (now a group) reads its counts."""
    from spikeprep.inference_inputs import find_vox_sequences

    key = "val/seq_002"
    vox = open_seq(store, key, "spike_vox.zarr")
    one, single = find_vox_sequences(store / key / "spike_vox.zarr")
    many, _ = find_vox_sequences(store / "val")
    assert single and set(one) == {"seq_002"} and "seq_002" in many
    for counts in (one["seq_002"], many["seq_002"]):
        assert counts.where == store / key / "spike_vox.zarr" / "counts" and len(counts) == vox.sizes["frame"]
        np.testing.assert_array_equal(counts.read(1), vox.counts.isel(frame=1).values)
