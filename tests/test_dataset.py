"""SpikeDeblurDataset: the original document's section 4 contract over a spikeprep store.

Expected values are computed independently of the Dataset: voxels through zarr itself (not the
Dataset's direct shard reader), normalisation by brute force in float64, images with plain cv2.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import spikeprep.spike_deblur_dataset as sdd
from schemas.config import MIN_STD, parse_config
from schemas.manifest import Drop, DropCode
from spikeprep.errors import InputError
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.spike_deblur_dataset import (SpikeDeblurDataset, clip_starts, collate_drop_bad,
                                            normalise_upsample, norm_lut)
from spikeprep.store import ChunkReader, open_vox, read_manifest, read_manifest_rows, read_store_info, write_manifest

K = 8
# 128x192 frames, spikes at full resolution (2 x 3 chunks of 64), 64-tick windows -> counts 0..4
S1_TREE = dict(height=128, width=192, frames=7, exposure_ticks=64, seed=3)
# 96x128 frames over a 48x64 spike grid: scale 2
S2_TREE = dict(height=96, width=128, frames=6, exposure_ticks=64, spike_scale=2, seed=4)


def _ingest(raw: Path, out: Path) -> Path:
    ingest(raw, out, IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    return out


@pytest.fixture(scope="module")
def store(synth_tree, tmp_path_factory) -> Path:
    return _ingest(synth_tree(**S1_TREE), tmp_path_factory.mktemp("ds") / "store")


@pytest.fixture(scope="module")
def store2(synth_tree, tmp_path_factory) -> Path:
    return _ingest(synth_tree(**S2_TREE), tmp_path_factory.mktemp("ds2") / "store")


@pytest.fixture
def store_copy(store, tmp_path) -> Path:
    """A private copy of ``store`` (for tests that damage it)."""
    return Path(shutil.copytree(store, tmp_path / "store"))


# ---- independent expectations ------------------------------------------------------------------------
def stored_counts(root: Path, split: str, seq: str, frame_idx: int) -> np.ndarray:
    rows = [r for r in read_manifest(root).to_pylist()
            if r["split"] == split and r["seq"] == seq and r["frame_idx"] == frame_idx]
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    return np.asarray(open_vox(root / split / seq / "spike_vox.zarr" / "counts")[rows[0]["vox_index"]])


def brute_norm(counts: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((np.log1p(counts.astype(np.float64)) - mean) / std).astype(np.float32)


def rgb(root: Path, split: str, seq: str, kind: str, frame_idx: int) -> np.ndarray:
    bgr = cv2.imread(str(root / split / seq / kind / f"{frame_idx:06d}.png"), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1]).transpose(2, 0, 1).astype(np.float32) / np.float32(255)


def expected_item(root: Path, split: str, item: dict, crop: int | None, mean: float, std: float):
    """(blur, sharp, spike) expected for ``item`` at its meta crop position."""
    meta = item["meta"]
    s = read_store_info(root).sequences[f"{split}/{meta['seq']}"]
    sy, sx = s.scale
    y, x = meta["crop"]
    h, w = (s.H, s.W) if crop is None else (crop, crop)
    blur, sharp, spike = [], [], []
    for f in meta["frame_idx"]:
        blur.append(rgb(root, split, meta["seq"], "blur", f)[:, y:y + h, x:x + w])
        sharp.append(rgb(root, split, meta["seq"], "sharp", f)[:, y:y + h, x:x + w])
        full = np.repeat(np.repeat(stored_counts(root, split, meta["seq"], f), sy, axis=1), sx, axis=2)
        spike.append(brute_norm(full[:, y:y + h, x:x + w], mean, std))
    return np.stack(blur), np.stack(sharp), np.stack(spike)


def assert_item_equal(a: dict, b: dict) -> None:
    for k in ("blur", "sharp", "spike_vox"):
        assert torch.equal(a[k], b[k]), k
    assert a["meta"] == b["meta"]


# ---- clip indexing -----------------------------------------------------------------------------------
def test_clip_starts():
    assert clip_starts(7, 5, train=True) == [0, 1, 2]
    assert clip_starts(7, 5, train=False) == [0, 2]          # last clip aligned to the end
    assert clip_starts(10, 5, train=False) == [0, 5]
    assert clip_starts(11, 5, train=False) == [0, 5, 6]
    assert clip_starts(4, 5, train=True) == clip_starts(4, 5, train=False) == []
    for n in range(1, 30):
        for t in range(1, 7):
            covered = {s + i for s in clip_starts(n, t, train=False) for i in range(t)}
            assert covered == (set(range(n)) if n >= t else set())


# ---- train: shapes, dtypes, aligned crops --------------------------------------------------------------
def test_train_items_shapes_dtypes_and_values(store):
    info = read_store_info(store)
    ds = SpikeDeblurDataset(store, "train", clip_len=5, crop_size=32, num_bins=K, train=True, seed=1)
    assert len(ds) == 2 * (7 - 5 + 1)  # two sequences, stride 1
    assert ds._readers == {}            # nothing opened up front
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"blur", "sharp", "spike_vox", "meta"}
        for k, c in (("blur", 3), ("sharp", 3), ("spike_vox", K)):
            assert item[k].shape == (5, c, 32, 32) and item[k].dtype == torch.float32
            assert item[k].is_contiguous()
        assert 0.0 <= float(item["blur"].min()) and float(item["blur"].max()) <= 1.0
        meta = item["meta"]
        assert isinstance(meta["seq"], str) and len(meta["frame_idx"]) == 5
        assert meta["frame_idx"] == list(range(meta["frame_idx"][0], meta["frame_idx"][0] + 5))
        assert all(isinstance(v, int) for v in meta["frame_idx"])
        assert all(isinstance(v, float) for v in meta["t0"] + meta["t1"])
        assert all(a < b for a, b in zip(meta["t0"], meta["t1"]))
        blur, sharp, spike = expected_item(store, "train", item, 32, info.stats.mean, info.stats.std)
        assert np.array_equal(item["blur"].numpy(), blur)
        assert np.array_equal(item["sharp"].numpy(), sharp)
        assert np.array_equal(item["spike_vox"].numpy(), spike)  # exact: float64 maths, one rounding
    crops = {ds[i]["meta"]["crop"] for i in range(len(ds))}
    assert len(crops) > 1  # random positions


def test_crop_aligned_to_spike_scale(store2):
    info = read_store_info(store2)
    assert info.sequences["train/seq_000"].scale == (2, 2)
    ds = SpikeDeblurDataset(store2, "train", clip_len=3, crop_size=32, seed=0)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            y, x = item["meta"]["crop"]
            assert y % 2 == 0 and x % 2 == 0 and 0 <= y <= 96 - 32 and 0 <= x <= 128 - 32
            seen.add((y, x))
            assert item["spike_vox"].shape == (3, K, 32, 32)
            blur, sharp, spike = expected_item(store2, "train", item, 32, info.stats.mean, info.stats.std)
            assert np.array_equal(item["spike_vox"].numpy(), spike)
            assert np.array_equal(item["blur"].numpy(), blur)
            # every spike pixel is replicated 2 x 2 on the RGB grid
            v = item["spike_vox"].numpy()
            assert np.array_equal(v[..., 0::2, :], v[..., 1::2, :])
            assert np.array_equal(v[..., 0::2], v[..., 1::2])
    assert len(seen) > 4
    # the crop position is where the content is: find the blur crop inside the full frame
    item = ds[0]
    y, x = item["meta"]["crop"]
    full = rgb(store2, "train", item["meta"]["seq"], "blur", item["meta"]["frame_idx"][0])
    hits = [(yy, xx) for yy in range(0, 96 - 32 + 1) for xx in range(0, 128 - 32 + 1)
            if np.array_equal(full[:, yy:yy + 32, xx:xx + 32], item["blur"][0].numpy())]
    assert (y, x) in hits


def test_crop_not_multiple_of_scale_or_too_large(store, store2):
    with pytest.raises(InputError, match=r"crop size 33 is not a multiple of the spike-grid scale 2x2"):
        SpikeDeblurDataset(store2, "train", clip_len=3, crop_size=33)
    too_large = r"crop size 256 is larger than the frames .*128x192.*CROP_SIZE <= 128"
    with pytest.raises(InputError, match=too_large):
        SpikeDeblurDataset(store, "train", clip_len=3, crop_size=256)
    # validation is always full size: a crop size does not apply there
    ds = SpikeDeblurDataset(store, "val", clip_len=3, crop_size=256, train=False)
    assert ds[0]["blur"].shape == (3, 3, 128, 192)


# ---- val: full size, every kept frame, equal to the store ---------------------------------------------
def test_val_full_size_equals_store(store):
    info = read_store_info(store)
    ds = SpikeDeblurDataset(store, "val", clip_len=5, num_bins=K, train=False)
    assert [ds.clip_frames(i) for i in range(len(ds))] == [("seq_002", [0, 1, 2, 3, 4]),
                                                           ("seq_002", [2, 3, 4, 5, 6])]
    for i in range(len(ds)):
        item = ds[i]
        assert item["blur"].shape == item["sharp"].shape == (5, 3, 128, 192)
        assert item["spike_vox"].shape == (5, K, 128, 192) and item["meta"]["crop"] == (0, 0)
        blur, sharp, spike = expected_item(store, "val", item, None, info.stats.mean, info.stats.std)
        assert np.array_equal(item["blur"].numpy(), blur)
        assert np.array_equal(item["sharp"].numpy(), sharp)
        assert np.array_equal(item["spike_vox"].numpy(), spike)
    # deterministic: no augmentation
    assert_item_equal(ds[1], ds[1])


# ---- normalisation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,scale", [(np.uint8, (1, 1)), (np.uint8, (2, 2)), (np.uint16, (1, 3)),
                                         (np.uint16, (4, 2))])
def test_normalise_upsample_matches_brute_force(rng, dtype, scale):
    mean, std = 0.31, 0.47
    hi = 255 if dtype == np.uint8 else 3000
    counts = rng.integers(0, hi + 1, size=(5, 7, 9)).astype(dtype)
    counts[0, 0, 0] = hi
    got = normalise_upsample(counts, norm_lut(mean, std, dtype), scale)
    want = brute_norm(np.repeat(np.repeat(counts, scale[0], axis=1), scale[1], axis=2), mean, std)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_norm_from_arguments_and_config_mismatch_warns(store, caplog):
    info = read_store_info(store)
    ds = SpikeDeblurDataset(store, "val", clip_len=5, norm_mean=0.5, norm_std=2.0)
    item = ds[0]
    counts = stored_counts(store, "val", "seq_002", item["meta"]["frame_idx"][0])
    assert np.array_equal(item["spike_vox"][0].numpy(), brute_norm(counts, 0.5, 2.0))
    assert any("differs from the store's training stats" in r.message for r in caplog.records)
    caplog.clear()
    SpikeDeblurDataset(store, "val", clip_len=5, norm_mean=info.stats.mean, norm_std=info.stats.std)
    assert not any("differs" in r.message for r in caplog.records)
    with pytest.raises(InputError, match=re.escape(f"STD must be finite and >= {MIN_STD}")):
        SpikeDeblurDataset(store, "val", clip_len=5, norm_mean=0.0, norm_std=1e-9)


# ---- dropped frames ---------------------------------------------------------------------------------
def test_dropped_frames_never_appear(store_copy, caplog):
    drop = Drop(DropCode.AUDIT_MISALIGNED, "test: marked dropped")
    rows = [r.dropped(drop) if (r.split, r.seq, r.frame_idx) in {("train", "seq_000", 3), ("val", "seq_002", 5)}
            else r for r in read_manifest_rows(store_copy)]
    write_manifest(store_copy, rows)

    ds = SpikeDeblurDataset(store_copy, "train", clip_len=3, crop_size=32, seed=0)
    clips = [ds.clip_frames(i) for i in range(len(ds))]
    assert ("seq_000", [0, 1, 2]) in clips and ("seq_000", [4, 5, 6]) in clips
    assert not any(seq == "seq_000" and 3 in frames for seq, frames in clips)
    assert sum(seq == "seq_000" for seq, _ in clips) == 2 and sum(seq == "seq_001" for seq, _ in clips) == 5
    for i in range(len(ds)):  # and the items agree with the index
        item = ds[i]
        assert (item["meta"]["seq"], item["meta"]["frame_idx"]) == clips[i]

    caplog.clear()
    dv = SpikeDeblurDataset(store_copy, "val", clip_len=2, train=False)
    vclips = [dv.clip_frames(i)[1] for i in range(len(dv))]
    assert vclips == [[0, 1], [2, 3], [3, 4]]  # frame 5 dropped; frame 6 alone is too short for a clip
    assert any("appear in no clip" in r.message for r in caplog.records)

    with pytest.raises(InputError, match="no run of 7 consecutive kept frames"):
        SpikeDeblurDataset(store_copy, "val", clip_len=7, train=False)


# ---- DataLoader with workers ---------------------------------------------------------------------------
def test_two_workers_match_single_process(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=5, crop_size=32, seed=123)
    ds.set_epoch(3)
    single = [ds[i] for i in range(len(ds))]
    assert ds._readers  # the main process has open readers now ...
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._readers == {}  # ... which are never pickled into workers
    loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=2, collate_fn=collate_drop_bad)
    got = list(loader)
    assert len(got) == 3
    for b, batch in enumerate(got):
        assert batch["blur"].shape == (2, 5, 3, 32, 32) and batch["spike_vox"].shape == (2, 5, K, 32, 32)
        assert batch["meta"]["n_dropped"] == 0
        for j in range(2):
            ref = single[2 * b + j]
            for k in ("blur", "sharp", "spike_vox"):
                assert torch.equal(batch[k][j], ref[k])
            for key in ("seq", "frame_idx", "t0", "t1", "crop"):
                assert batch["meta"][key][j] == ref["meta"][key]
    # another epoch, other crops
    ds.set_epoch(4)
    assert [ds[i]["meta"]["crop"] for i in range(len(ds))] != [s["meta"]["crop"] for s in single]


def test_worker_seeded_randomness_is_reproducible(store):
    """seed=None: crops come from torch's generator, seeded per worker by the DataLoader."""
    ds = SpikeDeblurDataset(store, "train", clip_len=5, crop_size=32)

    def run(seed):
        loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=2, collate_fn=collate_drop_bad,
                            generator=torch.Generator().manual_seed(seed))
        return [(b["meta"]["seq"][0], b["meta"]["frame_idx"][0][0], b["meta"]["crop"][0]) for b in loader]

    a, b, c = run(7), run(7), run(8)
    assert a == b and a != c
    assert len({crop for _, _, crop in a}) > 1


