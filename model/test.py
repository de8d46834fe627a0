"""``spikeprep test`` (original section 9; DESIGN sections 2 and 8): deblur frames with a trained checkpoint.

Launch::

    spikeprep test --ckpt outputs/ckpts/spike/best.pth --store data/store --split val --output outputs/test/spike
    spikeprep test --ckpt CKPT --input_blur DIR --input_spike_vox DATA_ROOT|VOX_DIR --output DIR
    spikeprep test --ckpt outputs/ckpts/base/best.pth --input_blur DIR --output DIR    # spike-free arm

From Python: ``run_test(ckpt=..., output=..., store=..., split="val")`` (what the command calls). What it
reads is ``spikeprep.inference_inputs`` (next to the Dataset); its restore loop is ``model.restore``'s, the
one validation runs; its report is a ``schemas.test_report.TestReport``.

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
    with the checkpoint config's DATA.NORM MEAN/STD, each spike pixel replicated onto the RGB grid (totals-only
    voxels when the checkpoint was trained with DATA.TOTALS_ONLY).
Clips
    DATA.CLIP_LEN frames (``--clip-len``), laid out like the Dataset's validation clips: non-overlapping,
    the last one aligned to the end of its run of consecutive frames; a frame in two clips keeps the
    output of the first. Runs shorter than a clip form one clip. Each clip goes through
    ``tiled_inference`` (spatial tiles ``--tile``/``--overlap``) under ``torch.no_grad``.
Output
    ``OUTPUT/<seq>/<frame stem>.png`` (or ``.jpg``), uint8 RGB, one per input frame, and nothing else
    there (the original allows only PNG/JPEG). The metrics JSON (a ``TestReport``) goes to
    ``<LOG.SAVE_DIR of the checkpoint config>/metrics/test_<YYYYmmdd_HHMMSS>.json`` (``--metrics-dir``):
    checkpoint, arm, step, inputs, sequences and frames, model and total seconds per frame, peak memory
    in MiB and how it was measured (``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS
    ``ru_maxrss`` on CPU), device, clip length, tile and overlap.
"""
from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import check_compatible, checkpoint_config, load_checkpoint, model_from_checkpoint
from model.restore import Clip, NonFiniteOutput, Restorer, restore_clips
from model.nets.integrate_vrt import SpikeVRT
from schemas.config import Config, load_config
from schemas.test_report import TestInputs, TestModel, TestReport, write_test_report
from spikeprep.errors import InputError
from spikeprep.images import IMAGE_FORMATS
from spikeprep.inference_inputs import (MIN_FRAMES, FileFrames, InputSequence, deblurrable_runs, is_store,
                                        plan_clips, resolve_sequences, spike_lut)
from spikeprep.store import read_store_info, refuse_output_in_store


@dataclass
class InferenceReport:
    """What ``run_test`` did: the images written, the metrics JSON and its content, notes for the user."""

    images: list[Path]
    metrics_path: Path
    metrics: TestReport
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



def _check_request(input_blur: Path | None, input_spike_vox: Path | None, store: Path | None, image_format: str,
                   tile: Sequence[int], overlap: Sequence[int], output: Path,
                   metrics_dir: Path | None) -> Path | None:
    """Refuse a bad request before anything is loaded; returns where the voxels come from (None: nowhere)."""
    refuse_output_in_store(output, "--output")
    if metrics_dir is not None:
        refuse_output_in_store(metrics_dir, "--metrics-dir")
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
    return spike_src


def _deblurrable(sequences: list[InputSequence], notes: list[str], where: Path | None) -> list[InputSequence]:
    """The sequences with their runs of fewer than ``MIN_FRAMES`` frames dropped (each drop noted)."""
    for s in sequences:
        n_single = sum(n for _, n in s.runs if n < MIN_FRAMES)
        if n_single:
            s.skipped.append(f"{s.name}: {n_single} frame(s) without a kept neighbour skipped (VRT needs "
                             f"{MIN_FRAMES} frames per clip)")
            s.runs = deblurrable_runs(s.runs)
        notes += s.skipped
    sequences = [s for s in sequences if s.runs]
    if not sequences:
        raise InputError(where, f"no sequence with {MIN_FRAMES} or more consecutive frames",
                         fix="VRT deblurs clips of at least 2 frames; pass longer sequences")
    return sequences


