"""``spikeprep train``: the trainer's command line (model/train.py holds the loop)."""
from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import click

from model.train_options import TrainOptions
from schemas.val_report import format_metric

EXIT_INTERRUPTED = 130          # the shell's code for a program stopped by SIGINT (128 + 2); SIGTERM: 143
# The options' defaults live in TrainOptions alone (model.train_options imports no torch).


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (reading data, building the model, closing): out like a Ctrl-C there.
    The loop installs its own handler (model.train_interrupt: finish the step, save, stop)."""


def _raise_terminated(signum, frame):
    raise _Terminated


DEFAULT = {f.name: f.default for f in dataclasses.fields(TrainOptions) if f.default is not dataclasses.MISSING}


@click.command(epilog="""\b
Examples:
  spikeprep config vrt_spike_baseline my.yaml --data-root data/store   # then: spikeprep ingest ... --write-config my.yaml
  spikeprep train --config my.yaml --exp spike
  spikeprep train --config my.yaml --exp base --no-spike
  spikeprep train --config CFG --exp spike --resume
  spikeprep train --config CFG --exp spike --start-over     # the old run goes to outputs/superseded/
  spikeprep train --config CFG --dry-run
  spikeprep train --config CFG --exp warm --init-from outputs/ckpts/base/last.pth --freeze-vrt-steps 100
  spikeprep train --config CFG --exp s --max-steps 300 --val-every 100 --visual-every 300 --workers 0
  torchrun --nproc_per_node 4 --no-python spikeprep train --config CFG --exp spike
