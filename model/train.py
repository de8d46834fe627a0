"""Train VRT + spike branch (or plain VRT with --no-spike) on a spikeprep store.

    spikeprep config vrt_spike_baseline my.yaml --data-root DATA_ROOT
    spikeprep train --config my.yaml --exp spike
    spikeprep train --config my.yaml --exp base --no-spike
    spikeprep train --config ... --exp spike --resume                 # continue from last.pth
    spikeprep train --config ... --dry-run                            # shapes, parameter counts; writes nothing
    spikeprep train --config ... --exp s --max-steps 300 --val-every 100 --visual-every 300 --workers 0
    torchrun --nproc_per_node 4 --no-python spikeprep train --config ... --exp spike   # DDP (gloo on CPU)

The order of work is the original document's (section 8.2): seed and cudnn flags; Dataset/DataLoader;
model (VRT + SpikeEncoder3D + temporal self-attention + temporal cross-attention fusion); AdamW, cosine
schedule with linear warm-up, AMP on CUDA; per step L = Charbonnier + 0.1 VGG; validation every
``val_every`` steps at full size (PSNR RGB/Y, SSIM, LPIPS), keeping best.pth and last.pth; TensorBoard;
triptychs every ``visual_every`` steps. The two arms differ only in the spike branch: same seed, same
clips in the same order, same crops; the spike-free arm never reads a voxel.

Outputs under LOG.SAVE_DIR (``outputs``)::

    ckpts/{exp}/best.pth, last.pth           model, optimizer, scheduler, scaler, step, RNG, config
    metrics/val_{exp}_{step}.json            schemas.val_report.ValReport
    logs/{exp}/events.*                      TensorBoard: loss (total every step), lr, PSNR, SSIM, LPIPS,
                                             reliance; the triptychs as images; the hparams table
    logs/run_{exp}_{time}.txt                git revision, command, config text, pip freeze, then every
                                             line the run printed (model.train_log.TrainLog)
    visuals/{exp}/step_{step:07d}/...        {seq}_{frame}_triptych.png (blur | recon | sharp) and
                                             {seq}/{frame:06d}_{blur,recon,sharp}.png

Rank 0 alone logs, validates and saves. On CPU a resumed run's losses equal an uninterrupted run's
exactly: the sampler order and the crops are functions of (SEED, epoch), the DataLoader has its own
generator, and the checkpoint holds torch's RNG state (drop path) with the step and the batch position.
Ctrl-C stops after the current step with last.pth saved at it and prints the ``--resume`` command
(``StopOnCtrlC``); the CLI then exits 130.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import pickle
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from model.checkpoint import CKPT_VERSION, arm_name, check_compatible, load_checkpoint, save_checkpoint
from model.nets.integrate_vrt import SpikeVRT, build_model
from model.nets.vrt import StateDictMismatchError
from model.losses.deblur_loss import DeblurLoss
from model.losses.vgg_perceptual import VGGWeightsUnavailable
from model.evaluate import lsq_accumulate, validate
from model.nets.fusion.spike_head import FittedSpikeHead
from model.metrics import lpips_or_reason
from model.train_log import TrainLog, capture_spikeprep_logging
from schemas.config import Config, ConfigError, load_config
from schemas.val_report import PROBES, ValReport, val_report_path, write_val_report
from spikeprep.errors import InputError, SpikeprepError
from spikeprep.images import read_rgb
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, collate_drop_bad, lookup_upsample

SOURCE_ROOT = Path(__file__).resolve().parents[1]   # the checkout, when spikeprep runs from one


class TrainingDiverged(SpikeprepError):
    """The loss became NaN or infinite; nothing was saved for that step."""


# ---------------------------------------------------------------------------------------------- config
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
    """

    config: Path
    use_spike: bool = True
    exp: str | None = None
    resume: bool = False
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

    @property
    def exp_name(self) -> str:
        """The experiment name: ``exp``, or the arm's name (``spike``/``base``) when none was given."""
        return self.exp or arm_name(self.use_spike)


