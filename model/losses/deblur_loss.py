"""The training loss of the original document (section 6.1): Charbonnier + 0.1 x VGG19 relu3_3, and the
auxiliary spike-branch target of TRAIN.AUX_SPIKE_RECON_WEIGHT (a named departure, off by default)."""
from __future__ import annotations

import os

import torch
from torch import nn

from model.losses.charbonnier import CharbonnierLoss
from model.losses.vgg_perceptual import VGGPerceptualLoss
from spikeprep.images import LUMA_601


def rec601_luma(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB -> ``[..., 1, H, W]`` Rec.601 luma (``spikeprep.images.LUMA_601``), the grey level
    a spike camera integrates."""
    weights = torch.tensor(LUMA_601, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * weights).sum(dim=-3, keepdim=True)


class DeblurLoss(nn.Module):
    """``L = Charbonnier(recon, sharp) + perceptual_weight * VGGPerceptual(recon, sharp)``.

    ``forward`` returns ``(total, terms)`` with the terms as floats for logging. ``perceptual_weight=0``
    drops the perceptual term without loading VGG19 (for machines without its weights); the terms then
    say ``perceptual: None`` so reports can state it was not computed.
    """

    def __init__(self, perceptual_weight: float = 0.1, eps: float = 1e-3,
                 vgg_weights: str | os.PathLike | None = None, aux_spike_recon_weight: float = 0.0):
        super().__init__()
        if perceptual_weight < 0 or aux_spike_recon_weight < 0:
            raise ValueError(f"the weights must be >= 0, got perceptual {perceptual_weight}, "
                             f"aux_spike_recon {aux_spike_recon_weight}")
        self.charbonnier = CharbonnierLoss(eps)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual = VGGPerceptualLoss(vgg_weights) if perceptual_weight > 0 else None
        self.aux_spike_recon_weight = float(aux_spike_recon_weight)

    def forward(self, recon: torch.Tensor, sharp: torch.Tensor,
                aux_luma: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``recon`` and ``sharp`` ``[B, T, 3, H, W]`` RGB in [0, 1] -> ``(loss, terms)``.

        ``loss`` is the scalar total (differentiable); ``terms`` holds floats ``charbonnier``, ``perceptual``
        (None when the perceptual term is off) and ``total``. With ``aux_spike_recon_weight`` > 0,
        ``aux_luma [B, T, 1, H, W]`` (the spike branch's sharp-luma prediction) is required, the total adds
        ``aux_spike_recon_weight x Charbonnier(aux_luma, luma(sharp))`` and ``terms`` holds ``aux_spike_recon``
        (the unweighted Charbonnier); at 0 neither the total nor the terms change.
        """
        charb = self.charbonnier(recon, sharp)
        terms = {"charbonnier": float(charb.detach()), "perceptual": None}
        total = charb
        if self.perceptual is not None:
            perc = self.perceptual(recon, sharp)
            terms["perceptual"] = float(perc.detach())
            total = total + self.perceptual_weight * perc
        if self.aux_spike_recon_weight > 0:
            if aux_luma is None:
                raise ValueError("aux_spike_recon_weight > 0 needs the spike branch's aux_luma prediction")
            aux = self.charbonnier(aux_luma, rec601_luma(sharp))
            terms["aux_spike_recon"] = float(aux.detach())
            total = total + self.aux_spike_recon_weight * aux
        terms["total"] = float(total.detach())
        return total, terms