# ---- bad samples and collate ----------------------------------------------------------------------------
def _shard(root: Path, rel: str, vox_index: int) -> Path:
    reader = ChunkReader(root / rel)
    return Path(reader.shard_path(vox_index))


def test_damaged_chunks_are_dropped(store_copy, caplog):
    ds = SpikeDeblurDataset(store_copy, "val", clip_len=2, train=False)
    assert ds.clip_frames(0) == ("seq_002", [0, 1]) and ds.clip_frames(1) == ("seq_002", [2, 3])
    rows = {r["frame_idx"]: r for r in read_manifest(store_copy).to_pylist() if r["seq"] == "seq_002"}
    blur1 = _shard(store_copy, "val/seq_002/rgb.zarr/blur", rows[1]["vox_index"])
    data = bytearray(blur1.read_bytes())
    data[-6] ^= 0xFF  # flip bits in the shard index
    blur1.write_bytes(bytes(data))
    vox2 = _shard(store_copy, "val/seq_002/spike_vox.zarr/counts", rows[2]["vox_index"])
    vox2.write_bytes(vox2.read_bytes()[:10])  # truncated
    caplog.set_level(logging.WARNING, logger="spikeprep.dataset")
    assert ds[0] is None and ds[1] is None and ds[2] is not None
    text = caplog.text
    assert "shard index checksum mismatch" in text and str(blur1) in text
    assert "smaller than its index" in text and str(vox2) in text

    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=0, collate_fn=collate_drop_bad)
    batches = list(loader)
    assert batches[0]["blur"].shape[0] == 1 and batches[0]["meta"]["n_dropped"] == 2
    assert batches[0]["meta"]["frame_idx"] == [[4, 5]]
    assert caplog.text.count("collate: dropping sample") == 2            # each drop logged, with its reason


