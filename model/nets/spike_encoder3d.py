"""SpikeEncoder3D: a 3-D convolutional pyramid over spike voxels (DESIGN section 7, original section 5.1).

Input ``[B, T, K, H, W]`` (clip frame, voxel time bin, row, column) is read as a 3-D volume over
``(T, H, W)`` with the ``K`` bins as channels. Scale 1: conv3d K -> C_1 (3x3x3) + ReLU and two residual
3-D blocks. Each further scale: a strided conv3d C_{i-1} -> C_i + ReLU and two residual blocks. Only
Conv3D and residual additions (original section 5.1: no attention here).

The strides are not hard-coded: they are the ratios between consecutive scales of the backbone's
geometry (``ScaleGeometry``), so the spike features Fs_i have exactly Fr_i's shape. VRT keeps T at every
scale and halves H and W, hence strides (1, 2, 2); the original document's time-only downsampling would
break the fusion (DESIGN section 9, point 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ScaleGeometry:
    """One backbone scale: channels and the total down-sampling of (T, H, W) relative to the input."""

    channels: int
    t_factor: int = 1
    h_factor: int = 1
    w_factor: int = 1

    def shape_for(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        """(T_i, C_i, H_i, W_i) of this scale's features for an input of T x H x W (ceil division)."""
        return (-(-t // self.t_factor), self.channels, -(-h // self.h_factor), -(-w // self.w_factor))


def strides_between(geometry: list[ScaleGeometry]) -> list[tuple[int, int, int]]:
    """Per-scale conv3d strides (for scales 2..L) from the backbone's per-scale factors."""
    strides = []
    for prev, cur in zip(geometry, geometry[1:]):
        ratio = []
        for a, b, axis in ((prev.t_factor, cur.t_factor, "T"), (prev.h_factor, cur.h_factor, "H"),
                           (prev.w_factor, cur.w_factor, "W")):
            if b % a:
                raise ValueError(f"backbone {axis} factor goes {a} -> {b}: not an integer down-sampling")
            ratio.append(b // a)
        strides.append(tuple(ratio))
    return strides


class ResBlock3D(nn.Module):
    """x + conv3d(ReLU(conv3d(x))), then ReLU; 3x3x3 kernels, channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` (conv3d layout) -> the same shape."""
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class SpikeEncoder3D(nn.Module):
    """Spike voxels ``[B, T, K, H, W]`` -> features ``[B, T_i, C_i, H_i, W_i]`` for every backbone scale.

    Args:
        num_bins: K, the voxel time bins (input channels).
        channels_per_scale: C_i from the config (MODEL.CHANNELS_PER_SCALE); must equal the backbone's.
        geometry: the backbone's per-scale ``ScaleGeometry`` (channels and down-sampling factors).
        blocks_per_scale: residual 3-D blocks per scale (2, original section 5.1).
    """

    def __init__(self, *, num_bins: int, channels_per_scale: list[int], geometry: list[ScaleGeometry],
                 blocks_per_scale: int = 2):
        super().__init__()
        if len(channels_per_scale) != len(geometry):
            raise ValueError(f"MODEL.CHANNELS_PER_SCALE has {len(channels_per_scale)} scales but the backbone "
                             f"has {len(geometry)} (MODEL.LAYERS must match the backbone)")
        for i, (c, g) in enumerate(zip(channels_per_scale, geometry), start=1):
            if c != g.channels:
                raise ValueError(f"scale {i}: MODEL.CHANNELS_PER_SCALE gives {c} channels but the backbone's "
                                 f"Fr_{i} has {g.channels}; set MODEL.CHANNELS_PER_SCALE to "
                                 f"{[g.channels for g in geometry]}")
        if geometry[0].t_factor != 1 or geometry[0].h_factor != 1 or geometry[0].w_factor != 1:
            raise ValueError("the backbone's first scale must be at input resolution")
        self.geometry = list(geometry)
        self.stem = nn.Sequential(nn.Conv3d(num_bins, channels_per_scale[0], 3, padding=1), nn.ReLU(),
                                  *[ResBlock3D(channels_per_scale[0]) for _ in range(blocks_per_scale)])
        self.downs = nn.ModuleList()
        for (c_in, c_out), stride in zip(zip(channels_per_scale, channels_per_scale[1:]),
                                         strides_between(geometry)):
            self.downs.append(nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(),
                                            *[ResBlock3D(c_out) for _ in range(blocks_per_scale)]))

    def forward(self, spike_vox: torch.Tensor) -> list[torch.Tensor]:
        """``spike_vox [B, T, K, H, W]`` -> [Fs_1, ..., Fs_L], Fs_i ``[B, T_i, C_i, H_i, W_i]`` as the
        geometry's ``shape_for`` gives (checked; a mismatch raises RuntimeError)."""
        if spike_vox.ndim != 5:
            raise ValueError(f"spike_vox must be [B, T, K, H, W], got shape {tuple(spike_vox.shape)}")
        b, t, _, h, w = spike_vox.shape
        x = self.stem(spike_vox.transpose(1, 2))  # [B, C, T, H, W]: K bins as channels over (T, H, W)
        feats = [x]
        for down in self.downs:
            x = down(x)
            feats.append(x)
        out = [f.transpose(1, 2) for f in feats]  # back to [B, T_i, C_i, H_i, W_i]
        for i, (f, g) in enumerate(zip(out, self.geometry), start=1):
            expected = (b, *g.shape_for(t, h, w))
            if tuple(f.shape) != expected:
                raise RuntimeError(f"Fs_{i} has shape {tuple(f.shape)}, expected {expected}")
        return out


def check_same_shapes(fr: list[torch.Tensor], fs: list[torch.Tensor]) -> None:
    """Run-time check (original section 13.2): every Fs_i has Fr_i's (B, T_i, C_i, H_i, W_i)."""
    if len(fr) != len(fs):
        raise RuntimeError(f"{len(fr)} RGB scales but {len(fs)} spike scales")
    for i, (r, s) in enumerate(zip(fr, fs), start=1):
        if r.shape != s.shape:
            raise RuntimeError(f"scale {i}: Fr_{i} is {tuple(r.shape)} but Fs_{i} is {tuple(s.shape)} "
                               "(B, T_i, C_i, H_i, W_i)")
