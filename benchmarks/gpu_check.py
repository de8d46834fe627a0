"""GPU check: both arms at the official preset, full-size training steps with AMP, and 720p tiled inference.

    python benchmarks/gpu_check.py                  # CUDA: official preset, 5x256x256, K=32, fp16 AMP
    python benchmarks/gpu_check.py --preset tiny --size 5x64x64 --infer-size 2x96x128 --device cpu \\
        --max-batch 2 --steps 1 --warmup 0 --amp off   # a smoke run of the same code on CPU (fp16 autocast
                                                       # on the CPU: 58 s a tiny step instead of 3 s)

One command, one table, a time budget (``--budget-s``, default 300 s) that it keeps by skipping what no
longer fits; every skip is printed. Sections, in order:

1. Deformable convolution on this device: torchvision's op vs the sampling formulation
   (``model/nets/deform_conv.py``), value and gradient agreement on random inputs, and a VRT training step
   (spike-free arm, batch 1) with each; the faster one is used below and named in the table.
2. Training steps per arm: AdamW step on Charbonnier loss of ``SpikeVRT`` under autocast + GradScaler
   (``--amp fp16``; ``bf16`` runs without a scaler), random inputs and weights (timing and memory do not
   depend on them). Batch 1, 2, 4, ... until out of memory or ``--max-batch``; where even batch 1 does
   not fit, gradient checkpointing of every TMSA branch is switched on (as VRT's own training does) and
   the doubling goes on from there. Rows: steps/s, clips/s, peak ``torch.cuda.max_memory_allocated``.
3. Tiled inference on one ``--infer-size`` clip (default 12x720x1280) per arm, tile (12, 256, 256),
   overlap (2, 20, 20), autocast: seconds per frame and peak memory.

First, the compact hand-over on this device: ``lookup_upsample`` of uint8 and uint16 counts (scale 2) and of
uint8 frames must give exactly the Dataset's float32 items (``normalise_upsample`` and the division by 255 on
the CPU); the trainer converts every training batch this way.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from model.nets.deform_conv import deform_conv2d  # noqa: E402
from model.nets.integrate_vrt import SpikeVRT, tiled_inference  # noqa: E402
from model.nets.vrt import VRT_PRESETS  # noqa: E402
from model.losses.charbonnier import CharbonnierLoss  # noqa: E402
from model.train import new_optimizer  # noqa: E402
from model.nets.vrt import TMSA  # noqa: E402
from spikeprep.spike_deblur_dataset import RGB_LUT, lookup_upsample, norm_lut, normalise_upsample  # noqa: E402


def _dims(size: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in size.split("x"))
    return t, h, w


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return None


def _catch_oom(fn, *args):
    """``fn(*args)``, or None when the device ran out of memory (the failed call's tensors are freed)."""
    try:
        return fn(*args)
    except RuntimeError as err:
        # cuDNN's attention reports a failed workspace allocation as a failed graph execution.
        if not (isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
                or "mha_graph.execute" in str(err)):
            raise
        print(f"# out of memory: {str(err).splitlines()[0][:160]}", flush=True)
    # Outside the except block: the traceback, which holds the failed call's tensors, is gone.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return None


class Budget:
    """A wall-clock deadline ``seconds`` from now."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.end - time.perf_counter()


def build_arm(preset: str, use_spike: bool, bins: int, device: torch.device, deform: str) -> SpikeVRT:
    """One arm of the ``preset`` VRT (seed 0, deformable conv ``deform``) with K = ``bins``, on ``device``."""
    torch.manual_seed(0)
    vrt = VRT_PRESETS[preset](deform_impl=deform)
    return SpikeVRT(vrt, num_bins=bins, channels_per_scale=vrt.feature_dims(), use_spike=use_spike).to(device)


def set_checkpointing(model: SpikeVRT, on: bool) -> None:
    """Gradient checkpointing of every TMSA branch (memory only; outputs unchanged)."""
    for m in model.modules():
        if isinstance(m, TMSA):
            m.use_checkpoint_attn = on
            m.use_checkpoint_ffn = on


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for --amp: ``fp16``, ``bf16`` or ``off`` (disabled)."""
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


# ---------------------------------------------------------------------------------------------- deform
def handover_agreement(device: torch.device, bins: int) -> dict:
    """True per case where the compact hand-over made on ``device`` equals the default items (CPU, numpy)."""
    import numpy as np

    rng = np.random.default_rng(0)
    result = {}
    for dtype, high in (("uint8", 256), ("uint16", 1000)):
        counts = rng.integers(0, high, size=(2, 3, bins, 24, 40)).astype(dtype)
        lut = norm_lut(0.3, 0.7, dtype)
        want = np.empty((2, 3, bins, 48, 80), np.float32)
        for b in range(2):
            for t in range(3):
                normalise_upsample(counts[b, t], lut, (2, 2), out=want[b, t])
        got = lookup_upsample(torch.from_numpy(counts).to(device), torch.from_numpy(lut).to(device), (2, 2)).cpu()
        result[f"counts {dtype}, scale 2"] = torch.equal(got, torch.from_numpy(want))
    frames = rng.integers(0, 256, size=(2, 3, 3, 48, 80)).astype(np.uint8)
    got = lookup_upsample(torch.from_numpy(frames).to(device), torch.from_numpy(RGB_LUT).to(device), (1, 1)).cpu()
    result["frames uint8"] = torch.equal(got, torch.from_numpy(frames.astype(np.float32) / np.float32(255.0)))
    return result


def deform_agreement(device: torch.device) -> dict:
    """Max relative difference of output and the five gradients, sampling vs torchvision, fp32."""
    g = torch.Generator().manual_seed(0)
    b, cin, cout, h, w, groups = 2, 16, 8, 24, 20, 4
    args = [torch.randn(b, cin, h, w, generator=g),
            torch.randn(b, 2 * groups * 9, h, w, generator=g) * 4,    # offsets well outside the image too
            torch.rand(b, groups * 9, h, w, generator=g),
            torch.randn(cout, cin, 3, 3, generator=g) * 0.1,
            torch.randn(cout, generator=g)]
    grads = {}
    outs = {}
    for impl in ("torchvision", "sampling"):
        ts = [a.to(device).clone().requires_grad_(True) for a in args]
        out = deform_conv2d(ts[0], ts[1], ts[3], ts[4], padding=(1, 1), mask=ts[2], impl=impl)
        out.backward(torch.ones_like(out))
        outs[impl] = out.detach()
        grads[impl] = [t.grad for t in ts]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    worst_grad = max(rel(a, b) for a, b in zip(grads["sampling"], grads["torchvision"]))
    return dict(out=rel(outs["sampling"], outs["torchvision"]), grad=worst_grad)


# ---------------------------------------------------------------------------------------------- training
def train_steps(model: SpikeVRT, batch: int, size: str, bins: int, steps: int, warmup: int,
                device: torch.device, amp: str) -> dict:
    """Time AdamW training steps (Charbonnier loss, random data) of ``model`` at batch ``batch``.

    Returns ``step_s`` (mean seconds per step after ``warmup``) and ``peak_gib`` (peak device memory). The
    optimiser is the trainer's (``model.train.new_optimizer``); the step is timed bare (no ``TrainState``, no
    data loader), so it can also run under bf16, which the trainer does not offer.
    """
    t, h, w = _dims(size)
    gen = torch.Generator(device=device).manual_seed(batch)
    blur = torch.rand(batch, t, 3, h, w, device=device, generator=gen)
    sharp = torch.rand(batch, t, 3, h, w, device=device, generator=gen)
    spike = torch.randn(batch, t, bins, h, w, device=device, generator=gen) if model.use_spike else None
    opt = new_optimizer(model, lr=1e-4)          # the trainer's AdamW settings, at a small LR (random data)
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))
    loss_fn = CharbonnierLoss()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(blur, spike).float(), sharp)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    _reset_peak(device)
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    return dict(step_s=dt, peak_gib=_peak_gib(device))


