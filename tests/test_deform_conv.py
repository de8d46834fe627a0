"""The two deformable-convolution implementations (model/nets/deform_conv.py) compute the same function.

torchvision.ops.deform_conv2d is the reference; the grid_sample formulation must match its output and
its gradients w.r.t. input, offset, mask, weight and bias, and the whole VRT must give the same output
with either path.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from model.nets.deform_conv import deform_conv2d, deform_conv2d_sampling, resolve_impl
from model.nets.vrt import DCNv2PackFlowGuided, vrt_tiny
from model.nets.vrt_tiling import padded_forward

from test_vrt import _randomise_offsets


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _inputs(n, c, h, w, groups, c_out, wgroups=1, k=(3, 3), stride=1, pad=1, dil=1, scale=4.0,
            dtype=torch.float32, with_mask=True, with_bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    kk = k[0] * k[1]
    ho = (h + 2 * pad - dil * (k[0] - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k[1] - 1) - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    offset = torch.randn(n, 2 * groups * kk, ho, wo, generator=g, dtype=dtype) * scale
    mask = torch.rand(n, groups * kk, ho, wo, generator=g, dtype=dtype) if with_mask else None
    weight = torch.randn(c_out, c // wgroups, *k, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype) if with_bias else None
    return [x, offset, weight, bias, mask], dict(stride=stride, padding=pad, dilation=dil)


def _value_and_grads(fn, tensors, kw):
    x, offset, weight, bias, mask = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    out = fn(x, offset, weight, bias, mask=mask, **kw)
    g = torch.Generator().manual_seed(123)
    upstream = torch.randn(out.shape, generator=g, dtype=out.dtype)
    leaves = [t for t in (x, offset, mask, weight, bias) if t is not None]
    grads = torch.autograd.grad(out, leaves, upstream)
    return [out.detach(), *grads]


def _tv(x, offset, weight, bias, *, mask, stride, padding, dilation):
    p = lambda v: (v, v)  # noqa: E731
    return tv_deform_conv2d(x, offset, weight, bias, stride=p(stride), padding=p(padding),
                            dilation=p(dilation), mask=mask)


CASES = {
    # name: (n, c, h, w, offset groups, c_out, extra)
    "vrt_like_g16": (2, 32, 12, 17, 16, 32, {}),
    "g2_non_square": (2, 8, 9, 14, 2, 6, {}),
    "g1": (1, 4, 10, 7, 1, 5, {}),
    "g4_weight_groups2": (2, 8, 11, 9, 4, 6, dict(wgroups=2)),
    "stride_dilation_kernel3x2": (1, 6, 13, 10, 3, 4, dict(k=(3, 2), stride=2, pad=2, dil=2)),
    "no_mask_no_bias": (1, 8, 9, 10, 2, 4, dict(with_mask=False, with_bias=False)),
    "far_outside": (2, 8, 8, 11, 4, 8, dict(scale=12.0)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_sampling_equals_torchvision_values_and_grads(name, dtype):
    n, c, h, w, groups, c_out, extra = CASES[name]
    tensors, kw = _inputs(n, c, h, w, groups, c_out, dtype=dtype, **extra)
    if name in ("vrt_like_g16", "far_outside"):
        # a good share of the sampling points lies (partly or wholly) outside the image
        off = tensors[1]
        kh, kwid = extra.get("k", (3, 3))
        ys = off[:, 0::2] + torch.arange(off.shape[-2], dtype=dtype).view(-1, 1)
        xs = off[:, 1::2] + torch.arange(off.shape[-1], dtype=dtype)
        outside = (ys < 0) | (ys > h - 1) | (xs < 0) | (xs > w - 1)
        assert outside.float().mean() > 0.2
    ref = _value_and_grads(_tv, tensors, kw)
    got = _value_and_grads(deform_conv2d_sampling, tensors, kw)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    names = ["out", "input", "offset", "mask", "weight", "bias"]
    names = [nm for nm, t in zip(names, [0, 0, 0, tensors[4], 0, tensors[3]]) if t is not None]
    assert len(ref) == len(got) == len(names)
    for nm, a, b in zip(names, got, ref):
        assert a.shape == b.shape, nm
        assert _rel(a, b) < tol, (nm, _rel(a, b))


def test_integer_offsets_are_shifted_convolution():
    """Offsets (dy, dx) = integers, mask 1: a plain conv of the input shifted by (dy, dx), zero outside."""
    x = torch.randn(2, 4, 9, 12, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    for dy, dx in ((0, 0), (2, -1), (-3, 5)):
        offset = torch.zeros(2, 2 * 2 * 9, 9, 12, dtype=torch.float64)
        offset[:, 0::2], offset[:, 1::2] = dy, dx
        out = deform_conv2d(x, offset, weight, None, padding=1, impl="sampling")
        padded = torch.nn.functional.pad(x, (8, 8, 8, 8))
        window = padded[..., 8 - 1 + dy: 8 - 1 + dy + 11, 8 - 1 + dx: 8 - 1 + dx + 14]
        expect = torch.nn.functional.conv2d(window, weight)
        assert torch.allclose(out, expect, atol=1e-12), (dy, dx)


def test_dispatch():
    x = torch.zeros(1, 2, 4, 4)
    assert resolve_impl("auto", x) == "sampling"
    assert resolve_impl("torchvision", x) == "torchvision"
    assert resolve_impl("sampling", torch.zeros(1, 2, 1, 4)) == "torchvision"   # 1-pixel axis
    with pytest.raises(ValueError):
        resolve_impl("fast", x)
    # a 1-pixel axis still computes torchvision's numbers through the switch
    tensors, kw = _inputs(1, 4, 1, 6, 2, 3, dtype=torch.float64)
    x, offset, weight, bias, mask = tensors
    assert torch.equal(deform_conv2d(x, offset, weight, bias, mask=mask, impl="sampling", **kw),
                       _tv(x, offset, weight, bias, mask=mask, **kw))
    with pytest.raises(ValueError):
        vrt_tiny(deform_impl="fast")


@pytest.mark.parametrize("impl", ["sampling", "torchvision"])
def test_autocast_runs_in_float32(impl):
    # Under autocast both paths compute in float32 and return float32 (torchvision's own CUDA policy);
    # without this the torchvision op fails on CPU autocast's mixed dtypes.
    tensors, kw = _inputs(2, 8, 9, 11, 2, 6)
    x, offset, weight, bias, mask = tensors
    plain = deform_conv2d(x, offset, weight, bias, mask=mask, impl=impl, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = deform_conv2d(x.bfloat16(), offset, weight, bias, mask=mask.bfloat16(), impl=impl, **kw)
    assert mixed.dtype == torch.float32
    expect = deform_conv2d(x.bfloat16().float(), offset, weight, bias, mask=mask.bfloat16().float(), impl=impl,
                           **kw)
    assert torch.equal(mixed, expect) and _rel(mixed, plain) < 0.05


def test_dcn_module_switch_and_state_dict():
    torch.manual_seed(0)
    dcn = DCNv2PackFlowGuided(16, 16, deformable_groups=16, max_residue_magnitude=10.0)
    assert dcn.deform_impl == "auto"
    with torch.no_grad():
        dcn.conv_offset[-1].weight.normal_(0, 0.05)
        dcn.conv_offset[-1].bias.normal_(0, 0.5)
    x, warped, cur = torch.randn(3, 2, 16, 10, 13).unbind(0)
    flow = torch.randn(2, 2, 10, 13) * 3
    outs = {}
    for impl in ("torchvision", "sampling"):
        dcn.deform_impl = impl
        outs[impl] = dcn(x, warped, cur, flow)
        assert "deform_impl" not in "".join(dcn.state_dict())
    assert _rel(outs["sampling"], outs["torchvision"]) < 1e-5
    sd_keys = list(DCNv2PackFlowGuided(16, 16, deformable_groups=16, deform_impl="torchvision").state_dict())
    assert list(dcn.state_dict()) == sd_keys


def _randomised_tiny(impl: str):
    torch.manual_seed(0)
    return _randomise_offsets(vrt_tiny(deform_impl=impl), seed=0).eval()


@pytest.fixture(scope="module")
def tiny_pair():
    fast = _randomised_tiny("auto")
    ref = _randomised_tiny("torchvision")
    ref.load_state_dict(fast.state_dict(), strict=True)
    return fast, ref


def test_vrt_state_dict_unchanged_by_switch(tiny_pair):
    fast, ref = tiny_pair
    a, b = fast.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert all(m.deform_impl == "auto" for m in fast.modules() if isinstance(m, DCNv2PackFlowGuided))
    assert fast.set_deform_impl("torchvision") is fast
    assert all(m.deform_impl == "torchvision" for m in fast.modules() if isinstance(m, DCNv2PackFlowGuided))
    fast.set_deform_impl("auto")
    assert list(fast.state_dict()) == list(a)


@pytest.mark.parametrize("t,h,w", [(5, 64, 64), (7, 64, 64), (5, 60, 100)])
def test_vrt_same_output_fast_path_on_and_off(tiny_pair, t, h, w):
    fast, ref = tiny_pair
    g = torch.Generator().manual_seed(t)
    base = torch.rand(1, 3, h // 4, w // 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    x = (x.unsqueeze(1).repeat(1, t, 1, 1, 1) + 0.05 * torch.rand(1, t, 3, h, w, generator=g)).clamp(0, 1)
    with torch.no_grad():   # 60x100 is mirror-padded to 64x104 (non-square) and cropped
        a, b = padded_forward(lambda ts: fast(ts[0]), [x]), padded_forward(lambda ts: ref(ts[0]), [x])
    assert a.shape == b.shape == x.shape
    assert _rel(a, b) < 1e-5, _rel(a, b)


def test_vrt_training_gradients_equal_in_float64():
    """Every parameter gradient of a training step agrees between the paths (float64, so that
    float32 rounding amplified through SpyNet's coarse levels does not blur the comparison)."""
    fast, ref = _randomised_tiny("sampling").double(), _randomised_tiny("torchvision").double()
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(1, 5, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for m in (fast, ref):
        m.train()
        xi = x.clone().requires_grad_()
        m(xi).square().mean().backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert all(g is not None for g in grads[0])
    worst = max(_rel(a, b) for a, b in zip(*grads))
    assert worst < 1e-9, worst
