"""The spike head: spikes reach the restored frame directly (``FUSE.TYPE: ResidualTemporalCrossAttnSpikeHead``).

VRT restores a frame as ``blur + conv_last(h)``, ``h = conv_first(aligned input) + conv_after_body(stages
1-8)``: every feature the fusion changes must cross stages 5-8 and the head before it touches the output.
Within the steps a CPU (or a short GPU run) gives, those stages barely move (README, "Why the spikes did
not count"), so spikes fused only there cannot show. The spike head adds a short, zero-initialised path
beside VRT's head, per frame at full resolution::

    recon = blur + conv_last(h) + [conv3x3(Fs'_1) + conv3x3(spike_vox) + conv3x3(h)]  (one channel, added to R, G, B)

with Fs'_1 the spike branch's full-resolution features (after its temporal self-attention), spike_vox the
normalised voxels themselves and h VRT's reconstruction features. Spikes are monochrome (a spike camera
integrates luma), so the head predicts a luma correction, the same for the three channels; colour stays
VRT's (adding d to R, G and B adds d to Rec.601 luma, whose weights sum to 1). The three convolutions start
at zero, so the spike arm's output equals plain VRT's at initialisation.
"""
from __future__ import annotations

import torch
from torch import nn


class SpikeHead(nn.Module):
    """``(Fs'_1, spike_vox, h)`` -> a luma correction ``[B, T, 1, H, W]`` (added to every RGB channel); zero at
    initialisation.

    Args:
        spike_channels: C_1 of Fs'_1.
        num_bins: K of the voxels.
        head_channels: channels of VRT's reconstruction features h (conv_last's input, C_1).
    """

    def __init__(self, spike_channels: int, num_bins: int, head_channels: int):
        super().__init__()
        out_channels = 1
        self.from_spike_features = nn.Conv2d(spike_channels, out_channels, 3, padding=1)
        self.from_voxels = nn.Conv2d(num_bins, out_channels, 3, padding=1, bias=False)
        self.from_vrt = nn.Conv2d(head_channels, out_channels, 3, padding=1, bias=False)
        for conv in (self.from_spike_features, self.from_voxels, self.from_vrt):
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, fs1: torch.Tensor, spike_vox: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``fs1 [B, T, C, H, W]``, ``spike_vox [B, T, K, H, W]``, ``h [B, C_h, T, H, W]`` (conv3d layout,
        as VRT holds it) -> ``[B, T, 1, H, W]``."""
        b, t, _, height, width = fs1.shape
        flat = lambda x: x.reshape(b * t, -1, height, width)  # noqa: E731
        out = (self.from_spike_features(flat(fs1)) + self.from_voxels(flat(spike_vox))
               + self.from_vrt(flat(h.transpose(1, 2))))
        return out.reshape(b, t, -1, height, width)
