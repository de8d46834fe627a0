"""Look at spikes before trusting them (``spikeprep view``): TFP and TFI reconstructions as frames and video.

Sources (``open_view_source``):

* a spike file: ``.dat`` (sensor size given; flipped upright by default) or a binary ``.npy`` / ``.npz``
  array (``[N, H, W]``, or ``[H, W, N]`` with ``axes="HWN"``);
* a spike directory holding ``meta.json``, or a native raw sequence holding ``spike/meta.json``: its
  stream, or its per-frame files one after another (frame-based formats: event lists are refused);
* a store (``DATA_ROOT`` with ``dataset.json``): the stored voxels of one sequence, one picture per blur frame.

Reconstructions (one way each, ``spikeprep.baselines``):

* TFP: ``tfp_rate``, the spike rate per frame over a window of ``tfp_width`` frames centred on each
  output instant (a sliding window; on store voxels, the centred ``tfp_width`` bins of each frame's window);
* TFI: ``tfi_rate``, ``1 / ISI`` of the interval spanning the instant, searched over ``tfi_window`` frames
  (on store voxels only where a bin is at most one spike frame wide, ``tfi_applies``).

Both are spike rates per frame, in [0, 1]; a picture is ``clip(rate * gain, 0, 1)`` as 8-bit grey (no
tone curve: the sensor's response is not known here). ``write_view`` writes ``OUT/tfp/NNNNNN.png``,
``OUT/tfi/NNNNNN.png`` and one ``OUT/tfp.mp4`` / ``OUT/tfi.mp4`` (or ``.gif``), and nothing outside ``OUT``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from schemas.atomic import atomic_path
from schemas.spike_meta import SPIKE_META_FILENAME, SpikeMeta
from schemas.store import DATASET_FILENAME, VOX_ARRAY, VOX_DIRNAME
from spikeprep.baselines import centred_bins, tfi_applies, tfi_rate, tfp_rate
from spikeprep.errors import InputError, SampleError
from spikeprep.formats.arrays import binary_array_num_frames, binary_array_shape, read_binary_array
from spikeprep.formats.dat import dat_num_frames, read_dat
from spikeprep.formats.meta import read_spike_meta
from spikeprep.images import write_rgb

METHODS = ("tfp", "tfi")
VIDEO_FORMATS = ("mp4", "gif", "none")


# ---- sources ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpikeFrames:
    """A frame-based recording read in ranges: ``read(a, b)`` gives upright ``[b - a, H, W]`` bool."""

    path: Path
    height: int
    width: int
    n_frames: int
    read: Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class StoreVoxels:
    """The stored voxels of one sequence of a store: ``counts(i)`` is ``[K, Hs, Ws]`` of blur frame ``i``."""

    path: Path
    frame_idx: list[int]
    n_ticks: list[int]
    counts: Callable[[int], np.ndarray]

    def select(self, frame_idx: list[int]) -> "StoreVoxels":
        """The same voxels restricted to blur frames ``frame_idx`` (in that order; each must be here)."""
        where = {f: i for i, f in enumerate(self.frame_idx)}
        missing = [f for f in frame_idx if f not in where]
        if missing:
            raise InputError(self.path, f"no voxels for blur frame(s) {missing[:5]}",
                             fix="`spikeprep verify DATA_ROOT` checks the store against its manifest")
        rows = [where[f] for f in frame_idx]
        return StoreVoxels(self.path, list(frame_idx), [self.n_ticks[i] for i in rows],
                           lambda i: self.counts(rows[i]))


def _file_reader(path: Path, meta: SpikeMeta) -> tuple[int, Callable[[int, int], np.ndarray]]:
    """(frames, read) of one frame-based spike file described by ``meta``."""
    h, w = meta.height, meta.width
    if meta.format == "dat":
        n = dat_num_frames(path, h, meta.stored_width)
        return n, lambda a, b: read_dat(path, h, w, a, b, flipud=meta.flipud, head_columns=meta.head_columns or 0)
    n = binary_array_num_frames(path, h, w, meta.axis_order)
    return n, lambda a, b: read_binary_array(path, h, w, a, b, axes=meta.axis_order)


def _concatenated(parts: list[tuple[int, Callable]]) -> tuple[int, Callable[[int, int], np.ndarray]]:
    """One reader over several files' frames, one after another."""
    starts = np.cumsum([0] + [n for n, _ in parts])

    def read(a: int, b: int) -> np.ndarray:
        pieces = []
        for (n, fn), s in zip(parts, starts[:-1].tolist()):
            lo, hi = max(a - s, 0), min(b - s, n)
            if lo < hi:
                pieces.append(fn(lo, hi))
        return np.concatenate(pieces, axis=0)

    return int(starts[-1]), read