def train_rows(args, arm: str, deform: str, device: torch.device, budget: Budget, share: float) -> list[dict]:
    """Batch doubling for one arm until OOM, --max-batch or the arm's share of the budget."""
    arm_end = time.perf_counter() + share
    model = build_arm(args.preset, arm == "spike", args.bins, device, deform)
    rows, checkpointing, batch, last_step = [], False, 1, 0.0
    while batch <= args.max_batch:
        # Skip a batch whose estimated time (twice the last, for warm-up + steps) no longer fits.
        estimate = last_step * 2 * (args.steps + args.warmup)
        if min(arm_end - time.perf_counter(), budget.left()) < estimate:
            rows.append(dict(arm=arm, batch=batch, ckpt=checkpointing, note="skipped (time budget)"))
            break
        set_checkpointing(model, checkpointing)
        r = _catch_oom(train_steps, model, batch, args.size, args.bins, args.steps, args.warmup, device, args.amp)
        if r is None:
            model.zero_grad(set_to_none=True)
            _reset_peak(device)
            if not checkpointing:
                rows.append(dict(arm=arm, batch=batch, ckpt=False, note="out of memory"))
                checkpointing = True               # same batch again, checkpointed
                continue
            rows.append(dict(arm=arm, batch=batch, ckpt=True, note="out of memory"))
            break
        last_step = r["step_s"]
        rows.append(dict(arm=arm, batch=batch, ckpt=checkpointing, **r))
        print(f"# {arm} batch {batch} ckpt={checkpointing}: {r['step_s']:.3f} s/step, "
              f"peak {r['peak_gib']} GiB", flush=True)
        batch *= 2
    n_params = sum(p.numel() for p in model.parameters())
    for r in rows:
        r["params"] = n_params
    del model
    _reset_peak(device)
    return rows


