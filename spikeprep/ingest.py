"""``spikeprep ingest RAW --out DATA_ROOT``: raw sequences -> audited-ready store (DESIGN sections 3-5).

Per sequence (in parallel with ``workers`` > 1): check every blur frame (window sanity, blur (and sharp)
frame present and readable, sizes, spike grid ratio, short side >= crop for paired training frames; a frame
without a sharp frame is stored unpaired, ``paired`` False, and said once per sequence), voxelize the exposure
window's spikes into ``K`` bins, store the counts in ``{split}/{seq}/spike_vox.zarr`` (a group: ``counts``
and its coordinates) and the decoded blur/sharp frames in ``{split}/{seq}/rgb.zarr`` (chunked, so a training
crop reads only its tiles instead of decoding two whole PNGs per frame), and link (or copy) the PNGs.
Frames that fail a check are kept in the manifest with ``status = dropped`` and the reason. What a sequence
build yields is its ``SequenceRecord`` (``schemas.sequence_record``: its ``ManifestRow`` rows, count
histograms and ``dataset.json`` entry), written as its ``ingest.json``.
Then, in the parent: exact normalisation stats over kept training frames, ``manifest.parquet``, the
align log, and ``dataset.json`` last.

Atomicity and resume: a sequence is built in ``{split}/.{seq}.partial`` and renamed into place with its
``ingest.json`` record once complete; a rerun keeps every complete sequence whose inputs and options are
unchanged (same fingerprint: the options, meta.json, the windows, and every input file's name, size and
modification time, not its bytes) and rebuilds the rest, and any whose record is unreadable; ``force``
rebuilds them all. On an audited store the rows of reused sequences keep the audit's verdicts (``carry_audit``:
an audit drop stays dropped and out of the stats); the rebuilt ones are unaudited and named. An unversioned ``ingest.json`` (spikeprep before issue 19) is read as record version 0,
so its sequence is kept when its fingerprint matches. ``dataset.json`` is removed at the start and written
last, so an interrupted ingest never leaves a store that looks complete, and a resumed one ends
byte-identical to an uninterrupted one (nothing written depends on time or order of completion).

Clock fixes: a sequence with a fixed ``audit/clock/<split>/<seq>.json`` (``spikeprep audit --fix``) is built on
its recorded windows mapped onto the spike clock (the map is part of its fingerprint; the rows keep the
recorded windows as ``t0_recorded``/``t1_recorded``), so every rerun keeps the fix; a fix fitted to another
``exposure.csv`` than the current one is dropped, and ``IngestResult.clock_notes`` says which.

Registration (``spikeprep.registration``, DESIGN section 3): RGB frames that are not the spike grid times an
integer per axis, or whose spike ``meta.json`` gives ``rgb_homography``, or whose sequence has a fixed
``audit/registration/<split>/<seq>.json``, are resampled onto the (cropped) spike grid times an integer scale
and written as the store's own PNGs; the registration is part of the fingerprint and of the sequence's
``dataset.json`` entry, and ``IngestResult.registration_notes`` says what was done (and what was assumed).
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from schemas.atomic import atomic_write_text, remove_stale_temps
from schemas.clock_fix import FIXED, ClockFix, clock_fix_path, read_clock_fix, recorded_digest
from schemas.config import DEFAULT_CROP_SIZE, DEFAULT_NUM_BINS
from schemas.registration import (Registration, RegistrationFix, flat,
                                  read_registration_fix, registration_fix_path)
from schemas.manifest import (MANIFEST_FILENAME, STATUS_DROPPED, STATUS_OK, Drop, DropCode, ManifestRow,
                              name_problem)
from schemas.sequence_record import (SEQUENCE_RECORD_FILENAME, SequenceRecord, read_sequence_record,
                                     write_sequence_record)
from schemas.store import (DATASET_FILENAME, RGB_DIRNAME, STORE_VERSION, VOX_DIRNAME, NormStats, SequenceInfo,
                           StoreInfo)
from spikeprep.errors import InputError, disk_full_error, is_disk_full
from spikeprep.images import read_rgb, write_rgb
from spikeprep.registration import plan_registration, resample_rgb, store_matrix
from spikeprep.raw_layout import SequenceSpec, discover
from spikeprep.spike_source import SpikeSource, WindowCounts
from spikeprep.stats import FrameKey, check_std, count_histogram, stats_from_records
from spikeprep.store import (counts_checksum, create_rgb_arrays, create_vox_group, read_manifest_rows, sequence_checksum,
                             store_lock, store_read_only_error, write_frame_coordinates, write_manifest,
                             write_store_info)

log = logging.getLogger("spikeprep.ingest")
# Bump when what a sequence build writes changes: old builds then no longer match and are rebuilt. It salts
# the fingerprint; the format of the sequence record itself has its own version (schemas.sequence_record).
SEQ_BUILD_VERSION = 7  # 5: manifest version 2 (paired; t0_recorded, t1_recorded); 6: manifest version 3
                       # (reason_code); 7: manifest version 4 (registration): a rerun rebuilds older sequences


@dataclass(frozen=True)
class IngestOptions:
    """What ingest does; part of every sequence's fingerprint (a change rebuilds the sequence)."""

    num_bins: int = DEFAULT_NUM_BINS
    layout: str = "native"
    crop_size: int = DEFAULT_CROP_SIZE
    copy_images: bool = False
    preset_overrides: dict = field(default_factory=dict)
    exposure_s: float | None = None     # exposure time of exposure.csv tables that give start times only
    rgb_scale: int | None = None        # registered sequences: the stored RGB grid is the spike grid times this

    def __post_init__(self):
        if self.num_bins < 1 or self.crop_size < 1:
            raise ValueError("num_bins and crop_size must be positive")
        if self.rgb_scale is not None and not (isinstance(self.rgb_scale, int) and 1 <= self.rgb_scale <= 16):
            raise ValueError(f"rgb_scale must be an integer from 1 to 16, got {self.rgb_scale!r}")
        if self.exposure_s is not None and not (math.isfinite(self.exposure_s) and self.exposure_s > 0):
            raise ValueError(f"exposure_s must be a positive number of seconds, got {self.exposure_s!r}")


