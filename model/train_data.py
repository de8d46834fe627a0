"""The trainer's data: the two splits and the training order (``TrainData``, ``ResumableSampler``).

The order is a function of (SEED, epoch) alone: ``DistributedSampler``'s shuffle, the Dataset's crops
(``set_epoch``) and the DataLoader's own generator (worker seeds never consume torch's global RNG, which drop
path draws from). So a run resumed at (epoch, batch) sees the batches an uninterrupted run would have.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler

from model.distributed import DistSetup
from model.train_interrupt import ignore_stop_signals
from model.train_options import TrainOptions
from schemas.config import Config
from spikeprep.errors import SpikeprepError
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, collate_drop_bad


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


@dataclass
class TrainData:
    """The two splits and the training order: this rank's share of each epoch (``ResumableSampler``, so an
    epoch can start at a batch on resume), ``steps_per_epoch`` and ``max_steps``."""

    train_ds: SpikeDeblurDataset
    val_ds: SpikeDeblurDataset | None        # None: the validation split has no paired frame
    sampler: ResumableSampler
    batch_size: int
    steps_per_epoch: int
    max_steps: int
    seed: int
    workers: int
    pin_memory: bool

    @classmethod
    def build(cls, train_ds: SpikeDeblurDataset, val_ds: SpikeDeblurDataset | None, cfg: Config, opts: TrainOptions,
              setup: DistSetup) -> "TrainData":
        """This rank's order over ``train_ds`` (TRAIN.BATCH_SIZE per process); refuses a split with no batch."""
        batch_size = cfg.TRAIN.BATCH_SIZE
        sampler = ResumableSampler(train_ds, num_replicas=setup.world, rank=setup.rank, shuffle=True,
                                   seed=cfg.SEED, drop_last=True)
        steps_per_epoch = sampler.num_samples // batch_size
        if steps_per_epoch == 0:
            raise SpikeprepError(f"{cfg.DATA.ROOT}: {len(train_ds)} training clips give no batch of "
                                 f"TRAIN.BATCH_SIZE={batch_size} on {setup.world} process(es). Fix: lower "
                                 f"TRAIN.BATCH_SIZE or DATA.CLIP_LEN, or ingest more training frames")
        return cls(train_ds=train_ds, val_ds=val_ds, sampler=sampler, batch_size=batch_size,
                   steps_per_epoch=steps_per_epoch, max_steps=opts.max_steps or cfg.TRAIN.EPOCHS * steps_per_epoch,
                   seed=cfg.SEED, workers=opts.workers, pin_memory=setup.device.type == "cuda")

    def loader(self, epoch: int, start_batch: int) -> DataLoader:
        """Epoch ``epoch``'s batches from batch ``start_batch`` on (the same crops as an uninterrupted run)."""
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_batch * self.batch_size
        self.train_ds.set_epoch(epoch)
        # Its own generator: worker seeds must not consume torch's global RNG (drop path uses it).
        gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return DataLoader(self.train_ds, batch_size=self.batch_size, sampler=self.sampler,
                          num_workers=self.workers, pin_memory=self.pin_memory, collate_fn=collate_drop_bad,
                          drop_last=True, generator=gen, persistent_workers=False, worker_init_fn=ignore_stop_signals)
