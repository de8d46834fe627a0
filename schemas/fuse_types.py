"""The fusion types and heads ``MODEL.FUSE.TYPE`` may name: the one list (DESIGN section 7).

Each entry is data: the name, what it builds, and its role (``"original"``, ``"departure"`` or
``"ablation"``). The config schema (``schemas.config.FuseConfig``) accepts exactly these names, without
importing torch, so validating a config stays fast. The model registers one implementation per name
(``model.nets.registry.register_fuse_type``), which refuses a name that is not listed here; importing
``model.nets.integrate_vrt`` fails if a name listed here has no implementation. To add a variant: list it
here, then register its implementation in ``model/nets/integrate_vrt.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FuseRole = Literal["original", "departure", "ablation"]


@dataclass(frozen=True)
class FuseTypeInfo:
    """One ``MODEL.FUSE.TYPE`` value. ``fitted``: its spike head starts at a least-squares map fitted with the
    counts (the trainer fits it before step 0), so with every count zero its output is far from the blur by
    construction and its count-zero sensitivity is no measure of what the spikes are worth. ``head``: the type
    adds a spike head (the registry checks its implementation agrees)."""

    name: str
    summary: str
    role: FuseRole
    fitted: bool = False
    head: bool = False      # it adds a spike head at full resolution (MODEL.SPIKE_BRANCH false needs one)


FUSE_TYPE_INFO: dict[str, FuseTypeInfo] = {info.name: info for info in (
    FuseTypeInfo("TemporalCrossAttn", "original section 10.2 literally: Ff = LN(Fr) + MHA + FFN", "original"),
    FuseTypeInfo("ResidualTemporalCrossAttn", "residual on Fr, zero-initialised output projections: plain VRT "
                 "at step 0", "departure"),
    FuseTypeInfo("ResidualTemporalCrossAttnSpikeHead", "the residual fusion plus the spike head, a "
                 "zero-initialised luma correction from Fs'_1, the voxels and VRT's features h", "departure", head=True),
    FuseTypeInfo("ResidualTemporalCrossAttnFittedSpikeHead", "the residual fusion plus the fitted spike head: "
                 "it also reads the counts and the blur, and starts at the training split's least-squares map",
                 "departure", fitted=True, head=True),
    FuseTypeInfo("ResidualTemporalCrossAttnGatedSpikeHead", "the fitted spike head behind a per-pixel gate "
                 "(from the correction's local energy, h and Fs'_1), started at the gated least-squares map over "
                 "the counts' 3x3 neighbourhood: spikes act where things move, still areas stay VRT's",
                 "departure", fitted=True, head=True),
    FuseTypeInfo("ResidualTemporalCrossAttnMotionGatedSpikeHead", "the gated spike head whose gate also scales "
                 "VRT's own residual: recon = blur + gate * (conv_last(h) + d), so where the spikes see no motion "
                 "the output is the blur", "departure", fitted=True, head=True),
    FuseTypeInfo("ResidualTemporalCrossAttnEnergyGatedSpikeHead", "the gated spike head whose gate reads the "
                 "correction's local energy alone (no convolutions of h and Fs'_1)", "ablation", fitted=True, head=True),
    FuseTypeInfo("TemporalCrossAttnSpikeHead", "the literal fusion plus the spike head", "ablation", head=True),
    FuseTypeInfo("SpikeHeadOnly", "the spike head alone, no fusion at the four scales (Ff_i = Fr_i)",
                 "ablation", head=True),
)}
FUSE_TYPES: tuple[str, ...] = tuple(FUSE_TYPE_INFO)
FITTED_FUSE_TYPES: tuple[str, ...] = tuple(n for n, info in FUSE_TYPE_INFO.items() if info.fitted)
HEAD_FUSE_TYPES: tuple[str, ...] = tuple(n for n, info in FUSE_TYPE_INFO.items() if info.head)