class _Overflow(Exception):
    """A voxel count does not fit the sequence's current dtype: restart it with a wider one."""


# ---- per-frame checks ------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


MAX_IMAGE_PIXELS = 2**30   # OpenCV's own decode limit (CV_IO_MAX_IMAGE_PIXELS)


def png_size(path: Path) -> tuple[int, int]:
    """(H, W) of an RGB(A) PNG from its IHDR header (no decode); InputError if it is not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError as err:
        raise InputError(path, f"unreadable image ({err})", fix="re-export the frame as PNG") from None
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise InputError(path, "unreadable image (not a PNG)", fix="re-export the frame as PNG")
    width, height = struct.unpack(">II", head[16:24])
    if not (1 <= width < 2**31 and 1 <= height < 2**31) or width * height > MAX_IMAGE_PIXELS:
        raise InputError(path, f"PNG header gives {height}x{width} pixels: " + (
            "not a valid PNG size" if not (1 <= width < 2**31 and 1 <= height < 2**31)
            else f"more than the {MAX_IMAGE_PIXELS} pixels OpenCV decodes"), fix="re-export the frame as PNG")
    if head[25] not in (2, 6):  # colour types RGB, RGBA
        raise InputError(path, f"expected an RGB PNG, got PNG colour type {head[25]}", fix="save RGB frames")
    return int(height), int(width)


def _frame_image_problem(spec: SequenceSpec, idx: int, grid: dict) -> Drop | None:
    """Why frame ``idx`` is dropped for its images, or None. ``grid`` holds the sequence's (H, W). A frame
    without a sharp frame is not a problem: it is stored unpaired (``paired`` False)."""
    blur, sharp = spec.blur.get(idx), spec.sharp.get(idx)
    if blur is None:
        return Drop(DropCode.MISSING_BLUR, f"missing blur frame {idx:06d}.png")
    try:
        hb, wb = png_size(blur)
        hs, ws = png_size(sharp) if sharp is not None else (hb, wb)
    except InputError as err:
        return Drop(DropCode.UNREADABLE_IMAGE, str(err))
    if (hb, wb) != (hs, ws):
        return Drop(DropCode.SHARP_SIZE_MISMATCH, f"blur is {hb}x{wb} but sharp is {hs}x{ws}")
    grid.setdefault("rgb", (hb, wb))
    if grid["rgb"] != (hb, wb):
        return Drop(DropCode.FRAME_SIZE_MISMATCH,
                    f"frame is {hb}x{wb} but the sequence's frames are {grid['rgb'][0]}x{grid['rgb'][1]}")
    return None


def _scale(rgb: tuple[int, int], spike: tuple[int, int]) -> tuple[int, int] | None:
    (h, w), (hs, ws) = rgb, spike
    if h % hs or w % ws:
        return None
    return h // hs, w // ws


def log_unpaired(spec: SequenceSpec) -> None:
    """Say, once per sequence, which blur frames have no sharp frame: they are stored unpaired (audit and
    ``test`` use them; training, validation and scoring do not). A sequence with some sharp frames missing is
    a warning (a paired set missing a file by accident), one without any is a note."""
    unpaired = sorted(set(spec.exposure.frame_idx.tolist()) & set(spec.blur) - set(spec.sharp))
    if not unpaired:
        return
    if not spec.sharp:
        log.info("%s: no sharp frames: its %d frames are stored unpaired (audit and test use them, training "
                 "and scoring do not)", spec.key, len(unpaired))
        return
    shown = ", ".join(f"{i:06d}" for i in unpaired[:5]) + (", ..." if len(unpaired) > 5 else "")
    log.warning("%s: %d of %d blur frames have no sharp frame (%s): stored unpaired, so training and scoring "
                "skip them; add the sharp PNGs and re-run ingest if they were lost", spec.key, len(unpaired),
                len(spec.exposure), shown)


# ---- one sequence ----------------------------------------------------------------------------------
def sequence_fingerprint(spec: SequenceSpec, options: IngestOptions, clock: ClockFix | None = None,
                         registration: Registration | None = None) -> str:
    """sha256 over the options, the sequence's inputs (names, sizes, mtimes, windows, meta), the clock fix
    that maps its windows (``audit --fix``), if any, and the registration its RGB frames are resampled with."""
    h = hashlib.sha256(f"spikeprep-seq-record-{SEQ_BUILD_VERSION}".encode())
    h.update(json.dumps(asdict(options), sort_keys=True, default=str).encode())
    if clock is not None:
        h.update(b"clock-fix:" + clock.model_dump_json().encode())
    if registration is not None:
        h.update(b"registration:" + registration.model_dump_json().encode())
    h.update(spec.spike_meta.to_json().encode())
    h.update(spec.exposure.frame_idx.tobytes() + spec.exposure.t0.tobytes() + spec.exposure.t1.tobytes())
    files = [*spec.blur.values(), *spec.sharp.values()]
    if spec.spike_dir.is_dir():
        files += sorted(p for p in spec.spike_dir.iterdir() if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path, copy: bool) -> None:
    if not copy:
        try:
            os.link(src, dst)
            return
        except OSError:  # another filesystem, or links not allowed: fall back to a copy
            pass
    try:
        shutil.copyfile(src, dst)
    except OSError as err:
        if is_disk_full(err) and err.filename != str(dst):   # name the file that did not fit, not its source
            raise OSError(err.errno, err.strerror, str(dst)) from err
        raise


def _voxelize_and_decode(spec: SequenceSpec, source: SpikeSource, num_bins: int, idx: int, t0: float, t1: float,
                         rgb: tuple[int, int], resample=None) -> tuple[Drop | None, WindowCounts | None, dict | None]:
    """One frame that passed the structural checks: (why it is dropped, or None; its window's counts (None
    when the spikes cannot be read); its decoded blur and sharp images (no sharp when unpaired; None unless
    it is kept))."""
    try:
        wc = source.window(t0, t1, num_bins, frame_idx=idx)
    except InputError as err:
        return Drop(DropCode.UNREADABLE_SPIKES, str(err)), None, None
    if wc.covered is False:
        return Drop(DropCode.WINDOW_PAST_SPIKES, f"window [{t0!r}, {t1!r}) extends past the spike data"), wc, None
    if wc.n_ticks == 0 or (spec.spike_meta.is_events and wc.event_count == 0):
        return Drop(DropCode.WINDOW_EMPTY, "empty window: no spike data inside [t0, t1)"), wc, None
    try:
        images = {kind: read_rgb(getattr(spec, kind)[idx], rgb, expected="its header says")
                  for kind in ("blur", "sharp") if idx in getattr(spec, kind)}
        if resample is not None:
            images = {kind: resample(image) for kind, image in images.items()}
    except InputError as err:
        return Drop(DropCode.UNREADABLE_IMAGE, str(err)), wc, None
    return None, wc, images


def _build_sequence(spec: SequenceSpec, options: IngestOptions, work: Path, dtype: np.dtype,
                    fingerprint: str, clock: ClockFix | None = None,
                    registration: Registration | None = None) -> SequenceRecord:
    """Build one sequence into ``work``; returns its record (rows, histograms, info, ``fingerprint``). With a
    fixed ``clock``, its windows are the recorded ones mapped onto the spike clock (the rows keep both). With a
    ``registration``, the RGB frames are resampled onto the (cropped) spike grid times its scale, written as
    PNGs of their own, and the spike counts of the cropped pixels are stored.

    Rows of ``spike_vox.zarr`` and ``rgb.zarr`` are written as frames pass every check, so memory
    holds one frame at a time; the arrays start at one row per exposure window and are trimmed to the
    rows written (rows never written hold no chunks).
    """
    source = SpikeSource(spec.spike_dir, spec.spike_meta,
                         crop=registration.spike_crop if registration is not None else None)
    meta = spec.spike_meta
    spike_hw = source.grid
    recorded = spec.exposure
    if clock is not None:
        spec = replace(spec, exposure=replace(recorded, t0=clock.map_times(recorded.t0),
                                              t1=clock.map_times(recorded.t1)))
    window_problems = spec.exposure.problems()
    grid: dict = {} if registration is None else {"rgb": tuple(registration.raw_size)}
    rows, hists = [], {}
    image_problems = {int(i): _frame_image_problem(spec, int(i), grid) for i in spec.exposure.frame_idx}
    raw_hw = rgb = grid.get("rgb")
    scale = _scale(rgb, (meta.height, meta.width)) if rgb else None
    resample = None
    if registration is not None and rgb:
        s = registration.scale
        rgb, scale = (spike_hw[0] * s, spike_hw[1] * s), (s, s)
        to_raw = store_matrix(registration)

        def resample(image: np.ndarray) -> np.ndarray:      # [3, H, W] raw -> [3, h, w] on the store's grid
            out = resample_rgb(np.ascontiguousarray(image.transpose(1, 2, 0)), to_raw, rgb)
            return np.ascontiguousarray(out.transpose(2, 0, 1))
    for blur_idx in sorted(set(spec.blur) - set(spec.exposure.frame_idx.tolist())):
        log.warning("%s: blur frame %06d has no row in exposure.csv; not ingested", spec.key, blur_idx)
    log_unpaired(spec)

    n_max = len(spec.exposure)
    vox = create_vox_group(work / VOX_DIRNAME, n_max, options.num_bins, *spike_hw,
                           dtype, attributes={"K": options.num_bins, "seq": spec.key})
    frames = create_rgb_arrays(work / RGB_DIRNAME, n_max, *rgb, attributes={"seq": spec.key}) if rgb else None
    n_rows = 0
    frame_coords: dict[str, list] = {"frame_idx": [], "t0": [], "t1": []}   # of each row written
    for idx, t0, t1, t0_rec, t1_rec in zip(spec.exposure.frame_idx.tolist(), spec.exposure.t0.tolist(),
                                           spec.exposure.t1.tolist(), recorded.t0.tolist(), recorded.t1.tolist()):
        drop = window_problems.get(idx) or image_problems[idx]
        if drop is None and scale is None:
            drop = Drop(DropCode.GRID_NOT_INTEGER, f"RGB grid {rgb[0]}x{rgb[1]} is not an integer multiple of the "
                        f"spike grid {meta.height}x{meta.width}")
        paired = idx in spec.sharp
        # training crops paired frames only: an unpaired training frame is kept for audit and test
        if drop is None and spec.split == "train" and paired and min(rgb) < options.crop_size:
            drop = Drop(DropCode.SHORT_SIDE_BELOW_CROP, f"short side {min(rgb)} < crop size {options.crop_size}")
        wc = images = vox_index = checksum = None
        if drop is None:       # a frame already dropped is never voxelized (its grid may be absurd)
            drop, wc, images = _voxelize_and_decode(spec, source, options.num_bins, idx, t0, t1, raw_hw, resample)
        if drop is None:
            if int(wc.counts.max(initial=0)) > np.iinfo(dtype).max:
                raise _Overflow(int(wc.counts.max()))
            stored = wc.counts.astype(dtype)
            vox_index, checksum = n_rows, counts_checksum(stored)
            vox[n_rows] = stored
            for kind, image in images.items():
                frames[kind][n_rows] = image
                if registration is not None:      # the store's PNGs show what the store holds: the resampled frame
                    (work / kind).mkdir(exist_ok=True)
                    write_rgb(work / kind / f"{idx:06d}.png", np.ascontiguousarray(image.transpose(1, 2, 0)))
            hists[idx] = count_histogram(stored).tolist()
            for name, value in (("frame_idx", idx), ("t0", t0), ("t1", t1)):
                frame_coords[name].append(value)
            n_rows += 1
        rows.append(ManifestRow(
            split=spec.split, seq=spec.name, frame_idx=idx, t0=t0, t1=t1, t0_recorded=t0_rec, t1_recorded=t1_rec,
            n_ticks=wc.n_ticks if wc is not None else 0, event_count=wc.event_count if wc is not None else 0,
            H=rgb[0] if rgb else 0, W=rgb[1] if rgb else 0, Hs=spike_hw[0], Ws=spike_hw[1],
            blur=f"{spec.split}/{spec.name}/blur/{idx:06d}.png",
            sharp=f"{spec.split}/{spec.name}/sharp/{idx:06d}.png" if paired else None, paired=paired,
            spike_source=str(wc.source if wc is not None else spec.spike_dir), vox_index=vox_index,
            status=STATUS_DROPPED if drop else STATUS_OK, reason=drop and drop.text, reason_code=drop and drop.code,
            vox_checksum=checksum, rgb_homography=None if registration is None else list(registration.homography)))
        if drop:
            log.info("%s frame %06d dropped (%s): %s", spec.key, idx, drop.code, drop.text)

    vox.resize((n_rows, *vox.shape[1:]))
    for array in (frames or {}).values():
        array.resize((n_rows, *array.shape[1:]))
    write_frame_coordinates(work / VOX_DIRNAME, **frame_coords, num_bins=options.num_bins)
    if frames is not None:
        write_frame_coordinates(work / RGB_DIRNAME, **frame_coords)
    for kind, files in (("blur", spec.blur), ("sharp", spec.sharp)):
        (work / kind).mkdir(exist_ok=True)
        for idx, src in files.items():
            dst = work / kind / f"{idx:06d}.png"
            if registration is None:
                _link_or_copy(src, dst, options.copy_images)
            elif not dst.exists() and resample is not None:    # a frame not stored: resampled when readable
                try:
                    image = resample(read_rgb(src, raw_hw))
                except InputError:
                    continue                                  # its row says why it was dropped
                write_rgb(dst, np.ascontiguousarray(image.transpose(1, 2, 0)))

    info = SequenceInfo(split=spec.split, n_frames=n_rows, H=rgb[0] if rgb else 1,
                        W=rgb[1] if rgb else 1, Hs=spike_hw[0], Ws=spike_hw[1],
                        scale=scale or (1, 1), dtype=dtype.name, rate_hz=meta.rate_hz,
                        spike_dir=str(spec.spike_dir.resolve()), spike_meta=meta,
                        checksum=sequence_checksum([r.vox_checksum for r in rows]), registration=registration)
    return SequenceRecord(fingerprint=fingerprint, rows=rows, histograms=hists, info=info)


# ---- what ingest may replace --------------------------------------------------------------------------
# Everything a store's sequence folder holds; anything else in one is the user's and is never deleted.
SEQUENCE_ENTRIES = frozenset({SEQUENCE_RECORD_FILENAME, VOX_DIRNAME, RGB_DIRNAME, "blur", "sharp"})


def check_output_location(raw: Path, out: Path) -> None:
    """Refuse an output that holds the input or lies inside it (a rebuilt sequence would replace the raw
    files, and the store would be rediscovered as raw data on the next run)."""
    raw_r, out_r = Path(raw).resolve(), Path(out).resolve()
    if out_r == raw_r or raw_r in out_r.parents:
        raise InputError(out, f"the store would be written inside the raw tree {raw}",
                         fix="pass an --out folder outside RAW")
    if out_r in raw_r.parents:
        raise InputError(out, f"the raw tree {raw} lies inside the store folder",
                         fix="pass an --out folder that does not contain RAW")


def check_replaceable(final: Path) -> None:
    """``final`` (a sequence folder of the store) is absent, or a sequence ingest wrote with nothing foreign
    in it; otherwise ``InputError`` naming what would be lost."""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise InputError(final, "exists and is not a sequence folder spikeprep wrote",
                         fix="move it away or choose another --out")
    if not (final / SEQUENCE_RECORD_FILENAME).is_file():
        raise InputError(final, f"exists and is not a sequence spikeprep wrote (no {SEQUENCE_RECORD_FILENAME}); "
                         "ingest would replace it", fix="move it away or choose another --out")
    foreign = sorted(p.name for p in final.iterdir() if p.name not in SEQUENCE_ENTRIES)
    if foreign:
        raise InputError(final, f"holds files spikeprep did not write ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}); rebuilding the sequence would delete them",
                         fix="move them out of the store")


def check_store_files(out: Path) -> None:
    """The store files ingest overwrites (``dataset.json``, ``manifest.parquet``) are absent or ours."""
    info = out / DATASET_FILENAME
    if info.is_file():
        try:
            old = json.loads(info.read_text())
            if not (isinstance(old, dict) and isinstance(old.get("version"), int) and old["version"] < STORE_VERSION
                    and {"K", "raw_root", "sequences"} <= set(old)):   # an older spikeprep's: rebuilt in place
                StoreInfo.model_validate_json(info.read_text())
        except (ValueError, UnicodeDecodeError):
            raise InputError(info, "exists and is not a spikeprep store's dataset.json; ingest would replace it",
                             fix="choose an empty or spikeprep --out folder") from None
    manifest = out / MANIFEST_FILENAME
    if manifest.exists() and not info.is_file() and not any(out.glob(f"*/*/{SEQUENCE_RECORD_FILENAME}")):
        raise InputError(manifest, "exists in a folder that is not a spikeprep store; ingest would replace it",
                         fix="choose an empty or spikeprep --out folder")


def reusable_record(path: Path, fingerprint: str) -> SequenceRecord | None:
    """The sequence record at ``path`` when its sequence can be kept as built (same ``fingerprint``), else
    None: absent, built from other inputs or options, or unreadable (the sequence is rebuilt)."""
    if not path.is_file():
        return None
    try:
        record = read_sequence_record(path)
    except ValueError as err:
        log.info("%s; the sequence is rebuilt", err)
        return None
    return record if record.fingerprint == fingerprint else None


def ingest_sequence(spec: SequenceSpec, options: IngestOptions, out: Path, force: bool = False,
                    clock: ClockFix | None = None, registration_fix: RegistrationFix | None = None) -> SequenceRecord:
    """Build (or reuse, when its fingerprint matches and not ``force``) one sequence of the store, its windows
    mapped by the fixed ``clock`` when given, its RGB frames registered by ``registration_fix`` when given
    (else by what ``plan_registration`` finds); returns its record."""
    return _build_or_reuse(spec, options, out, force, clock, registration_fix)[0]


def raw_rgb_size(spec: SequenceSpec) -> tuple[tuple[int, int], Path] | None:
    """(H, W) of the sequence's RGB frames from the first readable blur PNG header of its exposure table, and
    that file; None when none is readable (every frame is then dropped for its own reason)."""
    for idx in spec.exposure.frame_idx.tolist():
        path = spec.blur.get(int(idx))
        if path is None:
            continue
        try:
            return png_size(path), path
        except InputError:
            continue
    return None


def sequence_registration(spec: SequenceSpec, options: IngestOptions,
                          fix: RegistrationFix | None = None) -> Registration | None:
    """The registration ingest resamples ``spec``'s RGB frames with (``spikeprep.registration.
    plan_registration``), None when they are stored pixel for pixel; ``InputError`` naming a blur frame when
    they cannot show the spike camera's field of view."""
    found = raw_rgb_size(spec)
    if found is None:
        return None
    raw_hw, path = found
    return plan_registration(spec.spike_meta, raw_hw, path, fix, options.rgb_scale)


