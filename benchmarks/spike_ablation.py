"""Why the spike arm ignored its spikes, one suspect per row (issue 15): the ablation table of RESULTS.md.

    .venv/bin/python benchmarks/spike_ablation.py                          # every row, 150 steps (hours on 2 cores)
    .venv/bin/python benchmarks/spike_ablation.py --rows literal spike_head cnn --steps 300
    .venv/bin/python benchmarks/spike_ablation.py --list                   # the rows and what each changes

Every row trains through the real trainer (``model.train.main``: the same Dataset crops, AdamW, schedule,
Charbonnier loss, full-size validation with the spike-reliance probes), on one synthetic store that the
script makes first (``spikeprep synth --preset demo``, 4 + 1 sequences x 12 frames at 128x192, K = 16: the
store of ``make demo``), for the same number of steps and the same seed. A row that changes something both
arms share (learning rate, warm-up, schedule, VRT initialisation, preset width, crop, clip length, K) gets its
own base arm with the same change; every other row is judged against the plain base arm. Reference models
(``benchmarks/references.py``) take the spike arm's place in the same trainer.

Columns: the spike arm's PSNR-Y (overall, motion boundaries), the base arm's, their difference, the dB from
the spikes (true voxels minus count-zero voxels, overall and on motion boundaries), PSNR-Y with another
clip's voxels and with the bins reversed, and the gradient reaching the fusion at each scale (RMS of
dLoss/dFf_i on one training clip after training) with the RMS of Fr_1 and Fs'_1 there.

Rows that change the model but are not a ``MODEL.FUSE.TYPE`` are patches applied here, after
``build_model``; they are experiments, not product options.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description, write_section  # noqa: E402
from model.nets.fusion.cross_attn_temporal import TemporalCrossAttnFuse  # noqa: E402
from model.nets.integrate_vrt import fuse_features  # noqa: E402
from model.nets.spike_encoder3d import ResBlock3D  # noqa: E402
from model.nets.spike_temporal_sa import (TemporalSelfAttentionBlock, from_pixel_sequences,  # noqa: E402
                                     to_pixel_sequences)

HEAD = "ResidualTemporalCrossAttnSpikeHead"
FITTED = "ResidualTemporalCrossAttnFittedSpikeHead"
RESIDUAL = "ResidualTemporalCrossAttn"
LITERAL = "TemporalCrossAttn"


@dataclass(frozen=True)
class Row:
    """One ablation row: the spike-side model (a FUSE.TYPE, patches or a reference) and shared settings."""

    name: str
    what: str
    fuse: str = HEAD
    patches: tuple[str, ...] = ()            # applied to the spike arm only
    shared: dict = field(default_factory=dict)  # config/patch changes both arms get (own base arm)
    reference: str | None = None             # benchmarks/references.py model instead of SpikeVRT


ROWS = [
    # the literal fusion and the suspects for why it ignores its spikes
    Row("literal", "original section 10.2: Ff = LN(Fr) + MHA + FFN (MODEL.FUSE.TYPE TemporalCrossAttn)", LITERAL),
    Row("residual", "residual on Fr, zero-initialised output projections: plain VRT at step 0 "
        "(ResidualTemporalCrossAttn)", RESIDUAL),
    Row("residual_frame_position", "residual + a learned per-head bias for the frame offset in the fusion's "
        "attention", RESIDUAL, ("frame_position",)),
    Row("residual_no_temporal_mixing", "residual, no attention across T: Ff = Fr + out(v(LN(Fs'))) + FFN",
        RESIDUAL, ("no_temporal_mixing",)),
    Row("literal_fanin_init", "literal; VRT's Linear layers at std 1/sqrt(fan_in), deep features alive at init "
        "(both arms)", LITERAL, shared={"patches": ("vrt_fanin_init",)}),
    Row("literal_flat_lr", "literal; LR constant after the warm-up instead of cosine (both arms)", LITERAL,
        shared={"patches": ("flat_lr",)}),
    Row("literal_lr_5e-4", "literal; LR 5e-4 instead of 1e-3 (both arms)", LITERAL, shared={"LR": 5e-4}),
    Row("literal_warmup_100", "literal; 100 warm-up steps instead of 20 (both arms)", LITERAL,
        shared={"WARMUP_STEPS": 100}),
    Row("literal_32ch", "literal on a 32-channel VRT (tiny topology; both arms)", LITERAL,
        shared={"preset_width": 32}),
    Row("literal_crop_96", "literal; 96x96 crops (both arms)", LITERAL, shared={"CROP_SIZE": 96}),
    Row("literal_clip_3", "literal; 3-frame clips (both arms)", LITERAL, shared={"CLIP_LEN": 3}),
    Row("literal_k_32", "literal; K = 32 bins (store re-ingested; both arms)", LITERAL, shared={"K": 32}),
    Row("literal_true_flows", "literal; synth's true flows in place of SpyNet's (an oracle for a pretrained "
        "SpyNet; both arms)", LITERAL, shared={"patches": ("true_flows",)}),
    Row("fitted_spike_head_true_flows", "the fitted head with synth's true flows in place of SpyNet's (both arms)",
        FITTED, shared={"patches": ("true_flows",)}),
    # the fix and its parts
    Row("spike_head", "residual + the spike head: a luma correction conv3x3(Fs'_1) + conv3x3(voxels) + conv3x3(h) "
        "added to VRT's output, zero-initialised (ResidualTemporalCrossAttnSpikeHead)"),
    Row("fitted_spike_head", "spike head that also reads the counts (normalisation undone) and the blur, "
        "started at the least-squares map of the train split (ResidualTemporalCrossAttnFittedSpikeHead)", FITTED),
    Row("fitted_spike_head_centred", "the fitted head with counts and blur centred and standardised (training "
        "moments) instead of counts / RMS and the blur as it is", FITTED, ("centred_head_inputs",)),
    Row("fitted_spike_head_slow_taps", "the fitted head's inputs divided by 4 more (its fitted taps learn 4x "
        "slower)", FITTED, ("slow_fitted_taps",)),
    Row("fitted_spike_head_frozen_taps", "the fitted head's least-squares taps kept as fitted (not trained); "
        "its other paths and the rest of the model train", FITTED, ("frozen_fitted_taps",)),
    Row("fitted_spike_head_zero_start", "the fitted head's inputs (counts, blur) but zero-initialised like "
        "spike_head: no least-squares start", FITTED, ("no_lsq_start",)),
    Row("spike_head_into_conv_last", "the head's correction added to h before VRT's conv_last instead of to "
        "the output", patches=("head_into_conv_last",)),
    Row("spike_head_only", "spike head, no fusion at the four scales (Ff_i = Fr_i)", patches=("no_scale_fusion",)),
    Row("literal_plus_spike_head", "the spike head on top of the literal fusion", patches=("literal_fusion",)),
    Row("spike_head_no_voxels", "spike head without its voxel input", patches=("head_no_voxels",)),
    Row("spike_head_no_spike_features", "spike head without Fs'_1 (voxels and h only)",
        patches=("head_no_spike_features",)),
    Row("spike_head_no_vrt_features", "spike head without h (Fs'_1 and voxels only)",
        patches=("head_no_vrt_features",)),
    Row("spike_head_rgb", "spike head predicting an RGB correction (3 channels) instead of one luma channel",
        patches=("head_rgb",)),
    Row("spike_head_gain_4", "spike head's correction x 4 (under Adam: the head alone at 4 x LR)",
        patches=("head_gain_4",)),
    Row("spike_head_gain_16", "spike head's correction x 16 (the head alone at 16 x LR)", patches=("head_gain_16",)),
    Row("spike_head_zero_init_branch", "spike head; the encoder's residual blocks and the temporal "
        "self-attention zero-initialised (identity at init)", patches=("zero_init_branch",)),
    Row("spike_head_lr_5e-4", "spike head; LR 5e-4 instead of 1e-3 (both arms)", shared={"LR": 5e-4}),
    Row("spike_head_32ch", "spike head on a 32-channel VRT (tiny topology; both arms)",
        shared={"preset_width": 32}),
    Row("spike_head_k_32", "spike head; K = 32 bins (store re-ingested; both arms)", shared={"K": 32}),
    # what is learnable in the same steps without VRT
    Row("cnn", "reference: 4-layer CNN (32 ch, 3x3) on blur + voxels, residual on the blur, no VRT",
        reference="cnn"),
    Row("cnn_blur_only", "reference: the same CNN on the blur alone", reference="cnn_blur"),
    Row("encoder_head", "reference: SpikeEncoder3D + temporal self-attention + a 3x3 conv head on (Fs'_1, blur), "
        "no VRT", reference="encoder_head"),
]
ROW_BY_NAME = {r.name: r for r in ROWS}


# ---- patches (experiments, applied after build_model) --------------------------------------------------
class FramePositionFuse(nn.Module):
    """A residual fusion with a learned ``bias[head, t_k - t_q]`` added to its attention scores."""

    def __init__(self, fuse: nn.Module, max_frames: int = 16):
        super().__init__()
        self.inner = fuse
        self.max_frames = max_frames
        self.offset_bias = nn.Parameter(torch.zeros(fuse.attn.num_heads, 2 * max_frames - 1))

    def forward(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        f, attn = self.inner, self.inner.attn
        r = to_pixel_sequences(fr)
        n, t, c = r.shape
        w, b = attn.in_proj_weight, attn.in_proj_bias
        kv = f.ln_kv(to_pixel_sequences(fs))
        q, k, v = F.linear(f.ln_q(r), w[:c], b[:c]), F.linear(kv, w[c:2 * c], b[c:2 * c]), F.linear(kv, w[2 * c:], b[2 * c:])
        split = lambda x: x.reshape(n, t, attn.num_heads, c // attn.num_heads).transpose(1, 2)  # noqa: E731
        idx = torch.arange(t, device=fr.device)
        bias = self.offset_bias[:, idx[None, :] - idx[:, None] + self.max_frames - 1]          # [heads, T, T]
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias[None].to(q.dtype))
        x = r + attn.out_proj(o.transpose(1, 2).reshape(n, t, c))
        x = x + f.ffn(f.ln_ffn(x))
        return from_pixel_sequences(x, fr.shape)


class NoMixFuse(nn.Module):
    """Ff = Fr + out(v(LN(Fs'))) + FFN: each frame's own spike features, no attention across T."""

    def __init__(self, fuse: nn.Module):
        super().__init__()
        self.inner = fuse

    def forward(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        f, attn = self.inner, self.inner.attn
        r = to_pixel_sequences(fr)
        c = r.shape[-1]
        v = F.linear(f.ln_kv(to_pixel_sequences(fs)), attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:])
        x = r + attn.out_proj(v)
        x = x + f.ffn(f.ln_ffn(x))
        return from_pixel_sequences(x, fr.shape)


class PassThrough(nn.Module):
    """Ff = Fr: no fusion at this scale."""

    def forward(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        return fr


class GainHead(nn.Module):
    """The spike head's correction times a constant: under Adam (steps ~ LR whatever the gradient's size) the
    correction moves ``gain`` times faster, i.e. the head alone trains at ``gain`` x LR; zero at init still."""

    def __init__(self, head: nn.Module, gain: float):
        super().__init__()
        self.inner, self.gain = head, gain

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.gain * self.inner(*inputs)


def head_into_conv_last(self, blur: torch.Tensor, spike_vox: torch.Tensor | None = None) -> torch.Tensor:
    """SpikeVRT.forward with the head's inputs projected onto h (before VRT's conv_last) instead."""
    state, fr, fs = self.encode_scales(blur, spike_vox)
    fs_attended = [t(s) for t, s in zip(self.spike_tsa, fs)]
    h = self.vrt.decode_head_input(state, fuse_features(fr, fs_attended, self.fuse))
    b, t, _, height, width = blur.shape
    x = torch.cat([fs_attended[0], spike_vox, h.transpose(1, 2)], 2).reshape(b * t, -1, height, width)
    h = h + self.to_h(x).reshape(b, t, -1, height, width).transpose(1, 2)
    return self.vrt.head_output(h, state.x_lq)


def start_slow(head, coef, mean, scale, norm_mean, norm_std, factor: float = 4.0) -> None:
    """The trainer's start with the inputs divided by ``factor`` more (the fitted taps learn ``factor`` x slower
    under Adam, which moves each weight by about the learning rate whatever its scale)."""
    type(head).start_from_least_squares(head, coef, mean, np.asarray(scale) * factor, norm_mean, norm_std)


def start_zero(head, *args) -> None:
    """The trainer's start (voxel normalisation and input scales set) with every fitted weight set back to zero."""
    type(head).start_from_least_squares(head, *args)
    with torch.no_grad():
        for p in (head.from_counts.weight, head.from_blur.weight, head.from_spike_features.bias):
            p.zero_()