# ---------------------------------------------------------------------------------------------- inference
def infer_row(args, arm: str, deform: str, device: torch.device) -> dict:
    """Time ``tiled_inference`` of one arm on a random --infer-size clip; seconds per frame and peak memory."""
    t, h, w = _dims(args.infer_size)
    model = build_arm(args.preset, arm == "spike", args.bins, device, deform).eval()
    gen = torch.Generator().manual_seed(1)
    blur = torch.rand(1, t, 3, h, w, generator=gen)
    spike = torch.randn(1, t, args.bins, h, w, generator=gen) if arm == "spike" else None
    tile = (min(12, t), min(256, h), min(256, w))
    _reset_peak(device)
    with torch.no_grad(), autocast(device, args.amp):
        # Inputs stay on the host and tiles move to the device, as `spikeprep test` does for long clips.
        _sync(device)
        t0 = time.perf_counter()
        out = tiled_inference(model.to(device), blur.to(device), None if spike is None else spike.to(device),
                              tile=tile, overlap=(2, 20, 20), out_device="cpu")
        _sync(device)
        dt = time.perf_counter() - t0
    assert out.shape == blur.shape and torch.isfinite(out).all()
    del model
    row = dict(arm=arm, size=args.infer_size, tile="x".join(map(str, tile)), s_per_frame=dt / t,
               peak_gib=_peak_gib(device))
    _reset_peak(device)
    return row