def test_collate_drops_bad_samples(store, caplog):
    train = SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, seed=0)
    val = SpikeDeblurDataset(store, "val", clip_len=3, train=False)
    a, b, odd = train[0], train[1], val[0]
    caplog.set_level(logging.WARNING, logger="spikeprep.dataset")
    batch = collate_drop_bad([a, None, odd, b])
    assert batch["blur"].shape == (2, 3, 3, 32, 32) and batch["spike_vox"].shape == (2, 3, K, 32, 32)
    assert torch.equal(batch["blur"][1], b["blur"]) and batch["meta"]["n_dropped"] == 2
    assert batch["meta"]["seq"] == [a["meta"]["seq"], b["meta"]["seq"]]
    assert batch["meta"]["frame_idx"] == [a["meta"]["frame_idx"], b["meta"]["frame_idx"]]
    # each drop logged once with its reason: one unreadable sample, one whose shapes disagree
    assert caplog.text.count("unreadable") == 1 and caplog.text.count("disagree with the batch majority") == 1
    caplog.clear()
    assert collate_drop_bad([None, None]) is None
    assert caplog.text.count("unreadable") == 2 and caplog.text.count("batch skipped") == 1


# ---- reads only the chunks under the crop ------------------------------------------------------------
def test_reads_only_chunks_under_the_crop(store, monkeypatch):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, seed=5)
    reads: list[tuple[str, int, int]] = []
    recording = [True]
    real_pread = os.pread

    def pread(fd, n, offset):
        if recording[0]:
            reads.append((os.readlink(f"/proc/self/fd/{fd}"), offset, n))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    # constructing and indexing reads no voxel data
    ds2 = SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, seed=5)
    assert len(ds2) > 0 and not reads

    rows = {(r["seq"], r["frame_idx"]): r for r in read_manifest(store).to_pylist() if r["split"] == "train"}
    checked_multi = False
    for i in range(len(ds)):
        reads.clear()
        recording[0] = True
        item = ds[i]
        recording[0] = False
        seq, frames = item["meta"]["seq"], item["meta"]["frame_idx"]
        y, x = item["meta"]["crop"]
        expected = set()
        shard_bytes = 0
        for rel, scale in (("spike_vox.zarr/counts", (1, 1)), ("rgb.zarr/blur", (1, 1)), ("rgb.zarr/sharp", (1, 1))):
            reader = ChunkReader(store / "train" / seq / rel)
            assert reader.fast
            (th, tw), (gy, gx) = reader._tile, reader._grid
            index_bytes = 16 * gy * gx + 4
            for f in frames:
                n = rows[(seq, f)]["vox_index"]
                path = os.path.realpath(reader.shard_path(n))
                size = os.path.getsize(path)
                shard_bytes += size
                expected.add((path, size - index_bytes, index_bytes))
                idx = reader.shard_index(n)
                tiles = {(ty, tx) for ty in range(y // th, (y + 31) // th + 1)
                         for tx in range(x // tw, (x + 31) // tw + 1)}
                expected |= {(path, int(idx[t][0]), int(idx[t][1])) for t in tiles}
                checked_multi |= rel == "spike_vox.zarr/counts" and len(tiles) > 1
        got = {(os.path.realpath(p), o, n) for p, o, n in reads}
        assert got == expected and len(reads) == len(expected)  # each needed chunk once, nothing else
        assert sum(n for _, _, n in reads) < shard_bytes  # a 32-pixel crop touches a few of the chunks
    assert checked_multi  # some crop straddled chunk borders


def test_generic_zarr_path_gives_identical_items(store):
    ds = SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, seed=9)
    fast = [ds[i] for i in range(len(ds))]
    for reader in ds._readers.values():
        assert reader.fast
        reader.fast = False  # zarr's own (asynchronous) read path
    for i in range(len(ds)):
        assert_item_equal(ds[i], fast[i])


# ---- configuration and errors --------------------------------------------------------------------------
def _config(store, **data):
    return parse_config({"DATA": {"ROOT": str(store), **data}, "MODEL": {"VRT_CFG": "x.yaml"}})


def test_from_config(store, caplog):
    info = read_store_info(store)
    cfg = _config(store, CROP_SIZE=64, CLIP_LEN=3, K=K,
                  NORM={"MEAN": info.stats.mean, "STD": info.stats.std})
    train = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED)
    val = SpikeDeblurDataset.from_config(cfg, "val")
    assert train.train and not val.train and train.split == "train" and val.split == "val"
    assert train[0]["blur"].shape == (3, 3, 64, 64) and val[0]["blur"].shape == (3, 3, 128, 192)
    assert train.norm_mean == info.stats.mean and train.norm_std == info.stats.std
    with pytest.raises(ValueError, match="split_kind"):
        SpikeDeblurDataset.from_config(cfg, "test")
    # the config's placeholder stats (0, 1) are used as given, with a warning naming the fix
    caplog.clear()
    SpikeDeblurDataset.from_config(_config(store, CLIP_LEN=3, K=K, CROP_SIZE=32), "val")
    assert "--write-config" in caplog.text


def test_k_mismatch_error(store):
    with pytest.raises(InputError) as err:
        SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, num_bins=32)
    msg = str(err.value)
    assert "K=8" in msg and "K=32" in msg and "re-run ingest with K=32 or set DATA.K=8" in msg
    assert "dataset.json" in msg
    with pytest.raises(InputError, match="re-run ingest with K=16 or set DATA.K=8"):
        SpikeDeblurDataset.from_config(_config(store, K=16, CROP_SIZE=32), "val")


