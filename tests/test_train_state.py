"""The trainer's pieces without a store: the training state's round trip through a checkpoint, the distributed
setup record, the flow freeze and the click defaults (fast; tests/test_train.py runs them end to end)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from model.checkpoint import CKPT_VERSION, REQUIRED_KEYS, load_checkpoint, save_checkpoint
from model.distributed import DistSetup, setup_distributed, teardown_distributed, wrap_model
from model.losses.deblur_loss import DeblurLoss
from model.train import lr_factor
from model.train_options import TrainOptions, resume_command
from model.train_state import TrainState, read_resume_checkpoint
from model.train_step import ParameterFreeze, TrainingDiverged, train_step
from schemas.config import parse_config
from spikeprep.errors import InputError

CPU = DistSetup(rank=0, world=1, local_rank=0, ddp=False, device=torch.device("cpu"), amp=False)
CKPT_KEYS = {"version", "arm", "exp", "step", "epoch", "batch_in_epoch", "model", "optimizer", "scheduler",
             "scaler", "rng", "config", "config_text", "schedule", "best_psnr"}


class _Toy(nn.Module):
    """A model of the trainer's call signature, with dropout (so torch's RNG matters) and a "spynet" part."""

    def __init__(self):
        super().__init__()
        self.spynet = nn.Conv3d(3, 3, 1)
        self.body = nn.Conv3d(3, 3, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, blur, spike):
        x = blur.transpose(1, 2)
        return self.drop(self.body(x) + self.spynet(x)).transpose(1, 2)


def _config():
    return parse_config({"DATA": {"ROOT": "/nowhere/store", "K": 4},
                         "MODEL": {"VRT_CFG": "tiny", "CHANNELS_PER_SCALE": [8, 8, 8, 8]},
                         "TRAIN": {"SCHED": {"WARMUP_STEPS": 2}}})


def _state(seed: int, max_steps: int = 6) -> TrainState:
    torch.manual_seed(seed)
    model = _Toy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 2, max_steps))
    return TrainState(model=model, optimizer=optimizer, scheduler=scheduler,
                      scaler=torch.amp.GradScaler("cpu", enabled=False), device=torch.device("cpu"), arm="spike",
                      exp="toy", config=_config(), config_text="# the YAML as given\n",
                      schedule=dict(max_steps=max_steps, val_every=3, visual_every=6, freeze_flow_steps=0,
                                    perceptual=False))


def _batch(i: int):
    g = torch.Generator().manual_seed(1000 + i)
    blur = torch.rand(1, 2, 3, 8, 8, generator=g)
    return blur, (blur * 0.5).clamp(0, 1), None


def _steps(state: TrainState, first: int, last: int, freeze: ParameterFreeze | None = None) -> list[float]:
    freeze = freeze or ParameterFreeze(state.model, flow_steps=0, ddp=False)
    losses = []
    for i in range(first, last):
        terms, stop = train_step(state, state.model, DeblurLoss(perceptual_weight=0.0), *_batch(i), setup=CPU,
                                 freeze=freeze, stop_requested=False)
        assert not stop
        losses.append(terms["total"])
    return losses


def test_state_dict_is_the_checkpoint_and_round_trips_bit_for_bit(tmp_path):
    whole = _state(seed=1)
    uninterrupted = _steps(whole, 0, 6)

    first = _state(seed=1)
    assert _steps(first, 0, 3) == uninterrupted[:3]
    first.epoch, first.batch_in_epoch, first.best_psnr = 0, 3, 21.5
    payload = first.state_dict()
    assert set(payload) == CKPT_KEYS and set(REQUIRED_KEYS) <= set(payload)
    assert payload["version"] == CKPT_VERSION and payload["step"] == 3 and payload["arm"] == "spike"
    assert payload["config"] == _config().model_dump(mode="json") and payload["schedule"]["max_steps"] == 6
    path = save_checkpoint(tmp_path / "last.pth", payload)
    ckpt = load_checkpoint(path)                                       # weights_only=True: plain data only

    torch.manual_seed(999)                                              # another RNG state, other weights
    resumed = _state(seed=2)
    resumed.load_state_dict(ckpt)
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch, resumed.best_psnr) == (3, 0, 3, 21.5)
    assert resumed.scheduler.get_last_lr() == first.scheduler.get_last_lr()
    assert _steps(resumed, 3, 6) == uninterrupted[3:]                  # dropout draws the same masks too
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    again = resumed.state_dict()
    assert again["step"] == 6 and again["exp"] == "toy" and again["config_text"] == "# the YAML as given\n"


def test_load_state_dict_restores_torch_rng(tmp_path):
    state = _state(seed=3)
    payload = state.state_dict()
    expected = torch.rand(5)
    torch.rand(7)
    state.load_state_dict(payload)
    assert torch.equal(torch.rand(5), expected)


def test_read_resume_checkpoint_refuses_the_other_arm_and_a_missing_file(tmp_path):
    state = _state(seed=4)
    path = save_checkpoint(tmp_path / "last.pth", state.state_dict())
    assert read_resume_checkpoint(path, use_spike=True, cfg=_config())["step"] == 0
    with pytest.raises(InputError, match="'spike' arm"):
        read_resume_checkpoint(path, use_spike=False, cfg=_config())
    with pytest.raises(InputError, match="not found"):
        read_resume_checkpoint(tmp_path / "missing.pth", use_spike=True, cfg=_config())


def test_a_non_finite_loss_updates_nothing():
    state = _state(seed=5)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    blur, sharp, _ = _batch(0)
    with pytest.raises(TrainingDiverged, match="at step 1.*spikeprep stats /nowhere/store"):
        train_step(state, state.model, DeblurLoss(perceptual_weight=0.0), blur, sharp * float("nan"), None,
                   setup=CPU, freeze=ParameterFreeze(state.model, flow_steps=0, ddp=False), stop_requested=False)
    assert state.step == 0 and all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())


@pytest.mark.parametrize("ddp", [False, True])
def test_flow_freeze_keeps_the_flow_parameters_for_n_steps_both_ways(ddp):
    """Without DDP requires_grad is flipped; under DDP (faked: the same module) the gradients are dropped."""
    state = _state(seed=6)
    freeze = ParameterFreeze(state.model, flow_steps=2, ddp=ddp)
    assert freeze.params == [state.model.spynet.weight, state.model.spynet.bias]
    start = state.model.spynet.weight.detach().clone()
    body = state.model.body.weight.detach().clone()
    _steps(state, 0, 2, freeze)
    assert torch.equal(state.model.spynet.weight, start) and not torch.equal(state.model.body.weight, body)
    assert state.model.spynet.weight.requires_grad == ddp              # DDP's set of parameters stays fixed
    _steps(state, 2, 3, freeze)
    assert state.model.spynet.weight.requires_grad and not torch.equal(state.model.spynet.weight, start)
    assert ParameterFreeze(state.model, flow_steps=0, ddp=ddp).params == []


def test_dist_setup_of_a_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    setup = setup_distributed("cpu", amp=True)                          # AMP is CUDA-only: off on the CPU
    assert setup == CPU and setup.master
    model = nn.Linear(2, 2)
    assert wrap_model(model, setup) is model
    teardown_distributed(setup)                                         # nothing to leave
    with pytest.raises(dataclasses.FrozenInstanceError):
        setup.rank = 1
    assert not DistSetup(rank=1, world=2, local_rank=1, ddp=True, device=torch.device("cpu"), amp=False).master


@pytest.mark.parametrize("fields, message", [
    (dict(rank=2, world=2, ddp=True), "rank 2 is not one of the 2"),
    (dict(rank=-1), "rank -1"),
    (dict(world=2), "2 processes without DDP"),
    (dict(local_rank=-1), "local rank -1"),
    (dict(amp=True), "AMP on cpu"),
])
def test_dist_setup_refuses_impossible_values(fields, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CPU, **fields)


def test_click_defaults_are_the_train_options_defaults(tmp_path):
    from cli.train_cmd import train_cmd

    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    defaults = TrainOptions(config=config)
    given = train_cmd.make_context("train", ["--config", str(config)]).params     # nothing else on the line
    for name in ("exp", "resume", "dry_run", "max_steps", "val_every", "visual_every", "visual_frames", "log_every",
                 "workers", "device", "amp", "stop_at", "freeze_flow_steps", "vrt_weights", "reliance"):
        assert given[name] == getattr(defaults, name), name
    assert tuple(given["val_tile"]) == defaults.val_tile
    assert (not given["no_spike"], not given["no_vgg"], not given["no_progress"]) == \
        (defaults.use_spike, defaults.perceptual, defaults.progress)
    assert resume_command(defaults) == f"spikeprep train --config {config} --exp spike --resume"
