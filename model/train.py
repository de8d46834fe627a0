"""Train VRT + spike branch (or plain VRT with --no-spike) on a spikeprep store.

    spikeprep config vrt_spike_baseline my.yaml --data-root DATA_ROOT
    spikeprep train --config my.yaml --exp spike
    spikeprep train --config my.yaml --exp base --no-spike
    spikeprep train --config ... --exp spike --resume                 # continue from last.pth
    spikeprep train --config ... --dry-run                            # shapes, parameter counts; writes nothing
    spikeprep train --config ... --exp s --max-steps 300 --val-every 100 --visual-every 300 --workers 0
    torchrun --nproc_per_node 4 --no-python spikeprep train --config ... --exp spike   # DDP (gloo on CPU)

``main(opts)`` reads top to bottom in the original document's order (section 8.2): config; distributed
setup (``model.distributed.DistSetup``), seed and cudnn flags; Dataset/DataLoader (``model.train_data``);
model (VRT + SpikeEncoder3D + temporal self-attention + temporal cross-attention fusion) from scratch,
warm-started or resumed; AdamW, cosine schedule with linear warm-up, AMP on CUDA, held with the step, the
data position, the best PSNR and the RNG in one ``model.train_state.TrainState`` (its ``state_dict`` is the
checkpoint; resuming is its ``load_state_dict``); logging (``model.train_log``); the loop. Each iteration is
one ``model.train_step.train_step``: L = Charbonnier + 0.1 VGG. Validation every ``val_every`` steps at full
size (PSNR RGB/Y, SSIM, LPIPS), keeping best.pth and last.pth; TensorBoard; triptychs every ``visual_every``
steps. The two arms differ only in the spike branch: same seed, same clips in the same order, same crops;
the spike-free arm never reads a voxel. The options are ``model.train_options.TrainOptions``.

Outputs under LOG.SAVE_DIR (``outputs``)::

    ckpts/{exp}/best.pth, last.pth           TrainState.state_dict(): model, optimizer, scheduler, scaler,
                                             step, RNG, config (model.checkpoint lists the keys)
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
Ctrl-C or SIGTERM stops after the current step with last.pth saved at it and prints the ``--resume`` command
(``model.train_interrupt.StopOnSignals``); the CLI then exits 130 or 143. SIGUSR1 saves last.pth after the
current step and trains on. A checkpoint is never saved with non-finite weights. One training per experiment
at a time (``model.experiment.experiment_lock``); a run without ``--resume`` refuses an experiment that has
outputs, unless ``--start-over`` moves them aside (``model.experiment.check_new_run``).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from model.checkpoint import (arm_name, load_vrt_backbone, non_finite_tensors, remove_stale_checkpoint_temps,
                              save_checkpoint)
from model.distributed import (DistSetup, barrier, check_replicas_equal, setup_distributed, teardown_distributed,
                               wrap_model)
from model.nets.integrate_vrt import SpikeVRT, build_model
from model.nets.vrt import StateDictMismatchError
from model.losses.deblur_loss import DeblurLoss
from model.losses.vgg_perceptual import VGGWeightsUnavailable
from model.validate import validate
from model.nets.fusion.spike_head import FittedSpikeHead
from model.metrics import lpips_or_reason
from model.train_data import TrainData
from model.experiment import ExperimentOutputs, check_new_run, experiment_lock
from model.train_interrupt import StopOnSignals
from model.train_log import (TrainLog, capture_spikeprep_logging, log_hparams_end, log_hparams_start,
                             log_train_step, log_triptychs, log_validation, run_hparams, write_run_log)
from model.train_options import TrainOptions, resume_command
from model.train_state import TrainState, read_resume_checkpoint
from model.train_step import ParameterFreeze, TrainingDiverged, forward_loss, train_step
from schemas.config import (CROP_MULTIPLE, Config, ConfigError, crop_size_problem, crop_size_rule, load_config,
                            nearest_valid_crop, read_config_text)
from schemas.val_report import val_report_path, write_val_report
from spikeprep.audit import unaudited_note
from spikeprep.errors import InputError, SpikeprepError
from spikeprep.spike_deblur_dataset import NoPairedFrames, SpikeDeblurDataset
from spikeprep.store import refuse_output_in_store, store_lock


RECENT_STEPS = 1000   # TrainResult keeps the losses and samples of this many last steps (a run's own would grow
                      # without bound; TensorBoard's train/loss_total holds every step's loss)


@dataclass
class TrainResult:
    """What ``main`` returns (tests read it; the CLI prints a summary). ``losses`` and ``batches`` hold the
    last ``RECENT_STEPS`` steps of this process (all of them in a shorter run), in order."""

    exp: str
    step: int
    losses: list[float] = field(default_factory=list)      # per step: the total loss
    batches: list[list[tuple]] = field(default_factory=list)  # per step: (seq, frame_idx, crop) per sample
    reports: list[Path] = field(default_factory=list)
    best_psnr: float | None = None
    ckpt_dir: Path | None = None
    interrupted: bool = False                 # stopped by Ctrl-C or SIGTERM (the CLI exits 128 + stop_signal)
    stop_signal: int | None = None            # the signal that stopped it (SIGINT 2, SIGTERM 15)

    def record_step(self, loss: float, samples: list[tuple]) -> None:
        """One more step's total loss and ``(seq, frame_idx, crop)`` per sample; the oldest step beyond
        ``RECENT_STEPS`` is forgotten."""
        self.losses.append(loss)
        self.batches.append(samples)
        if len(self.losses) > RECENT_STEPS:
            del self.losses[:-RECENT_STEPS], self.batches[:-RECENT_STEPS]


MAX_SKIPPED_BATCHES_IN_A_ROW = 100   # or a whole epoch, if shorter: then training stops with an error


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1 over ``warmup_steps``, then cosine decay to 0 at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------- main
def main(opts: TrainOptions, model_builder: Callable[[Config, bool], nn.Module] = build_model) -> TrainResult:
    """Train one arm as ``opts`` says (the module docstring lists the outputs); returns its ``TrainResult``.

    ``model_builder(cfg, use_spike)`` builds the model: the product's ``build_model``; a benchmark passes a
    reference model's builder (benchmarks/references.py) to train it under the same data, optimiser, schedule,
    loss and validation.

    Under torchrun (``RANK`` set) it joins the process group (NCCL on CUDA, else gloo) and leaves it at
    the end; ``--dry-run`` runs one batch forward and backward and writes nothing.
    """
    # -- config ------------------------------------------------------------------------------------
    cfg = load_config(opts.config)
    config_text = read_config_text(opts.config)
    _check_crop_size(cfg, opts.config)
    _check_start_options(opts)
    exp = opts.exp_name
    outputs = Path(cfg.LOG.SAVE_DIR)
    refuse_output_in_store(outputs, f"LOG.SAVE_DIR of {opts.config}")
    paths = ExperimentOutputs(outputs, exp)
    ckpt_dir = paths.ckpt_dir

    # -- the store's read lock, for the whole run: ingest and audit refuse to rewrite it under the training ----
    store_reader = store_lock(cfg.DATA.ROOT, "train", shared=True).acquire()

    # -- distributed setup, seed ---------------------------------------------------------------------
    setup = setup_distributed(opts.device, opts.amp)
    torch.manual_seed(cfg.SEED)
    np.random.seed(cfg.SEED)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    held = contextlib.ExitStack()
    try:
        log = TrainLog(enabled=setup.master, bar=opts.progress, log_every=opts.log_every, desc=exp)
        if setup.master and not opts.dry_run:     # (a dry run writes nothing; under torchrun rank 0 speaks for all)
            held.enter_context(experiment_lock(paths))
            _prepare_outputs(paths, opts, log.info)

        # -- data ------------------------------------------------------------------------------------
        train_ds = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED, with_spike=opts.use_spike,
                                                  compact=True)
        gap = unaudited_note(Path(cfg.DATA.ROOT), cfg.DATA.TRAIN_SPLIT)
        if gap:
            log.info(f"warning: {gap}")
        val_ds = _val_dataset(cfg, opts, log.info)
        data = TrainData.build(train_ds, val_ds, cfg, opts, setup)

        # -- model: from scratch, warm start or resume -----------------------------------------------------
        raw_model = model_builder(cfg, opts.use_spike)
        ckpt = read_resume_checkpoint(ckpt_dir / "last.pth", use_spike=opts.use_spike, cfg=cfg) \
            if opts.resume else None
        if ckpt is None:
            _warm_start(raw_model, opts, cfg, data.train_ds, log.info)
        raw_model.to(setup.device)
        model = wrap_model(raw_model, setup)

        # -- optimiser, schedule, AMP, loss; the resumed state ----------------------------------------------
        state = _new_state(raw_model, cfg, config_text, opts, setup, data.max_steps)
        aux_weight = cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT
        if aux_weight > 0 and not opts.use_spike:
            log.info(f"note: TRAIN.AUX_SPIKE_RECON_WEIGHT {aux_weight} is ignored by the spike-free arm (it trains "
                     "the spike branch, which this arm does not have)")
        loss_fn = _loss_fn(opts.perceptual, setup.device, aux_weight if opts.use_spike else 0.0)
        if ckpt is not None:
            state.load_state_dict(ckpt)
            log.info(f"resumed {exp} from {ckpt_dir / 'last.pth'} at step {state.step} (epoch {state.epoch}, "
                     f"batch {state.batch_in_epoch})")
        warmup = cfg.TRAIN.SCHED.WARMUP_STEPS
        if warmup >= data.max_steps:
            log.info(f"note: TRAIN.SCHED.WARMUP_STEPS={warmup} >= {data.max_steps} steps: the learning rate never "
                     f"reaches TRAIN.OPTIM.LR in this run")
        if opts.dry_run:
            return _dry_run(raw_model, model, data.loader(0, 0), loss_fn, setup, log.info, exp)

        # -- logging ---------------------------------------------------------------------------------
        writer, lpips_metric, lpips_note = _start_logging(opts, cfg, config_text, setup, data, log)

        # -- loop ------------------------------------------------------------------------------------
        run = _Run(opts=opts, cfg=cfg, setup=setup, data=data, model=model, loss_fn=loss_fn, log=log,
                   writer=writer, lpips_metric=lpips_metric, lpips_note=lpips_note, outputs=outputs,
                   ckpt_dir=ckpt_dir)
        return _train_loop(run, state, resumed=ckpt is not None)
    finally:
        held.close()
        teardown_distributed(setup)
        store_reader.release()


def _val_dataset(cfg: Config, opts: TrainOptions, say) -> SpikeDeblurDataset | None:
    """The validation Dataset; None, said once, when DATA.VAL_SPLIT keeps only unpaired frames (nothing to
    score): training goes on, saving last.pth where it would validate, and writes no best.pth."""
    try:
        return SpikeDeblurDataset.from_config(cfg, "val", with_spike=opts.use_spike)
    except NoPairedFrames as err:
        say(f"note: no validation: {err.problem}. Training goes on; last.pth is saved at every validation point "
            f"and no best.pth is written (validate on a split with sharp frames to get one)")
        return None


def _prepare_outputs(paths: ExperimentOutputs, opts: TrainOptions, say) -> None:
    """Under the experiment's lock, before anything is read: remove the temp files of checkpoint saves that
    were killed, then refuse a rerun of an experiment with outputs (or move them aside on --start-over)."""
    for stale in remove_stale_checkpoint_temps(paths.ckpt_dir):
        say(f"removed {stale}, the temp file of a checkpoint save that was killed")
    check_new_run(paths, resume=opts.resume, start_over=opts.start_over, say=say)


def _check_crop_size(cfg: Config, path: Path) -> None:
    crop = cfg.DATA.CROP_SIZE
    if crop_size_problem(crop):      # the crop rule's one home: schemas.config
        raise ConfigError(f"{path}: DATA.CROP_SIZE is {crop}; VRT trains on crops that are {crop_size_rule()}. "
                          f"Fix: set DATA.CROP_SIZE to {nearest_valid_crop(crop)} or more (a multiple of "
                          f"{CROP_MULTIPLE})")


def _check_start_options(opts: TrainOptions) -> None:
    """Options that contradict each other, refused before anything is read or written."""
    if opts.init_from is not None and opts.resume:
        raise InputError(opts.init_from, "--init-from starts a new run, but --resume continues one (its weights "
                         "come from its last.pth)", fix="drop --init-from to resume, or drop --resume (and pass "
                         "--start-over or another --exp) to start a new run from this checkpoint")
    if opts.init_from is not None and opts.vrt_weights is not None:
        raise InputError(opts.init_from, "--init-from and --vrt-weights both set the VRT backbone",
                         fix="pass one of them")
    if opts.freeze_vrt_steps > 0 and not opts.use_spike:
        raise InputError(None, f"--freeze-vrt-steps {opts.freeze_vrt_steps} with --no-spike would freeze every "
                         "parameter of plain VRT", fix="drop --freeze-vrt-steps for the spike-free arm")


def _warm_start(model: SpikeVRT, opts: TrainOptions, cfg: Config, train_ds: SpikeDeblurDataset, say) -> None:
    """A run that does not resume: official VRT weights (``--vrt-weights``) or a spikeprep checkpoint's
    (``--init-from``) into the backbone, then a fitted spike head started at the training split's
    least-squares map."""
    vrt_weights = opts.vrt_weights
    if opts.init_from is not None:
        source = load_vrt_backbone(model, opts.init_from, cfg)
        say(f"--init-from: the VRT backbone starts from {opts.init_from} (the {source['arm']!r} arm of "
            f"{source['exp']!r} at step {source['step']}); the rest of the model starts as usual")
        root = source["config"].get("DATA", {}).get("ROOT")
        if root != cfg.DATA.ROOT:
            say(f"note: {opts.init_from} trained on DATA.ROOT {root}, this run trains on {cfg.DATA.ROOT}")
    if vrt_weights is not None:
        try:
            model.load_official_vrt(vrt_weights)
        except (OSError, pickle.UnpicklingError, RuntimeError, TypeError, StateDictMismatchError) as err:
            # (torch.load refuses pickled code under weights_only=True with an UnpicklingError)
            raise InputError(vrt_weights, f"cannot be loaded as official VRT weights: {err}",
                             fix="pass a released VRT .pth (e.g. 006_VRT_videodeblurring_GoPro.pth) that loads "
                             "with torch.load(weights_only=True)") from None
    head = getattr(model, "spike_head", None)        # (reference models of the benchmarks have none)
    if isinstance(head, FittedSpikeHead):
        head.fit_start(train_ds, say)


def new_optimizer(model: nn.Module, lr: float, fitted_head_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """The trainer's optimiser (original section 6): AdamW(lr, betas (0.9, 0.99), weight decay 1e-4). With
    ``fitted_head_lr_scale`` below 1 (TRAIN.OPTIM.FITTED_HEAD_LR_SCALE), the parameters a fitted spike head's
    start sets form a second group at that fraction of ``lr``."""
    head = getattr(model, "spike_head", None)
    fitted = head.fitted_parameters() if isinstance(head, FittedSpikeHead) and fitted_head_lr_scale != 1 else []
    if not fitted:
        return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)
    ids = {id(p) for p in fitted}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]},
              {"params": fitted, "lr": lr * fitted_head_lr_scale}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)


def _new_state(model: SpikeVRT, cfg: Config, config_text: str, opts: TrainOptions, setup: DistSetup,
               max_steps: int) -> TrainState:
    """Step 0's state: ``new_optimizer`` at TRAIN.OPTIM.LR, linear warm-up then cosine to 0 at ``max_steps``,
    the AMP scaler (a no-op without AMP)."""
    optimizer = new_optimizer(model, cfg.TRAIN.OPTIM.LR, cfg.TRAIN.OPTIM.FITTED_HEAD_LR_SCALE)
    warmup = cfg.TRAIN.SCHED.WARMUP_STEPS
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, max_steps))
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.amp)
    schedule = dict(max_steps=max_steps, val_every=opts.val_every, visual_every=opts.visual_every,
                    freeze_flow_steps=opts.freeze_flow_steps, perceptual=opts.perceptual,
                    freeze_vrt_steps=opts.freeze_vrt_steps,
                    init_from=None if opts.init_from is None else str(opts.init_from))
    return TrainState(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, device=setup.device,
                      arm=arm_name(opts.use_spike), exp=opts.exp_name, config=cfg, config_text=config_text,
                      schedule=schedule)


def _loss_fn(perceptual: bool, device: torch.device, aux_spike_recon_weight: float = 0.0) -> DeblurLoss:
    try:
        return DeblurLoss(perceptual_weight=0.1 if perceptual else 0.0,
                          aux_spike_recon_weight=aux_spike_recon_weight).to(device)
    except VGGWeightsUnavailable as err:
        raise SpikeprepError(f"{err}. To train without the perceptual term on purpose, pass --no-vgg") from err


def _start_logging(opts: TrainOptions, cfg: Config, config_text: str, setup: DistSetup, data: TrainData,
                   log: TrainLog) -> tuple:
    """Rank 0: the run log (its header, then every line said), TensorBoard with the hparams table, the LPIPS
    metric or the reason it is not computed. Returns (writer or None, LPIPS metric, its note)."""
    if not setup.master:
        return None, None, None
    outputs, exp = Path(cfg.LOG.SAVE_DIR), opts.exp_name
    run_log = outputs / "logs" / f"run_{exp}_{time.strftime('%Y%m%d_%H%M%S')}.txt"
    write_run_log(run_log, opts, cfg, config_text,
                  {"arm": arm_name(opts.use_spike), "device": str(setup.device), "world_size": setup.world,
                   "amp": setup.amp, "max_steps": data.max_steps, "steps_per_epoch": data.steps_per_epoch,
                   "perceptual": "on (0.1 x VGG19 relu3_3)" if opts.perceptual else
                   "off (--no-vgg): loss is Charbonnier only"})
    log.attach_run_log(run_log)              # the lines said so far, then every line to come
    writer = None
    if cfg.LOG.TENSORBOARD:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(outputs / "logs" / exp))
        log_hparams_start(writer, run_hparams(cfg, opts, data.max_steps))
    lpips_metric, lpips_note = lpips_or_reason(setup.device)
    if lpips_note:
        log.info(f"LPIPS: {lpips_note}")      # once; the validation lines then say "not computed"
    if not opts.perceptual:
        log.info("VGG perceptual term: off (--no-vgg); the loss is Charbonnier only")
    return writer, lpips_metric, lpips_note


@dataclass(frozen=True)
class _Run:
    """What the loop works with and does not change: the options, the data, the module the step calls
    (DDP's wrapper under torchrun), the loss, where it logs and saves."""

    opts: TrainOptions
    cfg: Config
    setup: DistSetup
    data: TrainData
    model: nn.Module
    loss_fn: DeblurLoss
    log: TrainLog
    writer: object | None                    # TensorBoard's SummaryWriter on rank 0
    lpips_metric: object | None
    lpips_note: str | None
    outputs: Path
    ckpt_dir: Path


class _BatchCounts:
    """Batches whose every sample was unreadable are skipped (each sample was logged); a store whose
    training samples are (nearly) all unreadable would otherwise skip batches forever."""

    def __init__(self, root: str, limit: int):
        self.root, self.limit = root, limit
        self.dropped_samples = self.skipped = self.skipped_in_a_row = 0

    def usable(self, batch: dict | None) -> bool:
        if batch is not None:
            self.skipped_in_a_row = 0
            self.dropped_samples += batch["meta"]["n_dropped"]   # counted in the worker that collated it
            return True
        self.skipped += 1
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= self.limit:
            raise SpikeprepError(
                f"{self.root}: the last {self.skipped_in_a_row} training batches were all unreadable "
                f"(every sample dropped; the warnings above name the files). Fix: re-run `spikeprep "
                f"ingest` for the damaged sequences (a rerun rebuilds what changed) or remove them")
        return False


def _train_loop(run: _Run, state: TrainState, *, resumed: bool) -> TrainResult:
    """From ``state.step`` to the last step, or to ``--stop-at`` or Ctrl-C (last.pth saved at that step)."""
    opts, setup, data, log = run.opts, run.setup, run.data, run.log
    result = TrainResult(exp=state.exp, step=state.step, ckpt_dir=run.ckpt_dir, best_psnr=state.best_psnr)
    log.info(f"training {state.exp} ({state.arm} arm): {data.max_steps} steps, {data.steps_per_epoch} per epoch, "
             f"batch {data.batch_size} x {setup.world} process(es), device {setup.device}, "
             f"AMP {'on' if setup.amp else 'off'}")
    log.start_progress(state.step, data.max_steps)
    state.model.train()
    counts = _BatchCounts(run.cfg.DATA.ROOT, min(data.steps_per_epoch, MAX_SKIPPED_BATCHES_IN_A_ROW))
    freeze = ParameterFreeze(state.model, ddp=setup.ddp, flow_steps=opts.freeze_flow_steps,
                             vrt_steps=opts.freeze_vrt_steps)
    saved_step = state.step if resumed else None    # the step last.pth holds
    interrupted = False
    signals = StopOnSignals(announce=setup.master)
    try:
        with signals, capture_spikeprep_logging(log) if setup.master else contextlib.nullcontext():
            while state.step < data.max_steps:
                for batch in data.loader(state.epoch, state.batch_in_epoch):
                    state.batch_in_epoch += 1
                    if not counts.usable(batch):
                        continue
                    blur, sharp, spike = data.train_ds.batch_to_device(batch, setup.device, opts.use_spike)
                    try:
                        terms, interrupted = train_step(state, run.model, run.loss_fn, blur, sharp, spike,
                                                        setup=setup, freeze=freeze, stop_requested=signals.requested)
                    except TrainingDiverged as err:
                        raise err.holding(_held(run, saved_step)) from None
                    _record_step(run, state, result, batch, terms)
                    last = state.step >= data.max_steps
                    stopping = (opts.stop_at is not None and state.step >= opts.stop_at) or interrupted
                    saving = state.step % opts.val_every == 0 or last or stopping or signals.save_requested
                    if saving:
                        _check_weights(run, state, saved_step)   # never a checkpoint of NaN weights
                    if state.step % opts.val_every == 0 or last:
                        if _validate_and_save(run, state, result,
                                              write_images=last or state.step % opts.visual_every == 0):
                            saved_step = state.step
                    elif (stopping or signals.save_requested) and setup.master:
                        save_checkpoint(run.ckpt_dir / "last.pth", state.state_dict())
                        saved_step = state.step
                    if signals.save_requested and not (last or stopping):
                        signals.save_requested = False
                        log.info(f"SIGUSR1: saved {run.ckpt_dir / 'last.pth'} at step {state.step}; training goes on "
                                 f"(to continue from it later: {resume_command(opts, setup.world)})")
                    if last or stopping:
                        interrupted = interrupted and not last    # a Ctrl-C in the final validation: done
                        break
                else:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                    continue
                break
    except KeyboardInterrupt:
        return _stopped_at_once(run, state, result, saved_step, signals)
    finally:
        log.close()
    return _finish(run, state, result, counts, interrupted, signals)


def _held(run: _Run, saved_step: int | None) -> str:
    """Which checkpoint of this run holds the last good state (for the messages of a diverged run)."""
    if saved_step is None:
        return f"no checkpoint was saved in this run; {run.ckpt_dir} holds none of it"
    return f"{run.ckpt_dir / 'last.pth'} holds step {saved_step}, the last good state"


def _check_weights(run: _Run, state: TrainState, saved_step: int | None) -> None:
    """Before a save: ``TrainingDiverged`` if a weight is NaN or infinite (the loss may still have been finite:
    an overflowing update), so last.pth never holds a diverged model."""
    bad = non_finite_tensors(state.model.state_dict())
    if bad:
        raise TrainingDiverged(f"{state.exp}: the weights are not finite after step {state.step} (NaN or inf in "
                               f"{len(bad)} tensor(s), e.g. {bad[:3]}) although the loss was finite",
                               run.cfg.DATA.ROOT, _held(run, saved_step))


def _record_step(run: _Run, state: TrainState, result: TrainResult, batch: dict, terms: dict) -> None:
    """The step's loss and samples into ``result``; TensorBoard and the progress line."""
    meta = batch["meta"]
    result.record_step(terms["total"], [(q, tuple(f), tuple(c))
                                        for q, f, c in zip(meta["seq"], meta["frame_idx"], meta["crop"])])
    lr = state.scheduler.get_last_lr()[0]
    log_train_step(run.writer, state.step, terms, lr, run.opts.log_every)
    run.log.step(state.step, terms["total"], lr)


def _validate_and_save(run: _Run, state: TrainState, result: TrainResult, *, write_images: bool) -> bool:
    """Rank 0 validates, writes the report and saves best.pth (a better PSNR) and last.pth; the other ranks
    wait for it. Returns whether this rank saved last.pth."""
    saved = run.setup.master
    if saved and run.data.val_ds is None:     # an unpaired validation split: nothing to score (said at start)
        save_checkpoint(run.ckpt_dir / "last.pth", state.state_dict())
    elif saved:
        run.log.pause()                       # step rates exclude validation time
        report = validate(state.model, run.data.val_ds, device=run.setup.device, amp=run.setup.amp,
                          exp=state.exp, step=state.step, outputs=run.outputs, lpips_metric=run.lpips_metric,
                          lpips_note=run.lpips_note, tile=run.opts.val_tile, write_images=write_images,
                          visual_frames=run.opts.visual_frames, reliance=run.opts.reliance)
        result.reports.append(write_val_report(val_report_path(run.outputs, state.exp, state.step), report))
        psnr = report.overall.psnr_rgb
        if psnr is not None and (state.best_psnr is None or psnr > state.best_psnr):
            state.best_psnr = psnr
            save_checkpoint(run.ckpt_dir / "best.pth", state.state_dict())
        save_checkpoint(run.ckpt_dir / "last.pth", state.state_dict())
        log_validation(run.writer, report, state.step, run.log.info, state.best_psnr)
        log_triptychs(run.writer, run.outputs, report, state.step)
        run.log.resume()
    barrier(run.setup)
    return saved


def _stopped_at_once(run: _Run, state: TrainState, result: TrainResult, saved_step: int | None,
                     signals: StopOnSignals) -> TrainResult:
    """The second Ctrl-C or SIGTERM: out at once, mid-step. Checkpoints are written atomically, so last.pth is
    the last one saved, whole."""
    run.log.close()
    if run.writer is not None:
        run.writer.close()
    held = f"{run.ckpt_dir / 'last.pth'} holds step {saved_step}" if saved_step is not None else \
        "no checkpoint was saved in this run"
    run.log.info(f"{state.exp}: stopped at once by a second {signals.name} during step {state.step + 1}, without "
                 f"saving; {held}")
    if saved_step is not None:
        run.log.info(f"resume with: {resume_command(run.opts, run.setup.world)}")
    result.step, result.best_psnr, result.interrupted = saved_step or 0, state.best_psnr, True
    result.stop_signal = signals.signum
    return result


def _finish(run: _Run, state: TrainState, result: TrainResult, counts: _BatchCounts,
            interrupted: bool, signals: StopOnSignals) -> TrainResult:
    """The loop is over (the last step, --stop-at or a first Ctrl-C / SIGTERM): close TensorBoard, check the
    DDP replicas, say what was dropped and where the checkpoints are."""
    say = run.log.info
    if run.writer is not None:
        if state.step >= run.data.max_steps:
            log_hparams_end(run.writer)
        run.writer.close()
    if run.setup.ddp:
        check_replicas_equal(state.model, say)
    if counts.dropped_samples or counts.skipped:
        run.log.rank_info(f"note: {counts.dropped_samples} unreadable training samples were dropped and "
                          f"{counts.skipped} all-bad batches skipped (rank {run.setup.rank}); the warnings above "
                          f"name them")
    result.step, result.best_psnr, result.interrupted = state.step, state.best_psnr, interrupted
    result.stop_signal = signals.signum if interrupted else None
    if interrupted:
        say(f"{state.exp}: interrupted ({signals.name}) after step {state.step}; saved {run.ckpt_dir / 'last.pth'} "
            f"at step {state.step}")
        say(f"resume with: {resume_command(run.opts, run.setup.world)}")
    else:
        say(f"{state.exp}: stopped at step {state.step}; checkpoints in {run.ckpt_dir}")
    return result


def _dry_run(raw_model: SpikeVRT, model, loader: DataLoader, loss_fn, setup: DistSetup, say, exp) -> TrainResult:
    """The original document's appendix B: one batch forward and backward, shapes and parameter counts."""
    batch = next((b for b in itertools.islice(loader, MAX_SKIPPED_BATCHES_IN_A_ROW) if b is not None), None)
    if batch is None:
        raise SpikeprepError(f"{loader.dataset.root}: no readable training batch in the first "
                             f"{min(len(loader), MAX_SKIPPED_BATCHES_IN_A_ROW)} (every sample dropped; the warnings "
                             "above name the files). Fix: re-run `spikeprep ingest` for the damaged sequences")
    blur, sharp, spike = loader.dataset.batch_to_device(batch, setup.device, raw_model.use_spike)
    with torch.no_grad(), torch.autocast(setup.device.type, dtype=torch.float16, enabled=setup.amp):
        _, fr, fs = raw_model.encode_scales(blur, spike)
    say(f"dry run ({arm_name(raw_model.use_spike)} arm): batch blur {tuple(blur.shape)}"
        + (f", spike_vox {tuple(spike.shape)}" if spike is not None else ", no spikes read"))
    say("scale | Fr_i (B, T_i, C_i, H_i, W_i) | Fs_i (B, T_i, C_i, H_i, W_i)")
    for i, r in enumerate(fr):
        s = tuple(fs[i].shape) if fs is not None else "-"
        say(f"{i + 1:5d} | {str(tuple(r.shape)):28s} | {s}")
    loss, terms = forward_loss(model, loss_fn, blur, sharp, spike, setup)
    loss.backward()
    n_vrt = sum(p.numel() for p in raw_model.vrt.parameters())
    n_spike = sum(p.numel() for p in raw_model.spike_parameters())
    with_grad = sum(p.grad is not None for p in raw_model.parameters())
    say(f"parameters: VRT {n_vrt:,}; spike branch (encoder + temporal SA + fusion) {n_spike:,}; "
        f"total {n_vrt + n_spike:,}")
    aux = f", aux spike luma {terms['aux_spike_recon']:.5f}" if "aux_spike_recon" in terms else ""
    say(f"loss {terms['total']:.5f} (Charbonnier {terms['charbonnier']:.5f}, perceptual {terms['perceptual']}{aux}); "
        f"{with_grad} of {sum(1 for _ in raw_model.parameters())} parameter tensors got gradients; nothing written")
    return TrainResult(exp=exp, step=0, losses=[terms["total"]])
