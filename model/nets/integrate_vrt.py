"""The model the trainer builds: VRT fused with the spike branch (DESIGN section 7, original section 5.5).

    Fr_1..Fr_4 = VRT encoder (conv_first, stages 1-4: TMSA + parallel warping), RGB only
    Fs_1..Fs_4 = SpikeEncoder3D(spike_vox), each of Fr_i's shape
    Fs'_i      = TemporalSelfAttentionBlock_i(Fs_i)
    Ff_i       = fuse_i(Fr_i, Fs'_i)
    recon      = VRT decoder (stages 5-8, head) on Ff_1..Ff_4 where it used x1..x4
               [+ SpikeHead(Fs'_1, spike_vox, h) for the *SpikeHead type, h = conv_last's input]

``MODEL.FUSE.TYPE`` picks the fusion and the output head. The names and what each builds are listed once, in
``schemas/fuse_types.py``; this module registers the implementation of each (``model.nets.registry``), and
importing it fails if one is missing:

- ``TemporalCrossAttn``: original section 10.2 literally (residual on LN(Fr)).
- ``ResidualTemporalCrossAttn``: residual on Fr, zero-initialised output projections; the spike arm's
  output equals plain VRT's at initialisation.
- ``ResidualTemporalCrossAttnSpikeHead``: the residual fusion plus the spike head
  (``model.nets.fusion.spike_head``), a zero-initialised path from the spike features and voxels to the output;
  still plain VRT at initialisation.
- ``ResidualTemporalCrossAttnFittedSpikeHead``: the residual fusion plus the fitted spike head
  (``FittedSpikeHead``), which also reads the counts and the blur frame and starts at the least-squares
  baseline's map of the training split (``FittedSpikeHead.fit_start``, called by the trainer before step 0).
  Not plain VRT at initialisation.
- ``ResidualTemporalCrossAttnGatedSpikeHead``: the fitted head behind a per-pixel gate (``GatedSpikeHead``),
  started at the gated least-squares map: spikes act where things move, still areas stay VRT's.
- ``ResidualTemporalCrossAttnMotionGatedSpikeHead``: the gated head whose gate also scales VRT's residual:
  where the spikes see no motion the output is the blur.
- ``ResidualTemporalCrossAttnEnergyGatedSpikeHead``: ablation, the gate from the correction's energy alone.

``spike_branch=False`` (MODEL.SPIKE_BRANCH) cuts the original's spike branch out of any type with a spike head:
no SpikeEncoder3D, temporal self-attention or fusion, and the head reads zeros for Fs'_1 (spike - no-branch
measures what the branch adds).
- ``TemporalCrossAttnSpikeHead``, ``SpikeHeadOnly``: ablation variants (the literal fusion with the spike
  head; the spike head with no fusion at the four scales). benchmarks/RESULTS.md, "Spike ablation",
  measures every type.

With ``use_spike=False`` the spike modules are not built and Ff_i = Fr_i: the output is plain VRT's, exactly.
VRT's layers are not touched.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Sequence

import torch
from torch import Tensor, nn

from model.nets.fusion.cross_attn_temporal import ResidualTemporalCrossAttnFuse, TemporalCrossAttnFuse
from model.nets.fusion.spike_head import FittedSpikeHead, GatedSpikeHead, SpikeHead
from model.nets.registry import check_registered, fuse_type as registered_fuse_type, register_fuse_type
from model.shipped_configs import resolve_vrt_cfg
from model.nets.spike_encoder3d import ScaleGeometry, SpikeEncoder3D, check_same_shapes
from model.nets.spike_temporal_sa import TemporalSelfAttentionBlock
from model.nets.vrt import VRT, load_official, vrt_from_config
from model.nets.vrt_tiling import padded_forward, tiled_forward

# ---- MODEL.FUSE.TYPE: one implementation per name of schemas/fuse_types.py -----------------------------
register_fuse_type("TemporalCrossAttn")(TemporalCrossAttnFuse)
register_fuse_type("ResidualTemporalCrossAttn")(ResidualTemporalCrossAttnFuse)
register_fuse_type("ResidualTemporalCrossAttnSpikeHead", head=SpikeHead)(ResidualTemporalCrossAttnFuse)
register_fuse_type("ResidualTemporalCrossAttnFittedSpikeHead", head=FittedSpikeHead)(ResidualTemporalCrossAttnFuse)
register_fuse_type("ResidualTemporalCrossAttnGatedSpikeHead", head=GatedSpikeHead)(ResidualTemporalCrossAttnFuse)
register_fuse_type("ResidualTemporalCrossAttnEnergyGatedSpikeHead",
                   head=partial(GatedSpikeHead, gate_from_features=False))(ResidualTemporalCrossAttnFuse)
register_fuse_type("ResidualTemporalCrossAttnMotionGatedSpikeHead",
                   head=partial(GatedSpikeHead, gates_vrt=True))(ResidualTemporalCrossAttnFuse)
register_fuse_type("TemporalCrossAttnSpikeHead", head=SpikeHead)(TemporalCrossAttnFuse)


@register_fuse_type("SpikeHeadOnly", head=SpikeHead)
class NoFusion(nn.Module):
    """Ff_i = Fr_i at this scale: the spike features reach the output through the spike head alone."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()

    def forward(self, fr: Tensor, fs: Tensor) -> Tensor:
        return fr



