"""``spikeprep.inference_inputs`` shares the Dataset's code: its sequences, its clip reading, its restore loop's clips."""
from __future__ import annotations

import numpy as np
import torch

from model.restore import Clip, Restorer, restore_clips
from model.metrics import tensor_to_uint8
from spikeprep.images import read_rgb
from spikeprep.inference_inputs import (ArrayCounts, ArrayFrames, CountSource, FileFrames, FrameSource, NpyCounts,
                                        StoreIndex, find_blur_sequences, find_vox_sequences, plan_clips)
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, clip_starts, load_sequences
from spikeprep.store import read_store_info

from conftest import TRAIN_K, torch_threads_fixture

_threads = torch_threads_fixture(1)


def test_store_sequences_are_the_datasets(train_store):
    ds = SpikeDeblurDataset(train_store, "val", clip_len=3, train=False)
    index = StoreIndex(train_store, TRAIN_K)
    for s in ds.sequences:
        seq = index.sequence(f"val/{s.name}")
        assert seq.stems == [f"{f:06d}" for f in s.frame_idx.tolist()]
        assert seq.blur.rows == s.vox_index.tolist() and seq.counts.rows == s.vox_index.tolist()
        assert seq.scale == s.scale
        assert [[seq.stems[p] for p in c] for c in plan_clips(seq.runs, 3)] == \
            [[f"{f:06d}" for f in ds.clip_frames(i)[1]] for i in range(len(ds))]
    assert [s.name for s in load_sequences(train_store, read_store_info(train_store), "val")] == \
        [s.name for s in ds.sequences]


def test_every_source_follows_its_protocol(train_store, tmp_path):
    index = StoreIndex(train_store, TRAIN_K)
    (key,) = [k for k, s in index.info.sequences.items() if s.split == "val"]
    seq = index.sequence(key)
    assert isinstance(seq.blur, ArrayFrames) and isinstance(seq.counts, ArrayCounts)
    frames, _ = find_blur_sequences(train_store / key / "blur")
    np.save(tmp_path / "000000.npy", seq.counts.read(0))
    counts, _ = find_vox_sequences(tmp_path)
    sources = [seq.blur, next(iter(frames.values())), seq.counts, next(iter(counts.values()))]
    assert [type(s) for s in sources] == [ArrayFrames, FileFrames, ArrayCounts, NpyCounts]
    for src in sources[:2]:
        assert isinstance(src, FrameSource) and len(src) == len(src.stems) == 6
        assert src.read(0).shape == (3, *src.hw) and src.read(0).dtype == np.uint8
    for src in sources[2:]:
        assert isinstance(src, CountSource) and src.read(0).shape == src.shape
    np.testing.assert_array_equal(sources[0].read(2), sources[1].read(2))


def test_plan_clips_is_the_datasets_val_tiling_and_keeps_short_runs_whole():
    assert plan_clips([(0, 7)], 3) == [[0, 1, 2], [3, 4, 5], [4, 5, 6]]
    assert [c[0] for c in plan_clips([(0, 7)], 3)] == clip_starts(7, 3, train=False)
    assert plan_clips([(0, 2), (5, 4)], 3) == [[0, 1], [5, 6, 7], [6, 7, 8]]
    assert plan_clips([(2, 5)], 0) == [[2, 3, 4, 5, 6]]


class Halve(torch.nn.Module):
    use_spike = False

    def forward(self, blur, spike_vox=None):
        return blur * 0.5


def test_restore_clips_restores_each_frame_once_and_writes_it(tmp_path):
    blur = torch.rand(3, 3, 8, 8)
    restorer = Restorer(Halve(), torch.device("cpu"), tile=(0, 0, 0), overlap=(0, 0, 0))
    clips = [Clip("a", [0, 1, 2], blur, None), Clip("a", [1, 2, 3], blur, None), Clip("a", [1, 2], blur[:2], None),
             Clip("b", [1, 2, 3], blur, None)]
    done = list(restore_clips(restorer, clips, lambda seq, f: tmp_path / seq / f"{f}.png"))
    assert [(d.clip.seq, d.new) for d in done] == [("a", [(0, 0), (1, 1), (2, 2)]), ("a", [(2, 3)]),
                                                   ("b", [(0, 1), (1, 2), (2, 3)])]
    np.testing.assert_array_equal(done[1].recon[2], tensor_to_uint8(blur[2] * 0.5))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == \
        ["a/0.png", "a/1.png", "a/2.png", "a/3.png", "b/1.png", "b/2.png", "b/3.png"]
    np.testing.assert_array_equal(read_rgb(done[1].paths[2]).transpose(1, 2, 0), done[1].recon[2])
    assert restorer.seconds >= restorer.first_clip_seconds > 0


def test_restorer_tile_may_depend_on_the_clip():
    seen = []
    restorer = Restorer(Halve(), torch.device("cpu"), tile=lambda shape: seen.append(tuple(shape)) or (0, 0, 0),
                        overlap=(0, 0, 0))
    restorer.frames(torch.rand(2, 3, 8, 8), None, [0])
    assert seen == [(2, 3, 8, 8)]
