"""The sensitivity probes of validation (DESIGN section 8): the spike arm's frames restored again from altered
voxels (count-zero voxels, another clip's voxels, the K bins reversed in time) and scored like the true ones;
the report's ``reliance`` (``schemas.val_report.SpikeReliance``), a diagnostic of what the model reads, not of
what the spikes are worth.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from model.restore import Restorer, RestoredClip
from model.scoring import FrameScorer
from schemas.val_report import ProbeMetrics, SpikeReliance
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, norm_lut


def zero_count_value(mean: float, std: float) -> float:
    """The served value of a count of 0: ``(log1p(0) - MEAN) / STD``, from the Dataset's own lookup table."""
    return float(norm_lut(mean, std)[0])


def probe_voxels(kind: str, spike_vox: torch.Tensor, zero_value: float,
                 other: torch.Tensor | None = None) -> torch.Tensor:
    """The altered voxels of probe ``kind`` for ``spike_vox [..., K, H, W]`` (never modified).

    ``zeroed``: every count 0 (``zero_value``, see ``zero_count_value``); ``reversed``: the K bins in
    reverse time order; ``other_clip``: ``other`` (another clip's voxels of the same shape).
    """
    if kind == "zeroed":
        return torch.full_like(spike_vox, zero_value)
    if kind == "reversed":
        return spike_vox.flip(-3)
    if kind == "other_clip":
        if other is None or other.shape != spike_vox.shape:
            raise ValueError("the other_clip probe needs another clip's voxels of the same shape")
        return other
    raise ValueError(f"unknown voxel probe {kind!r}")


def other_clip_index(ds: SpikeDeblurDataset, index: int) -> int | None:
    """A clip of ``ds`` far from ``index`` (half the split away, then onwards), served at the same size and
    sharing no frame with it; None when there is none (a split of one clip, or of one size per clip)."""
    n = len(ds)
    seq, frames = ds.clip_frames(index)
    mine = {(seq, f) for f in frames}
    for m in range(n):
        j = (index + n // 2 + m) % n
        if j == index or ds.clip_size(j) != ds.clip_size(index):
            continue
        other_seq, other_frames = ds.clip_frames(j)
        if not mine & {(other_seq, f) for f in other_frames}:
            return j
    return None


def score_probes(restorer: Restorer, done: RestoredClip, probes: Sequence[str], scorers: dict[str, FrameScorer],
                  ds: SpikeDeblurDataset, zero_value: float, sharp: dict, masks: dict) -> int:
    """Score the clip's new frames with each voxel probe; returns 1 when ``other_clip`` found no other clip."""
    clip, missing = done.clip, 0
    for probe in probes:
        other = None
        if probe == "other_clip":
            j = other_clip_index(ds, clip.index)
            other_item = None if j is None else ds[j]
            if other_item is None:
                missing += 1
                continue
            other = other_item["spike_vox"]
        recon = restorer.frames(clip.blur, probe_voxels(probe, clip.spike, zero_value, other), done.recon)
        for k, _ in done.new:
            scorers[probe].add(clip.seq, recon[k], sharp[k], masks[k])
    return missing


def reliance_of(scorers: dict[str, FrameScorer], probes: Sequence[str], use_spike: bool,
              other_missing: int) -> tuple[SpikeReliance | None, str | None]:
    """The report's ``reliance`` and ``reliance_note``."""
    if not probes:
        return None, "not measured (--no-reliance)" if use_spike else None

    def probe_metrics(name: str) -> ProbeMetrics | None:
        sc = scorers[name]
        return ProbeMetrics(overall=sc.overall(), boundary=sc.boundary(), static=sc.static()) if sc.rows else None

    return SpikeReliance(
        zeroed=probe_metrics("zeroed"), reversed=probe_metrics("reversed"), other_clip=probe_metrics("other_clip"),
        other_clip_note=(f"{other_missing} clip(s) had no other clip of their size sharing no frame; the probe "
                         f"scores the rest" if other_missing else None)), None
