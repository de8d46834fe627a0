"""``spikeprep synth OUT``: realistic synthetic raw data in the native layout (thin: parse, call, print)."""
from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from schemas.validation import error_message
from spikeprep.errors import SpikeprepError
from spikeprep.synth import PRESETS, SynthConfig, synthesize

EXAMPLES = """\b
Examples:
  spikeprep synth data/raw --preset demo             # 2+1 sequences x 12 frames, 256x320, .dat stream
  spikeprep synth data/raw --preset tiny --seed 7    # seconds; for tests
  spikeprep synth data/raw --spike-scale 2 --spike-format npz-events --workers 2
  spikeprep synth data/raw --layout per-frame-dat --margin-ticks 20 --misalign seq_001:3 --overwrite
  spikeprep synth data/rig --preset rig              # a hybrid rig: tables on another clock, val unpaired
  spikeprep synth data/rig --preset tiny --frames 24 --clock seq_000:41:1000 --unpaired val
  spikeprep synth data/rig --preset rig --rgb-size 150 190 --rgb-warp 3 0.8 0.015   # cameras not lined up

\b
Writes OUT/{train,val}/seq_NNN/{blur,sharp}/NNNNNN.png, exposure.csv (frame_idx,t0,t1),
spike/meta.json + spike files, and OUT/synth.json (every resolved parameter). Same options and seed
-> byte-identical files, for any --workers.
"""

_DEMO = SynthConfig.from_preset("demo")
_TINY = SynthConfig.from_preset("tiny")


def _help(field: str, text: str | None = None) -> str:
    """Option help: the field's description plus its demo / tiny preset values."""
    desc = text or SynthConfig.model_fields[field].description
    return f"{desc} [demo: {getattr(_DEMO, field)}; tiny: {getattr(_TINY, field)}]"


def _parse_misalign(values: tuple[str, ...]) -> dict[str, int]:
    shifts: dict[str, int] = {}
    for value in values:
        seq, sep, ticks = value.rpartition(":")
        try:
            shift = int(ticks)
        except ValueError:
            shift = None
        if not sep or not seq or shift is None:
            raise click.BadParameter(f"{value!r} is not SEQ:TICKS (e.g. seq_001:3 or seq_000:-2)",
                                     param_hint="--misalign")
        if seq in shifts:
            raise click.BadParameter(f"sequence {seq!r} is given twice", param_hint="--misalign")
        shifts[seq] = shift
    return shifts


def _parse_clock(values: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    clocks: dict[str, tuple[float, float]] = {}
    for value in values:
        parts = value.rsplit(":", 2)
        try:
            offset, drift = float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            offset = drift = None
        if len(parts) != 3 or not parts[0] or offset is None:
            raise click.BadParameter(f"{value!r} is not SEQ:OFFSET_TICKS:DRIFT_PPM (e.g. seq_000:41:1000)",
                                     param_hint="--clock")
        if parts[0] in clocks:
            raise click.BadParameter(f"sequence {parts[0]!r} is given twice", param_hint="--clock")
        clocks[parts[0]] = (offset, drift)
    return clocks


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


@click.command("synth", epilog=EXAMPLES)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="demo", show_default=True,
              help="named bundle of defaults; the options below override it")
@click.option("--height", type=int, help=_help("height"))
@click.option("--width", type=int, help=_help("width"))
@click.option("--spike-scale", type=int, help=_help("spike_scale"))
@click.option("--train-seqs", type=int, help=_help("train_seqs"))
@click.option("--val-seqs", type=int, help=_help("val_seqs"))
@click.option("--frames", type=int, help=_help("frames"))
@click.option("--exposure-ticks", type=int, help=_help("exposure_ticks"))
@click.option("--gap-ticks", type=int, help=_help("gap_ticks"))
@click.option("--margin-ticks", type=int, help=_help("margin_ticks"))
@click.option("--rate-hz", type=float, help=_help("rate_hz"))
@click.option("--start-s", type=float, help=_help("start_s"))
@click.option("--threshold", type=float, help=_help("threshold"))
@click.option("--noise", type=float, help=_help("noise"))
@click.option("--gamma", type=float, help=_help("gamma"))
@click.option("--motion-px", type=float, help=_help("motion_px"))
@click.option("--seed", type=int, help=_help("seed"))
@click.option("--spike-format", type=click.Choice(["dat", "npy-binary", "npz-binary", "npy-events", "npz-events"]),
              help=_help("spike_format"))