@dataclass
class TrainResult:
    """What ``main`` returns (tests read it; the CLI prints a summary)."""

    exp: str
    step: int
    losses: list[float] = field(default_factory=list)      # this process's per-step total loss, in order
    batches: list[list[tuple]] = field(default_factory=list)  # per step: (seq, frame_idx, crop) per sample
    reports: list[Path] = field(default_factory=list)
    best_psnr: float | None = None
    ckpt_dir: Path | None = None
    interrupted: bool = False                 # stopped by Ctrl-C (the CLI exits 130)


MAX_SKIPPED_BATCHES_IN_A_ROW = 100   # or a whole epoch, if shorter: then training stops with an error


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1 over ``warmup_steps``, then cosine decay to 0 at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def flow_parameter_names(model: SpikeVRT) -> list[str]:
    """SpyNet's and the deformable alignment's offset-predicting parameters (frozen by freeze_flow_steps)."""
    return [n for n, _ in model.named_parameters() if ".spynet." in f".{n}" or ".conv_offset." in n]


# ---------------------------------------------------------------------------------------------- helpers
class ResumableSampler(DistributedSampler):
    """DistributedSampler (order a function of seed and epoch) that can start mid-epoch on resume."""

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        self.start = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _git_revision() -> str:
    if not (SOURCE_ROOT / ".git").exists():  # an installed wheel: site-packages may sit inside another repository
        from importlib.metadata import PackageNotFoundError, version
        try:
            return f"spikeprep {version('spikeprep')} (installed, not a git checkout)"
        except PackageNotFoundError:
            return "unknown (not a git checkout)"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=SOURCE_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 \
            else "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _pip_freeze() -> str:
    # importlib.metadata lists what pip freeze would, without a subprocess (and works without pip).
    dists = {(d.metadata["Name"] or "?").lower(): d.version for d in metadata.distributions()}
    return "\n".join(f"{name}=={version}" for name, version in sorted(dists.items()))


