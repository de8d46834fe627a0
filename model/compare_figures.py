"""The two pictures of ``spikeprep compare`` and what they are drawn from (``model.compare`` calls them).

* The side-by-side crops: ``find_crops`` searches the validation images (``{seq}/{frame:06d}_{blur,sharp}.png``)
  for the windows where the sharp frame differs most from the blurred one (``window_scores``,
  ``best_windows``); ``render_picture`` draws the rows blur | base recon | spike recon | sharp with each
  arm's PSNR on the crop and returns the ``schemas.compare_report.CropSpot`` records with their tiles.
* The curves: ``read_loss_events`` reads a run's ``train/loss_total`` from its TensorBoard events;
  ``render_curves`` draws both arms' ``Curves`` (loss per step, validation PSNR overall and on motion
  boundaries, the count-zero sensitivity) in four panels.

``schemas.val_report.format_metric`` is the one number format of every table, printed report and label.
Torch (through ``model.metrics``), TensorBoard and matplotlib are imported when a picture is drawn, not with
this module, so ``spikeprep --help`` stays fast.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.atomic import atomic_path
from schemas.compare_report import CropSpot
from schemas.val_report import format_metric, val_image_path
from spikeprep.errors import InputError
from spikeprep.images import read_rgb

# Picture layout (pixels); tests and readers use ``CropSpot.boxes`` rather than re-deriving it.
SEP = 2                     # separator between tiles and around the picture
HEADER_H = 14               # strip with the column titles
LABEL_H = 12                # strip above each row: frame name, PSNR on the crop
COLUMNS = ("blur", "base", "spike", "sharp")
_BG = (48, 48, 48)          # separator colour
_STRIP = (255, 255, 255)
_TEXT = (0, 0, 0)

ARM_COLOURS = {"spike": "#d62728", "base": "#1f77b4"}   # one colour per arm, in every curves picture
CURVES_FIGSIZE = (12.0, 8.0)                            # inches at CURVES_DPI: 1200 x 800 pixels
CURVES_DPI = 100
LOSS_TAG = "train/loss_total"


# ---- crops ---------------------------------------------------------------------------------------------


def _load_rgb(path: Path) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB (the grid and the metrics take channels last)."""
    return read_rgb(path).transpose(1, 2, 0)


def frame_keys(images: Path) -> list[tuple[str, int]]:
    """``(seq, frame)`` of every ``{seq}/{frame:06d}_recon.png`` in a validation's images, sorted."""
    keys = []
    for f in images.glob("*/*_recon.png"):
        stem = f.name[: -len("_recon.png")]
        if stem.isdigit():
            keys.append((f.parent.name, int(stem)))
    return sorted(keys)


def png_path(images: Path, key: tuple[str, int], kind: str) -> Path:
    """The ``kind`` (blur, recon, sharp) PNG of frame ``key`` in a validation's images."""
    return val_image_path(images, key[0], key[1], kind)


def window_scores(blur: np.ndarray, sharp: np.ndarray, size: int) -> np.ndarray:
    """Mean |sharp - blur| (over RGB) of every ``size`` x ``size`` window; ``[H-size+1, W-size+1]``.

    Integral image: every window's mean in O(H W), so any crop size costs the same.
    """
    d = np.abs(sharp.astype(np.int16) - blur.astype(np.int16)).mean(axis=2, dtype=np.float64)
    ii = np.zeros((d.shape[0] + 1, d.shape[1] + 1))
    ii[1:, 1:] = d.cumsum(0).cumsum(1)
    s = size
    return (ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]) / (s * s)


def best_windows(scores: np.ndarray, size: int, n: int) -> list[tuple[float, int, int]]:
    """Up to ``n`` non-overlapping windows of one frame, strongest first: ``(score, y, x)``."""
    scores = scores.copy()
    found = []
    for _ in range(n):
        idx = int(np.argmax(scores))
        y, x = divmod(idx, scores.shape[1])
        best = float(scores[y, x])
        if not np.isfinite(best):
            break
        found.append((best, y, x))
        # Windows whose top-left lies within `size` of this one overlap it.
        scores[max(0, y - size + 1): y + size, max(0, x - size + 1): x + size] = -np.inf
    return found


