"""Restoring and scoring the one way (DESIGN section 8): validation, ``spikeprep test``, spike reliance, baselines.

* ``Restorer`` / ``restore_clips``: the restore loop of validation and ``spikeprep test``: each clip through
  ``tiled_inference`` (under ``no_grad``, fp16 autocast with AMP, model time measured), the frames no
  earlier clip produced converted to uint8 (``tensor_to_uint8``) and, when asked, written as PNGs.
* ``validate``: full-size validation of a val Dataset into a ``schemas.val_report.ValReport``, with the
  spike-reliance probes.
* ``FrameScorer``: per frame basicsr's PSNR (RGB, Y) and SSIM (RGB, Y), LPIPS when its weights exist,
  the same on the motion-boundary mask and on the static half, averaged into
  ``schemas.val_report.Metrics``. Validation, the voxel probes
  of the reliance measurement and ``spikeprep baselines`` all score through it, so their numbers compare.
* ``val_frames``: every kept frame of a validation Dataset once (the last clip of a run overlaps the
  clip before it; its repeated frames are not scored twice).
* ``probe_voxels`` / ``other_clip_index``: the voxel alterations of the reliance measurement: count-zero
  voxels, another clip's voxels, the K bins reversed in time.
* ``score_baselines``: blur, TFP, TFI and the least-squares map (``spikeprep.baselines``) on a store's split.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import arm_name
from model.metrics import (image_metrics, masked_metrics, mean_metrics, motion_boundary_mask, static_mask,
                           tensor_to_uint8)
from model.nets.integrate_vrt import SpikeVRT, tiled_inference
from schemas.baselines import BaselineRow, BaselinesReport
from schemas.val_report import (PROBES, Metrics, ProbeMetrics, SpikeReliance, ValReport, format_metric,
                                val_image_path)
from spikeprep import baselines as bl
from spikeprep.errors import InputError, SpikeprepError
from spikeprep.images import write_rgb
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, norm_lut
from spikeprep.store import read_manifest

BOUNDARY_FRACTION = 0.05   # the motion-boundary mask: the 5% of pixels where sharp and blur differ most
STATIC_FRACTION = 0.5      # the static half: the 50% of pixels where sharp and blur differ least


# ---- scoring ----------------------------------------------------------------------------------------
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


def _first_seen(done: set, seq: str, frames: Sequence[Hashable]) -> list[tuple[int, Hashable]]:
    """``[(position in clip, frame)]`` of the ``frames`` of ``seq`` not in ``done``, which then holds them
    (the last clip of a run overlaps the clip before it: its repeated frames keep the first output)."""
    new = [(k, f) for k, f in enumerate(frames) if (seq, f) not in done]
    done.update((seq, f) for _, f in new)
    return new


def val_frames(ds: SpikeDeblurDataset) -> Iterator[tuple[int, dict, list[tuple[int, int]]]]:
    """``(clip index, item, [(position in clip, frame_idx), ...])`` for every readable clip of ``ds``,
    listing only the frames no earlier clip had. Unreadable clips are skipped (the Dataset logs them)."""
    done: set[tuple[str, int]] = set()
    for i in range(len(ds)):
        item = ds[i]
        if item is None:
            continue
        yield i, item, _first_seen(done, item["meta"]["seq"], item["meta"]["frame_idx"])


# ---- the restore loop -------------------------------------------------------------------------------
TileSpec = Sequence[int] | Callable[[torch.Size], Sequence[int]]


class Restorer:
    """``model`` on one clip at a time: ``tiled_inference`` with ``tile``/``overlap`` (frames, height,
    width; ``tile`` may be a function of the clip's ``[T, 3, H, W]`` shape), under ``no_grad`` and fp16
    autocast when ``amp``. ``seconds`` adds up the model time (CUDA synchronised), ``first_clip_seconds``
    is the first clip's (warm-up included)."""

    def __init__(self, model: SpikeVRT, device: torch.device, *, tile: TileSpec, overlap: Sequence[int],
                 amp: bool = False):
        self.model, self.device, self.tile, self.overlap, self.amp = model, device, tile, tuple(overlap), amp
        self.seconds = 0.0
        self.first_clip_seconds: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def __call__(self, blur: torch.Tensor, spike: torch.Tensor | None) -> torch.Tensor:
        """The restored clip ``[T, 3, H, W]`` (on the CPU) of ``blur [T, 3, H, W]`` and ``spike [T, K, H, W]``."""
        tile = tuple(self.tile(blur.shape) if callable(self.tile) else self.tile)
        b = blur[None].to(self.device)
        v = None if spike is None else spike[None].to(self.device)
        self._sync()
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            recon = tiled_inference(self.model, b, v, tile=tile, overlap=self.overlap, out_device="cpu")[0]
        self._sync()
        elapsed = time.perf_counter() - t0
        self.seconds += elapsed
        self.first_clip_seconds = elapsed if self.first_clip_seconds is None else self.first_clip_seconds
        return recon

    def frames(self, blur: torch.Tensor, spike: torch.Tensor | None, positions: Iterable[int]) -> dict[int, np.ndarray]:
        """uint8 ``[H, W, 3]`` restorations of the clip's frames at ``positions``.

        Raises:
            NonFiniteOutput: the model's output for one of them holds a NaN or an infinity (as uint8 it would
                be a constant-colour image that looks like a result).
        """
        recon = self(blur, spike)
        out = {}
        for k in positions:
            frame = recon[k].float()
            finite = torch.isfinite(frame)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise NonFiniteOutput(f"clip position {k}: {bad} of {frame.numel()} output values are NaN or "
                                      "infinite", k, bad, frame.numel())
            out[k] = tensor_to_uint8(frame)
        return out


class NonFiniteOutput(SpikeprepError):
    """The model restored a frame to NaN or infinite values; ``position``: the frame's position in its clip,
    ``bad`` of ``total`` values are not finite."""

    def __init__(self, message: str, position: int, bad: int, total: int):
        super().__init__(message)
        self.position, self.bad, self.total = position, bad, total


@dataclass(frozen=True)
class Clip:
    """One clip to restore: ``frames`` name its frames within sequence ``seq`` (frame_idx, or positions);
    ``index`` is the Dataset's clip index and ``sharp`` its sharp frames, where there are some."""

    seq: str
    frames: Sequence[Hashable]
    blur: torch.Tensor                 # [T, 3, H, W] RGB in [0, 1]
    spike: torch.Tensor | None         # [T, K, H, W] normalised voxels; None for the spike-free arm
    index: int | None = None
    sharp: torch.Tensor | None = None


@dataclass(frozen=True)
class RestoredClip:
    """A clip's frames that no earlier clip produced: ``new`` ``[(position, frame)]``, ``recon[position]``
    uint8 ``[H, W, 3]``, and ``paths[position]`` where each was written (empty when not written)."""

    clip: Clip
    new: list[tuple[int, Hashable]]
    recon: dict[int, np.ndarray]
    paths: dict[int, Path]


def restore_clips(restorer: Restorer, clips: Iterable[Clip],
                  recon_path: Callable[[str, Hashable], Path] | None = None,
                  params: list[int] | None = None) -> Iterator[RestoredClip]:
    """Restore each clip's frames that no earlier clip produced (a clip with none is skipped); with
    ``recon_path(seq, frame)`` each is written there (``write_rgb`` with ``params``: None, its default)."""
    done: set = set()
    for clip in clips:
        new = _first_seen(done, clip.seq, clip.frames)
        if not new:
            continue
        try:
            recon = restorer.frames(clip.blur, clip.spike, [k for k, _ in new])
        except NonFiniteOutput as err:
            frame = dict(new).get(err.position, clip.frames[err.position])
            where = f" (its image would be {recon_path(clip.seq, frame)})" if recon_path is not None else ""
            raise NonFiniteOutput(f"the model's output for sequence {clip.seq}, frame {frame}{where} is not "
                                  f"finite: {err.bad} of {err.total} values are NaN or infinite", err.position,
                                  err.bad, err.total) from None
        paths = {}
        if recon_path is not None:
            for k, frame in new:
                paths[k] = recon_path(clip.seq, frame)
                paths[k].parent.mkdir(parents=True, exist_ok=True)
                write_rgb(paths[k], recon[k], params)
        yield RestoredClip(clip, new, recon, paths)


# ---- validation -------------------------------------------------------------------------------------
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


def _score_probes(restorer: Restorer, done: RestoredClip, probes: Sequence[str], scorers: dict[str, FrameScorer],
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


def _reliance(scorers: dict[str, FrameScorer], probes: Sequence[str], use_spike: bool,
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
        other_missing += _score_probes(restorer, done, probes, scorers, val_ds, zero_value, sharp, masks)
    model.train()
    spike_reliance, reliance_note = _reliance(scorers, probes, model.use_spike, other_missing)
    true = scorers["true"]
    return ValReport(exp=exp, arm=arm_name(model.use_spike), step=step, split=val_ds.split,
                     overall=true.overall(), boundary=true.boundary(), boundary_fraction=boundary_fraction,
                     static=true.static(), static_fraction=static_fraction,
                     per_sequence=true.per_sequence(), lpips_note=lpips_note,
                     images_dir=str(images_dir) if write_images else None,
                     seconds=time.perf_counter() - t_start, reliance=spike_reliance, reliance_note=reliance_note,
                     fuse_type=getattr(model, "fuse_type", None) if model.use_spike else None)


# ---- spike reliance ---------------------------------------------------------------------------------
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


# ---- baselines --------------------------------------------------------------------------------------
def _counts_dataset(root: Path, split: str, clip_len: int) -> SpikeDeblurDataset:
    return SpikeDeblurDataset(root, split, clip_len=clip_len, train=False, voxels="counts")


def _frame(item: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = item["spike_counts"][k].numpy()
    return counts, item["blur"][k].numpy(), item["sharp"][k].numpy()


def _kept_frames(ds: SpikeDeblurDataset) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    for _, item, new in val_frames(ds):
        for k, _ in new:
            yield (item["meta"]["seq"], *_frame(item, k))


def kept_frames(root: Path, split: str) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(seq, counts [K, Hs, Ws], blur [3, H, W], sharp [3, H, W])`` for every kept frame of ``split``, once each."""
    return _kept_frames(_counts_dataset(root, split, 1))


def lsq_accumulate(root: Path, split: str, progress=None, totals_only: bool = False) -> tuple[bl.LsqAccumulator, int]:
    """The normal equations of ``spikeprep.baselines``' least-squares map over every kept frame of ``split``:
    ``(accumulator, frames)``. ``totals_only``: each pixel's K counts replaced by their mean (what a
    DATA.TOTALS_ONLY arm's fitted head reads), so the map can use the spike total but not its timing."""
    ds = _counts_dataset(root, split, 1)
    acc = bl.LsqAccumulator(ds.num_bins)
    frames = 0
    for _, counts, blur, sharp in _kept_frames(ds):
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


def score_baselines(root: str | Path, split: str = "val", *, fit_split: str = "train", clip_len: int = 1,
                    tfp_widths: tuple[int, ...] | None = None, lpips_metric=None, lpips_note: str | None = None,
                    boundary_fraction: float = BOUNDARY_FRACTION, static_fraction: float = STATIC_FRACTION,
                    progress: bool = False) -> BaselinesReport:
    """Score blur, TFP (centred ``tfp_widths`` bins; default K/4 and K/2), TFI and the least-squares map
    (fitted on ``fit_split``) on every kept frame of ``split`` that a validation with ``clip_len`` scores."""
    t_start = time.perf_counter()
    root = Path(root)
    ds = _counts_dataset(root, split, clip_len)
    k = ds.num_bins
    widths = tuple(tfp_widths) if tfp_widths else tuple(sorted({max(1, k // 4), max(1, k // 2)}))
    for w in widths:
        try:
            bl.centred_bins(k, w)
        except ValueError as err:
            raise InputError(None, str(err), "pass --tfp-bins with widths that can be centred in K bins") from None
    manifest = read_manifest(root).select(["split", "n_ticks", "status", "paired"]).to_pydict()
    ticks = [n for s, n, st, paired in zip(manifest["split"], manifest["n_ticks"], manifest["status"],
                                           manifest["paired"]) if s == split and st == "ok" and paired]
    tfi_ok = bool(ticks) and bl.tfi_applies(k, max(ticks))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="baselines", unit="frame")
    coef, fit_frames = fit_lsq(root, fit_split, bar)
    restorations = {"blur": lambda c, b: b}
    restorations.update({f"tfp_{w}": (lambda c, b, w=w: bl.tfp(c, b, w)) for w in widths})
    if tfi_ok:
        restorations["tfi"] = bl.tfi
    restorations["lsq"] = lambda c, b: bl.lsq_restore(c, b, coef)
    scorers = {name: FrameScorer(lpips_metric, boundary_fraction, static_fraction) for name in restorations}
    frames = 0
    for _, item, new in val_frames(ds):
        seq = item["meta"]["seq"]
        for pos, _ in new:
            counts, blur, sharp = _frame(item, pos)
            s8, b8 = tensor_to_uint8(torch.from_numpy(sharp)), tensor_to_uint8(torch.from_numpy(blur))
            mask = scorers["blur"].mask(b8, s8)
            for name, restore in restorations.items():
                recon = b8 if name == "blur" else tensor_to_uint8(torch.from_numpy(restore(counts, blur)))
                scorers[name].add(seq, recon, s8, mask)
            frames += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    described = {"blur": "the blurred input itself",
                 **{f"tfp_{w}": f"TFP: spike rate over the centred {w} of {k} bins, as luma (blur's colour)"
                    for w in widths},
                 "tfi": "TFI: 1 / inter-spike interval across the window's centre, as luma (blur's colour)",
                 "lsq": f"least squares: one linear map (K counts, blur RGB, 1) -> sharp RGB, fitted on "
                        f"{fit_split} ({fit_frames} frames)"}
    rows = [BaselineRow(name=name, description=described[name], overall=sc.overall(), boundary=sc.boundary(),
                        static=sc.static()) for name, sc in scorers.items()]
    if not tfi_ok:
        widest = max(ticks) if ticks else 0
        rows.insert(len(rows) - 1, BaselineRow(
            name="tfi", description=described["tfi"], overall=None, boundary=None,
            note=f"not applicable: a bin spans {widest / k:.3g} spike frames (n_ticks {widest} > K {k}); TFI "
                 f"needs bins at most one spike frame wide (ingest with --k {widest} or more)"))
    return BaselinesReport(store=str(root), split=split, fit_split=fit_split, num_bins=k, clip_len=clip_len,
                           frames=frames, fit_frames=fit_frames, boundary_fraction=boundary_fraction,
                           static_fraction=static_fraction, rows=rows,
                           lsq_coefficients=coef.tolist(), lpips_note=lpips_note,
                           seconds=time.perf_counter() - t_start)


# ---- tables -------------------------------------------------------------------------------------------
# (column title, region, metric key): one row per restoration, the issue-29 columns of every comparison.
TABLE_COLUMNS = (("PSNR RGB", "overall", "psnr_rgb"), ("PSNR Y", "overall", "psnr_y"), ("SSIM", "overall", "ssim"),
                 ("SSIM Y", "overall", "ssim_y"), ("static PSNR Y", "static", "psnr_y"),
                 ("static SSIM Y", "static", "ssim_y"), ("boundary PSNR RGB", "boundary", "psnr_rgb"),
                 ("boundary PSNR Y", "boundary", "psnr_y"), ("boundary SSIM", "boundary", "ssim"))
TABLE_HEAD = ["restoration", *(title for title, _, _ in TABLE_COLUMNS)]


def metric_rows_table(entries: list[tuple[str, dict[str, Metrics | None] | None, str | None]]) -> list[str]:
    """Markdown lines: one row per ``(name, {region: metrics}, note)`` (regions ``overall``, ``static``,
    ``boundary``; a region missing or None, as in reports before the static half, prints ``not computed``); a
    row without metrics (None) shows its note."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for name, regions, note in entries:
        if regions is None:
            lines.append(f"| {name} | {note} |" + " |" * (len(TABLE_HEAD) - 2))
            continue
        cells = [format_metric(None if (m := regions.get(region)) is None else getattr(m, key), key)
                 for _, region, key in TABLE_COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines


def format_baselines(report: BaselinesReport) -> str:
    """The baselines report as a markdown table (what ``spikeprep baselines`` prints)."""
    static = ("" if report.static_fraction is None else
              f"static = the {report.static_fraction:.0%} where they differ least; ")
    lines = [f"### Non-learned baselines: {report.split} of {report.store} ({report.frames} frames, K={report.num_bins}; "
             f"{static}boundary = per frame the {report.boundary_fraction:.0%} of pixels where sharp and blur differ "
             f"most)", "", *metric_rows_table([(f"{r.name}: {r.description}", r.regions(), r.note)
                                               for r in report.rows])]
    if report.lpips_note:
        lines.append(f"LPIPS: {report.lpips_note}")
    return "\n".join(lines)