def _check_output(output: Path, metrics_folder: Path, sequences: list[InputSequence], suffix: str) -> None:
    if _inside(metrics_folder, output):
        raise InputError(metrics_folder, f"the metrics JSON would land inside the output folder {output}, "
                         "which holds images only (original section 9)",
                         fix="choose another --output (e.g. outputs/test/<exp>) or --metrics-dir")
    inputs = {p.resolve() for s in sequences if isinstance(s.blur, FileFrames) for p in s.blur.files}
    for s in sequences:
        if any((output / s.name / (stem + suffix)).resolve() in inputs for stem in s.stems):
            raise InputError(output, f"would overwrite the input frames of {s.name}", fix="choose another --output")


def _clips(sequences: list[InputSequence], plans: list[list[list[int]]], lut: np.ndarray | None,
           num_bins: int, totals_only: bool = False) -> Iterator[Clip]:
    """Each planned clip, read as the Dataset serves it (totals-only voxels with ``totals_only``); its frames
    are ``(sequence number, position)``."""
    for si, (s, clips) in enumerate(zip(sequences, plans)):
        for positions in clips:
            blur, spike = s.load_clip(positions, lut, num_bins, totals_only)
            yield Clip(s.name, [(si, p) for p in positions], torch.from_numpy(blur),
                       torch.from_numpy(spike) if spike is not None else None)


def _memory(dev: torch.device) -> dict:
    """The report's peak memory, how it was measured, and the device's name."""
    rss = _peak_rss_mib()
    if dev.type == "cuda":
        peak, method = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
        name = torch.cuda.get_device_name(dev)
    else:
        peak, method = rss, "peak RSS (ru_maxrss) of the process" if rss is not None else "unavailable"
        name = platform.processor() or platform.machine()
    return dict(device_name=name, peak_memory_mib=peak, peak_memory_method=method, peak_rss_mib=rss)


def _inputs(input_blur: Path | None, spike_src: Path | None, spike_arm: bool,
            sequences: list[InputSequence]) -> TestInputs:
    return TestInputs(blur=str(Path(input_blur).resolve()) if input_blur else None,
                      spike_vox=str(spike_src.resolve()) if spike_src and spike_arm else None,
                      store=(str(spike_src.resolve()) if spike_src and is_store(spike_src)
                             and (input_blur is None or spike_arm) else None),
                      splits=sorted({s.split for s in sequences if s.split}) or None)


