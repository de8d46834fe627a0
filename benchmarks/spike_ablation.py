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

Every row is configuration: a ``MODEL.FUSE.TYPE`` (the registered fusion types and heads,
``schemas/fuse_types.py``; the ablation's own variants are registered there too), config overrides both arms
share, or a reference model trained in the spike arm's place (``model.train.main``'s ``model_builder``).
A row with ``init_from_base`` warm-starts the spike arm from a plain-VRT run (``train --init-from`` with
``--freeze-vrt-steps``, issue 29): its base arm trains 2 x steps, its checkpoint at ``steps`` is kept, the
spike arm starts its VRT backbone there and trains ``steps`` more (the backbone frozen for the first
``WARM_FREEZE_FRACTION`` of them). The row compares the warm spike arm with the base it started from trained
to the same 2 x steps (one run: stopped at ``steps``, then resumed, which is bit for bit an uninterrupted run).
Every SpikeVRT row is built by the product's ``build_model``; nothing here patches the product. Rows of the
earlier table that patched it at run time are gone from the script; RESULTS.md says where their numbers
came from.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description, write_section  # noqa: E402

HEAD = "ResidualTemporalCrossAttnSpikeHead"
FITTED = "ResidualTemporalCrossAttnFittedSpikeHead"
RESIDUAL = "ResidualTemporalCrossAttn"
LITERAL = "TemporalCrossAttn"
# config overrides a row may give (both arms): DATA.* keys, TRAIN.OPTIM.LR, TRAIN.SCHED.WARMUP_STEPS, and
# preset_width (a tiny-topology VRT config with that many channels)
SHARED_KEYS = ("CROP_SIZE", "CLIP_LEN", "K", "LR", "WARMUP_STEPS", "preset_width")
# config overrides of the spike arm alone (its base arm is the row's shared one): MODEL.SPIKE_BRANCH,
# DATA.TOTALS_ONLY, TRAIN.OPTIM.FITTED_HEAD_LR_SCALE, TRAIN.AUX_SPIKE_RECON_WEIGHT
SPIKE_KEYS = ("SPIKE_BRANCH", "TOTALS_ONLY", "FITTED_HEAD_LR_SCALE", "AUX_SPIKE_RECON_WEIGHT")
# an init_from_base row's spike arm keeps its VRT backbone fixed for this fraction of its steps (fusion and
# head alone first, then everything)
WARM_FREEZE_FRACTION = 1 / 3
GATED = "ResidualTemporalCrossAttnGatedSpikeHead"
MOTION_GATED = "ResidualTemporalCrossAttnMotionGatedSpikeHead"
REFERENCES = ("cnn", "cnn_blur", "encoder_head")


@dataclass(frozen=True)
class Row:
    """One ablation row: the spike arm's MODEL.FUSE.TYPE (or a reference model) and config overrides."""

    name: str
    what: str
    fuse: str = HEAD
    shared: dict = field(default_factory=dict)  # config overrides both arms get (own base arm)
    reference: str | None = None             # benchmarks/references.py model instead of SpikeVRT
    spike: dict = field(default_factory=dict)   # config overrides of the spike arm alone (SPIKE_KEYS)
    init_from_base: bool = False             # warm start from the base arm's VRT (module docstring)