def find_crops(images: Path, n: int, crop_size: int) -> list[CropSpot]:
    """The ``n`` strongest motion-boundary windows over all val frames in ``images`` (blur/sharp PNGs).

    Windows do not overlap within a frame; the crop size is clamped to the smallest frame so every tile of
    the picture has the same size. Ties go to the earlier sequence, frame, row, column.
    """
    keys = frame_keys(images)
    sizes = []
    for k in keys:
        with Image.open(png_path(images, k, "blur")) as im:   # header only: no decode
            sizes.append(im.size)
    size = min([crop_size] + [min(w, h) for w, h in sizes])
    heap: list[tuple[float, tuple]] = []          # keep the n best (score, -order) seen so far
    order = 0
    for k in keys:
        blur, sharp = _load_rgb(png_path(images, k, "blur")), _load_rgb(png_path(images, k, "sharp"))
        for score, y, x in best_windows(window_scores(blur, sharp, size), size, n):
            order += 1
            item = (score, -order, (k[0], k[1], y, x))
            if len(heap) < n:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
    best = sorted(heap, reverse=True)
    return [CropSpot(seq=seq, frame=frame, y=y, x=x, size=size, score=score)
            for score, _, (seq, frame, y, x) in best]


def _text_tile(text: str, width: int, height: int, font) -> Image.Image:
    # One strip per tile, so a long label is clipped at its own tile instead of running into the next.
    tile = Image.new("RGB", (width, height), _STRIP)
    ImageDraw.Draw(tile).text((2, 0), text, fill=_TEXT, font=font)
    return tile