def run_test(*, ckpt: Path, output: Path, input_blur: Path | None = None, input_spike_vox: Path | None = None,
             store: Path | None = None, split: str | None = None, seqs: Sequence[str] = (),
             use_spike: bool | None = None, config: Path | None = None, clip_len: int | None = None,
             tile: Sequence[int] = (0, 256, 256), overlap: Sequence[int] = (2, 20, 20), device: str = "auto",
             image_format: str = "png", jpeg_quality: int = 95, metrics_dir: Path | None = None,
             progress: bool = False) -> InferenceReport:
    """Deblur every input frame with checkpoint ``ckpt``; write images and the metrics JSON (a ``TestReport``).

    ``ckpt``: a ``best.pth``/``last.pth`` of ``spikeprep train`` (loaded with ``weights_only=True``); images go
    to ``output/<seq>/<frame stem>.<format>``; ``input_blur``, ``input_spike_vox``, ``store``, ``split``,
    ``seqs``: the inputs (module docstring); ``use_spike``: the arm expected (None: the checkpoint's);
    ``config``: a config the checkpoint must match; ``clip_len``: frames per clip (None: DATA.CLIP_LEN; 0:
    whole runs); ``tile``/``overlap``: ``(frames, height, width)`` of ``tiled_inference`` (0: no tiling);
    ``device``: ``auto``, ``cpu``, ``cuda``, ...; ``metrics_dir``: default ``<LOG.SAVE_DIR>/metrics``.
    Raises ``InputError`` on a bad checkpoint (damaged, other arm, other config) or inputs, naming the file.
    """
    t_start = time.perf_counter()
    spike_src = _check_request(input_blur, input_spike_vox, store, image_format, tile, overlap, Path(output),
                               metrics_dir)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    ckpt_path = Path(ckpt)
    ck, cfg, model = _load_model(ckpt_path, use_spike, config)
    spike_arm = ck["arm"] == "spike"
    model.to(dev)
    clip_len = cfg.DATA.CLIP_LEN if clip_len is None else int(clip_len)
    sequences, notes = resolve_sequences(num_bins=cfg.DATA.K, use_spike=spike_arm, cfg=cfg, input_blur=input_blur,
                                         input_spike_vox=spike_src, split=split, seqs=seqs)
    sequences = _deblurrable(sequences, notes, input_blur or spike_src)
    suffix, flag = IMAGE_FORMATS[image_format]
    output = Path(output)
    metrics_folder = Path(metrics_dir) if metrics_dir is not None else Path(cfg.LOG.SAVE_DIR) / "metrics"
    _check_output(output, metrics_folder, sequences, suffix)

    lut = spike_lut(cfg) if spike_arm else None
    plans = [plan_clips(s.runs, clip_len) for s in sequences]
    n_clips = sum(len(c) for c in plans)
    restorer = Restorer(model, dev, tile=tile, overlap=overlap)
    images: list[Path] = []
    per_seq = [0] * len(sequences)
    t_loop = time.perf_counter()
    bar = tqdm(total=n_clips, desc="test", unit="clip", disable=not progress)
    try:
        for done in restore_clips(restorer, _clips(sequences, plans, lut, cfg.DATA.K, cfg.DATA.TOTALS_ONLY),
                                  lambda name, f: output / name / (sequences[f[0]].stems[f[1]] + suffix),
                                  flag + [int(jpeg_quality)] if flag else []):
            images += [done.paths[k] for k, _ in done.new]
            per_seq[done.new[0][1][0]] += len(done.new)
            bar.update(1)
    except NonFiniteOutput as err:
        raise InputError(ckpt_path, f"{err}; no metrics were written ({len(images)} earlier image(s) are in "
                         f"{output})", fix="the model is unusable on this input: check the checkpoint's "
                         "validation reports, use an earlier checkpoint (best.pth), or run without AMP") from None
    finally:
        bar.close()
    t_end = time.perf_counter()

    now = dt.datetime.now()
    report = TestReport(
        created=now.isoformat(timespec="seconds"), checkpoint=str(ckpt_path.resolve()), arm=ck["arm"], exp=ck["exp"],
        step=int(ck["step"]), model=TestModel(VRT_CFG=cfg.MODEL.VRT_CFG, K=cfg.DATA.K, NORM=cfg.DATA.NORM),
        inputs=_inputs(input_blur, spike_src, spike_arm, sequences), output=str(output.resolve()),
        format=image_format, sequences={s.name: n for s, n in zip(sequences, per_seq)}, frames=len(images),
        clips=n_clips, clip_len=clip_len, tile=list(tile), overlap=list(overlap), device=str(dev),
        torch_threads=torch.get_num_threads(), seconds_model=restorer.seconds,
        seconds_first_clip=restorer.first_clip_seconds, seconds_per_frame=restorer.seconds / len(images),
        seconds_per_frame_total=(t_end - t_loop) / len(images), seconds_setup=t_loop - t_start, notes=notes,
        **_memory(dev))
    metrics_folder.mkdir(parents=True, exist_ok=True)
    path = write_test_report(_metrics_path(metrics_folder, now), report)  # a reader never sees half a report
    return InferenceReport(images=images, metrics_path=path, metrics=report, notes=notes)
