"""What ``spikeprep test`` reads (DESIGN sections 2 and 8): frame and count sources, sequences, clips.

Next to the Dataset (``spikeprep.spike_deblur_dataset``) and sharing its code: a store sequence is the
Dataset's (``load_sequences``: the frames the manifest keeps, in frame order), a clip is read and
normalised by the same functions (``unit_frames``, ``normalised_voxels``), and clips are laid out like the
Dataset's validation clips (``clip_starts``).

* ``FrameSource`` / ``CountSource``: the interface of the blur-frame and voxel-count sources
  (``FileFrames`` and ``ArrayFrames``; ``NpyCounts`` and ``ArrayCounts``).
* ``InputSequence``: one sequence to deblur (frames, counts matched to them, runs of consecutive frames).
* Discovery: ``find_blur_sequences``, ``find_vox_sequences``, ``StoreIndex`` (a store), ``pair_counts``,
  and ``resolve_sequences`` (the command's inputs -> sequences).
* ``deblurrable_runs`` (runs of ``MIN_FRAMES`` or more) and ``plan_clips``: the frame positions of each clip.

Every bad input is an ``InputError`` naming the file and the fix.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from schemas.config import Config
from schemas.manifest import STATUS_OK
from schemas.store import DATASET_FILENAME, VOX_ARRAY, VOX_DIRNAME
from spikeprep.errors import InputError, SampleError
from spikeprep.images import read_rgb
from spikeprep.spike_deblur_dataset import (SEQUENCE_COLUMNS, clip_starts, consecutive_runs, load_sequences,
                                            norm_lut, normalised_voxels, totals_lut, totals_only_voxels,
                                            unit_frames)
from spikeprep.store import ChunkReader, read_manifest, read_store_info

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOX_SUFFIX = ".npy"
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
@runtime_checkable
class FrameSource(Protocol):
    """The blur frames of one sequence, in order (``FileFrames``, ``ArrayFrames``)."""

    where: Path                # the folder or array they come from (error messages name it)
    stems: list[str]           # frame ``i``'s name stem (outputs and voxels are matched by it)
    hw: tuple[int, int]        # every frame's (H, W)

    def __len__(self) -> int: ...

    def label(self, i: int) -> Path | str:
        """Where frame ``i`` lives, for error messages."""

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as uint8 ``[3, H, W]`` RGB; InputError (naming ``label(i)``) if unreadable."""