ROWS = [
    # the literal fusion and the suspects for why it ignores its spikes
    Row("literal", "original section 10.2: Ff = LN(Fr) + MHA + FFN (MODEL.FUSE.TYPE TemporalCrossAttn)", LITERAL),
    Row("residual", "residual on Fr, zero-initialised output projections: plain VRT at step 0 "
        "(ResidualTemporalCrossAttn)", RESIDUAL),
    Row("literal_lr_5e-4", "literal; LR 5e-4 instead of 1e-3 (both arms)", LITERAL, shared={"LR": 5e-4}),
    Row("literal_warmup_100", "literal; 100 warm-up steps instead of 20 (both arms)", LITERAL,
        shared={"WARMUP_STEPS": 100}),
    Row("literal_32ch", "literal on a 32-channel VRT (tiny topology; both arms)", LITERAL,
        shared={"preset_width": 32}),
    Row("literal_crop_96", "literal; 96x96 crops (both arms)", LITERAL, shared={"CROP_SIZE": 96}),
    Row("literal_clip_3", "literal; 3-frame clips (both arms)", LITERAL, shared={"CLIP_LEN": 3}),
    Row("literal_k_32", "literal; K = 32 bins (store re-ingested; both arms)", LITERAL, shared={"K": 32}),
    # the fix and its parts
    Row("spike_head", "residual + the spike head: a luma correction conv3x3(Fs'_1) + conv3x3(voxels) + conv3x3(h) "
        "added to VRT's output, zero-initialised (ResidualTemporalCrossAttnSpikeHead)"),
    Row("fitted_spike_head", "spike head that also reads the counts (normalisation undone) and the blur, "
        "started at the least-squares map of the train split (ResidualTemporalCrossAttnFittedSpikeHead)", FITTED),
    Row("spike_head_only", "spike head, no fusion at the four scales (Ff_i = Fr_i; SpikeHeadOnly)",
        "SpikeHeadOnly"),
    Row("literal_plus_spike_head", "the spike head on top of the literal fusion (TemporalCrossAttnSpikeHead)",
        "TemporalCrossAttnSpikeHead"),
    Row("spike_head_lr_5e-4", "spike head; LR 5e-4 instead of 1e-3 (both arms)", shared={"LR": 5e-4}),
    Row("spike_head_32ch", "spike head on a 32-channel VRT (tiny topology; both arms)",
        shared={"preset_width": 32}),
    Row("spike_head_k_32", "spike head; K = 32 bins (store re-ingested; both arms)", shared={"K": 32}),
    # issue 29: the gate, and what the spikes' timing and the original's branch add (trained, not perturbed)
    Row("gated", "the fitted head behind a per-pixel gate from the correction's local energy, h and Fs'_1, started "
        "at the gated least-squares map over the counts' 3x3 neighbourhood (ResidualTemporalCrossAttnGatedSpikeHead)",
        GATED),
    Row("gated_energy_only", "gated, the gate from the correction's energy alone (no convolutions of h and Fs'_1; "
        "ResidualTemporalCrossAttnEnergyGatedSpikeHead)", "ResidualTemporalCrossAttnEnergyGatedSpikeHead"),
    Row("gated_slow_fit", "gated; the parameters its start sets learn at 0.05 x LR (TRAIN.OPTIM.FITTED_HEAD_LR_SCALE)",
        GATED, spike={"FITTED_HEAD_LR_SCALE": 0.05}),
    Row("motion_gated", "gated, and the gate scales VRT's residual too: blur + gate * (conv_last(h) + d) "
        "(ResidualTemporalCrossAttnMotionGatedSpikeHead)", MOTION_GATED),
    Row("motion_gated_no_branch", "motion_gated without the original's spike branch (MODEL.SPIKE_BRANCH false: no "
        "SpikeEncoder3D, TSA or fusion; the head reads zeros for Fs'_1)", MOTION_GATED, spike={"SPIKE_BRANCH": False}),
    Row("motion_gated_totals_only", "motion_gated trained and tested on totals-only voxels (DATA.TOTALS_ONLY: each "
        "pixel's K bins replaced by their mean, the spike total kept, its timing gone)", MOTION_GATED,
        spike={"TOTALS_ONLY": True}),
    Row("gated_no_branch", "gated without the original's spike branch (MODEL.SPIKE_BRANCH false)", GATED,
        spike={"SPIKE_BRANCH": False}),
    # issue 29: making the original's branch carry weight
    Row("motion_gated_aux_recon", "motion_gated; the spike branch also learns the sharp luma from Fs'_1 (conv3x3), "
        "0.1 x its Charbonnier added to the loss (TRAIN.AUX_SPIKE_RECON_WEIGHT, SpkDeblurNet's target)", MOTION_GATED,
        spike={"AUX_SPIKE_RECON_WEIGHT": 0.1}),
    Row("motion_gated_warm", "motion_gated warm-started from the base arm's VRT at `steps` (train --init-from), the "
        "backbone frozen for the first third of its `steps` steps; vs that base trained on to 2 x steps",
        MOTION_GATED, init_from_base=True),
    # what is learnable in the same steps without VRT
    Row("cnn", "reference: 4-layer CNN (32 ch, 3x3) on blur + voxels, residual on the blur, no VRT",
        reference="cnn"),
    Row("cnn_blur_only", "reference: the same CNN on the blur alone", reference="cnn_blur"),
    Row("encoder_head", "reference: SpikeEncoder3D + temporal self-attention + a 3x3 conv head on (Fs'_1, blur), "
        "no VRT", reference="encoder_head"),
]
ROW_BY_NAME = {r.name: r for r in ROWS}


