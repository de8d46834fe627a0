"""The trainer's process setup: one process, or one rank of a torchrun job (DDP).

``setup_distributed`` joins the process group when torchrun started this process (``RANK`` set: NCCL on
CUDA, else gloo), picks the device and whether AMP is on, and returns them as a ``DistSetup`` record;
``teardown_distributed`` leaves the group. ``wrap_model`` puts DDP around the model under torchrun;
``barrier``, ``step_flags`` and ``check_replicas_equal`` are the collective steps the loop takes (ranks
wait for rank 0's validation; all ranks stop together; every rank ends with the same parameters).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass(frozen=True)
class DistSetup:
    """Where this process trains: its rank of ``world`` (``local_rank`` on its machine), whether it runs
    under DDP, its device and whether AMP is on. ``master`` (rank 0) alone logs, validates and saves."""

    rank: int
    world: int
    local_rank: int
    ddp: bool
    device: torch.device
    amp: bool

    def __post_init__(self):
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not one of the {self.world} process(es)")
        if self.local_rank < 0:
            raise ValueError(f"local rank {self.local_rank} is negative")
        if not self.ddp and self.world != 1:
            raise ValueError(f"{self.world} processes without DDP")
        if self.amp and self.device.type != "cuda":
            raise ValueError(f"AMP on {self.device}: autocast and GradScaler are used on CUDA only")

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None, amp: bool | None = None) -> DistSetup:
    """Join torchrun's process group if this process is one of its ranks; the device (``device``, else
    cuda:LOCAL_RANK when CUDA is there, else cpu) and AMP (``amp``, else on with CUDA; never off CUDA)."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    if ddp:
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    else:
        rank, world, local_rank = 0, 1, 0
    if device:
        where = torch.device(device)
    else:
        where = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if where.type == "cuda":
        torch.cuda.set_device(where)
    use_amp = where.type == "cuda" if amp is None else bool(amp and where.type == "cuda")
    return DistSetup(rank=rank, world=world, local_rank=local_rank, ddp=ddp, device=where, amp=use_amp)


def teardown_distributed(setup: DistSetup) -> None:
    """Leave the process group ``setup_distributed`` joined (nothing to do for a single process)."""
    if setup.ddp:
        dist.destroy_process_group()


def wrap_model(model: nn.Module, setup: DistSetup) -> nn.Module:
    """The module the training step calls: DDP around ``model`` under torchrun, else ``model`` itself."""
    if not setup.ddp:
        return model
    return DDP(model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)


def barrier(setup: DistSetup) -> None:
    """Every rank waits here for the others (rank 0 validating and saving); nothing for a single process."""
    if setup.ddp:
        dist.barrier()


def step_flags(loss: torch.Tensor, stop_requested: bool, setup: DistSetup) -> tuple[bool, bool]:
    """(the loss is finite on every rank, some rank was asked to stop): one all-reduce, so all ranks stop
    together, at the same step."""
    flags = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0, float(stop_requested)],
                         device=setup.device)
    if setup.ddp:
        dist.all_reduce(flags)
    return bool(flags[0].item() == 0), bool(flags[1].item() > 0)


def check_replicas_equal(model: nn.Module, say) -> None:
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
