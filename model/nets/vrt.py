"""VRT (Video Restoration Transformer, Liang et al. 2022), our own implementation.

Written from a description of the published model (the paper, its hyper-parameters) and the
official state_dict key list; no code is taken from the CC-BY-NC reference implementation. The module
tree and parameter/buffer names are chosen so that ``state_dict()`` is key-for-key and shape-for-shape
identical to the released deblurring checkpoints (``00{5,6,7}_VRT_videodeblurring_*.pth``), which can
therefore be loaded strictly with :func:`load_official`.

Scope: the video *deblurring* configuration, i.e. ``upscale == 1`` and ``pa_frames == 2`` (parallel
warping with one neighbour on each side). Super-resolution heads, the 4/6-frame flow chaining and the
non-blind denoising input are not implemented; the constructor rejects them.

Layout conventions
    * Public input/output: ``[B, T, C, H, W]``, RGB in [0, 1].
    * Inside the network features are ``[B, C, T, H, W]`` (channels-first, "N C D H W") and every
      ``nn.Linear`` / ``nn.LayerNorm`` is applied after moving channels last.
    * Flows: ``[B, T-1, 2, h, w]``, channel 0 = dx, channel 1 = dy, in pixels of that scale.

Implementation choices (same function, different execution)
    * Window attention runs through ``F.scaled_dot_product_attention`` by default (faster on CPU,
      memory-efficient kernels on GPU); ``fused_attention=False`` uses the explicit
      ``softmax(q * scale @ k^T + bias + mask) @ v``. They agree to float rounding. On CPU, attention
      whose relative position bias needs a gradient (training) goes to :mod:`model.nets.cpu_attention`'s C
      kernel instead (SDPA's CPU kernel cannot return that gradient), or to the explicit formula where
      the kernel cannot be built.
    * The deformable convs run as bilinear sampling (``grid_sample``) + one matmul on CPU by default
      (several times faster in training than ``torchvision.ops.deform_conv2d``);
      ``deform_impl="torchvision"`` selects torchvision's kernel (see :mod:`model.nets.deform_conv` and
      :meth:`VRT.set_deform_impl`). They agree to float rounding.
    * Both flow directions go through SpyNet as one batch, and all 2(T-1) neighbour pairs of a
      stage through the deformable conv as one batch (the official code loops over frames).
    * Checkpointing is only applied while autograd records (no-op under ``torch.no_grad``).
    * Stochastic depth rates rise linearly over all blocks; within a stage the mutual group takes
      the first ``int(depth * mul_attn_ratio)`` rates and the self group the rest (training only;
      the fact sheet does not specify this split).

Layout of this file (bottom-up):
    helpers (windows, masks, position encodings, flow warping) -> SpyNet -> attention blocks
    (WindowAttention, TMSA, TMSAG, RTMSA) -> DCNv2PackFlowGuided -> Stage -> VRT
    -> checkpoint loading -> presets.
Padding and tiled inference live in :mod:`model.nets.vrt_tiling` and are re-exported here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import Tensor, nn

from model.nets import cpu_attention
from model.nets.deform_conv import IMPLS as DEFORM_IMPLS, deform_conv2d
from model.nets.vrt_tiling import pad_spatial, padded_forward, tiled_forward
from schemas.config import crop_size_problem, crop_size_rule

__all__ = [
    "VRT",
    "VRTEncoded",
    "SpyNet",
    "WindowAttention",
    "TMSA",
    "TMSAG",
    "RTMSA",
    "DCNv2PackFlowGuided",
    "Stage",
    "GEGLU",
    "StateDictMismatchError",
    "flow_warp",
    "relative_position_index",
    "sine_position_bias",
    "shifted_window_mask",
    "effective_window",
    "window_partition",
    "window_reverse",
    "official_to_ours",
    "load_official",
    "load_spynet",
    "check_state_dict",
    "VRT_PRESETS",
    "vrt_deblur",
    "vrt_tiny",
    "vrt_from_config",
    "VRT_DEBLUR_ARGS",
    "VRT_TINY_ARGS",
    "pad_spatial",
    "padded_forward",
    "tiled_forward",
]

Triple = tuple[int, int, int]


# ----------------------------------------------------------------------------------------------
# Helpers: windows, masks, position encodings
# ----------------------------------------------------------------------------------------------


def effective_window(size: Sequence[int], window: Sequence[int],
                     shift: Sequence[int]) -> tuple[Triple, Triple]:
    """Shrink the window on axes that are not longer than it.

    For every axis with ``size <= window`` the window becomes the axis length and the shift on that
    axis becomes 0 (so e.g. a 6-frame clip under a (6, 8, 8) window is never shifted in time, and an
    8x8 map at 1/8 scale loses its spatial shift).
    """
    win = list(window)
    sft = list(shift)
    for axis, n in enumerate(size):
        if n <= window[axis]:
            win[axis] = n
            sft[axis] = 0
    return tuple(win), tuple(sft)  # type: ignore[return-value]


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """``[B, D, H, W, C]`` -> ``[B * nWindows, wd*wh*ww, C]``.

    Windows are enumerated (batch, d-block, h-block, w-block); tokens inside a window are ordered
    d-major, then h, then w.
    """
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, wd * wh * ww, c)


def window_reverse(windows: Tensor, window: Sequence[int], b: int, d: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nWindows, N, C]`` -> ``[B, D, H, W, C]``."""
    wd, wh, ww = window
    x = windows.reshape(b, d // wd, h // wh, w // ww, wd, wh, ww, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, d, h, w, -1)


def shifted_window_mask(padded_size: Sequence[int], window: Sequence[int], shift: Sequence[int],
                        device: torch.device | str | None = None) -> Tensor:
    """Attention mask for cyclically shifted 3-D windows, shape ``[nWindows, N, N]``.

    After rolling by ``-shift`` each axis of the (padded) volume splits into up to three regions:
    ``[0, n-window)``, ``[n-window, n-shift)`` and ``[n-shift, n)``; an axis with zero shift is a
    single region. A token pair gets -100 when the two tokens lie in different 3-D regions (tokens
    that were not neighbours before the roll), 0 otherwise.
    """
    labels = []
    for n, win, sft in zip(padded_size, window, shift):
        pos = torch.arange(n, device=device)
        if sft > 0:
            labels.append((pos >= n - win).long() + (pos >= n - sft).long())
        else:
            labels.append(torch.zeros(n, dtype=torch.long, device=device))
    region = (labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :])
    region = region[None, ..., None].float()                      # [1, D, H, W, 1]
    per_window = window_partition(region, window).squeeze(-1)     # [nW, N]
    differs = per_window[:, None, :] != per_window[:, :, None]    # [nW, N, N]
    return torch.zeros(differs.shape, device=device).masked_fill(differs, -100.0)


def relative_position_index(window: Sequence[int]) -> Tensor:
    """Index into the relative position bias table for every (query, key) token pair of a window.

    With per-axis offsets ``delta = query - key + (window - 1)`` (each in ``[0, 2*window-2]``) the
    index is ``delta_d * (2Wh-1)(2Ww-1) + delta_h * (2Ww-1) + delta_w``. Shape ``[N, N]``, int64.
    """
    wd, wh, ww = window
    grid = torch.stack(torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww),
                                      indexing="ij"))           # [3, wd, wh, ww]
    coords = grid.flatten(1)                                    # [3, N], token order d, h, w
    delta = coords[:, :, None] - coords[:, None, :]             # [3, N(query), N(key)]
    delta = delta + torch.tensor([wd - 1, wh - 1, ww - 1]).view(3, 1, 1)
    strides = torch.tensor([(2 * wh - 1) * (2 * ww - 1), 2 * ww - 1, 1]).view(3, 1, 1)
    return (delta * strides).sum(0)


