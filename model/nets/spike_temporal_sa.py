"""Spike-branch temporal self-attention (original section 5.2 and 10.1).

At every pixel (h, w) the spike features attend only along time: ``[B, T, C, H, W]`` is regrouped as
``[B*H*W, T, C]`` sequences. One pre-LN block: LN -> MultiheadAttention(C, heads, dropout 0) -> residual,
LN -> MLP(C -> 2C -> C, GELU) -> residual. No positional encoding, no gating (original section 0.3).
"""
from __future__ import annotations

import torch
from torch import nn


def to_pixel_sequences(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, H, W]`` -> ``[B*H*W, T, C]``: one length-T sequence per pixel."""
    b, t, c, h, w = x.shape
    return x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)


# Sequences per attention call. One sequence per pixel makes the batch huge (B*H*W = 131,072 for two
# 256x256 clips), and CUDA's fused attention kernels fail on such batches (cuDNN's backward reports a
# failed graph execution at batch x heads = 262,144); chunks keep every call well inside their grid
# limits. Sequences are independent, so the result is the same.
MAX_SEQUENCES_PER_CALL = 8192


def attend_per_pixel(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
                     max_sequences: int = MAX_SEQUENCES_PER_CALL) -> torch.Tensor:
    """``attn(q, kv, kv)`` on ``[N, T, C]`` pixel sequences, in chunks of at most ``max_sequences``."""
    if q.shape[0] <= max_sequences:
        return attn(q, kv, kv, need_weights=False)[0]
    return torch.cat([attn(qc, kc, kc, need_weights=False)[0]
                      for qc, kc in zip(q.split(max_sequences), kv.split(max_sequences))])


def from_pixel_sequences(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of ``to_pixel_sequences`` for an original ``shape`` ``(B, T, C, H, W)``."""
    b, t, c, h, w = shape
    return x.reshape(b, h, w, t, c).permute(0, 3, 4, 1, 2).contiguous()


class TemporalSelfAttentionBlock(nn.Module):
    """Per-pixel self-attention along T; input and output ``[B, T, C, H, W]``.

    Args:
        dim: C, the channels of this scale (the attention's embed_dim).
        heads: attention heads (MODEL.SPIKE_TSA.HEADS, 4 by default).
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True, dropout=0.0)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fs_i ``[B, T, C, H, W]`` -> Fs'_i ``[B, T, C, H, W]`` (attention along T, per pixel)."""
        shape = x.shape
        x = to_pixel_sequences(x)
        y = self.ln1(x)
        x = x + attend_per_pixel(self.attn, y, y)
        x = x + self.mlp(self.ln2(x))
        return from_pixel_sequences(x, shape)
