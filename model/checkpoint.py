"""Training checkpoints: one dict that also holds the resolved config (``best.pth``, ``last.pth``).

The trainer writes ``model.train_state.TrainState.state_dict()`` and resumes through its
``load_state_dict``; ``test`` and ``compare`` read the same dict through ``load_checkpoint`` and
``model_from_checkpoint``. Keys of the dict (version 1)::

    version      1
    arm          "spike" | "base"  (base = the spike-free arm, trained with --no-spike)
    exp, step    experiment name and optimiser steps done
    epoch, batch_in_epoch   where the data order stands (batches of that epoch consumed)
    model        SpikeVRT state_dict (VRT keys under ``vrt.``)
    optimizer, scheduler, scaler   their state_dicts (resume)
    rng          {"torch": ByteTensor, "cuda": [ByteTensor, ...]}   (the data order needs no other state:
                 the sampler and the crops are functions of the seed and the epoch)
    config       the resolved Config as plain data; ``config_text`` the YAML file as given
    schedule     the command-line schedule (max_steps, val_every, ...) the run was started with
    best_psnr    best validation PSNR (RGB) so far, or None

Everything in it is tensors and plain Python data, so it loads with ``torch.load(weights_only=True)``
(no pickled code runs). Files are written atomically: a crash never leaves half a ``last.pth``, a full
disk is an ``InputError`` that says "no space left" and names the file (nothing partial is left), and the
temp files of a save that was killed (SIGKILL, power loss) are removed by the next run
(``remove_stale_checkpoint_temps``). A checkpoint whose weights are not finite (a run that diverged) is
refused when it loads.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from model.nets.integrate_vrt import SpikeVRT, build_model
from schemas.atomic import atomic_path, remove_stale_temps
from schemas.config import Config, DataConfig, ModelConfig, parse_config
from schemas.val_report import Arm
from spikeprep.errors import InputError

CKPT_VERSION = 1
REQUIRED_KEYS = ("version", "arm", "exp", "step", "model", "config")
CHECKPOINT_NAMES = ("best.pth", "last.pth")     # what the trainer writes into ckpts/<exp>/


def arm_name(use_spike: bool) -> Arm:
    """The checkpoint's ``arm`` field: ``"spike"`` for the spike arm, ``"base"`` for the spike-free arm."""
    return "spike" if use_spike else "base"


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then an atomic rename.

    Raises:
        InputError: the disk is full (the message says "no space left") or the folder cannot be written;
            it names ``path``. The temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            # Through a file object, not a file name: torch's zip writer then calls our write, and a full disk
            # stays an OSError in the exception chain (by name it becomes an opaque "unexpected pos" error).
            with open(tmp, "xb") as fh:
                torch.save(dict(payload), fh)
    except (OSError, RuntimeError) as err:
        cause = _os_error_in_chain(err)
        if cause is None:
            raise
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(path, "no space left on the device to write this checkpoint (nothing partial was "
                             "left; the previous file, if any, is unchanged)",
                             fix=f"free space on the disk of {path.parent}, or set LOG.SAVE_DIR to a folder on a "
                             "disk with room, then resume with --resume") from None
        raise InputError(path, f"cannot write this checkpoint ({cause.strerror or cause})",
                         fix=f"make {path.parent} writable, or set LOG.SAVE_DIR to a writable folder") from None
    return path


