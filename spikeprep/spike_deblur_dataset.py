"""The training/validation Dataset over a spikeprep store (original document section 4; DESIGN 3, 5, 8).

One item is a clip of ``clip_len`` consecutive blur frames of one sequence, all ``status == ok`` and
``paired`` in the manifest (a dropped or unpaired frame never appears and breaks a run; a split whose kept
frames are all unpaired is ``NoPairedFrames``)::

    {'blur':      FloatTensor[T, 3, H, W]   RGB in [0, 1]
     'sharp':     FloatTensor[T, 3, H, W]
     'spike_vox': FloatTensor[T, K, H, W]   (log1p(count) - MEAN) / STD on the RGB grid
     'meta':      {'seq': str, 'frame_idx': [int]*T, 't0': [float]*T, 't1': [float]*T,
                   'crop': (y, x)}          # top-left of the crop in RGB pixels ((0, 0) at full size)
    }

Totals-only voxels (``totals_only=True``, ``DATA.TOTALS_ONLY``; issue 29): the same store, each pixel's K bins
replaced by that pixel's mean over the K bins, so only the spike *total* is left and no timing. The mean is
taken over the counts, before the normalisation: every bin serves ``(log1p(total / K) - MEAN) / STD``, a
function of the pixel's total alone (a mean of the normalised bins would still depend on how the spikes fall
in time, through the logarithm), normalised with the store's MEAN/STD like any voxel so the served values keep
the statistics the model is used to (a pixel whose bins hold the same count serves exactly what it did). A
spike arm trained and tested on them against one on the true voxels measures what spike timing adds.

With ``voxels="counts"`` the item holds ``'spike_counts'`` instead of ``'spike_vox'``: the stored counts
``[T, K, H/sy, W/sx]`` (uint8 or uint16) at the native spike grid, not normalised, and ``meta['scale']``
is ``(sy, sx)``; the non-learned baselines read these. With ``images="uint8"`` blur and sharp are the
stored ``uint8`` RGB ``[T, 3, H, W]`` (not divided by 255).

The compact hand-over (``from_config(..., compact=True)``, the trainer's training set) is both: uint8
frames and stored counts at the spike grid, a quarter of the bytes of the float32 item or less (a
sixteenth of its voxels at s = 2) through the worker pipe and onto the device, where
``batch_to_device`` (``lookup_upsample`` with the Dataset's own tables, ``device_luts``) makes them the default item's
float32 tensors exactly (``torch.equal``, tested): a lookup is exact on any device, unlike a division
or ``log1p`` recomputed there.

Train (``train=True``): one random ``crop_size`` x ``crop_size`` crop per clip, its top-left a multiple
of the spike-grid scale ``s`` (so RGB and spike pixels line up), the same for every frame and for blur,
sharp and spike; clips start at every frame (stride 1). Val (``train=False``): full frames, no crop, no
augmentation; clips do not overlap, and the last clip of a run is aligned to the run's end so every kept
frame is covered.

"Memory-mapped" (DESIGN section 5): nothing is read up front. Each worker opens the arrays lazily on
first use (no handle is pickled into a worker) and reads only the chunks under the crop: the
``(1, K, 64, 64)`` voxel chunks at spike resolution and the ``(1, 3, 128, 128)`` chunks of the frames
ingest decoded into ``rgb.zarr`` (decoding two whole PNGs per frame for a 256 crop was most of the
time of an item); the OS page cache keeps hot chunks. For the store's own layout (one
``sharding_indexed`` shard per frame, blosc inside, crc32c-checked index at the end: the zarr v3
sharding format) the chunks are read straight from the shard file (one ``pread`` for the index and one
per chunk, then a blosc decode), which is several times faster than zarr-python's asynchronous path for
small reads; any other layout goes through ``zarr`` itself. Both give identical values (tested).

A sample that cannot be read (a damaged or missing chunk, an array whose shape disagrees with
``dataset.json``) is logged on ``logging.getLogger('spikeprep.dataset')`` and returned as ``None``;
``collate_drop_bad`` drops it (and any sample whose tensor shapes disagree with the batch majority) with
a logged reason, counts it in the batch's ``meta['n_dropped']``, and returns ``None`` for an all-bad batch
(the trainer adds both up and skips such a batch).

``val_frames`` walks a validation Dataset's clips, listing each kept frame once (the last clip of a run
overlaps the clip before it); ``first_seen`` is that rule, which the restore loop shares.

Randomness: with ``seed=None`` the crop comes from torch's global generator, which a DataLoader seeds in
each worker (``base_seed + worker_id``), so seeding the DataLoader (``generator=``) or torch makes a run
reproducible for a given ``num_workers``. With ``seed=<int>`` the crop of item ``i`` is a pure function of
``(seed, epoch, i)``: identical in the main process and under any number of workers, and repeatable for
a bit-for-bit resume; call ``set_epoch(epoch)`` each epoch so crops change between epochs.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from schemas.config import MIN_STD
from schemas.manifest import MANIFEST_FILENAME, STATUS_OK, ManifestRow
from schemas.store import DATASET_FILENAME, RGB_DIRNAME, VOX_ARRAY, VOX_DIRNAME, StoreInfo
from spikeprep.errors import InputError, SampleError
from spikeprep.store import ChunkReader, read_manifest, read_store_info

log = logging.getLogger("spikeprep.dataset")

TENSOR_KEYS = ("blur", "sharp", "spike_vox", "spike_counts")
VOXEL_KINDS = ("normalised", "counts")
IMAGE_KINDS = ("float32", "uint8")
# uint8 RGB value -> float32 in [0, 1]: the same float32 division unit_frames makes, one value at a time.
RGB_LUT = np.arange(256, dtype=np.float32) / np.float32(255.0)


# ---- normalisation -------------------------------------------------------------------------------
def norm_lut(mean: float, std: float, dtype: np.dtype | str = np.uint8) -> np.ndarray:
    """float32 table ``lut[c] = (log1p(c) - mean) / std`` for every value of ``dtype`` (float64 maths)."""
    n = np.iinfo(np.dtype(dtype)).max + 1
    return ((np.log1p(np.arange(n, dtype=np.float64)) - float(mean)) / float(std)).astype(np.float32)


def totals_lut(mean: float, std: float, num_bins: int, dtype: np.dtype | str = np.uint8) -> np.ndarray:
    """float32 table ``lut[t] = (log1p(t / K) - mean) / std`` for every total ``t`` of ``K = num_bins`` counts of
    ``dtype`` (float64 maths): the served value of every bin of a totals-only voxel (module docstring).
    ``totals_lut(m, s, K)[K * c] == norm_lut(m, s)[c]``: a pixel with the same count in every bin is unchanged."""
    n = int(num_bins) * np.iinfo(np.dtype(dtype)).max + 1
    return ((np.log1p(np.arange(n, dtype=np.float64) / int(num_bins)) - float(mean)) / float(std)).astype(np.float32)


def totals_only_voxels(counts: Iterable[np.ndarray], lut: np.ndarray, scale: tuple[int, int], num_bins: int,
                       hw: tuple[int, int]) -> np.ndarray:
    """Per-frame counts ``[K, h/sy, w/sx]`` -> totals-only voxels ``[T, K, h, w]`` (float32, RGB grid): each
    pixel's K bins all ``lut[its total]`` (``lut = totals_lut``), replicated onto the RGB grid."""
    totals = [c.sum(axis=0, keepdims=True, dtype=np.int64) for c in counts]
    one = normalised_voxels(totals, lut, scale, 1, hw)
    return np.ascontiguousarray(np.broadcast_to(one, (len(totals), num_bins, *hw)))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _lut_upsample(counts, lut, sy, sx, out):  # pragma: no cover - compiled
    """``out[k, y*sy+dy, x*sx+dx] = lut[counts[k, y, x]]``: normalise and replicate each pixel sy x sx."""
    n_bins, h, w = counts.shape
    for k in range(n_bins):
        for y in range(h):
            row = out[k, y * sy]
            src = counts[k, y]
            if sx == 1:
                for x in range(w):
                    row[x] = lut[src[x]]
            else:
                for x in range(w):
                    v = lut[src[x]]
                    for dx in range(sx):
                        row[x * sx + dx] = v
            for dy in range(1, sy):
                out[k, y * sy + dy, :] = row


