"""How far the spike arm's output is from the base arm's at initialisation, with the same VRT weights.

    .venv/bin/python benchmarks/fusion_neutrality.py                                   # demo_tiny config
    .venv/bin/python benchmarks/fusion_neutrality.py --config configs/deblur/vrt_spike_baseline.yaml

Builds both arms from one config, copies the spike arm's backbone (``vrt.*``) into the base arm (strict), and
runs both on one random clip: the spike arm with random voxels and with all-zero voxels. If the fusion were
neutral at initialisation (Ff = Fr at step 0), a warm start from official VRT weights would begin the spike
arm exactly where plain VRT is; the original document's section 10.2 (residual on LN(Fr)) is not neutral,
and this prints by how much. Diagnostic only (no target).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from model.nets.integrate_vrt import build_model  # noqa: E402
from schemas.config import load_config  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [0, 1] (inf when equal)."""
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/deblur/demo_tiny.yaml"))
    ap.add_argument("--size", type=int, nargs=3, default=[3, 64, 64], metavar=("T", "H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = load_config(args.config if args.config.is_absolute() else ROOT / args.config)
    torch.manual_seed(args.seed)
    spike = build_model(cfg, use_spike=True).eval()
    base = build_model(cfg, use_spike=False).eval()
    backbone = {k[len("vrt."):]: v for k, v in spike.state_dict().items() if k.startswith("vrt.")}
    base.vrt.load_state_dict(backbone, strict=True)
    t, h, w = args.size
    g = torch.Generator().manual_seed(args.seed + 1)
    blur = torch.rand(1, t, 3, h, w, generator=g)
    vox = torch.randn(1, t, cfg.DATA.K, h, w, generator=g)
    with torch.no_grad():
        out_base = base(blur, None)
        rows = [("random voxels", spike(blur, vox)), ("all-zero voxels", spike(blur, torch.zeros_like(vox)))]
    print(f"# {args.config}, clip {t}x{h}x{w}, seed {args.seed}; both arms share the VRT weights")
    print("| spike arm input | PSNR vs base arm output (dB) | max abs difference |")
    print("|---|---:|---:|")
    for name, out in rows:
        print(f"| {name} | {psnr(out, out_base):.2f} | {float((out - out_base).abs().max()):.3f} |")


if __name__ == "__main__":
    main()
