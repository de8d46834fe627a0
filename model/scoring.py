"""Scoring restorations the one way (DESIGN section 8): validation, the sensitivity probes, ``spikeprep baselines``.

``FrameScorer``: per frame basicsr's PSNR (RGB, Y) and SSIM (RGB, Y), LPIPS when its weights exist, the same on
the motion-boundary mask and on the static half, averaged into ``schemas.val_report.Metrics`` (``as_metrics``).
Everything that reports a metric scores through it, so their numbers compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.metrics import image_metrics, masked_metrics, mean_metrics, motion_boundary_mask, static_mask
from schemas.val_report import Metrics

BOUNDARY_FRACTION = 0.05   # the motion-boundary mask: the 5% of pixels where sharp and blur differ most
STATIC_FRACTION = 0.5      # the static half: the 50% of pixels where sharp and blur differ least


def as_metrics(rows: list[dict]) -> Metrics:
    """Per-frame metric rows averaged into a ``Metrics`` record."""
    m = mean_metrics(rows)
    return Metrics(frames=len(rows), psnr_rgb=m.get("psnr_rgb"), psnr_y=m.get("psnr_y"), ssim=m.get("ssim"),
                   ssim_y=m.get("ssim_y"), lpips=m.get("lpips"))


@dataclass(frozen=True)
class RegionMasks:
    """A frame's two regions, bool ``[H, W]``: its motion boundaries and its static half."""

    boundary: np.ndarray
    static: np.ndarray


class FrameScorer:
    """Accumulates per-frame metrics of uint8 ``[H, W, 3]`` RGB restorations against their sharp frames.

    Args:
        lpips_metric: a ``model.metrics.LPIPSMetric`` or None (LPIPS then stays None in every record).
        boundary_fraction: the share of pixels in the motion-boundary mask.
        static_fraction: the share of pixels in the static mask.
    """

    def __init__(self, lpips_metric=None, boundary_fraction: float = BOUNDARY_FRACTION,
                 static_fraction: float = STATIC_FRACTION):
        self.lpips_metric = lpips_metric
        self.boundary_fraction = boundary_fraction
        self.static_fraction = static_fraction
        self.rows: dict[str, list[dict]] = {}
        self.boundary_rows: list[dict] = []
        self.static_rows: list[dict] = []

    def mask(self, blur: np.ndarray, sharp: np.ndarray) -> RegionMasks:
        """The frame's motion-boundary and static masks (compute once when several restorations share a frame)."""
        return RegionMasks(boundary=motion_boundary_mask(blur, sharp, self.boundary_fraction),
                           static=static_mask(blur, sharp, self.static_fraction))

    def _region(self, recon: np.ndarray, sharp: np.ndarray, mask: np.ndarray) -> dict:
        row = masked_metrics(recon, sharp, mask)      # every value None on an empty mask
        if self.lpips_metric is not None:
            row["lpips"] = float(self.lpips_metric.distance_map(recon, sharp)[mask].mean()) if mask.any() else None
        return row

    def add(self, seq: str, recon: np.ndarray, sharp: np.ndarray, masks: RegionMasks) -> None:
        """Score one frame of sequence ``seq``; ``masks`` from ``FrameScorer.mask(blur, sharp)``."""
        row = image_metrics(recon, sharp)
        if self.lpips_metric is not None:
            row["lpips"] = float(self.lpips_metric(recon, sharp))
        self.rows.setdefault(seq, []).append(row)
        self.boundary_rows.append(self._region(recon, sharp, masks.boundary))
        self.static_rows.append(self._region(recon, sharp, masks.static))

    def overall(self) -> Metrics:
        """Mean over every scored frame."""
        return as_metrics([r for rs in self.rows.values() for r in rs])

    def boundary(self) -> Metrics:
        """Mean over every scored frame of the metrics on its motion-boundary mask."""
        return as_metrics(self.boundary_rows)

    def static(self) -> Metrics:
        """Mean over every scored frame of the metrics on its static half."""
        return as_metrics(self.static_rows)

    def per_sequence(self) -> dict[str, Metrics]:
        """Mean per sequence."""
        return {seq: as_metrics(rs) for seq, rs in self.rows.items()}
