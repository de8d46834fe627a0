"""Find the sequences of a raw data tree and describe each one uniformly (DESIGN section 4).

Layouts:

- ``native``: ``RAW/{train,val}/<seq>/{blur,sharp}/NNNNNN.png`` (``sharp/`` optional: frames without one are
  unpaired), ``<seq>/exposure.csv`` (``spikeprep.windows.read_exposure_csv``: ``frame_idx,t0,t1``, or frame
  start times with exposure times) and ``<seq>/spike/`` with ``meta.json`` (a continuous stream or one file per
  blur frame).
- per-frame ``.dat`` presets, as the public sets are published (``PRESETS``): S-SDM's GOPRO
  (``<split>/{blur_data,sharp_data,spike_data}/<seq>/NNNNNN.{png,dat}``) and SpkDeblurNet's Spk-GoPro
  (``GOPRO_Large[_spike_seq]/<split>/<seq>/...``): one ``.dat`` per blur frame holding the exposure and
  margins. These sets carry no clock, so each file gets its own stretch of a per-sequence clock and the
  window is exactly the exposure frames (bounds half a tick outside them, so no rounding can move a
  frame in or out).

Every number of a preset can be overridden (``preset_overrides``: the rules that turn the options a user gave
into replaced preset fields). Anything else: write the native layout (the error says so).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
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
    """Geometry of a published per-frame ``.dat`` set; every field can be overridden.

    Folder templates take ``{split}`` and ``{seq}``. The exposure inside each ``.dat`` is either the
    explicit frame span ``[exposure_start, exposure_stop)`` or, with ``exposure_length``, that many frames
    centred in the file (``n // 2 - L // 2`` onwards, ``n`` read from the file's size).
    ``frames_per_file`` None means "read each file's length from its size".
    """

    name: str
    height: int
    width: int
    rate_hz: float
    blur_dir: str
    sharp_dir: str
    spike_dir: str
    frames_per_file: int | None = None
    exposure_start: int | None = None
    exposure_stop: int | None = None
    exposure_length: int | None = None
    flipud: bool = True
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("test", "val"))

    def __post_init__(self):
        explicit = self.exposure_start is not None or self.exposure_stop is not None
        if explicit == (self.exposure_length is not None):
            raise ValueError(f"preset {self.name}: give either exposure_start/exposure_stop or exposure_length")
        if explicit:
            if self.exposure_start is None or self.exposure_stop is None or \
                    not 0 <= self.exposure_start < self.exposure_stop:
                raise ValueError(f"preset {self.name}: need 0 <= exposure_start < exposure_stop, got "
                                 f"{self.exposure_start}, {self.exposure_stop}")
            if self.frames_per_file is not None and self.exposure_stop > self.frames_per_file:
                raise ValueError(f"preset {self.name}: exposure_stop {self.exposure_stop} > frames_per_file "
                                 f"{self.frames_per_file}")
        elif self.exposure_length < 1:
            raise ValueError(f"preset {self.name}: exposure_length must be >= 1")

    def exposure_span(self, n_frames: int) -> tuple[int, int]:
        """First and one-past-last exposure frame in a file of ``n_frames`` frames."""
        if self.exposure_length is None:
            return self.exposure_start, self.exposure_stop
        first = n_frames // 2 - self.exposure_length // 2
        return first, first + self.exposure_length


PRESETS: dict[str, PerFramePreset] = {
    # S-SDM (SpikeReveal) GOPRO: {train,test}/{blur_data,sharp_data,spike_data}/<seq>/NNNNNN.{png,dat};
    # 180x320 spikes for 720x1280 RGB, 137 spike frames per blur frame, frames 20..116 the exposure.
    "s-sdm": PerFramePreset("s-sdm", height=180, width=320, rate_hz=20000.0,
                            blur_dir="{split}/blur_data/{seq}", sharp_dir="{split}/sharp_data/{seq}",
                            spike_dir="{split}/spike_data/{seq}", frames_per_file=137,
                            exposure_start=20, exposure_stop=117),
    # SpkDeblurNet Spk-GoPro: GOPRO_Large/{train,test}/<seq>/{blur_gamma,sharp}/NNNNNN.png and
    # GOPRO_Large_spike_seq/{train,test}/<seq>/spike/NNNNNN.dat; 360x640 spikes for 720x1280 RGB; the
    # official loader takes the 56 spike frames centred in each file as the exposure.
    "spk-gopro": PerFramePreset("spk-gopro", height=360, width=640, rate_hz=20000.0,
                                blur_dir="GOPRO_Large/{split}/{seq}/blur_gamma",
                                sharp_dir="GOPRO_Large/{split}/{seq}/sharp",
                                spike_dir="GOPRO_Large_spike_seq/{split}/{seq}/spike", exposure_length=56),
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
        """``"<split>/<name>"``: the sequence's key in ``dataset.json`` and its folder under DATA_ROOT."""
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


def discover_native(raw: Path, exposure_s: float | None = None) -> list[SequenceSpec]:
    """Sequences of a native-layout tree, sorted by (split, name). ``exposure_s``: the one exposure time of
    tables that give frame start times only (``read_exposure_csv``)."""
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
                exposure=read_exposure_csv(seq_dir / "exposure.csv", exposure_s),
                spike_dir=spike_dir, spike_meta=read_spike_meta(spike_dir)))
    if not specs:
        raise InputError(raw, "no sequences found (expected train/<seq>/ or val/<seq>/ folders)",
                         fix="arrange the data in the native layout (README: 'Raw data'), or pass "
                             "--layout s-sdm / spk-gopro for the published per-frame .dat sets")
    return specs


