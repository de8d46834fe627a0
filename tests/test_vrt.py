"""Tests of our VRT implementation (model/nets/vrt.py, model/nets/vrt_tiling.py).

Reference data: ../shared/reference/vrt_deblur_state_dict_keys.tsv (key, shape, dtype of the
official deblurring model). Oracle tests re-derive flow warping, the relative position index, the
sine position bias, the shifted-window mask, window attention (incl. mutual attention) and the
flow-guided deformable offsets independently from the formulas in vrt_facts.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model.nets.vrt import (
    VRT,
    DCNv2PackFlowGuided,
    SpyNet,
    StateDictMismatchError,
    TMSAG,
    WindowAttention,
    effective_window,
    flow_warp,
    load_official,
    load_spynet,
    relative_position_index,
    shifted_window_mask,
    sine_position_bias,
    vrt_deblur,
    vrt_from_config,
    vrt_tiny,
    window_partition,
    window_reverse,
)
from model.nets.vrt_tiling import (
    mirror_indices,
    pad_spatial,
    padded_forward,
    tile_starts,
    tiled_forward,
)

from conftest import torch_threads_fixture

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
KEYS_TSV = REFERENCE / "vrt_deblur_state_dict_keys.tsv"


_threads = torch_threads_fixture(2)


def _randomise_offsets(model: VRT, seed: int = 0) -> VRT:
    """The last conv_offset layer starts at zero (offsets == flow); give it small random weights so
    the learned offsets, masks and everything upstream of them are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DCNv2PackFlowGuided):
                last = m.conv_offset[-1]
                last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.01)
                last.bias.copy_(torch.randn(last.bias.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def tiny() -> VRT:
    torch.manual_seed(0)
    return _randomise_offsets(vrt_tiny()).eval()


def _clip(t: int = 5, h: int = 64, w: int = 64, b: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth-ish content so SpyNet sees structure
    base = torch.rand(b, 1, 3, h // 8, w // 8, generator=g)
    x = F.interpolate(base.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False)
    x = x.view(b, 1, 3, h, w).repeat(1, t, 1, 1, 1)
    return (x + 0.05 * torch.rand(b, t, 3, h, w, generator=g)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# State dict: keys, shapes, counts, loading
# ----------------------------------------------------------------------------------------------


def _reference_rows() -> list[tuple[str, str, str]]:
    if not KEYS_TSV.is_file():
        pytest.skip(f"reference key list not found at {KEYS_TSV} (needs the shared/ checkout)")
    rows = []
    for line in KEYS_TSV.read_text().splitlines():
        if line.strip():
            key, shape, dtype = line.split("\t")
            rows.append((key, shape, dtype))
    return rows


def test_state_dict_keys_shapes_dtypes_equal_reference():
    rows = _reference_rows()
    assert len(rows) == 1526
    with torch.device("meta"):
        model = vrt_deblur()
    sd = model.state_dict()
    ours = [(k, str(tuple(v.shape)), str(v.dtype)) for k, v in sd.items()]
    assert set(k for k, _, _ in ours) == set(k for k, _, _ in rows)
    assert ours == rows            # same order too
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 18_320_007
    assert len(list(model.parameters())) == 1410
    assert len(list(model.buffers())) == 116


def test_parameter_counts_per_module():
    with torch.device("meta"):
        model = vrt_deblur()

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(model.spynet) == 1_440_300
    assert count(model.conv_first) == 23_424
    assert count(model.stage1) == 2_027_712
    for i in (2, 3, 4):
        assert count(getattr(model, f"stage{i}")) == 2_065_248
    for i in (5, 6, 7):
        assert count(getattr(model, f"stage{i}")) == 2_029_968
    assert count(model.stage8) == 2_528_472
    assert count(model.norm) == 240
    assert count(model.conv_after_body) == 11_616
    assert count(model.conv_last) == 2_595
    buffers = dict(model.named_buffers())
    assert sum(k.endswith("relative_position_index") for k in buffers) == 72
    assert sum(k.endswith("position_bias") for k in buffers) == 42


def test_official_buffers_values():
    model = vrt_deblur()
    sd = model.state_dict()
    idx = sd["stage1.residual_group1.blocks.0.attn.relative_position_index"]
    assert idx.dtype == torch.int64 and idx.shape == (128, 128)
    assert torch.equal(idx, _index_oracle((2, 8, 8)))
    assert torch.equal(sd["stage8.3.residual_group.blocks.1.attn.relative_position_index"],
                       _index_oracle((1, 8, 8)))
    pb = sd["stage4.residual_group1.blocks.5.attn.position_bias"]
    assert torch.allclose(pb.double(), _position_bias_oracle(8, 8, 96), atol=1e-5)
    assert torch.equal(sd["spynet.mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.equal(sd["spynet.std"].flatten(), torch.tensor([0.229, 0.224, 0.225]))
    # and the official arguments were used
    assert model.stage5.pa_deform.max_residue_magnitude == 2.5
    assert model.stage4.pa_deform.max_residue_magnitude == 1.25
    assert model.stage1.pa_deform.deformable_groups == 16
    assert model.stage8[3].residual_group.window_size == (1, 8, 8)
    assert model.stage8[2].residual_group.window_size == (6, 8, 8)


@pytest.mark.parametrize("wrapped", [True, False])
def test_load_official_strict_both_wrappings(tmp_path, tiny, wrapped):
    sd = tiny.state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"params": sd} if wrapped else sd, path)
    torch.manual_seed(123)
    fresh = vrt_tiny()
    loaded = load_official(path, model=fresh)
    assert loaded is fresh
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_load_official_default_model_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = vrt_deblur()
    path = tmp_path / "006_VRT_videodeblurring_GoPro.pth"
    torch.save({"params": src.state_dict()}, path)
    model = load_official(path)
    for (k, a), (k2, b) in zip(src.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_config_files_build_presets():
    cfg_dir = Path(__file__).resolve().parents[1] / "configs" / "vrt"
    with torch.device("meta"):
        kair = vrt_from_config(cfg_dir / "deblur_train_kair.yaml")
        plain = vrt_from_config(cfg_dir / "deblur.yaml")
    assert sum(p.numel() for p in kair.parameters()) == 18_320_007
    assert list(kair.state_dict()) == list(plain.state_dict())

    def blk(stage, group):
        return getattr(getattr(kair, stage), group).blocks[0]

    assert blk("stage1", "residual_group1").use_checkpoint_attn            # depth index 0
    assert not blk("stage3", "residual_group1").use_checkpoint_attn        # index 2 exempt
    assert blk("stage3", "residual_group2").use_checkpoint_attn            # always (official)
    assert not blk("stage2", "residual_group1").use_checkpoint_ffn         # index 1 exempt
    assert kair.stage8[1].residual_group.blocks[0].use_checkpoint_ffn      # index 7
    assert not kair.stage8[3].residual_group.blocks[0].use_checkpoint_ffn  # index 9 exempt
    assert not plain.stage1.residual_group1.blocks[0].use_checkpoint_attn
    assert vrt_from_config(cfg_dir / "tiny.yaml").stage1.linear1.in_features == 16
    with pytest.raises(ValueError, match="windowsize"):
        vrt_from_config({"preset": "tiny", "overrides": {"windowsize": (2, 8, 8)}})


def test_load_official_names_renamed_key(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd["stage3.pa_fuse.fc11_renamed.weight"] = sd.pop("stage3.pa_fuse.fc11.weight")
    path = tmp_path / "bad.pth"
    torch.save({"params": sd}, path)
    with pytest.raises(StateDictMismatchError) as err:
        load_official(path, model=vrt_tiny())
    text = str(err.value)
    assert "missing keys (1): stage3.pa_fuse.fc11.weight" in text
    assert "unexpected keys (1): stage3.pa_fuse.fc11_renamed.weight" in text


def test_load_official_names_shape_mismatch_and_missing_file(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd["conv_last.bias"] = torch.zeros(4)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(StateDictMismatchError, match=r"conv_last\.bias: \(4,\) vs model \(3,\)"):
        load_official(path, model=vrt_tiny())
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_official(tmp_path / "absent.pth", model=vrt_tiny())


def test_spynet_loads_official_spynet_format(tmp_path, tiny):
    # Official SpyNet file: {'params': {basic_module.*}} without mean/std.
    src = {k: v for k, v in tiny.spynet.state_dict().items() if k.startswith("basic_module.")}
    assert len(src) == 60
    path = tmp_path / "spynet_sintel_final-3d2a1287.pth"
    torch.save({"params": src}, path)
    net = SpyNet(load_path=str(path))
    for k, v in src.items():
        assert torch.equal(net.state_dict()[k], v)
    # VRT(spynet_path=...) loads it too
    model = vrt_tiny(spynet_path=str(path))
    assert torch.equal(model.spynet.basic_module[3].basic_module[4].weight,
                       src["basic_module.3.basic_module.4.weight"])
    # a full VRT checkpoint works for SpyNet alone
    full = tmp_path / "full.pth"
    torch.save({"params": tiny.state_dict()}, full)
    other = load_spynet(SpyNet(), full)
    assert torch.equal(other.basic_module[0].basic_module[0].bias, src["basic_module.0.basic_module.0.bias"])
    # missing conv weight is named
    del src["basic_module.5.basic_module.8.bias"]
    torch.save({"params": src}, path)
    with pytest.raises(StateDictMismatchError, match=r"basic_module\.5\.basic_module\.8\.bias"):
        SpyNet(load_path=str(path))


# ----------------------------------------------------------------------------------------------
# Shapes, split, padding, tiling, checkpointing, gradients (tiny preset)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [5, 6])
def test_per_stage_shapes(tiny, t):
    x = _clip(t=t)
    seen = {}
    hooks = [getattr(tiny, f"stage{i}").register_forward_hook(
        lambda m, a, out, i=i: seen.__setitem__(f"stage{i}", tuple(out.shape))) for i in range(1, 8)]
    hooks += [layer.register_forward_hook(lambda m, a, out, j=j: seen.__setitem__(f"stage8.{j}", tuple(out.shape)))
              for j, layer in enumerate(tiny.stage8)]
    with torch.no_grad():
        enc = tiny.encode(x)
        y = tiny.decode(enc)
    for h in hooks:
        h.remove()
    c = 16
    for i, s in enumerate([1, 2, 4, 8, 4, 2, 1]):
        assert seen[f"stage{i + 1}"] == (1, c, t, 64 // s, 64 // s)
    for j in range(5):
        assert seen[f"stage8.{j}"] == (1, 24, t, 64, 64)
    assert [tuple(f.shape) for f in enc.feats] == [(1, t, c, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)]
    assert [tuple(f.shape) for f in enc.flows_backward] == [(1, t - 1, 2, 64 // 2 ** i, 64 // 2 ** i)
                                                           for i in range(4)]
    assert tuple(enc.x_first.shape) == (1, c, t, 64, 64)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_encode_decode_equals_forward(tiny):
    x = _clip(t=3)
    with torch.no_grad():
        ref = tiny(x)
        enc = tiny.encode(x)
        out = tiny.decode(enc, [f.clone() for f in enc.feats])
        changed = tiny.decode(enc, [enc.feats[0] * 0] + enc.feats[1:])
    assert torch.equal(out, ref)
    assert not torch.allclose(changed, ref)
    assert tiny.feature_dims() == [16, 16, 16, 16]
    with pytest.raises(ValueError, match="feature 2"):
        tiny.decode(enc, [enc.feats[0], enc.feats[2], enc.feats[2], enc.feats[3]])


def test_input_checks(tiny):
    with pytest.raises(ValueError, match="a multiple of 8 and at least 64"):
        tiny(torch.rand(1, 3, 3, 60, 64))
    with pytest.raises(ValueError, match="at least 64 pixels, got 56x64"):
        tiny(torch.rand(1, 3, 3, 56, 64))


def test_padding_wrapper_60x100(tiny):
    x = _clip(t=3, h=60, w=100)
    xp, hw = pad_spatial(x)
    assert hw == (60, 100) and xp.shape[-2:] == (64, 104)
    with torch.no_grad():
        y = padded_forward(lambda ts: tiny(ts[0]), [x])
        ref = tiny(xp)[..., :60, :100]
    assert y.shape == x.shape
    assert torch.equal(y, ref)


@pytest.mark.parametrize("n,target", [(60, 64), (5, 17), (1, 4), (64, 64)])
def test_mirror_indices_equal_numpy_symmetric(n, target):
    a = np.arange(n)
    ref = np.pad(a, (0, target - n), mode="symmetric")
    assert mirror_indices(n, target).tolist() == ref.tolist()


def test_tiled_equals_untiled_when_one_tile_covers(tiny):
    x = _clip(t=3, h=64, w=72)
    with torch.no_grad():
        ref = tiny(x)
        for tile in [(3, 64, 72), (0, 0, 0)]:
            out = tiled_forward(lambda tiles: padded_forward(lambda ts: tiny(ts[0]), tiles), [x], tile=tile,
                                overlap=(2, 20, 20))
            assert torch.equal(out, ref), tile


def test_tiled_forward_two_inputs_pointwise_matches_untiled():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 9, 3, 50, 70, generator=g)
    vox = torch.rand(2, 9, 4, 50, 70, generator=g)

    def fn(ts):
        return ts[0] * 2 + ts[1].sum(2, keepdim=True)

    out = tiled_forward(fn, [rgb, vox], tile=(4, 24, 32), overlap=(1, 6, 10))
    assert torch.allclose(out, fn([rgb, vox]), atol=1e-6)


def test_tiled_forward_border_weights():
    # H = 100, tile 64, overlap 20: tiles [0, 64) and [36, 100); each drops 10 px at the interior
    # edge, so rows [36, 46) come from tile 0 only, [46, 54) from both, [54, 64) from tile 1 only.
    assert tile_starts(100, 64, 20) == [0, 36]
    starts_seen = []

    def fn_pos(ts):
        # identify the tile by its content: x carries the row index
        first_row = int(ts[0][0, 0, 0, 0, 0].item())
        starts_seen.append(first_row)
        return torch.full_like(ts[0], first_row + 1.0)

    rows = torch.arange(100.0).view(1, 1, 1, 100, 1).expand(1, 1, 1, 100, 8).contiguous()
    out = tiled_forward(fn_pos, [rows], tile=(0, 64, 0), overlap=(0, 20, 0))[0, 0, 0, :, 0]
    assert starts_seen == [0, 36]
    assert out[40].item() == 1.0
    assert out[50].item() == (1.0 + 37.0) / 2
    assert out[60].item() == 37.0


def test_tiled_forward_temporal_average():
    x = torch.zeros(1, 7, 1, 8, 8)
    calls = []

    def fn(ts):
        calls.append(ts[0].shape[1])
        return torch.full_like(ts[0], float(len(calls)))

    out = tiled_forward(fn, [x], tile=(4, 0, 0), overlap=(2, 0, 0))[0, :, 0, 0, 0]
    # clip starts 0, 2, 3 -> values 1, 2, 3
    assert tile_starts(7, 4, 2) == [0, 2, 3] and calls == [4, 4, 4]
    assert out.tolist() == [1.0, 1.0, 1.5, 2.0, 2.5, 2.5, 3.0]


@settings(max_examples=25, deadline=None)
@given(t=st.integers(1, 9), h=st.integers(1, 40), w=st.integers(1, 40), tt=st.integers(0, 6),
       th=st.integers(0, 24), tw=st.integers(0, 24), data=st.data())
def test_tiled_forward_pointwise_property(t, h, w, tt, th, tw, data):
    ot = data.draw(st.integers(0, max(tt - 1, 0)))
    oh = data.draw(st.integers(0, max(th - 1, 0)))
    ow = data.draw(st.integers(0, max(tw - 1, 0)))
    x = torch.rand(1, t, 2, h, w)
    out = tiled_forward(lambda ts: ts[0].flip(2) * 3, [x], tile=(tt, th, tw), overlap=(ot, oh, ow))
    assert torch.allclose(out, x.flip(2) * 3, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_backward(tiny):
    """Output and gradients of a 3-frame clip with checkpointing off and on (same weights)."""
    x = _clip(t=3)
    results = {}
    for on in (False, True):
        m = vrt_tiny(use_checkpoint_attn=on, use_checkpoint_ffn=on, checkpoint_self_attn=on)
        m.load_state_dict(tiny.state_dict())
        m.train()
        out = m(x)
        out.square().mean().backward()
        grads = {k: (None if p.grad is None else p.grad.clone()) for k, p in m.named_parameters()}
        results[on] = (out.detach(), grads)
    return results


def test_checkpointing_leaves_outputs_and_grads_unchanged(tiny_backward):
    (o0, g0), (o1, g1) = tiny_backward[False], tiny_backward[True]
    assert torch.equal(o0, o1)
    for k in g0:
        assert torch.allclose(g0[k], g1[k], rtol=1e-5, atol=1e-7), k


def test_gradient_reaches_every_parameter(tiny_backward):
    _, grads = tiny_backward[False]
    missing = [k for k, g in grads.items() if g is None]
    zero = [k for k, g in grads.items() if g is not None and not g.abs().sum() > 0]
    assert not missing, missing
    assert not zero, zero
    assert len(grads) == len(list(vrt_tiny().parameters()))


# ----------------------------------------------------------------------------------------------
# Oracles: independent re-derivations of the formulas in vrt_facts.md
# ----------------------------------------------------------------------------------------------


def _bilinear_zero_pad(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Sample img [C, H, W] at (x, y) pixels; outside pixels count as zero."""
    c, h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _nearest_zero_pad(img: np.ndarray, x: float, y: float) -> np.ndarray:
    c, h, w = img.shape
    xi, yi = int(round(x)), int(round(y))
    if 0 <= yi < h and 0 <= xi < w:
        return img[:, yi, xi]
    return np.zeros(c)


def test_flow_warp_oracle():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    flow = (torch.rand(2, 4, 5, 2, generator=g, dtype=torch.float64) - 0.5) * 5
    flow[0, 1, 2] = torch.tensor([1.0, -1.0])      # an exact integer displacement
    out = flow_warp(img, flow).numpy()
    out4 = flow_warp(img, flow, interp_mode="nearest4").numpy()
    imgs = img.numpy()
    for n in range(2):
        for y in range(4):
            for x in range(5):
                sx, sy = x + flow[n, y, x, 0].item(), y + flow[n, y, x, 1].item()
                np.testing.assert_allclose(out[n, :, y, x], _bilinear_zero_pad(imgs[n], sx, sy), atol=1e-12)
                fx, cx, fy, cy = math.floor(sx), math.ceil(sx), math.floor(sy), math.ceil(sy)
                expect = np.concatenate([_nearest_zero_pad(imgs[n], fx, fy), _nearest_zero_pad(imgs[n], fx, cy),
                                         _nearest_zero_pad(imgs[n], cx, fy), _nearest_zero_pad(imgs[n], cx, cy)])
                np.testing.assert_allclose(out4[n, :, y, x], expect, atol=1e-12)
    np.testing.assert_allclose(out[0, :, 1, 2], imgs[0, :, 0, 3], atol=1e-12)


def test_flow_warp_border_padding_clamps():
    img = torch.arange(12.0).view(1, 1, 3, 4)
    flow = torch.zeros(1, 3, 4, 2)
    flow[..., 0] = 10.0     # far right: border mode repeats the last column
    out = flow_warp(img, flow, padding_mode="border")
    assert torch.equal(out[0, 0], img[0, 0, :, 3:4].expand(3, 4))
    assert torch.equal(flow_warp(img, flow)[0, 0], torch.zeros(3, 4))


def _index_oracle(window):
    wd, wh, ww = window
    toks = [(d, h, w) for d in range(wd) for h in range(wh) for w in range(ww)]
    n = len(toks)
    out = torch.empty(n, n, dtype=torch.int64)
    for i, (dq, hq, wq) in enumerate(toks):
        for j, (dk, hk, wk) in enumerate(toks):
            out[i, j] = ((dq - dk + wd - 1) * (2 * wh - 1) * (2 * ww - 1)
                         + (hq - hk + wh - 1) * (2 * ww - 1) + (wq - wk + ww - 1))
    return out


@pytest.mark.parametrize("window", [(2, 3, 4), (1, 8, 8), (3, 2, 2)])
def test_relative_position_index_oracle(window):
    idx = relative_position_index(window)
    assert torch.equal(idx, _index_oracle(window))
    n_table = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    assert idx.min() == 0 and idx.max() == n_table - 1


def _position_bias_oracle(h, w, c):
    feats = c // 2
    out = torch.empty(1, h * w, c, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            y = (i + 1) / (h + 1e-6) * 2 * math.pi
            xx = (j + 1) / (w + 1e-6) * 2 * math.pi
            for k in range(feats):
                freq = 10000 ** (2 * (k // 2) / feats)
                f = math.sin if k % 2 == 0 else math.cos
                out[0, i * w + j, k] = f(y / freq)
                out[0, i * w + j, feats + k] = f(xx / freq)
    return out


@pytest.mark.parametrize("hw,c", [((8, 8), 16), ((2, 3), 8), ((8, 8), 120)])
def test_sine_position_bias_oracle(hw, c):
    pb = sine_position_bias(hw, c)
    assert pb.shape == (1, hw[0] * hw[1], c) and pb.dtype == torch.float32
    assert torch.allclose(pb.double(), _position_bias_oracle(hw[0], hw[1], c), atol=2e-6)


def _mask_oracle(padded, window, shift):
    """The 27-region construction with slices, as the fact sheet describes it."""
    d, h, w = padded
    img = torch.zeros(1, d, h, w, 1)
    cnt = 0

    def slices(win, s):
        return (slice(0, -win), slice(-win, -s), slice(-s, None)) if s > 0 else (slice(None),)

    for ds in slices(window[0], shift[0]):
        for hs in slices(window[1], shift[1]):
            for ws in slices(window[2], shift[2]):
                img[:, ds, hs, ws, :] = cnt
                cnt += 1
    win = window_partition(img, window).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


@pytest.mark.parametrize("padded,window,shift", [((6, 16, 16), (2, 8, 8), (1, 4, 4)),
                                                 ((5, 16, 24), (5, 8, 8), (0, 4, 4)),
                                                 ((4, 8, 16), (1, 8, 8), (0, 0, 4))])
def test_shifted_window_mask_oracle(padded, window, shift):
    assert torch.equal(shifted_window_mask(padded, window, shift), _mask_oracle(padded, window, shift))


def test_effective_window_shrinks_and_unshifts():
    assert effective_window((6, 64, 64), (6, 8, 8), (3, 4, 4)) == ((6, 8, 8), (0, 4, 4))
    assert effective_window((12, 64, 64), (6, 8, 8), (3, 4, 4)) == ((6, 8, 8), (3, 4, 4))
    assert effective_window((5, 8, 8), (6, 8, 8), (3, 4, 4)) == ((5, 8, 8), (0, 0, 0))


def test_window_partition_roundtrip():
    x = torch.rand(2, 4, 16, 24, 3)
    win = (2, 8, 8)
    w = window_partition(x, win)
    assert w.shape == (2 * 2 * 2 * 3, 128, 3)
    assert torch.equal(w[0, :, 0].view(2, 8, 8), x[0, :2, :8, :8, 0])
    assert torch.equal(window_reverse(w, win, 2, 4, 16, 24), x)


def _attention_oracle(q, k, v, bias, mask, scale):
    """Per-head loop: softmax(q k^T * scale + bias + mask) v, heads concatenated."""
    outs = []
    for hd in range(q.shape[1]):
        logits = (q[:, hd] * scale) @ k[:, hd].transpose(-1, -2)
        if bias is not None:
            logits = logits + bias[hd]
        if mask is not None:
            logits = logits + mask
        outs.append(torch.softmax(logits, -1) @ v[:, hd])
    return torch.cat(outs, -1)


@pytest.mark.parametrize("fused", [True, False])
def test_window_attention_mutual_oracle(fused):
    torch.manual_seed(0)
    dim, heads, window = 8, 2, (2, 2, 2)
    attn = WindowAttention(dim, window, heads, mutual=True, fused=fused).double()
    pos = _position_bias_oracle(2, 2, dim)        # float64 re-derivation (checked against ours elsewhere)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
        attn.position_bias.copy_(pos)
    nw, n = 3, 8
    x = torch.rand(2 * nw, n, dim, dtype=torch.float64)
    mask = torch.where(torch.rand(nw, n, n) > 0.5, -100.0, 0.0).double()
    out = attn(x, mask)

    hd = dim // heads
    scale = hd ** -0.5
    win_mask = mask.repeat(2, 1, 1)          # window i of every batch element uses mask[i]
    idx = _index_oracle(window)
    table = attn.relative_position_bias_table.detach()
    bias = torch.stack([table[idx, h] for h in range(heads)])    # [heads, N, N]

    def split(t):
        q, k, v = t.split(dim, -1)
        return [z.view(2 * nw, n, heads, hd).transpose(1, 2) for z in (q, k, v)]

    q, k, v = split(attn.qkv_self(x))
    self_out = _attention_oracle(q, k, v, bias, win_mask, scale)
    qm, km, vm = split(attn.qkv_mut(x + pos[0].repeat(2, 1)))   # same encoding for both frames
    a, b = slice(0, n // 2), slice(n // 2, n)
    half_mask = win_mask[:, : n // 2, : n // 2]
    first = _attention_oracle(qm[:, :, b], km[:, :, a], vm[:, :, a], None, half_mask, scale)   # q_B k_A v_A
    second = _attention_oracle(qm[:, :, a], km[:, :, b], vm[:, :, b], None, half_mask, scale)  # q_A k_B v_B
    expect = attn.proj(torch.cat([torch.cat([first, second], 1), self_out], 2))
    assert torch.allclose(out, expect, atol=1e-10)
    # unshifted windows: no mask
    plain = attn.proj(torch.cat([torch.cat([
        _attention_oracle(qm[:, :, b], km[:, :, a], vm[:, :, a], None, None, scale),
        _attention_oracle(qm[:, :, a], km[:, :, b], vm[:, :, b], None, None, scale)], 1),
        _attention_oracle(q, k, v, bias, None, scale)], 2))
    assert torch.allclose(attn(x), plain, atol=1e-10)


def test_fused_and_explicit_attention_agree(tiny):
    x = _clip(t=3)
    explicit = vrt_tiny(fused_attention=False)
    explicit.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        a, b = tiny(x), explicit.eval()(x)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_tmsag_shift_only_in_odd_blocks_and_pads_after_norm():
    g = TMSAG(dim=8, depth=3, num_heads=2, window_size=(2, 8, 8), mutual=True)
    assert [b.shift_size for b in g.blocks] == [(0, 0, 0), (1, 4, 4), (0, 0, 0)]
    # padding happens after LayerNorm: a non-multiple T/H/W runs and leaves shapes intact
    x = torch.rand(1, 8, 5, 64, 72)
    assert g(x).shape == x.shape


def test_layer_details():
    m = vrt_tiny()
    ln = m.stage2.reshape[1]
    assert isinstance(ln, torch.nn.LayerNorm) and ln.eps == 1e-5
    assert isinstance(m.conv_after_body, torch.nn.Linear)
    assert m.stage1.residual_group1.blocks[0].attn.mutual
    assert not m.stage1.residual_group2.blocks[0].attn.mutual


def test_reshape_layers_match_einops_patterns():
    einops = pytest.importorskip("einops")
    m = vrt_tiny()
    x = torch.rand(2, 16, 3, 8, 12)
    down = m.stage2.reshape[0](x)
    pattern = "n c d (h neih) (w neiw) -> n d h w (neiw neih c)"
    assert torch.equal(down, einops.rearrange(x, pattern, neih=2, neiw=2))
    up = m.stage5.reshape[0](x)
    pattern = "n (neiw neih c) d h w -> n d (h neih) (w neiw) c"
    assert torch.equal(up, einops.rearrange(x, pattern, neih=2, neiw=2))


def test_flow_guided_dcn_offsets_follow_flow():
    """With the offset head at zero the offsets are exactly the flow (as (dy, dx) pairs) and the
    mask is 0.5, so a constant integer flow equals a shifted plain convolution at half strength."""
    torch.manual_seed(0)
    dcn = DCNv2PackFlowGuided(8, 8, deformable_groups=4, max_residue_magnitude=5.0).double()
    x = torch.rand(2, 8, 9, 11, dtype=torch.float64)
    for dx, dy in ((1, 0), (0, 2), (-1, 1)):
        flow = torch.zeros(2, 2, 9, 11, dtype=torch.float64)
        flow[:, 0], flow[:, 1] = dx, dy
        out = dcn(x, torch.zeros_like(x), torch.zeros_like(x), flow)
        # out(y, x) = 0.5 * sum_k w_k * X(y + ky - 1 + dy, x + kx - 1 + dx), X zero outside
        m = 3
        padded = F.pad(x, (m, m, m, m))
        window = padded[..., m - 1 + dy: m - 1 + dy + 9 + 2, m - 1 + dx: m - 1 + dx + 11 + 2]
        expect = F.conv2d(window, dcn.weight * 0.5, dcn.bias)
        assert torch.allclose(out, expect, atol=1e-10), (dx, dy)


def test_spynet_flow_shapes_and_scaling():
    net = SpyNet().eval()
    ref = torch.rand(2, 3, 72, 88)
    with torch.no_grad():
        flows = net(ref, ref.flip(-1))
    assert [tuple(f.shape) for f in flows] == [(2, 2, 72 // s, 88 // s) for s in (1, 2, 4, 8)]