def _os_error_in_chain(err: BaseException) -> OSError | None:
    """The OSError that caused ``err`` (itself, or one in its ``__cause__``/``__context__`` chain), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def remove_stale_checkpoint_temps(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Remove the temp files that saves of ``CHECKPOINT_NAMES`` killed before their rename left in
    ``ckpt_dir`` (their writer process is gone: a live writer's temp file stays); returns what was removed."""
    return [p for name in CHECKPOINT_NAMES for p in remove_stale_temps(Path(ckpt_dir) / name)]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a training checkpoint with ``weights_only=True``.

    Raises:
        InputError: the file is missing, is not a readable torch file (truncated, corrupted, not ours)
            or lacks the keys above; the message names the file and what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not a checkpoint file", fix="pass the best.pth or last.pth file "
                         "itself; if the trainer's last.pth is a folder, move it away, then resume")
    if not path.is_file():
        raise InputError(path, "checkpoint not found" if not path.exists() else "is not a regular file",
                         fix="pass a best.pth or last.pth from outputs/ckpts/<exp>/")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...: all mean "not a usable checkpoint"
        raise InputError(path, f"not a readable checkpoint ({type(err).__name__}: {str(err)[:200]})",
                         fix="the file is damaged or not a spikeprep checkpoint; use another best.pth/last.pth "
                         "or train again") from err
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        hint = (" (it looks like VRT weights: use them as a warm start with train --vrt-weights)"
                if isinstance(ckpt, dict) and ("params" in ckpt or any(".attn." in str(k) for k in ckpt))
                else "")
        raise InputError(path, f"not a spikeprep training checkpoint: missing {missing}{hint}",
                         fix="pass a best.pth or last.pth written by `spikeprep train`")
    if ckpt["version"] != CKPT_VERSION:
        raise InputError(path, f"checkpoint version {ckpt['version']!r}, this spikeprep reads {CKPT_VERSION}",
                         fix="use a checkpoint written by this version of spikeprep")
    bad = non_finite_tensors(ckpt["model"])
    if bad:
        raise InputError(path, f"the weights are not finite: NaN or inf in {len(bad)} tensor(s), e.g. {bad[:3]} "
                         f"(step {ckpt['step']}: the run diverged before this checkpoint was saved)",
                         fix="use an earlier checkpoint of the run (best.pth), or train again with a lower "
                         "TRAIN.OPTIM.LR and without AMP")
    return ckpt


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors of ``state_dict`` holding a NaN or an infinity, in order."""
    return [name for name, t in state_dict.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def checkpoint_config(ckpt: Mapping[str, Any], path: str | os.PathLike = "<checkpoint>") -> Config:
    """The resolved Config stored in a checkpoint."""
    return parse_config(ckpt["config"], source=f"{path} (stored config)")


def check_compatible(ckpt: Mapping[str, Any], path: str | os.PathLike, *, use_spike: bool | None = None,
                     cfg: Config | None = None) -> None:
    """Refuse a checkpoint of the other arm, or of a model another config describes.

    ``use_spike``: the arm the caller is about to run (None: either). ``cfg``: the caller's config;
    MODEL.* and DATA.K must equal the checkpoint's (they fix the architecture) and DATA.NORM and
    DATA.TOTALS_ONLY must too (the spike branch learnt on inputs normalised and binned that way; a checkpoint
    written before DATA.TOTALS_ONLY existed has its default).
    """
    if use_spike is not None and ckpt["arm"] != arm_name(use_spike):
        flag = "without --no-spike" if ckpt["arm"] == "spike" else "with --no-spike"
        raise InputError(path, f"this checkpoint is the {ckpt['arm']!r} arm, but the {arm_name(use_spike)!r} "
                         f"arm was asked for", fix=f"run {flag}, or pass the other arm's checkpoint")
    if cfg is None:
        return
    stored = ckpt["config"]
    mine = cfg.model_dump(mode="json")
    diffs = []
    # (a key the checkpoint's config lacks was added later: the checkpoint trained with its default)
    added_later = {("DATA", "TOTALS_ONLY"): DataConfig, ("MODEL", "SPIKE_BRANCH"): ModelConfig}
    for section, keys in (("MODEL", None), ("DATA", ("K", "NORM", "TOTALS_ONLY"))):
        a, b = stored.get(section, {}), mine.get(section, {})
        for key in keys or sorted(set(a) | set(b)):
            if (section, key) in added_later:
                a = {**a, key: a.get(key, added_later[section, key].model_fields[key].default)}
            if a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: checkpoint {a.get(key)!r}, config {b.get(key)!r}")
    if diffs:
        raise InputError(path, "checkpoint and config describe different models: " + "; ".join(diffs),
                         fix="use the config the checkpoint was trained with (it is stored in the checkpoint), "
                         "or a checkpoint of this config")


def model_from_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike = "<checkpoint>") -> SpikeVRT:
    """Build the checkpoint's arm from its stored config and load its weights strictly."""
    cfg = checkpoint_config(ckpt, path)
    model = build_model(cfg, use_spike=ckpt["arm"] == "spike")
    missing, unexpected = _key_diff(model.state_dict(), ckpt["model"])
    if missing or unexpected:
        raise InputError(path, f"weights do not fit the stored config: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}", fix="the checkpoint is damaged or edited")
    model.load_state_dict(ckpt["model"], strict=True)
    return model


def load_vrt_backbone(model: SpikeVRT, path: str | os.PathLike, cfg: Config) -> dict:
    """``--init-from``: load the VRT backbone (``vrt.*``) of the training checkpoint ``path`` (either arm)
    strictly into ``model.vrt``; the rest of ``model`` keeps its initialisation. Returns the checkpoint.

    Raises:
        InputError: the file is missing or damaged (``load_checkpoint``), its MODEL.VRT_CFG is not ``cfg``'s,
            or its ``vrt.*`` tensors do not fit ``model.vrt`` (names or shapes).
    """
    ckpt = load_checkpoint(path)
    fix = (f"pass a checkpoint trained with MODEL.VRT_CFG {cfg.MODEL.VRT_CFG!r} (e.g. `spikeprep train --no-spike` "
           "with this config on the same store), or train this run from scratch")
    stored = ckpt["config"].get("MODEL", {}).get("VRT_CFG")
    if stored != cfg.MODEL.VRT_CFG:
        raise InputError(path, f"its VRT is MODEL.VRT_CFG {stored!r}, this config's is {cfg.MODEL.VRT_CFG!r}",
                         fix=fix)
    weights = {k[len("vrt."):]: v for k, v in ckpt["model"].items() if k.startswith("vrt.")}
    expected = model.vrt.state_dict()
    missing, unexpected = _key_diff(expected, weights)
    shapes = [f"{k} {tuple(weights[k].shape)} (needs {tuple(v.shape)})" for k, v in expected.items()
              if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise InputError(path, f"its VRT weights do not fit this config's VRT: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, other shapes {shapes[:3]}", fix=fix)
    model.vrt.load_state_dict(weights, strict=True)
    return ckpt


def _key_diff(expected: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
