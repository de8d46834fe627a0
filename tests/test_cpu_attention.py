"""model.nets.cpu_attention: the C kernel against the explicit formula (values, all gradients, masks, odd sizes,
NaN, threads), its fallbacks, its build cache, and the VRT training step with and without it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from model.nets import cpu_attention
from model.nets.cpu_attention import biased_attention, explicit_attention
from model.nets.vrt import shifted_window_mask, vrt_tiny
from tests.conftest import torch_threads

# Tests of the kernel itself need it built (a C compiler); the fallback tests below run everywhere.
needs_kernel = pytest.mark.skipif(not cpu_attention.available(),
                                  reason=f"C kernel unavailable: {cpu_attention.unavailable_reason()}")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _inputs(b, h, n, d, groups, seed=0, masked_fraction=0.3):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g).requires_grad_() for _ in range(3))
    bias = torch.randn(h, n, n, generator=g).requires_grad_()
    mask = None
    if groups:
        mask = torch.where(torch.rand(groups, n, n, generator=g) < masked_fraction, -100.0, 0.0)
        mask[:, torch.arange(n), torch.arange(n)] = 0.0        # every row keeps at least itself
    return q, k, v, bias, mask


def _run(fn, q, k, v, bias, mask, scale, seed=1):
    for t in (q, k, v, bias):
        t.grad = None
    out = fn(q, k, v, bias, mask, scale)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)))
    return [out.detach()] + [t.grad.clone() for t in (q, k, v, bias)]


# (B, H, n, d, mask groups): VRT's shapes (n = 128 and 64 tokens; head_dim 8/12/16/20 take the unrolled
# code), plus sizes that hit the scalar tails (n not a multiple of 16) and the generic head dimension.
@needs_kernel
@pytest.mark.parametrize("b,h,n,d,groups", [
    (6, 2, 128, 8, 0), (6, 2, 128, 8, 3), (4, 2, 64, 12, 2), (4, 3, 72, 16, 4), (2, 1, 32, 20, 1),
    (3, 3, 37, 5, 0), (3, 2, 9, 7, 3), (1, 1, 1, 3, 1),
])
def test_kernel_matches_explicit_formula(b, h, n, d, groups):
    q, k, v, bias, mask = _inputs(b, h, n, d, groups)
    ref = _run(explicit_attention, q, k, v, bias, mask, d ** -0.5)
    got = _run(biased_attention, q, k, v, bias, mask, d ** -0.5)
    for name, a, r in zip(("out", "dq", "dk", "dv", "dbias"), got, ref):
        assert _rel(a, r) < 1e-5, (name, _rel(a, r))


@needs_kernel
def test_vrt_shifted_window_mask_rows():
    """The real mask (0 / -100 blocks) over windows that tile the batch: window b uses mask[b % nW]."""
    window, shift = (2, 8, 8), (1, 4, 4)
    mask = shifted_window_mask((2, 16, 16), window, shift)          # [nW=4, 128, 128]
    q, k, v, bias, _ = _inputs(2 * mask.shape[0], 2, 128, 8, 0, seed=4)
    ref = _run(explicit_attention, q, k, v, bias, mask, 0.35)
    got = _run(biased_attention, q, k, v, bias, mask, 0.35)
    assert max(_rel(a, r) for a, r in zip(got, ref)) < 1e-5


@needs_kernel
def test_non_contiguous_inputs_untouched():
    q, k, v, bias, mask = _inputs(4, 2, 32, 8, 2)
    # the views VRT passes: heads split out of a qkv projection, a permuted bias
    qkv = torch.randn(4, 32, 3, 2, 8).permute(2, 0, 3, 1, 4)
    bias_view = bias.detach().permute(0, 2, 1)
    before = [t.clone() for t in (qkv, bias_view, mask)]
    a = biased_attention(qkv[0], qkv[1], qkv[2], bias_view, mask, 0.3)
    b = explicit_attention(qkv[0], qkv[1], qkv[2], bias_view, mask, 0.3)
    assert _rel(a, b) < 1e-5
    assert all(torch.equal(x, y) for x, y in zip(before, (qkv, bias_view, mask)))


@needs_kernel
def test_nan_propagates_like_the_formula():
    q, k, v, bias, mask = _inputs(2, 2, 16, 8, 0)
    with torch.no_grad():
        q[1, 0, 3, 2] = float("nan")
    ref = explicit_attention(q, k, v, bias, mask, 0.3).detach()
    got = biased_attention(q, k, v, bias, mask, 0.3).detach()
    assert torch.equal(ref.isnan(), got.isnan())
    assert got.isnan().any()
    ok = ~ref.isnan()
    assert _rel(got[ok], ref[ok]) < 1e-5


@needs_kernel
def test_thread_count_does_not_change_results():
    q, k, v, bias, mask = _inputs(8, 2, 64, 8, 4)
    with torch_threads(1):
        one = _run(biased_attention, q, k, v, bias, mask, 0.3)
    with torch_threads(2):
        two = _run(biased_attention, q, k, v, bias, mask, 0.3)
    for a, b in zip(one, two):        # the bias gradient sums per-thread buffers: rounding only
        assert _rel(a, b) < 1e-6
    with torch_threads(2):            # static schedule: the same threads see the same rows every call
        again = _run(biased_attention, q, k, v, bias, mask, 0.3)
    assert all(torch.equal(a, b) for a, b in zip(two, again))


@pytest.mark.parametrize("case", ["float64", "mask_grad", "autocast"])
def test_falls_back_to_the_formula_where_unsupported(case, monkeypatch):
    q, k, v, bias, mask = _inputs(2, 2, 16, 8, 1)
    if case == "float64":
        q, k, v, bias = (t.detach().double().requires_grad_() for t in (q, k, v, bias))
        mask = mask.double()
    elif case == "mask_grad":
        mask.requires_grad_()
    called = []
    monkeypatch.setattr(cpu_attention._BiasedAttention, "apply", lambda *a: called.append(a))
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if case == "autocast"
           else torch.autocast("cpu", enabled=False))
    with ctx:
        out = biased_attention(q, k, v, bias, mask, 0.3)
    assert not called and out.shape == q.shape
    if case == "mask_grad":
        out.sum().backward()
        assert mask.grad is not None     # the formula's autograd, not a silently missing gradient


def test_shape_errors_name_the_argument():
    q, k, v, bias, mask = _inputs(2, 2, 16, 8, 1)
    with pytest.raises(ValueError, match="bias must be"):
        biased_attention(q, k, v, bias[:, :8], mask, 0.3)
    with pytest.raises(ValueError, match="mask must be"):
        biased_attention(q, k, v, bias, mask[0], 0.3)
    with pytest.raises(ValueError, match="q, k, v"):
        biased_attention(q, k[:, :1], v, bias, mask, 0.3)


@needs_kernel
def test_double_backward_is_refused():
    q, k, v, bias, mask = _inputs(2, 2, 16, 8, 0)
    out = biased_attention(q, k, v, bias, mask, 0.3)
    (gq,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        gq.sum().backward()


@needs_kernel
def test_build_is_cached_per_source_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEPREP_KERNEL_CACHE", str(tmp_path))
    first = cpu_attention._build("cc", cpu_attention._VARIANTS[-1])
    stamp = first.stat().st_mtime_ns
    assert cpu_attention._build("cc", cpu_attention._VARIANTS[-1]) == first
    assert first.stat().st_mtime_ns == stamp                       # reused, not rebuilt
    other = cpu_attention._build("cc", cpu_attention._VARIANTS[-2])
    assert other != first and other.parent == tmp_path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp files left


@pytest.fixture
def fresh_state():
    """An uninitialised kernel state for the test (build, load and check run again); restored after."""
    saved = dict(cpu_attention._state)
    cpu_attention._state.clear()
    yield
    cpu_attention._state.clear()
    cpu_attention._state.update(saved)


def test_missing_compiler_falls_back_with_a_reason(tmp_path, monkeypatch, fresh_state):
    monkeypatch.delenv("SPIKEPREP_CPU_ATTENTION", raising=False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SPIKEPREP_KERNEL_CACHE", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not cpu_attention.available()
    assert "no-such-cc" in cpu_attention.unavailable_reason()
    q, k, v, bias, mask = _inputs(2, 2, 16, 8, 1)
    assert _rel(biased_attention(q, k, v, bias, mask, 0.3), explicit_attention(q, k, v, bias, mask, 0.3)) == 0


@needs_kernel
def test_failed_self_check_disables_the_kernel(monkeypatch, fresh_state):
    monkeypatch.setattr(cpu_attention, "_self_check", lambda: "self-check failed: output differs by 1")
    with pytest.warns(RuntimeWarning, match="self-check failed"):
        assert not cpu_attention.available()
    q, k, v, bias, mask = _inputs(2, 2, 16, 8, 0)
    assert not cpu_attention.supports(q, bias, mask)


@needs_kernel
def test_prebuilt_portable_library_is_loaded_without_a_compiler(tmp_path, monkeypatch, fresh_state):
    # The Docker image's way: `python -m model.nets.cpu_attention OUT.so` where gcc is, SPIKEPREP_KERNEL_LIB where not.
    lib = cpu_attention.build_portable(tmp_path / "kernel.so")
    monkeypatch.delenv("SPIKEPREP_CPU_ATTENTION", raising=False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SPIKEPREP_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPIKEPREP_KERNEL_LIB", str(lib))
    assert cpu_attention.available(), cpu_attention.unavailable_reason()
    assert not (tmp_path / "cache").exists()  # nothing compiled
    q, k, v, bias, mask = _inputs(4, 2, 37, 8, 2)
    kernel, formula = (_run(f, q, k, v, bias, mask, 0.3) for f in (biased_attention, explicit_attention))
    for a, b in zip(kernel, formula):
        assert _rel(a, b) < 1e-5


def test_prebuilt_library_that_does_not_load_names_the_variable(tmp_path, monkeypatch, fresh_state):
    (tmp_path / "broken.so").write_bytes(b"not a library")
    monkeypatch.delenv("SPIKEPREP_CPU_ATTENTION", raising=False)
    monkeypatch.setenv("SPIKEPREP_KERNEL_LIB", str(tmp_path / "broken.so"))
    with pytest.warns(RuntimeWarning, match="SPIKEPREP_KERNEL_LIB"):
        assert not cpu_attention.available()


def test_switched_off_by_environment(monkeypatch, fresh_state):
    monkeypatch.setenv("SPIKEPREP_CPU_ATTENTION", "0")
    assert not cpu_attention.available()
    assert "SPIKEPREP_CPU_ATTENTION=0" in cpu_attention.unavailable_reason()


@needs_kernel
def test_vrt_training_step_same_with_and_without_kernel():
    """A float32 training step of the tiny VRT: output and every parameter gradient agree between the
    fast path (kernel) and the explicit formula; the kernel is really used."""
    torch.manual_seed(0)
    fast = vrt_tiny().train()
    ref = vrt_tiny(fused_attention=False).train()
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(1, 5, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    calls = []
    original = cpu_attention._BiasedAttention.apply

    def counting(*args):
        calls.append(1)
        return original(*args)

    results = []
    for model in (fast, ref):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cpu_attention._BiasedAttention, "apply", counting)
            out = model(x)
            out.square().mean().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()]))
        if model is fast:
            assert calls, "the fast path did not use the kernel"
            n_fast = len(calls)
    assert len(calls) == n_fast                  # the explicit model never called it
    (out_a, grads_a), (out_b, grads_b) = results
    assert _rel(out_a, out_b) < 1e-5
    assert all(g is not None for g in grads_a)
    # Per parameter, relative to its largest gradient, with a floor: at initialisation some bias tables
    # get gradients of 1e-26 to 1e-34, where float32 rounding (and flush-to-zero) is all there is.
    names = [n for n, _ in fast.named_parameters()]
    for a, b, name in zip(grads_a, grads_b, names):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-12, name


@needs_kernel
def test_first_use_inside_a_checkpointed_block(tmp_path):
    """The kernel's first use (build, load, self-check) may happen inside torch.utils.checkpoint, whose
    saved-tensor hooks once captured the self-check and re-entered the build lock: a deadlock. A fresh
    process, first attention call inside a checkpointed block, must finish."""
    code = textwrap.dedent("""
        import torch
        from model.nets import cpu_attention
        from model.nets.vrt import TMSA
        block = TMSA(dim=16, num_heads=2, window_size=(2, 8, 8), mutual=False, use_checkpoint_attn=True)
        x = torch.rand(1, 2, 16, 16, 16, requires_grad=True)
        block(x).square().mean().backward()
        assert x.grad is not None and cpu_attention.available()
        print("done")
    """)
    env = {**os.environ, "SPIKEPREP_KERNEL_CACHE": str(tmp_path)}      # a cold cache: build inside too
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-2000:]
