"""``spikeprep ingest``, ``spikeprep audit`` and ``spikeprep stats``: build, check and describe a store."""
from __future__ import annotations

import json
import logging
import math
import shlex
import sys
from pathlib import Path

import click

from schemas.config import DEFAULT_CLIP_LEN, load_config
from schemas.manifest import CROP_CODES, MANIFEST_FILENAME, STATUS_OK, ManifestRow
from spikeprep.audit import (ALIGNED, AUDIT_DIRNAME, MISALIGNED, MISMATCH, UNDETERMINED, AuditOptions, audit,
                             crop_drops)
from spikeprep.clock_fix import ClockFixOptions, fix_store
from spikeprep.registration import RegistrationOptions
from spikeprep.ingest import ALIGN_LOG_DIRNAME, IngestOptions, ingest
from spikeprep.raw_layout import PRESETS, preset_overrides
from spikeprep.stats import write_config_norm
from spikeprep.store import read_store_info, refuse_output_in_store


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@click.command(epilog="""\b
Examples:
  spikeprep ingest data/raw --out data/store
  spikeprep config vrt_spike_baseline my.yaml --data-root data/store   # a shipped config to start from
  spikeprep ingest data/raw --out data/store --config my.yaml --write-config my.yaml
  spikeprep ingest GOPRO --out data/gopro --layout s-sdm --exposure-start 20 --exposure-stop 117
""")
@click.argument("raw", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="DATA_ROOT: the store to write (a rerun resumes)")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="take K (DATA.K) and the crop size (DATA.CROP_SIZE) from this config")
@click.option("--k", "num_bins", type=click.IntRange(min=1),
              help=f"time bins per exposure [config or {IngestOptions.num_bins}]")
@click.option("--crop", "crop_size", type=click.IntRange(min=1),
              help=f"training frames need a short side >= this [config or {IngestOptions.crop_size}]")
@click.option("--layout", type=click.Choice(["native", *sorted(PRESETS)]), default="native", show_default=True,
              help="raw layout: native, or a published per-frame .dat set")
@click.option("--height", type=int, help="preset override: spike rows")
@click.option("--width", type=int, help="preset override: spike columns")
@click.option("--rate-hz", type=float, help="preset override: spike frames per second")
@click.option("--frames-per-file", type=int, help="preset override: spike frames in each .dat")
@click.option("--exposure-start", type=int, help="preset override: first exposure frame in each .dat")
@click.option("--exposure-stop", type=int, help="preset override: one past the last exposure frame")
@click.option("--exposure-length", type=int, help="preset override: exposure = this many frames centred in each .dat")
@click.option("--exposure-s", "exposure_s", type=click.FloatRange(min=0, min_open=True),
              help="exposure time in seconds of exposure.csv tables that give frame start times only "
              "(header frame_idx,t_start): t1 = t_start + this")
@click.option("--rgb-scale", "rgb_scale", type=click.IntRange(min=1, max=16),
              help="RGB frames resampled by a registration (spike meta.json's rgb_homography, or RGB of another "
              "size than the spike grid times an integer): the stored RGB grid is the spike grid times this "
              "[the registration's scale, rounded]")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="sequences ingested in parallel")
@click.option("--copy", "copy_images", is_flag=True, help="copy PNGs instead of hard-linking them")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"where align_<time>.txt goes [DATA_ROOT/{ALIGN_LOG_DIRNAME}: the store's own part, not the "
              "current folder]")