def write_run_log(path: Path, opts: TrainOptions, cfg: Config, config_text: str, extra: dict) -> None:
    """Write the run log ``path``: time, git revision, command line, Python/torch versions, the options,
    ``extra`` (one ``key: value`` line each), the config file's text, the resolved config and pip freeze."""
    lines = [f"time: {time.strftime('%Y-%m-%d %H:%M:%S')}",
             f"git: {_git_revision()}",
             f"command: {' '.join(sys.argv)}",
             f"python: {sys.version.split()[0]} on {platform.platform()}",
             f"torch: {torch.__version__}",
             "options: " + json.dumps({k: str(v) for k, v in dataclasses.asdict(opts).items()}),
             *(f"{k}: {v}" for k, v in extra.items()),
             "", f"# config file {opts.config}", config_text.rstrip(),
             "", "# resolved config", json.dumps(cfg.model_dump(mode="json"), indent=2),
             "", "# pip freeze", _pip_freeze(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _batch_inputs(batch: dict, device: torch.device, use_spike: bool, train_ds: SpikeDeblurDataset):
    """float32 (blur, sharp, spike or None) on ``device`` of a batch of ``train_ds``: a compact batch (uint8
    frames, counts at the spike grid) crosses to the device as it is and becomes the default items' tensors
    there through the Dataset's own tables (bit for bit, tested); a default batch is moved as it is."""
    rgb_lut, count_lut = train_ds.device_luts(device)

    def frames(key: str) -> torch.Tensor:
        x = batch[key].to(device, non_blocking=True)
        return lookup_upsample(x, rgb_lut, (1, 1)) if x.dtype == torch.uint8 else x

    spike = None
    if use_spike and "spike_counts" in batch:
        # One scale per batch: collate keeps only samples of one counts shape and one crop size.
        spike = lookup_upsample(batch["spike_counts"].to(device, non_blocking=True), count_lut,
                                batch["meta"]["scale"][0])
    elif use_spike:
        spike = batch["spike_vox"].to(device, non_blocking=True)
    return frames("blur"), frames("sharp"), spike


# ---------------------------------------------------------------------------------------------- main
def main(opts: TrainOptions) -> TrainResult:
    """Train one arm as ``opts`` says (the module docstring lists the outputs); returns its ``TrainResult``.

    Under torchrun (``RANK`` set) it joins the process group (NCCL on CUDA, else gloo) and leaves it at
    the end; ``--dry-run`` runs one batch forward and backward and writes nothing.
    """
    # -- config ------------------------------------------------------------------------------------
    cfg = load_config(opts.config)
    config_text = Path(opts.config).read_text()
    crop = cfg.DATA.CROP_SIZE
    if crop % 8 or crop < 64:      # VRT's windows and its three 2x downsamplings need this of every crop
        raise ConfigError(f"{opts.config}: DATA.CROP_SIZE is {crop}; VRT trains on crops that are multiples of 8 "
                          f"and at least 64 pixels. Fix: set DATA.CROP_SIZE to {max(64, crop // 8 * 8)} or more "
                          f"(a multiple of 8)")
    exp = opts.exp_name
    outputs = Path(cfg.LOG.SAVE_DIR)
    ckpt_dir = outputs / "ckpts" / exp

    # -- distributed setup ---------------------------------------------------------------------------
    ddp = int(os.environ.get("RANK", -1)) != -1
    if ddp:
        backend = "nccl" if torch.cuda.is_available() and opts.device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    else:
        rank, world, local_rank = 0, 1, 0
    master = rank == 0
    if opts.device:
        device = torch.device(opts.device)
    else:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = device.type == "cuda" if opts.amp is None else bool(opts.amp and device.type == "cuda")
    torch.manual_seed(cfg.SEED)
    np.random.seed(cfg.SEED)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True

    try:
        return _train(opts, cfg, config_text, exp, outputs, ckpt_dir, device, amp, rank, world, master, ddp)
    finally:
        if ddp:
            dist.destroy_process_group()


def start_fitted_head(head: FittedSpikeHead, train_ds: SpikeDeblurDataset, say) -> None:
    """Start the fitted spike head at the least-squares map of the training split, its counts divided by their
    RMS there and its blur input as it is (every rank computes the same deterministic fit, so DDP's replicas
    agree without a broadcast)."""
    t0 = time.perf_counter()
    acc, frames = lsq_accumulate(train_ds.root, train_ds.split)
    mean, std = acc.input_moments()
    k = acc.num_bins
    count_rms = float(np.sqrt(np.mean(mean[:k] ** 2 + std[:k] ** 2)))
    if count_rms == 0:
        say(f"spike head: no spike in the {frames} {train_ds.split} frames of {train_ds.root}; it starts at "
            "zero instead of the least-squares map")
        return
    head.start_from_least_squares(acc.solve(), np.zeros(k + 3), np.array([count_rms] * k + [1.0] * 3),
                                  train_ds.norm_mean, train_ds.norm_std)
    say(f"spike head: started at the least-squares map of {frames} {train_ds.split} frames "
        f"({time.perf_counter() - t0:.1f} s)")


def _train(opts, cfg, config_text, exp, outputs, ckpt_dir, device, amp, rank, world, master, ddp) -> TrainResult:
    log = TrainLog(enabled=master, bar=opts.progress, log_every=opts.log_every, desc=exp)
    say = log.info

    # -- data ----------------------------------------------------------------------------------------
    train_ds = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED, with_spike=opts.use_spike,
                                              compact=True)
    val_ds = SpikeDeblurDataset.from_config(cfg, "val", with_spike=opts.use_spike)
    batch_size = cfg.TRAIN.BATCH_SIZE
    sampler = ResumableSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.SEED,
                               drop_last=True)
    steps_per_epoch = sampler.num_samples // batch_size
    if steps_per_epoch == 0:
        raise SpikeprepError(f"{cfg.DATA.ROOT}: {len(train_ds)} training clips give no batch of "
                             f"TRAIN.BATCH_SIZE={batch_size} on {world} process(es). Fix: lower TRAIN.BATCH_SIZE "
                             f"or DATA.CLIP_LEN, or ingest more training frames")
    max_steps = opts.max_steps or cfg.TRAIN.EPOCHS * steps_per_epoch

    def loader_for(epoch: int, start_batch: int) -> DataLoader:
        sampler.set_epoch(epoch)
        sampler.start = start_batch * batch_size
        train_ds.set_epoch(epoch)
        # Its own generator: worker seeds must not consume torch's global RNG (drop path uses it).
        gen = torch.Generator().manual_seed(cfg.SEED * 1000 + epoch)
        return DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=opts.workers,
                          pin_memory=device.type == "cuda", collate_fn=collate_drop_bad, drop_last=True,
                          generator=gen, persistent_workers=False, worker_init_fn=_ignore_sigint)

    # -- model: from scratch, warm start or resume -------------------------------------------------------
    model = build_model(cfg, use_spike=opts.use_spike)
    ckpt = None
    if opts.resume:
        ckpt_path = ckpt_dir / "last.pth"
        ckpt = load_checkpoint(ckpt_path)
        check_compatible(ckpt, ckpt_path, use_spike=opts.use_spike, cfg=cfg)
        model.load_state_dict(ckpt["model"], strict=True)
    elif opts.vrt_weights is not None:
        try:
            model.load_official_vrt(opts.vrt_weights)
        except (OSError, pickle.UnpicklingError, RuntimeError, TypeError, StateDictMismatchError) as err:
            # (torch.load refuses pickled code under weights_only=True with an UnpicklingError)
            raise InputError(opts.vrt_weights, f"cannot be loaded as official VRT weights: {err}",
                             fix="pass a released VRT .pth (e.g. 006_VRT_videodeblurring_GoPro.pth) that loads "
                             "with torch.load(weights_only=True)") from None
    head = getattr(model, "spike_head", None)        # (reference models of the benchmarks have none)
    if ckpt is None and isinstance(head, FittedSpikeHead):
        start_fitted_head(head, train_ds, say)
    model.to(device)
    raw_model = model
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    frozen = set(flow_parameter_names(raw_model)) if opts.freeze_flow_steps > 0 else set()

    # -- optimiser, schedule, AMP, loss --------------------------------------------------------------------
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.TRAIN.OPTIM.LR, betas=(0.9, 0.99),
                                  weight_decay=1e-4)
    warmup = cfg.TRAIN.SCHED.WARMUP_STEPS
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, max_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    try:
        loss_fn = DeblurLoss(perceptual_weight=0.1 if opts.perceptual else 0.0).to(device)
    except VGGWeightsUnavailable as err:
        raise SpikeprepError(f"{err}. To train without the perceptual term on purpose, pass --no-vgg") from err
    step, epoch, batch_in_epoch, best_psnr = 0, 0, 0, None
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        best_psnr = ckpt.get("best_psnr")
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        say(f"resumed {exp} from {ckpt_dir / 'last.pth'} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    if warmup >= max_steps:
        say(f"note: TRAIN.SCHED.WARMUP_STEPS={warmup} >= {max_steps} steps: the learning rate never reaches "
            f"TRAIN.OPTIM.LR in this run")

    # -- dry run -----------------------------------------------------------------------------------------
    if opts.dry_run:
        return _dry_run(raw_model, model, loader_for(0, 0), loss_fn, device, amp, say, exp)

    # -- logging -----------------------------------------------------------------------------------------
    writer = None
    lpips_metric, lpips_note = None, None
    if master:
        stamp = time.strftime("%Y%m%d_%H%M%S")
        run_log = outputs / "logs" / f"run_{exp}_{stamp}.txt"
        write_run_log(run_log, opts, cfg, config_text,
                      {"arm": arm_name(opts.use_spike), "device": str(device), "world_size": world, "amp": amp,
                       "max_steps": max_steps, "steps_per_epoch": steps_per_epoch,
                       "perceptual": "on (0.1 x VGG19 relu3_3)" if opts.perceptual else
                       "off (--no-vgg): loss is Charbonnier only"})
        log.attach_run_log(run_log)              # the lines said so far, then every line to come
        if cfg.LOG.TENSORBOARD:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(outputs / "logs" / exp))
            _log_hparams_start(writer, run_hparams(cfg, opts, max_steps))
        lpips_metric, lpips_note = lpips_or_reason(device)
        if lpips_note:
            say(f"LPIPS: {lpips_note}")      # once; the validation lines then say "not computed"
        if not opts.perceptual:
            say("VGG perceptual term: off (--no-vgg); the loss is Charbonnier only")

    def checkpoint_payload() -> dict:
        return dict(version=CKPT_VERSION, arm=arm_name(opts.use_spike), exp=exp, step=step, epoch=epoch,
                    batch_in_epoch=batch_in_epoch, model=raw_model.state_dict(),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict(),
                    rng={"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
                    config=cfg.model_dump(mode="json"), config_text=config_text,
                    schedule=dict(max_steps=max_steps, val_every=opts.val_every, visual_every=opts.visual_every,
                                  freeze_flow_steps=opts.freeze_flow_steps, perceptual=opts.perceptual),
                    best_psnr=best_psnr)

    result = TrainResult(exp=exp, step=step, ckpt_dir=ckpt_dir, best_psnr=best_psnr)

    # -- loop ----------------------------------------------------------------------------------------------
    say(f"training {exp} ({arm_name(opts.use_spike)} arm): {max_steps} steps, {steps_per_epoch} per epoch, "
        f"batch {batch_size} x {world} process(es), device {device}, AMP {'on' if amp else 'off'}")
    log.start_progress(step, max_steps)
    raw_model.train()
    dropped_samples, skipped_batches = 0, 0
    # A store whose training samples are (nearly) all unreadable would otherwise skip batches forever.
    skipped_in_a_row, max_skipped_in_a_row = 0, min(steps_per_epoch, MAX_SKIPPED_BATCHES_IN_A_ROW)
    flow_trainable = None                              # set on the first step, flipped once after the freeze
    saved_step = step if ckpt is not None else None    # the step last.pth holds
    interrupted = False
    ctrl_c = StopOnCtrlC(announce=master)
    try:
        with ctrl_c, capture_spikeprep_logging(log) if master else contextlib.nullcontext():
            while step < max_steps:
                for batch in loader_for(epoch, batch_in_epoch):
                    batch_in_epoch += 1
                    if batch is None:
                        skipped_batches += 1              # every sample of the batch was bad (each one logged)
                        skipped_in_a_row += 1
                        if skipped_in_a_row >= max_skipped_in_a_row:
                            raise SpikeprepError(
                                f"{cfg.DATA.ROOT}: the last {skipped_in_a_row} training batches were all unreadable "
                                f"(every sample dropped; the warnings above name the files). Fix: re-run `spikeprep "
                                f"ingest` for the damaged sequences (a rerun rebuilds what changed) or remove them")
                        continue
                    skipped_in_a_row = 0
                    dropped_samples += batch["meta"]["n_dropped"]   # counted in the worker that collated it
                    if frozen and not ddp and flow_trainable != (step >= opts.freeze_flow_steps):
                        # Without DDP the frozen parameters simply need no gradient: autograd then skips SpyNet's
                        # backward. (DDP fixes the set of parameters with gradients when it is built, so under
                        # DDP they keep requires_grad and their gradients are dropped before the optimiser step.)
                        flow_trainable = step >= opts.freeze_flow_steps
                        for name, p in raw_model.named_parameters():
                            if name in frozen:
                                p.requires_grad_(flow_trainable)
                    blur, sharp, spike = _batch_inputs(batch, device, opts.use_spike, train_ds)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        recon = model(blur, spike)
                    loss, terms = loss_fn(recon.float(), sharp)
                    finite, interrupted = _step_flags(loss, ctrl_c.requested, ddp, device)
                    if not finite:
                        raise TrainingDiverged(
                            f"{exp}: the loss is {terms['total']} at step {step + 1}; nothing was saved for this "
                            f"step (last.pth holds the last good state). Check, as the original document's section "
                            f"13 says: the voxels are log1p-normalised and DATA.NORM.STD is not ~0 (`spikeprep "
                            f"stats {cfg.DATA.ROOT}`); then train without AMP and with TRAIN.OPTIM.LR 1e-4")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if ddp and step < opts.freeze_flow_steps:
                        for name, p in raw_model.named_parameters():
                            if name in frozen:
                                p.grad = None             # AdamW skips parameters without a gradient entirely
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    result.losses.append(terms["total"])
                    meta = batch["meta"]
                    result.batches.append([(q, tuple(f), tuple(c)) for q, f, c in
                                           zip(meta["seq"], meta["frame_idx"], meta["crop"])])
                    lr = scheduler.get_last_lr()[0]
                    if writer is not None:
                        # The total at every step: `spikeprep compare` draws its loss curve from these.
                        writer.add_scalar("train/loss_total", terms["total"], step)
                        if step % opts.log_every == 0 or step == 1:
                            writer.add_scalar("train/lr", lr, step)
                            for key, value in terms.items():
                                if value is not None and key != "total":
                                    writer.add_scalar(f"train/loss_{key}", value, step)
                    log.step(step, terms["total"], lr)
                    last = step >= max_steps
                    stopping = (opts.stop_at is not None and step >= opts.stop_at) or interrupted
                    if step % opts.val_every == 0 or last:
                        if master:
                            log.pause()                       # step rates exclude validation time
                            write_images = last or step % opts.visual_every == 0
                            report = validate(raw_model, val_ds, device=device, amp=amp, exp=exp, step=step,
                                              outputs=outputs, lpips_metric=lpips_metric, lpips_note=lpips_note,
                                              tile=opts.val_tile, write_images=write_images,
                                              visual_frames=opts.visual_frames, reliance=opts.reliance)
                            path = write_val_report(val_report_path(outputs, exp, step), report)
                            result.reports.append(path)
                            psnr = report.overall.psnr_rgb
                            if psnr is not None and (best_psnr is None or psnr > best_psnr):
                                best_psnr = psnr
                                save_checkpoint(ckpt_dir / "best.pth", checkpoint_payload())
                            save_checkpoint(ckpt_dir / "last.pth", checkpoint_payload())
                            saved_step = step
                            _log_validation(writer, report, step, say, best_psnr)
                            _log_triptychs(writer, outputs, report, step)
                            log.resume()
                        if ddp:
                            dist.barrier()
                    elif stopping and master:
                        save_checkpoint(ckpt_dir / "last.pth", checkpoint_payload())
                        saved_step = step
                    if last or stopping:
                        interrupted = interrupted and not last    # a Ctrl-C in the final validation: done
                        break
                else:
                    epoch, batch_in_epoch = epoch + 1, 0
                    continue
                break
    except KeyboardInterrupt:
        # The second Ctrl-C: out at once, mid-step. Checkpoints are written atomically, so last.pth is
        # the last one saved, whole.
        log.close()
        if writer is not None:
            writer.close()
        held = f"{ckpt_dir / 'last.pth'} holds step {saved_step}" if saved_step is not None else \
            "no checkpoint was saved in this run"
        say(f"{exp}: stopped at once by a second Ctrl-C during step {step + 1}, without saving; {held}")
        if saved_step is not None:
            say(f"resume with: {resume_command(opts, world)}")
        result.step, result.best_psnr, result.interrupted = saved_step or 0, best_psnr, True
        return result
    finally:
        log.close()

    if writer is not None:
        if step >= max_steps:
            _log_hparams_end(writer)
        writer.close()
    if ddp:
        _check_replicas_equal(raw_model, say)
    if dropped_samples or skipped_batches:
        log.rank_info(f"note: {dropped_samples} unreadable training samples were dropped and {skipped_batches} "
                      f"all-bad batches skipped (rank {rank}); the warnings above name them")
    result.step, result.best_psnr, result.interrupted = step, best_psnr, interrupted
    if interrupted:
        say(f"{exp}: interrupted (Ctrl-C) after step {step}; saved {ckpt_dir / 'last.pth'} at step {step}")
        say(f"resume with: {resume_command(opts, world)}")
    else:
        say(f"{exp}: stopped at step {step}; checkpoints in {ckpt_dir}")
    return result


class StopOnCtrlC:
    """SIGINT (Ctrl-C) while training: a context manager around the loop.

    The first Ctrl-C only sets ``requested``: the loop finishes the step it is in (and a validation already
    running), saves last.pth as complete as any other checkpoint (the ``--stop-at`` path) and stops; the CLI
    exits 130. Stopping mid-step instead would save parameters the optimiser had half updated. The second
    Ctrl-C raises KeyboardInterrupt at once; checkpoints are written atomically, so a save it cuts short
    leaves the previous last.pth whole. Installed only in the main thread (the only one Python delivers
    signals to); the previous handler comes back on exit.
    """

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous = None

    def __enter__(self) -> "StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            # os.write, not print: the handler may run inside a print of the main code, and a buffered
            # stream refuses a reentrant write.
            with contextlib.suppress(OSError, AttributeError, ValueError):
                os.write(sys.__stdout__.fileno(), b"\nCtrl-C: finishing the current step, then saving last.pth "
                         b"and stopping (Ctrl-C again stops at once without saving)\n")


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C (the terminal sends it to the whole process group): the main process
    decides when to stop, and a worker that died of it would fail the batch the last step still needs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_RESUME_FLAGS = {"max_steps": "--max-steps", "val_every": "--val-every", "visual_every": "--visual-every",
                 "visual_frames": "--visual-frames", "log_every": "--log-every", "workers": "--workers",
                 "device": "--device", "stop_at": "--stop-at", "freeze_flow_steps": "--freeze-flow-steps"}


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


def _step_flags(loss: torch.Tensor, stop_requested: bool, ddp: bool, device: torch.device) -> tuple[bool, bool]:
    """(the loss is finite on every rank, some rank was asked to stop): one all-reduce, so all ranks stop
    together, at the same step."""
    flags = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0, float(stop_requested)],
                         device=device)
    if ddp:
        dist.all_reduce(flags)
    return bool(flags[0].item() == 0), bool(flags[1].item() > 0)


