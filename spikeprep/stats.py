"""Normalisation statistics of the served voxels: exact MEAN/STD of ``log1p(count)`` (DESIGN section 3).

Counts are small non-negative integers, so a histogram of count values over all voxels of all kept
paired training frames determines the moments exactly: mean = sum_c n_c log1p(c) / N and
var = sum_c n_c (log1p(c) - mean)^2 / N (population variance), each sum taken with ``math.fsum``
(correctly rounded), so the result does not depend on frame order or chunking.

Ingest and audit keep one histogram per stored frame, keyed by ``(split, seq, frame_idx)`` (a train
and a val sequence may share a name), and ``stats_from_records`` sums those of the kept training frames.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from schemas.atomic import atomic_write_text
from schemas.config import MIN_STD, edit_config_text, read_config_text
from schemas.manifest import STATUS_OK, ManifestRow
from schemas.store import NormStats
from spikeprep.errors import InputError

FrameKey = tuple[str, str, int]  # (split, seq, frame_idx): a frame of the store


def count_histogram(counts: np.ndarray) -> np.ndarray:
    """Histogram of count values of one array (int64, index = count value)."""
    return np.bincount(np.asarray(counts).ravel()).astype(np.int64)


def add_histograms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two count histograms of possibly different lengths (int64, the longer length)."""
    n = max(len(a), len(b))
    out = np.zeros(n, dtype=np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def histogram_moments(hist) -> tuple[float, float, int]:
    """(mean, std, n) of ``log1p(c)`` over a histogram of count values; float64, exact summation."""
    hist = [int(h) for h in hist]
    n = sum(hist)
    if n == 0:
        raise ValueError("no voxels to compute statistics from (no kept training frame)")
    values = [math.log1p(c) for c in range(len(hist))]
    mean = math.fsum(h * v for h, v in zip(hist, values)) / n
    var = math.fsum(h * (v - mean) ** 2 for h, v in zip(hist, values)) / n
    return mean, math.sqrt(var), n


def stats_from_records(rows: list[ManifestRow], histograms: dict[FrameKey, list[int]]) -> NormStats | None:
    """Exact stats over the kept (status ok) paired training frames of ``rows`` (the frames training serves:
    unpaired ones never reach the model in training); None if there is none.

    ``histograms`` maps ``(split, seq, frame_idx)`` to the frame's count histogram; the split is part of
    the key because a training and a validation sequence may have the same name.
    """
    total = np.zeros(0, dtype=np.int64)
    n_frames = 0
    for r in rows:
        if r.split == "train" and r.status == STATUS_OK and r.paired:
            hist = histograms[(r.split, r.seq, r.frame_idx)]
            total = add_histograms(total, np.asarray(hist, np.int64))
            n_frames += 1
    if n_frames == 0:
        return None
    mean, std, n = histogram_moments(total)
    return NormStats(mean=mean, std=std, n_voxels=n, n_frames=n_frames, count_histogram=total.tolist())


def check_std(std: float, where: str) -> None:
    """Raise ``InputError`` naming ``where`` when ``std < MIN_STD`` (DESIGN section 3: an error, not a warning)."""
    if not std >= MIN_STD:
        raise InputError(where, f"voxel STD {std!r} < {MIN_STD}: the training spikes are (nearly) constant",
                         fix="check that the spike files hold spikes inside the exposure windows")


def write_config_norm(config_path: Path, mean: float, std: float) -> Path:
    """Write MEAN/STD into ``DATA.NORM`` of a YAML config, leaving every other line as it was.

    Edits the two value fields in place (``schemas.config.edit_config_text``: comments and formatting stay,
    the new text must validate with exactly these numbers), then replaces the file atomically; on any error
    the file is left as it was.
    """
    config_path = Path(config_path)
    text = edit_config_text(read_config_text(config_path), {"DATA.NORM.MEAN": float(mean), "DATA.NORM.STD": float(std)},
                            str(config_path))
    return atomic_write_text(config_path, text)
