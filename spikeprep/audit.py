"""``spikeprep audit DATA_ROOT``: are the spikes and the blur frames of the same exposure? (DESIGN section 6)

Besides the structural checks (window sanity, pairs present, sizes, short side >= crop, which ingest
records and the audit re-checks on the store), the content check compares what the two sensors saw:
the spike intensity over the recorded window (count / n_ticks per pixel, replicated onto the RGB grid)
must correlate with the blur frame's luma. The window is then slid by ``d`` ticks,
``d = -D .. D``, and the correlation recomputed from the raw spikes: with motion in the scene the curve
peaks where the spikes cover the same interval as the exposure. A peak more than half a voxel bin away
from ``d = 0`` is a detected misalignment, reported with its offset (``d``: shift the recorded window by
``d`` ticks to realign). A curve too flat to locate a peak (static scene, flat content) is
``undetermined``: reported, never counted as a pass or a failure. A peak correlation below
``min_corr`` means the spikes do not show this frame at all (``mismatch``).

Failing frames (``misaligned``, ``mismatch``, or a structural problem) become ``status = dropped`` with
the reason in the manifest, so training never sees them; stats are recomputed over the kept training
frames. Audit reasons start with ``audit:``, so a rerun starts again from the ingest verdicts.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from schemas.atomic import atomic_write_bytes
from schemas.config import DEFAULT_CROP_SIZE
from schemas.manifest import STATUS_DROPPED, STATUS_OK
from schemas.store import DATASET_FILENAME, VOX_ARRAY, VOX_DIRNAME, StoreInfo
from spikeprep.errors import InputError, SampleError
from spikeprep.ingest import SEQ_RECORD
from spikeprep.images import LUMA_601, read_rgb
from spikeprep.spike_source import SpikeSource
from spikeprep.stats import FrameKey, check_std, stats_from_records
from spikeprep.store import read_frame, read_manifest, read_store_info, write_manifest, write_store_info

log = logging.getLogger("spikeprep.audit")
AUDIT_PREFIX = "audit: "
AUDIT_DIRNAME = "audit"
ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED = "aligned", "misaligned", "mismatch", "undetermined"


@dataclass(frozen=True)
class AuditOptions:
    """Thresholds of the content check.

    max_shift_ticks: scan range D (None: a quarter of the window length, at least 4 ticks);
    flat_range, roughness_factor: a curve whose max - min is below flat_range, or below
    roughness_factor times its jitter, is undetermined;
    top_fraction: the curve's top is where it is within this fraction of its range of the maximum;
    min_corr: a peak correlation below this is a content mismatch;
    crop_size: training frames need a short side of at least this.
    """

    max_shift_ticks: int | None = None
    flat_range: float = 1e-3
    roughness_factor: float = 10.0
    top_fraction: float = 0.05
    min_corr: float = 0.3
    crop_size: int = DEFAULT_CROP_SIZE


# ---- the content check -------------------------------------------------------------------------------
def blur_luma(path: Path) -> np.ndarray:
    """Rec.601 luma of an RGB PNG, float64 [H, W] in [0, 1]."""
    r, g, b = read_rgb(path).astype(np.float64) / 255.0
    return LUMA_601[0] * r + LUMA_601[1] * g + LUMA_601[2] * b


def spike_intensity(counts: np.ndarray, n_ticks: int, scale: tuple[int, int]) -> np.ndarray:
    """Spikes per tick [Hs, Ws] -> replicated onto the RGB grid [Hs*sy, Ws*sx] (float64)."""
    inten = counts.astype(np.float64) / max(n_ticks, 1)
    return np.repeat(np.repeat(inten, scale[0], axis=0), scale[1], axis=1)


class LumaCorrelator:
    """Pearson correlation of spike-grid intensities, replicated onto the RGB grid, with one luma image.

    Exactly the Pearson correlation of ``spike_intensity(counts, n, scale)`` with ``luma``, without building
    the replicated image: replicating a spike pixel s_y x s_x times multiplies its terms, so the sums reduce
    to the spike grid with the luma summed per block. The luma terms are computed once per frame, not once per shift.
    """

    def __init__(self, luma: np.ndarray, scale: tuple[int, int]):
        sy, sx = scale
        h, w = luma.shape
        centred = luma - luma.mean()
        self.block_sums = centred.reshape(h // sy, sy, w // sx, sx).sum(axis=(1, 3))
        self.luma_norm2 = float((centred * centred).sum())
        self.area = sy * sx

    def __call__(self, intensity: np.ndarray) -> float:
        centred = intensity - intensity.mean()
        den = math.sqrt(self.area * float((centred * centred).sum()) * self.luma_norm2)
        return float((centred * self.block_sums).sum()) / den if den > 0 else math.nan


def shift_curve(source: SpikeSource, t0: float, t1: float, frame_idx: int, luma: np.ndarray,
                scale: tuple[int, int], max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of blur luma with spike intensity over ``[t0 + d/r, t1 + d/r)``, d = -D..D ticks."""
    rate = source.meta.rate_hz
    correlate = LumaCorrelator(luma, scale)
    shifts = np.arange(-max_shift, max_shift + 1)
    corr = np.full(shifts.shape, np.nan)
    for i, d in enumerate(shifts.tolist()):
        wc = source.window(t0 + d / rate, t1 + d / rate, 1, frame_idx=frame_idx)
        if wc.covered is False or wc.n_ticks == 0:
            continue  # the shifted window leaves the spike data: no point on the curve
        corr[i] = correlate(wc.counts[0] / wc.n_ticks)
    return shifts, corr


