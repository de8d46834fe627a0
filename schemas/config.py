"""The training/data configuration (``configs/deblur/vrt_spike_baseline.yaml``), validated.

The fields are the original document's section 7, plus the measured departures from it, each named for what
it changes and off by default (``MODEL.FUSE.TYPE``'s values other than ``TemporalCrossAttn``, ``DATA.TOTALS_ONLY``; README,
"Models (MODEL.FUSE.TYPE)"). Every section forbids unknown keys, so
a misspelled key fails with its dotted name instead of being silently ignored. Records are frozen;
``model_copy(update=...)`` gives a changed copy.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from schemas.fuse_types import FUSE_TYPES, HEAD_FUSE_TYPES
from schemas.record import Record
from schemas.validation import describe_validation_error


# The one definition of each default the config, ingest, audit and the voxelizer share.
DEFAULT_NUM_BINS = 32     # K: voxel bins per exposure window (the original document's default)
DEFAULT_CROP_SIZE = 256   # training crop side in RGB pixels (the original document's default)
DEFAULT_CLIP_LEN = 5      # frames per training clip (T); ingest checks each split has a clip this long
# The crop rule (DESIGN section 7): VRT's 8x8 attention windows and its three 2x downsamplings need every
# training crop, and every side it processes whole, to be a multiple of 8 and at least 64 pixels. The config
# check, the trainer, VRT's input check and the audit's --crop hint all ask the functions below.
CROP_MULTIPLE = 8
MIN_CROP_SIZE = 64


def crop_size_rule() -> str:
    """The crop rule in words."""
    return f"a multiple of {CROP_MULTIPLE} and at least {MIN_CROP_SIZE} pixels"


def crop_size_problem(side: int) -> str | None:
    """Why ``side`` (a crop size, or a side of a frame VRT processes whole) breaks the crop rule, or None."""
    if side % CROP_MULTIPLE or side < MIN_CROP_SIZE:
        return f"{side} is not {crop_size_rule()}"
    return None


def nearest_valid_crop(crop: int) -> int:
    """The valid crop nearest ``crop`` from below (at least ``MIN_CROP_SIZE``): what to set instead."""
    return max(MIN_CROP_SIZE, crop // CROP_MULTIPLE * CROP_MULTIPLE)


def largest_valid_crop(short_side: int) -> int | None:
    """The largest valid crop a frame with this short side fits, None when none does (below ``MIN_CROP_SIZE``)."""
    crop = short_side // CROP_MULTIPLE * CROP_MULTIPLE
    return crop if crop_size_problem(crop) is None else None


# DESIGN section 3: a voxel STD below this is an error (the spikes are constant); used by NormConfig,
# the ingest/audit stats check and the Dataset.
MIN_STD = 1e-6


class _Section(Record):
    """A config section: frozen, unknown keys rejected (a misspelled key is an error that names it)."""


class NormConfig(_Section):
    """``DATA.NORM``: served voxels are ``(log1p(count) - MEAN) / STD``; STD >= ``MIN_STD`` (1e-6)."""

    MEAN: float = 0.0
    STD: float = Field(1.0, ge=MIN_STD)  # DESIGN section 3: STD < 1e-6 is an error

    @field_validator("MEAN", "STD")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class DataConfig(_Section):
    """``DATA``: the store (ROOT), split names, train crop side, clip length T, time bins K, NORM.

    ``TOTALS_ONLY`` (an ablation, issue 29): the spike arm trains, validates and tests on totals-only voxels,
    each pixel's K bins replaced by its mean count over them (same shape, same store; normalised with NORM like
    any count: ``spikeprep.spike_deblur_dataset``), so only the spike total is left. Spike minus a totals-only
    arm trained at equal data, steps and seed is what spike timing adds. Saved in every checkpoint's config, so
    ``--resume``, validation and ``spikeprep test`` serve what the arm learnt on.
    """

    ROOT: str
    TRAIN_SPLIT: str = "train"
    VAL_SPLIT: str = "val"
    CROP_SIZE: int = Field(DEFAULT_CROP_SIZE, gt=0)
    CLIP_LEN: int = Field(DEFAULT_CLIP_LEN, gt=0)
    K: int = Field(DEFAULT_NUM_BINS, gt=0)
    NORM: NormConfig = NormConfig()
    TOTALS_ONLY: bool = False


class HeadsConfig(_Section):
    """``MODEL.SPIKE_TSA``: attention heads of the spike temporal self-attention."""

    HEADS: int = Field(4, gt=0)


class FuseConfig(_Section):
    """``MODEL.FUSE``: the fusion and output head (a name of ``schemas.fuse_types.FUSE_TYPES``, the one list)
    and the fusion's attention heads.

    ``TemporalCrossAttn`` is the original section 10.2; the other types are its measured departures and
    the ablation's variants (benchmarks/RESULTS.md, "Spike ablation").
    """

    TYPE: Literal[FUSE_TYPES] = "TemporalCrossAttn"
    HEADS: int = Field(4, gt=0)


class ModelConfig(_Section):
    """``MODEL``: VRT preset or config (VRT_CFG), spike-branch channels per scale, layers, TSA and fusion."""

    VRT_CFG: str
    CHANNELS_PER_SCALE: list[int] = Field(default_factory=lambda: [96, 96, 96, 96])
    LAYERS: int = Field(4, gt=0)
    SPIKE_TSA: HeadsConfig = HeadsConfig()
    FUSE: FuseConfig = FuseConfig()
    # False cuts the original's spike branch out of the spike arm: no SpikeEncoder3D, temporal self-attention
    # or fusion (Ff_i = Fr_i), and the spike head reads zeros where Fs'_1 would be; the voxels reach the output
    # through the head alone. spike - no-branch at equal steps is what the branch adds (issue 29). Needs a
    # FUSE.TYPE with a spike head.
    SPIKE_BRANCH: bool = True

    @field_validator("CHANNELS_PER_SCALE")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(c <= 0 for c in value):
            raise ValueError("must be a non-empty list of positive channel counts")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        channels = self.CHANNELS_PER_SCALE
        if len(channels) != self.LAYERS:
            raise ValueError(f"CHANNELS_PER_SCALE has {len(channels)} entries but LAYERS is {self.LAYERS}: give "
                             "one channel count per scale")
        if not self.SPIKE_BRANCH and self.FUSE.TYPE not in HEAD_FUSE_TYPES:
            raise ValueError(f"SPIKE_BRANCH is false, which leaves FUSE.TYPE {self.FUSE.TYPE!r} (no spike head) no way "
                             f"to read the spikes: set SPIKE_BRANCH: true, or a type with a spike head "
                             f"({', '.join(HEAD_FUSE_TYPES)})")
        for key, heads in (("SPIKE_TSA.HEADS", self.SPIKE_TSA.HEADS), ("FUSE.HEADS", self.FUSE.HEADS)):
            if any(c % heads for c in channels):
                raise ValueError(f"{key} is {heads}, which does not divide every entry of CHANNELS_PER_SCALE "
                                 f"{channels}: attention splits each scale's channels evenly over its heads")
        return self


class OptimConfig(_Section):
    """``TRAIN.OPTIM``: AdamW learning rate; ``FITTED_HEAD_LR_SCALE``: the learning rate of the parameters a
    fitted spike head's start sets (its least-squares taps and bias, a gated head's gate scalars) as a
    fraction of LR, since they start at an optimum of the training split. 1 (the default) trains them like every
    other parameter; at 0.05 the gated head gained 0.1 to 0.3 dB on two stores, too little to ship
    (benchmarks/RESULTS.md, "Spike arm: gated heads")."""

    LR: float = Field(2e-4, gt=0)
    FITTED_HEAD_LR_SCALE: float = Field(1.0, gt=0, le=1)


class SchedConfig(_Section):
    """``TRAIN.SCHED``: linear warm-up steps before the cosine schedule."""

    WARMUP_STEPS: int = Field(5000, ge=0)


class TrainConfig(_Section):
    """``TRAIN``: batch size per process, epochs, optimiser and schedule.

    ``AUX_SPIKE_RECON_WEIGHT`` (issue 29, a named departure from the original's losses): above 0 the spike
    arm's branch also learns, through a conv3x3 from Fs'_1, to reconstruct the sharp frame's Rec.601 luma
    (what SpkDeblurNet trains its spike branch to do), and the loss adds this weight x Charbonnier of it. The
    conv is part of the model (saved, resumed), built only above 0; 0 (the default) is the original's loss.
    Needs MODEL.SPIKE_BRANCH; the spike-free arm ignores it.
    """

    BATCH_SIZE: int = Field(8, gt=0)
    EPOCHS: int = Field(80, gt=0)
    OPTIM: OptimConfig = OptimConfig()
    SCHED: SchedConfig = SchedConfig()
    AUX_SPIKE_RECON_WEIGHT: float = Field(0.0, ge=0, allow_inf_nan=False)


class LogConfig(_Section):
    """``LOG``: TensorBoard on/off and the outputs root (SAVE_DIR)."""

    TENSORBOARD: bool = True
    SAVE_DIR: str = "outputs"


class Config(_Section):
    """The whole configuration file."""

    SEED: int = 123
    DATA: DataConfig
    MODEL: ModelConfig
    TRAIN: TrainConfig = TrainConfig()
    LOG: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _aux_target_has_a_branch(self) -> "Config":
        if self.TRAIN.AUX_SPIKE_RECON_WEIGHT > 0 and not self.MODEL.SPIKE_BRANCH:
            raise ValueError("TRAIN.AUX_SPIKE_RECON_WEIGHT is above 0, but MODEL.SPIKE_BRANCH is false: the auxiliary "
                             "luma target trains the spike branch, which this config does not build; set "
                             "AUX_SPIKE_RECON_WEIGHT: 0 or SPIKE_BRANCH: true")
        return self


class ConfigError(ValueError):
    """A config file that does not validate; the message names the file and each bad key."""


def parse_config(raw: object, source: str = "<config>") -> Config:
    """Validate a parsed YAML mapping; raise ``ConfigError`` naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = describe_validation_error(err, unknown_key="unknown key (not in schemas/config.py)")
        raise ConfigError(f"{source}: {problems}. Fix: correct or remove these keys") from None


def read_config_text(path: str | Path) -> str:
    """The text of a YAML file (a config, a VRT config): UTF-8 (a byte-order mark is dropped), else
    ``ConfigError`` naming the file, the first undecodable byte, its position and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[err.start]:02x} at byte position {err.start} "
                          f"(line {line}, column {column}) cannot be decoded. Fix: save the file as UTF-8 (e.g. "
                          f"`iconv -f latin1 -t utf-8 {path} > fixed.yaml` for a Latin-1 comment)") from None


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...] = ()) -> list[tuple[str, int, int]]:
    """``(dotted key, first line, second line)`` of every key that a mapping of ``node`` holds twice (lines
    1-based)."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen:
                found.append((".".join((*path, key)), seen[key], line))
            else:
                seen[key] = line
            found += _duplicate_keys(value_node, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path, str(i)))
    return found