def _build_or_reuse(spec: SequenceSpec, options: IngestOptions, out: Path, force: bool,
                    clock: ClockFix | None = None,
                    registration_fix: RegistrationFix | None = None) -> tuple[SequenceRecord, bool]:
    """``ingest_sequence``, and whether the sequence was reused as built (True) or (re)built now."""
    final = out / spec.split / spec.name
    check_replaceable(final)
    registration = sequence_registration(spec, options, registration_fix)
    fingerprint = sequence_fingerprint(spec, options, clock, registration)
    record = None if force else reusable_record(final / SEQUENCE_RECORD_FILENAME, fingerprint)
    if record is not None:
        return record, True
    work = out / spec.split / f".{spec.name}.partial"
    try:
        for dtype in (np.dtype(np.uint8), np.dtype(np.uint16)):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                record = _build_sequence(spec, options, work, dtype, fingerprint, clock, registration)
                break
            except _Overflow as err:
                if dtype == np.uint16:
                    raise InputError(spec.spike_dir, f"a voxel holds {err.args[0]} spikes, more than uint16",
                                     fix="use more time bins (K)") from None
        write_sequence_record(work / SEQUENCE_RECORD_FILENAME, record)
    except OSError as err:
        if not is_disk_full(err):
            raise
        shutil.rmtree(work, ignore_errors=True)    # ours, and half-written: give its space back
        raise disk_full_error(err, work, f"the half-built sequence {spec.key} was removed and the store stays "
                              "incomplete (no dataset.json)", DISK_FULL_FIX) from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(work, final)
    return record, False