def judge(shifts: np.ndarray, corr: np.ndarray, n_ticks: int, num_bins: int,
          options: AuditOptions) -> tuple[str, int | None, float]:
    """(verdict, best shift in ticks or None, correlation at zero shift) from a correlation curve.

    The best shift is the middle of the curve's top (within ``top_fraction`` of its range of the
    maximum), which is robust to the broad flat peaks of slow motion. The curve is too flat to tell
    when its range is below ``flat_range`` or below ``roughness_factor`` times its jitter (median
    absolute second difference): a static scene gives a curve of pure quantisation jitter.
    """
    zero = float(corr[shifts == 0][0]) if np.any(shifts == 0) else math.nan
    valid = np.isfinite(corr)
    if valid.sum() < 5 or not np.isfinite(zero):
        return UNDETERMINED, None, zero
    c = corr[valid]
    peak, span = float(c.max()), float(c.max() - c.min())
    if peak < options.min_corr:
        return MISMATCH, int(shifts[valid][np.argmax(c)]), zero
    jitter = float(np.median(np.abs(np.diff(c, 2))))
    if span < max(options.flat_range, options.roughness_factor * jitter):
        return UNDETERMINED, None, zero
    top = valid & (np.nan_to_num(corr, nan=-np.inf) >= peak - options.top_fraction * span)
    i = j = int(np.nanargmax(corr))
    while i > 0 and top[i - 1]:
        i -= 1
    while j < len(top) - 1 and top[j + 1]:
        j += 1
    best = int(round((int(shifts[i]) + int(shifts[j])) / 2))
    tolerance = max(1, n_ticks // (2 * num_bins))  # half a voxel bin: smaller shifts are harmless
    return (ALIGNED if abs(best) <= tolerance else MISALIGNED), best, zero


# ---- one sequence ------------------------------------------------------------------------------------
def _structural_problem(root: Path, row: dict, options: AuditOptions) -> str | None:
    for kind in ("blur", "sharp"):
        path = root / row[kind]
        if not path.is_file():
            return f"{kind} frame missing from the store: {row[kind]}"
    if row["split"] == "train" and min(row["H"], row["W"]) < options.crop_size:
        return f"short side {min(row['H'], row['W'])} < crop size {options.crop_size}"
    if not row["t1"] > row["t0"]:
        return f"empty or reversed window [{row['t0']!r}, {row['t1']!r})"
    return None


def audit_sequence(root: Path, key: str, info: StoreInfo, rows: list[dict],
                   options: AuditOptions) -> tuple[list[dict], list[dict]]:
    """Audit one sequence's rows (manifest dicts, updated copies returned) and its curves."""
    seq = info.sequences[key]
    source = SpikeSource(Path(seq.spike_dir), seq.spike_meta)
    out, curves = [], []
    for row in rows:
        row = dict(row)
        if (row["reason"] or "").startswith(AUDIT_PREFIX):  # a previous audit's verdict: judge again
            row.update(status=STATUS_OK, reason=None)
        row.update(audit_corr=None, audit_best_offset_ticks=None, audit_best_offset_s=None,
                   audit_verdict=None)
        if row["vox_index"] is None or row["status"] == STATUS_DROPPED:
            out.append(row)  # ingest already dropped it (and said why): nothing to compare
            continue
        problem = _structural_problem(root, row, options)
        if problem is None:
            max_shift = options.max_shift_ticks or max(4, row["n_ticks"] // 4)
            try:
                luma = blur_luma(root / row["blur"])
            except InputError as err:
                problem = str(err)
        if problem is not None:
            row.update(status=STATUS_DROPPED, reason=AUDIT_PREFIX + problem)
            out.append(row)
            continue
        if luma.shape != (seq.Hs * seq.scale[0], seq.Ws * seq.scale[1]):
            row.update(status=STATUS_DROPPED, reason=AUDIT_PREFIX + f"blur is {luma.shape[0]}x{luma.shape[1]},"
                       f" spike grid x scale is {seq.Hs * seq.scale[0]}x{seq.Ws * seq.scale[1]}")
            out.append(row)
            continue
        shifts, corr = shift_curve(source, row["t0"], row["t1"], row["frame_idx"], luma, seq.scale, max_shift)
        verdict, best, zero = judge(shifts, corr, row["n_ticks"], info.K, options)
        row.update(audit_corr=None if math.isnan(zero) else zero, audit_verdict=verdict,
                   audit_best_offset_ticks=best,
                   audit_best_offset_s=None if best is None else best / seq.rate_hz)
        if verdict == MISALIGNED:
            row.update(status=STATUS_DROPPED, reason=AUDIT_PREFIX + (
                f"exposure misaligned: spikes match the blur best {best:+d} ticks "
                f"({best / seq.rate_hz:+.3e} s) away from the recorded window"))
        elif verdict == MISMATCH:
            row.update(status=STATUS_DROPPED, reason=AUDIT_PREFIX + (
                f"spikes do not match the blur frame (peak correlation {np.nanmax(corr):.2f} "
                f"< {options.min_corr})"))
        curves.append(dict(split=row["split"], seq=row["seq"], frame_idx=row["frame_idx"],
                           shift_ticks=shifts.tolist(),
                           corr=[None if not np.isfinite(c) else float(c) for c in corr]))
        out.append(row)
    return out, curves


# ---- overlays ------------------------------------------------------------------------------------------
def _to_u8(img: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(img)), float(np.max(img))
    return np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) / (hi - lo) * 255).round().astype(np.uint8)


