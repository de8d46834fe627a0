"""The fused model: Fs_i has Fr_i's shape, the spike-free arm is plain VRT, official weights load."""
from __future__ import annotations

import pytest
import torch
import yaml

from model.nets.integrate_vrt import SpikeVRT, build_model, fuse_features, tiled_inference, vrt_geometry
from model.nets.vrt import StateDictMismatchError, vrt_deblur, vrt_tiny
from model.nets.vrt_tiling import pad_spatial, padded_forward
from schemas.config import parse_config
from spikeprep.errors import InputError

from test_schemas import BASELINE

K = 4


def config(**model):
    raw = yaml.safe_load(BASELINE.read_text())
    raw["DATA"]["K"] = K
    raw["MODEL"].update(model)
    return parse_config(raw)


def tiny_pair(seed=0):
    torch.manual_seed(seed)
    vrt = vrt_tiny()
    return SpikeVRT(vrt, num_bins=K, channels_per_scale=vrt.feature_dims())


@pytest.fixture(scope="module")
def clip():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 3, 64, 64, generator=g), torch.randn(1, 3, K, 64, 64, generator=g)


def test_spike_features_match_rgb_features_tiny(clip):
    model = tiny_pair().eval()
    blur, spike = clip
    with torch.no_grad():
        _, fr, fs = model.encode_scales(blur, spike)
    assert [f.shape for f in fs] == [f.shape for f in fr]
    assert [tuple(f.shape) for f in fr] == [(1, 3, c, 64 // 2 ** i, 64 // 2 ** i)
                                            for i, c in enumerate(model.vrt.feature_dims())]


def test_spike_features_match_rgb_features_official():
    torch.manual_seed(0)
    vrt = vrt_deblur().eval()
    model = SpikeVRT(vrt, num_bins=32, channels_per_scale=[96, 96, 96, 96])
    assert [g.channels for g in vrt_geometry(vrt)] == [96, 96, 96, 96]
    blur, spike = torch.rand(1, 2, 3, 64, 64), torch.randn(1, 2, 32, 64, 64)
    with torch.no_grad():
        _, fr, fs = model.encode_scales(blur, spike)  # shape inference on a small input
    assert [f.shape for f in fs] == [f.shape for f in fr]
    assert [tuple(f.shape) for f in fr][-1] == (1, 2, 96, 8, 8)


def test_wrong_channels_fail_at_construction():
    with pytest.raises(ValueError, match=r"scale 2: MODEL.CHANNELS_PER_SCALE gives 64 channels but the "
                                         r"backbone's Fr_2 has 96"):
        build_model(config(CHANNELS_PER_SCALE=[96, 64, 96, 96]))
    with pytest.raises(ValueError, match="MODEL.LAYERS is 3"):                 # consistent config, not VRT's
        build_model(config(LAYERS=3, CHANNELS_PER_SCALE=[96, 96, 96]))
    with pytest.raises(ValueError, match="CHANNELS_PER_SCALE has 4 entries but LAYERS is 3"):
        config(LAYERS=3)                                                         # caught by the schema first


def test_build_from_config_presets():
    model = build_model(config(VRT_CFG="tiny", CHANNELS_PER_SCALE=vrt_tiny().feature_dims()), use_spike=True)
    assert model.use_spike and len(model.spike_tsa) == 4
    assert model.spike_tsa[0].attn.num_heads == 4 and model.fuse[0].attn.num_heads == 4
    base = build_model(config(VRT_CFG="configs/vrt/tiny.yaml", CHANNELS_PER_SCALE=vrt_tiny().feature_dims()),
                       use_spike=False)
    assert not base.spike_parameters()
    assert set(base.state_dict()) == {f"vrt.{k}" for k in vrt_tiny().state_dict()}
    with pytest.raises(InputError, match="VRT_CFG") as err:        # issue 16, item 10: no traceback
        build_model(config(VRT_CFG="nope.yaml"))
    assert "Fix:" in str(err.value)


def test_spike_free_arm_equals_plain_vrt(clip):
    torch.manual_seed(3)
    vrt = vrt_tiny().eval()
    base = SpikeVRT(vrt, num_bins=K, channels_per_scale=vrt.feature_dims(), use_spike=False)
    blur, spike = clip
    with torch.no_grad():
        assert torch.equal(base(blur), vrt(blur))
        assert torch.equal(base(blur, spike), vrt(blur))  # spikes ignored


def test_fused_output_depends_on_spikes_and_grads_reach_every_spike_parameter(clip):
    model = tiny_pair(4)
    blur, spike = clip
    out = model(blur, spike)
    assert out.shape == blur.shape
    with torch.no_grad():
        assert not torch.equal(model(blur, spike + 1.0), out)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith("vrt.") or (not model.branch and name.endswith("from_spike_features.weight")):
            continue         # (a type without the spike branch reads zeros where Fs'_1 would be)
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="spike_vox"):
        model(blur, spike[:, :, :2])


