"""Full-size validation of a val Dataset into a ``schemas.val_report.ValReport`` (DESIGN section 8): the
restore loop (``model.restore``), scored per frame (``model.scoring``), with the sensitivity probes
(``model.probes``) for the spike arm and, when asked, the recon/blur/sharp PNGs and triptychs.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import arm_name
from model.metrics import tensor_to_uint8
from model.nets.integrate_vrt import SpikeVRT
from model.probes import reliance_of, score_probes, zero_count_value
from model.restore import Clip, Restorer, restore_clips
from model.scoring import BOUNDARY_FRACTION, STATIC_FRACTION, FrameScorer
from schemas.val_report import PROBES, ValReport, val_image_path
from spikeprep.images import write_rgb
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset


def _separator(h: int) -> np.ndarray:
    return np.full((h, 2, 3), 255, np.uint8)


def save_triptych(path: Path, blur: np.ndarray, recon: np.ndarray, sharp: np.ndarray) -> None:
    """blur | recon | sharp side by side (uint8 HWC RGB), 2-pixel white separators."""
    h = blur.shape[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(path, np.concatenate([blur, _separator(h), recon, _separator(h), sharp], axis=1))


def _val_clips(ds: SpikeDeblurDataset, use_spike: bool) -> Iterator[Clip]:
    for i in range(len(ds)):
        item = ds[i]
        if item is not None:  # unreadable clips are skipped (the Dataset logs them)
            yield Clip(item["meta"]["seq"], item["meta"]["frame_idx"], item["blur"],
                       item["spike_vox"] if use_spike else None, index=i, sharp=item["sharp"])


def _val_tile(tile: tuple[int, int]) -> Callable[[torch.Size], tuple[int, int, int]]:
    """Validation's tiles: the whole clip in time, ``tile`` (0: the whole frame) in space."""
    def of(shape: torch.Size) -> tuple[int, int, int]:
        t, _, h, w = shape
        return t, min(tile[0], h) if tile[0] else h, min(tile[1], w) if tile[1] else w
    return of


@torch.no_grad()
def validate(model: SpikeVRT, val_ds: SpikeDeblurDataset, *, device: torch.device, amp: bool, exp: str,
             step: int, outputs: Path, lpips_metric, lpips_note: str | None, tile: tuple[int, int],
             write_images: bool, visual_frames: int, boundary_fraction: float = BOUNDARY_FRACTION,
             reliance: bool = True, static_fraction: float = STATIC_FRACTION) -> ValReport:
    """Full-size validation (no crop, no augmentation) of every kept val frame, tiled in space.

    Each frame is scored once (the Dataset's last clip of a run overlaps the one before it). For the spike
    arm with ``reliance`` the same frames are scored again with each voxel probe (count-zero voxels,
    another clip's voxels, bins reversed in time): the report's ``reliance``, a sensitivity diagnostic.
    """
    t_start = time.perf_counter()
    model.eval()
    probes = PROBES if model.use_spike and reliance else ()
    scorers = {name: FrameScorer(lpips_metric, boundary_fraction, static_fraction) for name in ("true", *probes)}
    other_missing = 0
    zero_value = zero_count_value(val_ds.norm_mean, val_ds.norm_std)
    images_dir = Path("visuals") / exp / f"step_{step:07d}"
    n_frames_total = sum(1 for i in range(len(val_ds)) for f in val_ds.clip_frames(i)[1])
    visual_pick = set(np.linspace(0, max(0, n_frames_total - 1), num=min(visual_frames, n_frames_total),
                                  dtype=int).tolist()) if write_images else set()
    frame_counter = 0
    restorer = Restorer(model, device, tile=_val_tile(tile), overlap=(0, 16, 16), amp=amp)
    recon_path = (lambda seq, frame: val_image_path(outputs / images_dir, seq, frame, "recon")) if write_images else None
    for done in restore_clips(restorer, _val_clips(val_ds, model.use_spike), recon_path):
        clip = done.clip
        sharp = {k: tensor_to_uint8(clip.sharp[k]) for k, _ in done.new}
        blur = {k: tensor_to_uint8(clip.blur[k]) for k, _ in done.new}
        masks = {k: scorers["true"].mask(blur[k], sharp[k]) for k, _ in done.new}
        for k, frame in done.new:
            scorers["true"].add(clip.seq, done.recon[k], sharp[k], masks[k])
            if write_images:
                for name, img in (("blur", blur[k]), ("sharp", sharp[k])):
                    write_rgb(val_image_path(outputs / images_dir, clip.seq, frame, name), img)
                if frame_counter in visual_pick:
                    save_triptych(outputs / images_dir / f"{clip.seq}_{frame:06d}_triptych.png", blur[k],
                                  done.recon[k], sharp[k])
            frame_counter += 1
        other_missing += score_probes(restorer, done, probes, scorers, val_ds, zero_value, sharp, masks)
    model.train()
    spike_reliance, reliance_note = reliance_of(scorers, probes, model.use_spike, other_missing)
    true = scorers["true"]
    return ValReport(exp=exp, arm=arm_name(model.use_spike), step=step, split=val_ds.split,
                     overall=true.overall(), boundary=true.boundary(), boundary_fraction=boundary_fraction,
                     static=true.static(), static_fraction=static_fraction,
                     per_sequence=true.per_sequence(), lpips_note=lpips_note,
                     images_dir=str(images_dir) if write_images else None,
                     seconds=time.perf_counter() - t_start, reliance=spike_reliance, reliance_note=reliance_note,
                     fuse_type=getattr(model, "fuse_type", None) if model.use_spike else None)