def load_yaml_text(text: str, source: str = "<config>") -> object:
    """Parse YAML text as every config of this project is parsed: safe types only, and a key given twice in
    one mapping is a ``ConfigError`` naming both lines (PyYAML would keep the last one silently)."""
    try:
        duplicates = _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err})") from None
    if duplicates:
        raise ConfigError(f"{source}: " + "; ".join(f"key {key} is given twice, on lines {first} and {second}"
                                                      for key, first, second in duplicates)
                          + " (YAML would keep only the last). Fix: keep one of each")
    return raw


def parse_config_text(text: str, source: str = "<config>") -> Config:
    """Parse and validate the YAML text of a config; errors name ``source``."""
    return parse_config(load_yaml_text(text, source), source)


def _resolve_vrt_path(cfg: Config, config_dir: Path) -> Config:
    """A relative VRT_CFG *path* found next to the config becomes absolute; names and others stay as written."""
    value = cfg.MODEL.VRT_CFG
    path = Path(value).expanduser()
    looks_like_path = path.suffix in (".yaml", ".yml") or len(path.parts) > 1
    if not looks_like_path or path.is_absolute() or not (config_dir / path).is_file():
        return cfg
    model = cfg.MODEL.model_copy(update={"VRT_CFG": str((config_dir / path).resolve())})
    return cfg.model_copy(update={"MODEL": model})


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; a relative ``MODEL.VRT_CFG`` file is the config folder's."""
    path = Path(path)
    return _resolve_vrt_path(parse_config_text(read_config_text(path), str(path)), path.parent)


