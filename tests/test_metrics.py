"""Tests for model/metrics.py: basicsr is the oracle for PSNR/SSIM; LPIPS runs on a fake torchvision cache.

The LPIPS tests never touch the network: TORCH_HOME points at a temporary directory that is either empty
(weights unavailable) or holds a seeded random-init AlexNet state_dict under torchvision's file name.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

from model.metrics import (
    LPIPSMetric,
    LPIPSUnavailable,
    alexnet_weights_path,
    image_metrics,
    lpips_or_reason,
    masked_metrics,
    mean_metrics,
    motion_boundary_mask,
    static_mask,
    tensor_to_uint8,
)
from hypothesis import given, settings
from hypothesis import strategies as st

SIZES = [(32, 32), (24, 40), (45, 17)]


def _pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference image and a noisy version of it (realistic PSNR range, not pure noise vs noise)."""
    ref = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=(h, w, 3))
    img = np.clip(ref.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return img, ref


# ---- image_metrics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", SIZES)
def test_image_metrics_equal_basicsr(rng, h, w):
    img, ref = _pair(rng, h, w)
    m = image_metrics(img, ref)
    assert set(m) == {"psnr_rgb", "psnr_y", "ssim", "ssim_y"}
    assert m["psnr_rgb"] == calculate_psnr(img, ref, crop_border=0, input_order="HWC")
    # basicsr's Y conversion reads BGR, so the oracle gets channel-flipped arrays.
    assert m["psnr_y"] == calculate_psnr(img[..., ::-1], ref[..., ::-1], crop_border=0, input_order="HWC",
                                         test_y_channel=True)
    assert m["ssim"] == calculate_ssim(img, ref, crop_border=0, input_order="HWC", test_y_channel=False)
    assert m["ssim_y"] == calculate_ssim(img[..., ::-1], ref[..., ::-1], crop_border=0, input_order="HWC",
                                         test_y_channel=True)
    assert m["ssim_y"] != m["ssim"]
    assert all(isinstance(v, float) for v in m.values())


def test_psnr_y_uses_bgr_order(rng):
    img, ref = _pair(rng, 32, 32)
    # Y weights red 65.481 and blue 24.966: swapping R and B changes psnr_y but not psnr_rgb.
    m = image_metrics(img, ref)
    swapped = image_metrics(img[..., ::-1].copy(), ref[..., ::-1].copy())
    assert swapped["psnr_rgb"] == m["psnr_rgb"]
    assert swapped["psnr_y"] != m["psnr_y"]
    # Unflipped arrays into basicsr would be the bug; the result must differ from that.
    wrong = calculate_psnr(img, ref, crop_border=0, input_order="HWC", test_y_channel=True)
    assert m["psnr_y"] != wrong


def test_image_metrics_identical_and_shape_mismatch(rng):
    img, _ = _pair(rng, 20, 20)
    m = image_metrics(img, img.copy())
    assert m["psnr_rgb"] == float("inf") and m["psnr_y"] == float("inf")
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12) and m["ssim_y"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        image_metrics(img, img[:10])


# ---- tensor_to_uint8 ---------------------------------------------------------------------------------

def test_tensor_to_uint8_round_trip_all_values():
    # Every uint8 value survives u8 / 255 -> tensor_to_uint8.
    values = np.arange(256, dtype=np.uint8)
    img = np.stack([values.reshape(16, 16), values[::-1].reshape(16, 16), values.reshape(16, 16).T], axis=2)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    out = tensor_to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out, img)
    # Half precision and a batch dim of 1 work too (uint8 values are exact in fp16 only up to rounding,
    # so compare within 1 level).
    out16 = tensor_to_uint8(x.half()[None])
    assert np.abs(out16.astype(int) - img.astype(int)).max() <= 1