def overlay_image(root: Path, row: dict, info: StoreInfo) -> np.ndarray:
    """blur | spike intensity | spike_vox.sum(K) over blur (the original document's check 13.1), BGR."""
    seq = info.sequences[f"{row['split']}/{row['seq']}"]
    blur = cv2.imread(str(root / row["blur"]), cv2.IMREAD_COLOR)
    counts = read_frame(root / row["split"] / row["seq"] / VOX_DIRNAME / VOX_ARRAY, row["vox_index"])
    total = counts.sum(axis=0, dtype=np.int64)
    inten = _to_u8(spike_intensity(total, row["n_ticks"], seq.scale))
    heat = cv2.applyColorMap(inten, cv2.COLORMAP_INFERNO)
    gray = cv2.cvtColor(cv2.cvtColor(blur, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    blend = cv2.addWeighted(gray, 0.5, heat, 0.5, 0)
    return np.concatenate([blur, cv2.cvtColor(inten, cv2.COLOR_GRAY2BGR), blend], axis=1)


def write_overlays(root: Path, rows: list[dict], info: StoreInfo, n: int, seed: int = 0) -> list[Path]:
    """Overlays for ``n`` random voxelized frames (seeded), as PNG under ``DATA_ROOT/audit/overlays``."""
    candidates = [r for r in rows if r["vox_index"] is not None]
    if not candidates or n <= 0:
        return []
    pick = np.random.default_rng(seed).choice(len(candidates), size=min(n, len(candidates)), replace=False)
    folder = root / AUDIT_DIRNAME / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in sorted(pick.tolist()):
        r = candidates[i]
        path = folder / f"{r['split']}_{r['seq']}_{r['frame_idx']:06d}.png"
        try:
            image = overlay_image(root, r, info)
        except (SampleError, OSError) as err:       # a damaged shard: say so, draw the others
            log.warning("no overlay for %s/%s frame %d: %s", r["split"], r["seq"], r["frame_idx"], err)
            continue
        ok, buf = cv2.imencode(".png", image)
        if not ok:  # never write an empty PNG
            raise OSError(f"{path}: cv2.imencode could not encode the overlay as PNG")
        atomic_write_bytes(path, buf.tobytes())
        paths.append(path)
    return paths


# ---- the whole store ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditReport:
    """Result of ``audit``: the rewritten manifest rows, one correlation curve per audited frame
    (``split, seq, frame_idx, shift_ticks, corr``), and the overlay PNGs written."""

    rows: list[dict]
    curves: list[dict]
    overlays: list[Path]

    @property
    def failed(self) -> list[dict]:
        """Manifest rows with ``status == dropped`` (by ingest or by this audit)."""
        return [r for r in self.rows if r["status"] == STATUS_DROPPED]

    def summary(self) -> list[dict]:
        """One line per sequence: frames, kept, dropped, verdict counts, median best offset."""
        out = {}
        for r in self.rows:
            s = out.setdefault((r["split"], r["seq"]), dict(split=r["split"], seq=r["seq"], frames=0, ok=0,
                                                           dropped=0, aligned=0, misaligned=0, mismatch=0,
                                                           undetermined=0, offsets=[]))
            s["frames"] += 1
            s["ok" if r["status"] == STATUS_OK else "dropped"] += 1
            if r["audit_verdict"]:
                s[r["audit_verdict"]] += 1
            if r["audit_best_offset_ticks"] is not None and r["audit_verdict"] != UNDETERMINED:
                s["offsets"].append(r["audit_best_offset_ticks"])
        for s in out.values():
            offsets = s.pop("offsets")
            s["median_offset_ticks"] = float(np.median(offsets)) if offsets else None
        return list(out.values())


def audit(root: Path, options: AuditOptions = AuditOptions(), overlays: int = 0, seed: int = 0,
          progress: bool = True) -> AuditReport:
    """Audit the store at ``root``; rewrites the manifest (status, reason, audit columns) and the stats."""
    root = Path(root)
    info = read_store_info(root)
    rows = read_manifest(root).to_pylist()
    by_seq: dict[str, list[dict]] = {}
    for r in rows:
        by_seq.setdefault(f"{r['split']}/{r['seq']}", []).append(r)
    unknown = sorted(set(by_seq) - set(info.sequences))
    if unknown:
        raise InputError(root / DATASET_FILENAME, f"sequences {unknown[:5]} are in the manifest but not in "
                         "dataset.json (a damaged or mixed store)", fix="re-run `spikeprep ingest RAW --out DATA_ROOT`")
    new_rows, curves = [], []
    for key in tqdm(sorted(by_seq), desc="audit", unit="seq", disable=not progress):
        seq_rows, seq_curves = audit_sequence(root, key, info, by_seq[key], options)
        new_rows += seq_rows
        curves += seq_curves
    order = {(r["split"], r["seq"], r["frame_idx"]): i for i, r in enumerate(rows)}
    new_rows.sort(key=lambda r: order[(r["split"], r["seq"], r["frame_idx"])])

    histograms: dict[FrameKey, list[int]] = {}  # keyed by split too: train/X and val/X differ
    for key in by_seq:
        path = root / key / SEQ_RECORD
        try:
            record = json.loads(path.read_text())
            record["histograms"].items()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(path, f"missing or unreadable, and the stats are recomputed from its count "
                             f"histograms ({type(err).__name__})", fix=f"move {root / key} away and re-run "
                             "`spikeprep ingest RAW --out DATA_ROOT`: it rebuilds that sequence") from None
        split, seq_name = key.split("/", 1)
        histograms.update({(split, seq_name, int(k)): v for k, v in record["histograms"].items()})
    stats = stats_from_records(new_rows, histograms)
    if stats is not None:
        check_std(stats.std, str(root / DATASET_FILENAME))

    (root / AUDIT_DIRNAME).mkdir(exist_ok=True)
    curve_table = pa.Table.from_pylist(curves, schema=pa.schema([
        ("split", pa.string()), ("seq", pa.string()), ("frame_idx", pa.int64()),
        ("shift_ticks", pa.list_(pa.int64())), ("corr", pa.list_(pa.float64()))]))
    sink = pa.BufferOutputStream()
    pq.write_table(curve_table, sink)
    atomic_write_bytes(root / AUDIT_DIRNAME / "curves.parquet", sink.getvalue().to_pybytes())
    write_manifest(root, new_rows)
    write_store_info(root, info.model_copy(update={"stats": stats}))
    paths = write_overlays(root, new_rows, info, overlays, seed)
    return AuditReport(new_rows, curves, paths)