class TrueFlows:
    """``VRT.get_flows`` answered by the synth tree's true motion instead of SpyNet (an oracle for a SpyNet
    that knows the flows; benchmarks/spynet_true_flows.py shows one cannot be trained here in minutes).

    The Dataset registers every clip it serves (its blur's bytes -> sequence, frames, crop origin); a forward
    pass looks its input up by the same bytes, so a tensor the Dataset did not serve (a padded tile) is an
    error, never a wrong flow. Flows are ``SequencePlan.true_flow`` between the sharp instants of neighbouring
    frames, cropped like the clip, average-pooled to each of SpyNet's scales and divided by the scale.
    """

    def __init__(self, raw: Path):
        from spikeprep.synth import make_plan, read_synth_config, sequence_names

        cfg = read_synth_config(raw)
        self.plans = {name: make_plan(cfg, i) for i, (_, name) in enumerate(sequence_names(cfg))}
        self.sharp_ticks = (cfg.exposure_starts() + cfg.exposure_ticks // 2).tolist()
        self.clips: dict[bytes, tuple[str, list[int], tuple[int, int]]] = {}
        self.cache: dict[tuple[str, int, int], np.ndarray] = {}

    @staticmethod
    def key(blur: torch.Tensor) -> bytes:
        import hashlib

        return hashlib.sha1(blur.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).digest()

    def register(self, item: dict | None) -> dict | None:
        if item is not None:
            meta = item["meta"]
            self.clips[self.key(item["blur"])] = (meta["seq"], list(meta["frame_idx"]), tuple(meta["crop"]))
        return item

    def flow(self, seq: str, ref: int, supp: int) -> np.ndarray:
        if (seq, ref, supp) not in self.cache:
            self.cache[(seq, ref, supp)] = self.plans[seq].true_flow(self.sharp_ticks[ref], self.sharp_ticks[supp])
        return self.cache[(seq, ref, supp)]

    def __call__(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b, t, _, h, w = x.shape
        backward, forward = [], []
        for clip in x:
            found = self.clips.get(self.key(clip))
            if found is None:
                raise RuntimeError("true_flows: a clip the Dataset did not serve (padded or tiled?)")
            seq, frames, (y0, x0) = found
            crop = np.s_[y0:y0 + h, x0:x0 + w]
            backward.append([self.flow(seq, frames[i], frames[i + 1])[crop] for i in range(t - 1)])
            forward.append([self.flow(seq, frames[i + 1], frames[i])[crop] for i in range(t - 1)])

        def scales(per_clip):
            full = torch.from_numpy(np.stack([np.stack(c) for c in per_clip])).permute(0, 1, 4, 2, 3)
            full = full.to(x.device, x.dtype).reshape(b * (t - 1), 2, h, w)
            return [(F.avg_pool2d(full, s) / s if s > 1 else full).reshape(b, t - 1, 2, h // s, w // s)
                    for s in (1, 2, 4, 8)]

        return scales(backward), scales(forward)


def patch_model(model: nn.Module, patches: tuple[str, ...]) -> nn.Module:
    """Apply the named experiments to a freshly built model (before the optimiser sees it)."""
    for patch in patches:
        if patch == "vrt_fanin_init":
            for m in model.vrt.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=m.in_features ** -0.5)
        elif patch == "frame_position":
            model.fuse = nn.ModuleList(FramePositionFuse(f) for f in model.fuse)
        elif patch == "no_temporal_mixing":
            model.fuse = nn.ModuleList(NoMixFuse(f) for f in model.fuse)
        elif patch in ("head_no_voxels", "head_no_spike_features", "head_no_vrt_features"):
            conv = {"head_no_voxels": model.spike_head.from_voxels,
                    "head_no_spike_features": model.spike_head.from_spike_features,
                    "head_no_vrt_features": model.spike_head.from_vrt}[patch]
            for p in conv.parameters():
                p.requires_grad_(False)          # stays zero: that input never reaches the output
        elif patch == "head_rgb":
            for name in ("from_spike_features", "from_voxels", "from_vrt"):
                old = getattr(model.spike_head, name)
                conv = nn.Conv2d(old.in_channels, 3, 3, padding=1, bias=old.bias is not None)
                for p in conv.parameters():
                    nn.init.zeros_(p)
                setattr(model.spike_head, name, conv)
        elif patch.startswith("head_gain_"):
            model.spike_head = GainHead(model.spike_head, float(patch.removeprefix("head_gain_")))
        elif patch == "no_lsq_start":
            model.spike_head.start_from_least_squares = types.MethodType(start_zero, model.spike_head)
        elif patch == "slow_fitted_taps":
            model.spike_head.start_from_least_squares = types.MethodType(start_slow, model.spike_head)
        elif patch == "frozen_fitted_taps":
            for p in (*model.spike_head.from_counts.parameters(), *model.spike_head.from_blur.parameters()):
                p.requires_grad_(False)          # the least-squares map stays as fitted; the rest learns
        elif patch == "no_scale_fusion":
            model.fuse = nn.ModuleList(PassThrough() for _ in model.fuse)
        elif patch == "head_into_conv_last":
            c1 = model.vrt.feature_dims()[0]
            model.spike_head = None
            model.to_h = nn.Conv2d(c1 + model.num_bins + c1, c1, 3, padding=1)
            nn.init.zeros_(model.to_h.weight), nn.init.zeros_(model.to_h.bias)
            model.forward = types.MethodType(head_into_conv_last, model)
        elif patch == "literal_fusion":
            model.fuse = nn.ModuleList(TemporalCrossAttnFuse(f.ln_q.normalized_shape[0], f.attn.num_heads)
                                       for f in model.fuse)
        elif patch == "true_flows":
            model.vrt.get_flows = BUILT["true_flows"]
        elif patch == "zero_init_branch":
            for m in model.modules():
                if isinstance(m, ResBlock3D):
                    nn.init.zeros_(m.conv2.weight), nn.init.zeros_(m.conv2.bias)
                if isinstance(m, TemporalSelfAttentionBlock):
                    for layer in (m.attn.out_proj, m.mlp[-1]):
                        nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
        elif patch not in ("flat_lr", "centred_head_inputs"):   # these patch the trainer (see install)
            raise SystemExit(f"unknown patch {patch!r}")
    return model


# ---- one run (in its own process) ----------------------------------------------------------------------
BUILT = {}


def install(reference: str | None, patches: tuple[str, ...]):
    import model.train as train_mod
    from model.nets.integrate_vrt import build_model

    def build(cfg, use_spike=True):
        if reference is not None:
            import references

            m = {"cnn": lambda: references.SmallCNN(cfg.DATA.K),
                 "cnn_blur": lambda: references.SmallCNN(cfg.DATA.K, use_spike=False),
                 "encoder_head": lambda: references.EncoderHead(cfg.DATA.K)}[reference]()
        else:
            m = build_model(cfg, use_spike=use_spike)
            if "true_flows" in patches and "true_flows" not in BUILT:
                BUILT["true_flows"] = TrueFlows(Path(cfg.DATA.ROOT).parent / "raw")
                from spikeprep.spike_deblur_dataset import SpikeDeblurDataset

                served = SpikeDeblurDataset.__getitem__
                SpikeDeblurDataset.__getitem__ = lambda ds, i: BUILT["true_flows"].register(served(ds, i))
            spike_patches = patches if use_spike else tuple(p for p in patches if p in ("vrt_fanin_init",
                                                                                       "true_flows"))
            m = patch_model(m, spike_patches)
        BUILT["model"] = m
        return m

    train_mod.build_model = build
    if "centred_head_inputs" in patches:
        def start_centred(head, train_ds, say):
            """The fitted head's start with counts and blur centred and standardised (training moments)."""
            acc, _ = train_mod.lsq_accumulate(train_ds.root, train_ds.split)
            head.start_from_least_squares(acc.solve(), *acc.input_moments(), train_ds.norm_mean, train_ds.norm_std)

        train_mod.start_fitted_head = start_centred
    if "flat_lr" in patches:
        train_mod.lr_factor = lambda step, warmup, max_steps: min(1.0, (step + 1) / warmup) if warmup else 1.0


def _gradient_probe(model, cfg) -> dict:
    """RMS of dLoss/dFf_i and of Fr_1, Fs'_1 on the first training clip, with the trained weights."""

    from model.losses.charbonnier import CharbonnierLoss
    from spikeprep.spike_deblur_dataset import SpikeDeblurDataset

    if not hasattr(model, "fuse"):
        return {}
    item = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED)[0]
    blur, sharp, spike = item["blur"][None], item["sharp"][None], item["spike_vox"][None]
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            seen[name] = output
            if name == "ff1":
                seen["fr1"] = inputs[0]
        return hook

    handles = [m.register_forward_hook(keep(f"ff{i + 1}")) for i, m in enumerate(model.fuse)]
    handles.append(model.spike_tsa[0].register_forward_hook(keep("fsp1")))
    model.train()
    CharbonnierLoss(1e-3)(model(blur, spike), sharp).backward()
    for h in handles:
        h.remove()
    rms = lambda x: float(x.detach().pow(2).mean().sqrt())  # noqa: E731
    out = {f"grad_ff{i}": rms(seen[f"ff{i}"].grad) if seen[f"ff{i}"].grad is not None else 0.0
           for i in range(1, len(model.fuse) + 1)}
    out.update(rms_fr1=rms(seen["fr1"]), rms_fsp1=rms(seen["fsp1"]))
    return out


def run_one(args) -> int:
    from model.train import main
    from model.train_options import TrainOptions
    from schemas.config import load_config

    install(args.reference, tuple(args.patch))
    t0 = time.time()
    opts = TrainOptions(config=args.config, use_spike=not args.no_spike, exp=args.run, max_steps=args.steps,
                        val_every=args.steps, visual_every=args.steps, workers=0, perceptual=False,
                        progress=False, device=args.device, reliance=True,
                        start_over=True)      # a run without its ablation JSON (killed) is trained afresh
    main(opts)
    extra = dict(seconds=time.time() - t0)
    if not args.no_spike and args.reference is None:
        extra.update(_gradient_probe(BUILT["model"], load_config(args.config)))
    out = Path(load_config(args.config).LOG.SAVE_DIR) / "metrics" / f"ablation_{args.run}.json"
    out.write_text(json.dumps(extra, indent=2) + "\n")
    return 0


# ---- the table -----------------------------------------------------------------------------------------
def _sh(cmd: list[str], env=None) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def prepare_store(work: Path, k: int) -> Path:
    """The demo store (``make demo``'s data) at K bins, made once under ``work``."""
    from spikeprep.errors import InputError
    from spikeprep.store import read_store_info

    sp = [sys.executable, "-m", "cli.main"]
    raw, store = work / "raw", work / f"store_k{k}"
    if not (raw / "synth.json").exists():
        _sh(sp + ["synth", str(raw), "--preset", "demo", "--height", "128", "--width", "192", "--train-seqs", "4",
                  "--overwrite", "--workers", "2", "--no-progress"])
    try:
        read_store_info(store)
    except InputError:        # absent, interrupted, or of an older store version: ingest resumes or rebuilds it
        _sh(sp + ["ingest", str(raw), "--out", str(store), "--k", str(k), "--crop", "64", "--workers", "2",
                  "--log-dir", str(work / "logs"), "--no-progress"])
    return store


def write_config(work: Path, name: str, fuse: str, shared: dict) -> Path:
    """The demo config (configs/deblur/demo_tiny.yaml) with this run's changes, its store's stats and outputs."""
    from spikeprep.store import read_store_info

    raw = yaml.safe_load((REPO / "configs/deblur/demo_tiny.yaml").read_text())
    k = shared.get("K", 16)
    store = prepare_store(work, k)
    stats = read_store_info(store).stats
    raw["DATA"].update(ROOT=str(store), K=k, NORM={"MEAN": stats.mean, "STD": stats.std})
    for key in ("CROP_SIZE", "CLIP_LEN"):
        if key in shared:
            raw["DATA"][key] = shared[key]
    raw["MODEL"]["FUSE"]["TYPE"] = fuse
    raw["MODEL"]["VRT_CFG"] = "tiny"
    if "preset_width" in shared:
        c = shared["preset_width"]
        vrt_cfg = work / "configs" / f"vrt_tiny_{c}ch.yaml"
        vrt_cfg.parent.mkdir(parents=True, exist_ok=True)
        vrt_cfg.write_text(yaml.safe_dump({"preset": "tiny", "overrides": {"embed_dims": [c] * 11}}))
        raw["MODEL"].update(VRT_CFG=str(vrt_cfg), CHANNELS_PER_SCALE=[c] * 4)
    if "LR" in shared:
        raw["TRAIN"]["OPTIM"]["LR"] = shared["LR"]
    if "WARMUP_STEPS" in shared:
        raw["TRAIN"]["SCHED"]["WARMUP_STEPS"] = shared["WARMUP_STEPS"]
    raw["LOG"]["SAVE_DIR"] = str(work / "outputs")
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def base_name(row: Row) -> str:
    if not row.shared:
        return "base"
    return "base_" + "_".join(f"{k}-{v if not isinstance(v, tuple) else '+'.join(v)}"
                              for k, v in sorted(row.shared.items()))


def plan(rows: list[Row], work: Path, steps: int) -> list[tuple[str, list[str]]]:
    """(run name, command) for every run the rows need, bases once each."""
    runs: dict[str, list[str]] = {}
    me = [sys.executable, str(Path(__file__).resolve())]
    # rows that change a shared setting need their own (often slower) base arm: run them last
    for row in sorted(rows, key=lambda r: bool(r.shared)):
        shared_patches = tuple(row.shared.get("patches", ()))
        shared = {k: v for k, v in row.shared.items() if k != "patches"}
        base = base_name(row)
        if base not in runs:
            cfg = write_config(work, base, HEAD, shared)
            runs[base] = me + ["--run", base, "--config", str(cfg), "--steps", str(steps), "--no-spike"] + \
                [a for p in shared_patches for a in ("--patch", p)]
        cfg = write_config(work, row.name, row.fuse, shared)
        cmd = me + ["--run", row.name, "--config", str(cfg), "--steps", str(steps)]
        cmd += [a for p in (*shared_patches, *row.patches) for a in ("--patch", p)]
        if row.reference:
            cmd += ["--reference", row.reference]
        runs[row.name] = cmd
    return list(runs.items())


def execute(runs: list[tuple[str, list[str]]], work: Path, parallel: int) -> None:
    """Run what has no result yet, ``parallel`` processes at a time (one torch thread each)."""
    todo = [(n, c) for n, c in runs if not (work / "outputs" / "metrics" / f"ablation_{n}.json").exists()]
    active: list[tuple[str, subprocess.Popen]] = []
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    while todo or active:
        while todo and len(active) < parallel:
            name, cmd = todo.pop(0)
            print(f"[{time.strftime('%H:%M:%S')}] start {name}: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            active.append((name, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=(work / "logs" / f"{name}.log").open("w"),
                                                  stderr=subprocess.STDOUT)))
        time.sleep(5)
        for name, proc in list(active):
            if proc.poll() is not None:
                active.remove((name, proc))
                status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode}), see {work}/logs/{name}.log"
                print(f"[{time.strftime('%H:%M:%S')}] {name}: {status}", flush=True)


