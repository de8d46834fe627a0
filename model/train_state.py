"""The training state as one object (``TrainState``): what a checkpoint saves and what ``--resume`` restores.

``TrainState.state_dict()`` is the checkpoint dict of ``model.checkpoint`` (its keys, ``CKPT_VERSION``), so
``test``, ``compare`` and old checkpoints read it unchanged; ``load_state_dict(ckpt)`` is the one place a
resumed run takes its weights, optimiser, scheduler, scaler, step, epoch, batch position, best PSNR and RNG
back. ``read_resume_checkpoint`` loads a ``last.pth`` and refuses one of another arm or model first.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.checkpoint import CKPT_VERSION, check_compatible, load_checkpoint
from schemas.config import Config, OptimConfig
from spikeprep.errors import InputError
from schemas.val_report import Arm


@dataclass
class TrainState:
    """One training run's state. ``model`` is the bare model (not a DDP wrapper: its state_dict keys are the
    checkpoint's); ``device`` says whose RNG to save (CUDA's too on CUDA). ``arm``, ``exp``, ``config``,
    ``config_text`` and ``schedule`` (the command-line schedule the run started with) describe the run and
    go into every checkpoint as they are; ``step`` (optimiser steps done), ``epoch`` and ``batch_in_epoch``
    (batches of that epoch consumed, skipped ones included) and ``best_psnr`` move as it trains."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    arm: Arm
    exp: str
    config: Config
    config_text: str
    schedule: dict[str, Any]
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_psnr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint payload (``model.checkpoint`` lists its keys): tensors and plain data only."""
        return dict(version=CKPT_VERSION, arm=self.arm, exp=self.exp, step=self.step, epoch=self.epoch,
                    batch_in_epoch=self.batch_in_epoch, model=self.model.state_dict(),
                    optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                    scaler=self.scaler.state_dict(),
                    rng={"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
                    config=self.config.model_dump(mode="json"), config_text=self.config_text,
                    schedule=dict(self.schedule), best_psnr=self.best_psnr)

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from ``ckpt`` (a checkpoint of this arm and model: ``read_resume_checkpoint``): every
        moving part and torch's RNG (drop path draws from it; the data order needs no other state). The run's
        description (exp, config, schedule) stays this run's own."""
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.best_psnr = ckpt.get("best_psnr")
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and ckpt["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


def read_resume_checkpoint(path: str | os.PathLike, *, use_spike: bool, cfg: Config) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from, refused (``InputError``) if it is missing, damaged, of the
    other arm or of a model ``cfg`` does not describe."""
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, path, use_spike=use_spike, cfg=cfg)
    # the optimiser's parameter groups follow FITTED_HEAD_LR_SCALE (a checkpoint from before it: the default)
    default = OptimConfig.model_fields["FITTED_HEAD_LR_SCALE"].default
    stored = ckpt["config"].get("TRAIN", {}).get("OPTIM", {}).get("FITTED_HEAD_LR_SCALE", default)
    if stored != cfg.TRAIN.OPTIM.FITTED_HEAD_LR_SCALE:
        raise InputError(path, f"the checkpoint trained with TRAIN.OPTIM.FITTED_HEAD_LR_SCALE {stored}, the config "
                         f"says {cfg.TRAIN.OPTIM.FITTED_HEAD_LR_SCALE}",
                         fix=f"resume with FITTED_HEAD_LR_SCALE: {stored}, or start a new run")
    # above 0 the model holds the auxiliary luma head (a checkpoint from before the field: 0, no head)
    stored = ckpt["config"].get("TRAIN", {}).get("AUX_SPIKE_RECON_WEIGHT", 0.0)
    if (stored > 0) != (cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT > 0):
        raise InputError(path, f"the checkpoint trained with TRAIN.AUX_SPIKE_RECON_WEIGHT {stored}, the config says "
                         f"{cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT}: the auxiliary luma head exists in one model only",
                         fix=f"resume with AUX_SPIKE_RECON_WEIGHT: {stored}, or start a new run")
    return ckpt
