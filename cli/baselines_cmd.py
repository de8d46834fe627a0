"""``spikeprep baselines DATA_ROOT``: non-learned restorations scored like validation (``model.baseline_scores``)."""
from __future__ import annotations

import errno
from pathlib import Path

import click

from schemas.baselines import baselines_path, write_baselines_report
from spikeprep.errors import InputError
from spikeprep.store import store_lock


def _widths(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        widths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give bin counts separated by commas, e.g. 4,8") from None
    if any(w < 1 for w in widths):
        raise click.BadParameter(f"{value!r}: widths are at least 1 bin")
    return widths


@click.command(epilog="""\b
What the spikes of a store say about the sharp frames, without training anything, scored exactly as
validation scores a model (basicsr PSNR RGB/Y and SSIM RGB/Y, LPIPS when its weights exist, the same on
the motion-boundary mask and on the static half):
  blur      the blurred input itself
  tfp_<w>   TFP: the spike rate over the centred w of the K bins, read as luma through the frame's
            own rate-to-luma curve (fitted on the whole window against the blur), blur's colour
  tfi       TFI: 1 / inter-spike interval across the window's centre (bins one spike frame wide only)
  lsq       one linear map (K counts, blur RGB, 1) -> sharp RGB fitted by least squares on --fit-split
A trained spike arm should clear these; `spikeprep compare --baselines` tables them beside the arms.
\b
Examples:
  spikeprep baselines data/store
  spikeprep baselines data/store --split val --clip-len 5 --tfp-bins 4,8,16
  spikeprep baselines data/store --config my.yaml     # the frames a validation with DATA.CLIP_LEN scores
""")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="val", show_default=True, help="the split to score")
@click.option("--fit-split", default="train", show_default=True, help="the split the least-squares map is fitted on")
@click.option("--clip-len", type=click.IntRange(min=1),
              help="score the frames a validation with this DATA.CLIP_LEN scores [--config's, else 1: every kept frame]")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="take --clip-len from this config's DATA.CLIP_LEN")
@click.option("--tfp-bins", callback=_widths, help="TFP window widths in bins, comma-separated [K/4,K/2]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="report path [DATA_ROOT/baselines/<split>.json]")
@click.option("--progress/--no-progress", default=True)
def baselines_cmd(root: Path, split: str, fit_split: str, clip_len: int | None, config: Path | None, tfp_bins,
                  out: Path | None, progress: bool) -> None:
    """Score non-learned restorations (blur, TFP, TFI, least squares) of a store's split; write a JSON report."""
    # torch, basicsr and the model only when the command runs, so that `spikeprep --help` stays fast
    from model.baseline_scores import score_baselines
    from model.report_tables import format_baselines
    from model.metrics import lpips_or_reason
    from schemas.config import load_config
    from spikeprep.store import refuse_output_in_store

    if clip_len is None:
        clip_len = load_config(config).DATA.CLIP_LEN if config else 1
    if out is not None:
        refuse_output_in_store(out, "--out", own=baselines_path(root, split).parent)

    lpips_metric, lpips_note = lpips_or_reason("cpu")
    with store_lock(root, "baselines", shared=True):     # ingest and audit wait: the store must not change
        report = score_baselines(root, split, fit_split=fit_split, clip_len=clip_len, tfp_widths=tfp_bins,
                                 lpips_metric=lpips_metric, lpips_note=lpips_note, progress=progress)
    try:
        path = write_baselines_report(out or baselines_path(root, split), report)
    except OSError as err:
        if out is not None or err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise InputError(baselines_path(root, split), f"the store is read-only ({err.strerror}); the report "
                         "goes into it by default", fix="pass --out FILE outside the store") from None
    click.echo(format_baselines(report))
    click.echo(f"report: {path}")