DISK_FULL_FIX = ("free space on that disk (or pass --out on a larger one) and run the same ingest again: it keeps the "
                 "sequences already complete")


def _ingest_sequence_task(args) -> tuple[SequenceRecord, bool]:
    return _build_or_reuse(*args)


# ---- the audit's verdicts across a rerun -----------------------------------------------------------------
AUDIT_COLUMNS = ("status", "reason", "reason_code", "audit_corr", "audit_best_offset_ticks", "audit_best_offset_s",
                 "audit_verdict", "audit_registration_px")


@dataclass(frozen=True)
class KeptAudit:
    """What an ingest rerun did with a previous audit's verdicts: ``frames`` rows of ``sequences`` unchanged
    sequences kept them (``dropped`` of those stay dropped by the audit); ``unaudited`` lists the sequences
    (re)built since, whose frames no audit has judged."""

    frames: int
    dropped: int
    sequences: int
    unaudited: tuple[str, ...]

    def summary(self, root: Path) -> str:
        """What the CLI prints after the rerun."""
        text = (f"kept the audit's verdicts of {self.frames} frames in {self.sequences} unchanged sequence(s) "
                f"({self.dropped} stay dropped by the audit)")
        if self.unaudited:
            names = ", ".join(self.unaudited[:5]) + (", ..." if len(self.unaudited) > 5 else "")
            text += (f"; {len(self.unaudited)} sequence(s) were (re)built since the audit and are unaudited "
                     f"({names}): run `spikeprep audit {root}` (training warns until then)")
        return text


