"""Charbonnier loss (original section 10.4): mean(sqrt((x - y)^2 + eps^2)), eps = 1e-3."""
from __future__ import annotations

import torch
from torch import nn


class CharbonnierLoss(nn.Module):
    """Smooth L1-like reconstruction loss over all elements (any shape, e.g. ``[B, T, 3, H, W]``)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar ``mean(sqrt((x - y)^2 + eps^2))`` over all elements of equally shaped ``x`` and ``y``."""
        return torch.mean(torch.sqrt((x - y) ** 2 + self.eps ** 2))
