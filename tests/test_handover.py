"""The compact training hand-over: uint8 frames and stored counts at the spike grid, made float32 on the
device by ``lookup_upsample``, equal (``torch.equal``) to the Dataset's default items, and the trainer's
losses unchanged by it."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import model.train as train_mod
import spikeprep.ingest as ingest_mod
import spikeprep.spike_deblur_dataset as dataset_mod
from conftest import tiny_config_dict, torch_threads_fixture
from model.train import TrainOptions
from schemas.config import parse_config
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.spike_deblur_dataset import (RGB_LUT, SpikeDeblurDataset, collate_drop_bad, lookup_upsample,
                                            norm_lut, normalise_upsample)
from spikeprep.store import read_store_info

_threads = torch_threads_fixture(1)

K = 8
S1_TREE = dict(height=128, width=192, frames=7, exposure_ticks=64, seed=3)                 # spikes at scale 1
S2_TREE = dict(height=96, width=128, frames=6, exposure_ticks=64, spike_scale=2, seed=4)   # scale 2
COMPACT = dict(voxels="counts", images="uint8")


def _ingest(raw: Path, out: Path, dtype: str) -> Path:
    """Ingest ``raw``; ``dtype="uint16"`` stores uint16 counts even where uint8 would hold them (the
    ingest's own choice is the narrowest that fits)."""
    with pytest.MonkeyPatch.context() as mp:
        if dtype == "uint16":
            build = ingest_mod._build_sequence
            mp.setattr(ingest_mod, "_build_sequence",
                       lambda spec, options, work, _dtype, *rest: build(spec, options, work, np.dtype(np.uint16), *rest))
        ingest(raw, out, IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    assert {s.dtype for s in read_store_info(out).sequences.values()} == {dtype}
    return out


@pytest.fixture(scope="module", params=[("s1", "uint8"), ("s2", "uint8"), ("s1", "uint16"), ("s2", "uint16")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def store(request, synth_tree, tmp_path_factory) -> Path:
    tree, dtype = request.param
    raw = synth_tree(**(S1_TREE if tree == "s1" else S2_TREE))
    return _ingest(raw, tmp_path_factory.mktemp(f"handover-{tree}-{dtype}") / "store", dtype)


def _to_default(item: dict, ds: SpikeDeblurDataset) -> dict:
    """A compact item (or collated batch) made float32 the way the trainer does it, on the CPU."""
    rgb_lut, count_lut = ds.device_luts("cpu")
    out = {k: lookup_upsample(item[k], rgb_lut, (1, 1)) for k in ("blur", "sharp")}
    scale = item["meta"]["scale"]
    out["spike_vox"] = lookup_upsample(item["spike_counts"], count_lut, scale)
    return out


# ---- the pure torch function ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,scale,lead", [(np.uint8, (1, 1), (5,)), (np.uint8, (2, 2), (2, 3)),
                                              (np.uint16, (1, 3), (4,)), (np.uint16, (4, 2), ())])
def test_lookup_upsample_equals_normalise_upsample(rng, dtype, scale, lead):
    hi = np.iinfo(dtype).max
    counts = rng.integers(0, hi + 1, size=(*lead, 7, 9, 11)).astype(dtype)
    counts.reshape(-1)[0] = hi
    lut = norm_lut(0.7, 1.3, dtype)
    codes = torch.from_numpy(counts.copy())
    got = lookup_upsample(codes, torch.from_numpy(lut), scale)
    flat = counts.reshape(-1, 7, 9, 11)
    want = np.stack([normalise_upsample(c, lut, scale) for c in flat]).reshape(*lead, 7, 9 * scale[0],
                                                                                 11 * scale[1])
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, torch.from_numpy(want))
    assert np.array_equal(codes.numpy(), counts)          # the input is not modified


def test_rgb_lut_is_the_datasets_division():
    values = np.arange(256, dtype=np.uint8)
    as_read = values.astype(np.float32)
    np.divide(as_read, np.float32(255.0), out=as_read)   # what _read_images does
    assert np.array_equal(RGB_LUT, as_read) and RGB_LUT.dtype == np.float32


# ---- compact items equal default items ---------------------------------------------------------------
@pytest.mark.parametrize("crop", [32, None], ids=["crop", "full"])
def test_compact_items_become_the_default_items(store, crop):
    kw = dict(clip_len=3, crop_size=crop, train=crop is not None, seed=7)
    default = SpikeDeblurDataset(store, "train", **kw)
    compact = SpikeDeblurDataset(store, "train", **kw, **COMPACT)
    stored = read_store_info(store).sequences
    assert len(default) == len(compact)
    for i in range(len(default)):
        a, b = default[i], compact[i]
        assert set(b) == {"blur", "sharp", "spike_counts", "meta"}
        assert b["blur"].dtype == b["sharp"].dtype == torch.uint8
        seq = stored[f"train/{b['meta']['seq']}"]
        assert b["spike_counts"].dtype == getattr(torch, seq.dtype)
        assert b["spike_counts"].shape[-2:] == (a["blur"].shape[-2] // seq.scale[0],
                                                a["blur"].shape[-1] // seq.scale[1])
        assert b["meta"] == {**a["meta"], "scale": tuple(seq.scale)}
        got = _to_default(b, compact)
        for key in ("blur", "sharp", "spike_vox"):
            assert torch.equal(got[key], a[key]), (i, key)


def test_trainer_batch_inputs_equal_for_both_hand_overs(store):
    kw = dict(clip_len=3, crop_size=32, train=True, seed=7)
    default = SpikeDeblurDataset(store, "train", **kw)
    compact = SpikeDeblurDataset(store, "train", **kw, **COMPACT)
    device = torch.device("cpu")
    loaders = [DataLoader(ds, batch_size=2, collate_fn=collate_drop_bad, drop_last=True)
               for ds in (default, compact)]
    n = 0
    for batch_a, batch_b in zip(*loaders):
        assert batch_b["spike_counts"].shape[0] == 2
        a = default.batch_to_device(batch_a, device, True)
        b = compact.batch_to_device(batch_b, device, True)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        blur, sharp, spike = compact.batch_to_device(batch_b, device, False)  # the spike-free arm
        assert spike is None and torch.equal(blur, a[0]) and torch.equal(sharp, a[1])
        n += 1
    assert n == len(default) // 2


def test_device_luts_are_the_datasets_tables_and_not_pickled(store):
    ds = SpikeDeblurDataset(store, "val", clip_len=3, **COMPACT)
    rgb_lut, count_lut = ds.device_luts("cpu")
    assert ds.device_luts(torch.device("cpu"))[0] is rgb_lut                 # made once per device
    assert np.array_equal(rgb_lut.numpy(), RGB_LUT)
    dtype = {s.dtype for s in read_store_info(store).sequences.values()}.pop()
    assert np.array_equal(count_lut.numpy(), norm_lut(ds.norm_mean, ds.norm_std, dtype))
    assert pickle.loads(pickle.dumps(ds))._device_luts == {}


def test_from_config_compact_and_bad_kinds(store):
    info = read_store_info(store)
    cfg = parse_config({"DATA": {"ROOT": str(store), "CROP_SIZE": 32, "CLIP_LEN": 3, "K": K,
                                 "NORM": {"MEAN": info.stats.mean, "STD": info.stats.std}},
                        "MODEL": {"VRT_CFG": "x.yaml"}})
    default = SpikeDeblurDataset.from_config(cfg, "train", seed=1)
    compact = SpikeDeblurDataset.from_config(cfg, "train", seed=1, compact=True)
    assert (default.voxels, default.images) == ("normalised", "float32")      # the public default
    assert (compact.voxels, compact.images) == ("counts", "uint8")
    assert set(default[0]) == {"blur", "sharp", "spike_vox", "meta"}
    assert default[0]["blur"].dtype == torch.float32
    got = _to_default(compact[0], compact)
    assert all(torch.equal(got[k], default[0][k]) for k in got)
    with pytest.raises(ValueError, match="images must be one of"):
        SpikeDeblurDataset(store, "train", clip_len=3, images="float16")


# ---- the trainer's losses ------------------------------------------------------------------------------
def test_trainer_losses_unchanged_by_the_compact_hand_over(train_store, tmp_path, monkeypatch):
    raw = tiny_config_dict(train_store, tmp_path / "outputs")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    opts = dict(config=config, max_steps=3, val_every=3, visual_every=3, workers=0, perceptual=False,
                progress=False, device="cpu")
    calls = []
    lookup = dataset_mod.lookup_upsample
    monkeypatch.setattr(dataset_mod, "lookup_upsample", lambda *a: calls.append(1) or lookup(*a))
    compact = train_mod.main(TrainOptions(**opts, exp="compact"))
    assert calls                                                  # the trainer took the compact path
    from_config = SpikeDeblurDataset.from_config.__func__
    monkeypatch.setattr(SpikeDeblurDataset, "from_config",
                        classmethod(lambda cls, *a, **kw: from_config(cls, *a, **{**kw, "compact": False})))
    calls.clear()
    default = train_mod.main(TrainOptions(**opts, exp="default"))
    assert not calls
    assert len(compact.losses) == 3 and compact.losses == default.losses     # bit for bit
    assert compact.batches == default.batches