# ---------------------------------------------------------------------------------------------- report
def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def report(env: str, deform_rows: list[dict], agree: dict | None, train: list[dict], infer: list[dict],
           args, handover: dict | None = None) -> str:
    """The markdown report: deformable-conv agreement and timings, the training and inference tables."""
    out = [f"# {env}", ""]
    if handover is not None:
        out.append("Compact hand-over on this device equals the Dataset's float32 items: "
                   + ", ".join(f"{case} {'yes' if same else 'NO'}" for case, same in handover.items()))
        out.append("")
    if agree is not None:
        out.append(f"Deformable conv, sampling vs torchvision (fp32, offsets beyond the image, 4 groups): "
                   f"output rel. diff {agree['out']:.2e}, worst gradient rel. diff {agree['grad']:.2e}")
        out.append("")
    if deform_rows:
        out += ["| deformable conv | VRT training step, spike-free arm, batch 1 (s) |", "|---|---:|"]
        out += [f"| {r['impl']} | {r.get('note') or _fmt(r.get('step_s'), '.3f')}"
                f"{' (checkpointed)' if r.get('note_ckpt') else ''} |" for r in deform_rows]
        out.append("")
    out += [f"Training: preset {args.preset}, clip {args.size}, K={args.bins}, AMP {args.amp}, AdamW, "
            f"Charbonnier loss, {args.steps} timed steps after {args.warmup} warm-up",
            "",
            "| arm | params | batch | checkpointing | s/step | steps/s | clips/s | peak memory (GiB) |",
            "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in train:
        if "note" in r:
            out.append(f"| {r['arm']} | {r['params']:,} | {r['batch']} | {r['ckpt']} | {r['note']} | | | |")
        else:
            out.append(f"| {r['arm']} | {r['params']:,} | {r['batch']} | {r['ckpt']} | {r['step_s']:.3f} | "
                       f"{1 / r['step_s']:.2f} | {r['batch'] / r['step_s']:.2f} | {_fmt(r['peak_gib'], '.1f')} |")
    ok = {a: [r for r in train if r["arm"] == a and "step_s" in r] for a in ("base", "spike")}
    if ok["base"] and ok["spike"]:
        b1 = {a: min(ok[a], key=lambda r: r["batch"]) for a in ok}
        if b1["base"]["batch"] == b1["spike"]["batch"]:
            out.append("")
            out.append(f"Spike-arm / spike-free-arm step time at batch {b1['base']['batch']}: "
                       f"{b1['spike']['step_s'] / b1['base']['step_s']:.2f}x")
    out += ["", f"Tiled inference: clip {args.infer_size}, overlap 2x20x20, AMP {args.amp}", "",
            "| arm | tile | s/frame | peak memory (GiB) |", "|---|---|---:|---:|"]
    for r in infer:
        if "note" in r:
            out.append(f"| {r['arm']} | | {r['note']} | |")
        else:
            out.append(f"| {r['arm']} | {r['tile']} | {r['s_per_frame']:.3f} | {_fmt(r['peak_gib'], '.1f')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Deformable-conv check, batch doubling per arm, tiled inference (within --budget-s); print the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="deblur", choices=sorted(VRT_PRESETS))
    ap.add_argument("--size", default="5x256x256", help="training clip TxHxW")
    ap.add_argument("--infer-size", default="12x720x1280", help="inference clip TxHxW")
    ap.add_argument("--bins", type=int, default=32, help="K, spike voxel bins")
    ap.add_argument("--amp", default="fp16", choices=["fp16", "bf16", "off"])
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per row")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--deform", default="fastest", choices=["fastest", "sampling", "torchvision"])
    ap.add_argument("--budget-s", type=float, default=300.0, help="whole-run time budget (seconds)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
        env = f"{name} ({total:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    else:
        env = f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"
    print(f"# {env}", flush=True)
    handover = handover_agreement(device, args.bins)
    print(f"# compact hand-over agreement: {handover}", flush=True)

    # Agreement in true float32: TF32 matmuls (on below, as in training) would add ~1e-4 of their own.
    torch.backends.cuda.matmul.allow_tf32 = False
    agree = deform_agreement(device)
    torch.backends.cuda.matmul.allow_tf32 = device.type == "cuda"
    print(f"# deform agreement: {agree}", flush=True)
    deform_rows = []
    deform = args.deform
    if deform == "fastest":
        for impl in ("torchvision", "sampling"):
            model = build_arm(args.preset, False, args.bins, device, impl)
            r = _catch_oom(train_steps, model, 1, args.size, args.bins, args.steps, args.warmup, device, args.amp)
            if r is None:
                model.zero_grad(set_to_none=True)
                set_checkpointing(model, True)
                r = _catch_oom(train_steps, model, 1, args.size, args.bins, args.steps, args.warmup, device,
                               args.amp)
                r = dict(note="out of memory") if r is None else dict(r, note_ckpt=True)
            deform_rows.append(dict(impl=impl, **r))
            del model
            _reset_peak(device)
            print(f"# deform {impl}: {deform_rows[-1]}", flush=True)
        timed = [r for r in deform_rows if "step_s" in r]
        deform = min(timed, key=lambda r: r["step_s"])["impl"] if timed else "auto"

    train: list[dict] = []
    for i, arm in enumerate(("base", "spike")):
        # Each arm may use up to its share of what is left, keeping ~30% of the budget for inference.
        share = (budget.left() * 0.7) / (2 - i)
        train += train_rows(args, arm, deform, device, budget, share)

    infer: list[dict] = []
    for arm in ("base", "spike"):
        if budget.left() <= 0:
            infer.append(dict(arm=arm, note="skipped (time budget)"))
            continue
        infer.append(_catch_oom(infer_row, args, arm, deform, device) or dict(arm=arm, note="out of memory"))
        print(f"# inference {arm}: {infer[-1]}", flush=True)

    print(f"\n# deformable conv used for training and inference: {deform}")
    print(report(env, deform_rows, agree, train, infer, args, handover))
    return 0


if __name__ == "__main__":
    sys.exit(main())