@click.option("--write-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="write the voxel MEAN/STD into this config's DATA.NORM (other lines unchanged)")
@click.option("--force", is_flag=True, help="rebuild every sequence; a rerun otherwise reuses each sequence whose "
              "inputs keep their names, sizes and modification times and whose options are the same")
@click.option("--show", default=20, show_default=True, type=click.IntRange(min=0),
              help="dropped frames listed one per line (the rest: manifest.parquet)")
@click.option("--progress/--no-progress", default=True)
@click.option("-v", "--verbose", is_flag=True, help="log every dropped frame")
def ingest_cmd(raw, out, config, num_bins, crop_size, layout, height, width, rate_hz, frames_per_file,
               exposure_start, exposure_stop, exposure_length, exposure_s, rgb_scale, workers, copy_images, log_dir,
               write_config, force, show, progress, verbose):
    """Turn raw sequences into a store: Zarr voxel counts, manifest.parquet, dataset.json (with stats)."""
    _setup_logging(verbose)
    cfg = load_config(config) if config else None
    if write_config is not None and write_config != config:
        load_config(write_config)    # a config that cannot take the stats fails now, not after the ingest
    try:
        overrides = preset_overrides(layout, height=height, width=width, rate_hz=rate_hz,
                                     frames_per_file=frames_per_file, exposure_start=exposure_start,
                                     exposure_stop=exposure_stop, exposure_length=exposure_length)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--layout") from None
    if exposure_s is not None and not math.isfinite(exposure_s):
        raise click.BadParameter(f"{exposure_s!r} is not a finite number of seconds", param_hint="--exposure-s")
    options = IngestOptions(num_bins=num_bins or (cfg.DATA.K if cfg else IngestOptions.num_bins),
                            crop_size=crop_size or (cfg.DATA.CROP_SIZE if cfg else IngestOptions.crop_size),
                            layout=layout, copy_images=copy_images, preset_overrides=overrides,
                            exposure_s=exposure_s, rgb_scale=rgb_scale)
    result = ingest(raw, out, options, workers=workers, log_dir=log_dir or out / ALIGN_LOG_DIRNAME, progress=progress,
                    force=force)
    click.echo(f"wrote {out}: {len(result.rows)} frames, {result.n_ok} ok, {result.n_dropped} dropped; "
               f"K={options.num_bins}")
    echo_failures(result.rows, out, "dropped", show)
    for line in unpaired_lines(result.rows):
        click.echo(line)
    if result.kept_audit is not None:
        click.echo(result.kept_audit.summary(out))
    for note in result.clock_notes:      # `audit --fix`'s clock maps: every rerun keeps them (or says why not)
        click.echo(note)
    for note in result.registration_notes:   # RGB frames resampled onto the spike grid: how, and what was assumed
        click.echo(note)
    drops = crop_drops(result.rows, options.crop_size)
    if drops is not None:
        click.echo(drops.summary(f"pass --crop {{crop}} (the largest crop training accepts within the frames' short "
                                 f"side) or a --config whose DATA.CROP_SIZE is {{crop}}"))
    if result.stats is not None:
        click.echo(f"voxel stats over {result.stats.n_frames} training frames: MEAN={result.stats.mean!r} "
                   f"STD={result.stats.std!r}")
    if result.align_log is not None:
        click.echo(f"align log: {result.align_log}")
    if write_config is not None:
        if result.stats is None:
            raise click.ClickException("no kept training frame: no stats to write")
        write_config_norm(write_config, result.stats.mean, result.stats.std)
        click.echo(f"wrote DATA.NORM.MEAN/STD into {write_config}")
    lost = result.lost_sequences()
    lost_fix = "pass --crop with at most the frames' short side, e.g. --crop {crop}"
    for key, n, example in lost:
        seq_drops = crop_drops([r for r in result.rows if f"{r.split}/{r.seq}" == key], options.crop_size)
        hint = (f" ({seq_drops.advice(lost_fix)})"
                if example.reason_code in CROP_CODES and seq_drops is not None else "")
        click.echo(f"error: {key}: all {n} frames dropped, most often for [{example.reason_code}]: "
                   f"{example.reason}{hint}", err=True)
    if lost:
        click.echo(f"{len(lost)} sequence(s) kept no frame; the rest of the store is written. Fix those inputs and "
                   "run ingest again: it reuses the sequences that did not change", err=True)
    clipless = _splits_without_a_clip(result.rows, cfg, config, options.crop_size)
    for line in clipless:
        click.echo(line, err=True)
    if lost or clipless:
        sys.exit(1)
    click.echo("next: spikeprep audit " + str(out))


def unpaired_lines(rows: list[ManifestRow]) -> list[str]:
    """Per split, how many kept frames are unpaired (no sharp frame) and what that means; nothing for a store
    whose frames are all paired."""
    lines = []
    for split in dict.fromkeys(r.split for r in rows):
        kept = [r for r in rows if r.split == split and r.status == STATUS_OK]
        unpaired = [r for r in kept if not r.paired]
        if not unpaired:
            continue
        seqs = len({r.seq for r in unpaired})
        if len(unpaired) == len(kept):
            lines.append(f"split {split!r}: all {len(kept)} kept frames are unpaired (no sharp frames): audit and "
                         f"`spikeprep test --split {split}` use them; training refuses it as DATA.TRAIN_SPLIT and "
                         "validation skips it")
        else:
            lines.append(f"split {split!r}: {len(unpaired)} of {len(kept)} kept frames ({seqs} sequence(s)) are "
                         "unpaired (their sharp frame is missing): training and scoring skip them (the warnings "
                         "above name them; add the sharp PNGs and re-run ingest if they were lost)")
    return lines


def _splits_without_a_clip(rows: list[ManifestRow], cfg, config: Path | None, crop_size: int) -> list[str]:
    """An error line for each training split (DATA.TRAIN_SPLIT / VAL_SPLIT) of the store that has no run
    of DATA.CLIP_LEN consecutive kept frames in one sequence: the trainer would stop on it, so say why now."""
    from spikeprep.spike_deblur_dataset import longest_kept_runs

    clip_len = cfg.DATA.CLIP_LEN if cfg else DEFAULT_CLIP_LEN
    source = f"DATA.CLIP_LEN of {config}" if cfg else "the default DATA.CLIP_LEN"
    splits = (cfg.DATA.TRAIN_SPLIT, cfg.DATA.VAL_SPLIT) if cfg else ("train", "val")
    runs = longest_kept_runs(rows)
    lines = []
    for split in dict.fromkeys(splits):
        if split not in runs or runs[split] >= clip_len:
            continue          # (a split of unpaired frames only is not in runs: unpaired_lines said so)
        mine = [r for r in rows if r.split == split]
        longest_seq = max(sum(r.seq == s for r in mine) for s in {r.seq for r in mine})
        drops = crop_drops(mine, crop_size)
        why = []
        if drops is not None:
            why.append(f"{drops.frames} of its frames were dropped for the crop size: "
                       f"{drops.advice('pass --crop {crop}')}")
        if longest_seq < clip_len:
            why.append(f"its longest sequence has {longest_seq} frames: train with a config whose DATA.CLIP_LEN "
                       f"<= {longest_seq} and pass it here with --config, or record longer sequences")
        if not why:
            why.append("see the dropped frames' reasons above (manifest.parquet: status, reason_code, reason)")
        lines.append(f"error: split {split!r} has no run of {clip_len} consecutive kept frames in one sequence "
                     f"(longest: {runs[split]}; {clip_len} is {source}), so training has no clip: {'; '.join(why)}")
    return lines


def dropped_query(root: Path) -> str:
    """A shell line that prints every dropped frame of the store at ``root`` with its reason code and reason."""
    code = (f"import pandas as pd; m = pd.read_parquet({json.dumps(str(Path(root) / MANIFEST_FILENAME))}); "
            "print(m[m.status == \"dropped\"][[\"split\", \"seq\", \"frame_idx\", \"reason_code\", \"reason\"]]"
            ".to_string())")
    return f"python -c {shlex.quote(code)}"


def echo_failures(rows: list[ManifestRow], root: Path, word: str, show: int) -> None:
    """One line per dropped frame, the first ``show`` of them (its code for machines, its reason for
    people); then how many more and where they are."""
    failed = [r for r in rows if r.status != STATUS_OK]
    for r in failed[:show]:
        click.echo(f"  {word} {r.split}/{r.seq}/{r.frame_idx:06d} [{r.reason_code}]: {r.reason}")
    if len(failed) > show:
        click.echo(f"  ... and {len(failed) - show} more: see {Path(root) / MANIFEST_FILENAME} (status, reason_code, "
                   f"reason columns); list them all with:\n    {dropped_query(root)}")


@click.command(epilog="""\b
Examples:
  spikeprep audit data/store
  spikeprep audit data/store --overlays 20 --crop 256 --max-shift 16
  spikeprep audit data/store --show 50 --curves outputs/failing_curves.png
  spikeprep audit data/store --fix          # fit each sequence's registration and clock map, rebuild, then audit
""")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--crop", "crop_size", type=click.IntRange(min=1),
              help=f"training short side >= this [config or {AuditOptions.crop_size}]")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="take the crop size from this config")
