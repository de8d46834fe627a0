"""Shared test settings: a CI-stable hypothesis profile, small random generators, torch thread pinning."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Derandomized so CI runs the same examples every time; HYPOTHESIS_PROFILE=dev explores more.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed numpy generator (seed 1234)."""
    return np.random.default_rng(1234)


# ---- torch intra-op threads -------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int):
    """Run the body with ``torch.set_num_threads(n)``; restore the previous count afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_threads_fixture(n: int, scope: str = "module"):
    """An autouse fixture pinning torch to ``n`` threads for its scope; bind it to a module-level name:
    ``_threads = torch_threads_fixture(1)``. On shared CPU runners the tiny models are several times
    slower when torch's default thread pool fights other processes for the cores."""

    @pytest.fixture(scope=scope, autouse=True)
    def _pinned_threads():
        with torch_threads(n):
            yield

    return _pinned_threads


# ---- synthetic raw trees and stores, built once per test session (per xdist worker) ------------------
_TREES: dict = {}


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory):
    """``synth_tree(**overrides)`` -> path of a `tiny`-preset raw tree (cached per argument set)."""
    from spikeprep.synth import SynthConfig, synthesize

    def make(**overrides):
        key = tuple(sorted((k, repr(v)) for k, v in overrides.items()))
        if key not in _TREES:
            out = tmp_path_factory.mktemp("raw") / "raw"
            synthesize(out, SynthConfig.from_preset("tiny", **overrides), progress=False)
            _TREES[key] = out
        return _TREES[key]

    return make


# The audit needs enough motion and ticks to locate a correlation peak: 64x80, 32-tick windows, K = 16
# (2 ticks per voxel bin); seq_001 recorded 3 ticks late, seq_002 3 ticks early.
AUDIT_TREE = dict(height=64, width=80, exposure_ticks=32, motion_px=4.0, seed=2,
                  misalign={"seq_001": 3, "seq_002": -3})


# ---- a tiny ingested store and config for the trainer, `spikeprep test` and `compare` ----------------
# 64x80 frames (VRT needs 64 pixels and multiples of 8 after padding), 6 frames per sequence, K = 8:
# a training step of the tiny VRT on a 3x64x64 clip takes about a second on CPU.
TRAIN_TREE = dict(height=64, width=80, frames=6, exposure_ticks=16, seed=5)
TRAIN_K = 8


@pytest.fixture(scope="session")
def train_store(synth_tree, tmp_path_factory):
    """An ingested store (train: 2 sequences, val: 1) of ``TRAIN_TREE`` with ``TRAIN_K`` bins."""
    from spikeprep.ingest import IngestOptions, ingest

    out = tmp_path_factory.mktemp("train_store") / "store"
    ingest(synth_tree(**TRAIN_TREE), out, IngestOptions(num_bins=TRAIN_K, crop_size=64), log_dir=None,
           progress=False)
    return out


def tiny_config_dict(store, save_dir, **train) -> dict:
    """A valid config (schemas.config) for the tiny VRT on ``store``; ``train`` overrides TRAIN.*."""
    from spikeprep.store import read_store_info

    stats = read_store_info(store).stats
    return {
        "SEED": 123,
        "DATA": {"ROOT": str(store), "TRAIN_SPLIT": "train", "VAL_SPLIT": "val", "CROP_SIZE": 64,
                 "CLIP_LEN": 3, "K": TRAIN_K, "NORM": {"MEAN": stats.mean, "STD": stats.std}},
        "MODEL": {"VRT_CFG": "tiny", "CHANNELS_PER_SCALE": [16, 16, 16, 16], "LAYERS": 4,
                  "SPIKE_TSA": {"HEADS": 2}, "FUSE": {"TYPE": "TemporalCrossAttn", "HEADS": 2}},
        "TRAIN": {"BATCH_SIZE": 1, "EPOCHS": 1, "OPTIM": {"LR": 2e-4}, "SCHED": {"WARMUP_STEPS": 2},
                  **train},
        "LOG": {"TENSORBOARD": True, "SAVE_DIR": str(save_dir)},
    }