def _log_validation(writer, report: ValReport, step: int, say, best_psnr: float | None) -> None:
    o, b = report.overall, report.boundary
    lp = f"{o.lpips:.4f}" if o.lpips is not None else "not computed"      # the reason was said at the start
    say(f"val step {step}: PSNR {o.psnr_rgb:.2f} dB (Y {o.psnr_y:.2f}), SSIM {o.ssim:.4f}, LPIPS {lp}; "
        f"motion boundaries: PSNR {b.psnr_rgb if b.psnr_rgb is None else round(b.psnr_rgb, 2)} dB "
        f"[{o.frames} frames, {report.seconds:.1f} s]")
    gain, boundary_gain = report.db_from_spikes(), report.db_from_spikes(region="boundary")
    if report.reliance is not None:
        say(f"  spike reliance at step {step}: dB from the spikes (PSNR Y true - count-zero voxels) {_db(gain)} "
            f"overall, {_db(boundary_gain)} on motion boundaries")
    if writer is None:
        return
    if best_psnr is not None and math.isfinite(best_psnr):
        writer.add_scalar("val/best_psnr_rgb", best_psnr, step)
    for prefix, m in (("val", o), ("val_boundary", b)):
        for key in ("psnr_rgb", "psnr_y", "ssim", "lpips"):
            value = getattr(m, key)
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"{prefix}/{key}", value, step)
    if report.reliance is not None:
        for tag, value in (("db_from_spikes", gain), ("boundary_db_from_spikes", boundary_gain)):
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"val_reliance/{tag}", value, step)
        for probe in PROBES:
            m = getattr(report.reliance, probe)
            for region in ("overall", "boundary"):
                value = None if m is None else getattr(m, region).psnr_y
                if value is not None and math.isfinite(value):
                    writer.add_scalar(f"val_reliance/{probe}_{region}_psnr_y", value, step)