@runtime_checkable
class CountSource(Protocol):
    """The voxel counts of one sequence, in order (``NpyCounts``, ``ArrayCounts``)."""

    where: Path
    stems: list[str] | None    # frame names to match blur frames by; None: matched by order only
    shape: tuple[int, int, int]  # every frame's (K, Hs, Ws)

    def __len__(self) -> int: ...

    def label(self, i: int) -> Path | str:
        """Where frame ``i``'s counts live, for error messages."""

    def read(self, i: int) -> np.ndarray:
        """Frame ``i``'s counts ``[K, Hs, Ws]`` as uint8/uint16 (see :func:`as_counts`)."""


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
    blur: FrameSource
    counts: CountSource | None = None
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

    def load_clip(self, positions: Sequence[int], lut: np.ndarray | None, num_bins: int,
                  totals_only: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Blur ``[T, 3, H, W]`` in [0, 1] and normalised voxels ``[T, K, H, W]`` (float32, RGB grid; totals-only
        with ``totals_only``, ``lut`` then ``spike_lut``'s totals table), exactly as ``SpikeDeblurDataset`` serves
        them; voxels are None without counts or ``lut``."""
        blur = unit_frames([self.blur.read(p) for p in positions], self.blur.hw)
        if self.counts is None or lut is None:
            return blur, None
        counts = [self.counts.read(self.vox_pos[p]) for p in positions]
        voxels = totals_only_voxels if totals_only else normalised_voxels
        return blur, voxels(counts, lut, self.scale, num_bins, self.blur.hw)


def spike_lut(cfg: Config) -> np.ndarray:
    """The Dataset's normalisation table for the checkpoint config's DATA.NORM, for any uint8/uint16 count
    (``lut[c]`` is the same number for both dtypes): ``norm_lut``, or ``totals_lut`` (of a pixel's total over
    DATA.K bins) when DATA.TOTALS_ONLY."""
    if cfg.DATA.TOTALS_ONLY:
        return totals_lut(cfg.DATA.NORM.MEAN, cfg.DATA.NORM.STD, cfg.DATA.K, np.uint16)
    return norm_lut(cfg.DATA.NORM.MEAN, cfg.DATA.NORM.STD, np.uint16)


def pair_counts(seq: InputSequence, counts: CountSource, num_bins: int) -> InputSequence:
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


def find_blur_sequences(root: Path) -> tuple[dict[str, FrameSource], bool]:
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


def find_vox_sequences(root: Path) -> tuple[dict[str, CountSource], bool]:
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
    seqs: dict[str, CountSource] = {}
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
        self.table = read_manifest(self.root).select(list(SEQUENCE_COLUMNS)).to_pydict()
        self.rows: dict[str, list[dict]] = {}
        for r in (dict(zip(self.table, values)) for values in zip(*self.table.values())):
            if r["vox_index"] is not None:
                self.rows.setdefault(f"{r['split']}/{r['seq']}", []).append(r)
        for key in self.rows:
            self.rows[key].sort(key=lambda r: r["frame_idx"])
        self._kept: dict[str, dict] = {}  # per split: the Dataset's sequences by name (read on first use)

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

    def kept(self, key: str):
        """The Dataset's view of store sequence ``key`` (``split/name``): its kept frames (status ok, with
        voxels) in frame order (``spike_deblur_dataset.load_sequences``); InputError when it has none."""
        split, name = key.split("/", 1)
        if split not in self._kept:
            # test deblurs unpaired frames (a rig recording without ground truth) like paired ones
            self._kept[split] = {s.name: s for s in load_sequences(self.root, self.info, split, self.table,
                                                                   unpaired=True)}
        kept = self._kept[split].get(name)
        if kept is None or not len(kept.frame_idx):
            raise InputError(self.root / "manifest.parquet", f"{key}: no kept frame with voxels",
                             fix="see the manifest's reason column (`spikeprep audit`)")
        return kept

    def sequence(self, key: str) -> InputSequence:
        """A store sequence with its own blur frames: the frames the manifest keeps, as validation."""
        split, name = key.split("/", 1)
        kept = self.kept(key)
        stems = [Path(b).stem for b in kept.blur]
        rgb = Path(kept.rgb_path)
        if _is_zarr_array(rgb / "blur"):
            frames: FrameSource = ArrayFrames(rgb / "blur", kept.vox_index.tolist(), stems)
        else:  # stores without decoded frames: the linked PNGs
            frames = FileFrames([Path(b) for b in kept.blur], self.root / key / "blur")
        seq = InputSequence(name, frames, split=split)
        seq.counts = ArrayCounts(Path(kept.vox_path), kept.vox_index.tolist(), stems)
        seq.vox_pos = list(range(len(stems)))
        seq.scale = kept.scale
        # Clips never span a frame the manifest dropped: the Dataset's own run splitting.
        seq.runs = consecutive_runs(kept.frame_idx)
        dropped = len(self.rows.get(key, [])) - len(stems)
        if dropped:
            seq.skipped.append(f"{key}: {dropped} frame(s) dropped in the manifest are not deblurred")
        return seq


def _store_sequences(store: StoreIndex, wanted: list[str], split: str | None, val_split: str,
                     use_spike: bool) -> list[InputSequence]:
    """A store's sequences with its own blur frames: ``wanted`` (in ``split``, else wherever they are, the
    val split preferred), else every sequence of ``split`` (default ``val_split``)."""
    if wanted:
        keys = [store.key(name, split, val_split) for name in wanted]
    else:
        split = split or val_split
        keys = sorted(k for k, s in store.info.sequences.items() if s.split == split)
        if not keys:
            splits = sorted({s.split for s in store.info.sequences.values()})
            raise InputError(store.root / DATASET_FILENAME, f"split {split!r} has no sequence (the store "
                             f"has {splits})", fix="pass --split with one of these")
    out = [store.sequence(k) for k in keys]
    if not use_spike:
        for s in out:
            s.counts = None
    return out


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
        return _store_sequences(store, wanted, split, cfg.DATA.VAL_SPLIT, use_spike), notes

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




MIN_FRAMES = 2  # VRT's parallel warping needs a neighbour frame: `test` skips runs shorter than this


def deblurrable_runs(runs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs ``(start, length)`` that ``spikeprep test`` deblurs: those of ``MIN_FRAMES`` frames or more."""
    return [(a, n) for a, n in runs if n >= MIN_FRAMES]


def plan_clips(runs: Sequence[tuple[int, int]], clip_len: int) -> list[list[int]]:
    """Frame positions of each clip: per run, the Dataset's validation clips (``clip_starts``); a run
    shorter than ``clip_len`` (or ``clip_len`` 0) is one clip."""
    clips = []
    for start, length in runs:
        n = length if clip_len <= 0 or length < clip_len else clip_len
        clips += [list(range(start + o, start + o + n)) for o in clip_starts(length, n, train=False)]
    return clips