def sine_position_bias(grid_hw: Sequence[int], dim: int, temperature: float = 10000.0) -> Tensor:
    """Normalised 2-D sine position encoding (DETR style) over a ``grid_hw`` window, ``[1, h*w, dim]``.

    ``dim/2`` features encode the row, ``dim/2`` the column (rows first). Positions are 1..n scaled
    to (0, 2*pi]; feature k uses frequency ``temperature ** (2*(k//2) / (dim/2))`` with sin on even
    and cos on odd k. Tokens are laid out row-major.
    """
    if dim % 4:
        raise ValueError(f"sine position bias needs dim divisible by 4, got {dim}")
    h, w = grid_hw
    feats = dim // 2
    ones = torch.ones(1, h, w)
    y = ones.cumsum(1, dtype=torch.float32)
    x = ones.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    k = torch.arange(feats, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / feats)

    def encode(pos: Tensor) -> Tensor:
        angles = pos[..., None] / freq                      # [1, h, w, feats]
        even_sin = angles[..., 0::2].sin()
        odd_cos = angles[..., 1::2].cos()
        return torch.stack((even_sin, odd_cos), dim=-1).flatten(-2)   # sin0, cos1, sin2, ...

    pos = torch.cat((encode(y), encode(x)), dim=-1)         # [1, h, w, dim]
    return pos.reshape(1, h * w, dim).contiguous()


# ----------------------------------------------------------------------------------------------
# Flow warping
# ----------------------------------------------------------------------------------------------


def flow_warp(x: Tensor, flow: Tensor, interp_mode: str = "bilinear", padding_mode: str = "zeros",
              align_corners: bool = True) -> Tensor:
    """Backward-warp ``x`` [N, C, H, W] with ``flow`` [N, H, W, 2] (last axis: dx, dy in pixels).

    Output pixel (x, y) samples ``x`` at (x + dx, y + dy). Coordinates are normalised as
    ``2 v / max(size-1, 1) - 1`` for ``grid_sample(align_corners=True)``.

    ``interp_mode='nearest4'`` returns ``4C`` channels: nearest samples at (floor x, floor y),
    (floor x, ceil y), (ceil x, floor y), (ceil x, ceil y), concatenated in that order.
    """
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    px = xs + flow[..., 0]
    py = ys + flow[..., 1]

    def sample(gx: Tensor, gy: Tensor, mode: str) -> Tensor:
        grid = torch.stack((2.0 * gx / max(w - 1, 1) - 1.0, 2.0 * gy / max(h - 1, 1) - 1.0), dim=-1)
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    if interp_mode == "nearest4":
        x0, x1 = torch.floor(px), torch.ceil(px)
        y0, y1 = torch.floor(py), torch.ceil(py)
        return torch.cat([sample(x0, y0, "nearest"), sample(x0, y1, "nearest"),
                          sample(x1, y0, "nearest"), sample(x1, y1, "nearest")], dim=1)
    return sample(px, py, interp_mode)


# ----------------------------------------------------------------------------------------------
# SpyNet
# ----------------------------------------------------------------------------------------------