""")
@click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the YAML config (`spikeprep config --list`: the shipped ones to start from)")
@click.option("--no-spike", "no_spike", is_flag=True,
              help="the spike-free arm: plain VRT, same seed and data order, reads no spikes")
@click.option("--exp", help="experiment name for outputs/ckpts/{exp} etc. [spike or base]")
@click.option("--resume", is_flag=True, help="continue from outputs/ckpts/{exp}/last.pth")
@click.option("--start-over", "start_over", is_flag=True,
              help="the experiment has outputs: move them to outputs/superseded/{exp}_{time}/ and start from step 0 "
                   "(without --resume or this, an experiment that has outputs is refused)")
@click.option("--dry-run", "dry_run", is_flag=True,
              help="one batch forward+backward; print each scale's Fr_i/Fs_i shape and parameter counts; write nothing")
@click.option("--max-steps", type=click.IntRange(min=1), help="optimiser steps in all [TRAIN.EPOCHS epochs]")
@click.option("--val-every", type=click.IntRange(min=1), default=DEFAULT["val_every"], show_default=True,
              help="validate every N steps (and at the last step)")
@click.option("--visual-every", type=click.IntRange(min=1), default=DEFAULT["visual_every"], show_default=True,
              help="write triptychs and images every N steps (and at the last step)")
@click.option("--visual-frames", type=click.IntRange(min=0), default=DEFAULT["visual_frames"], show_default=True,
              help="triptychs per visual step")
@click.option("--log-every", type=click.IntRange(min=1), default=DEFAULT["log_every"], show_default=True,
              help="TensorBoard lr and loss terms, and (without a bar) a progress line, every N steps")
@click.option("--workers", type=click.IntRange(min=0), default=DEFAULT["workers"], show_default=True,
              help="DataLoader workers")
@click.option("--device", help="cpu, cuda, cuda:1 ... [cuda if available]")
@click.option("--amp/--no-amp", default=DEFAULT["amp"], help="autocast + GradScaler [on with CUDA]")
@click.option("--stop-at", type=click.IntRange(min=1),
              help="stop after this step as if interrupted (saves last.pth; --resume continues)")
@click.option("--freeze-flow-steps", type=click.IntRange(min=0), default=DEFAULT["freeze_flow_steps"],
              show_default=True,
              help="keep SpyNet and the deformable offsets fixed for the first N steps (VRT's recipe)")
@click.option("--freeze-vrt-steps", type=click.IntRange(min=0), default=DEFAULT["freeze_vrt_steps"],
              show_default=True,
              help="keep the VRT backbone fixed for the first N steps: the spike branch, fusion and head train alone "
                   "first (spike arm; with --init-from, how released VRT weights are fine-tuned)")
@click.option("--init-from", "init_from", type=click.Path(dir_okay=False, path_type=Path),
              help="start the VRT backbone from a spikeprep checkpoint of either arm (e.g. a --no-spike run's "
                   "last.pth on the same store); a new run only, not with --resume or --vrt-weights")
@click.option("--no-vgg", "no_vgg", is_flag=True,
              help="train without the 0.1 x VGG19 perceptual term (e.g. no VGG19 weights on this machine)")
@click.option("--vrt-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="official VRT weights (.pth) as a warm start for the backbone")
@click.option("--val-tile", nargs=2, type=int, default=DEFAULT["val_tile"], show_default=True,
              help="validation tile H W (0 0: whole frames)")
@click.option("--no-progress", is_flag=True,
              help="no progress bar: plain progress lines (also when stdout is not a terminal)")
@click.option("--reliance/--no-reliance", default=DEFAULT["reliance"], show_default=True,
              help="validate the spike arm also with count-zero voxels, another clip's voxels and reversed bins "
                   "(sensitivity diagnostics; count-zero sensitivity = true - count-zero; 4x the validation time)")
def train_cmd(config, no_spike, exp, resume, start_over, dry_run, max_steps, val_every, visual_every, visual_frames, log_every,
              workers, device, amp, stop_at, freeze_flow_steps, freeze_vrt_steps, init_from, no_vgg, vrt_weights,
              val_tile, no_progress, reliance):
    """Train VRT fused with the spike branch, or plain VRT with --no-spike.

    Writes outputs/ckpts/{exp}/{best,last}.pth, outputs/metrics/val_{exp}_{step}.json, TensorBoard logs and
    outputs/logs/run_{exp}_{time}.txt (git revision, config, pip freeze, every line printed), and triptychs
    under outputs/visuals/{exp}/ (outputs = LOG.SAVE_DIR). An experiment that has outputs is refused unless
    --resume or --start-over says what to do with them; a second training of the same --exp stops at once.
    Ctrl-C or SIGTERM saves last.pth at the current step, prints the --resume command and exits 130 / 143 (a
    second one stops at once; last.pth stays whole). SIGUSR1 saves last.pth after the current step and trains on.
    """
    from model.train import main

    opts = TrainOptions(config=config, use_spike=not no_spike, exp=exp, resume=resume, start_over=start_over,
                        dry_run=dry_run,
                        max_steps=max_steps, val_every=val_every, visual_every=visual_every,
                        visual_frames=visual_frames, log_every=log_every, workers=workers, device=device, amp=amp,
                        stop_at=stop_at, freeze_flow_steps=freeze_flow_steps, perceptual=not no_vgg,
                        vrt_weights=vrt_weights, val_tile=tuple(val_tile), progress=not no_progress,
                        reliance=reliance, init_from=init_from, freeze_vrt_steps=freeze_vrt_steps)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        result = main(opts)
    except KeyboardInterrupt as err:
        # Ctrl-C or SIGTERM before the training loop (data, model) or after it (closing): click would print
        # "Aborted!"; SIGTERM's default would end the process without a word.
        name, code = ("SIGTERM", 128 + signal.SIGTERM) if isinstance(err, _Terminated) else ("Ctrl-C", EXIT_INTERRUPTED)
        click.echo(f"\ninterrupted ({name}); checkpoints saved before it are whole (they are written atomically)",
                   err=True)
        sys.exit(code)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.interrupted:
        sys.exit(128 + result.stop_signal if result.stop_signal else EXIT_INTERRUPTED)
    if not dry_run and result.best_psnr is not None:
        click.echo(f"{result.exp}: best validation PSNR {format_metric(result.best_psnr, 'psnr_rgb')} dB; "
                   f"{result.ckpt_dir}")