def _log_triptychs(writer, outputs: Path, report: ValReport, step: int) -> None:
    """The validation's blur | recon | sharp triptychs (written as PNGs) also as TensorBoard images, one tag
    per frame (``triptych/{seq}_{frame}``), so the step slider shows each frame's progress."""
    if writer is None or report.images_dir is None:
        return
    for png in sorted((outputs / report.images_dir).glob("*_triptych.png")):
        writer.add_image(f"triptych/{png.name[:-len('_triptych.png')]}", read_rgb(png), step, dataformats="CHW")


# TensorBoard's hparams table: these scalar tags (written by _log_validation) are its metric columns; it
# shows each one's last value.
HPARAM_METRICS = ("val/best_psnr_rgb", "val/psnr_rgb", "val/psnr_y", "val/ssim", "val/lpips",
                  "val_boundary/psnr_rgb", "val_reliance/db_from_spikes", "val_reliance/boundary_db_from_spikes")


def run_hparams(cfg: Config, opts: TrainOptions, max_steps: int) -> dict[str, str | int | float]:
    """The resolved config's main fields, for TensorBoard's hparams table."""
    return {"MODEL.VRT_CFG": cfg.MODEL.VRT_CFG, "MODEL.FUSE.TYPE": cfg.MODEL.FUSE.TYPE,
            "TRAIN.OPTIM.LR": cfg.TRAIN.OPTIM.LR, "TRAIN.SCHED.WARMUP_STEPS": cfg.TRAIN.SCHED.WARMUP_STEPS,
            "TRAIN.BATCH_SIZE": cfg.TRAIN.BATCH_SIZE, "max_steps": max_steps, "DATA.CROP_SIZE": cfg.DATA.CROP_SIZE,
            "DATA.CLIP_LEN": cfg.DATA.CLIP_LEN, "DATA.K": cfg.DATA.K, "SEED": cfg.SEED,
            # on/off as text: torch's hparams summary would store a bool as the number 1 or 0
            "spike": "on" if opts.use_spike else "off", "perceptual": "on" if opts.perceptual else "off",
            "freeze_flow_steps": opts.freeze_flow_steps}