# ---- one run (in its own process) ----------------------------------------------------------------------
def model_builder(reference: str | None, built: list):
    """``model.train.main``'s ``model_builder`` for a row: the product's ``build_model`` (or a reference model
    of benchmarks/references.py), keeping the model it built in ``built`` for the gradient probe."""
    from model.nets.integrate_vrt import build_model

    def build(cfg, use_spike=True):
        if reference is None:
            m = build_model(cfg, use_spike=use_spike)
        else:
            import references

            m = {"cnn": lambda: references.SmallCNN(cfg.DATA.K),
                 "cnn_blur": lambda: references.SmallCNN(cfg.DATA.K, use_spike=False),
                 "encoder_head": lambda: references.EncoderHead(cfg.DATA.K)}[reference]()
        built.append(m)
        return m

    return build


def gradient_probe(model, cfg) -> dict:
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

    built: list = []
    t0 = time.time()
    opts = TrainOptions(config=args.config, use_spike=not args.no_spike, exp=args.run, max_steps=args.steps,
                        val_every=args.steps, visual_every=args.steps, workers=0, perceptual=False,
                        progress=False, device=args.device, reliance=True, init_from=args.init_from,
                        freeze_vrt_steps=args.freeze_vrt_steps,
                        start_over=True)      # a run without its ablation JSON (killed) is trained afresh
    if args.keep_at:                          # a warm start's source: stop, keep that checkpoint, go on
        if main(replace(opts, stop_at=args.keep_at), model_builder=model_builder(args.reference, built)).interrupted:
            return 130
        ckpts = Path(load_config(args.config).LOG.SAVE_DIR) / "ckpts" / args.run
        shutil.copyfile(ckpts / "last.pth", kept_checkpoint(ckpts.parents[1], args.run, args.keep_at))
        opts = replace(opts, resume=True, start_over=False)
    if main(opts, model_builder=model_builder(args.reference, built)).interrupted:
        return 130                            # no ablation JSON: the table's next run trains it afresh
    extra = dict(seconds=time.time() - t0)
    if not args.no_spike and args.reference is None:
        extra.update(gradient_probe(built[-1], load_config(args.config)))
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


def row_config(fuse: str, shared: dict, *, root: Path, mean: float, std: float, work: Path,
               spike: dict | None = None) -> dict:
    """The demo config (configs/deblur/demo_tiny.yaml) as a mapping, with MODEL.FUSE.TYPE ``fuse``, the config
    overrides ``shared`` and ``spike``, the store ``root`` and its stats; a ``preset_width`` VRT config goes
    under ``work``."""
    spike = spike or {}
    unknown = sorted(set(shared) - set(SHARED_KEYS)) + sorted(set(spike) - set(SPIKE_KEYS))
    if unknown:
        raise ValueError(f"config overrides {unknown} are not among {SHARED_KEYS} (both arms) or {SPIKE_KEYS} "
                         "(the spike arm)")
    raw = yaml.safe_load((REPO / "configs/deblur/demo_tiny.yaml").read_text())
    raw["DATA"].update(ROOT=str(root), K=shared.get("K", 16), NORM={"MEAN": mean, "STD": std})
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
    if "SPIKE_BRANCH" in spike:
        raw["MODEL"]["SPIKE_BRANCH"] = spike["SPIKE_BRANCH"]
    if "TOTALS_ONLY" in spike:
        raw["DATA"]["TOTALS_ONLY"] = spike["TOTALS_ONLY"]
    if "FITTED_HEAD_LR_SCALE" in spike:
        raw["TRAIN"]["OPTIM"]["FITTED_HEAD_LR_SCALE"] = spike["FITTED_HEAD_LR_SCALE"]
    if "AUX_SPIKE_RECON_WEIGHT" in spike:
        raw["TRAIN"]["AUX_SPIKE_RECON_WEIGHT"] = spike["AUX_SPIKE_RECON_WEIGHT"]
    raw["LOG"]["SAVE_DIR"] = str(work / "outputs")
    return raw