def test_tensor_to_uint8_clamps_rounds_and_keeps_input():
    x = torch.tensor([[[-0.5, 1.5], [0.5 / 255, 1.49 / 255]],
                      [[0.0, 1.0], [2.51 / 255, 0.999]],
                      [[float(1e-9), 254.6 / 255], [0.2, 0.8]]], dtype=torch.float32)
    before = x.clone()
    out = tensor_to_uint8(x)
    assert torch.equal(x, before)  # the in-place clamp of basicsr's tensor2img would fail this
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 1, 0] == 1  # 1.49 rounds down
    assert out[1, 0, 1] == 3  # 2.51 rounds up
    assert out[1, 1, 1] == round(0.999 * 255)
    with pytest.raises(ValueError):
        tensor_to_uint8(torch.zeros(4, 8, 8))


# ---- motion_boundary_mask ----------------------------------------------------------------------------

def test_mask_count_and_largest_differences(rng):
    h, w = 20, 30
    blur = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    sharp = blur.copy()
    # Distinct differences on 40 pixels; the 30 largest (5% of 600) must be chosen.
    flat = rng.permutation(h * w)[:40]
    for rank, p in enumerate(flat):
        y, x = divmod(int(p), w)
        sharp[y, x] = np.clip(blur[y, x].astype(int) + (rank + 1) * (1 if blur[y, x, 0] < 128 else -1), 0, 255)
    diff = np.abs(sharp.astype(float) - blur.astype(float)).mean(axis=2)
    mask = motion_boundary_mask(blur, sharp, 0.05)
    assert mask.dtype == bool and mask.shape == (h, w)
    assert mask.sum() == round(0.05 * h * w) == 30
    assert diff[mask].min() >= diff[~mask].max()


def test_mask_at_least_one_pixel_and_identical_frames(rng):
    blur = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    sharp = blur.copy()
    sharp[3, 2, 1] ^= 1
    mask = motion_boundary_mask(blur, sharp, 0.01)  # round(0.2) = 0 -> at least 1
    assert mask.sum() == 1 and mask[3, 2]
    assert not motion_boundary_mask(blur, blur.copy(), 0.5).any()
    with pytest.raises(ValueError):
        motion_boundary_mask(blur, sharp, 0.0)


def test_mask_ties_broken_by_pixel_order():
    blur = np.zeros((6, 6, 3), dtype=np.uint8)
    sharp = blur.copy()
    sharp[1:5, 1:5] = 10        # 16 tied pixels, 4 to choose
    mask = motion_boundary_mask(blur, sharp, 4 / 36)
    expected = np.zeros((6, 6), dtype=bool)
    expected[1, 1:5] = True     # first four in row-major order
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(mask, motion_boundary_mask(blur, sharp, 4 / 36))


# ---- static_mask -------------------------------------------------------------------------------------

def test_static_mask_is_the_half_that_differs_least(rng):
    h, w = 20, 30
    blur = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    sharp = np.clip(blur.astype(int) + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)
    diff = np.abs(sharp.astype(float) - blur.astype(float)).mean(axis=2)
    mask = static_mask(blur, sharp)
    assert mask.dtype == bool and mask.shape == (h, w) and mask.sum() == h * w // 2
    assert diff[mask].max() <= diff[~mask].min()
    # Disjoint from the motion boundaries, and a frame without motion is all static, never empty.
    assert not (mask & motion_boundary_mask(blur, sharp, 0.05)).any()
    assert static_mask(blur, blur.copy(), 1.0).all() and static_mask(blur, blur.copy()).sum() == h * w // 2
    with pytest.raises(ValueError):
        static_mask(blur, sharp, 1.5)


def test_static_mask_ties_broken_by_pixel_order():
    blur = np.zeros((4, 4, 3), dtype=np.uint8)
    sharp = blur.copy()
    sharp[2:, :] = 9            # the top 8 pixels tie at 0, the bottom 8 at 9
    sharp[0, 0] = 1             # except the first
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, 1:] = True
    expected[1, :2] = True      # the 5 earliest of the 7 zero-difference pixels
    np.testing.assert_array_equal(static_mask(blur, sharp, 5 / 16), expected)