@click.option("--max-shift", "max_shift_ticks", type=click.IntRange(min=1),
              help="scan window shifts of +-this many ticks [a quarter of the window]")
@click.option("--min-corr", default=AuditOptions.min_corr, show_default=True, type=float,
              help="peak correlation below this = spikes do not show this frame")
@click.option("--overlays", default=8, show_default=True, type=click.IntRange(min=0),
              help="labelled overlay PNGs for this many frames, failing ones first (DATA_ROOT/audit/overlays)")
@click.option("--seed", default=0, show_default=True, help="which of the other frames get overlays")
@click.option("--curves", "curves_png", type=click.Path(dir_okay=False, path_type=Path),
              help="write the failing frames' correlation curves here [DATA_ROOT/audit/failing_curves.png]")
@click.option("--show", default=20, show_default=True, type=click.IntRange(min=0),
              help="failing frames listed one per line (the rest: manifest.parquet)")
@click.option("--fix", is_flag=True, help="first estimate each sequence's registration (the RGB frames against "
              "the spikes) and clock map (t_spike = (1 + drift) * t_recorded + offset) from where the spikes match "
              "the blur, keep them in DATA_ROOT/audit/registration/ and audit/clock/, and rebuild the fixed "
              "sequences from RAW; then audit")
@click.option("--registration-model", type=click.Choice(["affine", "homography"]), default="affine", show_default=True,
              help="the transform the audit measures between the RGB frames and the spikes (a beam splitter's small "
              "homography is nearly affine; homography: 8 parameters, for larger perspective)")