_SCALAR_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*:\s*)([^#\n]*?)(\s*(#.*)?)$")


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar


def edit_config_text(text: str, updates: Mapping[str, object], source: str = "<config>") -> str:
    """Set the scalar values of dotted keys (``"DATA.NORM.MEAN"``) in a config's YAML text, in place.

    Every other line stays as it was (comments, order, formatting). Each key must already be in the text
    as a ``KEY: value`` line inside its sections; the result must validate and hold exactly the new values.
    Raises ``ConfigError`` naming ``source`` otherwise.
    """
    lines = text.splitlines(keepends=True)
    section: list[str] = []  # the chain of mapping keys enclosing the current line
    indents: list[int] = []
    wanted = {tuple(key.split(".")): value for key, value in updates.items()}
    done: set[tuple[str, ...]] = set()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        while indents and indent <= indents[-1]:
            indents.pop(), section.pop()
        m = _SCALAR_LINE.match(line.rstrip("\n"))
        if m and m.group(4):
            key = (*section, m.group(2))
            if key in wanted:
                newline = "\n" if line.endswith("\n") else ""
                lines[i] = f"{m.group(1)}{m.group(2)}{m.group(3)}{_yaml_scalar(wanted[key])}{m.group(5) or ''}{newline}"
                done.add(key)
            continue
        if stripped.endswith(":"):
            section.append(stripped[:-1].strip())
            indents.append(indent)
    missing = [".".join(k) for k in wanted if k not in done]
    if missing:
        raise ConfigError(f"{source}: no {', '.join(missing)} line to update. Fix: start from a config that "
                          "has these keys (`spikeprep config --list`)")
    new_text = "".join(lines)
    data = parse_config_text(new_text, source).model_dump()
    for key, value in wanted.items():
        got = data
        for part in key:
            got = got[part]
        if got != value:
            raise ConfigError(f"{source}: setting {'.'.join(key)} to {value!r} did not round-trip (read back "
                              f"{got!r}). Fix: edit it by hand")
    return new_text