# ---- masked_metrics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", SIZES)
def test_masked_all_true_equals_image_metrics(rng, h, w):
    img, ref = _pair(rng, h, w)
    full = image_metrics(img, ref)
    masked = masked_metrics(img, ref, np.ones((h, w), dtype=bool))
    assert masked["psnr_rgb"] == full["psnr_rgb"]
    assert masked["psnr_y"] == full["psnr_y"]
    assert masked["ssim"] == pytest.approx(full["ssim"], abs=1e-10)
    assert masked["ssim_y"] == pytest.approx(full["ssim_y"], abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(12, 30), w=st.integers(12, 30))
def test_masked_ssim_y_is_basicsrs_ssim_map_on_y_over_the_mask(seed, h, w):
    # Oracle: basicsr's SSIM-Y of the whole frame is the mean of its map over the 'valid' region, so over the
    # valid region split in two, the masked means weighted by their pixel counts give basicsr's number back.
    rng = np.random.default_rng(seed)
    img, ref = _pair(rng, h, w)
    mask = rng.random((h, w)) < 0.5
    valid = np.zeros((h, w), dtype=bool)
    valid[5:h - 5, 5:w - 5] = True
    a, b = mask & valid, ~mask & valid
    whole = calculate_ssim(img[..., ::-1], ref[..., ::-1], crop_border=0, input_order="HWC", test_y_channel=True)
    parts = [(masked_metrics(img, ref, m)["ssim_y"], m.sum()) for m in (a, b) if m.any()]
    assert sum(v * n for v, n in parts) / valid.sum() == pytest.approx(whole, abs=1e-10)


def test_masked_region_subset(rng):
    img, ref = _pair(rng, 32, 32)
    ref[:, :16] = img[:, :16]   # left half identical
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, :16] = True
    m = masked_metrics(img, ref, mask)
    assert m["psnr_rgb"] == float("inf") and m["psnr_y"] == float("inf")
    # Right half: PSNR from the MSE over exactly those pixels.
    right = ~mask
    mse = np.mean((img[right].astype(float) - ref[right].astype(float)) ** 2)
    assert masked_metrics(img, ref, right)["psnr_rgb"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-12)


def test_masked_empty_and_outside_ssim_region(rng):
    img, ref = _pair(rng, 24, 24)
    assert masked_metrics(img, ref, np.zeros((24, 24), dtype=bool)) == {
        "psnr_rgb": None, "psnr_y": None, "ssim": None, "ssim_y": None}
    border = np.zeros((24, 24), dtype=bool)
    border[:5, :] = True        # entirely outside the valid SSIM region
    m = masked_metrics(img, ref, border)
    assert m["ssim"] is None and m["ssim_y"] is None and m["psnr_rgb"] is not None and m["psnr_y"] is not None
    # One pixel inside the valid region: SSIM is finite.
    one = np.zeros((24, 24), dtype=bool)
    one[5, 5] = True
    assert isinstance(masked_metrics(img, ref, one)["ssim"], float)
    with pytest.raises(ValueError):
        masked_metrics(img, ref, np.ones((24, 23), dtype=bool))


# ---- mean_metrics ------------------------------------------------------------------------------------

def test_mean_metrics():
    rows = [{"psnr_rgb": 30.0, "psnr_y": 31.0, "ssim": 0.9, "lpips": None},
            {"psnr_rgb": 32.0, "psnr_y": None, "ssim": 0.7, "lpips": None},
            {"psnr_rgb": float("inf"), "psnr_y": 35.0, "ssim": None, "lpips": None}]
    m = mean_metrics(rows)
    assert m["frames"] == 3
    assert m["psnr_rgb"] == float("inf")
    assert m["psnr_y"] == pytest.approx(33.0)
    assert m["ssim"] == pytest.approx(0.8)
    assert m["lpips"] is None
    assert mean_metrics(iter([])) == {"frames": 0, "psnr_rgb": None, "psnr_y": None, "ssim": None, "ssim_y": None}