def test_unknown_split_and_missing_store(store, tmp_path):
    with pytest.raises(InputError, match=r"split 'test' has no frames .*\['train', 'val'\]"):
        SpikeDeblurDataset(store, "test", clip_len=3)
    with pytest.raises(InputError, match="no dataset.json"):
        SpikeDeblurDataset(tmp_path, "train", clip_len=3)


def test_without_spikes_same_items_and_no_voxel_reads(store, monkeypatch):
    # The spike-free arm's data: the same clips and crops, blur and sharp identical, no voxel file opened.
    with_spike = SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, seed=5)
    without = SpikeDeblurDataset(store, "train", clip_len=3, crop_size=32, seed=5, with_spike=False)
    expected = [with_spike[i] for i in range(len(with_spike))]
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    items = [without[i] for i in range(len(without))]
    monkeypatch.setattr(os, "open", real_open)
    for a, b in zip(expected, items, strict=True):
        assert "spike_vox" not in b and a["meta"] == b["meta"]
        assert torch.equal(a["blur"], b["blur"]) and torch.equal(a["sharp"], b["sharp"])
    assert any("rgb.zarr" in p for p in opened) and not any("spike_vox.zarr" in p for p in opened)
    batch = collate_drop_bad(items[:2])
    assert set(batch) == {"blur", "sharp", "meta"} and batch["blur"].shape[0] == 2