def previous_audit(out: Path) -> dict[tuple[str, str, int], ManifestRow] | None:
    """The audited rows of the store's current manifest by ``(split, seq, frame_idx)``, None when the store
    has no readable manifest or no audit has run on it."""
    if not (out / MANIFEST_FILENAME).is_file():
        return None
    try:
        rows = read_manifest_rows(out)
    except (InputError, ValueError, OSError) as err:   # another version or damaged: nothing to carry over
        log.info("previous manifest not read (%s); no audit verdicts carried over", err)
        return None
    audited = {(r.split, r.seq, r.frame_idx): r for r in rows if r.audited}
    return audited or None


def carry_audit(rows: list[ManifestRow], reused: set[str],
                audited: dict | None) -> tuple[list[ManifestRow], KeptAudit | None]:
    """``rows`` with the previous audit's verdicts (``AUDIT_COLUMNS``) put back for the frames of the
    ``reused`` sequences (``split/seq``) whose stored voxels are the ones the audit judged (same
    ``vox_index`` and ``vox_checksum``), and what was kept (None when no audit had run)."""
    if audited is None:
        return rows, None
    frames = dropped = 0
    kept_seqs = set()
    out = []
    for r in rows:
        key = f"{r.split}/{r.seq}"
        old = audited.get((r.split, r.seq, r.frame_idx))
        if key in reused and old is not None and r.status == STATUS_OK and \
                (old.vox_index, old.vox_checksum) == (r.vox_index, r.vox_checksum):
            r = r.model_copy(update={c: getattr(old, c) for c in AUDIT_COLUMNS})
            frames += 1
            dropped += r.status == STATUS_DROPPED
            kept_seqs.add(key)
        out.append(r)
    built = sorted({f"{r.split}/{r.seq}" for r in out} - reused)
    unaudited = tuple(k for k in built if any(r.status == STATUS_OK for r in out if f"{r.split}/{r.seq}" == k))
    return out, KeptAudit(frames=frames, dropped=dropped, sequences=len(kept_seqs), unaudited=unaudited)


