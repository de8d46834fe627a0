"""What the command line adds to a training config (``TrainOptions``), and the command that resumes a run.

``TrainOptions`` is the one place the trainer's option defaults live: ``cli/train_cmd.py`` reads its
click defaults from the dataclass's fields, and ``resume_command`` writes back only the options that differ
from them. This module imports no torch, so ``spikeprep --help`` stays fast.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainOptions:
    """What the command line adds to the YAML config (the YAML keeps the original document's fields).

    max_steps: optimiser steps in all (None: TRAIN.EPOCHS epochs). val_every / visual_every: validation
    and visual intervals in steps (the original's 1000 and 10000); the last step always validates and
    writes visuals. stop_at: stop after this step as if interrupted (last.pth is saved; --resume goes on),
    for time-boxed jobs. freeze_flow_steps: SpyNet and the deformable offsets stay fixed for the first N
    steps (VRT's recipe; 0 keeps the original's). perceptual: False drops the VGG term (only on request:
    without VGG19 weights training stops and says so). vrt_weights: official VRT weights as a warm start.
    reliance: every validation of the spike arm also scores it with altered voxels (DESIGN section 8).
    init_from: a spikeprep checkpoint (either arm) whose VRT backbone (``vrt.*``) starts this run (a run from
    scratch only; the rest starts as usual). freeze_vrt_steps: the backbone gets no update in the first N
    steps, so the spike branch, fusion and head train alone first (the spike arm only).
    resume: continue the experiment from its last.pth; start_over: move the experiment's outputs aside
    (``model.experiment.move_aside``) and start from step 0. Without either, an experiment that has outputs
    is refused.
    """

    config: Path
    use_spike: bool = True
    exp: str | None = None
    resume: bool = False
    start_over: bool = False
    dry_run: bool = False
    max_steps: int | None = None
    val_every: int = 1000
    visual_every: int = 10000
    visual_frames: int = 4
    log_every: int = 10
    workers: int = 8
    device: str | None = None
    amp: bool | None = None
    stop_at: int | None = None
    freeze_flow_steps: int = 0
    perceptual: bool = True
    vrt_weights: Path | None = None
    val_tile: tuple[int, int] = (256, 256)
    progress: bool = True
    reliance: bool = True
    init_from: Path | None = None
    freeze_vrt_steps: int = 0

    @property
    def exp_name(self) -> str:
        """The experiment name: ``exp``, or the arm's name (``spike``/``base``) when none was given."""
        from model.checkpoint import arm_name      # here, not at the top: model.checkpoint imports torch

        return self.exp or arm_name(self.use_spike)


_RESUME_FLAGS = {"max_steps": "--max-steps", "val_every": "--val-every", "visual_every": "--visual-every",
                 "visual_frames": "--visual-frames", "log_every": "--log-every", "workers": "--workers",
                 "device": "--device", "stop_at": "--stop-at", "freeze_flow_steps": "--freeze-flow-steps",
                 "freeze_vrt_steps": "--freeze-vrt-steps"}


def resume_command(opts: TrainOptions, world: int = 1) -> str:
    """The ``spikeprep train ... --resume`` command line that continues this run from its last.pth: the same
    options (the schedule must stay the same for the resumed losses to equal an uninterrupted run's)."""
    defaults = TrainOptions(config=opts.config)
    args = ["spikeprep", "train", "--config", str(opts.config), "--exp", opts.exp_name]
    if not opts.use_spike:
        args.append("--no-spike")
    for name, flag in _RESUME_FLAGS.items():
        value = getattr(opts, name)
        if value is not None and value != getattr(defaults, name):
            args += [flag, str(value)]
    if opts.amp is not None:
        args.append("--amp" if opts.amp else "--no-amp")
    if tuple(opts.val_tile) != defaults.val_tile:
        args += ["--val-tile", *(str(v) for v in opts.val_tile)]
    args += [flag for flag, on in (("--no-vgg", not opts.perceptual), ("--no-progress", not opts.progress),
                                   ("--no-reliance", not opts.reliance)) if on]
    args.append("--resume")
    prefix = ["torchrun", "--nproc_per_node", str(world), "--no-python"] if world > 1 else []
    return shlex.join(prefix + args)