@click.option("--max-residual", default=ClockFixOptions.max_residual_ticks, show_default=True, type=float,
              help="--fix: a fit whose RMS residual exceeds this many ticks leaves its sequence unfixed")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="--fix: sequences rebuilt in parallel")
@click.option("--progress/--no-progress", default=True)
def audit_cmd(root, crop_size, config, max_shift_ticks, min_corr, overlays, seed, curves_png, show, fix,
              registration_model, max_residual, workers, progress):
    """Check exposure alignment of spikes and blur frames; drop failing frames; exit 1 if any frame fails."""
    if curves_png is not None:
        refuse_output_in_store(curves_png, "--curves", own=Path(root) / AUDIT_DIRNAME)
    cfg = load_config(config) if config else None
    options = AuditOptions(max_shift_ticks=max_shift_ticks, min_corr=min_corr,
                           crop_size=crop_size or (cfg.DATA.CROP_SIZE if cfg else AuditOptions.crop_size),
                           registration=RegistrationOptions(model=registration_model))
    if fix:
        fixed = fix_store(root, ClockFixOptions(max_residual_ticks=max_residual, audit=options), progress=progress,
                          workers=workers)
        for line in fix_table(fixed):
            click.echo(line)
    report = audit(root, options, overlays=overlays, seed=seed, progress=progress, curves_png=curves_png)
    for line in audit_table(report, options):
        click.echo(line)
    echo_failures(report.rows, root, "FAIL", show)
    drops = crop_drops(report.rows, int(read_store_info(root).ingest_options["crop_size"]), options.crop_size)
    if drops is not None:
        fix = (f"re-run `spikeprep ingest RAW --out {root} --crop {{crop}}` (ingest never voxelized "
               f"{drops.by_ingest} of them)" if drops.by_ingest else f"re-run `spikeprep audit {root} --crop {{crop}}`")
        click.echo(drops.summary(fix))
    if report.overlays:
        click.echo(f"overlays: {report.overlays[0].parent} ({len(report.overlays)} PNG, failing frames first)")
    if report.curves_png is not None:
        click.echo(f"curves of the failing frames: {report.curves_png}")
    elif curves_png is not None:
        click.echo(f"no failing frame has a correlation curve: nothing written to {curves_png}")
    info = read_store_info(root)
    if info.stats is not None:
        click.echo(f"voxel stats over kept training frames: MEAN={info.stats.mean!r} STD={info.stats.std!r}")
    sys.exit(1 if report.failed else 0)


