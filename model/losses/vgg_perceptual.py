"""VGG19 perceptual loss at relu3_3 (original section 10.5), applied per frame.

Pretrained ImageNet weights are required: a perceptual loss on random weights measures nothing. They come
from torchvision's cache (``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``) or from an explicit
path; nothing is ever downloaded. Without them, ``VGGWeightsUnavailable`` says where to put the file and
how to train without this term.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG19_Weights, vgg19

RELU3_3 = 16  # torchvision's vgg19.features[:16] ends with the ReLU after conv3_3


class VGGWeightsUnavailable(FileNotFoundError):
    """The VGG19 ImageNet weights are not on this machine."""


def vgg19_weights_path(explicit: str | os.PathLike | None = None) -> Path:
    """Where the VGG19 weights are: ``explicit`` if given, else torchvision's cache file."""
    if explicit is not None:
        return Path(explicit)
    name = Path(VGG19_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_vgg19_features(weights_path: str | os.PathLike | None = None) -> nn.Sequential:
    """VGG19 ``features`` with ImageNet weights, read with ``weights_only=True``; never downloads."""
    path = vgg19_weights_path(weights_path)
    if not path.is_file():
        raise VGGWeightsUnavailable(
            f"VGG19 ImageNet weights not found at {path}. Fix: copy torchvision's "
            f"{Path(VGG19_Weights.IMAGENET1K_V1.url).name} ({VGG19_Weights.IMAGENET1K_V1.url}) there "
            "(or point TORCH_HOME at a cache that has it, or pass its path), or train without the "
            "perceptual term (perceptual weight 0); it is never replaced by random weights")
    net = vgg19(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise VGGWeightsUnavailable(f"{path} is not a torchvision VGG19 state_dict ({err})") from None
    return net.features


class VGGPerceptualLoss(nn.Module):
    """Mean squared difference of VGG19 relu3_3 features of ``x`` and ``y`` (RGB in [0, 1]).

    Inputs ``[B, 3, H, W]`` or ``[B, T, 3, H, W]`` (frames are folded into the batch: per-frame features).
    The network is frozen and kept in eval mode.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        self.slice = nn.Sequential(*list(load_vgg19_features(weights_path).children())[:RELU3_3])
        for p in self.slice.parameters():
            p.requires_grad_(False)
        self.slice.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        """``nn.Module.train``, except that the VGG slice always stays in eval mode; returns ``self``."""
        super().train(mode)
        self.slice.eval()  # VGG has no dropout/BN in features, but keep it frozen whatever the caller does
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar mean squared difference of the relu3_3 features of ``x`` and ``y``: ``[B, 3, H, W]`` or
        ``[B, T, 3, H, W]``, RGB in [0, 1] (ImageNet-normalised here)."""
        if x.ndim == 5:
            x, y = x.flatten(0, 1), y.flatten(0, 1)
        x = (x - self.mean) / self.std
        y = (y - self.mean) / self.std
        return torch.mean((self.slice(x) - self.slice(y)) ** 2)