class SpyNetLevel(nn.Module):
    """One pyramid level of SpyNet: five 7x7 convs 8->32->64->32->16->2 with ReLUs in between.

    Input channels: reference (3) + warped support (3) + upsampled flow (2).
    """

    def __init__(self) -> None:
        super().__init__()
        chans = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], kernel_size=7, stride=1, padding=3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, 8, h, w]`` (reference, warped support, upsampled flow) -> flow residual ``[N, 2, h, w]``."""
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SpyNet optical flow (6-level coarse-to-fine pyramid).

    ``forward(ref, supp)`` returns the flows that warp ``supp`` onto ``ref`` at scales
    1, 1/2, 1/4, 1/8 (finest first), each ``[N, 2, H/s, W/s]`` in pixels of its own scale.

    Args:
        return_levels: pyramid levels (0 = coarsest, 5 = finest) to return; level l is returned at
            scale ``2 ** (5 - l)``.
        load_path: optional local file in the official SpyNet format (``{'params': {...}}``),
            loaded strictly. Nothing is ever downloaded.
    """

    def __init__(self, return_levels: Sequence[int] = (2, 3, 4, 5), load_path: str | None = None) -> None:
        super().__init__()
        self.return_levels = tuple(return_levels)
        self.basic_module = nn.ModuleList([SpyNetLevel() for _ in range(6)])
        # ImageNet statistics; persistent buffers, as in the official checkpoints.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if load_path:
            load_spynet(self, load_path)

    def _pyramid_flows(self, ref: Tensor, supp: Tensor, h: int, w: int, h32: int, w32: int) -> list[Tensor]:
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(5):
            refs.insert(0, F.avg_pool2d(refs[0], kernel_size=2, stride=2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], kernel_size=2, stride=2, count_include_pad=False))

        n, _, hc, wc = refs[0].shape
        flow = refs[0].new_zeros(n, 2, hc // 2, wc // 2)
        outputs: list[Tensor] = []
        for level, (r, s) in enumerate(zip(refs, supps)):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.shape[2] != r.shape[2]:
                up = F.pad(up, (0, 0, 0, 1), mode="replicate")
            if up.shape[3] != r.shape[3]:
                up = F.pad(up, (0, 1, 0, 0), mode="replicate")
            warped = flow_warp(s, up.permute(0, 2, 3, 1), interp_mode="bilinear", padding_mode="border")
            flow = self.basic_module[level](torch.cat([r, warped, up], dim=1)) + up
            if level in self.return_levels:
                scale = 2 ** (5 - level)
                hs, ws = h // scale, w // scale
                out = F.interpolate(flow, size=(hs, ws), mode="bilinear", align_corners=False)
                ratio = out.new_tensor([ws / (w32 // scale), hs / (h32 // scale)]).view(1, 2, 1, 1)
                outputs.insert(0, out * ratio)
        return outputs

    def forward(self, ref: Tensor, supp: Tensor) -> list[Tensor]:
        """Flows warping ``supp`` onto ``ref`` (both ``[N, 3, H, W]`` in [0, 1]), finest scale first."""
        if ref.shape != supp.shape:
            raise ValueError(f"ref {tuple(ref.shape)} and supp {tuple(supp.shape)} differ")
        h, w = ref.shape[-2:]
        h32, w32 = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        ref = F.interpolate(ref, size=(h32, w32), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h32, w32), mode="bilinear", align_corners=False)
        return self._pyramid_flows(ref, supp, h, w, h32, w32)


# ----------------------------------------------------------------------------------------------
# Layout modules (parameter-free; they occupy index positions inside nn.Sequential like the
# official einops layers, so the LayerNorm/Linear keys get the same indices)
# ----------------------------------------------------------------------------------------------


class ToChannelsLast(nn.Module):
    """``[B, C, D, H, W]`` -> ``[B, D, H, W, C]``."""

    def forward(self, x: Tensor) -> Tensor:
        """Permute (a view, no copy)."""
        return x.permute(0, 2, 3, 4, 1)


class ToChannelsFirst(nn.Module):
    """``[B, D, H, W, C]`` -> ``[B, C, D, H, W]``."""

    def forward(self, x: Tensor) -> Tensor:
        """Permute (a view, no copy)."""
        return x.permute(0, 4, 1, 2, 3)


class SpaceToChannels(nn.Module):
    """2x2 spatial fold: ``[B, C, D, 2h, 2w]`` -> ``[B, D, h, w, 4C]`` (channels-last).

    Output channel ``(dw * 2 + dh) * C + c`` holds input channel c at row offset dh, column offset
    dw, i.e. the column offset is the slowest-varying part of the channel index.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Fold (one copy)."""
        b, c, d, h2, w2 = x.shape
        x = x.reshape(b, c, d, h2 // 2, 2, w2 // 2, 2)        # b c d h dh w dw
        x = x.permute(0, 2, 3, 5, 6, 4, 1)                     # b d h w dw dh c
        return x.reshape(b, d, h2 // 2, w2 // 2, 4 * c)


class ChannelsToSpace(nn.Module):
    """Inverse fold: ``[B, 4C, D, h, w]`` (channels ordered dw, dh, c) -> ``[B, D, 2h, 2w, C]``."""

    def forward(self, x: Tensor) -> Tensor:
        """Unfold (one copy)."""
        b, c4, d, h, w = x.shape
        c = c4 // 4
        x = x.reshape(b, 2, 2, c, d, h, w)                     # b dw dh c d h w
        x = x.permute(0, 4, 5, 2, 6, 1, 3)                     # b d h dh w dw c
        return x.reshape(b, d, 2 * h, 2 * w, c)


# ----------------------------------------------------------------------------------------------
# Transformer blocks
# ----------------------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability ``p`` (training)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with each sample along axis 0 either zeroed or scaled by ``1 / (1 - p)``."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GEGLU(nn.Module):
    """Gated MLP: ``fc2(GELU(fc11(x)) * fc12(x))`` with exact (erf) GELU, channels-last."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc11 = nn.Linear(in_features, hidden_features)
        self.fc12 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., C_in]`` -> ``[..., C_out]``."""
        return self.fc2(F.gelu(self.fc11(x)) * self.fc12(x))


class WindowAttention(nn.Module):
    """Multi-head attention inside 3-D windows, optionally with mutual attention.

    Self-attention: ``softmax(q k^T / sqrt(head_dim) + rpb [+ mask]) v`` with a learned relative
    position bias table indexed by :func:`relative_position_index`.

    Mutual attention (``mutual=True``, temporal window 2): a second projection ``qkv_mut`` is
    applied to ``x + position_bias`` (a fixed sine encoding of the spatial window, the same for both
    frames). With A = tokens of the window's first frame and B = of its second frame, the first
    half of the output is ``Attn(q_B, k_A, v_A)`` (frame A aligned to B) and the second half is
    ``Attn(q_A, k_B, v_B)``; no relative bias, and the mask (if any) is restricted to the first N/2
    tokens. ``proj`` then maps ``cat[mutual, self]`` (2C channels) back to C.

    Args:
        dim: channels C.
        window_size: (wd, wh, ww) used for the bias table and index (and position bias grid).
        num_heads: attention heads; head_dim = C // num_heads.
        qkv_bias: bias in the q/k/v projections.
        qk_scale: override for the 1/sqrt(head_dim) scale.
        mutual: add the mutual-attention branch.
        fused: compute attention with ``F.scaled_dot_product_attention`` (default; on CPU, when the
            bias needs a gradient, :func:`model.nets.cpu_attention.biased_attention`) instead of the explicit
            ``softmax(q*scale @ k^T + bias) @ v``; equal up to float rounding.
    """

    def __init__(self, dim: int, window_size: Sequence[int], num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, mutual: bool = False, fused: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.fused = fused
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        self.mutual = mutual
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        wd, wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        if mutual:
            self.register_buffer("position_bias", sine_position_bias(self.window_size[1:], dim))
        self.qkv_self = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(2 * dim if mutual else dim, dim)
        if mutual:
            self.qkv_mut = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _heads(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = qkv.shape
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.dim // self.num_heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]          # each [B_, heads, N, head_dim]

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rel_bias: bool) -> Tensor:
        """softmax(q k^T * scale [+ rpb] [+ mask]) v for ``[B_, heads, n, hd]`` inputs -> ``[B_, n, C]``."""
        b, heads, n, hd = q.shape
        bias = None
        if rel_bias:
            idx = self.relative_position_index[:n, :n].reshape(-1)
            bias = self.relative_position_bias_table[idx].reshape(n, n, heads).permute(2, 0, 1)
        if mask is not None:
            mask = mask[:, :n, :n]
        # On CPU, SDPA's flash kernel cannot return the gradient of its additive mask, so a trainable
        # relative position bias would send it to the generic math path, slower than the explicit
        # formula; the fast path uses model.nets.cpu_attention there (its C kernel where it is built and
        # supports the inputs, else the formula; the same function either way).
        bias_needs_grad = bias is not None and bias.requires_grad and q.device.type == "cpu"
        if self.fused and not bias_needs_grad:
            out = self._attend_fused(q, k, v, bias, mask)
        elif self.fused:
            out = cpu_attention.biased_attention(q, k, v, bias, mask, self.scale)
        else:
            out = cpu_attention.explicit_attention(q, k, v, bias, mask, self.scale)
        return out.transpose(1, 2).reshape(b, n, heads * hd)

    def _attend_fused(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None,
                      mask: Tensor | None) -> Tensor:
        """Same function through ``F.scaled_dot_product_attention`` (faster, less memory).

        With a mask the window index is folded into the head axis, ``[B, nW*heads, n, hd]``, so the
        per-window mask plus bias, ``[1, nW*heads, n, n]``, broadcasts over the batch.
        """
        b, heads, n, hd = q.shape
        if mask is None:
            attn_mask = None if bias is None else bias.unsqueeze(0).to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        nw = mask.shape[0]
        full = mask.unsqueeze(1) if bias is None else mask.unsqueeze(1) + bias.unsqueeze(0)
        attn_mask = full.expand(nw, heads, n, n).reshape(1, nw * heads, n, n).to(q.dtype)
        fold = (b // nw, nw * heads, n, hd)
        out = F.scaled_dot_product_attention(q.reshape(fold), k.reshape(fold), v.reshape(fold),
                                             attn_mask=attn_mask, scale=self.scale)
        return out.reshape(b, heads, n, hd)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``[B*nW, N, C]`` window tokens; ``mask``: ``[nW, N, N]`` or None."""
        q, k, v = self._heads(self.qkv_self(x))
        out = self._attend(q, k, v, mask, rel_bias=True)
        if self.mutual:
            n = x.shape[1]
            half = n // 2
            q, k, v = self._heads(self.qkv_mut(x + self.position_bias.repeat(1, 2, 1)))
            a_from_b = self._attend(q[:, :, half:], k[:, :, :half], v[:, :, :half], mask, rel_bias=False)
            b_from_a = self._attend(q[:, :, :half], k[:, :, half:], v[:, :, half:], mask, rel_bias=False)
            out = torch.cat([torch.cat([a_from_b, b_from_a], dim=1), out], dim=2)
        return self.proj(out)


class TMSA(nn.Module):
    """Temporal mutual self attention block (pre-norm), channels-last ``[B, D, H, W, C]``.

    ``x = x + DropPath(attn_part(x)); x = x + DropPath(GEGLU(LN2(x)))``. ``attn_part``: LN1, zero
    padding of D/H/W at the end to window multiples (after the norm; padded tokens are not masked
    unless the block is shifted), roll by ``-shift`` (if any shift), window attention, un-roll, crop.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: nominal window; shrunk per input by :func:`effective_window`.
        shift_size: nominal shift ((0, 0, 0) for unshifted blocks).
        mutual: mutual + self attention (else self attention only).
        mlp_ratio: GEGLU hidden width / dim.
        qkv_bias, qk_scale: see :class:`WindowAttention`.
        drop_path: stochastic depth probability.
        use_checkpoint_attn, use_checkpoint_ffn: gradient checkpointing of the two residual branches
            (numerically identical; only used when autograd is recording).
    """

    def __init__(self, dim: int, num_heads: int, window_size: Sequence[int] = (6, 8, 8),
                 shift_size: Sequence[int] = (0, 0, 0), mutual: bool = True, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop_path: float = 0.0,
                 use_checkpoint_attn: bool = False, use_checkpoint_ffn: bool = False) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        self.use_checkpoint_attn = use_checkpoint_attn
        self.use_checkpoint_ffn = use_checkpoint_ffn
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale, mutual=mutual)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GEGLU(dim, int(dim * mlp_ratio), dim)

    def _attn_part(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, d, h, w, _ = x.shape
        win, shift = effective_window((d, h, w), self.window_size, self.shift_size)
        x = self.norm1(x)
        pad_d, pad_h, pad_w = ((-n) % k for n, k in zip((d, h, w), win))
        if pad_d or pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h, 0, pad_d))
        dp, hp, wp = d + pad_d, h + pad_h, w + pad_w
        shifted = any(s > 0 for s in shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        windows = self.attn(window_partition(x, win), mask if shifted else None)
        x = window_reverse(windows, win, b, dp, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        x = x[:, :d, :h, :w, :]
        return self.drop_path(x)

    def _ffn_part(self, x: Tensor) -> Tensor:
        return self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``[B, D, H, W, C]``; ``mask``: the shifted-window mask ``[nW, N, N]`` or None."""
        recording = torch.is_grad_enabled()
        if self.use_checkpoint_attn and recording:
            x = x + torch_checkpoint.checkpoint(self._attn_part, x, mask, use_reentrant=False)
        else:
            x = x + self._attn_part(x, mask)
        if self.use_checkpoint_ffn and recording:
            x = x + torch_checkpoint.checkpoint(self._ffn_part, x, use_reentrant=False)
        else:
            x = x + self._ffn_part(x)
        return x


def _per_block(value: float | Sequence[float], depth: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * depth
    value = list(value)
    if len(value) != depth:
        raise ValueError(f"expected {depth} drop-path rates, got {len(value)}")
    return value


class TMSAG(nn.Module):
    """A group of TMSA blocks sharing one window; odd-indexed blocks are shifted by window // 2.

    Input and output ``[B, C, D, H, W]``. The shifted-window mask is built once per call on the
    padded size with the group's effective window/shift.

    Args:
        dim, num_heads, mutual, mlp_ratio, qkv_bias, qk_scale: see :class:`TMSA`.
        depth: number of blocks.
        window_size: nominal window (wd, wh, ww).
        shift_size: shift of the odd blocks; default ``window // 2`` per axis.
        drop_path: one rate for all blocks or one per block.
        use_checkpoint_attn, use_checkpoint_ffn: passed to every block.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: Sequence[int] = (6, 8, 8),
                 shift_size: Sequence[int] | None = None, mutual: bool = True, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_path: float | Sequence[float] = 0.0, use_checkpoint_attn: bool = False,
                 use_checkpoint_ffn: bool = False) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in window_size) if shift_size is None else tuple(shift_size)
        rates = _per_block(drop_path, depth)
        self.blocks = nn.ModuleList([
            TMSA(dim, num_heads, window_size=self.window_size,
                 shift_size=(0, 0, 0) if i % 2 == 0 else self.shift_size, mutual=mutual,
                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_path=rates[i],
                 use_checkpoint_attn=use_checkpoint_attn, use_checkpoint_ffn=use_checkpoint_ffn)
            for i in range(depth)
        ])

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, D, H, W]`` -> same shape; builds the shift mask once for all blocks."""
        _, _, d, h, w = x.shape
        win, shift = effective_window((d, h, w), self.window_size, self.shift_size)
        mask = None
        if any(s > 0 for s in shift):
            padded = tuple(math.ceil(n / k) * k for n, k in zip((d, h, w), win))
            mask = shifted_window_mask(padded, win, shift, device=x.device)
        x = x.permute(0, 2, 3, 4, 1)
        for blk in self.blocks:
            x = blk(x, mask)
        return x.permute(0, 4, 1, 2, 3)


class RTMSA(nn.Module):
    """Residual TMSA group (self attention only): ``x + linear(TMSAG(x))`` on ``[B, C, D, H, W]``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: Sequence[int],
                 mlp_ratio: float = 2.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_path: float | Sequence[float] = 0.0, use_checkpoint_attn: bool = False,
                 use_checkpoint_ffn: bool = False) -> None:
        super().__init__()
        self.residual_group = TMSAG(dim, depth, num_heads, window_size=window_size, mutual=False,
                                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    drop_path=drop_path, use_checkpoint_attn=use_checkpoint_attn,
                                    use_checkpoint_ffn=use_checkpoint_ffn)
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, D, H, W]`` -> same shape."""
        y = self.linear(self.residual_group(x).permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        return x + y


# ----------------------------------------------------------------------------------------------
# Flow-guided deformable alignment
# ----------------------------------------------------------------------------------------------


class DCNv2PackFlowGuided(nn.Module):
    """Modulated deformable 3x3 convolution whose offsets are residuals around an optical flow.

    ``conv_offset(cat[warped_neighbour, current, flow])`` (``2C + 2`` channels in, 4 convs with
    LeakyReLU(0.1)) gives ``3 * 9 * G`` channels, split into thirds o1, o2, m. Then
    ``offset = max_residue_magnitude * tanh(cat[o1, o2]) + flow.flip(1)`` (the flow as (dy, dx),
    repeated for all 9G sampling points, matching torchvision's (dy, dx) offset layout),
    ``mask = sigmoid(m)``, and the output is ``deform_conv2d`` of the *unwarped* neighbour.

    Args:
        in_channels, out_channels: C in/out of the deformable conv (conv_offset width = out_channels).
        kernel_size: deformable kernel size (3).
        padding: deformable conv padding (1).
        deformable_groups: offset groups G (16 in the official models).
        max_residue_magnitude: bound of the learned residual offsets (10 / scale).
        pa_frames: parallel-warping frames; only 2 is supported.
        deform_impl: 'auto' (sampling on CPU), 'sampling' or 'torchvision'; same function, see
            :mod:`model.nets.deform_conv`. A plain attribute, not part of the state_dict.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 deformable_groups: int = 16, max_residue_magnitude: float = 10.0, pa_frames: int = 2,
                 deform_impl: str = "auto") -> None:
        super().__init__()
        if pa_frames != 2:
            raise ValueError("only pa_frames=2 is implemented")
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels {in_channels} not divisible by {deformable_groups} groups")
        self.kernel_size = kernel_size
        self.padding = padding
        self.deformable_groups = deformable_groups
        self.max_residue_magnitude = float(max_residue_magnitude)
        self.deform_impl = deform_impl
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        n_off = 3 * kernel_size * kernel_size * deformable_groups
        self.conv_offset = nn.Sequential(
            nn.Conv2d((1 + pa_frames // 2) * in_channels + pa_frames, out_channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(out_channels, n_off, 3, 1, 1),
        )
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        # Start with offsets == flow and mask == 0.5 everywhere.
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, neighbour: Tensor, warped: Tensor, current: Tensor, flow: Tensor) -> Tensor:
        """All ``[N, C, H, W]`` except ``flow`` ``[N, 2, H, W]`` (dx, dy) from current to neighbour."""
        o1, o2, m = torch.chunk(self.conv_offset(torch.cat([warped, current, flow], dim=1)), 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat([o1, o2], dim=1))
        offset = offset + flow.flip(1).repeat(1, offset.shape[1] // 2, 1, 1)
        mask = torch.sigmoid(m)
        return deform_conv2d(neighbour, offset, self.weight, self.bias, stride=(1, 1),
                             padding=(self.padding, self.padding), dilation=(1, 1), mask=mask,
                             impl=self.deform_impl)


# ----------------------------------------------------------------------------------------------
# Stage
# ----------------------------------------------------------------------------------------------


class Stage(nn.Module):
    """One VRT scale: reshape, TMSA groups (mutual then self), parallel warping, GEGLU fusion.

    ``x = reshape(x); x += linear1(RG1(x)); x += linear2(RG2(x)); x = pa_fuse(cat[x, bwd, fwd])``
    where ``bwd[t]`` is frame t+1 aligned to t (zeros for the last frame) and ``fwd[t]`` frame t-1
    aligned to t (zeros for frame 0); ``pa_fuse`` replaces x (no residual).

    Args:
        in_dim: channels of the incoming features.
        dim: channels of this stage.
        depth: TMSA blocks; ``int(depth * mul_attn_ratio)`` mutual blocks in ``residual_group1``
            (temporal window 2), the rest self-attention in ``residual_group2`` (full window).
        num_heads: attention heads.
        window_size: nominal (D, H, W) window of the self-attention group.
        mul_attn_ratio: share of mutual-attention blocks.
        mlp_ratio, qkv_bias, qk_scale: see :class:`TMSA`.
        drop_path: per-block rates (length ``depth``) or one rate.
        reshape: 'none' (LayerNorm only), 'down' (2x2 fold, LN(4*in_dim), Linear to dim) or
            'up' (2x2 unfold, LN(in_dim/4), Linear to dim).
        pa_frames: must be 2.
        deformable_groups: offset groups of the deformable alignment.
        max_residue_magnitude: offset residual bound (10 / scale).
        use_checkpoint_attn, use_checkpoint_ffn: checkpointing of the TMSA branches.
        checkpoint_self_attn: also checkpoint residual_group2's attention regardless of
            ``use_checkpoint_attn`` (the official Stage always does; outputs are identical).
    """

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int,
                 window_size: Sequence[int] = (6, 8, 8), mul_attn_ratio: float = 0.75,
                 mlp_ratio: float = 2.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_path: float | Sequence[float] = 0.0, reshape: str = "none", pa_frames: int = 2,
                 deformable_groups: int = 16, max_residue_magnitude: float = 10.0,
                 use_checkpoint_attn: bool = False, use_checkpoint_ffn: bool = False,
                 checkpoint_self_attn: bool = True) -> None:
        super().__init__()
        if reshape == "none":
            self.reshape = nn.Sequential(ToChannelsLast(), nn.LayerNorm(dim), ToChannelsFirst())
        elif reshape == "down":
            self.reshape = nn.Sequential(SpaceToChannels(), nn.LayerNorm(4 * in_dim),
                                         nn.Linear(4 * in_dim, dim), ToChannelsFirst())
        elif reshape == "up":
            self.reshape = nn.Sequential(ChannelsToSpace(), nn.LayerNorm(in_dim // 4),
                                         nn.Linear(in_dim // 4, dim), ToChannelsFirst())
        else:
            raise ValueError(f"reshape must be 'none', 'down' or 'up', got {reshape!r}")
        rates = _per_block(drop_path, depth)
        n_mut = int(depth * mul_attn_ratio)
        common = dict(num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                      use_checkpoint_ffn=use_checkpoint_ffn)
        self.residual_group1 = TMSAG(dim, n_mut, window_size=(2, window_size[1], window_size[2]),
                                     mutual=True, drop_path=rates[:n_mut],
                                     use_checkpoint_attn=use_checkpoint_attn, **common)
        self.linear1 = nn.Linear(dim, dim)
        self.residual_group2 = TMSAG(dim, depth - n_mut, window_size=window_size, mutual=False,
                                     drop_path=rates[n_mut:],
                                     use_checkpoint_attn=use_checkpoint_attn or checkpoint_self_attn,
                                     **common)
        self.linear2 = nn.Linear(dim, dim)
        self.pa_deform = DCNv2PackFlowGuided(dim, dim, 3, padding=1, deformable_groups=deformable_groups,
                                             max_residue_magnitude=max_residue_magnitude,
                                             pa_frames=pa_frames)
        self.pa_fuse = GEGLU(dim * (1 + 2), dim * (1 + 2), dim)

    @staticmethod
    def _linear_cf(linear: nn.Linear, x: Tensor) -> Tensor:
        """Apply a Linear to the channels of a channels-first ``[B, C, D, H, W]`` tensor."""
        return linear(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def _parallel_warp(self, x: Tensor, flow_backward: Tensor, flow_forward: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: ``[B, T, C, h, w]``; flows ``[B, T-1, 2, h, w]``. Returns (bwd, fwd), each like x.

        Both directions and all T-1 pairs go through the deformable conv as one batch.
        """
        b, t, c, h, w = x.shape
        zeros = x.new_zeros(b, 1, c, h, w)
        if t < 2:
            return zeros, zeros
        # backward: neighbour t+1 -> current t with flows_backward[:, t]
        # forward:  neighbour t-1 -> current t with flows_forward[:, t-1]
        neighbour = torch.cat([x[:, 1:], x[:, :-1]], dim=0).reshape(-1, c, h, w)
        current = torch.cat([x[:, :-1], x[:, 1:]], dim=0).reshape(-1, c, h, w)
        flow = torch.cat([flow_backward, flow_forward], dim=0).reshape(-1, 2, h, w)
        warped = flow_warp(neighbour, flow.permute(0, 2, 3, 1), interp_mode="bilinear")
        aligned = self.pa_deform(neighbour, warped, current, flow).reshape(2 * b, t - 1, c, h, w)
        bwd = torch.cat([aligned[:b], zeros], dim=1)
        fwd = torch.cat([zeros, aligned[b:]], dim=1)
        return bwd, fwd

    def forward(self, x: Tensor, flow_backward: Tensor, flow_forward: Tensor) -> Tensor:
        """``x``: ``[B, C_in, T, H, W]`` -> ``[B, C, T, H', W']`` (H' = H/2, H or 2H by reshape)."""
        x = self.reshape(x)
        x = self._linear_cf(self.linear1, self.residual_group1(x)) + x
        x = self._linear_cf(self.linear2, self.residual_group2(x)) + x
        x = x.transpose(1, 2)                                        # [B, T, C, H, W]
        bwd, fwd = self._parallel_warp(x, flow_backward, flow_forward)
        x = self.pa_fuse(torch.cat([x, bwd, fwd], dim=2).permute(0, 1, 3, 4, 2))   # [B, T, H, W, C]
        return x.permute(0, 4, 1, 2, 3)


# ----------------------------------------------------------------------------------------------
# VRT
# ----------------------------------------------------------------------------------------------


@dataclass
class VRTEncoded:
    """What :meth:`VRT.encode` hands to :meth:`VRT.decode`.

    Attributes:
        feats: Fr_1..Fr_4, outputs of stages 1-4, each ``[B, T, C_i, H/2^(i-1), W/2^(i-1)]``.
        x_lq: the input clip ``[B, T, 3, H, W]`` (for the global residual).
        x_first: ``conv_first`` output ``[B, C_1, T, H, W]`` (for the body residual).
        flows_backward, flows_forward: SpyNet flows at scales 1, 1/2, 1/4, 1/8, each
            ``[B, T-1, 2, H/s, W/s]``.
    """

    feats: list[Tensor]
    x_lq: Tensor
    x_first: Tensor
    flows_backward: list[Tensor] = field(default_factory=list)
    flows_forward: list[Tensor] = field(default_factory=list)


class VRT(nn.Module):
    """Video Restoration Transformer for video deblurring (upscale 1, parallel warping of 2 frames).

    ``forward(x)``: ``[B, T, 3, H, W]`` -> ``[B, T, 3, H, W]``. H and W must be multiples of 8 and at
    least 64 (see :func:`model.nets.vrt_tiling.padded_forward` for any size). No clamping.

    Pipeline: SpyNet flows between neighbours (both directions, 4 scales); the input frame plus its
    two neighbours aligned by nearest4 flow warping (27 channels) -> ``conv_first``; stages 1-4
    (scales 1, 1/2, 1/4, 1/8) and 5-7 (back up, with skips from stages 3, 2 and 1 added); stage 8
    (LN + Linear to the stage-8 width, then RTMSA groups); ``norm``; ``conv_after_body`` (a Linear)
    added to the conv_first output; ``conv_last``; plus the input.

    Args:
        upscale: must be 1 (deblurring).
        in_chans: input channels (3).
        out_chans: output channels (3).
        img_size: training clip size; stored only, no effect on weights or forward.
        window_size: (D, H, W) attention window.
        depths: TMSA blocks per depth-list entry: 7 stages, then one entry per stage-8 RTMSA.
        indep_reconsts: depth-list indices (>= 7) whose RTMSA uses window (1, Wh, Ww).
        embed_dims: channels per depth-list entry (stages 1-7 must share one width, stage 8 one).
        num_heads: heads per depth-list entry.
        mul_attn_ratio: share of mutual-attention blocks in stages 1-7.
        mlp_ratio: GEGLU hidden width / dim.
        qkv_bias: bias in q/k/v projections.
        qk_scale: override of 1/sqrt(head_dim).
        drop_path_rate: stochastic depth, linearly increasing over all blocks (training only).
        pa_frames: must be 2.
        deformable_groups: offset groups of the flow-guided deformable convs.
        spynet_path: optional local SpyNet weights in the official format (never downloaded).
        use_checkpoint_attn, use_checkpoint_ffn: gradient checkpointing of TMSA branches.
        no_checkpoint_attn_blocks, no_checkpoint_ffn_blocks: depth-list indices exempt from the
            corresponding checkpointing.
        checkpoint_self_attn: checkpoint every stage's residual_group2 attention regardless of
            ``use_checkpoint_attn`` (official behaviour; memory only, outputs unchanged).
        fused_attention: window attention through ``F.scaled_dot_product_attention`` (default;
            faster and leaner) or the explicit formula; see :meth:`set_fused_attention`.
        deform_impl: deformable-conv implementation, 'auto' (default: grid_sample formulation on
            CPU, torchvision elsewhere), 'sampling' or 'torchvision'; see :meth:`set_deform_impl`.
    """

    def __init__(self, *, upscale: int = 1, in_chans: int = 3, out_chans: int = 3,
                 img_size: Sequence[int] = (6, 192, 192), window_size: Sequence[int] = (6, 8, 8),
                 depths: Sequence[int] = (8, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4),
                 indep_reconsts: Sequence[int] = (9, 10),
                 embed_dims: Sequence[int] = (96,) * 7 + (120,) * 4,
                 num_heads: Sequence[int] = (6,) * 11, mul_attn_ratio: float = 0.75,
                 mlp_ratio: float = 2.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_path_rate: float = 0.2, pa_frames: int = 2, deformable_groups: int = 16,
                 spynet_path: str | None = None, use_checkpoint_attn: bool = False,
                 use_checkpoint_ffn: bool = False, no_checkpoint_attn_blocks: Sequence[int] = (),
                 no_checkpoint_ffn_blocks: Sequence[int] = (), checkpoint_self_attn: bool = True,
                 fused_attention: bool = True, deform_impl: str = "auto") -> None:
        super().__init__()
        if upscale != 1:
            raise ValueError("only upscale=1 (deblurring) is implemented")
        if pa_frames != 2:
            raise ValueError("only pa_frames=2 is implemented")
        n = len(depths)
        if n < 8 or len(embed_dims) != n or len(num_heads) != n:
            raise ValueError("depths, embed_dims, num_heads need equal length >= 8 (7 stages + RTMSAs)")
        if len(set(embed_dims[:7])) != 1:
            raise ValueError("stages 1-7 must share one width (skip connections add them)")
        if len(set(embed_dims[7:])) != 1:
            raise ValueError("the stage-8 RTMSA groups must share one width")
        self.upscale = upscale
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.img_size = tuple(img_size)
        self.window_size = tuple(window_size)
        self.pa_frames = pa_frames

        total = sum(depths)   # stochastic depth rises linearly from 0 to drop_path_rate over all blocks
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(depths[:i]) for i in range(n + 1)]

        def ckpt(i: int) -> tuple[bool, bool]:
            return (use_checkpoint_attn and i not in no_checkpoint_attn_blocks,
                    use_checkpoint_ffn and i not in no_checkpoint_ffn_blocks)

        c1 = embed_dims[0]
        self.conv_first = nn.Conv3d(in_chans * (1 + 2 * 4), c1, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.spynet = SpyNet(return_levels=(2, 3, 4, 5), load_path=spynet_path)

        scales = (1, 2, 4, 8, 4, 2, 1)
        reshapes = ("none", "down", "down", "down", "up", "up", "up")
        for i in range(7):
            attn_ckpt, ffn_ckpt = ckpt(i)
            self.add_module(f"stage{i + 1}", Stage(
                in_dim=embed_dims[i - 1] if i > 0 else c1, dim=embed_dims[i], depth=depths[i],
                num_heads=num_heads[i], window_size=window_size, mul_attn_ratio=mul_attn_ratio,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop_path=rates[starts[i]:starts[i + 1]], reshape=reshapes[i], pa_frames=pa_frames,
                deformable_groups=deformable_groups, max_residue_magnitude=10 / scales[i],
                use_checkpoint_attn=attn_ckpt, use_checkpoint_ffn=ffn_ckpt,
                checkpoint_self_attn=checkpoint_self_attn))

        c7, c8 = embed_dims[6], embed_dims[7]
        stage8: list[nn.Module] = [nn.Sequential(ToChannelsLast(), nn.LayerNorm(c7), nn.Linear(c7, c8),
                                                 ToChannelsFirst())]
        for i in range(7, n):
            attn_ckpt, ffn_ckpt = ckpt(i)
            win = (1, window_size[1], window_size[2]) if i in indep_reconsts else tuple(window_size)
            stage8.append(RTMSA(embed_dims[i], depths[i], num_heads[i], window_size=win,
                                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                drop_path=rates[starts[i]:starts[i + 1]],
                                use_checkpoint_attn=attn_ckpt, use_checkpoint_ffn=ffn_ckpt))
        self.stage8 = nn.ModuleList(stage8)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.conv_after_body = nn.Linear(embed_dims[-1], c1)    # a Linear, despite the name
        self.conv_last = nn.Conv3d(c1, out_chans, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self._init_linear_and_norm()
        self.set_fused_attention(fused_attention)
        self.set_deform_impl(deform_impl)

    def set_fused_attention(self, fused: bool = True) -> "VRT":
        """Switch every WindowAttention between SDPA and the explicit formula (same function)."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.fused = fused
        return self

    def set_deform_impl(self, impl: str = "auto") -> "VRT":
        """Switch every flow-guided deformable conv between 'auto', 'sampling' and 'torchvision'."""
        if impl not in DEFORM_IMPLS:
            raise ValueError(f"deform_impl must be one of {DEFORM_IMPLS}, got {impl!r}")
        for m in self.modules():
            if isinstance(m, DCNv2PackFlowGuided):
                m.deform_impl = impl
        return self

    def _init_linear_and_norm(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- inputs ----------------------------------------------------------------------------

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for inputs the network cannot process."""
        if x.ndim != 5 or x.shape[2] != self.in_chans:
            raise ValueError(f"expected [B, T, {self.in_chans}, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if crop_size_problem(h) or crop_size_problem(w):
            raise ValueError(f"H and W must each be {crop_size_rule()}, got {h}x{w}; "
                             "use model.nets.vrt_tiling.padded_forward for other sizes")
        if x.shape[1] < 2:
            raise ValueError("need at least 2 frames")

    def get_flows(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """SpyNet flows between neighbouring frames at scales 1, 1/2, 1/4, 1/8.

        ``flows_backward[s][:, t]`` warps frame t+1 onto frame t; ``flows_forward[s][:, t]`` warps
        frame t onto frame t+1. Both directions run as one SpyNet batch.
        """
        b, t, c, h, w = x.shape
        x1 = x[:, :-1].reshape(-1, c, h, w)
        x2 = x[:, 1:].reshape(-1, c, h, w)
        flows = self.spynet(torch.cat([x1, x2], 0), torch.cat([x2, x1], 0))
        backward, forward = [], []
        for i, f in enumerate(flows):
            f = f.reshape(2, b, t - 1, 2, h // 2 ** i, w // 2 ** i)
            backward.append(f[0])
            forward.append(f[1])
        return backward, forward

    @staticmethod
    def align_input(x: Tensor, flow_backward: Tensor, flow_forward: Tensor) -> Tensor:
        """``[frame, frame t+1 warped to t, frame t-1 warped to t]`` with nearest4 warping (27 ch)."""
        b, t, c, h, w = x.shape
        zeros = x.new_zeros(b, 1, 4 * c, h, w)
        nb = torch.cat([x[:, 1:], x[:, :-1]], 0).reshape(-1, c, h, w)
        fl = torch.cat([flow_backward, flow_forward], 0).reshape(-1, 2, h, w)
        warped = flow_warp(nb, fl.permute(0, 2, 3, 1), interp_mode="nearest4")
        warped = warped.reshape(2 * b, t - 1, 4 * c, h, w)
        bwd = torch.cat([warped[:b], zeros], dim=1)
        fwd = torch.cat([zeros, warped[b:]], dim=1)
        return torch.cat([x, bwd, fwd], dim=2)

    # -- body ------------------------------------------------------------------------------

    def _reconstruct_features(self, x: Tensor) -> Tensor:
        for layer in self.stage8:
            x = layer(x)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def _head_input(self, x_first: Tensor, feat: Tensor) -> Tensor:
        """``conv_last``'s input: the body residual ``x_first + conv_after_body(feat)``, ``[B, C_1, T, H, W]``."""
        return x_first + self.conv_after_body(feat.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def head_output(self, h: Tensor, x_lq: Tensor) -> Tensor:
        """The restored clip from the reconstruction features ``h``: ``conv_last(h) + x_lq``, ``[B, T, 3, H, W]``."""
        return self.conv_last(h).transpose(1, 2) + x_lq

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T, 3, H, W]`` blurry clip in [0, 1] -> restored clip of the same shape: ``decode(encode(x))``,
        the one place the stages are wired (the fusion seam replaces ``encode``'s features between the two)."""
        return self.decode(self.encode(x))

    # -- encoder / decoder split (fusion integration point) ---------------------------------

    def encode(self, x: Tensor) -> VRTEncoded:
        """Run through stage 4. ``feats[i]`` = output of stage i+1 as ``[B, T, C, H/2^i, W/2^i]``."""
        self.check_input(x)
        fb, ff = self.get_flows(x)
        x_first = self.conv_first(self.align_input(x, fb[0], ff[0]).transpose(1, 2))
        x1 = self.stage1(x_first, fb[0], ff[0])
        x2 = self.stage2(x1, fb[1], ff[1])
        x3 = self.stage3(x2, fb[2], ff[2])
        x4 = self.stage4(x3, fb[3], ff[3])
        feats = [f.transpose(1, 2) for f in (x1, x2, x3, x4)]
        return VRTEncoded(feats=feats, x_lq=x, x_first=x_first, flows_backward=fb, flows_forward=ff)

    def decode(self, state: VRTEncoded, feats: Sequence[Tensor] | None = None) -> Tensor:
        """Stages 5-8 and the head. ``feats`` (default ``state.feats``) replace x1..x4 everywhere
        the decoder uses them: stage 5 input (x4) and the skips into stages 6, 7 and 8 (x3, x2, x1).
        """
        return self.head_output(self.decode_head_input(state, feats), state.x_lq)

    def decode_head_input(self, state: VRTEncoded, feats: Sequence[Tensor] | None = None) -> Tensor:
        """``decode`` up to ``conv_last``'s input ``[B, C_1, T, H, W]`` (the reconstruction features h):
        ``decode(state, feats) == head_output(h, state.x_lq)``."""
        feats = state.feats if feats is None else list(feats)
        if len(feats) != 4:
            raise ValueError(f"decode needs 4 features, got {len(feats)}")
        for i, (f, ref) in enumerate(zip(feats, state.feats)):
            if f.shape != ref.shape:
                raise ValueError(f"feature {i + 1}: shape {tuple(f.shape)} != encoder's {tuple(ref.shape)}")
        x1, x2, x3, x4 = (f.transpose(1, 2) for f in feats)
        fb, ff = state.flows_backward, state.flows_forward
        x = self.stage5(x4, fb[2], ff[2])
        x = self.stage6(x + x3, fb[1], ff[1])
        x = self.stage7(x + x2, fb[0], ff[0])
        x = x + x1
        return self._head_input(state.x_first, self._reconstruct_features(x))

    def feature_dims(self) -> list[int]:
        """Channels of Fr_1..Fr_4."""
        return [self.stage1.linear1.out_features, self.stage2.linear1.out_features,
                self.stage3.linear1.out_features, self.stage4.linear1.out_features]


# ----------------------------------------------------------------------------------------------
# Official checkpoints
# ----------------------------------------------------------------------------------------------


class StateDictMismatchError(KeyError):
    """Raised when a checkpoint does not match the model key-for-key and shape-for-shape."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _summarise(names: Iterable[str], limit: int = 30) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def official_to_ours(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Turn a loaded official checkpoint into a state_dict for :class:`VRT`.

    Uses ``checkpoint['params']`` when present (the release format), else the whole mapping. Our
    module names equal the official ones, so keys map onto themselves.
    """
    sd = checkpoint["params"] if "params" in checkpoint else checkpoint
    if not isinstance(sd, Mapping):
        raise TypeError(f"checkpoint['params'] is {type(sd).__name__}, not a mapping")
    return {str(k): v for k, v in sd.items()}


def check_state_dict(expected: Mapping[str, Tensor], given: Mapping[str, Any],
                     optional: Iterable[str] = (), what: str = "checkpoint") -> None:
    """Raise :class:`StateDictMismatchError` naming missing, unexpected and mis-shaped keys."""
    optional = set(optional)
    missing = [k for k in expected if k not in given and k not in optional]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in given and isinstance(given[k], Tensor)
              and tuple(given[k].shape) != tuple(expected[k].shape)]
    not_tensors = [k for k in expected if k in given and not isinstance(given[k], Tensor)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_summarise(shapes)}")
    if not_tensors:
        problems.append(f"non-tensor values: {_summarise(not_tensors)}")
    if problems:
        raise StateDictMismatchError(f"{what} does not match the model: " + "; ".join(problems))


def _torch_load(path: str | os.PathLike, map_location: str | torch.device) -> Mapping[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (weights are never downloaded; fetch them first)")
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def load_official(path: str | os.PathLike, model: VRT | None = None, *,
                  map_location: str | torch.device = "cpu") -> VRT:
    """Strictly load an official VRT checkpoint (e.g. ``006_VRT_videodeblurring_GoPro.pth``).

    Args:
        path: local ``.pth`` file, with or without the ``'params'`` wrapper.
        model: model to load into; default a fresh :func:`vrt_deblur`.
        map_location: where tensors are loaded.

    Raises:
        StateDictMismatchError: a missing, unexpected or mis-shaped key (all are named).
    """
    sd = official_to_ours(_torch_load(path, map_location))
    model = vrt_deblur() if model is None else model
    check_state_dict(model.state_dict(), sd, what=str(path))
    model.load_state_dict(sd, strict=True)
    return model


def load_spynet(spynet: SpyNet, path: str | os.PathLike, *,
                map_location: str | torch.device = "cpu") -> SpyNet:
    """Strictly load SpyNet weights.

    Accepts the official SpyNet file (``{'params': {'basic_module.*'}}``, without mean/std), a bare
    SpyNet state_dict, or a full VRT checkpoint (its ``spynet.*`` entries are used). ``mean`` and
    ``std`` are optional (the official SpyNet file lacks them); every conv weight must be present.
    """
    sd = official_to_ours(_torch_load(path, map_location))
    if any(k.startswith("spynet.") for k in sd):
        sd = {k[len("spynet."):]: v for k, v in sd.items() if k.startswith("spynet.")}
    expected = spynet.state_dict()
    check_state_dict(expected, sd, optional=("mean", "std"), what=f"SpyNet weights {path}")
    spynet.load_state_dict(sd, strict=False)   # strictness checked above (mean/std optional)
    return spynet


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------

#: Official arguments of the deblurring models 005 (DVD), 006 (GoPro), 007 (REDS).
VRT_DEBLUR_ARGS: dict[str, Any] = dict(
    upscale=1,
    img_size=(6, 192, 192),
    window_size=(6, 8, 8),
    depths=(8, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4),
    indep_reconsts=(9, 10),
    embed_dims=(96,) * 7 + (120,) * 4,
    num_heads=(6,) * 11,
    pa_frames=2,
    deformable_groups=16,
    mul_attn_ratio=0.75,
    mlp_ratio=2.0,
    qkv_bias=True,
    qk_scale=None,
    drop_path_rate=0.2,
)

#: Small model for CPU tests: the official topology (7 stages + 4 RTMSAs, a mutual and a self group
#: per stage) at narrow widths. Window (2, 8, 8) so that 5- and 6-frame clips exercise temporal
#: padding, shifting and masking; 3 blocks per stage with ratio 2/3 give 2 mutual blocks (one
#: shifted) and 1 self block; the 2-block RTMSAs each have a shifted block. 64x64 is the smallest
#: valid frame size.
VRT_TINY_ARGS: dict[str, Any] = dict(
    upscale=1,
    img_size=(6, 64, 64),
    window_size=(2, 8, 8),
    depths=(3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2),
    indep_reconsts=(9, 10),
    embed_dims=(16,) * 7 + (24,) * 4,
    num_heads=(2,) * 11,
    pa_frames=2,
    deformable_groups=4,
    mul_attn_ratio=2 / 3,
    mlp_ratio=2.0,
    qkv_bias=True,
    qk_scale=None,
    drop_path_rate=0.0,
)


def vrt_deblur(**overrides: Any) -> VRT:
    """VRT with the official video-deblurring arguments (18,320,007 parameters); ``overrides`` win."""
    return VRT(**{**VRT_DEBLUR_ARGS, **overrides})


def vrt_tiny(**overrides: Any) -> VRT:
    """Tiny VRT for CPU tests (forward+backward of a 5x64x64 clip in seconds); ``overrides`` win."""
    return VRT(**{**VRT_TINY_ARGS, **overrides})


# The one registry of VRT presets (MODEL.VRT_CFG names them; model/configs/vrt/*.yaml derive from them).
VRT_PRESETS = {"deblur": vrt_deblur, "tiny": vrt_tiny}


def vrt_from_config(config: str | os.PathLike | Mapping[str, Any]) -> VRT:
    """Build a VRT from a preset name plus constructor overrides.

    ``config`` is a mapping or a YAML file (see ``model/configs/vrt/*.yaml``) of the form
    ``{preset: deblur | tiny, overrides: {<VRT keyword>: value, ...}}``. Unknown top-level keys or
    constructor arguments are errors that name them.
    """
    if not isinstance(config, Mapping):
        from schemas.config import load_yaml_text, read_config_text

        config = load_yaml_text(read_config_text(config), str(config)) or {}
    unknown = set(config) - {"preset", "overrides"}
    if unknown:
        raise ValueError(f"unknown VRT config keys: {sorted(unknown)}")
    preset = config.get("preset", "deblur")
    if preset not in VRT_PRESETS:
        raise ValueError(f"unknown VRT preset {preset!r}; choose from {sorted(VRT_PRESETS)}")
    overrides = dict(config.get("overrides") or {})
    import inspect

    allowed = set(inspect.signature(VRT.__init__).parameters) - {"self"}
    bad = set(overrides) - allowed
    if bad:
        raise ValueError(f"unknown VRT arguments: {sorted(bad)}")
    for key, value in overrides.items():
        if isinstance(value, list):
            overrides[key] = tuple(value)
    return VRT_PRESETS[preset](**overrides)