def _from_spike_dir(spike_dir: Path) -> SpikeFrames:
    meta = read_spike_meta(spike_dir)
    where = spike_dir / SPIKE_META_FILENAME
    if meta.is_events:
        raise InputError(where, f"format {meta.format!r} is an event list; view reads frame-based spikes "
                                "(.dat, npy-binary, npz-binary)",
                         fix="view the event list's source recording, or convert the events to binary frames")
    if meta.layout == "stream":
        path = spike_dir / meta.stream_file
        if not path.is_file():
            raise InputError(path, "spike stream file named in meta.json not found",
                             fix="put the stream file there or correct 'stream_file' in meta.json")
        n, read = _file_reader(path, meta)
        return SpikeFrames(path, meta.height, meta.width, n, read)
    files = sorted(p for p in spike_dir.glob("*" + meta.suffix) if p.is_file())
    if not files:
        raise InputError(spike_dir, f"no {meta.suffix} spike files in this per-frame spike directory",
                         fix="check the path; per-frame layouts hold one spike file per blur frame")
    n, read = _concatenated([_file_reader(p, meta) for p in files])
    return SpikeFrames(spike_dir, meta.height, meta.width, n, read)


def _from_file(path: Path, height: int | None, width: int | None, flipud: bool, head_columns: int,
               axes: str) -> SpikeFrames:
    fix_size = "give the sensor size: --height H --width W (or view the spike directory with its meta.json)"
    if path.suffix == ".dat":
        if height is None or width is None:
            raise InputError(path, "a .dat file has no header: its frame size is not known", fix=fix_size)
        stored = width + head_columns
        if (height * stored) % 8:
            raise InputError(path, f"{height}x{stored} .dat frames are not whole bytes (height*width must be a "
                                   "multiple of 8)", fix=fix_size)
        meta = SpikeMeta(format="dat", layout="stream", height=height, width=width, rate_hz=1.0, flipud=flipud,
                         start_s=0.0, stream_file=path.name, head_columns=head_columns or None)
    elif path.suffix in (".npy", ".npz"):
        if height is None or width is None:
            arr_shape = binary_array_shape(path)
            height, width = arr_shape[1:] if axes == "NHW" else arr_shape[:2]
        meta = SpikeMeta(format=path.suffix[1:] + "-binary", layout="stream", height=height, width=width,
                         rate_hz=1.0, start_s=0.0, stream_file=path.name, axes=axes)
    else:
        raise InputError(path, f"cannot view a {path.suffix or 'suffix-less'} file",
                         fix="view a .dat, .npy or .npz spike file, a spike directory, a sequence or a store")
    n, read = _file_reader(path, meta)
    return SpikeFrames(path, meta.height, meta.width, n, read)


def _from_store(root: Path, seq: str | None) -> StoreVoxels:
    from spikeprep.store import ChunkReader, read_manifest_rows, read_store_info

    read_store_info(root)
    rows = [r for r in read_manifest_rows(root) if r.vox_index is not None]
    keys = sorted({f"{r.split}/{r.seq}" for r in rows})
    if not keys:
        raise InputError(root, "the store holds no voxels", fix="re-run `spikeprep ingest`")
    key = seq or keys[0]
    if key not in keys:
        raise InputError(root, f"no sequence {key!r} with voxels in this store (it has {', '.join(keys)})",
                         fix="pass --seq SPLIT/SEQ, one of those")
    rows = sorted((r for r in rows if f"{r.split}/{r.seq}" == key), key=lambda r: r.frame_idx)
    reader = ChunkReader(root / key / VOX_DIRNAME / VOX_ARRAY)     # every chunk checked, like the Dataset's reads
    index = [r.vox_index for r in rows]
    _, _, h, w = reader.shape

    def counts(i: int) -> np.ndarray:
        try:
            return reader.read(index[i], 0, h, 0, w)
        except (SampleError, OSError) as err:
            raise InputError(reader.path, f"cannot read voxel row {index[i]} ({err})",
                             fix="`spikeprep verify DATA_ROOT` lists the damage; an ingest rerun rebuilds it") from None

    return StoreVoxels(reader.path, [r.frame_idx for r in rows], [r.n_ticks for r in rows], counts)