def _log_hparams_start(writer, hparams: dict) -> None:
    # In the run's own event file (SummaryWriter.add_hparams would open a sub-run per call), so the
    # table's metric columns are this run's validation scalars. A resumed run writes it again: the same values.
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    experiment, session_start, _ = hparams_summary(hparams, {tag: 0.0 for tag in HPARAM_METRICS})
    file_writer = writer._get_file_writer()
    file_writer.add_summary(experiment)
    file_writer.add_summary(session_start)


def _log_hparams_end(writer) -> None:
    """The session's end (status success) in the hparams table: the run reached its last step."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    _, _, session_end = hparams_summary({}, {})
    writer._get_file_writer().add_summary(session_end)


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} dB"


def _dry_run(raw_model: SpikeVRT, model, loader: DataLoader, loss_fn, device, amp, say, exp) -> TrainResult:
    """The original document's appendix B: one batch forward and backward, shapes and parameter counts."""
    batch = next((b for b in itertools.islice(loader, MAX_SKIPPED_BATCHES_IN_A_ROW) if b is not None), None)
    if batch is None:
        raise SpikeprepError(f"{loader.dataset.root}: no readable training batch in the first "
                             f"{min(len(loader), MAX_SKIPPED_BATCHES_IN_A_ROW)} (every sample dropped; the warnings "
                             "above name the files). Fix: re-run `spikeprep ingest` for the damaged sequences")
    blur, sharp, spike = _batch_inputs(batch, device, raw_model.use_spike, loader.dataset)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        _, fr, fs = raw_model.encode_scales(blur, spike)
    say(f"dry run ({arm_name(raw_model.use_spike)} arm): batch blur {tuple(blur.shape)}"
        + (f", spike_vox {tuple(spike.shape)}" if spike is not None else ", no spikes read"))
    say("scale | Fr_i (B, T_i, C_i, H_i, W_i) | Fs_i (B, T_i, C_i, H_i, W_i)")
    for i, r in enumerate(fr):
        s = tuple(fs[i].shape) if fs is not None else "-"
        say(f"{i + 1:5d} | {str(tuple(r.shape)):28s} | {s}")
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        recon = model(blur, spike)
    loss, terms = loss_fn(recon.float(), sharp)
    loss.backward()
    n_vrt = sum(p.numel() for p in raw_model.vrt.parameters())
    n_spike = sum(p.numel() for p in raw_model.spike_parameters())
    with_grad = sum(p.grad is not None for p in raw_model.parameters())
    say(f"parameters: VRT {n_vrt:,}; spike branch (encoder + temporal SA + fusion) {n_spike:,}; "
        f"total {n_vrt + n_spike:,}")
    say(f"loss {terms['total']:.5f} (Charbonnier {terms['charbonnier']:.5f}, perceptual {terms['perceptual']}); "
        f"{with_grad} of {sum(1 for _ in raw_model.parameters())} parameter tensors got gradients; nothing written")
    return TrainResult(exp=exp, step=0, losses=[terms["total"]])


def _check_replicas_equal(model: SpikeVRT, say) -> None:
    """After DDP training every rank must hold the same parameters; compare a digest across ranks."""
    flat = torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])
    digest = torch.tensor([flat.sum().item(), flat.square().sum().item(), flat[::97].sum().item()],
                          dtype=torch.float64)
    if dist.get_backend() == "nccl":
        digest = digest.cuda()
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    same = all(torch.equal(g, gathered[0]) for g in gathered)
    say(f"DDP: parameters {'identical' if same else 'DIFFERENT'} across {len(gathered)} ranks")
    if not same:
        raise RuntimeError("DDP replicas diverged: parameters differ across ranks")
