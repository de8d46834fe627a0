"""Where a spike arm's error on still areas comes from: its output split into VRT's part and the spike head's.

    .venv/bin/python benchmarks/static_error.py outputs/ckpts/spike/last.pth [more checkpoints]

For each checkpoint of a spike arm with a spike head, every val frame of its store (full frames, its clip
length) is restored three ways and scored on the static half (per frame, the 50% of pixels where sharp and
blur differ least; ``model.metrics.static_mask``), PSNR-Y with basicsr's Y:

- ``full``: the arm's output;
- ``VRT's part``: VRT's output inside the spike arm (blur + conv_last(h)), without the spike head's term;
- ``blur + spike head``: the blur plus the head's term alone (for a motion-gated head, blur + gate * d).

It answered why the gated head (issue 29) lost its start's clean still areas in training: the spike head's
term stayed clean, VRT's part did not (benchmarks/RESULTS.md, "Spike arm: gated heads").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint  # noqa: E402
from model.metrics import masked_metrics, static_mask, tensor_to_uint8  # noqa: E402
from model.nets.integrate_vrt import fuse_features  # noqa: E402
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset  # noqa: E402


def parts(model, blur: torch.Tensor, vox: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three restorations of one clip ``[1, T, 3, H, W]`` (module docstring)."""
    state, fr, fs = model.encode_scales(blur, vox)
    if model.branch:
        fs_attended = [t(s) for t, s in zip(model.spike_tsa, fs)]
        ff, fs1 = fuse_features(fr, fs_attended, model.fuse), fs_attended[0]
    else:
        ff, fs1 = list(fr), torch.zeros_like(fr[0])
    h = model.vrt.decode_head_input(state, ff)
    vrt_out = model.vrt.head_output(h, state.x_lq)
    head = model.spike_head
    if getattr(head, "gates_vrt", False):
        g, d = head.gate_and_correction(fs1, vox, h, state.x_lq)
        return {"full": blur + g * (vrt_out - blur + d), "VRT's part": vrt_out, "blur + spike head": blur + g * d}
    term = head(fs1, vox, h, state.x_lq)
    return {"full": vrt_out + term, "VRT's part": vrt_out, "blur + spike head": blur + term}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    args = ap.parse_args(argv)
    print("| checkpoint | full | VRT's part | blur + spike head |")
    print("|---|---|---|---|")
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        cfg, model = checkpoint_config(ckpt, path), model_from_checkpoint(ckpt, path).eval()
        if model.spike_head is None:
            print(f"| {path} | no spike head | | |")
            continue
        ds = SpikeDeblurDataset.from_config(cfg, "val")
        scores: dict[str, list[float]] = {}
        with torch.no_grad():
            for i in range(0, len(ds), cfg.DATA.CLIP_LEN):
                item = ds[i]
                blur, vox, sharp = item["blur"][None], item["spike_vox"][None], item["sharp"]
                for name, img in parts(model, blur, vox).items():
                    for t in range(blur.shape[1]):
                        s8, b8 = tensor_to_uint8(sharp[t]), tensor_to_uint8(blur[0, t])
                        psnr = masked_metrics(tensor_to_uint8(img[0, t]), s8, static_mask(b8, s8))["psnr_y"]
                        scores.setdefault(name, []).append(psnr)
        cells = [f"{np.mean([v for v in scores[n] if np.isfinite(v)]):.2f}" for n in scores]
        print(f"| {path} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