def open_view_source(src: str | Path, *, height: int | None = None, width: int | None = None, flipud: bool = True,
                     head_columns: int = 0, axes: str = "NHW", seq: str | None = None) -> SpikeFrames | StoreVoxels:
    """What ``src`` holds: a frame-based recording (``SpikeFrames``) or a store's voxels (``StoreVoxels``)."""
    src = Path(src)
    if src.is_dir():
        if (src / DATASET_FILENAME).is_file():
            return _from_store(src, seq)
        if (src / SPIKE_META_FILENAME).is_file():
            return _from_spike_dir(src)
        if (src / "spike" / SPIKE_META_FILENAME).is_file():
            return _from_spike_dir(src / "spike")
        raise InputError(src, "neither a store (dataset.json), a spike directory (meta.json) nor a sequence "
                              "(spike/meta.json)", fix="view a spike file, a spike directory, a sequence or a store")
    if not src.is_file():
        raise InputError(src, "not found", fix="check the path")
    return _from_file(src, height, width, flipud, head_columns, axes)


# ---- reconstructions --------------------------------------------------------------------------------
def stream_instants(n_frames: int, tfp_width: int, tfi_window: int, step: int, start: int = 0,
                    stop: int | None = None) -> range:
    """Output instants ``c`` (spike frame indices) whose windows fit in ``[start, stop)``."""
    stop = n_frames if stop is None else min(stop, n_frames)
    half = max(tfp_width, tfi_window) // 2
    first, last = start + half, stop - (max(tfp_width, tfi_window) - half)
    return range(first, last + 1, step)