AUDIT_COLUMNS = ("frames", "kept", "dropped", ALIGNED, MISALIGNED, MISMATCH, UNDETERMINED)


def fix_table(report) -> list[str]:
    """``audit --fix``'s lines: per sequence the fitted map (offset in s and ticks, drift, residual, frames used
    of those located and of all) or why it was left unfixed; then what the rebuild did."""
    width = max([len("sequence")] + [len(r.split) + 1 + len(r.seq) for r in report.records]) + 2
    out = registration_fix_table(report.registrations, width)
    out += [f"clock fix ({report.frames_scanned} frames scanned in {report.seconds:.1f} s; t_spike = (1 + drift) * "
           "t_recorded + offset):",
           f"{'sequence':<{width}}{'verdict':>8}{'offset s':>13}{'ticks':>9}{'drift ppm':>11}{'residual':>10}"
           f"{'used/located/frames':>21}"]
    for r in report.records:
        def num(v, fmt):
            return "-" if v is None else format(v, fmt)

        frames = f"{len(r.frames_used)}/{r.frames_located}/{r.frames_total}"
        out.append(f"{r.split + '/' + r.seq:<{width}}{r.verdict:>8}{num(r.offset_s, '+.4e'):>13}"
                   f"{num(r.offset_ticks, '+.2f'):>9}{num(r.drift_ppm, '+.0f'):>11}{num(r.residual_ticks, '.2f'):>10}"
                   f"{frames:>21}")
        if r.reason:
            out.append(f"  left unfixed: {r.reason}")
    out += [f"  {note}" for note in report.notes]
    out.append("residual: RMS of the located shifts about the fitted line (ticks); the fixed windows are the "
               "manifest's t0/t1, the recorded ones its t0_recorded/t1_recorded")
    return out


def registration_fix_table(records, width: int) -> list[str]:
    """``audit --fix``'s registration lines (estimated before the clock): per sequence the verdict, the residual
    misregistration it measured at the frame corners, how far the frames' own estimates spread, frames used."""
    if not records:
        return []

    def num(v):
        return "-" if v is None else f"{v:.2f}"

    out = ["registration fix (estimated before the clock; residual: largest corner displacement, RGB px):",
           f"{'sequence':<{width}}{'verdict':>8}{'residual px':>13}{'spread px':>11}{'used/frames':>13}"]
    for r in records:
        out.append(f"{r.split + '/' + r.seq:<{width}}{r.verdict:>8}{num(r.residual_px):>13}{num(r.spread_px):>11}"
                   f"{f'{len(r.frames_used)}/{r.frames_total}':>13}")
        if r.reason:
            out.append(f"  left as it was ({r.reason_code}): {r.reason}")
    return out


