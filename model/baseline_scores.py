"""``spikeprep baselines``: the store's non-learned restorations (blur, TFP, TFI, the least-squares map and its
gated form over the counts' 3x3 neighbourhood, which the shipped spike head starts at; all
numpy, ``spikeprep.baselines`` and ``spikeprep.lsq``) scored on a split exactly as validation scores a model
(``model.scoring.FrameScorer``), into a ``schemas.baselines.BaselinesReport``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from model.metrics import tensor_to_uint8
from model.scoring import BOUNDARY_FRACTION, STATIC_FRACTION, FrameScorer
from schemas.baselines import BaselineRow, BaselinesReport
from spikeprep import baselines as bl
from spikeprep.errors import InputError
from spikeprep.lsq import counts_dataset, fit_gated_lsq, fit_lsq, item_frame, lsq_accumulate
from spikeprep.spike_deblur_dataset import val_frames
from spikeprep.store import read_manifest


def score_baselines(root: str | Path, split: str = "val", *, fit_split: str = "train", clip_len: int = 1,
                    tfp_widths: tuple[int, ...] | None = None, lpips_metric=None, lpips_note: str | None = None,
                    boundary_fraction: float = BOUNDARY_FRACTION, static_fraction: float = STATIC_FRACTION,
                    progress: bool = False) -> BaselinesReport:
    """Score blur, TFP (centred ``tfp_widths`` bins; default K/4 and K/2), TFI, the least-squares map and the
    gated least-squares map (both fitted on ``fit_split``) on every kept frame of ``split`` that a validation
    with ``clip_len`` scores."""
    t_start = time.perf_counter()
    root = Path(root)
    ds = counts_dataset(root, split, clip_len)
    k = ds.num_bins
    widths = tuple(tfp_widths) if tfp_widths else tuple(sorted({max(1, k // 4), max(1, k // 2)}))
    for w in widths:
        try:
            bl.centred_bins(k, w)
        except ValueError as err:
            raise InputError(None, str(err), "pass --tfp-bins with widths that can be centred in K bins") from None
    manifest = read_manifest(root).select(["split", "n_ticks", "status", "paired"]).to_pydict()
    ticks = [n for s, n, st, paired in zip(manifest["split"], manifest["n_ticks"], manifest["status"],
                                           manifest["paired"]) if s == split and st == "ok" and paired]
    tfi_ok = bool(ticks) and bl.tfi_applies(k, max(ticks))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="baselines", unit="frame")
    coef, fit_frames = fit_lsq(root, fit_split, bar)
    restorations = {"blur": lambda c, b: b}
    restorations.update({f"tfp_{w}": (lambda c, b, w=w: bl.tfp(c, b, w)) for w in widths})
    if tfi_ok:
        restorations["tfi"] = bl.tfi
    restorations["lsq"] = lambda c, b: bl.lsq_restore(c, b, coef)
    gated = fit_gated_lsq(root, fit_split, lsq_accumulate(root, fit_split, taps=3)[0])
    restorations["lsq_gated"] = lambda c, b: bl.gated_lsq_restore(c, b, gated.coef, gated.slope, gated.threshold,
                                                                  gated.box)
    scorers = {name: FrameScorer(lpips_metric, boundary_fraction, static_fraction) for name in restorations}
    frames = 0
    for _, item, new in val_frames(ds):
        seq = item["meta"]["seq"]
        for pos, _ in new:
            counts, blur, sharp = item_frame(item, pos)
            s8, b8 = tensor_to_uint8(torch.from_numpy(sharp)), tensor_to_uint8(torch.from_numpy(blur))
            mask = scorers["blur"].mask(b8, s8)
            for name, restore in restorations.items():
                recon = b8 if name == "blur" else tensor_to_uint8(torch.from_numpy(restore(counts, blur)))
                scorers[name].add(seq, recon, s8, mask)
            frames += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    described = {"blur": "the blurred input itself",
                 **{f"tfp_{w}": f"TFP: spike rate over the centred {w} of {k} bins, as luma (blur's colour)"
                    for w in widths},
                 "tfi": "TFI: 1 / inter-spike interval across the window's centre, as luma (blur's colour)",
                 "lsq": f"least squares: one linear map (K counts, blur RGB, 1) -> sharp RGB, fitted on "
                        f"{fit_split} ({fit_frames} frames)",
                 "lsq_gated": f"gated least squares: the map from the counts' 3x3 neighbourhood and blur RGB, its "
                              f"luma correction scaled per pixel by a gate on the correction's local energy "
                              f"(slope {gated.slope:.3g}, threshold {gated.threshold:.3g}), fitted on {fit_split}: "
                              "the shipped spike head's start"}
    rows = [BaselineRow(name=name, description=described[name], overall=sc.overall(), boundary=sc.boundary(),
                        static=sc.static()) for name, sc in scorers.items()]
    if not tfi_ok:
        widest = max(ticks) if ticks else 0
        rows.insert(len(rows) - 2, BaselineRow(
            name="tfi", description=described["tfi"], overall=None, boundary=None,
            note=f"not applicable: a bin spans {widest / k:.3g} spike frames (n_ticks {widest} > K {k}); TFI "
                 f"needs bins at most one spike frame wide (ingest with --k {widest} or more)"))
    return BaselinesReport(store=str(root), split=split, fit_split=fit_split, num_bins=k, clip_len=clip_len,
                           frames=frames, fit_frames=fit_frames, boundary_fraction=boundary_fraction,
                           static_fraction=static_fraction, rows=rows,
                           lsq_coefficients=coef.tolist(), lpips_note=lpips_note,
                           seconds=time.perf_counter() - t_start)
