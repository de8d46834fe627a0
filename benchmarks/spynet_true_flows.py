"""SpyNet pretrained on the true flows of a ``spikeprep synth`` tree (issue 15's SpyNet suspect).

    .venv/bin/python benchmarks/spynet_true_flows.py outputs/ablation/raw --out outputs/ablation/spynet_true_flows.pth
    .venv/bin/python benchmarks/spynet_true_flows.py RAW --out W.pth --steps 600 --results   # + RESULTS.md

VRT's recipe starts SpyNet from released weights, which cannot be had on these machines, so both arms of
every run here start with a random SpyNet and parallel warping reads noise while it learns. A synth tree
knows every sub-frame's motion (``SequencePlan.true_flow``), so SpyNet can be taught the true flows first:
pairs of sub-frames one frame period apart (the gap between neighbouring sharp frames, both directions) are
drawn from the **train** sequences only, cropped, and SpyNet is trained on the end-point error at its four
output scales. The weights are written in the official SpyNet format (``{'params': ...}``), which
``model.nets.vrt.load_spynet`` and a VRT preset's ``spynet_path`` read.

The table: mean end-point error (pixels, where the true target stays in view) on every pair of neighbouring
sharp frames of the **val** sequences, both directions, for zero flow, the random SpyNet both arms start
from, and the pretrained one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description, write_section  # noqa: E402
from model.nets.vrt import SpyNet  # noqa: E402
from spikeprep.synth import SequencePlan, make_plan, read_synth_config, sequence_names  # noqa: E402


def _plans(raw: Path, split: str) -> list[SequencePlan]:
    cfg = read_synth_config(raw)
    return [make_plan(cfg, i) for i, (s, _) in enumerate(sequence_names(cfg)) if s == split]


def _in_view(flow: np.ndarray) -> np.ndarray:
    """[H, W] bool: the flow's target lies inside the frame (the pixels an EPE is fair on)."""
    h, w = flow.shape[:2]
    x = np.arange(w)[None] + flow[..., 0]
    y = np.arange(h)[:, None] + flow[..., 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def draw_pair(plan: SequencePlan, rng: np.random.Generator, crop: int):
    """A random (ref, supp, flow, in-view mask) crop: sub-frames one frame period apart, either direction."""
    cfg = plan.cfg
    a = int(rng.integers(0, cfg.n_ticks - cfg.period_ticks))
    ref, supp = (a, a + cfg.period_ticks) if rng.random() < 0.5 else (a + cfg.period_ticks, a)
    if crop:
        y, x = int(rng.integers(0, cfg.height - crop + 1)), int(rng.integers(0, cfg.width - crop + 1))
        window = np.s_[y:y + crop, x:x + crop]
    else:                                                        # whole frames
        window = np.s_[:, :]
    flow = plan.true_flow(ref, supp)[window]
    return plan.render(ref)[window], plan.render(supp)[window], flow, _in_view(flow)


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0))).float()


def multiscale_epe(flows: list[torch.Tensor], target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean masked end-point error over SpyNet's outputs (finest first, each in pixels of its own scale)."""
    loss = target.new_zeros(())
    for i, flow in enumerate(flows):
        s = 2 ** i
        t = F.avg_pool2d(target, s) / s if s > 1 else target
        m = F.avg_pool2d(mask, s) if s > 1 else mask
        epe = (flow - t).pow(2).sum(1, keepdim=True).add(1e-8).sqrt()
        loss = loss + (epe * m).sum() / m.sum().clamp_min(1.0)
    return loss / len(flows)


def pretrain(raw: Path, out: Path, steps: int = 600, crop: int = 0, batch: int = 4, lr: float = 1e-3,
             seed: int = 0, say=print) -> SpyNet:
    """Train a random SpyNet on the train sequences' true flows; write it to ``out`` (official format)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    plans = _plans(raw, "train")
    spynet = SpyNet()
    with torch.no_grad():   # every level's last conv at zero: training starts from zero flow, not noise
        for level in spynet.basic_module:
            level.basic_module[-1].weight.zero_()
            level.basic_module[-1].bias.zero_()
    opt = torch.optim.Adam(spynet.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.time()
    for step in range(steps):
        items = [draw_pair(plans[int(rng.integers(len(plans)))], rng, crop) for _ in range(batch)]
        ref, supp, flow = (torch.stack([_chw(it[k]) for it in items]) for k in range(3))
        mask = torch.stack([torch.from_numpy(it[3])[None].float() for it in items])
        loss = multiscale_epe(spynet(ref, supp), flow, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step == steps - 1:
            say(f"step {step + 1}/{steps} multiscale EPE {loss.item():.3f} px, val EPE {val_epe(spynet, raw):.3f} px "
                f"({time.time() - t0:.0f} s)")
            spynet.train()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"params": spynet.state_dict()}, tmp)
    tmp.replace(out)
    return spynet


@torch.no_grad()
def val_epe(spynet: SpyNet | None, raw: Path) -> float:
    """Mean EPE (px, in-view pixels) on every neighbouring sharp-frame pair of the val sequences, both ways."""
    total, count = 0.0, 0
    for plan in _plans(raw, "val"):
        cfg = plan.cfg
        sharp = (cfg.exposure_starts() + cfg.exposure_ticks // 2).tolist()
        for a, b in zip(sharp[:-1], sharp[1:]):
            for ref, supp in ((a, b), (b, a)):
                flow = plan.true_flow(ref, supp)
                mask = _in_view(flow)
                if spynet is None:
                    pred = np.zeros_like(flow)
                else:
                    spynet.eval()
                    pred = spynet(_chw(plan.render(ref))[None], _chw(plan.render(supp))[None])[0][0]
                    pred = pred.permute(1, 2, 0).numpy()
                epe = np.sqrt(((pred - flow) ** 2).sum(-1))
                total += float(epe[mask].sum())
                count += int(mask.sum())
    return total / max(count, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, help="a spikeprep synth tree (its synth.json is read)")
    ap.add_argument("--out", type=Path, required=True, help="weights file to write (official SpyNet format)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--crop", type=int, default=0, help="square crops of this side (0: whole frames)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(0)
    random_epe = val_epe(SpyNet(), args.raw)
    spynet = pretrain(args.raw, args.out, args.steps, args.crop, args.batch, args.lr)
    rows = [("zero flow", val_epe(None, args.raw)), ("random SpyNet (what every run starts from)", random_epe),
            (f"SpyNet pretrained on true flows ({args.steps} steps)", val_epe(spynet, args.raw))]
    table = "\n".join(["| flow | val EPE (px) |", "|---|---|"] + [f"| {n} | {v:.3f} |" for n, v in rows])
    minutes = (time.time() - t0) / 60
    print(table + f"\nweights: {args.out} ({minutes:.1f} min)")
    if args.results:
        body = "\n".join([
            "## SpyNet pretrained on synth's true flows (issue 15)", "",
            f"Command: `.venv/bin/python benchmarks/spynet_true_flows.py {args.raw} --out {args.out} --steps "
            f"{args.steps} --crop {args.crop} --batch {args.batch} --lr {args.lr} --results` ({cpu_description()}, "
            f"{time.strftime('%Y-%m-%d')}, {minutes:.1f} min while other runs shared the CPU). Trained on pairs one "
            f"frame period apart from the train sequences; scored on every neighbouring sharp-frame pair of the val "
            f"sequences, both directions, where the target stays in view.", "", table, ""])
        write_section(REPO / "benchmarks" / "RESULTS.md", "## SpyNet pretrained on synth's true flows (issue 15)",
                      body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
