"""One optimiser step (``train_step``) and the flow freeze it applies (``FlowFreeze``).

The step: forward under autocast, the loss, one all-reduce of the finiteness and stop flags (all ranks stop
together), backward (scaled under AMP), the flow freeze, the optimiser, scaler and scheduler steps. It works
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
    """SpyNet's and the deformable alignment's offset-predicting parameters (frozen by freeze_flow_steps)."""
    return [n for n, _ in model.named_parameters() if ".spynet." in f".{n}" or ".conv_offset." in n]


class FlowFreeze:
    """``--freeze-flow-steps N``: the ``flow_parameter_names`` parameters get no update in steps 0..N-1.

    Without DDP they simply need no gradient (``before_forward`` flips requires_grad, once each way):
    autograd then skips SpyNet's backward. DDP fixes the set of parameters with gradients when it is
    built, so under DDP they keep requires_grad and ``after_backward`` drops their gradients before the
    optimiser step (AdamW skips a parameter without a gradient entirely).
    """

    def __init__(self, model: nn.Module, steps: int, *, ddp: bool):
        names = set(flow_parameter_names(model)) if steps > 0 else set()
        self.params = [p for n, p in model.named_parameters() if n in names]
        self.steps, self.ddp = steps, ddp
        self._trainable: bool | None = None        # set on the first step, flipped once after the freeze

    def before_forward(self, step: int) -> None:
        """Before the forward pass of optimiser step ``step`` (0-based)."""
        if not self.params or self.ddp or self._trainable == (step >= self.steps):
            return
        self._trainable = step >= self.steps
        for p in self.params:
            p.requires_grad_(self._trainable)

    def after_backward(self, step: int) -> None:
        """Between the backward pass of step ``step`` and its optimiser step."""
        if self.ddp and step < self.steps:
            for p in self.params:
                p.grad = None


def train_step(state: TrainState, model: nn.Module, loss_fn: DeblurLoss, blur: torch.Tensor, sharp: torch.Tensor,
               spike: torch.Tensor | None, *, setup: DistSetup, freeze: FlowFreeze,
               stop_requested: bool) -> tuple[dict, bool]:
    """One optimiser step on one batch: forward under autocast, the loss, backward (scaled under AMP), the
    flow freeze, the optimiser, scaler and scheduler steps; ``state.step`` counts it. ``model`` is the module
    to call (DDP's wrapper under torchrun). Returns (the loss terms, some rank was asked to stop).

    Raises:
        TrainingDiverged: the loss is not finite on some rank; no parameter was updated.
    """
    freeze.before_forward(state.step)
    with torch.autocast(setup.device.type, dtype=torch.float16, enabled=setup.amp):
        recon = model(blur, spike)
    loss, terms = loss_fn(recon.float(), sharp)
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