check_registered()


def vrt_geometry(vrt: VRT) -> list[ScaleGeometry]:
    """Per-scale geometry of VRT's Fr_1..Fr_4: T kept, H and W halved per scale."""
    return [ScaleGeometry(c, 1, 2 ** i, 2 ** i) for i, c in enumerate(vrt.feature_dims())]


def fuse_features(fr: Sequence[Tensor], fs_attended: Sequence[Tensor], fuse: nn.ModuleList) -> list[Tensor]:
    """Ff_i = fuse_i(Fr_i, Fs'_i) per scale (original section 10.3); ``fs_attended`` = TSA_i(Fs_i)."""
    check_same_shapes(list(fr), list(fs_attended))
    return [f(r, s) for f, r, s in zip(fuse, fr, fs_attended)]


class SpikeVRT(nn.Module):
    """VRT + spike branch; ``forward(blur [B,T,3,H,W], spike_vox [B,T,K,H,W]) -> recon [B,T,3,H,W]``.

    Args:
        vrt: the backbone (its state_dict keys stay under ``vrt.``).
        num_bins: K of the spike voxels.
        channels_per_scale: MODEL.CHANNELS_PER_SCALE, checked against the backbone's Fr_i channels.
        tsa_heads, fuse_heads: MODEL.SPIKE_TSA.HEADS and MODEL.FUSE.HEADS (4 in the original).
        use_spike: False builds the spike-free arm (no spike modules; spike_vox is ignored).
        fuse_type: MODEL.FUSE.TYPE, a name of ``schemas.fuse_types.FUSE_TYPES``.
        spike_branch: MODEL.SPIKE_BRANCH; False builds no SpikeEncoder3D, temporal self-attention or fusion
            (Ff_i = Fr_i) and feeds the spike head zeros for Fs'_1 (a type with a spike head only).
        aux_spike_recon: build ``aux_luma``, a conv3x3 from Fs'_1 to one channel that predicts the sharp frame's
            Rec.601 luma (TRAIN.AUX_SPIKE_RECON_WEIGHT > 0; ``forward(..., with_aux=True)`` returns it). Needs
            the spike branch; the spike-free arm builds nothing for it.
    """

    def __init__(self, vrt: VRT, *, num_bins: int, channels_per_scale: Sequence[int], tsa_heads: int = 4,
                 fuse_heads: int = 4, use_spike: bool = True, fuse_type: str = "TemporalCrossAttn",
                 spike_branch: bool = True, aux_spike_recon: bool = False):
        super().__init__()
        registered = registered_fuse_type(fuse_type)      # ValueError naming the choices
        if not spike_branch and registered.head is None:
            raise ValueError(f"MODEL.SPIKE_BRANCH: false leaves MODEL.FUSE.TYPE {fuse_type!r} no way to read the "
                             "spikes (it has no spike head); set SPIKE_BRANCH: true or a type with a spike head")
        self.vrt = vrt
        self.use_spike = use_spike
        self.num_bins = num_bins
        self.fuse_type = fuse_type
        self.spike_head: SpikeHead | None = None
        geometry = vrt_geometry(vrt)
        # the original's spike branch; without it (MODEL.SPIKE_BRANCH false) the voxels reach the head only
        self.branch = use_spike and spike_branch
        if self.branch:
            self.spike_encoder = SpikeEncoder3D(num_bins=num_bins, channels_per_scale=list(channels_per_scale),
                                                geometry=geometry)
            self.spike_tsa = nn.ModuleList(TemporalSelfAttentionBlock(g.channels, tsa_heads) for g in geometry)
            self.fuse = nn.ModuleList(registered.fuse(g.channels, fuse_heads) for g in geometry)
        if use_spike:
            if registered.head is not None:
                c1 = geometry[0].channels
                self.spike_head = registered.head(c1, num_bins, c1)
        self.aux_luma: nn.Conv2d | None = None
        if use_spike and aux_spike_recon:
            if not self.branch:
                raise ValueError("the auxiliary luma target (TRAIN.AUX_SPIKE_RECON_WEIGHT > 0) trains the spike "
                                 "branch, which MODEL.SPIKE_BRANCH: false does not build")
            # SpkDeblurNet's spike-branch target: the sharp luma from Fs'_1 alone (default init: it must carry
            # a gradient into the branch from step 0, and it never touches the restored frame)
            self.aux_luma = nn.Conv2d(geometry[0].channels, 1, 3, padding=1)

    def encode_scales(self, blur: Tensor, spike_vox: Tensor | None):
        """(VRT encoder state, Fr list, Fs list or None): for --dry-run reports and tests."""
        state = self.vrt.encode(blur)
        if self.use_spike:
            spike_vox = self._check_spike(blur, spike_vox)
        fs = self.spike_encoder(spike_vox) if self.branch else None
        return state, state.feats, fs

    def _check_spike(self, blur: Tensor, spike_vox: Tensor | None) -> Tensor:
        if spike_vox is None:
            raise ValueError("the spike arm needs spike_vox [B, T, K, H, W]")
        b, t, _, h, w = blur.shape
        if tuple(spike_vox.shape) != (b, t, self.num_bins, h, w):
            raise ValueError(f"spike_vox is {tuple(spike_vox.shape)}, expected {(b, t, self.num_bins, h, w)}")
        return spike_vox

    def forward(self, blur: Tensor, spike_vox: Tensor | None = None, *,
                with_aux: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Deblur a clip: ``blur [B, T, 3, H, W]`` and ``spike_vox [B, T, K, H, W]`` -> ``[B, T, 3, H, W]``.

        K is ``num_bins``; H and W must be what VRT accepts (multiples of 8, at least 64; any size through
        :func:`tiled_inference` or ``model.nets.vrt_tiling.padded_forward``). The spike-free arm ignores
        ``spike_vox`` (it may be None) and returns plain VRT's output. ``with_aux`` (the training step, when
        TRAIN.AUX_SPIKE_RECON_WEIGHT > 0; a keyword, so DDP's wrapper passes it on) returns ``(recon,
        aux_luma [B, T, 1, H, W])``, the auxiliary head's sharp-luma prediction from Fs'_1.
        """
        if with_aux and self.aux_luma is None:
            raise ValueError("with_aux=True needs the auxiliary luma head (aux_spike_recon=True)")
        state, fr, fs = self.encode_scales(blur, spike_vox)
        if not self.use_spike:
            return self.vrt.decode(state)
        recon, fs1 = self._restore(state, fr, fs, spike_vox)
        if not with_aux:
            return recon
        b, t, c, h, w = fs1.shape
        return recon, self.aux_luma(fs1.reshape(b * t, c, h, w)).reshape(b, t, 1, h, w)

    def _restore(self, state, fr: list[Tensor], fs: list[Tensor] | None,
                 spike_vox: Tensor) -> tuple[Tensor, Tensor]:
        """The spike arm's restoration and the Fs'_1 it read (zeros without the branch)."""
        if self.branch:
            fs_attended = [t(s) for t, s in zip(self.spike_tsa, fs)]
            ff = fuse_features(fr, fs_attended, self.fuse)
            fs1 = fs_attended[0]
        else:                            # no branch: Ff_i = Fr_i, and the head reads zeros where Fs'_1 would be
            ff, fs1 = list(fr), torch.zeros_like(fr[0])
        if self.spike_head is None:
            return self.vrt.decode(state, ff), fs1
        h = self.vrt.decode_head_input(state, ff)
        if getattr(self.spike_head, "gates_vrt", False):   # the spikes' motion gate on VRT's residual as well
            return self.spike_head.gated_restoration(fs1, spike_vox, h, state.x_lq,
                                                     self.vrt.head_output(h, state.x_lq) - state.x_lq), fs1
        correction = self.spike_head(fs1, spike_vox, h, state.x_lq)  # luma: added to all of RGB
        return self.vrt.head_output(h, state.x_lq) + correction, fs1

    def spike_parameters(self) -> list[nn.Parameter]:
        """Parameters of the spike branch and the fusion (empty for the spike-free arm)."""
        if not self.use_spike:
            return []
        head = [] if self.spike_head is None else list(self.spike_head.parameters())
        if not self.branch:
            return head
        aux = [] if self.aux_luma is None else list(self.aux_luma.parameters())
        return [*self.spike_encoder.parameters(), *self.spike_tsa.parameters(), *self.fuse.parameters(), *head,
                *aux]

    def load_official_vrt(self, path: str | os.PathLike) -> "SpikeVRT":
        """Strictly load official VRT weights into the backbone; the spike branch keeps its init."""
        load_official(path, self.vrt)
        return self


def build_vrt(vrt_cfg: str) -> VRT:
    """MODEL.VRT_CFG: a preset name or a VRT YAML file (``model.shipped_configs.resolve_vrt_cfg``)."""
    return vrt_from_config(resolve_vrt_cfg(vrt_cfg))


def build_model(cfg, use_spike: bool = True) -> SpikeVRT:
    """The trainer's model from a ``schemas.config.Config`` (MODEL.* and DATA.K)."""
    m = cfg.MODEL
    vrt = build_vrt(m.VRT_CFG)
    if m.LAYERS != len(vrt.feature_dims()):
        raise ValueError(f"MODEL.LAYERS is {m.LAYERS} but VRT's encoder has {len(vrt.feature_dims())} scales; "
                         f"set MODEL.LAYERS: {len(vrt.feature_dims())}")
    return SpikeVRT(vrt, num_bins=cfg.DATA.K, channels_per_scale=m.CHANNELS_PER_SCALE,
                    tsa_heads=m.SPIKE_TSA.HEADS, fuse_heads=m.FUSE.HEADS, use_spike=use_spike,
                    fuse_type=m.FUSE.TYPE, spike_branch=m.SPIKE_BRANCH,
                    aux_spike_recon=use_spike and cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT > 0)


def _inputs(model: SpikeVRT, blur: Tensor, spike_vox: Tensor | None) -> list[Tensor]:
    return [blur, model._check_spike(blur, spike_vox)] if model.use_spike else [blur]


def tiled_inference(model: SpikeVRT, blur: Tensor, spike_vox: Tensor | None = None,
                    tile: Sequence[int] = (12, 256, 256), overlap: Sequence[int] = (2, 20, 20),
                    out_device: torch.device | str | None = None) -> Tensor:
    """Clip- and tile-wise inference for full frames (spike_vox tiled like blur); call under no_grad."""
    def run(tiles: list[Tensor]) -> Tensor:
        return padded_forward(lambda ts: model(*ts), tiles)

    return tiled_forward(run, _inputs(model, blur, spike_vox), tile, overlap, out_device=out_device)