# ---- the whole store -------------------------------------------------------------------------------
@dataclass(frozen=True)
class IngestResult:
    """Result of ``ingest``: the store root, every manifest row (all splits), the exact voxel stats over
    kept training frames (None if there is none), the align log written (None without ``log_dir``), and what
    became of each sequence's clock fix (``clock_for``)."""

    root: Path
    rows: list[ManifestRow]
    stats: NormStats | None
    align_log: Path | None
    kept_audit: KeptAudit | None = None     # a rerun on an audited store: the verdicts kept (None: no audit)
    clock_notes: list[str] = field(default_factory=list)   # one line per sequence with a clock fix record
    registration_notes: list[str] = field(default_factory=list)   # fixes kept or dropped; RGB frames resampled

    @property
    def n_ok(self) -> int:
        """Frames kept (``status == ok``)."""
        return sum(r.status == STATUS_OK for r in self.rows)

    def lost_sequences(self) -> list[tuple[str, int, ManifestRow]]:
        """``(split/seq, frames, a row dropped for the most frequent code)`` of every sequence that kept none
        of its frames: one bad file (a truncated stream, a wrong grid) or option (a crop larger than the
        frames) behind them all."""
        from collections import Counter

        by_seq: dict[str, list[ManifestRow]] = {}
        for r in self.rows:
            by_seq.setdefault(f"{r.split}/{r.seq}", []).append(r)
        lost = []
        for key, rows in by_seq.items():
            if rows and all(r.status != STATUS_OK for r in rows):
                code = Counter(r.reason_code for r in rows).most_common(1)[0][0]
                lost.append((key, len(rows), next(r for r in rows if r.reason_code == code)))
        return lost

    @property
    def n_dropped(self) -> int:
        """Frames dropped by ingest, each with its reason in the row."""
        return len(self.rows) - self.n_ok


ALIGN_LOG_DIRNAME = "logs"   # DATA_ROOT/logs/: where `spikeprep ingest` puts align_<time>.txt by default


