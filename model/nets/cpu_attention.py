"""Window attention with a trainable bias on the CPU, through a small C kernel (VRT's fast path).

``biased_attention(q, k, v, bias, mask, scale)`` computes, for ``q, k, v`` of shape ``[B, H, n, d]``,
``bias`` ``[H, n, n]`` and ``mask`` ``[G, n, n]`` or None (window ``b`` uses ``mask[b % G]``, the layout
of :func:`model.nets.vrt.shifted_window_mask`)::

    softmax(scale * q @ k^T + bias[None] + mask[b % G][:, None]) @ v        -> [B, H, n, d]

with gradients for ``q``, ``k``, ``v`` and ``bias`` (the mask is a constant). It is the same function as
the explicit formula in :class:`model.nets.vrt.WindowAttention`, to float rounding (tests/test_cpu_attention.py).

Why: with VRT's head_dim of 8-12 the explicit formula is bound by memory traffic over the ``n x n``
matrices, written and re-read by each of matmul, bias add, mask add, softmax, matmul and as many passes in
the backward. SDPA's CPU flash kernel fuses them but cannot return the gradient of an additive mask, which
the relative position bias needs. The kernel (``csrc/cpu_attention.c``) keeps one query row of scores in
L1 from the dot products to the output and, like flash attention, keeps only each row's maximum and
1/sum for the backward, which recomputes the probabilities (no ``n x n`` matrix is stored). On 2 cores,
forward+backward of a tiny-preset call (192 windows x 2 heads x 128 tokens x head_dim 8) takes 12.5 ms
against the formula's 24.4 ms, and all such calls of a tiny training step 244 ms against 419 ms; at head_dim
16 the gain shrinks to 1.2x (``benchmarks/cpu_attention.py``, benchmarks/RESULTS.md).

Build: the source is compiled on first use with the system C compiler (``$CC`` or ``cc``; about 5 s, once
per machine) into ``$SPIKEPREP_KERNEL_CACHE`` (default ``~/.cache/spikeprep/kernels``), keyed by the source,
the flags, the compiler and the CPU, and loaded with ctypes. Before first use a self-check compares it with
the formula's closed-form gradients on a small random problem. If there is no compiler, the build fails or
the check disagrees, :func:`available` is False, a warning says why once, and callers use the formula.
``SPIKEPREP_CPU_ATTENTION=0`` switches the kernel off. ``SPIKEPREP_KERNEL_LIB=PATH`` loads a library built
beforehand by ``python -m model.nets.cpu_attention PATH`` (portable: no ``-march=native``; the Docker image's)
instead of compiling one; it is self-checked like a fresh build. The kernel runs the ``B*H`` (window, head) pairs
on ``torch.get_num_threads()`` OpenMP threads; built with ``-fopenmp`` it links ``libgomp.so.1``, which
the loader resolves to the copy torch has already loaded, so both share one thread team (Python threads
next to torch's spinning OpenMP workers made it 1.5x slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from schemas.atomic import atomic_path

__all__ = ["available", "unavailable_reason", "supports", "biased_attention", "explicit_attention"]

SOURCE = Path(__file__).resolve().parent / "csrc" / "cpu_attention.c"
# Float flags: everything -ffast-math allows except -ffinite-math-only, so NaN and inf still propagate
# as in the explicit formula (a diverging run must stay visible).
_FLAGS = ["-O3", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
          "-fno-signed-zeros", "-freciprocal-math"]
# Tried in order: OpenMP + native code + glibc's vector expf (Linux x86-64), OpenMP + native code,
# then without OpenMP (one thread) for compilers that lack it.
_VARIANTS = [["-fopenmp", "-march=native", "-DSPIKEPREP_LIBMVEC"], ["-fopenmp", "-march=native"],
             ["-march=native"], []]
# For a library built once and run on other CPUs (a container image): no -march=native.
_PORTABLE_VARIANTS = [["-fopenmp"], []]

_lock = threading.Lock()
_state: dict = {}          # "lib" (ctypes.CDLL | None), "reason" (str)


# ----------------------------------------------------------------------------------------------
# Build and load
# ----------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    env = os.environ.get("SPIKEPREP_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikeprep" / "kernels"


def _cpu_identity() -> str:
    """Machine and CPU flags: a ``-march=native`` build must not be reused on another CPU (shared homes)."""
    ident = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "model name", "Features")):
                    ident += line
    except OSError:
        pass
    return ident


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""


def _build(cc: str, extra: list[str]) -> Path:
    """Compile SOURCE with ``extra`` flags (or reuse the cached build); returns the library path."""
    flags = _FLAGS + extra
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), _compiler_version(cc).encode(),
                                     _cpu_identity().encode()])).hexdigest()[:16]
    lib = _cache_dir() / f"cpu_attention-{key}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(lib) as tmp:
        proc = subprocess.run([cc, *flags, str(SOURCE), "-o", str(tmp), "-lm"], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError((proc.stderr or proc.stdout).strip()[-400:])
    return lib


def build_portable(out: str | os.PathLike, cc: str | None = None) -> Path:
    """Compile the kernel for any CPU of this architecture into ``out`` (``SPIKEPREP_KERNEL_LIB`` loads it).

    For images and shared installs: the library is built once, where a compiler is, and loaded where
    none need be. Raises RuntimeError with the compiler's message if no variant builds.
    """
    cc = cc or os.environ.get("CC") or "cc"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in _PORTABLE_VARIANTS:
        try:
            with atomic_path(out) as tmp:
                proc = subprocess.run([cc, *_FLAGS, *extra, str(SOURCE), "-o", str(tmp), "-lm"],
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError((proc.stderr or proc.stdout).strip()[-400:])
            return out
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(extra) or 'plain'}: {exc}")
    raise RuntimeError("build failed: " + " | ".join(errors))


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    ptr, long_ = ctypes.c_void_p, ctypes.c_long
    lib.spikeprep_attn_forward.argtypes = [ptr] * 7 + [long_] * 5 + [ctypes.c_float, ctypes.c_int]
    lib.spikeprep_attn_forward.restype = ctypes.c_int
    lib.spikeprep_attn_backward.argtypes = [ptr] * 11 + [long_] * 5 + [ctypes.c_float, ctypes.c_int]
    lib.spikeprep_attn_backward.restype = ctypes.c_int
    return lib


def _self_check() -> str | None:
    """Compare the kernel with the formula's closed-form gradients on a small problem; None if they agree.

    No autograd and no autocast here: the first use may come from inside a checkpointed block, whose
    saved-tensor hooks would otherwise capture this check (and recompute the block, re-entering the
    build lock), or from inside an autocast region.
    """
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        gen = torch.Generator().manual_seed(0)
        b, h, n, d, g, scale = 6, 2, 40, 5, 3, 0.4
        q, k, v = (torch.randn(b, h, n, d, generator=gen) for _ in range(3))
        bias = torch.randn(h, n, n, generator=gen)
        mask = torch.where(torch.rand(g, n, n, generator=gen) < 0.3, -100.0, 0.0)
        grad_out = torch.randn(b, h, n, d, generator=gen)
        probs = (q * scale @ k.transpose(-2, -1) + bias
                 + mask.repeat(b // g, 1, 1).unsqueeze(1)).softmax(-1)
        dprobs = grad_out @ v.transpose(-2, -1)
        dscores = probs * (dprobs - (dprobs * probs).sum(-1, keepdim=True))
        ref = (probs @ v, scale * dscores @ k, scale * dscores.transpose(-2, -1) @ q,
               probs.transpose(-2, -1) @ grad_out, dscores.sum(0))
        out, stats = _kernel_forward(q, k, v, bias, mask, scale)
        got = (out, *_kernel_backward(q, k, v, bias, mask, stats, grad_out, scale))
    for name, a, b_ in zip(("output", "dq", "dk", "dv", "dbias"), ref, got):
        if not torch.allclose(a, b_, rtol=1e-4, atol=1e-5):
            return f"self-check failed: {name} differs by {(a - b_).abs().max().item():.3g}"
    return None


def _init() -> None:
    """Build, load and check the kernel once per process (thread-safe)."""
    with _lock:
        if "lib" in _state:
            return
        _state["lib"], _state["reason"] = None, ""
        if os.environ.get("SPIKEPREP_CPU_ATTENTION", "1") == "0":
            _state["reason"] = "switched off by SPIKEPREP_CPU_ATTENTION=0"
            return
        cc = os.environ.get("CC") or "cc"
        prebuilt = os.environ.get("SPIKEPREP_KERNEL_LIB")
        if prebuilt:
            try:
                _state["lib"] = _load(Path(prebuilt))
            except OSError as exc:
                _state["reason"] = f"SPIKEPREP_KERNEL_LIB={prebuilt}: {exc}"
            else:
                problem = _self_check()
                if problem:
                    _state["lib"], _state["reason"] = None, problem
        elif shutil.which(cc) is None:
            _state["reason"] = f"no C compiler ({cc!r} not found; set CC)"
        else:
            errors = []
            for extra in _VARIANTS:
                try:
                    _state["lib"] = _load(_build(cc, extra))
                    break
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    errors.append(f"{' '.join(extra) or 'portable'}: {exc}")
            if _state["lib"] is None:
                _state["reason"] = "build failed: " + " | ".join(errors)
            else:
                problem = _self_check()
                if problem:
                    _state["lib"], _state["reason"] = None, problem
    if _state["reason"] and _state["lib"] is None and "SPIKEPREP_CPU_ATTENTION=0" not in _state["reason"]:
        warnings.warn(f"model.nets.cpu_attention: the C attention kernel is not used ({_state['reason']}); "
                      "window attention with a trainable bias falls back to the explicit formula "
                      "(same results, slower on CPU)", RuntimeWarning, stacklevel=3)


def available() -> bool:
    """Whether the compiled kernel is usable in this process (builds it on the first call)."""
    _init()
    return _state["lib"] is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    _init()
    return _state["reason"]


# ----------------------------------------------------------------------------------------------
# The function
# ----------------------------------------------------------------------------------------------


def _ptr(t: Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _threads(rows: int) -> int:
    return max(1, min(torch.get_num_threads(), rows))


def _kernel_forward(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None,
                    scale: float) -> tuple[Tensor, Tensor]:
    """The C forward on contiguous float32 inputs: (out ``[B, H, n, d]``, stats ``[B, H, n, 2]``)."""
    b, h, n, d = q.shape
    stats = q.new_empty(b, h, n, 2)                   # per query row: score maximum, 1 / sum of exps
    out = torch.empty_like(q)
    failed = _state["lib"].spikeprep_attn_forward(
        _ptr(q), _ptr(k), _ptr(v), _ptr(bias), _ptr(mask), _ptr(stats), _ptr(out),
        b, h, n, d, 1 if mask is None else mask.shape[0], scale, _threads(b * h))
    if failed:
        raise MemoryError("model.nets.cpu_attention: the kernel could not allocate its work buffers")
    return out, stats


def _kernel_backward(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None, stats: Tensor,
                     grad_out: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The C backward on contiguous float32 inputs: (dq, dk, dv, dbias ``[H, n, n]``)."""
    b, h, n, d = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    threads = _threads(b * h)
    dbias = q.new_zeros(threads, h, n, n)              # one buffer per thread: no shared writes
    failed = _state["lib"].spikeprep_attn_backward(
        _ptr(q), _ptr(k), _ptr(v), _ptr(bias), _ptr(mask), _ptr(stats), _ptr(grad_out),
        _ptr(dq), _ptr(dk), _ptr(dv), _ptr(dbias), b, h, n, d, 1 if mask is None else mask.shape[0],
        scale, threads)
    if failed:
        raise MemoryError("model.nets.cpu_attention: the kernel could not allocate its work buffers")
    return dq, dk, dv, dbias.sum(0)