# ---- totals-only voxels (DATA.TOTALS_ONLY) ---------------------------------------------------------------
@pytest.mark.parametrize("which, split, crop", [("store", "train", 64), ("store2", "val", None)])
def test_totals_only_voxels_are_each_pixels_mean_over_the_bins(request, which, split, crop):
    """Same store, same shape; every bin holds the normalised mean count of its pixel (only the total is left);
    blur, sharp and meta are the items of the true voxels."""
    root = request.getfixturevalue(which)
    kw = dict(clip_len=3, crop_size=crop, seed=5)
    true, totals = SpikeDeblurDataset(root, split, **kw), SpikeDeblurDataset(root, split, **kw, totals_only=True)
    mean, std = true.norm_mean, true.norm_std
    assert len(true) == len(totals)
    for i in range(len(true)):
        a, b = true[i], totals[i]
        assert a["meta"] == b["meta"] and torch.equal(a["blur"], b["blur"]) and torch.equal(a["sharp"], b["sharp"])
        assert b["spike_vox"].shape == a["spike_vox"].shape and b["spike_vox"].dtype == torch.float32
        s = read_store_info(root).sequences[f"{split}/{b['meta']['seq']}"]
        y, x = b["meta"]["crop"]
        h, w = b["spike_vox"].shape[-2:]
        for t, f in enumerate(b["meta"]["frame_idx"]):
            counts = stored_counts(root, split, b["meta"]["seq"], f).astype(np.float64)
            per_pixel_mean = np.repeat(np.repeat(counts.mean(axis=0), s.scale[0], 0), s.scale[1], 1)[y:y + h, x:x + w]
            expected = ((np.log1p(per_pixel_mean) - mean) / std).astype(np.float32)
            for k in range(K):
                np.testing.assert_array_equal(b["spike_vox"][t, k].numpy(), expected)
            # undoing the normalisation gives the mean count back: no timing left, the total kept
            back = np.expm1(b["spike_vox"][t].numpy().astype(np.float64) * std + mean)
            total = np.repeat(np.repeat(counts.sum(axis=0), s.scale[0], 0), s.scale[1], 1)[y:y + h, x:x + w]
            np.testing.assert_allclose(back.sum(axis=0), total, rtol=1e-5, atol=1e-4)
        # a pixel whose bins all hold one count serves exactly what the true voxels serve
        same = (a["spike_vox"] == a["spike_vox"][:, :1]).all(dim=1, keepdim=True).expand_as(a["spike_vox"])
        assert same.any() and torch.equal(a["spike_vox"][same], b["spike_vox"][same])


