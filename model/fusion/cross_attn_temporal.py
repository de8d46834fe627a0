"""Final fusion by temporal cross-attention (original sections 5.4 and 10.2).

Per pixel, the RGB features Fr_i query the spike features Fs'_i along time:
Q = LN_q(Fr), K = V = LN_kv(Fs'), X = Q + MHA(Q, K, V), X = X + FFN(LN(X)). The residual is taken on the
normalised query, exactly as section 10.2 writes it. No channel change, no 1x1, no gate.
"""
from __future__ import annotations

import torch
from torch import nn

from model.spike_temporal_sa import attend_per_pixel, from_pixel_sequences, to_pixel_sequences


class TemporalCrossAttnFuse(nn.Module):
    """Ff = fuse(Fr, Fs'); all three ``[B, T, C, H, W]``.

    Args:
        dim: C, the channels of this scale.
        heads: attention heads (MODEL.FUSE.HEADS, 4 by default).
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True, dropout=0.0)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        """``fr`` (Fr_i, the query) and ``fs`` (Fs'_i, keys and values), both ``[B, T, C, H, W]`` ->
        Ff_i ``[B, T, C, H, W]``; attention runs along T, independently per pixel. Unequal shapes raise."""
        if fr.shape != fs.shape:
            raise RuntimeError(f"fusion needs equal shapes, got Fr {tuple(fr.shape)} and Fs' {tuple(fs.shape)}")
        q = self.ln_q(to_pixel_sequences(fr))
        kv = self.ln_kv(to_pixel_sequences(fs))
        x = q + attend_per_pixel(self.attn, q, kv)
        x = x + self.ffn(self.ln_ffn(x))
        return from_pixel_sequences(x, fr.shape)