def write_config(work: Path, name: str, fuse: str, shared: dict, spike: dict | None = None) -> Path:
    """``row_config`` on its store (made first at the row's K) as ``work/configs/{name}.yaml``."""
    from spikeprep.store import read_store_info

    store = prepare_store(work, shared.get("K", 16))
    stats = read_store_info(store).stats
    raw = row_config(fuse, shared, root=store, mean=stats.mean, std=stats.std, work=work, spike=spike)
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def base_name(row: Row) -> str:
    """The row's base arm: one per set of shared overrides; a warm-started row's base trains 2 x steps."""
    name = "base" if not row.shared else "base_" + "_".join(
        f"{k}-{v if not isinstance(v, tuple) else '+'.join(v)}" for k, v in sorted(row.shared.items()))
    return name + "_x2" if row.init_from_base else name


def base_steps(row: Row, steps: int) -> int:
    """The steps of the row's base arm (what the table reads its report at)."""
    return 2 * steps if row.init_from_base else steps


def kept_checkpoint(outputs: Path, run: str, step: int) -> Path:
    """Where a warm start's source run keeps its checkpoint at ``step`` (``--keep-at``)."""
    return outputs / "ckpts" / run / f"step_{step}.pth"


def row_runs(row: Row, steps: int, work: Path, config_for) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(run name, command, runs it needs first) of the row's base arm and its spike arm;
    ``config_for(name, fuse, shared, spike)`` writes a run's config and returns its path."""
    me = [sys.executable, str(Path(__file__).resolve())]
    base = base_name(row)
    base_cmd = me + ["--run", base, "--config", str(config_for(base, HEAD, row.shared, None)),
                     "--steps", str(base_steps(row, steps)), "--no-spike"]
    cmd = me + ["--run", row.name, "--config", str(config_for(row.name, row.fuse, row.shared, row.spike)),
                "--steps", str(steps)]
    needs: tuple[str, ...] = ()
    if row.init_from_base:
        base_cmd += ["--keep-at", str(steps)]
        cmd += ["--init-from", str(kept_checkpoint(work / "outputs", base, steps)),
                "--freeze-vrt-steps", str(int(steps * WARM_FREEZE_FRACTION))]
        needs = (base,)
    if row.reference:
        cmd += ["--reference", row.reference]
    return [(base, base_cmd, ()), (row.name, cmd, needs)]