@pytest.mark.parametrize("which", ["store", "store2"])
def test_totals_only_compact_hand_over_and_config(request, which):
    """The trainer's compact batches become the same totals-only voxels on the device; DATA.TOTALS_ONLY picks
    them in ``from_config``; the stored counts the baselines read are untouched."""
    store = request.getfixturevalue(which)
    info = read_store_info(store)
    cfg = _config(store, CROP_SIZE=64, CLIP_LEN=2, K=K, NORM={"MEAN": info.stats.mean, "STD": info.stats.std},
                  TOTALS_ONLY=True)
    assert not _config(store).DATA.TOTALS_ONLY                               # off by default
    default = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED)
    compact = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED, compact=True)
    assert default.totals_only and compact.totals_only
    batch = collate_drop_bad([compact[i] for i in range(2)])
    blur, sharp, spike = compact.batch_to_device(batch, "cpu")
    expected = collate_drop_bad([default[i] for i in range(2)])
    assert torch.equal(spike, expected["spike_vox"]) and torch.equal(blur, expected["blur"])
    plain = SpikeDeblurDataset(store, "train", clip_len=2, crop_size=64, seed=cfg.SEED, voxels="counts")
    assert torch.equal(batch["spike_counts"], collate_drop_bad([plain[i] for i in range(2)])["spike_counts"])
    assert sdd.totals_lut(0.3, 0.7, K)[K * 3] == sdd.norm_lut(0.3, 0.7)[3]