def table(rows: list[Row], work: Path, steps: int) -> str:
    from schemas.val_report import read_val_report

    metrics = work / "outputs" / "metrics"

    def report(name):
        p = metrics / f"val_{name}_{steps}.json"
        return read_val_report(p) if p.exists() else None

    def f(v, signed=False):
        return "-" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")

    head = ["row", "what it changes", "PSNR-Y spike", "PSNR-Y base", "spike - base", "boundary spike - base",
            "dB from the spikes", "boundary dB from the spikes", "PSNR-Y other clip", "PSNR-Y reversed",
            "RMS dL/dFf_1..4", "RMS Fr_1 / Fs'_1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s, b = report(row.name), report(base_name(row))
        extra_p = metrics / f"ablation_{row.name}.json"
        extra = json.loads(extra_p.read_text()) if extra_p.exists() else {}
        if s is None or b is None:
            lines.append(f"| {row.name} | {row.what} | not run |" + " |" * (len(head) - 3))
            continue
        rel = s.reliance
        grads = " / ".join(f"{extra[k]:.1e}" for k in sorted(extra) if k.startswith("grad_ff")) or "-"
        feats = f"{extra['rms_fr1']:.2g} / {extra['rms_fsp1']:.2g}" if "rms_fr1" in extra else "-"
        cells = [row.name, row.what, f(s.overall.psnr_y), f(b.overall.psnr_y),
                 f(s.overall.psnr_y - b.overall.psnr_y, True), f(s.boundary.psnr_y - b.boundary.psnr_y, True),
                 f(s.db_from_spikes(), True), f(s.db_from_spikes(region="boundary"), True),
                 f(rel.other_clip.overall.psnr_y if rel and rel.other_clip else None),
                 f(rel.reversed.overall.psnr_y if rel else None), grads, feats]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def floors(work: Path, steps: int) -> str:
    """The default store's non-learned floors (``spikeprep baselines``, scored on the rows' frames)."""
    from schemas.baselines import baselines_path, read_baselines_report

    store = prepare_store(work, 16)
    path = baselines_path(store, "val")
    if not path.exists():
        _sh([sys.executable, "-m", "cli.main", "baselines", str(store), "--config",
             str(write_config(work, "baselines", HEAD, {})), "--no-progress"])
    report = read_baselines_report(path)
    cells = []
    for name in ("blur", "lsq"):
        row = report.row(name)
        cells.append(f"{name} {row.overall.psnr_y:.2f} (boundary {row.boundary.psnr_y:.2f})")
    return (f"Floors on the same {report.frames} val frames (PSNR-Y, `spikeprep baselines`): "
            + "; ".join(cells) + ". Any row alone: `.venv/bin/python benchmarks/spike_ablation.py --rows ROW "
            f"--steps {steps}` (finished runs under `--out` are reused).\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="*", default=None, help="row names (default: all; --list shows them)")
    ap.add_argument("--steps", type=int, default=150, help="steps per run (make demo's)")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "ablation", help="work folder (kept; reruns reuse "
                    "finished runs)")
    ap.add_argument("--parallel", type=int, default=2, help="runs at once (one torch thread each)")
    ap.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    ap.add_argument("--list", action="store_true")
    # one run, in this process (what the table's runs execute)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-spike", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--patch", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--reference", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        return run_one(args)
    if args.list:
        for r in ROWS:
            print(f"{r.name:32s} {r.what}")
        return 0
    rows = ROWS if not args.rows else [ROW_BY_NAME[n] for n in args.rows]
    work = args.out.resolve()
    t0 = time.time()
    execute(plan(rows, work, args.steps), work, args.parallel)
    text = table(rows, work, args.steps) + "\n" + floors(work, args.steps)
    print(text)
    print(f"{len(rows)} rows, {args.steps} steps each, {(time.time() - t0) / 60:.1f} min")
    if args.results:
        names = " ".join(r.name for r in rows)
        body = "\n".join([
            "## Spike ablation (issue 15)", "",
            f"Command: `.venv/bin/python benchmarks/spike_ablation.py --steps {args.steps} --rows {names} --results` "
            f"({cpu_description()}, torch on the CPU, {time.strftime('%Y-%m-%d')}). Store: `make demo`'s (4 + 1 "
            f"sequences x 12 frames at 128x192, K = 16; 12 val frames); configs/deblur/demo_tiny.yaml: tiny VRT, "
            f"2-frame 64x64 crops, batch 1, AdamW 1e-3, 20 warm-up steps then cosine, Charbonnier (no VGG weights "
            f"here), seed 123; {args.steps} "
            f"steps per run; PSNR-Y on the val split at full size.", "", text])
        write_section(REPO / "benchmarks" / "RESULTS.md", "## Spike ablation (issue 15)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