def plan(rows: list[Row], work: Path, steps: int) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(run name, command, runs it needs first) for every run the rows need, bases once each."""
    runs: dict[str, tuple[str, list[str], tuple[str, ...]]] = {}
    config_for = lambda name, fuse, shared, spike: write_config(work, name, fuse, shared, spike)  # noqa: E731
    # rows that change a shared setting need their own (often slower) base arm: run them last
    for row in sorted(rows, key=lambda r: bool(r.shared)):
        for name, cmd, needs in row_runs(row, steps, work, config_for):
            runs.setdefault(name, (name, cmd, needs))
    return list(runs.values())


def execute(runs: list[tuple[str, list[str], tuple[str, ...]]], work: Path, parallel: int) -> None:
    """Run what has no result yet, ``parallel`` processes at a time (one torch thread each); a run that needs
    another waits for its result (and is skipped, said, if that run failed)."""
    done = lambda n: (work / "outputs" / "metrics" / f"ablation_{n}.json").exists()  # noqa: E731
    todo = [(n, c, needs) for n, c, needs in runs if not done(n)]
    active: list[tuple[str, subprocess.Popen]] = []
    failed: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    while todo or active:
        for entry in [e for e in todo if failed & set(e[2])]:
            todo.remove(entry)
            failed.add(entry[0])
            print(f"[{time.strftime('%H:%M:%S')}] {entry[0]}: skipped, {sorted(failed & set(entry[2]))} failed",
                  flush=True)
        while len(active) < parallel:
            ready = next((e for e in todo if all(done(n) for n in e[2])), None)
            if ready is None:
                break
            todo.remove(ready)
            name, cmd, _ = ready
            print(f"[{time.strftime('%H:%M:%S')}] start {name}: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            active.append((name, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=(work / "logs" / f"{name}.log").open("w"),
                                                  stderr=subprocess.STDOUT)))
        if todo and not active:          # what is left needs runs that ended without a result
            for name, _, needs in todo:
                print(f"[{time.strftime('%H:%M:%S')}] {name}: skipped, {list(needs)} left no result", flush=True)
            return
        time.sleep(5)
        for name, proc in list(active):
            if proc.poll() is not None:
                active.remove((name, proc))
                status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode}), see {work}/logs/{name}.log"
                if proc.returncode != 0:
                    failed.add(name)
                print(f"[{time.strftime('%H:%M:%S')}] {name}: {status}", flush=True)


def table(rows: list[Row], work: Path, steps: int) -> str:
    from schemas.val_report import read_val_report

    metrics = work / "outputs" / "metrics"

    def report(name, at=steps):
        p = metrics / f"val_{name}_{at}.json"
        return read_val_report(p) if p.exists() else None

    def f(v, signed=False):
        return "-" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")

    def f4(v):
        return "-" if v is None else f"{v:.4f}"

    head = ["row", "what it changes", "PSNR-Y spike", "PSNR-Y base", "spike - base", "boundary spike - base",
            "SSIM spike", "SSIM base", "SSIM-Y spike", "static PSNR-Y spike", "static PSNR-Y base",
            "count-zero sensitivity", "PSNR-Y other clip", "PSNR-Y reversed", "RMS dL/dFf_1..4", "RMS Fr_1 / Fs'_1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s, b = report(row.name), report(base_name(row), base_steps(row, steps))
        extra_p = metrics / f"ablation_{row.name}.json"
        extra = json.loads(extra_p.read_text()) if extra_p.exists() else {}
        if s is None or b is None:
            lines.append(f"| {row.name} | {row.what} | not run |" + " |" * (len(head) - 3))
            continue
        rel = s.reliance
        grads = " / ".join(f"{extra[k]:.1e}" for k in sorted(extra) if k.startswith("grad_ff")) or "-"
        feats = f"{extra['rms_fr1']:.2g} / {extra['rms_fsp1']:.2g}" if "rms_fr1" in extra else "-"
        static = lambda r: r.static.psnr_y if r.static else None  # noqa: E731
        cells = [row.name, row.what, f(s.overall.psnr_y), f(b.overall.psnr_y),
                 f(s.overall.psnr_y - b.overall.psnr_y, True), f(s.boundary.psnr_y - b.boundary.psnr_y, True),
                 f4(s.overall.ssim), f4(b.overall.ssim), f4(s.overall.ssim_y), f(static(s)), f(static(b)),
                 f(s.db_from_spikes(), True),
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
    ap.add_argument("--reference", choices=REFERENCES, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--keep-at", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--init-from", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--freeze-vrt-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        return run_one(args)
    if args.list:
        for r in ROWS:
            print(f"{r.name:32s} {r.what}")
        return 0
    unknown = [n for n in args.rows or () if n not in ROW_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; --list shows them (rows of the earlier table that patched the "
                         "product are in benchmarks/RESULTS.md only)")
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
