"""Final fusion by temporal cross-attention (original sections 5.4 and 10.2), and its residual variant.

Per pixel, the RGB features Fr_i query the spike features Fs'_i along time.

``TemporalCrossAttnFuse`` (``MODEL.FUSE.TYPE: TemporalCrossAttn``, the original's formula):
Q = LN_q(Fr), K = V = LN_kv(Fs'), X = Q + MHA(Q, K, V), X = X + FFN(LN(X)). The residual is taken on the
normalised query, exactly as section 10.2 writes it. No channel change, no 1x1, no gate.

``ResidualTemporalCrossAttnFuse`` (the ``Residual*`` FUSE.TYPEs): the same blocks with the residual on Fr
itself, X = Fr + MHA(LN_q(Fr), LN_kv(Fs'), LN_kv(Fs')), X = X + FFN(LN(X)), and the attention's output
projection and the FFN's last layer zero-initialised, so Ff_i = Fr_i at initialisation: the spike arm
starts as plain VRT. Section 10.2's residual on LN(Fr) hands VRT's decoder unit-variance features where it
was built for Fr (whose scale falls with depth at VRT's initialisation: about 0.2, 4e-5, 2e-8, 8e-9 for
the tiny preset), so the literal fusion is not neutral at step 0 (benchmarks/RESULTS.md, "Why the spikes did not
count").
"""
from __future__ import annotations

import torch
from torch import nn

from model.nets.spike_temporal_sa import attend_per_pixel, from_pixel_sequences, to_pixel_sequences


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


class ResidualTemporalCrossAttnFuse(TemporalCrossAttnFuse):
    """Ff = Fr + MHA(LN_q(Fr), LN_kv(Fs')) + FFN; identity at initialisation (zero output projections).

    Same parameters (and state_dict keys) as ``TemporalCrossAttnFuse``; only the residual and the
    initialisation differ. Args as ``TemporalCrossAttnFuse``.
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__(dim, heads)
        for layer in (self.attn.out_proj, self.ffn[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        """As ``TemporalCrossAttnFuse.forward``, with the residual on ``fr`` itself."""
        if fr.shape != fs.shape:
            raise RuntimeError(f"fusion needs equal shapes, got Fr {tuple(fr.shape)} and Fs' {tuple(fs.shape)}")
        r = to_pixel_sequences(fr)
        x = r + attend_per_pixel(self.attn, self.ln_q(r), self.ln_kv(to_pixel_sequences(fs)))
        x = x + self.ffn(self.ln_ffn(x))
        return from_pixel_sequences(x, fr.shape)
