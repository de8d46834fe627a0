"""Spike branch and fusion: shapes, the original document's code as oracle, locality in space, losses."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from model.nets.fusion.cross_attn_temporal import TemporalCrossAttnFuse
from model.losses.charbonnier import CharbonnierLoss
from model.losses.vgg_perceptual import VGGPerceptualLoss, VGGWeightsUnavailable, vgg19_weights_path
from model.nets.spike_encoder3d import ScaleGeometry, SpikeEncoder3D, check_same_shapes, strides_between
from model.nets import spike_temporal_sa
from model.nets.spike_temporal_sa import TemporalSelfAttentionBlock

VRT_LIKE = [ScaleGeometry(8, 1, 2 ** i, 2 ** i) for i in range(4)]


# ---- the original document's sections 10.1 and 10.2, transcribed literally (the oracle) -------------
class DocTemporalSelfAttentionBlock(nn.Module):
    def __init__(self, dim, heads=4):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True, dropout=0.0)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x):
        B, T, C, H, W = x.shape
        x = x.permute(0, 3, 4, 1, 2).contiguous().view(B * H * W, T, C)
        y = self.ln1(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        x = x + y
        y = self.mlp(self.ln2(x))
        x = x + y
        x = x.view(B, H, W, T, C).permute(0, 3, 4, 1, 2).contiguous()
        return x


class DocTemporalCrossAttnFuse(nn.Module):
    def __init__(self, dim, heads=4):
        super().__init__()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True, dropout=0.0)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, Fr, Fs):
        B, T, C, H, W = Fr.shape
        Q = Fr.permute(0, 3, 4, 1, 2).contiguous().view(B * H * W, T, C)
        K = Fs.permute(0, 3, 4, 1, 2).contiguous().view(B * H * W, T, C)
        V = K
        Q = self.ln_q(Q)
        K = self.ln_kv(K)
        V = self.ln_kv(V)
        Y, _ = self.attn(Q, K, V, need_weights=False)
        X = Q + Y
        Y = self.ffn(self.ln_ffn(X))
        X = X + Y
        X = X.view(B, H, W, T, C).permute(0, 3, 4, 1, 2).contiguous()
        return X


def randomize(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


@pytest.mark.parametrize("dim, heads, shape", [(8, 4, (2, 5, 8, 3, 4)), (12, 4, (1, 6, 12, 5, 2)),
                                               (16, 2, (1, 1, 16, 2, 2))])
def test_tsa_equals_section_10_1(dim, heads, shape):
    ours = randomize(TemporalSelfAttentionBlock(dim, heads), 0)
    doc = DocTemporalSelfAttentionBlock(dim, heads)
    doc.load_state_dict(ours.state_dict())
    x = torch.randn(shape)
    assert torch.allclose(ours(x), doc(x), atol=1e-6)


@pytest.mark.parametrize("dim, heads, shape", [(8, 4, (2, 5, 8, 3, 4)), (12, 4, (1, 6, 12, 5, 2))])
def test_fusion_equals_section_10_2(dim, heads, shape):
    ours = randomize(TemporalCrossAttnFuse(dim, heads), 1)
    doc = DocTemporalCrossAttnFuse(dim, heads)
    doc.load_state_dict(ours.state_dict())
    fr, fs = torch.randn(shape), torch.randn(shape)
    assert torch.allclose(ours(fr, fs), doc(fr, fs), atol=1e-6)


@pytest.mark.parametrize("module", [TemporalSelfAttentionBlock(8), TemporalCrossAttnFuse(8)])
def test_chunked_attention_calls_give_the_same_values_and_gradients(module, monkeypatch):
    # B*H*W = 2*6*5 = 60 sequences in chunks of 7 (the last one short) against a single call.
    randomize(module, 3)
    fr, fs = torch.randn(2, 5, 8, 6, 5), torch.randn(2, 5, 8, 6, 5)

    def run():
        a, b = fr.clone().requires_grad_(), fs.clone().requires_grad_()
        out = module(a) if isinstance(module, TemporalSelfAttentionBlock) else module(a, b)
        out.square().sum().backward()
        return out.detach(), a.grad, b.grad, [p.grad.clone() for p in module.parameters()]

    whole = run()
    module.zero_grad()
    monkeypatch.setattr(spike_temporal_sa.attend_per_pixel, "__defaults__", (7,))
    chunked = run()
    assert torch.allclose(whole[0], chunked[0], atol=1e-6)
    for g1, g2 in zip([*whole[1:3], *whole[3]], [*chunked[1:3], *chunked[3]]):
        assert (g1 is None and g2 is None) or torch.allclose(g1, g2, atol=1e-5)


@pytest.mark.parametrize("module", [TemporalSelfAttentionBlock(8), TemporalCrossAttnFuse(8)])
def test_attention_is_only_along_time(module):
    randomize(module, 2)
    fr, fs = torch.randn(1, 5, 8, 4, 4), torch.randn(1, 5, 8, 4, 4)
    run = (lambda a, b: module(a)) if isinstance(module, TemporalSelfAttentionBlock) else module
    base = run(fr, fs)
    fr2, fs2 = fr.clone(), fs.clone()
    # random changes (a constant added to every channel would vanish in the LayerNorms)
    fr2[:, :, :, 1, 2] += 3 * torch.randn(1, 5, 8)  # one pixel, every frame
    fs2[:, :, :, 1, 2] -= 3 * torch.randn(1, 5, 8)
    out = run(fr2, fs2)
    changed = (out - base).abs().amax(dim=(0, 1, 2))
    assert changed[1, 2] > 1e-3
    changed[1, 2] = 0
    assert changed.max() < 1e-5  # no other pixel moved (beyond float rounding of batched kernels)
    fr3, fs3 = fr.clone(), fs.clone()
    fr3[:, 0] += 3 * torch.randn(1, 8, 4, 4)  # frame 0 of every pixel: other frames of the same pixel change
    fs3[:, 0] += 3 * torch.randn(1, 8, 4, 4)
    assert (run(fr3, fs3)[:, 1:] - base[:, 1:]).abs().max() > 1e-3


def test_encoder_shapes_match_the_geometry():
    enc = SpikeEncoder3D(num_bins=6, channels_per_scale=[8] * 4, geometry=VRT_LIKE)
    feats = enc(torch.randn(2, 5, 6, 32, 24))
    assert [tuple(f.shape) for f in feats] == [(2, 5, 8, 32 // 2 ** i, 24 // 2 ** i) for i in range(4)]
    assert strides_between(VRT_LIKE) == [(1, 2, 2)] * 3
    assert all(isinstance(m, (nn.Conv3d, nn.ReLU, nn.Sequential, nn.ModuleList, SpikeEncoder3D))
               or type(m).__name__ == "ResBlock3D" for m in enc.modules())
    check_same_shapes(feats, [f.clone() for f in feats])
    with pytest.raises(RuntimeError, match="scale 2"):
        check_same_shapes(feats, [feats[0], feats[1][..., :-1], *feats[2:]])


def test_strides_follow_other_geometries():
    geom = [ScaleGeometry(4), ScaleGeometry(6, 2, 2, 2), ScaleGeometry(6, 2, 4, 4)]
    enc = SpikeEncoder3D(num_bins=3, channels_per_scale=[4, 6, 6], geometry=geom)
    feats = enc(torch.randn(1, 4, 3, 16, 16))
    assert [tuple(f.shape) for f in feats] == [(1, 4, 4, 16, 16), (1, 2, 6, 8, 8), (1, 2, 6, 4, 4)]
    with pytest.raises(ValueError, match="not an integer"):
        strides_between([ScaleGeometry(4), ScaleGeometry(4, 1, 3, 3), ScaleGeometry(4, 1, 4, 4)])


def test_wrong_channels_fail_at_construction_with_the_scale():
    with pytest.raises(ValueError, match=r"scale 3: MODEL.CHANNELS_PER_SCALE gives 16 channels but the "
                                         r"backbone's Fr_3 has 8"):
        SpikeEncoder3D(num_bins=4, channels_per_scale=[8, 8, 16, 8], geometry=VRT_LIKE)
    with pytest.raises(ValueError, match="MODEL.LAYERS"):
        SpikeEncoder3D(num_bins=4, channels_per_scale=[8, 8, 8], geometry=VRT_LIKE)


def test_gradients_reach_every_spike_branch_parameter():
    enc = SpikeEncoder3D(num_bins=4, channels_per_scale=[8] * 4, geometry=VRT_LIKE)
    tsa = nn.ModuleList(TemporalSelfAttentionBlock(8) for _ in range(4))
    fuse = nn.ModuleList(TemporalCrossAttnFuse(8) for _ in range(4))
    feats = enc(torch.randn(1, 3, 4, 16, 16))
    fr = [torch.randn_like(f) for f in feats]
    loss = sum(f(r, t(s)).square().mean() for f, t, r, s in zip(fuse, tsa, fr, feats))
    loss.backward()
    for name, p in [*enc.named_parameters(), *tsa.named_parameters(), *fuse.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_charbonnier_is_section_10_4():
    x, y = torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 3, 8, 8)
    assert torch.allclose(CharbonnierLoss()(x, y), torch.mean(torch.sqrt((x - y) ** 2 + 1e-6)))
    assert CharbonnierLoss()(x, x).item() == pytest.approx(1e-3)


@pytest.fixture
def torch_home_with_vgg(tmp_path, monkeypatch):
    """A TORCH_HOME whose cache holds a VGG19 state_dict under torchvision's file name."""
    from torchvision.models import vgg19

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = vgg19_weights_path()
    assert str(path).startswith(str(tmp_path))
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = vgg19(weights=None).state_dict()
    torch.save(state, path)
    return path, state