def audit_table(report, options: AuditOptions) -> list[str]:
    """The audit table (one row per sequence, then the totals) and its legend, as lines."""
    lines_of = [(f"{s['split']}/{s['seq']}", s) for s in report.summary()] + [("total", report.totals())]
    width = max(len("sequence"), *(len(name) for name, _ in lines_of)) + 2

    def line(name: str, values: list[str], offset: str) -> str:
        return f"{name:<{width}}" + "".join(f"{v:>{len(c) + 2}}" for c, v in zip(AUDIT_COLUMNS, values)) + f"  {offset}"

    out = [line("sequence", list(AUDIT_COLUMNS), "median offset")]
    for i, (name, s) in enumerate(lines_of):
        if i == len(lines_of) - 1:
            out.append("-" * len(out[0]))
        off = "-" if s["median_offset_ticks"] is None else f"{s['median_offset_ticks']:+.1f} ticks"
        out.append(line(name, [str(s[k]) for k in ("frames", "ok", "dropped", ALIGNED, MISALIGNED, MISMATCH,
                                                   UNDETERMINED)], off))
    out += ["kept / dropped: frames training uses / skips (ingest's drops included); the content check's verdicts:",
            "  aligned: the spikes match the blur best within half a voxel bin of the recorded window (kept)",
            "  misaligned: they match best elsewhere, the offset away (dropped; median offset: the shift to apply)",
            f"  mismatch: peak correlation below {options.min_corr}: the spikes show another scene (dropped)",
            "  undetermined: no single peak (static or flat scene): kept, but nothing was checked"]
    return out + registration_lines(report, options, width)


def registration_lines(report, options: AuditOptions, width: int) -> list[str]:
    """The audit's registration per sequence: the residual misregistration of the RGB frames against the
    spikes at the frame corners (RGB px), or why it was not measured; a note where it exceeds half a pixel."""
    measured = getattr(report, "registration", {})
    if not measured:
        return []
    out = ["registration (residual misregistration of the RGB frames against the spikes, largest displacement of the "
           "frame corners, store RGB px):"]
    for name, est in sorted(measured.items()):
        if not est.trusted:
            out.append(f"  {name:<{width}}not measured ({est.reason_code}): {est.reason}")
            continue
        note = ""
        if est.residual_px >= 0.5:
            note = ("  misregistered: its frames were timed on the registered luma; `spikeprep audit DATA_ROOT --fix` "
                    "resamples them from RAW")
        out.append(f"  {name:<{width}}{est.residual_px:.2f} px over {len(est.used)} frames{note}")
    return out


@click.command(epilog="""\b
Example:
  spikeprep stats data/store --write-config my.yaml
""")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--write-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="write MEAN/STD into this config's DATA.NORM (other lines unchanged)")
def stats_cmd(root, write_config):
    """Print the store's voxel normalisation stats (kept training frames); optionally write them to a config."""
    info = read_store_info(root)
    if info.stats is None:
        raise click.ClickException(f"{root}: no kept training frame, so no stats")
    click.echo(f"K={info.K} frames={info.stats.n_frames} voxels={info.stats.n_voxels} "
               f"MEAN={info.stats.mean!r} STD={info.stats.std!r}")
    if write_config is not None:
        write_config_norm(write_config, info.stats.mean, info.stats.std)
        click.echo(f"wrote DATA.NORM.MEAN/STD into {write_config}")


@click.command(epilog="""\b
Examples:
  spikeprep verify data/store
  spikeprep verify data/store --json outputs/verify.json
""")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the report (a versioned record) here")
@click.option("--show", default=20, show_default=True, type=click.IntRange(min=0), help="problems listed in full")
@click.option("--progress/--no-progress", default=True)
def verify_cmd(root, json_path, show, progress):
    """Check every stored frame against the manifest (chunk checksums, voxel sha256); exit 1 on any problem."""
    from schemas.verify import write_verify_report
    from spikeprep.verify import verify_store

    if json_path is not None:
        refuse_output_in_store(json_path, "--json")
    report = verify_store(root, progress=progress)
    if json_path is not None:
        write_verify_report(json_path, report)
    for p in report.problems[:show]:
        frame = "" if p.frame_idx is None else f" frame {p.frame_idx}"
        click.echo(f"{p.split}/{p.seq}{frame}: {p.path}: {p.problem}")
    if len(report.problems) > show:
        click.echo(f"... and {len(report.problems) - show} more" + (f" (all in {json_path})" if json_path else
                                                                     " (--json PATH lists them all)"))
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    unpaired = f" ({report.unpaired} unpaired)" if report.unpaired else ""
    click.echo(f"verified {report.frames} frames{unpaired} of {report.sequences} sequences in {report.seconds:.1f} s: "
               f"{verdict}")
    if not report.ok:
        sys.exit(1)