def render_picture(crops: list[CropSpot], path: Path, *, spike_exp: str, spike_images: Path, base_exp: str,
                   base_images: Path) -> list[CropSpot]:
    """Draw the rows blur | base recon | spike recon | sharp from both runs' validation images of one step
    (blur and sharp from the spike run's, checked equal to the base run's); written atomically. Returns the
    crops with their PSNRs and boxes."""
    # Imported here: the metrics module brings torch (LPIPS), which the table alone does not need, and
    # `spikeprep --help` imports model.compare, which imports this module.
    from model.metrics import image_metrics

    s = crops[0].size
    n = len(crops)
    width = SEP + len(COLUMNS) * (s + SEP)
    height = SEP + HEADER_H + n * (LABEL_H + s + SEP)
    pic = Image.new("RGB", (width, height), _BG)
    font = ImageFont.load_default()
    titles = ("blur", f"base {base_exp}", f"spike {spike_exp}", "sharp")
    for c, title in enumerate(titles):
        pic.paste(_text_tile(title, s, HEADER_H, font), (SEP + c * (s + SEP), SEP))
    out = []
    for r, crop in enumerate(crops):
        key = (crop.seq, crop.frame)
        win = (slice(crop.y, crop.y + s), slice(crop.x, crop.x + s))
        tiles = {"blur": _load_rgb(png_path(spike_images, key, "blur"))[win],
                 "base": _load_rgb(png_path(base_images, key, "recon"))[win],
                 "spike": _load_rgb(png_path(spike_images, key, "recon"))[win],
                 "sharp": _load_rgb(png_path(spike_images, key, "sharp"))[win]}
        base_sharp = _load_rgb(png_path(base_images, key, "sharp"))[win]
        if not np.array_equal(base_sharp, tiles["sharp"]):
            # Same split and frame count were checked; differing pixels mean different data under one name.
            raise InputError(png_path(base_images, key, "sharp"), f"differs from the spike run's sharp frame "
                             f"{png_path(spike_images, key, 'sharp')}", "validate both arms on the same store")
        psnr_b = image_metrics(tiles["base"], tiles["sharp"])["psnr_rgb"]
        psnr_s = image_metrics(tiles["spike"], tiles["sharp"])["psnr_rgb"]
        y_label = SEP + HEADER_H + r * (LABEL_H + s + SEP)
        y0 = y_label + LABEL_H
        labels = {"blur": crop.seq, "base": f"{format_metric(psnr_b, 'psnr')} dB",
                  "spike": f"{format_metric(psnr_s, 'psnr')} dB", "sharp": f"#{crop.frame} y{crop.y} x{crop.x}"}
        boxes = {}
        for c, name in enumerate(COLUMNS):
            x0 = SEP + c * (s + SEP)
            pic.paste(_text_tile(labels[name], s, LABEL_H, font), (x0, y_label))
            pic.paste(Image.fromarray(np.ascontiguousarray(tiles[name])), (x0, y0))
            boxes[name] = [x0, y0, x0 + s, y0 + s]
        out.append(CropSpot.model_validate({**crop.model_dump(), "psnr_rgb_base": psnr_b, "psnr_rgb_spike": psnr_s,
                                            "boxes": boxes}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pic.save(tmp, format="PNG")
    return out


# ---- curves --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Curves:
    """One run's curves: the training loss by step (its TensorBoard events) and its validation by step (its
    reports). ``loss_note`` says why the loss is missing (empty ``loss_steps``)."""

    exp: str
    arm: str
    loss_steps: list[int]
    loss: list[float]
    loss_note: str | None
    val_steps: list[int]
    psnr_rgb: list[float | None]
    boundary_psnr_rgb: list[float | None]
    db_from_spikes: list[float | None]            # count-zero sensitivity; all None when not measured
    boundary_db_from_spikes: list[float | None]


def read_loss_events(events_dir: Path) -> dict[int, float]:
    """``train/loss_total`` by step from the TensorBoard event files in ``events_dir``, oldest file first.

    A resumed run writes a new event file starting at its checkpoint's step + 1; that file's steps replace
    everything the older files hold from its first step on (what a crashed run did after its last save never
    happened as far as the checkpoints are concerned).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def started(f: Path) -> tuple[int, str]:
        # events.out.tfevents.<unix time>.<host>...: order by the time the writer opened the file
        part = f.name.split(".")[3] if len(f.name.split(".")) > 3 else ""
        return (int(part) if part.isdigit() else 0, f.name)

    loss: dict[int, float] = {}
    for f in sorted(events_dir.glob("events.out.tfevents.*"), key=started):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})     # 0: every point, no reservoir sample
        acc.Reload()
        if LOSS_TAG not in acc.Tags().get("scalars", []):
            continue
        points = acc.Scalars(LOSS_TAG)
        if not points:
            continue
        first = min(p.step for p in points)
        loss = {s: v for s, v in loss.items() if s < first}
        loss.update({p.step: p.value for p in points})
    return dict(sorted(loss.items()))


def _finite_points(steps: list[int], values: list[float | None]) -> tuple[list[int], list[float]]:
    kept = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    return [s for s, _ in kept], [v for _, v in kept]


def render_curves(curves: list[Curves], path: Path) -> Path:
    """Four panels (loss per step; validation PSNR RGB overall; on motion boundaries; count-zero sensitivity),
    each arm in its ``ARM_COLOURS`` colour; a ``CURVES_FIGSIZE`` x ``CURVES_DPI`` PNG written atomically."""
    # Object-oriented matplotlib on the Agg canvas: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=CURVES_FIGSIZE, dpi=CURVES_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_psnr, ax_boundary, ax_rel = fig.subplots(2, 2).ravel()
    for ax in (ax_psnr, ax_boundary, ax_rel):  # dB as they are, not as an offset and hundredths of it
        ax.ticklabel_format(axis="y", useOffset=False)
    for c in curves:
        colour, label = ARM_COLOURS.get(c.arm, "#444444"), c.exp if c.exp == c.arm else f"{c.exp} ({c.arm} arm)"
        if c.loss_steps:
            ax_loss.plot(c.loss_steps, c.loss, color=colour, alpha=0.35 if len(c.loss) > 200 else 1.0,
                         linewidth=0.8, label=label if len(c.loss) <= 200 else f"{label} (per step)")
            if len(c.loss) > 200:             # a running mean over 1/100 of the run, so the trend shows
                w = len(c.loss) // 100
                mean = np.convolve(c.loss, np.ones(w) / w, mode="valid")
                ax_loss.plot(c.loss_steps[w - 1:], mean, color=colour, linewidth=1.6, label=f"{label} (mean of {w})")
        for ax, values in ((ax_psnr, c.psnr_rgb), (ax_boundary, c.boundary_psnr_rgb)):
            xs, ys = _finite_points(c.val_steps, values)
            if xs:
                ax.plot(xs, ys, color=colour, marker="o", markersize=3, label=label)
        for values, style, what in ((c.db_from_spikes, "-", "overall"),
                                    (c.boundary_db_from_spikes, "--", "motion boundaries")):
            xs, ys = _finite_points(c.val_steps, values)
            if xs:
                ax_rel.plot(xs, ys, color=colour, linestyle=style, marker="o", markersize=3, label=f"{label}, {what}")
    missing_loss = [f"{c.arm} {c.exp}: {c.loss_note}" for c in curves if c.loss_note]
    titles = ((ax_loss, "training loss (every step)", "loss"),
              (ax_psnr, "validation PSNR RGB, overall", "dB"),
              (ax_boundary, "validation PSNR RGB, motion boundaries", "dB"),
              (ax_rel, "count-zero sensitivity (PSNR Y true - count-zero voxels; a diagnostic)", "dB"))
    for ax, title, unit in titles:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # steps are whole numbers
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if ax_loss.lines and all(v > 0 for c in curves for v in c.loss):
        ax_loss.set_yscale("log")
    if missing_loss:
        ax_loss.text(0.02, 0.02, "\n".join(missing_loss), transform=ax_loss.transAxes, fontsize=7, va="bottom",
                     wrap=True)
    if ax_rel.lines:
        ax_rel.axhline(0.0, color="#888888", linewidth=0.8)
    else:
        ax_rel.text(0.5, 0.5, "not measured (no spike-arm validation with --reliance)", transform=ax_rel.transAxes,
                    ha="center", va="center", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=CURVES_DPI, format="png")
    return path
