"""Spike reliance on toy models whose answer is known, the voxel probes, and the one scorer validation uses."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from model.metrics import image_metrics, masked_metrics, motion_boundary_mask, static_mask, tensor_to_uint8
from model.probes import other_clip_index, probe_voxels, zero_count_value
from model.scoring import FrameScorer
from model.validate import validate
from schemas.val_report import PROBES
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, val_frames

from conftest import torch_threads_fixture

_threads = torch_threads_fixture(1)


class Toy(nn.Module):
    """``blur + gain * f(spike_vox - zero)``: ``f`` picks what of the voxels the output depends on."""

    use_spike = True

    def __init__(self, num_bins: int, zero: float, use: str):
        super().__init__()
        self.num_bins, self.zero, self.use = num_bins, zero, use

    def _check_spike(self, blur, spike_vox):
        assert spike_vox.shape[2] == self.num_bins
        return spike_vox

    def forward(self, blur, spike_vox=None):
        if self.use == "nothing":
            return blur * 0.9 + 0.05                       # changes the frame, never looks at the spikes
        v = spike_vox - self.zero
        # "ends": first + last bin, symmetric under time reversal (a + b == b + a exactly in floats)
        signal = v[:, :, :1] + v[:, :, -1:] if self.use == "ends" else v[:, :, :1]
        return blur + 0.05 * signal.expand_as(blur)


@pytest.fixture(scope="module")
def val_ds(train_store):
    return SpikeDeblurDataset(train_store, "val", clip_len=3, train=False)


def _validate(model, ds, tmp_path):
    return validate(model, ds, device=torch.device("cpu"), amp=False, exp="toy", step=1, outputs=tmp_path,
                    lpips_metric=None, lpips_note=None, tile=(256, 256), write_images=False, visual_frames=0)


def _blur_psnr_y(ds) -> float:
    vals = [image_metrics(tensor_to_uint8(item["blur"][k]), tensor_to_uint8(item["sharp"][k]))["psnr_y"]
            for _, item, new in val_frames(ds) for k, _ in new]
    return float(np.mean(vals))


def test_a_model_that_ignores_its_spikes_gains_exactly_zero_db(val_ds, tmp_path):
    zero = zero_count_value(val_ds.norm_mean, val_ds.norm_std)
    report = _validate(Toy(val_ds.num_bins, zero, "nothing"), val_ds, tmp_path)
    assert report.db_from_spikes() == 0.0 and report.db_from_spikes(region="boundary") == 0.0
    for probe in PROBES:
        assert getattr(report.reliance, probe).overall == report.overall, probe
        assert getattr(report.reliance, probe).static == report.static, probe
    # version 3: the static half and SSIM on Y; no fuse type on a model without one, so no fitted-head note
    assert report.version == 3 and report.static_fraction == 0.5 and report.static.frames == report.overall.frames
    assert report.overall.ssim_y is not None and report.fuse_type is None and not report.fitted_head


def test_count_zero_voxels_reduce_a_spike_model_to_its_blur(val_ds, tmp_path):
    zero = zero_count_value(val_ds.norm_mean, val_ds.norm_std)
    report = _validate(Toy(val_ds.num_bins, zero, "ends"), val_ds, tmp_path)
    # with count-zero voxels this toy returns the blur itself: its PSNR-Y is the blur's, known independently
    assert report.reliance.zeroed.overall.psnr_y == pytest.approx(_blur_psnr_y(val_ds), abs=1e-9)
    assert report.db_from_spikes() == pytest.approx(report.overall.psnr_y - _blur_psnr_y(val_ds), abs=1e-9)
    assert report.db_from_spikes() != 0.0
    # first + last bin does not see their order; another clip's voxels change the output
    assert report.reliance.reversed.overall == report.overall
    assert report.reliance.other_clip.overall != report.overall
    first_bin = _validate(Toy(val_ds.num_bins, zero, "first_bin"), val_ds, tmp_path)
    assert first_bin.reliance.reversed.overall != first_bin.overall


def test_no_reliance_gives_no_measurement(val_ds, tmp_path):
    toy = Toy(val_ds.num_bins, 0.0, "nothing")
    report = validate(toy, val_ds, device=torch.device("cpu"), amp=False, exp="toy", step=1, outputs=tmp_path,
                      lpips_metric=None, lpips_note=None, tile=(256, 256), write_images=False, visual_frames=0,
                      reliance=False)
    assert report.reliance is None and report.db_from_spikes() is None and "not measured" in report.reliance_note


def test_probe_voxels_never_modify_their_input():
    v = torch.randn(2, 3, 4, 5, 6)
    keep = v.clone()
    z = probe_voxels("zeroed", v, -1.5)
    assert torch.equal(z, torch.full_like(v, -1.5))
    r = probe_voxels("reversed", v, -1.5)
    assert torch.equal(r[:, :, 0], v[:, :, 3]) and torch.equal(r.flip(2), v)
    other = torch.randn_like(v)
    assert probe_voxels("other_clip", v, 0.0, other) is other
    with pytest.raises(ValueError, match="same shape"):
        probe_voxels("other_clip", v, 0.0, other[:, :1])
    with pytest.raises(ValueError, match="unknown"):
        probe_voxels("shuffled", v, 0.0)
    assert torch.equal(v, keep)


def test_zero_count_value_is_the_datasets_own_normalisation():
    assert zero_count_value(0.5, 0.25) == pytest.approx((math.log1p(0) - 0.5) / 0.25)


def test_other_clip_is_far_away_same_sized_and_disjoint(val_ds, train_store):
    assert len(val_ds) == 2
    assert other_clip_index(val_ds, 0) == 1 and other_clip_index(val_ds, 1) == 0
    one = SpikeDeblurDataset(train_store, "val", clip_len=6, train=False)
    assert len(one) == 1 and other_clip_index(one, 0) is None
    overlapping = SpikeDeblurDataset(train_store, "val", clip_len=4, train=False)   # clips 0-3 and 2-5
    assert [overlapping.clip_frames(i)[1] for i in range(2)] == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert other_clip_index(overlapping, 0) is None


def test_val_frames_scores_each_frame_once(train_store):
    ds = SpikeDeblurDataset(train_store, "val", clip_len=4, train=False)
    seen = [(item["meta"]["seq"], f) for _, item, new in val_frames(ds) for _, f in new]
    assert sorted(seen) == [("seq_002", f) for f in range(6)]


def test_frame_scorer_matches_the_metrics_and_masks(rng):
    scorer = FrameScorer()
    a = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    scorer.add("s", a, b, scorer.mask(b, a))
    assert scorer.overall().psnr_y == pytest.approx(image_metrics(a, b)["psnr_y"])
    assert scorer.overall().ssim_y == pytest.approx(image_metrics(a, b)["ssim_y"])
    assert scorer.overall().frames == 1 and list(scorer.per_sequence()) == ["s"]
    # the regions are the masks of (blur, sharp) = (b, a): the 5% that differ most, the half that differ least
    for region, mask in ((scorer.boundary(), motion_boundary_mask(b, a)), (scorer.static(), static_mask(b, a))):
        expected = masked_metrics(a, b, mask)
        assert region.frames == 1
        for key in ("psnr_rgb", "psnr_y", "ssim", "ssim_y"):
            assert getattr(region, key) == pytest.approx(expected[key]), key
