"""The training loss of the original document (section 6.1): Charbonnier + 0.1 x VGG19 relu3_3."""
from __future__ import annotations

import os

import torch
from torch import nn

from model.losses.charbonnier import CharbonnierLoss
from model.losses.vgg_perceptual import VGGPerceptualLoss


class DeblurLoss(nn.Module):
    """``L = Charbonnier(recon, sharp) + perceptual_weight * VGGPerceptual(recon, sharp)``.

    ``forward`` returns ``(total, terms)`` with the terms as floats for logging. ``perceptual_weight=0``
    drops the perceptual term without loading VGG19 (for machines without its weights); the terms then
    say ``perceptual: None`` so reports can state it was not computed.
    """

    def __init__(self, perceptual_weight: float = 0.1, eps: float = 1e-3,
                 vgg_weights: str | os.PathLike | None = None):
        super().__init__()
        if perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {perceptual_weight}")
        self.charbonnier = CharbonnierLoss(eps)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual = VGGPerceptualLoss(vgg_weights) if perceptual_weight > 0 else None

    def forward(self, recon: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``recon`` and ``sharp`` ``[B, T, 3, H, W]`` RGB in [0, 1] -> ``(loss, terms)``.

        ``loss`` is the scalar total (differentiable); ``terms`` holds floats ``charbonnier``, ``perceptual``
        (None when the perceptual term is off) and ``total``.
        """
        charb = self.charbonnier(recon, sharp)
        terms = {"charbonnier": float(charb.detach()), "perceptual": None}
        total = charb
        if self.perceptual is not None:
            perc = self.perceptual(recon, sharp)
            terms["perceptual"] = float(perc.detach())
            total = total + self.perceptual_weight * perc
        terms["total"] = float(total.detach())
        return total, terms