@click.option("--layout", type=click.Choice(["stream", "per-frame-dat"]), help=_help("layout"))
@click.option("--misalign", multiple=True, metavar="SEQ:TICKS",
              help="shift SEQ's recorded exposure windows by TICKS/rate_hz seconds (signed int; content "
                   "stays at the true times; repeatable; for audit tests). The stream margins of every "
                   "sequence widen to |TICKS| if --margin-ticks is smaller, so shifted windows stay inside")
@click.option("--clock-offset-ticks", type=float, help=_help("clock_offset_ticks") + " [rig: 40]")
@click.option("--clock-drift-ppm", type=float, help=_help("clock_drift_ppm") + " [rig: 2000]")
@click.option("--jitter-ticks", type=float, help=_help("jitter_ticks") + " [rig: 0.2]")
@click.option("--clock", multiple=True, metavar="SEQ:OFFSET_TICKS:DRIFT_PPM",
              help="SEQ's exposure table runs on a clock with t_spike = (1 + drift) * t_recorded + offset "
                   "(instead of a draw; repeatable). The truth of every sequence goes in synth.json")
@click.option("--unpaired", "unpaired_splits", multiple=True, type=click.Choice(["train", "val"]),
              help="write this split without sharp frames, as a rig records it (repeatable) [rig: val]")
@click.option("--rgb-size", type=(int, int), metavar="H W",
              help="write the RGB frames at H x W: the same field of view as the spike camera at another resolution "
                   "(any ratio); with --rgb-warp, a rig whose cameras do not line up (truth in synth.json)")
@click.option("--rgb-warp", type=(float, float, float), metavar="SHIFT_PX DEG SCALE",
              help="each sequence's RGB view is warped about its centre by a shift, rotation and relative scale "
                   "error drawn within these (e.g. 3 1 0.015)")
@click.option("--rgb-homography-in-meta", is_flag=True, default=None,
              help="write each sequence's true homography into spike/meta.json (a calibrated rig)")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="sequences rendered in parallel processes (output identical for any value)")
@click.option("--overwrite", is_flag=True, help="replace an earlier synth output in OUT")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar")
def synth(out: Path, preset: str, misalign: tuple[str, ...], clock: tuple[str, ...],
          unpaired_splits: tuple[str, ...], workers: int, overwrite: bool, progress: bool, **options) -> None:
    """Write realistic synthetic raw data (blur/sharp PNGs, exposure windows, spikes) to OUT.

    Real scikit-image photographs under smooth random camera motion plus an independently moving
    foreground object, rendered once per spike tick; spikes by integrate-and-fire on luma; blur frame =
    mean of its exposure's sub-frames, sharp frame = the middle one.
    """
    overrides = {k: v for k, v in options.items() if v is not None}
    if misalign:
        overrides["misalign"] = _parse_misalign(misalign)
    if clock:
        overrides["clock"] = _parse_clock(clock)
    if unpaired_splits:
        overrides["unpaired_splits"] = tuple(dict.fromkeys(unpaired_splits))
    try:
        cfg = SynthConfig.from_preset(preset, **overrides)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        msg = error_message(first)
        if loc:
            hint = _option_name(loc[0])
        else:  # a cross-field rule: point at the first option its message names
            named = [f for f in ("misalign", "clock", "unpaired_splits", "layout", "spike_format", "spike_scale",
                                 "train_seqs")
                     if f in msg or f.replace("_", " ") in msg]
            hint = _option_name(named[0]) if named else None
        raise click.BadParameter(msg, param_hint=hint) from None
    try:
        synthesize(out, cfg, workers=workers, progress=progress, overwrite=overwrite)
    except SpikeprepError as err:
        raise click.BadParameter(str(err), param_hint="'OUT'") from None
    n_seq = cfg.train_seqs + cfg.val_seqs
    click.echo(f"wrote {out}: {n_seq} sequences ({cfg.train_seqs} train, {cfg.val_seqs} val) x "
               f"{cfg.frames} frames at {cfg.height}x{cfg.width}; spikes {cfg.spike_height}x"
               f"{cfg.spike_width} {cfg.spike_format} ({cfg.layout}) at {cfg.rate_hz:g} Hz; "
               f"parameters in {out / 'synth.json'}")