def _dat_frames(path: Path, nbytes: int) -> int | None:
    try:
        return path.stat().st_size // nbytes
    except FileNotFoundError:
        return None


def discover_per_frame(raw: Path, preset: PerFramePreset) -> list[SequenceSpec]:
    """Sequences of a published per-frame ``.dat`` tree, described with a synthesized clock.

    These sets carry no timestamps, so each sequence gets its own clock on which the file of blur
    frame i starts at ``i * period`` (``period`` = the longest file, so files never overlap) and the
    window is exactly the file's exposure frames, bounds half a tick outside them. Only ticks are real
    here; ``rate_hz`` just sets the unit of seconds.
    """
    raw = Path(raw)
    specs = []
    nbytes = preset.height * preset.width // 8
    for src_split, split in preset.splits:
        pattern = preset.blur_dir.format(split=src_split, seq="*")
        for seq_dir in sorted(p for p in raw.glob(pattern) if p.is_dir()):
            name = seq_dir.relative_to(raw).parts[pattern.split("/").index("*")]
            blur = _frames(seq_dir)
            spike_dir = raw / preset.spike_dir.format(split=src_split, seq=name)
            idx = np.array(sorted(blur), dtype=np.int64)
            lengths = {i: preset.frames_per_file or _dat_frames(spike_dir / f"{i:06d}.dat", nbytes)
                       for i in idx.tolist()}
            period = max([n for n in lengths.values() if n] or [1])
            t0, t1, file_start = [], [], {}
            for i in idx.tolist():
                first, stop = preset.exposure_span(lengths[i] or period)
                start = i * period / preset.rate_hz
                file_start[f"{i:06d}"] = start
                t0.append(start + (first - 0.5) / preset.rate_hz)
                t1.append(start + (stop - 0.5) / preset.rate_hz)
            meta = SpikeMeta(format="dat", layout="per-frame", height=preset.height, width=preset.width,
                             rate_hz=preset.rate_hz, flipud=preset.flipud,
                             file_start_s=file_start or {"000000": 0.0})
            specs.append(SequenceSpec(
                split=split, name=name, seq_dir=seq_dir, blur=blur,
                sharp=_frames(raw / preset.sharp_dir.format(split=src_split, seq=name)),
                exposure=ExposureTable(seq_dir, idx, np.asarray(t0, np.float64), np.asarray(t1, np.float64)),
                spike_dir=spike_dir, spike_meta=meta))
    if not specs:
        where = " or ".join(preset.blur_dir.format(split=s, seq="<seq>") for s, _ in preset.splits)
        raise InputError(raw, f"no sequences found for layout {preset.name} (expected {where}/NNNNNN.png)",
                         fix="check the path and --layout, or convert the data to the native layout")
    return specs


def preset_overrides(layout: str, *, height: int | None = None, width: int | None = None,
                     rate_hz: float | None = None, frames_per_file: int | None = None,
                     exposure_start: int | None = None, exposure_stop: int | None = None,
                     exposure_length: int | None = None) -> dict:
    """The preset fields to replace (``resolve_preset``'s overrides) for the numbers a user gave, None meaning
    "not given"; ``ValueError`` when any is given for the ``native`` layout, which describes itself.

    An exposure length alone switches a span preset to a centred one: the span is cleared and, unless the
    file length is given too, each file's length is read from its size. An exposure start or stop clears
    the exposure length (a centred preset becomes a span one).
    """
    given = dict(height=height, width=width, rate_hz=rate_hz, frames_per_file=frames_per_file,
                 exposure_start=exposure_start, exposure_stop=exposure_stop, exposure_length=exposure_length)
    overrides = {k: v for k, v in given.items() if v is not None}
    if exposure_length is not None and exposure_start is None and exposure_stop is None:
        overrides.update(exposure_start=None, exposure_stop=None)
        overrides.setdefault("frames_per_file", None)
    if exposure_start is not None or exposure_stop is not None:
        overrides.setdefault("exposure_length", None)
    if overrides and layout == "native":
        raise ValueError("preset overrides apply to --layout s-sdm / spk-gopro only; native data describe "
                         "themselves in spike/meta.json and exposure.csv")
    return overrides


def resolve_preset(name: str, **overrides) -> PerFramePreset:
    """A preset with the given fields replaced (a None value clears an optional field)."""
    if name not in PRESETS:
        raise ValueError(f"unknown layout {name!r}; choose native or one of {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - set(PerFramePreset.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown preset fields {unknown}")
    try:
        return replace(PRESETS[name], **overrides)
    except ValueError as err:          # the overrides make an impossible preset: the user's options
        raise InputError(None, str(err), fix="check --exposure-start / --exposure-stop / --exposure-length / "
                         "--frames-per-file (stop after start, inside the file)") from None


def discover(raw: Path, layout: str = "native", exposure_s: float | None = None, **overrides) -> list[SequenceSpec]:
    """Sequences of ``raw`` in the given layout (``native`` or a preset name); ``exposure_s`` (native only):
    the exposure time of ``exposure.csv`` tables that give start times only."""
    if layout == "native":
        return discover_native(raw, exposure_s)
    if exposure_s is not None:
        raise InputError(raw, f"--exposure-s applies to native exposure.csv tables; layout {layout} takes the "
                         "exposure from its .dat files", fix="use --exposure-start/--exposure-stop or "
                         "--exposure-length for a preset")
    return discover_per_frame(raw, resolve_preset(layout, **overrides))
