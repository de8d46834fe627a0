"""One optimiser step (``train_step``) and the parameter freeze it applies (``ParameterFreeze``).

The step: forward under autocast, the loss, one all-reduce of the finiteness and stop flags (all ranks stop
together), backward (scaled under AMP), the parameter freeze, the optimiser, scaler and scheduler steps. It works
on a ``model.train_state.TrainState``; model/train.py's loop feeds it one batch at a time.
"""
from __future__ import annotations

import torch
from torch import nn

from model.distributed import DistSetup, step_flags
from model.losses.deblur_loss import DeblurLoss
from model.train_state import TrainState
from spikeprep.errors import SpikeprepError


class TrainingDiverged(SpikeprepError):
    """The loss or the weights became NaN or infinite; nothing was saved for that step. ``what`` says what
    happened, ``held`` which checkpoint holds the last good state (the training loop knows it)."""

    CHECKS = ("Check, as the original document's section 13 says: the voxels are log1p-normalised and "
              "DATA.NORM.STD is not ~0 (`spikeprep stats {root}`); then train without AMP and with TRAIN.OPTIM.LR "
              "1e-4")

    def __init__(self, what: str, root: str, held: str | None = None):
        self.what, self.root, self.held = what, root, held
        tail = f" ({held})" if held else ""
        super().__init__(f"{what}; nothing was saved for this step{tail}. {self.CHECKS.format(root=root)}")

    def holding(self, held: str) -> "TrainingDiverged":
        """This error, saying which checkpoint holds the last good state."""
        return TrainingDiverged(self.what, self.root, held)


def flow_parameter_names(model: nn.Module) -> list[str]:
    """SpyNet's and the deformable alignment's offset-predicting parameters (frozen by --freeze-flow-steps)."""
    return [n for n, _ in model.named_parameters() if ".spynet." in f".{n}" or ".conv_offset." in n]


def vrt_parameter_names(model: nn.Module) -> list[str]:
    """The VRT backbone's parameters (``model.vrt``; frozen by --freeze-vrt-steps)."""
    return [n for n, _ in model.named_parameters() if n.startswith("vrt.")]


class ParameterFreeze:
    """Parameters that get no update in the first steps of a run: ``--freeze-flow-steps N`` (the
    ``flow_parameter_names``, steps 0..N-1) and ``--freeze-vrt-steps M`` (the ``vrt_parameter_names``, steps
    0..M-1); a parameter in both thaws after the later of the two.

    Without DDP they simply need no gradient (``before_forward`` flips requires_grad, once each way):
    autograd then skips their backward. DDP fixes the set of parameters with gradients when it is
    built, so under DDP they keep requires_grad and ``after_backward`` drops their gradients before the
    optimiser step (AdamW skips a parameter without a gradient entirely: no update, no weight decay).
    """

    def __init__(self, model: nn.Module, *, ddp: bool, flow_steps: int = 0, vrt_steps: int = 0):
        thaw: dict[str, int] = {}
        for names, steps in ((flow_parameter_names(model), flow_steps), (vrt_parameter_names(model), vrt_steps)):
            for n in names if steps > 0 else ():
                thaw[n] = max(thaw.get(n, 0), steps)
        frozen = [(p, thaw[n]) for n, p in model.named_parameters() if n in thaw]
        self.params = [p for p, _ in frozen]
        self.thaw_steps = [t for _, t in frozen]
        self.ddp = ddp

    def before_forward(self, step: int) -> None:
        """Before the forward pass of optimiser step ``step`` (0-based)."""
        if self.ddp:
            return
        for p, thaw in zip(self.params, self.thaw_steps):
            if p.requires_grad != (step >= thaw):
                p.requires_grad_(step >= thaw)

    def after_backward(self, step: int) -> None:
        """Between the backward pass of step ``step`` and its optimiser step."""
        if self.ddp:
            for p, thaw in zip(self.params, self.thaw_steps):
                if step < thaw:
                    p.grad = None


def forward_loss(model: nn.Module, loss_fn: DeblurLoss, blur: torch.Tensor, sharp: torch.Tensor,
                 spike: torch.Tensor | None, setup: DistSetup) -> tuple[torch.Tensor, dict]:
    """The forward pass under autocast and the loss (with the auxiliary spike-branch luma when
    ``loss_fn.aux_spike_recon_weight`` > 0: the model is then asked for it)."""
    aux_luma = None
    with torch.autocast(setup.device.type, dtype=torch.float16, enabled=setup.amp):
        if loss_fn.aux_spike_recon_weight > 0:
            recon, aux_luma = model(blur, spike, with_aux=True)
        else:
            recon = model(blur, spike)
    return loss_fn(recon.float(), sharp, None if aux_luma is None else aux_luma.float())


def train_step(state: TrainState, model: nn.Module, loss_fn: DeblurLoss, blur: torch.Tensor, sharp: torch.Tensor,
               spike: torch.Tensor | None, *, setup: DistSetup, freeze: ParameterFreeze,
               stop_requested: bool) -> tuple[dict, bool]:
    """One optimiser step on one batch: forward under autocast, the loss, backward (scaled under AMP), the
    parameter freeze, the optimiser, scaler and scheduler steps; ``state.step`` counts it. ``model`` is the module
    to call (DDP's wrapper under torchrun). Returns (the loss terms, some rank was asked to stop).

    Raises:
        TrainingDiverged: the loss is not finite on some rank; no parameter was updated.
    """
    freeze.before_forward(state.step)
    loss, terms = forward_loss(model, loss_fn, blur, sharp, spike, setup)
    finite, stop = step_flags(loss, stop_requested, setup)
    if not finite:
        raise TrainingDiverged(f"{state.exp}: the loss is {terms['total']} at step {state.step + 1}",
                               state.config.DATA.ROOT)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    freeze.after_backward(state.step)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step += 1
    return terms, stop