def test_fuse_features_is_the_integration_point(clip):
    model = tiny_pair(5).eval()
    blur, spike = clip
    with torch.no_grad():
        state, fr, fs = model.encode_scales(blur, spike)
        ff = fuse_features(fr, [t(s) for t, s in zip(model.spike_tsa, fs)], model.fuse)
        assert torch.equal(model.vrt.decode(state, ff), model(blur, spike))


def test_official_weights_load_into_the_backbone(tmp_path):
    torch.manual_seed(6)
    donor = vrt_deblur()
    path = tmp_path / "006_VRT_videodeblurring_GoPro.pth"
    torch.save({"params": donor.state_dict()}, path)
    torch.manual_seed(7)
    model = SpikeVRT(vrt_deblur(), num_bins=32, channels_per_scale=[96] * 4)
    spike_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("vrt.")}
    model.load_official_vrt(path)
    for k, v in donor.state_dict().items():
        assert torch.equal(model.vrt.state_dict()[k], v), k
    for k, v in spike_before.items():
        assert torch.equal(model.state_dict()[k], v), k
    bad = donor.state_dict()
    bad["conv_first.weight_renamed"] = bad.pop("conv_first.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(StateDictMismatchError, match="conv_first.weight"):
        model.load_official_vrt(tmp_path / "bad.pth")


def test_padded_and_tiled_inference_of_the_fused_model():
    model = tiny_pair(8).eval()
    g = torch.Generator().manual_seed(9)
    blur, spike = torch.rand(1, 3, 3, 60, 100, generator=g), torch.randn(1, 3, K, 60, 100, generator=g)
    with torch.no_grad():
        out = padded_forward(lambda ts: model(*ts), [blur, spike])  # both mirror-padded alike to 64x104
        assert out.shape == blur.shape
        ref = model(pad_spatial(blur)[0], pad_spatial(spike)[0])[..., :60, :100]
        assert torch.equal(out, ref)
        for tile in [(3, 64, 104), (0, 0, 0)]:  # one tile covers the (padded) input: same as untiled
            assert torch.equal(tiled_inference(model, blur, spike, tile=tile, overlap=(0, 0, 0)), out), tile
        small = tiled_inference(model, blur, spike, tile=(3, 64, 64), overlap=(1, 16, 16))
        assert small.shape == blur.shape and torch.isfinite(small).all()
        with pytest.raises(ValueError, match="spike_vox"):
            tiled_inference(model, blur, spike[:, :, :2])


# (the fitted head is zero, hence plain VRT, until the trainer starts it at the least-squares map)
RESIDUAL_TYPES = ["ResidualTemporalCrossAttn", "ResidualTemporalCrossAttnSpikeHead",
                  "ResidualTemporalCrossAttnFittedSpikeHead", "ResidualTemporalCrossAttnGatedSpikeHead",
                  "ResidualTemporalCrossAttnEnergyGatedSpikeHead", "ResidualTemporalCrossAttnMotionGatedSpikeHead"]
# (SpikeHeadOnly: no fusion, a zero head; the motion gate shuts VRT's residual too until fitted: the blur)
PLAIN_VRT_AT_INIT = [*(t for t in RESIDUAL_TYPES if "MotionGated" not in t), "SpikeHeadOnly"]


def fused(fuse_type: str, seed: int = 10, spike_branch: bool = True) -> SpikeVRT:
    torch.manual_seed(seed)
    vrt = vrt_tiny()
    return SpikeVRT(vrt, num_bins=K, channels_per_scale=vrt.feature_dims(), fuse_type=fuse_type,
                    spike_branch=spike_branch)


@pytest.mark.parametrize("fuse_type", PLAIN_VRT_AT_INIT)
def test_residual_fusions_start_as_plain_vrt_exactly(clip, fuse_type):
    model = fused(fuse_type).eval()
    blur, spike = clip
    with torch.no_grad():
        plain = model.vrt(blur)
        assert torch.equal(model(blur, spike), plain)
        assert torch.equal(model(blur, torch.randn_like(spike)), plain)       # whatever the voxels
    assert (model.spike_head is not None) == ("SpikeHead" in fuse_type)


def test_the_literal_fusion_is_not_neutral_at_initialisation(clip):
    model = fused("TemporalCrossAttn").eval()
    blur, spike = clip
    with torch.no_grad():
        assert not torch.allclose(model(blur, spike), model.vrt(blur), atol=1e-3)


# (the motion gate is shut until fit_start sets it, so from a zero head nothing upstream of it learns: the
# trainer always starts it fitted; tests/test_train.py trains it)
@pytest.mark.parametrize("fuse_type,spike_branch", [*((t, True) for t in RESIDUAL_TYPES if "MotionGated" not in t),
                                                    ("ResidualTemporalCrossAttnGatedSpikeHead", False)])
def test_residual_fusions_learn_from_the_spikes(clip, fuse_type, spike_branch):
    """Zero-initialised outputs are not dead ends: after one step every spike parameter gets a gradient and
    the output depends on the voxels (MODEL.SPIKE_BRANCH false: through the head alone, no branch built)."""
    model = fused(fuse_type, seed=11, spike_branch=spike_branch)
    assert hasattr(model, "spike_encoder") == spike_branch
    blur, spike = clip
    target = torch.rand_like(blur)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        (model(blur, spike) - target).abs().mean().backward()
        opt.step()
    for name, p in model.named_parameters():
        if name.startswith("vrt.") or (not model.branch and name.endswith("from_spike_features.weight")):
            continue         # (a type without the spike branch reads zeros where Fs'_1 would be)
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        assert not torch.equal(model(blur, spike), model(blur, torch.zeros_like(spike)))


def test_spike_head_reads_spike_features_voxels_and_vrt_features():
    from model.nets.fusion.spike_head import SpikeHead

    head = SpikeHead(spike_channels=5, num_bins=3, head_channels=6)
    fs1, vox, h = torch.randn(2, 4, 5, 8, 8), torch.randn(2, 4, 3, 8, 8), torch.randn(2, 6, 4, 8, 8)
    assert torch.equal(head(fs1, vox, h), torch.zeros(2, 4, 1, 8, 8))     # one luma channel, zero at init
    for conv in (head.from_spike_features, head.from_voxels, head.from_vrt):
        torch.nn.init.normal_(conv.weight)
    out = head(fs1, vox, h)
    # frame t of the output sees frame t of every input only
    out2 = head(fs1, vox, torch.cat([h[:, :, :1], torch.randn(2, 6, 3, 8, 8)], 2))
    assert torch.equal(out[:, 0], out2[:, 0]) and not torch.equal(out[:, 1:], out2[:, 1:])


def test_fitted_spike_head_starts_at_the_least_squares_map():
    """Oracle: spikeprep.baselines' least-squares restoration (itself tested against numpy's lstsq), read
    through the dataset's own voxel normalisation; the head adds its luma minus the blur's."""
    import numpy as np

    from model.nets.fusion.spike_head import FittedSpikeHead
    from spikeprep import baselines as bl
    from spikeprep.spike_deblur_dataset import norm_lut

    rng = np.random.default_rng(3)
    k, size, mean, std = 5, 12, 0.7, 0.4
    acc = bl.LsqAccumulator(k)
    for _ in range(3):
        counts = rng.integers(0, 6, (k, size, size)).astype(np.uint8)
        blur = rng.random((3, size, size))
        sharp = np.clip(0.3 * blur + 0.05 * counts[1:4] + rng.normal(0, 0.01, blur.shape), 0, 1)
        acc.add(counts, blur, sharp)
    coef = acc.solve()
    head = FittedSpikeHead(spike_channels=4, num_bins=k, head_channels=6)
    fs1, h = torch.randn(1, 1, 4, size, size), torch.randn(1, 6, 1, size, size)
    vox = torch.from_numpy(norm_lut(mean, std)[counts])[None, None]
    blur_t = torch.from_numpy(blur).float()[None, None]
    assert torch.equal(head(fs1, vox, h, blur_t), torch.zeros(1, 1, 1, size, size))   # zero until started
    head.start_from_least_squares(coef, *acc.input_moments(), mean, std)   # any normalisation: the same map
    assert torch.allclose(head.counts(vox), torch.from_numpy(counts).float()[None, None], atol=1e-5)
    expected = bl.luma(bl.lsq_restore(counts, blur, coef)) - bl.luma(blur)
    got = head(fs1, vox, h, blur_t)[0, 0, 0].detach().double().numpy()
    assert np.abs(got - expected).max() < 1e-5
    zero = torch.full_like(vox, float(norm_lut(mean, std)[0]))
    assert torch.equal(head.counts(zero), torch.zeros_like(zero))                    # count-zero probe: no spikes
    with pytest.raises(ValueError, match="blur"):
        head(fs1, vox, h)
    with pytest.raises(ValueError, match="coefficients"):
        head.start_from_least_squares(coef[:-1], *acc.input_moments(), mean, std)
    with pytest.raises(ValueError, match="input normalisation"):
        head.start_from_least_squares(coef, np.zeros(k), np.ones(k), mean, std)


def test_gated_spike_head_starts_at_the_gated_least_squares_map():
    """Oracle: spikeprep.baselines' gated least-squares restoration over the counts' 3x3 neighbourhood (numpy,
    scipy's box filter); the head at its start gives its luma correction, the gate convolutions at zero."""
    import numpy as np

    from model.nets.fusion.spike_head import GatedSpikeHead
    from spikeprep import baselines as bl
    from spikeprep.spike_deblur_dataset import norm_lut

    rng = np.random.default_rng(5)
    k, size, mean, std = 4, 20, 0.5, 0.6
    acc = bl.LsqAccumulator(k, taps=3)
    for _ in range(3):
        counts = rng.integers(0, 5, (k, size, size)).astype(np.uint8)
        blur = rng.random((3, size, size))
        sharp = np.clip(0.5 * blur + 0.04 * counts[:3] + 0.02 * np.roll(counts[1:], 1, axis=2)
                        + rng.normal(0, 0.01, blur.shape), 0, 1)
        acc.add(counts, blur, sharp)
    coef = acc.solve()
    d = bl.luma(bl.lsq_restore(counts, blur, coef)) - bl.luma(blur)
    slope, threshold = 20.0, float(np.median(np.log(bl.local_energy(d) + bl.GATE_EPS)))  # half open, half shut
    head = GatedSpikeHead(spike_channels=4, num_bins=k, head_channels=6)
    fs1, h = torch.randn(1, 1, 4, size, size), torch.randn(1, 6, 1, size, size)
    vox = torch.from_numpy(norm_lut(mean, std)[counts])[None, None]
    blur_t = torch.from_numpy(blur).float()[None, None]
    assert torch.equal(head(fs1, vox, h, blur_t), torch.zeros(1, 1, 1, size, size))   # zero until started
    head.start_from_least_squares(coef, np.zeros(k + 3), np.array([acc.count_rms()] * k + [1.0] * 3), mean, std)
    with torch.no_grad():
        head.gate_slope.fill_(slope)
        head.gate_threshold.fill_(threshold)
    expected = bl.luma(bl.gated_lsq_restore(counts, blur, coef, slope, threshold)) - bl.luma(blur)
    got = head(fs1, vox, h, blur_t)[0, 0, 0].detach().double().numpy()
    assert np.abs(got - expected).max() < 1e-5
    g = bl.gate(d, slope, threshold)
    assert g.min() < 0.2 and g.max() > 0.8                   # the gate both opens and closes on this frame
    with torch.no_grad():                                    # VRT's features can open the gate wider
        head.gate_from_vrt.weight.fill_(0.05)
    wider = head(fs1, vox, h, blur_t)[0, 0, 0].detach().double().numpy()
    assert not np.allclose(wider, got)


def test_the_motion_gate_scales_vrts_residual_and_the_spike_correction_together(clip):
    """ResidualTemporalCrossAttnMotionGatedSpikeHead: gate shut -> the blur itself; gate open -> VRT's output
    plus the spike correction, as the gated head without the VRT gate gives it."""
    blur, spike = clip
    motion, plain = fused("ResidualTemporalCrossAttnMotionGatedSpikeHead"), fused("ResidualTemporalCrossAttnGatedSpikeHead")
    plain.load_state_dict(motion.state_dict())
    head = motion.spike_head
    with torch.no_grad():
        head.from_voxels.weight.normal_(0, 0.1)                  # a correction that is not zero
        head.gate_slope.fill_(0.0)
        plain.load_state_dict(motion.state_dict())
        out_open = motion(blur, spike)
    with torch.no_grad():               # slope 0 and zero convolutions: gate = sigmoid(0) = 1/2 everywhere
        vrt_only = plain.vrt.head_output(*_head_input(plain, blur, spike))
        g, d = plain.spike_head.gate_and_correction(*_head_args(plain, blur, spike))
        assert torch.allclose(g, torch.full_like(g, 0.5))
        assert torch.allclose(out_open, blur + 0.5 * (vrt_only - blur + d), atol=1e-6)
        head.gate_threshold.fill_(1e6)
        head.gate_slope.fill_(1.0)                       # log(E) - 1e6: the gate shut everywhere
        assert torch.allclose(motion(blur, spike), blur, atol=1e-6)


def _head_args(model, blur, spike):
    state, fr, fs = model.encode_scales(blur, spike)
    fsa = [t(s) for t, s in zip(model.spike_tsa, fs)]
    h = model.vrt.decode_head_input(state, fuse_features(fr, fsa, model.fuse))
    return fsa[0], spike, h, state.x_lq


def _head_input(model, blur, spike):
    _, _, h, x_lq = _head_args(model, blur, spike)
    return h, x_lq


def test_fit_gate_recovers_a_known_gate():
    """sharp = blur + gate(d) * d with a known slope and threshold: the fit finds them again."""
    import numpy as np

    from spikeprep import baselines as bl

    rng = np.random.default_rng(0)
    corrections = [rng.normal(0, 1, (40, 40)) * np.exp(rng.uniform(-6, -1)) for _ in range(6)]
    blur = [rng.random((40, 40)) for _ in corrections]
    sharp = [b + bl.gate(d, 2.0, -6.5) * d for b, d in zip(blur, corrections)]
    slope, threshold = bl.fit_gate(corrections, blur, sharp)
    assert abs(slope - 2.0) < 0.05 and abs(threshold + 6.5) < 0.05
    assert bl.fit_gate([np.zeros((4, 4))], [np.zeros((4, 4))], [np.ones((4, 4))]) == (0.0, 0.0)


def test_every_listed_fuse_type_is_registered_and_builds():
    """Issue 31: the names live once, in schemas/fuse_types.py; the config accepts exactly them and the model
    registers one implementation per name (an unlisted name is refused at registration)."""
    from typing import get_args

    from model.nets.registry import fuse_type, register_fuse_type
    from schemas.config import FuseConfig
    from schemas.fuse_types import FUSE_TYPES

    assert get_args(FuseConfig.model_fields["TYPE"].annotation) == FUSE_TYPES
    for name in FUSE_TYPES:
        assert fuse_type(name).info.name == name
        assert fused(name).fuse_type == name
    with pytest.raises(ValueError, match="FUSE.TYPE"):
        fused("Concat1x1")
    with pytest.raises(ValueError, match="schemas.fuse_types"):
        register_fuse_type("Concat1x1")
    with pytest.raises(ValueError, match="registered twice"):
        register_fuse_type("TemporalCrossAttn")
