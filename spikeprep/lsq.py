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
from pathlib import Path

import numpy as np

from spikeprep.baselines import LsqAccumulator
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


def lsq_accumulate(root: Path, split: str, progress=None, totals_only: bool = False) -> tuple[LsqAccumulator, int]:
    """The normal equations of the least-squares map over every kept frame of ``split``: ``(accumulator,
    frames)``. ``totals_only``: each pixel's K counts replaced by their mean (what a DATA.TOTALS_ONLY arm's
    fitted head reads), so the map can use the spike total but not its timing. ``progress``: a bar with
    ``update(1)``, advanced per frame."""
    ds = counts_dataset(root, split, 1)
    acc = LsqAccumulator(ds.num_bins)
    frames = 0
    for _, counts, blur, sharp in dataset_frames(ds):
        if totals_only:
            counts = np.broadcast_to(counts.mean(axis=0, keepdims=True), counts.shape)
        acc.add(counts, blur, sharp)
        frames += 1
        if progress is not None:
            progress.update(1)
    return acc, frames


def fit_lsq(root: Path, split: str, progress=None) -> tuple[np.ndarray, int]:
    """The least-squares map fitted on every kept frame of ``split``: ``(coefficients [K + 4, 3], frames)``."""
    acc, frames = lsq_accumulate(root, split, progress)
    return acc.solve(), frames
