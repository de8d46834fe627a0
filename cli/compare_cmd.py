"""``spikeprep compare RUN_SPIKE RUN_BASE``: the acceptance table and side-by-side crops (``model.compare``)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from model.compare import LPIPS_TOL, PSNR_TOL_DB, compare, format_report


@click.command(epilog=f"""\b
RUN_SPIKE, RUN_BASE: an experiment name, looked up as OUTPUTS/metrics/val_<exp>_<step>.json,
  or a directory holding one experiment's val_*.json (its parent is then that run's outputs
  root, against which the reports' images_dir is resolved).
\b
Rule (original document 8.3), at the last step both runs validated:
  PSNR RGB >= base - {PSNR_TOL_DB} dB  and  LPIPS <= base + {LPIPS_TOL}
  (LPIPS missing in one or both runs: judged on PSNR only, and the result says so).
\b
Writes OUTPUTS/metrics/compare_<spike>_vs_<base>_<step>.json and .png
  (crops: blur | base recon | spike recon | sharp, where sharp and blur differ most),
  and _curves.png: both arms' training loss at every step (from OUTPUTS/logs/<exp>/
  TensorBoard events), validation PSNR overall and on motion boundaries, count-zero sensitivity.
\b
Exit status: 0 PASS, 1 FAIL, 2 bad input (missing run, same arm, no common step,
  runs validated on different data).
\b
Examples:
  spikeprep compare vrt_spike vrt_base
  spikeprep compare vrt_spike vrt_base --outputs runs/outputs --crops 6 --crop-size 128
  spikeprep compare a/outputs/metrics b/outputs/metrics --outputs reports
  spikeprep compare vrt_spike vrt_base --baselines data/store/baselines/val.json
\b
Tables: overall, static half (per frame the 50% of pixels where sharp and blur differ least)
and motion boundaries (the 5% where they differ most); PSNR RGB/Y, SSIM RGB/Y, LPIPS. The spike
run's sensitivity probes (its validation with count-zero voxels, another clip's voxels and
reversed bins; diagnostics, not the spikes' worth) are tabled under the arms; --baselines adds
the store's non-learned baselines (written by `spikeprep baselines DATA_ROOT`) beside both arms.
""")
@click.argument("run_spike")
@click.argument("run_base")
@click.option("--outputs", default=Path("outputs"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="outputs root (LOG.SAVE_DIR): where experiment names are looked up and results written")
@click.option("--crops", default=4, show_default=True, type=click.IntRange(min=0),
              help="rows of crops in the picture (0: no picture)")
@click.option("--crop-size", default=96, show_default=True, type=click.IntRange(min=16),
              help="crop side in pixels (clamped to the smallest frame)")
@click.option("--step", type=click.IntRange(min=0),
              help="judge at this common step instead of the last one")
@click.option("--baselines", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a `spikeprep baselines` report (DATA_ROOT/baselines/<split>.json) to table beside the arms")
def compare_cmd(run_spike: str, run_base: str, outputs: Path, crops: int, crop_size: int, step: int | None,
                baselines: Path | None) -> None:
    """Compare a spike run with a base (no-spike) run at equal steps; exit 0 PASS, 1 FAIL, 2 bad input."""
    result = compare(run_spike, run_base, outputs=outputs, crops=crops, crop_size=crop_size, step=step,
                     baselines=baselines)
    click.echo(format_report(result))
    sys.exit(0 if result.passed else 1)