class _BiasedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None,
                scale: float) -> Tensor:
        q, k, v, bias = (t.contiguous() for t in (q, k, v, bias))
        mask = None if mask is None else mask.contiguous()
        out, stats = _kernel_forward(q, k, v, bias, mask, scale)
        ctx.save_for_backward(q, k, v, bias, mask, stats)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, bias, mask, stats = ctx.saved_tensors
        dq, dk, dv, dbias = _kernel_backward(q, k, v, bias, mask, stats, grad_out.contiguous(), ctx.scale)
        return dq, dk, dv, dbias, None, None


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, mask: Tensor | None,
                       scale: float) -> Tensor:
    """The reference formula ``softmax(scale q k^T [+ bias] [+ mask[b % G]]) v`` (shapes: module docstring)."""
    b, h, n, _ = q.shape
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias.unsqueeze(0)
    if mask is not None:
        groups = mask.shape[0]
        attn = (attn.view(b // groups, groups, h, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(b, h, n, n)
    return attn.softmax(dim=-1) @ v


def supports(q: Tensor, bias: Tensor, mask: Tensor | None) -> bool:
    """Whether :func:`biased_attention` runs the kernel for these inputs (else it uses the formula).

    CPU float32 tensors outside autocast, a mask without gradient whose group count divides the
    batch, and a kernel that built and passed its self-check.
    """
    if q.device.type != "cpu" or q.dtype != torch.float32 or bias.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if mask is not None and (mask.requires_grad or mask.dtype != torch.float32 or q.shape[0] % mask.shape[0]):
        return False
    return available()


def biased_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None,
                     scale: float) -> Tensor:
    """``softmax(scale q k^T + bias + mask) v`` by the C kernel where :func:`supports` says so.

    ``q, k, v``: ``[B, H, n, d]``; ``bias``: ``[H, n, n]``; ``mask``: ``[G, n, n]`` (window ``b`` uses
    ``mask[b % G]``) or None. Returns ``[B, H, n, d]``; gradients flow to q, k, v and bias.
    """
    b, h, n, d = q.shape
    if bias.shape != (h, n, n):
        raise ValueError(f"bias must be [{h}, {n}, {n}] for q of shape {tuple(q.shape)}, got {tuple(bias.shape)}")
    if mask is not None and (mask.dim() != 3 or mask.shape[1:] != (n, n)):
        raise ValueError(f"mask must be [G, {n}, {n}], got {tuple(mask.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if b == 0 or not supports(q, bias, mask):
        return explicit_attention(q, k, v, bias, mask, scale)
    return _BiasedAttention.apply(q, k, v, bias, mask, float(scale))


if __name__ == "__main__":
    # python -m model.nets.cpu_attention OUT.so: the portable build (the Dockerfile's; README "Docker")
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m model.nets.cpu_attention OUT.so")
    lib = build_portable(sys.argv[1])
    os.environ["SPIKEPREP_KERNEL_LIB"] = str(lib)
    if not available():
        sys.exit(f"{lib}: built but not usable: {unavailable_reason()}")
    print(f"{lib}: built and checked against the formula; set SPIKEPREP_KERNEL_LIB={lib}")