def normalise_upsample(counts: np.ndarray, lut: np.ndarray, scale: tuple[int, int],
                       out: np.ndarray | None = None) -> np.ndarray:
    """Counts ``[K, h, w]`` -> normalised float32 ``[K, h*sy, w*sx]`` (into ``out`` when given)."""
    sy, sx = scale
    n_bins, h, w = counts.shape
    if out is None:
        out = np.empty((n_bins, h * sy, w * sx), np.float32)
    if out.shape != (n_bins, h * sy, w * sx) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {(n_bins, h * sy, w * sx)}, got {out.shape}")
    _lut_upsample(np.ascontiguousarray(counts), lut, int(sy), int(sx), out)
    return out


def unit_frames(frames: Sequence[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """uint8 RGB frames ``[3, h, w]`` -> one float32 clip ``[T, 3, h, w]`` in [0, 1] (the served blur/sharp)."""
    # numpy, not torch ops, for the per-pixel work: single-threaded whatever torch's thread count
    # (torch's intra-op threads make these small ops 100x slower on a busy 2-core machine).
    out = np.empty((len(frames), 3, *hw), np.float32)
    for t, frame in enumerate(frames):
        np.copyto(out[t], frame)
    np.divide(out, np.float32(255.0), out=out)
    return out


def normalised_voxels(counts: Iterable[np.ndarray], lut: np.ndarray, scale: tuple[int, int], num_bins: int,
                      hw: tuple[int, int]) -> np.ndarray:
    """Per-frame counts ``[K, h/sy, w/sx]`` -> the served voxels ``[T, K, h, w]`` (float32, RGB grid),
    normalised through ``lut`` and replicated onto the RGB grid (``normalise_upsample``)."""
    counts = list(counts)
    spike = np.empty((len(counts), num_bins, *hw), np.float32)
    for t, c in enumerate(counts):
        normalise_upsample(c, lut, scale, out=spike[t])
    return spike


def lookup_upsample(codes: torch.Tensor, lut: torch.Tensor, scale: tuple[int, int]) -> torch.Tensor:
    """Integer ``codes [..., h, w]`` (uint8 / uint16 counts or RGB values) -> a new float32 tensor
    ``[..., h*sy, w*sx]`` on their device: ``lut[code]``, each pixel replicated ``sy x sx`` (rows are
    axis -2, columns axis -1; leading axes such as ``B, T, K`` pass through). ``codes`` is not modified.

    The torch twin of ``normalise_upsample`` for the compact hand-over: with the Dataset's tables it gives
    the default items' ``spike_vox`` (``lut = norm_lut``, ``scale = meta['scale']``) and blur/sharp
    (``lut = RGB_LUT``, ``scale = (1, 1)``) bit for bit.
    """
    sy, sx = (int(v) for v in scale)
    *lead, h, w = codes.shape
    values = lut.index_select(0, codes.reshape(-1).to(torch.int32)).reshape(codes.shape)
    if (sy, sx) == (1, 1):
        return values
    return values[..., :, None, :, None].expand(*lead, h, sy, w, sx).reshape(*lead, h * sy, w * sx)


# ---- the clip index --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sequence:
    """What the Dataset needs of one sequence (kept frames only, sorted by frame_idx). Picklable."""

    name: str
    vox_path: str           # the sequence's spike_vox.zarr/counts array
    rgb_path: str           # the sequence's rgb.zarr group (arrays blur, sharp)
    H: int
    W: int
    Hs: int
    Ws: int
    scale: tuple[int, int]
    frame_idx: np.ndarray   # int64 [n]
    t0: np.ndarray          # float64 [n]
    t1: np.ndarray
    vox_index: np.ndarray   # int64 [n]
    blur: tuple[str, ...]   # absolute paths
    sharp: tuple[str | None, ...]   # None: an unpaired frame (only with load_sequences(..., unpaired=True))


def consecutive_runs(frame_idx: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, length)]`` of runs of consecutive frame indices (positions into ``frame_idx``)."""
    if len(frame_idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(frame_idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(frame_idx)]])
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def longest_kept_runs(rows: list[ManifestRow]) -> dict[str, int]:
    """Per split of manifest ``rows``, the longest run of consecutive kept paired frames (status ok,
    voxelized, with a sharp frame) within one sequence: training and validation clips of ``clip_len`` frames
    come only from runs at least that long. A split whose kept frames are all unpaired is absent (it is not
    for training; ``spikeprep test`` and the audit use it)."""
    kept: dict[tuple[str, str], list[int]] = {}
    unpaired_only = {}
    for r in rows:
        kept.setdefault((r.split, r.seq), [])
        if r.status == STATUS_OK and r.vox_index is not None:
            unpaired_only[r.split] = unpaired_only.get(r.split, True) and not r.paired
            if r.paired:
                kept[(r.split, r.seq)].append(r.frame_idx)
    out: dict[str, int] = {}
    for (split, _), idx in kept.items():
        if unpaired_only.get(split):
            continue
        runs = consecutive_runs(np.sort(np.asarray(idx, np.int64)))
        out[split] = max([out.get(split, 0), *(n for _, n in runs)])
    return out


def clip_starts(length: int, clip_len: int, train: bool) -> list[int]:
    """Clip start offsets within a run of ``length`` frames: stride 1 (train) or tiling with the last
    clip aligned to the run's end (val); none when the run is shorter than ``clip_len``."""
    if length < clip_len:
        return []
    if train:
        return list(range(length - clip_len + 1))
    starts = list(range(0, length - clip_len + 1, clip_len))
    if starts[-1] + clip_len < length:
        starts.append(length - clip_len)
    return starts


SEQUENCE_COLUMNS = ("split", "seq", "frame_idx", "t0", "t1", "H", "W", "blur", "sharp", "paired", "vox_index",
                    "status")


class NoPairedFrames(InputError):
    """A split whose kept frames are all unpaired (no sharp frame): nothing to train on or to score. The
    trainer refuses it as its training split and skips validation on it."""


def load_sequences(root: Path, info: StoreInfo, split: str, rows: dict[str, list] | None = None,
                   unpaired: bool = False) -> list[_Sequence]:
    """The sequences of ``split`` with their kept frames (status ok, voxelized), sorted by frame_idx:
    what the Dataset serves (paired frames only) and ``spikeprep test`` reads (``unpaired=True``: unpaired
    frames too; their ``sharp`` path is None). ``rows``: the manifest's ``SEQUENCE_COLUMNS`` as lists
    (``pyarrow.Table.to_pydict``) when the caller has read them already. ``NoPairedFrames`` when the split
    keeps frames but none of them is paired (and ``unpaired`` is False)."""
    rows = read_manifest(root).select(list(SEQUENCE_COLUMNS)).to_pydict() if rows is None else rows
    by_seq: dict[str, list[int]] = {}
    splits = set()
    for i, row_split in enumerate(rows["split"]):
        splits.add(row_split)
        if row_split == split:
            by_seq.setdefault(rows["seq"][i], []).append(i)
    if not by_seq:
        raise InputError(root / MANIFEST_FILENAME,
                         f"split {split!r} has no frames (the store has {sorted(splits)})",
                         fix="set DATA.TRAIN_SPLIT / DATA.VAL_SPLIT to a split of the store")
    sequences = []
    n_kept_total = 0
    for name in sorted(by_seq):
        key = f"{split}/{name}"
        seq_info = info.sequences.get(key)
        if seq_info is None:
            raise InputError(root / DATASET_FILENAME, f"sequence {key} is in the manifest but not "
                             "in dataset.json", fix="re-run `spikeprep ingest`")
        kept = [i for i in by_seq[name]
                if rows["status"][i] == STATUS_OK and rows["vox_index"][i] is not None]
        keep = kept if unpaired else [i for i in kept if rows["paired"][i]]
        n_kept_total += len(kept)
        keep.sort(key=lambda i: rows["frame_idx"][i])
        n_drop = len(by_seq[name]) - len(kept)
        if n_drop:
            log.info("%s: %d of %d frames dropped in the manifest; clips skip them", key, n_drop,
                     len(by_seq[name]))
        if len(kept) > len(keep):
            log.info("%s: %d of %d kept frames are unpaired (no sharp frame); clips skip them", key,
                     len(kept) - len(keep), len(kept))
        col = lambda c, dt: np.asarray([rows[c][i] for i in keep], dt).reshape(-1)  # noqa: E731
        sequences.append(_Sequence(
            name=name, vox_path=str(root / split / name / VOX_DIRNAME / VOX_ARRAY),
            rgb_path=str(root / split / name / RGB_DIRNAME),
            H=seq_info.H, W=seq_info.W, Hs=seq_info.Hs, Ws=seq_info.Ws,
            scale=(int(seq_info.scale[0]), int(seq_info.scale[1])),
            frame_idx=col("frame_idx", np.int64), t0=col("t0", np.float64), t1=col("t1", np.float64),
            vox_index=col("vox_index", np.int64),
            blur=tuple(str(root / rows["blur"][i]) for i in keep),
            sharp=tuple(None if rows["sharp"][i] is None else str(root / rows["sharp"][i]) for i in keep)))
    if not unpaired and n_kept_total and not any(len(s.frame_idx) for s in sequences):
        raise NoPairedFrames(root / MANIFEST_FILENAME,
                             f"split {split!r} has {n_kept_total} kept frames but none is paired (no sharp "
                             "frames: an unpaired recording), so there is nothing to train on or to score",
                             fix=f"train and validate on paired data (DATA.TRAIN_SPLIT / DATA.VAL_SPLIT naming a "
                             f"split with sharp frames); deblur this one with `spikeprep test --store {root} "
                             f"--split {split}`")
    return sequences


def _mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes and runs)."""
    h = hashlib.blake2b(b"spikeprep.dataset", digest_size=8)
    for v in values:
        h.update(int(v).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") >> 1


class SpikeDeblurDataset(Dataset):
    """Clips of a spikeprep store; see the module docstring for items, crops and randomness.

    Args:
        root: DATA_ROOT (with ``dataset.json`` and ``manifest.parquet``).
        split: the split to serve (``train`` / ``val`` or whatever the store holds).
        clip_len: T, frames per clip (5 in the original config).
        crop_size: train crop side in RGB pixels, a multiple of the spike-grid scale; ``None`` serves full
            frames. Ignored when ``train`` is False (validation is always full size).
        num_bins: K the caller expects (``DATA.K``); checked against ``dataset.json``. ``None``: the store's.
        norm_mean, norm_std: normalisation of ``log1p(count)``; ``None``: the store's exact stats.
        train: random crops + stride-1 clips (True) or full-size tiling clips (False). ``None``:
            ``split == "train"``.
        seed: ``None`` (torch's worker-seeded generator) or an int (crops a function of seed, epoch, item).
        with_spike: False serves items without ``spike_vox`` and never opens a voxel array (the
            spike-free arm's data: same clips, same crops, no spike reads).
        voxels: ``"normalised"`` (``spike_vox``, the model's input) or ``"counts"`` (``spike_counts``, the
            stored counts at the spike grid).
        totals_only: serve totals-only voxels (module docstring): ``spike_vox`` and ``batch_to_device``'s voxels
            keep their shape but each pixel's K bins hold its mean count; ``spike_counts`` stay the stored counts.
        images: ``"float32"`` (blur/sharp in [0, 1]) or ``"uint8"`` (the stored RGB values).
    """

    def __init__(self, root: str | Path, split: str, clip_len: int = 5, crop_size: int | None = None,
                 num_bins: int | None = None, norm_mean: float | None = None, norm_std: float | None = None,
                 train: bool | None = None, seed: int | None = None, with_spike: bool = True,
                 voxels: str = "normalised", images: str = "float32", totals_only: bool = False):
        super().__init__()
        if voxels not in VOXEL_KINDS:
            raise ValueError(f"voxels must be one of {VOXEL_KINDS}, got {voxels!r}")
        if images not in IMAGE_KINDS:
            raise ValueError(f"images must be one of {IMAGE_KINDS}, got {images!r}")
        self.voxels = voxels
        self.images = images
        self.totals_only = bool(totals_only)
        self.root = Path(root)
        self.split = split
        self.train = (split == "train") if train is None else bool(train)
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        self.clip_len = int(clip_len)
        self.seed = seed
        self.with_spike = bool(with_spike)
        self.epoch = 0
        info = read_store_info(self.root)
        self.info: StoreInfo = info
        json_path = self.root / DATASET_FILENAME
        if num_bins is not None and int(num_bins) != info.K:
            raise InputError(json_path, f"the store holds K={info.K} time bins but K={num_bins} was "
                             "requested (DATA.K)",
                             fix=f"re-run ingest with K={num_bins} or set DATA.K={info.K}")
        self.num_bins = info.K
        self.norm_mean, self.norm_std = self._resolve_norm(norm_mean, norm_std, json_path)

        self.sequences = self._load_sequences()
        self.crop_size = None if not self.train or crop_size is None else int(crop_size)
        if self.crop_size is not None:
            self._check_crop(json_path)
        self._clips = self._index_clips()
        dtypes = {info.sequences[f"{split}/{s.name}"].dtype for s in self.sequences}
        count_dtype = "uint16" if "uint16" in dtypes else "uint8"
        self._lut = norm_lut(self.norm_mean, self.norm_std, count_dtype)
        # the served voxels' table: of a count, or (totals only) of a pixel's total over the K bins
        self._vox_lut = totals_lut(self.norm_mean, self.norm_std, self.num_bins, count_dtype) \
            if self.totals_only else self._lut
        self._readers: dict[int, ChunkReader] = {}
        self._device_luts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, split_kind: str = "train", seed: int | None = None,
                    with_spike: bool = True, compact: bool = False) -> "SpikeDeblurDataset":
        """The train (random crops of DATA.CROP_SIZE) or val (full size) Dataset of a ``Config``, with totals-only
        voxels when DATA.TOTALS_ONLY; ``compact``: the compact hand-over (uint8 frames, stored counts; see the
        module docstring)."""
        if split_kind not in ("train", "val"):
            raise ValueError(f"split_kind must be 'train' or 'val', got {split_kind!r}")
        data = cfg.DATA
        train = split_kind == "train"
        return cls(data.ROOT, data.TRAIN_SPLIT if train else data.VAL_SPLIT, clip_len=data.CLIP_LEN,
                   crop_size=data.CROP_SIZE if train else None, num_bins=data.K,
                   norm_mean=data.NORM.MEAN, norm_std=data.NORM.STD, train=train, seed=seed,
                   with_spike=with_spike, voxels="counts" if compact else "normalised",
                   images="uint8" if compact else "float32", totals_only=data.TOTALS_ONLY)

    def _resolve_norm(self, mean, std, json_path) -> tuple[float, float]:
        stats = self.info.stats
        if mean is None or std is None:
            if stats is None:
                raise InputError(json_path, "the store has no normalisation stats (no kept training frame) "
                                 "and no MEAN/STD was given",
                                 fix="pass norm_mean/norm_std (DATA.NORM.MEAN/STD) or ingest training data")
            mean = stats.mean if mean is None else mean
            std = stats.std if std is None else std
        mean, std = float(mean), float(std)
        if not (math.isfinite(mean) and math.isfinite(std)) or std < MIN_STD:
            raise InputError(json_path,
                             f"normalisation MEAN={mean}, STD={std}: STD must be finite and >= {MIN_STD}",
                             fix="use the stats of dataset.json (`spikeprep ingest ... --write-config CFG`)")
        if stats is not None and (abs(mean - stats.mean) > 1e-6 * max(1.0, abs(stats.mean))
                                  or abs(std - stats.std) > 1e-6 * max(1.0, abs(stats.std))):
            log.warning("normalisation MEAN=%r STD=%r differs from the store's training stats MEAN=%r "
                        "STD=%r (%s); fix: write them into the config with `spikeprep ingest ... "
                        "--write-config CFG`", mean, std, stats.mean, stats.std, json_path)
        return mean, std

    def _load_sequences(self) -> list[_Sequence]:
        return load_sequences(self.root, self.info, self.split)

    def _check_crop(self, json_path: Path) -> None:
        c = self.crop_size
        if c <= 0:
            raise InputError(json_path, f"crop size {c} must be positive", fix="set DATA.CROP_SIZE > 0")
        for s in self.sequences:
            sy, sx = s.scale
            if c % sy or c % sx:
                raise InputError(json_path, f"crop size {c} is not a multiple of the spike-grid scale "
                                 f"{sy}x{sx} of {self.split}/{s.name} (RGB {s.H}x{s.W}, "
                                 f"spikes {s.Hs}x{s.Ws})",
                                 fix=f"set DATA.CROP_SIZE to a multiple of {math.lcm(sy, sx)}")
            if len(s.frame_idx) and c > min(s.H, s.W):
                raise InputError(json_path, f"crop size {c} is larger than the frames of "
                                 f"{self.split}/{s.name} ({s.H}x{s.W})",
                                 fix=f"set DATA.CROP_SIZE <= {min(s.H, s.W)} or use larger frames")

    def _index_clips(self) -> np.ndarray:
        clips = []
        uncovered = 0
        for si, s in enumerate(self.sequences):
            for start, length in consecutive_runs(s.frame_idx):
                starts = clip_starts(length, self.clip_len, self.train)
                clips += [(si, start + o) for o in starts]
                if not starts:
                    uncovered += length
        if uncovered:
            log.warning("%s: %d kept frames sit in runs shorter than clip_len=%d and appear in no clip",
                        self.split, uncovered, self.clip_len)
        if not clips:
            longest = max((n for s in self.sequences for _, n in consecutive_runs(s.frame_idx)), default=0)
            raise InputError(self.root / MANIFEST_FILENAME,
                             f"split {self.split!r} has no run of {self.clip_len} consecutive kept frames "
                             f"(longest run: {longest})",
                             fix="lower DATA.CLIP_LEN or fix the dropped frames (see the manifest's reason)")
        return np.asarray(clips, np.int64).reshape(-1, 2)

    # -- pickling: no open handles into workers -----------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = {}
        state["_device_luts"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._readers = {}
        self._device_luts = {}

    def device_luts(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(RGB_LUT, norm_lut)`` (``totals_lut`` with ``totals_only``) as float32 tensors on ``device``, the
        tables ``lookup_upsample`` turns a compact item into the default one with (copied once per device)."""
        key = str(torch.device(device))
        if key not in self._device_luts:
            self._device_luts[key] = (torch.from_numpy(RGB_LUT).to(device),
                                      torch.from_numpy(self._vox_lut).to(device))
        return self._device_luts[key]

    def batch_to_device(self, batch: dict, device: torch.device | str,
                        use_spike: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """float32 ``(blur, sharp, spike_vox or None)`` on ``device`` of a collated batch of this Dataset (what
        the model takes). A compact batch (uint8 frames, counts at the spike grid) crosses to the device as it
        is and becomes the default batch's tensors there through ``device_luts`` (bit for bit, tested); a
        default batch is moved as it is. ``use_spike`` False: no voxels (the spike-free arm)."""
        rgb_lut, count_lut = self.device_luts(device)

        def frames(key: str) -> torch.Tensor:
            x = batch[key].to(device, non_blocking=True)
            return lookup_upsample(x, rgb_lut, (1, 1)) if x.dtype == torch.uint8 else x

        spike = None
        if use_spike and "spike_counts" in batch:
            # One scale per batch: collate keeps only samples of one counts shape and one crop size.
            counts = batch["spike_counts"].to(device, non_blocking=True)
            if self.totals_only:     # integer sums are exact on any device; the table does the rest
                totals = counts.sum(dim=-3, keepdim=True, dtype=torch.int32)
                spike = lookup_upsample(totals, count_lut, batch["meta"]["scale"][0]).expand(
                    *counts.shape[:-2], -1, -1).contiguous()
            else:
                spike = lookup_upsample(counts, count_lut, batch["meta"]["scale"][0])
        elif use_spike:
            spike = batch["spike_vox"].to(device, non_blocking=True)
        return frames("blur"), frames("sharp"), spike

    def set_epoch(self, epoch: int) -> None:
        """Epoch for ``seed``-mode crops (like DistributedSampler.set_epoch); no effect with seed=None."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._clips)

    # -- items ---------------------------------------------------------------------------------------
    def clip_frames(self, index: int) -> tuple[str, list[int]]:
        """(sequence name, frame indices) of clip ``index``, without reading anything."""
        si, pos = (int(v) for v in self._clips[index])
        s = self.sequences[si]
        return s.name, s.frame_idx[pos:pos + self.clip_len].tolist()

    def clip_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of clip ``index``'s items (the crop, or the full frame), without reading anything."""
        s = self.sequences[int(self._clips[index][0])]
        return (s.H, s.W) if self.crop_size is None else (self.crop_size, self.crop_size)

    def _reader(self, si: int, kind: str = "vox") -> ChunkReader:
        """The (lazily opened, per process) reader of sequence ``si``'s ``vox``, ``blur`` or ``sharp``."""
        reader = self._readers.get((si, kind))
        if reader is None:
            s = self.sequences[si]
            if kind == "vox":
                reader, expected = ChunkReader(s.vox_path), (self.num_bins, s.Hs, s.Ws)
            else:
                reader, expected = ChunkReader(Path(s.rgb_path) / kind), (3, s.H, s.W)
            if tuple(reader.shape[1:]) != expected or reader.shape[0] <= int(s.vox_index.max(initial=0)):
                raise SampleError(f"{reader.path}: shape {reader.shape} disagrees with dataset.json "
                                  f"(rows > {int(s.vox_index.max(initial=0))}, {expected} per row)")
            self._readers[(si, kind)] = reader
        return reader

    def _crop_origin(self, index: int, s: _Sequence) -> tuple[int, int]:
        if self.crop_size is None:
            return 0, 0
        sy, sx = s.scale
        ny = (s.H - self.crop_size) // sy + 1
        nx = (s.W - self.crop_size) // sx + 1
        if self.seed is not None:
            gen = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, index))
        else:
            gen = None  # torch's global generator (seeded per worker by the DataLoader)
        y = int(torch.randint(ny, (1,), generator=gen))
        x = int(torch.randint(nx, (1,), generator=gen))
        return y * sy, x * sx

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index} out of range ({len(self)} clips)")
        index = index % len(self)
        si, pos = (int(v) for v in self._clips[index])
        s = self.sequences[si]
        crop = self._crop_origin(index, s)
        try:
            return self._load(si, pos, crop)
        except (SampleError, OSError, ValueError, RuntimeError, KeyError) as err:
            frames = s.frame_idx[pos:pos + self.clip_len].tolist()
            log.warning("dropping clip %d (%s/%s frames %s): %s", index, self.split, s.name, frames, err)
            return None

    def _load(self, si: int, pos: int, crop: tuple[int, int]) -> dict:
        s = self.sequences[si]
        sl = slice(pos, pos + self.clip_len)
        y, x = crop
        h, w = (s.H, s.W) if self.crop_size is None else (self.crop_size, self.crop_size)
        images = self._read_images(si, pos, (y, x, h, w), np.dtype(self.images))
        meta = {"seq": s.name, "frame_idx": s.frame_idx[sl].tolist(), "t0": s.t0[sl].tolist(),
                "t1": s.t1[sl].tolist(), "crop": (y, x)}
        item = {"blur": torch.from_numpy(images["blur"]), "sharp": torch.from_numpy(images["sharp"])}
        if self.with_spike and self.voxels == "counts":
            item["spike_counts"] = torch.from_numpy(self._read_counts(si, pos, (y, x, h, w)))
            meta["scale"] = s.scale
        elif self.with_spike:
            item["spike_vox"] = torch.from_numpy(self._read_spike(si, pos, (y, x, h, w)))
        item["meta"] = meta
        return item

    def _read_images(self, si: int, pos: int, box: tuple[int, int, int, int],
                     dtype: np.dtype = np.dtype(np.float32)) -> dict[str, np.ndarray]:
        """Blur and sharp ``[T, 3, h, w]`` float32 RGB in [0, 1] (``dtype`` uint8: the stored values) under
        the RGB box ``(y, x, h, w)``: only the ``rgb.zarr`` chunks under it are read."""
        s = self.sequences[si]
        y, x, h, w = box
        rows = s.vox_index[pos:pos + self.clip_len].tolist()
        images = {}
        for kind in ("blur", "sharp"):
            reader = self._reader(si, kind)
            frames = [reader.read(n, y, y + h, x, x + w) for n in rows]
            images[kind] = unit_frames(frames, (h, w)) if dtype == np.float32 else \
                np.stack(frames).astype(dtype, copy=False)
        return images

    def _read_counts(self, si: int, pos: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """Stored counts ``[T, K, h/sy, w/sx]`` under the RGB box ``(y, x, h, w)`` (aligned to the scale)."""
        s = self.sequences[si]
        sy, sx = s.scale
        y, x, h, w = box
        reader = self._reader(si)
        ys, xs = y // sy, x // sx
        return np.stack([reader.read(n, ys, ys + h // sy, xs, xs + w // sx)
                         for n in s.vox_index[pos:pos + self.clip_len].tolist()])

    def _read_spike(self, si: int, pos: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """Normalised voxels ``[T, K, h, w]`` (float32, RGB grid; totals-only with ``totals_only``) of the clip
        at ``pos`` of sequence ``si`` under the RGB box ``(y, x, h, w)`` (aligned to the scale): only its chunks
        are read."""
        _, _, h, w = box
        voxels = totals_only_voxels if self.totals_only else normalised_voxels
        return voxels(self._read_counts(si, pos, box), self._vox_lut, self.sequences[si].scale, self.num_bins, (h, w))


# ---- each kept frame once ------------------------------------------------------------------------------
def first_seen(done: set, seq: str, frames: Sequence[Hashable]) -> list[tuple[int, Hashable]]:
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
        yield i, item, first_seen(done, item["meta"]["seq"], item["meta"]["frame_idx"])


# ---- collate ---------------------------------------------------------------------------------------
REQUIRED_KEYS = ("blur", "sharp")          # spike_vox is absent in the spike-free arm's items


def _signature(sample: dict) -> tuple:
    return tuple((k, tuple(sample[k].shape), sample[k].dtype) for k in TENSOR_KEYS if k in sample)


def collate_drop_bad(batch: list) -> dict | None:
    """Collate Dataset items, dropping ``None`` samples and samples whose tensor shapes disagree with
    the batch majority (each with a logged warning). Tensors are stacked (``[B, T, ...]``), meta becomes lists
    per key plus ``n_dropped`` (the batch's drops: the trainer adds them up, across DataLoader workers).
    ``None`` when nothing is left."""
    good, dropped = [], 0
    for i, sample in enumerate(batch):
        if sample is None or not isinstance(sample, dict) or any(k not in sample for k in REQUIRED_KEYS):
            log.warning("collate: dropping sample %d of %d: unreadable (see the warning above)", i,
                        len(batch))
            dropped += 1
        else:
            good.append(sample)
    if good:
        sigs = [_signature(s) for s in good]
        majority = Counter(sigs).most_common(1)[0][0]
        kept = []
        for s, sig in zip(good, sigs):
            if sig == majority:
                kept.append(s)
                continue
            shapes = {k: tuple(s[k].shape) for k in TENSOR_KEYS if k in s}
            want = {k: shape for k, shape, _ in majority}
            log.warning("collate: dropping %s frames %s: shapes %s disagree with the batch majority %s",
                        s["meta"].get("seq"), s["meta"].get("frame_idx"), shapes, want)
            dropped += 1
        good = kept
    if not good:
        log.warning("collate: all %d samples of the batch are bad; batch skipped", len(batch))
        return None
    out = {k: default_collate([s[k] for s in good]) for k in TENSOR_KEYS if k in good[0]}
    meta = {key: [s["meta"][key] for s in good] for key in good[0]["meta"]}
    meta["n_dropped"] = dropped
    out["meta"] = meta
    return out