# ---- LPIPS -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_torch_home(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A TORCH_HOME whose hub cache holds a seeded random AlexNet under torchvision's file name."""
    home = tmp_path_factory.mktemp("torch_home")
    name = Path(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url).name
    target = home / "hub" / "checkpoints" / name
    target.parent.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(state, target)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    return home, features


@pytest.fixture(scope="module")
def metric(fake_torch_home) -> LPIPSMetric:
    home, _ = fake_torch_home
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        return LPIPSMetric.load()


def test_lpips_unavailable_names_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert alexnet_weights_path() == expected
    assert alexnet_weights_path(tmp_path / "x.pth") == tmp_path / "x.pth"
    with pytest.raises(LPIPSUnavailable) as info:
        LPIPSMetric.load()
    assert isinstance(info.value, FileNotFoundError)
    assert str(expected) in str(info.value) and "TORCH_HOME" in str(info.value)
    metric, reason = lpips_or_reason()
    assert metric is None
    assert reason == f"not computed (weights unavailable: {expected} missing)"


def test_lpips_rejects_foreign_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(LPIPSUnavailable, match="not a torchvision AlexNet"):
        LPIPSMetric.load(weights_path=bad)
    metric, reason = lpips_or_reason(weights_path=bad)
    assert metric is None and reason.startswith("not computed")


def test_lpips_loads_file_weights_without_touching_rng(fake_torch_home, monkeypatch):
    home, features = fake_torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    rng_before = torch.random.get_rng_state()
    metric, reason = lpips_or_reason()
    assert reason is None and isinstance(metric, LPIPSMetric)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    trunk = metric.net.net
    # The trunk is the file's AlexNet (not lpips' own random init) ...
    assert torch.equal(trunk.slice1[0].weight, features["features.0.weight"])
    assert torch.equal(trunk.slice5[0].weight, features["features.10.weight"])
    assert torch.equal(trunk.slice2[1].bias, features["features.3.bias"])
    # ... and the linear layers are lpips' calibrated ones.
    import lpips
    lin = torch.load(Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu",
                     weights_only=True)
    assert torch.equal(metric.net.lin0.model[1].weight, lin["lin0.model.1.weight"])
    assert not metric.net.training


def test_lpips_distances(metric, rng):
    img, ref = _pair(rng, 64, 48)
    assert metric(img, img.copy()) == 0.0
    d = metric(img, ref)
    assert d > 0
    assert metric(ref, img) == pytest.approx(d, rel=1e-5)
    other = rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    assert metric(img, other) > d  # unrelated image is farther than a noisy copy


def test_lpips_matches_reference_lpips(metric, rng):
    # Same weights in a plain lpips.LPIPS, fed with the documented [-1, 1] scaling: same number.
    import lpips
    with warnings.catch_warnings():  # torchvision's deprecation warning for lpips' `pretrained=False`
        warnings.simplefilter("ignore")
        ref_net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    ref_net.load_state_dict(metric.net.state_dict())
    ref_net.eval()
    img, ref = _pair(rng, 40, 56)
    to = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1  # noqa: E731
    with torch.no_grad():
        expected = float(ref_net(to(img), to(ref)))
    assert metric(img, ref) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("h,w", [(64, 64), (48, 80)])
def test_lpips_distance_map(metric, rng, h, w):
    img, ref = _pair(rng, h, w)
    dmap = metric.distance_map(img, ref)
    assert dmap.shape == (h, w) and dmap.dtype == np.float32
    assert np.all(np.isfinite(dmap))
    # lpips upsamples each layer's map bilinearly to (H, W); that keeps the mean only for integer
    # scale factors (AlexNet's 15x15, 7x7, 3x3 maps never are), so the map's mean is close to, not
    # exactly, the scalar (measured: relative gap about 1e-4).
    assert float(dmap.mean()) == pytest.approx(metric(img, ref), rel=5e-4)
    assert not metric.distance_map(img, img.copy()).any()
    assert metric.net.spatial is False  # the flag is restored after the spatial call
