"""``spikeprep test`` (original section 9; DESIGN sections 2 and 8): deblur frames with a trained checkpoint.

Launch::

    spikeprep test --ckpt outputs/ckpts/spike/best.pth --store data/store --split val --output outputs/test/spike
    spikeprep test --ckpt CKPT --input_blur DIR --input_spike_vox DATA_ROOT|VOX_DIR --output DIR
    spikeprep test --ckpt outputs/ckpts/base/best.pth --input_blur DIR --output DIR    # spike-free arm

From Python: ``run_test(ckpt=..., output=..., store=..., split="val")`` (what the command calls).

Inputs
    ``--input_blur DIR``: blurred frames (PNG/JPEG, natural name order) of one sequence, or a folder whose
    subfolders (or their ``blur/``) are sequences. ``--input_spike_vox``: a store (``DATA_ROOT`` with
    ``dataset.json``; its ``spike_vox.zarr`` counts), a folder of per-frame ``.npy`` counts ``[K, Hs, Ws]``
    (the original document's voxel cache, raw counts before log1p; subfolders or ``<seq>/spike_vox/`` for
    several sequences), or one ``spike_vox.zarr`` (a store's group, or a bare zarr array). Voxels are matched to blur frames by name stem
    (``000000.png`` <-> ``000000.npy``), else by order when the counts agree. ``--store DATA_ROOT`` alone
    takes the blur frames from the store too (its ``rgb.zarr``), frames the manifest keeps (status ok),
    as validation sees them. The spike-free arm needs no voxels.
Normalisation
    Exactly the Dataset's: ``norm_lut`` + ``normalise_upsample`` of ``spikeprep.spike_deblur_dataset``
    with the checkpoint config's DATA.NORM MEAN/STD, each spike pixel replicated onto the RGB grid.
Clips
    DATA.CLIP_LEN frames (``--clip-len``), laid out like the Dataset's validation clips: non-overlapping,
    the last one aligned to the end of its run of consecutive frames; a frame in two clips keeps the
    output of the first. Runs shorter than a clip form one clip. Each clip goes through
    ``tiled_inference`` (spatial tiles ``--tile``/``--overlap``) under ``torch.no_grad``.
Output
    ``OUTPUT/<seq>/<frame stem>.png`` (or ``.jpg``), uint8 RGB, one per input frame, and nothing else
    there (the original allows only PNG/JPEG). The metrics JSON goes to
    ``<LOG.SAVE_DIR of the checkpoint config>/metrics/test_<YYYYmmdd_HHMMSS>.json`` (``--metrics-dir``):
    checkpoint, arm, step, inputs, sequences and frames, model and total seconds per frame, peak memory
    in MiB and how it was measured (``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS
    ``ru_maxrss`` on CPU), device, clip length, tile and overlap.
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import check_compatible, checkpoint_config, load_checkpoint, model_from_checkpoint
from model.nets.integrate_vrt import SpikeVRT, tiled_inference
from model.metrics import tensor_to_uint8
from schemas.config import Config, load_config
from schemas.manifest import STATUS_OK
from schemas.store import DATASET_FILENAME, RGB_DIRNAME, VOX_ARRAY, VOX_DIRNAME
from schemas.atomic import atomic_write_text
from spikeprep.errors import InputError, SampleError
from spikeprep.images import IMAGE_FORMATS, read_rgb, write_rgb
from spikeprep.spike_deblur_dataset import clip_starts, consecutive_runs, norm_lut, normalise_upsample
from spikeprep.store import ChunkReader, read_manifest, read_store_info

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOX_SUFFIX = ".npy"
METRICS_VERSION = 1
MIN_FRAMES = 2  # VRT's parallel warping needs a neighbour frame
MAX_COUNT = np.iinfo(np.uint16).max


# ---- file discovery ---------------------------------------------------------------------------------
def natural_key(name: str) -> list:
    """Sort key that orders ``2.png`` before ``10.png`` (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Visible files of ``folder`` with one of ``suffixes`` (any case), in natural name order."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes]
    return sorted(files, key=lambda p: natural_key(p.name))


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def _seq_name(folder: Path) -> str:
    """A sequence folder's name; ``seq/blur`` and ``seq/spike_vox`` are named after ``seq``."""
    folder = folder.resolve()
    if folder.name in ("blur", "spike_vox", VOX_DIRNAME) and folder.parent.name:
        return folder.parent.name
    return folder.name


def _is_zarr_array(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("node_type") == "array"
    except (OSError, ValueError):
        return False


def _vox_array(path: Path) -> Path | None:
    """The counts array at ``path``: a ``spike_vox.zarr`` group's ``counts``, or a bare zarr array (what
    stores before version 3 and users' own arrays hold); None when there is neither."""
    for candidate in (path / VOX_ARRAY, path):
        if _is_zarr_array(candidate):
            return candidate
    return None


def is_store(path: Path) -> bool:
    """True for a spikeprep store (``DATA_ROOT`` with ``dataset.json``)."""
    return (Path(path) / DATASET_FILENAME).is_file()


# ---- frame and voxel sources ------------------------------------------------------------------------
class FileFrames:
    """Blur frames of one sequence from image files."""

    def __init__(self, files: Sequence[Path], where: Path):
        self.files = list(files)
        self.where = where
        self.stems = [f.stem for f in self.files]
        self.hw = tuple(read_rgb(self.files[0]).shape[1:])

    def __len__(self) -> int:
        return len(self.files)

    def label(self, i: int) -> Path:
        """Frame ``i``'s file (where error messages point)."""
        return self.files[i]

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as uint8 ``[3, H, W]`` RGB; InputError if unreadable or not the first frame's size."""
        return read_rgb(self.files[i], self.hw, expected="the sequence's first frame is")


class ArrayFrames:
    """Blur frames of one store sequence from its ``rgb.zarr`` (the frames ingest decoded)."""

    def __init__(self, path: Path, rows: Sequence[int], stems: Sequence[str]):
        self.where = path
        self.rows = [int(r) for r in rows]
        self.stems = list(stems)
        self.reader = ChunkReader(path)
        self.hw = tuple(self.reader.shape[2:])

    def __len__(self) -> int:
        return len(self.rows)

    def label(self, i: int) -> str:
        """``"{array} row {n}"`` of frame ``i`` (where error messages point)."""
        return f"{self.where} row {self.rows[i]}"

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` (array row ``rows[i]``) as uint8 ``[3, H, W]`` RGB; InputError if unreadable."""
        return _read_rows(self.reader, self.rows[i], self.where)


def _read_rows(reader: ChunkReader, n: int, where: Path) -> np.ndarray:
    _, _, h, w = reader.shape
    try:
        return reader.read(n, 0, h, 0, w)
    except (SampleError, OSError) as err:
        raise InputError(where, f"cannot read row {n} ({err})", fix="re-run `spikeprep ingest` (a rerun "
                         "rebuilds damaged sequences)") from None


def as_counts(arr: np.ndarray, where: Path | str) -> np.ndarray:
    """Voxel counts as uint8/uint16 (what the normalisation table indexes).

    Float files (the original document's ``voxelize`` returns float32 counts) must hold whole
    non-negative numbers: anything else is an already-normalised voxel, which would be normalised twice.
    """
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(where, f"voxel dtype {arr.dtype} is not a count", fix="save raw spike counts per bin")
    if np.issubdtype(arr.dtype, np.floating) and not (np.all(np.isfinite(arr)) and np.all(arr == np.rint(arr))):
        raise InputError(where, "voxels hold non-integer values: they look normalised already (log1p / "
                         "MEAN / STD)", fix="pass raw counts per bin; spikeprep normalises them as training did")
    if arr.size and (arr.min() < 0 or arr.max() > MAX_COUNT):
        raise InputError(where, f"voxel counts span [{arr.min()}, {arr.max()}], outside [0, {MAX_COUNT}]",
                         fix="pass raw spike counts per bin (negative values mean normalised voxels)")
    return arr.astype(np.uint16)


class NpyCounts:
    """Per-frame ``.npy`` voxel counts ``[K, Hs, Ws]`` of one sequence (headers checked up front)."""

    def __init__(self, files: Sequence[Path], where: Path):
        self.files = list(files)
        self.where = where
        self.stems = [f.stem for f in self.files]
        shapes = []
        for f in self.files:
            try:
                shapes.append(tuple(np.load(f, mmap_mode="r", allow_pickle=False).shape))
            except Exception as err:  # truncated, not .npy, object array: all "not a voxel file"
                raise InputError(f, f"not a readable .npy ({type(err).__name__}: {str(err)[:120]})",
                                 fix="write each frame's counts with numpy.save (shape [K, Hs, Ws])") from None
        for f, s in zip(self.files, shapes):
            if len(s) != 3:
                raise InputError(f, f"voxel array of shape {s}; expected counts [K, Hs, Ws]",
                                 fix="save one frame's counts per file (the original document's voxel cache)")
            if s != shapes[0]:
                raise InputError(f, f"shape {s} differs from {self.files[0].name}'s {shapes[0]}",
                                 fix="all voxel files of a sequence share K and the spike grid")
        self.shape = shapes[0]

    def __len__(self) -> int:
        return len(self.files)

    def label(self, i: int) -> Path:
        """Frame ``i``'s ``.npy`` file (where error messages point)."""
        return self.files[i]

    def read(self, i: int) -> np.ndarray:
        """Frame ``i``'s counts ``[K, Hs, Ws]`` as uint8/uint16 (see :func:`as_counts`)."""
        return as_counts(np.load(self.files[i], allow_pickle=False), self.files[i])


class ArrayCounts:
    """Voxel counts of one sequence from a zarr counts array (``spike_vox.zarr/counts``; ``rows``: the frames,
    in order)."""

    def __init__(self, path: Path, rows: Sequence[int] | None = None, stems: Sequence[str] | None = None):
        self.where = path
        self.reader = ChunkReader(path)
        self.rows = list(range(self.reader.shape[0])) if rows is None else [int(r) for r in rows]
        self.stems = list(stems) if stems is not None else None
        self.shape = tuple(self.reader.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def label(self, i: int) -> str:
        """``"{array} row {n}"`` of frame ``i`` (where error messages point)."""
        return f"{self.where} row {self.rows[i]}"

    def read(self, i: int) -> np.ndarray:
        """Frame ``i``'s counts ``[K, Hs, Ws]`` (row ``rows[i]``) as uint8/uint16 (see :func:`as_counts`)."""
        return as_counts(_read_rows(self.reader, self.rows[i], self.where), self.where)


# ---- sequences --------------------------------------------------------------------------------------
@dataclass
class InputSequence:
    """One sequence to deblur: blur frames, their voxel counts (None for the spike-free arm), and runs.

    ``vox_pos[i]`` is the voxel frame of blur frame ``i``; ``runs`` are ``(start, length)`` of consecutive
    frames (clips never span a gap); ``scale`` is RGB / spike grid per axis.
    """

    name: str
    blur: FileFrames | ArrayFrames
    counts: NpyCounts | ArrayCounts | None = None
    vox_pos: list[int] = field(default_factory=list)
    scale: tuple[int, int] = (1, 1)
    runs: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    split: str | None = None       # the store split the voxels (and frames) came from

    @property
    def stems(self) -> list[str]:
        """File stems of the blur frames, in order (output images are named after them)."""
        return self.blur.stems

    def frames(self) -> int:
        """How many frames are deblurred: the total length of ``runs``."""
        return sum(n for _, n in self.runs)

    def load_clip(self, positions: Sequence[int], lut: np.ndarray | None,
                  num_bins: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Blur ``[T, 3, H, W]`` in [0, 1] and normalised voxels ``[T, K, H, W]`` (float32, RGB grid),
        exactly as ``SpikeDeblurDataset`` serves them; voxels are None without counts or ``lut``."""
        h, w = self.blur.hw
        blur = np.empty((len(positions), 3, h, w), np.float32)
        for t, p in enumerate(positions):
            np.copyto(blur[t], self.blur.read(p))
        np.divide(blur, np.float32(255.0), out=blur)
        if self.counts is None or lut is None:
            return blur, None
        spike = np.empty((len(positions), num_bins, h, w), np.float32)
        for t, p in enumerate(positions):
            normalise_upsample(self.counts.read(self.vox_pos[p]), lut, self.scale, out=spike[t])
        return blur, spike


def spike_lut(cfg: Config) -> np.ndarray:
    """The Dataset's normalisation table (``norm_lut``) for the checkpoint config's DATA.NORM, for any
    uint8/uint16 count (``lut[c]`` is the same number for both dtypes)."""
    return norm_lut(cfg.DATA.NORM.MEAN, cfg.DATA.NORM.STD, np.uint16)


def pair_counts(seq: InputSequence, counts: NpyCounts | ArrayCounts, num_bins: int) -> InputSequence:
    """Match ``counts`` to ``seq``'s blur frames (by stem, else by order) and check K and the grid."""
    blur = seq.blur
    if counts.stems is not None and set(blur.stems) <= set(counts.stems):
        index = {s: i for i, s in enumerate(counts.stems)}
        seq.vox_pos = [index[s] for s in blur.stems]
    elif len(counts) == len(blur):
        seq.vox_pos = list(range(len(blur)))
    else:
        raise InputError(counts.where, f"{len(counts)} voxel frames here but {len(blur)} blur frames in "
                         f"{blur.where}, and their names do not match",
                         fix="give one voxel frame per blur frame, named like it (000000.png <-> "
                         "000000.npy) or in the same sorted order")
    k, hs, ws = counts.shape
    if k != num_bins:
        raise InputError(counts.label(0), f"voxels hold K={k} time bins, the checkpoint was trained with "
                         f"K={num_bins} (DATA.K)", fix=f"voxelize with K={num_bins} (`spikeprep ingest --k "
                         f"{num_bins}`) or use a checkpoint trained with K={k}")
    h, w = blur.hw
    if hs > h or ws > w or h % hs or w % ws:
        raise InputError(counts.label(0), f"spike grid {hs}x{ws} does not divide the RGB frames {h}x{w} "
                         f"({blur.label(0)}) by a whole number per axis",
                         fix="the RGB size must be an integer multiple of the spike grid per axis (e.g. "
                         "1280x720 frames with 640x360 spikes); crop the frames or re-voxelize")
    seq.counts, seq.scale = counts, (h // hs, w // ws)
    counts.read(seq.vox_pos[0])  # fail before any output on voxels that are not counts (normalised ones)
    return seq


def find_blur_sequences(root: Path) -> tuple[dict[str, FileFrames], bool]:
    """Blur sequences under ``root``: its own images (one sequence, ``True``) or each subfolder's (or
    subfolder/blur's), named after the subfolder (``False``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder", fix="pass a folder of blurred PNG/JPEG frames")
    own = list_files(root, IMAGE_SUFFIXES)
    if own:
        return {_seq_name(root): FileFrames(own, root)}, True
    seqs = {}
    for sub in _subfolders(root):
        for folder in (sub, sub / "blur"):
            files = list_files(folder, IMAGE_SUFFIXES)
            if files:
                seqs[sub.name] = FileFrames(files, folder)
                break
    if not seqs:
        raise InputError(root, "no PNG/JPEG frames here, in its subfolders or in their blur/ folders",
                         fix="pass a folder of blurred frames, or a folder of sequence folders")
    return seqs, False


def find_vox_sequences(root: Path) -> tuple[dict[str, NpyCounts | ArrayCounts], bool]:
    """Voxel sequences under ``root`` (not a store): a ``spike_vox.zarr`` array or a folder of ``.npy``
    files (one sequence, ``True``), else per subfolder: its ``.npy``, ``spike_vox/*.npy`` or
    ``spike_vox.zarr`` (``False``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder", fix="pass a store (DATA_ROOT), a folder of per-frame .npy voxel "
                         "counts, or a spike_vox.zarr array")
    if _vox_array(root) is not None:
        return {_seq_name(root): ArrayCounts(_vox_array(root))}, True
    own = list_files(root, (VOX_SUFFIX,))
    if own:
        return {_seq_name(root): NpyCounts(own, root)}, True
    seqs: dict[str, NpyCounts | ArrayCounts] = {}
    for sub in _subfolders(root):
        for folder in (sub, sub / "spike_vox"):
            files = list_files(folder, (VOX_SUFFIX,))
            if files:
                seqs[sub.name] = NpyCounts(files, folder)
                break
        else:
            for folder in (sub, sub / VOX_DIRNAME):
                if _vox_array(folder) is not None:
                    seqs[sub.name] = ArrayCounts(_vox_array(folder))
                    break
    if not seqs:
        raise InputError(root, "no voxel counts here: no dataset.json (store), no .npy files, no spike_vox.zarr, "
                         "none in subfolders", fix="pass a store (DATA_ROOT), a folder of per-frame .npy counts "
                         "[K, Hs, Ws], or a folder of such folders")
    return seqs, False


class StoreIndex:
    """What ``test`` needs of a store: ``dataset.json`` and the manifest rows that have voxels."""

    def __init__(self, root: Path, num_bins: int | None):
        self.root = Path(root)
        self.info = read_store_info(self.root)
        if num_bins is not None and self.info.K != num_bins:
            raise InputError(self.root / DATASET_FILENAME, f"the store holds K={self.info.K} time bins, the "
                             f"checkpoint was trained with K={num_bins} (DATA.K)",
                             fix=f"use a store ingested with `--k {num_bins}` or a checkpoint trained with "
                             f"K={self.info.K}")
        cols = ["split", "seq", "frame_idx", "blur", "vox_index", "status", "reason"]
        rows = read_manifest(self.root).select(cols).to_pylist()
        self.rows: dict[str, list[dict]] = {}
        for r in rows:
            if r["vox_index"] is not None:
                self.rows.setdefault(f"{r['split']}/{r['seq']}", []).append(r)
        for key in self.rows:
            self.rows[key].sort(key=lambda r: r["frame_idx"])

    def key(self, name: str, split: str | None, prefer_split: str) -> str:
        """``split/name`` of the store sequence called ``name`` (in ``split`` when given)."""
        cands = sorted(k for k, s in self.info.sequences.items()
                       if k.split("/", 1)[1] == name and (split is None or s.split == split))
        if len(cands) > 1:
            preferred = [k for k in cands if k.startswith(prefer_split + "/")]
            if len(preferred) != 1:
                raise InputError(self.root / DATASET_FILENAME, f"sequence {name!r} is in several splits "
                                 f"({cands})", fix="pass --split")
            cands = preferred
        if not cands:
            have = sorted(k for k, s in self.info.sequences.items() if split is None or s.split == split)
            raise InputError(self.root / DATASET_FILENAME, f"no sequence {name!r}"
                             f"{f' in split {split!r}' if split else ''} in the store (it has "
                             f"{have[:8]}{'...' if len(have) > 8 else ''})",
                             fix="name the blur folder like the store's sequence, or pass --seq NAME "
                             "(and --split)")
        return cands[0]

    def counts(self, key: str) -> ArrayCounts:
        """Voxel counts of store sequence ``key`` (``split/name``): the manifest rows with voxels in frame
        order, whatever their status, each labelled with its blur file's stem."""
        rows = self.rows.get(key, [])
        return ArrayCounts(self.root / key / VOX_DIRNAME / VOX_ARRAY, [r["vox_index"] for r in rows],
                           [Path(r["blur"]).stem for r in rows])

    def sequence(self, key: str) -> InputSequence:
        """A store sequence with its own blur frames: the frames the manifest keeps, as validation."""
        seq_info = self.info.sequences[key]
        rows = self.rows.get(key, [])
        kept = [r for r in rows if r["status"] == STATUS_OK]
        if not kept:
            raise InputError(self.root / "manifest.parquet", f"{key}: no kept frame with voxels",
                             fix="see the manifest's reason column (`spikeprep audit`)")
        stems = [Path(r["blur"]).stem for r in kept]
        rgb = self.root / key / RGB_DIRNAME
        if _is_zarr_array(rgb / "blur"):
            frames: FileFrames | ArrayFrames = ArrayFrames(rgb / "blur", [r["vox_index"] for r in kept], stems)
        else:  # stores without decoded frames: the linked PNGs
            frames = FileFrames([self.root / r["blur"] for r in kept], self.root / key / "blur")
        seq = InputSequence(key.split("/", 1)[1], frames, split=key.split("/", 1)[0])
        seq.counts = ArrayCounts(self.root / key / VOX_DIRNAME / VOX_ARRAY, [r["vox_index"] for r in kept], stems)
        seq.vox_pos = list(range(len(kept)))
        seq.scale = (int(seq_info.scale[0]), int(seq_info.scale[1]))
        # Clips never span a frame the manifest dropped: the Dataset's own run splitting.
        seq.runs = consecutive_runs(np.asarray([r["frame_idx"] for r in kept], np.int64))
        dropped = len(rows) - len(kept)
        if dropped:
            seq.skipped.append(f"{key}: {dropped} frame(s) dropped in the manifest are not deblurred")
        return seq


def resolve_sequences(*, num_bins: int, use_spike: bool, cfg: Config, input_blur: Path | None = None,
                      input_spike_vox: Path | None = None, split: str | None = None,
                      seqs: Sequence[str] = ()) -> tuple[list[InputSequence], list[str]]:
    """The sequences to deblur and notes for the user, from the command's inputs (module docstring).

    Raises:
        InputError: nothing to run, count/K/grid mismatches, unknown sequences (message names the file).
    """
    notes: list[str] = []
    need_store = input_spike_vox is not None and is_store(input_spike_vox) and (input_blur is None or use_spike)
    # The spike-free arm reads no voxels, so the store's K does not matter to it.
    store = StoreIndex(input_spike_vox, num_bins if use_spike else None) if need_store else None
    if store is not None and use_spike and store.info.stats is not None:
        mean, std = cfg.DATA.NORM.MEAN, cfg.DATA.NORM.STD
        stats = store.info.stats
        if not (np.isclose(mean, stats.mean, rtol=1e-6) and np.isclose(std, stats.std, rtol=1e-6)):
            notes.append(f"the checkpoint's DATA.NORM (MEAN={mean!r}, STD={std!r}) differs from the store's "
                         f"training stats (MEAN={stats.mean!r}, STD={stats.std!r}); voxels are normalised "
                         "with the checkpoint's, as the model learnt them")
    wanted = list(seqs)
    if input_blur is None:
        if store is None:
            raise InputError(input_spike_vox, "no blur frames given (this is not a store to take them from)",
                             fix="pass --input_blur DIR, or a store (--store DATA_ROOT) to take the frames from")
        if wanted:  # named sequences: in --split, else wherever they are (the val split preferred)
            keys = [store.key(name, split, cfg.DATA.VAL_SPLIT) for name in wanted]
        else:
            split = split or cfg.DATA.VAL_SPLIT
            keys = sorted(k for k, s in store.info.sequences.items() if s.split == split)
            if not keys:
                splits = sorted({s.split for s in store.info.sequences.values()})
                raise InputError(store.root / DATASET_FILENAME, f"split {split!r} has no sequence (the store "
                                 f"has {splits})", fix="pass --split with one of these")
        out = [store.sequence(k) for k in keys]
        if not use_spike:
            for s in out:
                s.counts = None
        return out, notes

    blur_seqs, single = find_blur_sequences(input_blur)
    if single and len(wanted) > 1:
        raise InputError(input_blur, f"one sequence of frames here but --seq names {len(wanted)}",
                         fix="pass one --seq, or a folder of sequence folders")
    if single and wanted:  # --seq names the one sequence (its output folder and its store sequence)
        blur_seqs = {wanted[0]: next(iter(blur_seqs.values()))}
    elif wanted:
        missing = [n for n in wanted if n not in blur_seqs]
        if missing:
            raise InputError(input_blur, f"no sequence folder {missing} here (found {sorted(blur_seqs)})",
                             fix="pass --seq with one of the found names")
        blur_seqs = {n: blur_seqs[n] for n in wanted}
    out = [InputSequence(name, frames) for name, frames in blur_seqs.items()]
    for s in out:
        s.runs = [(0, len(s.blur))]
    if not use_spike:
        if input_spike_vox is not None:
            notes.append(f"the spike-free arm ('base' checkpoint) uses no voxels: {input_spike_vox} ignored")
        return out, notes
    if input_spike_vox is None:
        raise InputError(input_blur, "the spike arm needs voxel counts for these frames",
                         fix="pass --input_spike_vox DATA_ROOT|VOX_DIR, or a 'base' checkpoint for the "
                         "spike-free arm")
    if store is not None:
        for s in out:
            key = store.key(s.name, split, cfg.DATA.VAL_SPLIT)
            pair_counts(s, store.counts(key), num_bins)
            s.split = key.split("/", 1)[0]
            rows = store.rows.get(key, [])
            dropped = sum(rows[i]["status"] != STATUS_OK for i in s.vox_pos)
            if dropped:
                notes.append(f"{s.name}: {dropped} frame(s) are marked dropped in {store.root}'s manifest "
                             "(see its reason column); deblurred anyway")
        return out, notes
    vox_seqs, vox_single = find_vox_sequences(input_spike_vox)
    for s in out:
        if len(out) == 1 and (single or vox_single) and len(vox_seqs) == 1:
            counts = next(iter(vox_seqs.values()))  # one of each: paired whatever their names
        elif s.name in vox_seqs:
            counts = vox_seqs[s.name]
        else:
            raise InputError(input_spike_vox, f"no voxels for sequence {s.name!r} (found {sorted(vox_seqs)})",
                             fix="name the voxel folders like the blur folders")
        pair_counts(s, counts, num_bins)
    return out, notes


# ---- running ----------------------------------------------------------------------------------------
@dataclass
class InferenceReport:
    """What ``run_test`` did: the images written, the metrics JSON and its content, notes for the user."""

    images: list[Path]
    metrics_path: Path
    metrics: dict
    notes: list[str]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; refuses cuda on a machine without it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"device {device!r} asked for, but CUDA is not available here",
                         fix="pass --device cpu (or auto)")
    return dev


def plan_clips(runs: Sequence[tuple[int, int]], clip_len: int) -> list[list[int]]:
    """Frame positions of each clip: per run, the Dataset's validation clips (``clip_starts``); a run
    shorter than ``clip_len`` (or ``clip_len`` 0) is one clip."""
    clips = []
    for start, length in runs:
        n = length if clip_len <= 0 or length < clip_len else clip_len
        clips += [list(range(start + o, start + o + n)) for o in clip_starts(length, n, train=False)]
    return clips


def _peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10


def _metrics_path(folder: Path, now: dt.datetime) -> Path:
    path = folder / f"test_{now:%Y%m%d_%H%M%S}.json"
    n = 1
    while path.exists():  # two runs in one second keep both reports
        n += 1
        path = folder / f"test_{now:%Y%m%d_%H%M%S}_{n}.json"
    return path


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_tiles(tile: Sequence[int], overlap: Sequence[int]) -> None:
    if len(tile) != 3 or len(overlap) != 3:
        raise InputError(None, f"tile {tuple(tile)} / overlap {tuple(overlap)} need 3 numbers (frames, height, "
                         "width)", fix="e.g. --tile 0 256 256 --overlap 2 20 20")
    for axis, t, o in zip(("frames", "height", "width"), tile, overlap):
        if t < 0 or o < 0 or (t > 0 and o >= t):
            raise InputError(None, f"tile {t} / overlap {o} on {axis}: need tile >= 0 (0: no tiling) and "
                             f"0 <= overlap < tile", fix="e.g. --tile 0 256 256 --overlap 2 20 20")


def _load_model(ckpt_path: Path, use_spike: bool | None, config: Path | None) -> tuple[dict, Config, SpikeVRT]:
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")  # weights_only=True
    check_compatible(ckpt, ckpt_path, use_spike=use_spike, cfg=load_config(config) if config else None)
    cfg = checkpoint_config(ckpt, ckpt_path)
    try:
        model = model_from_checkpoint(ckpt, ckpt_path)
    except RuntimeError as err:  # strict load: same keys, other shapes
        raise InputError(ckpt_path, f"weights do not fit the stored config ({str(err)[:300]})",
                         fix="the checkpoint is damaged or edited; use another best.pth/last.pth") from None
    return ckpt, cfg, model.eval()


def run_test(*, ckpt: Path, output: Path, input_blur: Path | None = None, input_spike_vox: Path | None = None,
             store: Path | None = None, split: str | None = None, seqs: Sequence[str] = (),
             use_spike: bool | None = None, config: Path | None = None, clip_len: int | None = None,
             tile: Sequence[int] = (0, 256, 256), overlap: Sequence[int] = (2, 20, 20), device: str = "auto",
             image_format: str = "png", jpeg_quality: int = 95, metrics_dir: Path | None = None,
             progress: bool = False) -> InferenceReport:
    """Deblur every input frame with checkpoint ``ckpt``; write images and the metrics JSON.

    Args:
        ckpt: a ``best.pth``/``last.pth`` of ``spikeprep train`` (loaded with ``weights_only=True``).
        output: images go to ``output/<seq>/<frame stem>.<format>``.
        input_blur, input_spike_vox, store, split, seqs: the inputs (module docstring); ``store`` is a
            store that supplies voxels and, without ``input_blur``, the blur frames.
        use_spike: the arm expected (``True`` spike, ``False`` base, ``None`` the checkpoint's).
        config: a config the checkpoint must match (MODEL.*, DATA.K, DATA.NORM).
        clip_len: frames per clip (``None``: the checkpoint's DATA.CLIP_LEN; 0: whole runs).
        tile, overlap: ``(frames, height, width)`` of ``tiled_inference`` inside a clip (0: no tiling).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        image_format: ``png`` or ``jpg``; metrics_dir: default ``<LOG.SAVE_DIR>/metrics``.

    Raises:
        InputError: bad checkpoint (damaged, other arm, other config) or inputs; the message names the file.
    """
    t_start = time.perf_counter()
    if image_format not in IMAGE_FORMATS:
        raise InputError(None, f"image format {image_format!r}", fix=f"use one of {sorted(IMAGE_FORMATS)}")
    _check_tiles(tile, overlap)
    if store is not None and input_spike_vox is not None and Path(store).resolve() != Path(input_spike_vox).resolve():
        raise InputError(store, f"both --store and --input_spike_vox {input_spike_vox} given",
                         fix="give one source of voxels")
    if store is not None and not is_store(store):
        read_store_info(store)  # raises the store's own "no dataset.json" message
    spike_src = Path(store or input_spike_vox) if (store or input_spike_vox) else None
    if input_blur is None and spike_src is None:
        raise InputError(None, "no input frames", fix="pass --input_blur DIR (with --input_spike_vox for the spike "
                         "arm) or --store DATA_ROOT --split val")

    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    ckpt_path = Path(ckpt)
    ck, cfg, model = _load_model(ckpt_path, use_spike, config)
    arm, spike_arm = ck["arm"], ck["arm"] == "spike"
    model.to(dev)
    clip_len = cfg.DATA.CLIP_LEN if clip_len is None else int(clip_len)
    num_bins = cfg.DATA.K

    sequences, notes = resolve_sequences(num_bins=num_bins, use_spike=spike_arm, cfg=cfg, input_blur=input_blur,
                                         input_spike_vox=spike_src, split=split, seqs=seqs)
    for s in sequences:
        n_single = sum(n for _, n in s.runs if n < MIN_FRAMES)
        if n_single:
            s.skipped.append(f"{s.name}: {n_single} frame(s) without a kept neighbour skipped (VRT needs "
                             f"{MIN_FRAMES} frames per clip)")
            s.runs = [(a, n) for a, n in s.runs if n >= MIN_FRAMES]
        notes += s.skipped
    sequences = [s for s in sequences if s.runs]
    if not sequences:
        raise InputError(input_blur or spike_src, f"no sequence with {MIN_FRAMES} or more consecutive frames",
                         fix="VRT deblurs clips of at least 2 frames; pass longer sequences")

    suffix, flag = IMAGE_FORMATS[image_format]
    params = flag + [int(jpeg_quality)] if flag else []
    output = Path(output)
    metrics_folder = Path(metrics_dir) if metrics_dir is not None else Path(cfg.LOG.SAVE_DIR) / "metrics"
    if _inside(metrics_folder, output):
        raise InputError(metrics_folder, f"the metrics JSON would land inside the output folder {output}, "
                         "which holds images only (original section 9)",
                         fix="choose another --output (e.g. outputs/test/<exp>) or --metrics-dir")
    inputs = {p.resolve() for s in sequences if isinstance(s.blur, FileFrames) for p in s.blur.files}
    for s in sequences:
        if any((output / s.name / (stem + suffix)).resolve() in inputs for stem in s.stems):
            raise InputError(output, f"would overwrite the input frames of {s.name}", fix="choose another --output")

    lut = spike_lut(cfg) if spike_arm else None
    plans = [(s, plan_clips(s.runs, clip_len)) for s in sequences]
    n_clips = sum(len(c) for _, c in plans)
    images: list[Path] = []
    per_seq: dict[str, int] = {}
    model_s, first_clip_s = 0.0, None
    t_loop = time.perf_counter()
    bar = tqdm(total=n_clips, desc="test", unit="clip", disable=not progress)
    with torch.no_grad():
        for s, clips in plans:
            folder = output / s.name
            folder.mkdir(parents=True, exist_ok=True)
            done: set[int] = set()
            for positions in clips:
                blur, spike = s.load_clip(positions, lut, num_bins)
                b = torch.from_numpy(blur)[None].to(dev)
                v = torch.from_numpy(spike)[None].to(dev) if spike is not None else None
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                recon = tiled_inference(model, b, v, tile=tuple(tile), overlap=tuple(overlap), out_device="cpu")
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                dt_clip = time.perf_counter() - t0
                model_s += dt_clip
                first_clip_s = dt_clip if first_clip_s is None else first_clip_s
                frames = [tensor_to_uint8(frame) for frame in recon[0]]
                for t, p in enumerate(positions):
                    if p in done:  # the last clip of a run overlaps the previous one: keep the first output
                        continue
                    path = folder / (s.stems[p] + suffix)
                    write_rgb(path, frames[t], params)
                    images.append(path)
                    done.add(p)
                bar.update(1)
            per_seq[s.name] = len(done)
    bar.close()
    t_end = time.perf_counter()

    n_frames = len(images)
    rss = _peak_rss_mib()
    if dev.type == "cuda":
        peak, method = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
        device_name = torch.cuda.get_device_name(dev)
    else:
        peak, method = rss, "peak RSS (ru_maxrss) of the process" if rss is not None else "unavailable"
        device_name = platform.processor() or platform.machine()
    now = dt.datetime.now()
    metrics = {
        "version": METRICS_VERSION,
        "created": now.isoformat(timespec="seconds"),
        "checkpoint": str(ckpt_path.resolve()),
        "arm": arm,
        "exp": ck["exp"],
        "step": int(ck["step"]),
        "model": {"VRT_CFG": cfg.MODEL.VRT_CFG, "K": num_bins, "NORM": cfg.DATA.NORM.model_dump()},
        "inputs": {"blur": str(Path(input_blur).resolve()) if input_blur else None,
                   "spike_vox": str(spike_src.resolve()) if spike_src and spike_arm else None,
                   "store": (str(spike_src.resolve()) if spike_src and is_store(spike_src)
                             and (input_blur is None or spike_arm) else None),
                   "splits": sorted({s.split for s in sequences if s.split}) or None},
        "output": str(output.resolve()),
        "format": image_format,
        "sequences": per_seq,
        "frames": n_frames,
        "clips": n_clips,
        "clip_len": clip_len,
        "tile": list(tile),
        "overlap": list(overlap),
        "device": str(dev),
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "seconds_model": model_s,
        "seconds_first_clip": first_clip_s,
        "seconds_per_frame": model_s / n_frames,
        "seconds_per_frame_total": (t_end - t_loop) / n_frames,
        "seconds_setup": t_loop - t_start,
        "peak_memory_mib": peak,
        "peak_memory_method": method,
        "peak_rss_mib": rss,
        "notes": notes,
    }
    metrics_folder.mkdir(parents=True, exist_ok=True)
    path = _metrics_path(metrics_folder, now)
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")  # a reader never sees half a report
    return InferenceReport(images=images, metrics_path=path, metrics=metrics, notes=notes)