def write_align_log(log_dir: Path, rows: list[ManifestRow]) -> Path:
    """``align_<time>.txt``: the original document's "frame_idx, t0, t1, event_count" per frame (atomic)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"align_{time.strftime('%Y%m%d_%H%M%S')}.txt"
    lines, current = [], None
    for r in rows:
        key = f"{r.split}/{r.seq}"
        if key != current:
            lines.append(f"# {key}")
            current = key
        lines.append(f"{r.frame_idx}, {r.t0!r}, {r.t1!r}, {r.event_count}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def warn_links_outside(raw: Path, spec: SequenceSpec) -> None:
    """Say so when a sequence's input files are symlinks that lead out of RAW (followed, since a user may
    keep recordings on another disk, but never silently)."""
    inside = raw.resolve()
    files = [*spec.blur.values(), *spec.sharp.values()]
    if spec.spike_dir.is_dir():
        files += [p for p in spec.spike_dir.iterdir()]
    outside = [p for p in files if p.is_symlink() and not p.resolve().is_relative_to(inside)]
    if outside:
        log.warning("%s: %d input file(s) are symlinks leading outside %s (e.g. %s -> %s); ingest reads them",
                    spec.key, len(outside), raw, outside[0], outside[0].resolve())


# One frame's voxel counts (uint32 [K, Hs, Ws]) a worker holds at once; far above any camera made so far
# (a 1000x1000 sensor at K = 64 needs 256 MB), far below what a wrong K or a wrong meta.json asks for.
MAX_FRAME_VOXEL_BYTES = 2 * 2**30


def check_frame_memory(spec: SequenceSpec, num_bins: int) -> None:
    """Refuse, before anything is allocated or written, a K and spike grid whose one frame of counts would
    take more than ``MAX_FRAME_VOXEL_BYTES``."""
    meta = spec.spike_meta
    need = num_bins * meta.height * meta.width * np.dtype(np.uint32).itemsize
    if need > MAX_FRAME_VOXEL_BYTES:
        raise InputError(spec.spike_dir, f"one frame's voxels would take {need / 2**30:.3g} GiB (K={num_bins} "
                         f"bins x {meta.height}x{meta.width} spike pixels x 4 bytes), more than the "
                         f"{MAX_FRAME_VOXEL_BYTES / 2**30:g} GiB one ingest worker may hold",
                         fix="use fewer bins (--k), or correct the spike grid (meta.json height/width or "
                         "--height/--width)")


def ingest(raw: Path, out: Path, options: IngestOptions = IngestOptions(), workers: int = 1,
           log_dir: Path | None = None, progress: bool = True, force: bool = False) -> IngestResult:
    """Ingest the raw tree ``raw`` into the store ``out`` (see the module docstring); ``force`` rebuilds every
    sequence, even those whose inputs look unchanged; ``log_dir``: where the align log goes (None: none; the
    command's default is ``out / ALIGN_LOG_DIRNAME``, never a folder the user did not name)."""
    raw, out = Path(raw), Path(out)
    check_output_location(raw, out)
    specs = discover(raw, options.layout, exposure_s=options.exposure_s, **options.preset_overrides)
    for spec in specs:          # they become folder names of the store: one plain path component each
        for what, name in (("split", spec.split), ("sequence", spec.name)):
            problem = name_problem(name)
            if problem:
                raise InputError(spec.spike_dir, f"{what} name {name!r} {problem}",
                                 fix="rename the folder in RAW")
        check_frame_memory(spec, options.num_bins)
        warn_links_outside(raw, spec)
        sequence_registration(spec, options, registration_fix_for(out, spec)[0])   # refuse a wrong field of view now
    if out.exists():          # before anything is written: nothing of the user's may be replaced
        check_store_files(out)
        for spec in specs:
            check_replaceable(out / spec.split / spec.name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise store_read_only_error(out, "ingest", err) from None
    with store_lock(out, "ingest"):   # two ingests into one store would interleave its files; readers wait
        return build_store(raw, out, specs, options, workers=workers, log_dir=log_dir, progress=progress,
                           force=force)


# ---- clock fixes (``spikeprep audit --fix``) ---------------------------------------------------------
PENDING_FIX = Path("audit") / "clock" / "fix_pending.json"   # dataset.json an interrupted audit --fix moved aside


def clock_for(out: Path, spec: SequenceSpec) -> tuple[ClockFix | None, str | None]:
    """The fixed clock map a store keeps for ``spec`` (``audit --fix``'s record), and a line saying what
    became of it: kept, or dropped because the raw exposure table is no longer the one it was fitted to (or
    the record is unreadable). ``(None, None)`` without a record or for a sequence left unfixed."""
    path = clock_fix_path(out, spec.split, spec.name)
    if not path.is_file():
        return None, None
    try:
        record = read_clock_fix(path)
    except ValueError as err:
        return None, f"{spec.key}: clock fix dropped: {err}"
    if record.verdict != FIXED:
        return None, None
    table = spec.exposure
    if record.exposure_sha256 != recorded_digest(table.frame_idx, table.t0, table.t1):
        return None, (f"{spec.key}: clock fix dropped: {table.path} changed since `spikeprep audit --fix` fitted "
                      f"it ({path}); run `spikeprep audit {out} --fix` again")
    return record, (f"{spec.key}: clock fix kept (offset {record.offset_ticks:+.2f} ticks, drift "
                    f"{record.drift_ppm:+.0f} ppm; {path})")


def registration_fix_for(out: Path, spec: SequenceSpec) -> tuple[RegistrationFix | None, str | None]:
    """The fixed registration a store keeps for ``spec`` (``audit --fix``'s record), and a line saying what
    became of it: kept, or dropped because the spike meta.json's ``rgb_homography`` or the RGB frames' size
    changed since it was estimated (or the record is unreadable). ``(None, None)`` without a fixed record."""
    path = registration_fix_path(out, spec.split, spec.name)
    if not path.is_file():
        return None, None
    try:
        record = read_registration_fix(path)
    except ValueError as err:
        return None, f"{spec.key}: registration fix dropped: {err}"
    if record.homography is None:
        return None, None
    given = spec.spike_meta.rgb_homography
    given = None if given is None else flat(np.asarray(given, np.float64))
    found = raw_rgb_size(spec)
    if given != record.given_homography or (found is not None and tuple(found[0]) != tuple(record.raw_size)):
        return None, (f"{spec.key}: registration fix dropped: spike/meta.json's rgb_homography or the RGB frames' "
                      f"size changed since `spikeprep audit --fix` estimated it ({path}); run "
                      f"`spikeprep audit {out} --fix` again")
    return record, f"{spec.key}: registration fix kept ({path})"


def registration_note(key: str, info: SequenceInfo) -> str | None:
    """What ingest did with a sequence's RGB frames when it resampled them (None when stored pixel for pixel):
    the CLI prints it, so an assumed field of view is never silent."""
    reg = info.registration
    if reg is None:
        return None
    y0, x0, h, w = reg.spike_crop
    meta = info.spike_meta
    how = {"meta": "the rgb_homography of spike/meta.json", "audit_fix": "the registration `audit --fix` estimated",
           "assumed_scale": (f"an assumed same field of view (a pure scale {reg.raw_size[0] / meta.height:.4g} x "
                             f"{reg.raw_size[1] / meta.width:.4g}; if the cameras see different fields, give "
                             "rgb_homography in spike/meta.json)")}[reg.source]
    crop = "" if (h, w) == (meta.height, meta.width) else f", spike pixels [{y0}:{y0 + h}, {x0}:{x0 + w}] kept"
    return (f"{key}: RGB {reg.raw_size[0]}x{reg.raw_size[1]} resampled onto the spike grid {h}x{w} x {reg.scale} "
            f"= {info.H}x{info.W} by {how}{crop}")


def store_specs(info: StoreInfo) -> tuple[Path, IngestOptions, list[SequenceSpec]]:
    """The raw tree, ingest options and sequences a store was built from (its ``dataset.json``), to rebuild
    it; ``InputError`` when one of its sequences is no longer in the raw tree."""
    raw = Path(info.raw_root)
    given = info.ingest_options
    extra = {k: v for k, v in given.items() if k not in ("crop_size", "copy_images", "exposure_s")}
    extra.pop("rgb_scale", None)
    options = IngestOptions(num_bins=info.K, layout=info.layout, crop_size=int(given["crop_size"]),
                            copy_images=bool(given["copy_images"]), preset_overrides=extra,
                            exposure_s=given.get("exposure_s"), rgb_scale=given.get("rgb_scale"))
    found = {spec.key: spec for spec in discover(raw, options.layout, exposure_s=options.exposure_s,
                                                 **options.preset_overrides)}
    missing = sorted(set(info.sequences) - set(found))
    if missing:
        raise InputError(raw, f"sequences {missing[:5]} of the store are no longer in the raw tree",
                         fix="restore them, or re-run `spikeprep ingest RAW --out DATA_ROOT`")
    return raw, options, [found[key] for key in info.sequences]


def build_store(raw: Path, out: Path, specs: list[SequenceSpec], options: IngestOptions, workers: int = 1,
                log_dir: Path | None = None, progress: bool = True, force: bool = False) -> IngestResult:
    """Write the store ``out`` from ``specs`` (the caller holds the store lock and has checked the inputs):
    every sequence built or reused (with its clock fix, ``clock_for``), then the stats, the manifest, the
    align log and ``dataset.json`` last. Ingest and ``audit --fix`` both build a store through it."""
    # temp files a killed run left: the resumed store must not differ from an uninterrupted one
    for name in (DATASET_FILENAME, MANIFEST_FILENAME):
        for stale in remove_stale_temps(out / name):
            log.info("removed %s, left by an interrupted ingest", stale)
    audited = previous_audit(out)   # before anything changes: the verdicts to keep for unchanged sequences
    (out / DATASET_FILENAME).unlink(missing_ok=True)  # the store is incomplete until the end

    clocks = [clock_for(out, spec) for spec in specs]
    registrations = [registration_fix_for(out, spec) for spec in specs]
    tasks = [(spec, options, out, force, clock, reg) for spec, (clock, _), (reg, _) in zip(specs, clocks, registrations)]
    bar = tqdm(total=len(tasks), desc="ingest", unit="seq", disable=not progress)
    built: list[tuple[SequenceRecord, bool]] = []
    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                          else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for result in pool.map(_ingest_sequence_task, tasks):
                built.append(result)
                bar.update()
    else:
        for task in tasks:
            built.append(_ingest_sequence_task(task))
            bar.update()
    bar.close()
    records = [record for record, _ in built]
    reused = {spec.key for spec, (_, was_reused) in zip(specs, built) if was_reused}

    rows = [row for rec in records for row in rec.rows]
    rows, kept_audit = carry_audit(rows, reused, audited)   # before the stats: audit drops stay out of them
    # keyed by split too: train/X and val/X are different sequences (their frames share indices)
    histograms: dict[FrameKey, list[int]] = {(spec.split, spec.name, idx): hist
                                             for spec, rec in zip(specs, records)
                                             for idx, hist in rec.histograms.items()}
    stats = stats_from_records(rows, histograms)
    if stats is not None:
        check_std(stats.std, str(out / DATASET_FILENAME))
    info = StoreInfo(
        K=options.num_bins, raw_root=str(raw.resolve()), layout=options.layout,
        ingest_options={"crop_size": options.crop_size, "copy_images": options.copy_images,
                        **({"exposure_s": options.exposure_s} if options.exposure_s is not None else {}),
                        **({"rgb_scale": options.rgb_scale} if options.rgb_scale is not None else {}),
                        **{k: v for k, v in options.preset_overrides.items()}},
        sequences={spec.key: rec.info for spec, rec in zip(specs, records)},
        stats=stats)
    try:
        write_manifest(out, rows)
        align_log = write_align_log(Path(log_dir), rows) if log_dir is not None else None
        write_store_info(out, info)
    except OSError as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(err, out, "every sequence is built, but the store stays incomplete (no "
                              "dataset.json)", DISK_FULL_FIX) from None
    (out / PENDING_FIX).unlink(missing_ok=True)   # an interrupted audit --fix's state: this build completed it
    notes = [note for _, note in registrations if note]
    notes += [n for n in (registration_note(spec.key, rec.info) for spec, rec in zip(specs, records)) if n]
    return IngestResult(out, rows, stats, align_log, kept_audit, [note for _, note in clocks if note], notes)
