"""Reference models for the spike ablation: what is learnable in the same steps without VRT.

They are trained by the trainer (``model.train.main``, whose ``model_builder`` ``benchmarks/spike_ablation.py``
sets to build one of them in place of ``SpikeVRT``), so they see the same Dataset crops, optimiser, schedule,
loss and validation, and their reports carry the same spike-reliance probes:

* ``SmallCNN``: 4 layers of 3x3 convolutions (32 channels, ReLU) on (blur RGB, K voxels) per frame, residual
  on the blur; ``use_spike=False`` gives the same CNN on the blur alone.
* ``EncoderHead``: the spike branch's own SpikeEncoder3D (scale 1) and temporal self-attention, with a 3x3
  convolution on (Fs'_1, blur) as its head, residual on the blur.
"""
from __future__ import annotations

import torch
from torch import nn

from model.nets.spike_encoder3d import ScaleGeometry, SpikeEncoder3D
from model.nets.spike_temporal_sa import TemporalSelfAttentionBlock


class _Reference(nn.Module):
    """What the trainer, validation and tiled inference need of a model."""

    use_spike: bool = True
    num_bins: int

    def _check_spike(self, blur: torch.Tensor, spike_vox: torch.Tensor | None) -> torch.Tensor:
        b, t, _, h, w = blur.shape
        if spike_vox is None or tuple(spike_vox.shape) != (b, t, self.num_bins, h, w):
            raise ValueError(f"spike_vox must be {(b, t, self.num_bins, h, w)}")
        return spike_vox

    def spike_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters()) if self.use_spike else []


class SmallCNN(_Reference):
    """``blur + CNN([blur, spike_vox])`` per frame; 4 conv layers of ``width`` channels."""

    def __init__(self, num_bins: int, *, use_spike: bool = True, width: int = 32, layers: int = 4):
        super().__init__()
        self.use_spike, self.num_bins = use_spike, num_bins
        cin = 3 + (num_bins if use_spike else 0)
        mods: list[nn.Module] = []
        for i in range(layers):
            last = i == layers - 1
            mods.append(nn.Conv2d(cin if i == 0 else width, 3 if last else width, 3, padding=1))
            if not last:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)

    def forward(self, blur: torch.Tensor, spike_vox: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c, h, w = blur.shape
        x = blur.reshape(b * t, c, h, w)
        if self.use_spike:
            x = torch.cat([x, self._check_spike(blur, spike_vox).reshape(b * t, -1, h, w)], 1)
        return blur + self.net(x).reshape(b, t, 3, h, w)


class EncoderHead(_Reference):
    """``blur + conv3x3([TSA(SpikeEncoder3D(spike_vox))_1, blur])``: the spike branch without VRT."""

    def __init__(self, num_bins: int, *, channels: int = 16, heads: int = 4):
        super().__init__()
        self.num_bins = num_bins
        self.encoder = SpikeEncoder3D(num_bins=num_bins, channels_per_scale=[channels],
                                      geometry=[ScaleGeometry(channels)])
        self.tsa = TemporalSelfAttentionBlock(channels, heads)
        self.head = nn.Conv2d(channels + 3, 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, blur: torch.Tensor, spike_vox: torch.Tensor | None = None) -> torch.Tensor:
        f = self.tsa(self.encoder(self._check_spike(blur, spike_vox))[0])
        b, t, _, h, w = blur.shape
        x = torch.cat([f, blur], 2).reshape(b * t, -1, h, w)
        return blur + self.head(x).reshape(b, t, 3, h, w)