def stream_reconstructions(frames: SpikeFrames, instants: range, tfp_width: int,
                           tfi_window: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(c, {"tfp": rate, "tfi": rate})`` at each instant ``c``: float64 ``[H, W]`` spike rates per frame.

    TFP: ``tfp_rate`` over frames ``[c - w//2, c - w//2 + w)`` (one bin per frame); TFI: ``tfi_rate`` over
    frames ``[c - T//2, c - T//2 + T)``, whose centre bin is frame ``c``.
    """
    span = max(tfp_width, tfi_window)
    half = span // 2
    for c in instants:
        block = frames.read(c - half, c - half + span).view(np.uint8)
        a = half - tfp_width // 2
        b = half - tfi_window // 2
        yield c, {"tfp": tfp_rate(block[a:a + tfp_width], tfp_width),
                  "tfi": tfi_rate(block[b:b + tfi_window])}


def store_tfp_width(num_bins: int, tfp_width: int | None) -> int:
    """TFP width in bins for store voxels: the given one (checked) or about half the bins, centred."""
    if tfp_width is None:
        tfp_width = num_bins // 2 if (num_bins - num_bins // 2) % 2 == 0 else num_bins // 2 + 1
    centred_bins(num_bins, tfp_width)  # raises ValueError when it cannot be centred
    return tfp_width


def store_reconstructions(vox: StoreVoxels, tfp_width: int,
                          with_tfi: bool = True) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(frame_idx, {"tfp": rate[, "tfi": rate]})`` per blur frame: spike rates per spike frame.

    A bin of frame ``i`` spans ``n_ticks / K`` spike frames, so rates per bin are scaled by ``K / n_ticks``.
    TFI is given only where it applies (bins at most one spike frame wide) and ``with_tfi``.
    """
    for i, (f, n_ticks) in enumerate(zip(vox.frame_idx, vox.n_ticks)):
        counts = vox.counts(i)
        k = counts.shape[0]
        per_frame = k / max(n_ticks, 1)
        out = {"tfp": tfp_rate(counts, tfp_width) * per_frame}
        if with_tfi and tfi_applies(k, n_ticks) and counts.max(initial=0) <= 1:
            out["tfi"] = tfi_rate(counts) * per_frame
        yield f, out


# ---- output ------------------------------------------------------------------------------------------
def to_image(rate: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Spike rate ``[H, W]`` -> 8-bit grey ``[H, W]``: ``round(clip(rate * gain, 0, 1) * 255)``."""
    return np.round(np.clip(rate * gain, 0.0, 1.0) * 255.0).astype(np.uint8)


def prepare_out(out: Path, overwrite: bool, own: tuple[str, ...] = METHODS) -> Path:
    """Create ``out``; an existing non-empty folder needs ``overwrite``, and then only view's own outputs
    (``NAME/`` and ``NAME.mp4`` / ``NAME.gif`` for each NAME of ``own``: ``tfp``, ``tfi`` by default) are
    removed from it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", fix="name a new or empty folder with --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "folder is not empty", fix="name a new or empty folder, or pass --overwrite "
                                                            f"(replaces view's own {', '.join(n + '/' for n in own)}"
                                                            " and videos there)")
        for m in own:
            if (out / m).is_dir():
                shutil.rmtree(out / m)
            for fmt in VIDEO_FORMATS[:2]:
                (out / f"{m}.{fmt}").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


class VideoWriter:
    """Grey ``[H, W]`` or RGB ``[H, W, 3]`` uint8 frames -> one ``.mp4`` (OpenCV, mp4v; streamed) or ``.gif``
    (Pillow; held in memory, for short clips), written to a temp name and renamed on ``close`` (``atomic_path``)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._writer = None
        self._gif: list = []

    def add(self, frame: np.ndarray) -> None:
        import cv2

        if self.path.suffix == ".gif":
            self._gif.append(frame)
            return
        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h),
                                           isColor=True)
            if not self._writer.isOpened():
                self.abort()
                raise InputError(self.path, "OpenCV cannot write an MP4 video here",
                                 fix="use --video gif or --video none")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_RGB2BGR))

    def close(self) -> Path:
        if self.path.suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in self._gif]
            images[0].save(self._tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(int(round(1000 / self.fps)), 20), loop=0)
        elif self._writer is not None:
            self._writer.release()
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        err = RuntimeError("aborted")
        try:
            self._ctx.__exit__(RuntimeError, err, None)
        except RuntimeError:
            pass


@dataclass(frozen=True)
class ViewResult:
    """What ``write_view`` wrote: PNG counts per method, the videos, and notes (e.g. TFI not applicable)."""

    out: Path
    pngs: dict[str, int]
    videos: dict[str, Path]
    notes: list[str]


def write_view(recons: Iterator[tuple[int, dict[str, np.ndarray]]], out: Path, *, total: int, gain: float = 1.0,
               video: str = "mp4", fps: float = 25.0, progress: bool = True, desc: str = "view") -> ViewResult:
    """Write each reconstruction as ``out/<method>/NNNNNN.png`` (``NNNNNN`` = instant or blur frame) and,
    unless ``video == "none"``, one ``out/<method>.<video>`` per method. ``out`` must exist (``prepare_out``)."""
    from tqdm import tqdm

    if video not in VIDEO_FORMATS:
        raise ValueError(f"video must be one of {VIDEO_FORMATS}, got {video!r}")
    pngs = {m: 0 for m in METHODS}
    writers: dict[str, VideoWriter] = {}
    try:
        for c, rates in tqdm(recons, total=total, desc=desc, unit="frame", disable=not progress):
            for m, rate in rates.items():
                img = to_image(rate, gain)
                (out / m).mkdir(exist_ok=True)
                write_rgb(out / m / f"{c:06d}.png", np.repeat(img[:, :, None], 3, axis=2))
                pngs[m] += 1
                if video != "none":
                    if m not in writers:
                        writers[m] = VideoWriter(out / f"{m}.{video}", fps)
                    writers[m].add(img)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    videos = {m: w.close() for m, w in writers.items()}
    notes = [f"{m.upper()}: no frame (not applicable to these voxels)" for m in METHODS if not pngs[m]]
    return ViewResult(out, {m: n for m, n in pngs.items() if n}, videos, notes)
