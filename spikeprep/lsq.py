"""The least-squares baseline fitted on a store's split (DESIGN section 8).

The map itself, one linear map from ``(K counts, blur R, G, B, 1)`` to sharp RGB, is numpy
(``spikeprep.baselines``: ``LsqAccumulator``, ``lsq_restore``, beside TFP and TFI). This module feeds it the
kept frames of a split, read as the stored counts by the one store reader (the Dataset with
``voxels="counts"``), each frame once: the fit ``spikeprep baselines`` reports and the fitted spike head's
start (``FittedSpikeHead.fit_start``, called by the trainer) are the same normal equations. No arithmetic
here runs in torch.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeprep.baselines import GATE_BOX, LsqAccumulator, fit_gate, lsq_features, luma
from spikeprep.images import LUMA_601
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, val_frames


def counts_dataset(root: Path, split: str, clip_len: int = 1) -> SpikeDeblurDataset:
    """The validation Dataset of ``split`` serving stored counts (native spike grid) and float RGB frames."""
    return SpikeDeblurDataset(root, split, clip_len=clip_len, train=False, voxels="counts")


def item_frame(item: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts [K, Hs, Ws], blur [3, H, W], sharp [3, H, W])`` of the frame at clip position ``k`` of a
    ``counts_dataset`` item, as numpy arrays."""
    return item["spike_counts"][k].numpy(), item["blur"][k].numpy(), item["sharp"][k].numpy()


def dataset_frames(ds: SpikeDeblurDataset) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(seq, counts, blur, sharp)`` of every kept frame of the ``counts_dataset`` ``ds``, once each."""
    for _, item, new in val_frames(ds):
        for k, _ in new:
            yield (item["meta"]["seq"], *item_frame(item, k))


def kept_frames(root: Path, split: str) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(seq, counts [K, Hs, Ws], blur [3, H, W], sharp [3, H, W])`` for every kept frame of ``split``, once each."""
    return dataset_frames(counts_dataset(root, split, 1))


def split_frames(root: Path, split: str, totals_only: bool = False
                 ) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``kept_frames``, with ``totals_only`` each pixel's K counts replaced by their mean (what a
    DATA.TOTALS_ONLY arm reads), so a map fitted on them can use the spike total but not its timing."""
    for seq, counts, blur, sharp in kept_frames(root, split):
        if totals_only:
            counts = np.broadcast_to(counts.mean(axis=0, keepdims=True), counts.shape)
        yield seq, counts, blur, sharp


def lsq_accumulate(root: Path, split: str, progress=None, totals_only: bool = False,
                   taps: int = 1) -> tuple[LsqAccumulator, int]:
    """The normal equations of the least-squares map over every kept frame of ``split``: ``(accumulator,
    frames)``. ``totals_only``: as ``split_frames``. ``taps``: the counts' neighbourhood
    (``spikeprep.baselines.lsq_features``). ``progress``: a bar with ``update(1)``, advanced per frame."""
    acc = None
    frames = 0
    for _, counts, blur, sharp in split_frames(root, split, totals_only):
        acc = acc or LsqAccumulator(counts.shape[0], taps)
        acc.add(counts, blur, sharp)
        frames += 1
        if progress is not None:
            progress.update(1)
    return (acc or LsqAccumulator(counts_dataset(root, split, 1).num_bins, taps)), frames


def fit_lsq(root: Path, split: str, progress=None) -> tuple[np.ndarray, int]:
    """The least-squares map fitted on every kept frame of ``split``: ``(coefficients [K + 4, 3], frames)``."""
    acc, frames = lsq_accumulate(root, split, progress)
    return acc.solve(), frames


@dataclass(frozen=True)
class GatedLsq:
    """The gated least-squares map of a split (``spikeprep.baselines``, "gated least squares"): the map's
    coefficients ``coef [K * taps**2 + 4, 3]`` over the counts' ``taps x taps`` neighbourhood, and the gate's
    ``slope`` and ``threshold`` on ``box x box`` windows."""

    coef: np.ndarray
    slope: float
    threshold: float
    box: int


def fit_gated_lsq(root: Path, split: str, acc: LsqAccumulator, totals_only: bool = False,
                  box: int = GATE_BOX, charbonnier_eps: float | None = None) -> GatedLsq:
    """The gated least-squares map of ``split``: the map solved from ``acc`` (``lsq_accumulate`` of the same
    split, ``totals_only`` and taps), then the gate fitted on its luma corrections (``fit_gate``) in a second
    pass over the frames (``charbonnier_eps``: as ``fit_gate``). ``ValueError`` when ``acc`` holds no frame."""
    coef = acc.solve()
    luma_coef = coef @ np.asarray(LUMA_601, np.float64)
    corrections, blur_luma, sharp_luma = [], [], []
    for _, counts, blur, sharp in split_frames(root, split, totals_only):
        yb = luma(blur)
        corrections.append((lsq_features(counts, blur, acc.taps) @ luma_coef).reshape(yb.shape) - yb)
        blur_luma.append(yb)
        sharp_luma.append(luma(sharp))
    slope, threshold = fit_gate(corrections, blur_luma, sharp_luma, box, charbonnier_eps=charbonnier_eps)
    return GatedLsq(coef, slope, threshold, box)
