"""Find the sequences of a raw data tree and describe each one uniformly (DESIGN section 4).

Layouts:

- ``native``: ``RAW/{train,val}/<seq>/{blur,sharp}/NNNNNN.png``, ``<seq>/exposure.csv`` and
  ``<seq>/spike/`` with ``meta.json`` (a continuous stream or one file per blur frame).
- per-frame ``.dat`` presets, as the public sets are published: ``RAW/<split>/{blur_data,sharp_data,
  spike_data}/<seq>/NNNNNN.{png,dat}``, one ``.dat`` per blur frame holding ``frames_per_file`` spike
  frames of which ``[exposure_start, exposure_stop)`` is the exposure. These sets carry no clock, so
  each file gets its own stretch of a per-sequence clock: file of blur frame i starts at
  ``i * frames_per_file / rate_hz`` (files never overlap), and the window is exactly the exposure frames
  (bounds half a tick outside them, so no rounding can move a frame in or out).

Every number of a preset can be overridden. Anything else: write the native layout (the error says so).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from schemas.spike_meta import SpikeMeta
from spikeprep.errors import InputError
from spikeprep.formats.meta import read_spike_meta
from spikeprep.windows import ExposureTable, read_exposure_csv

FRAME_NAME = re.compile(r"^(\d+)\.png$")
NATIVE_SPLITS = ("train", "val")


@dataclass(frozen=True)
class PerFramePreset:
    """Geometry of a published per-frame ``.dat`` set; every field can be overridden."""

    name: str
    height: int
    width: int
    rate_hz: float
    frames_per_file: int
    exposure_start: int           # first exposure frame inside each file
    exposure_stop: int            # one past the last exposure frame
    flipud: bool = True
    blur_dir: str = "blur_data"
    sharp_dir: str = "sharp_data"
    spike_dir: str = "spike_data"
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "val"})

    def __post_init__(self):
        if not 0 <= self.exposure_start < self.exposure_stop <= self.frames_per_file:
            raise ValueError(f"preset {self.name}: need 0 <= exposure_start < exposure_stop <= "
                             f"frames_per_file, got {self.exposure_start}, {self.exposure_stop}, "
                             f"{self.frames_per_file}")


PRESETS: dict[str, PerFramePreset] = {
    # S-SDM (SpikeReveal) GOPRO: 180x320 spikes for 720x1280 RGB, 137 spike frames per blur frame,
    # the middle 97 (frames 20..116 inclusive) being the exposure.
    "s-sdm": PerFramePreset("s-sdm", height=180, width=320, rate_hz=20000.0, frames_per_file=137,
                            exposure_start=20, exposure_stop=117),
}


@dataclass(frozen=True)
class SequenceSpec:
    """One raw sequence, whatever its layout: frames, windows, and how to open its spikes."""

    split: str
    name: str
    seq_dir: Path
    blur: dict[int, Path]          # frame_idx -> PNG
    sharp: dict[int, Path]
    exposure: ExposureTable
    spike_dir: Path
    spike_meta: SpikeMeta

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"


def _frames(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        m = FRAME_NAME.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def discover_native(raw: Path) -> list[SequenceSpec]:
    """Sequences of a native-layout tree, sorted by (split, name)."""
    raw = Path(raw)
    specs = []
    for split in NATIVE_SPLITS:
        split_dir = raw / split
        if not split_dir.is_dir():
            continue
        for seq_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            spike_dir = seq_dir / "spike"
            if not (seq_dir / "blur").is_dir():
                raise InputError(seq_dir, "no blur/ folder",
                                 fix="each sequence needs blur/, sharp/, spike/ and exposure.csv (README)")
            specs.append(SequenceSpec(
                split=split, name=seq_dir.name, seq_dir=seq_dir,
                blur=_frames(seq_dir / "blur"), sharp=_frames(seq_dir / "sharp"),
                exposure=read_exposure_csv(seq_dir / "exposure.csv"),
                spike_dir=spike_dir, spike_meta=read_spike_meta(spike_dir)))
    if not specs:
        raise InputError(raw, "no sequences found (expected train/<seq>/ or val/<seq>/ folders)",
                         fix="arrange the data in the native layout (README: 'Raw data'), or pass "
                             "--layout s-sdm for the S-SDM GOPRO per-frame .dat set")
    return specs


def discover_per_frame(raw: Path, preset: PerFramePreset) -> list[SequenceSpec]:
    """Sequences of a published per-frame ``.dat`` tree, described with a synthesized clock."""
    raw = Path(raw)
    specs = []
    for src_split, split in preset.splits.items():
        blur_root = raw / src_split / preset.blur_dir
        if not blur_root.is_dir():
            continue
        for seq_dir in sorted(p for p in blur_root.iterdir() if p.is_dir()):
            name = seq_dir.name
            blur = _frames(seq_dir)
            spike_dir = raw / src_split / preset.spike_dir / name
            period = preset.frames_per_file / preset.rate_hz
            idx = np.array(sorted(blur), dtype=np.int64)
            file_start = {f"{i:06d}": float(i * period) for i in idx.tolist()}
            starts = idx * period
            t0 = starts + (preset.exposure_start - 0.5) / preset.rate_hz
            t1 = starts + (preset.exposure_stop - 0.5) / preset.rate_hz
            meta = SpikeMeta(format="dat", layout="per-frame", height=preset.height, width=preset.width,
                             rate_hz=preset.rate_hz, flipud=preset.flipud,
                             file_start_s=file_start or {"000000": 0.0})
            specs.append(SequenceSpec(
                split=split, name=name, seq_dir=seq_dir, blur=blur,
                sharp=_frames(raw / src_split / preset.sharp_dir / name),
                exposure=ExposureTable(seq_dir, idx, t0, t1), spike_dir=spike_dir, spike_meta=meta))
    if not specs:
        raise InputError(raw, f"no sequences found for layout {preset.name} (expected "
                              f"<split>/{preset.blur_dir}/<seq>/NNNNNN.png with splits {list(preset.splits)})",
                         fix="check the path and --layout, or convert the data to the native layout")
    return specs


def resolve_preset(name: str, **overrides) -> PerFramePreset:
    """A preset with the given fields overridden (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown layout {name!r}; choose native or one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def discover(raw: Path, layout: str = "native", **overrides) -> list[SequenceSpec]:
    """Sequences of ``raw`` in the given layout (``native`` or a preset name)."""
    if layout == "native":
        return discover_native(raw)
    return discover_per_frame(raw, resolve_preset(layout, **overrides))
