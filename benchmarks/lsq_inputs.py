"""What one linear map can make of each input the spike head could read (issue 15): a table for RESULTS.md.

    .venv/bin/python benchmarks/lsq_inputs.py outputs/acceptance/store            # after benchmarks/acceptance.py
    .venv/bin/python benchmarks/lsq_inputs.py outputs/ablation/store_k16 --results

The least-squares baseline of ``spikeprep baselines`` maps ``(K counts, blur RGB, 1)`` to sharp RGB. The model
does not see counts: its voxels are ``(log1p(count) - MEAN) / STD`` (DESIGN section 6). Each row here fits the
same per-pixel least-squares map (``spikeprep.baselines.LsqAccumulator``, on every kept frame of the train
split) from another input and scores it on the val split exactly as ``spikeprep baselines`` and validation
do (``model.scoring.FrameScorer``: uint8 frames, PSNR-Y per frame, the motion-boundary mask). A linear
layer on the model's normalised voxels can do at best what the ``voxels`` rows do; the ``counts`` rows are
the baseline the spike arm must clear.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description, write_section  # noqa: E402
from model.scoring import FrameScorer  # noqa: E402
from model.metrics import tensor_to_uint8  # noqa: E402
from spikeprep import baselines as bl  # noqa: E402
from spikeprep.lsq import fit_lsq, kept_frames  # noqa: E402
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, norm_lut  # noqa: E402

SECTION = "## Least squares on the model's inputs (issue 15)"
# row -> (what it reads, whether the blur RGB is an input)
ROWS = {"counts + blur": ("the K stored counts, blur R, G, B, 1 (spikeprep baselines' lsq)", True),
        "voxels + blur": ("the K normalised voxels (log1p(count) - MEAN) / STD, blur R, G, B, 1", True),
        "counts": ("the K counts, 1 (the blur only through the model's residual)", False),
        "voxels": ("the K normalised voxels, 1", False)}


def inputs(row: str, counts: np.ndarray, blur: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row's spike input (counts or normalised voxels, ``[K, Hs, Ws]``) and blur (zeros when unused)."""
    spikes = lut[counts].astype(np.float64) if row.startswith("voxels") else counts
    return spikes, blur if ROWS[row][1] else np.zeros_like(blur)


def measure(root: Path) -> list[tuple[str, float, float]]:
    """``(row, PSNR-Y, boundary PSNR-Y)`` per row (the blurred input itself first)."""
    ds = SpikeDeblurDataset(root, "val", clip_len=1, train=False, voxels="counts")
    lut = norm_lut(ds.norm_mean, ds.norm_std, np.uint16)
    coefs = {}
    for row in ROWS:
        acc = bl.LsqAccumulator(ds.num_bins)
        for _, counts, blur, sharp in kept_frames(root, "train"):
            spikes, b = inputs(row, counts, blur, lut)
            # without blur as an input the map predicts sharp - blur (the model adds its residual to the blur)
            acc.add(spikes, b, sharp - (0 if ROWS[row][1] else blur))
        coefs[row] = acc.solve()
    scorers = {name: FrameScorer() for name in ("blur", *ROWS)}
    for seq, counts, blur, sharp in kept_frames(root, "val"):
        s8, b8 = tensor_to_uint8(torch.from_numpy(sharp)), tensor_to_uint8(torch.from_numpy(blur))
        mask = scorers["blur"].mask(b8, s8)
        scorers["blur"].add(seq, b8, s8, mask)
        for row, coef in coefs.items():
            spikes, b = inputs(row, counts, blur, lut)
            recon = bl.lsq_restore(spikes, b, coef) + (0 if ROWS[row][1] else blur)
            scorers[row].add(seq, tensor_to_uint8(torch.from_numpy(recon)), s8, mask)
    return [(name, sc.overall().psnr_y, sc.boundary().psnr_y) for name, sc in scorers.items()]


def crop_quintiles(root: Path, crop: int, crops: int, seed: int = 123) -> list[tuple[str, float, float, float]]:
    """Mean absolute error (RGB, [0, 1]) of the blur and of the counts + blur least-squares map on ``crops``
    random training crops (the trainer's own Dataset crops), by quintile of the blur's error: ``(quintile,
    blur L1, lsq L1, lsq PSNR - blur PSNR)``. The loss the arms train on (Charbonnier) is an L1; PSNR an L2."""
    ds = SpikeDeblurDataset(root, "train", clip_len=1, crop_size=crop, train=True, seed=seed, voxels="counts")
    coef, _ = fit_lsq(root, "train")
    rows = []
    for i in range(min(crops, len(ds))):
        item = ds[i]
        if item is None:
            continue
        counts, blur, sharp = (item[key][0].numpy() for key in ("spike_counts", "blur", "sharp"))
        recon = np.clip(bl.lsq_restore(counts, blur, coef), 0, 1)
        rows.append([np.abs(blur - sharp).mean(), np.abs(recon - sharp).mean(), ((blur - sharp) ** 2).mean(),
                     ((recon - sharp) ** 2).mean()])
    rows = np.array(rows)[np.argsort([r[0] for r in rows])]
    out = []
    for q, part in enumerate(np.array_split(rows, 5)):
        gain = 10 * np.log10(part[:, 2].mean() / part[:, 3].mean())
        name = {0: "1 (least motion)", 4: "5 (most motion)"}.get(q, str(q + 1))
        out.append((name, part[:, 0].mean(), part[:, 1].mean(), gain))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path, help="DATA_ROOT with train and val splits")
    ap.add_argument("--crop", type=int, default=64, help="training crop side for the per-crop table [64]")
    ap.add_argument("--crops", type=int, default=200, help="random training crops for the per-crop table [200]")
    ap.add_argument("--results", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args.store)
    blur = rows[0][1]
    lines = ["| least-squares input | what it reads | PSNR-Y | boundary PSNR-Y | over the blur |",
             "|---|---|---|---|---|"]
    for name, y, by in rows:
        what = "the blurred input itself" if name == "blur" else ROWS[name][0]
        lines.append(f"| {name} | {what} | {y:.2f} | {by:.2f} | {y - blur:+.2f} |")
    quint = crop_quintiles(args.store, args.crop, args.crops)
    lines += ["", f"Per training crop ({args.crops} random {args.crop}x{args.crop} crops of the train split, the "
              "trainer's Dataset), by quintile of the blur's own error; mean absolute error (RGB) is what "
              "Charbonnier weighs, PSNR what validation scores:", "",
              "| quintile of the blur's error | blur mean abs error | lsq mean abs error | lsq PSNR - blur PSNR |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {b:.4f} | {q:.4f} | {g:+.2f} dB |" for name, b, q, g in quint]
    table = "\n".join(lines)
    print(table)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.results:
        cmd = " ".join(["benchmarks/lsq_inputs.py", *(argv if argv is not None else sys.argv[1:])])
        body = [SECTION, "", f"Command: `.venv/bin/python {cmd}` ({cpu_description()}, {time.strftime('%Y-%m-%d')}). "
                f"Store `{args.store}`: fitted on its train split, scored on its val split like `spikeprep baselines`.",
                "", table]
        write_section(REPO / "benchmarks" / "RESULTS.md", SECTION, "\n".join(body))
        print("wrote benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