def test_perceptual_loss_loads_the_cached_weights(torch_home_with_vgg):
    path, state = torch_home_with_vgg
    loss = VGGPerceptualLoss()
    assert torch.equal(loss.slice[0].weight, state["features.0.weight"])
    assert torch.equal(loss.slice[14].weight, state["features.14.weight"])
    assert len(loss.slice) == 16 and isinstance(loss.slice[15], nn.ReLU)
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(1, 2, 3, 32, 32, requires_grad=True)
    value = loss(x, torch.rand(1, 2, 3, 32, 32))
    value.backward()
    assert value.item() > 0 and x.grad is not None
    # per frame: the same as folding the frames into the batch by hand
    y = torch.rand(1, 2, 3, 32, 32)
    assert torch.allclose(loss(x.detach(), y), loss(x.detach().flatten(0, 1), y.flatten(0, 1)))
    assert torch.equal(VGGPerceptualLoss(weights_path=path).slice[0].weight, state["features.0.weight"])


def test_perceptual_loss_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VGGWeightsUnavailable, match="vgg19-.*pth.*perceptual weight 0"):
        VGGPerceptualLoss()
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(VGGWeightsUnavailable, match="not a torchvision VGG19"):
        VGGPerceptualLoss(weights_path=bad)


def test_deblur_loss_is_charbonnier_plus_point_one_vgg(torch_home_with_vgg):
    from model.losses.deblur_loss import DeblurLoss

    x, y = torch.rand(1, 2, 3, 32, 32), torch.rand(1, 2, 3, 32, 32)
    loss = DeblurLoss()
    total, terms = loss(x, y)
    expected = CharbonnierLoss()(x, y) + 0.1 * VGGPerceptualLoss()(x, y)
    assert torch.allclose(total, expected)
    assert terms["total"] == pytest.approx(float(expected)) and terms["perceptual"] > 0


def test_deblur_loss_without_the_perceptual_term_loads_nothing(tmp_path, monkeypatch):
    from model.losses.deblur_loss import DeblurLoss

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no VGG weights here
    with pytest.raises(VGGWeightsUnavailable):
        DeblurLoss()
    loss = DeblurLoss(perceptual_weight=0.0)
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    total, terms = loss(x, y)
    assert torch.equal(total, CharbonnierLoss()(x, y)) and terms["perceptual"] is None
