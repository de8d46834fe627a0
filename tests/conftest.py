"""Shared test settings: a CI-stable hypothesis profile and small random generators."""
from __future__ import annotations

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
    return np.random.default_rng(1234)


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
