"""Markdown tables of metric rows: ``spikeprep baselines``' table and the baselines table of ``spikeprep compare``.

Every cell goes through ``schemas.val_report.format_metric``, the one number format of every report. No torch:
``spikeprep compare`` prints these tables without loading the metrics stack.
"""
from __future__ import annotations

from schemas.baselines import BaselinesReport
from schemas.val_report import Metrics, format_metric

# (column title, region, metric key): one row per restoration, the issue-29 columns of every comparison.
TABLE_COLUMNS = (("PSNR RGB", "overall", "psnr_rgb"), ("PSNR Y", "overall", "psnr_y"), ("SSIM", "overall", "ssim"),
                 ("SSIM Y", "overall", "ssim_y"), ("static PSNR Y", "static", "psnr_y"),
                 ("static SSIM Y", "static", "ssim_y"), ("boundary PSNR RGB", "boundary", "psnr_rgb"),
                 ("boundary PSNR Y", "boundary", "psnr_y"), ("boundary SSIM", "boundary", "ssim"))
TABLE_HEAD = ["restoration", *(title for title, _, _ in TABLE_COLUMNS)]


def metric_rows_table(entries: list[tuple[str, dict[str, Metrics | None] | None, str | None]]) -> list[str]:
    """Markdown lines: one row per ``(name, {region: metrics}, note)`` (regions ``overall``, ``static``,
    ``boundary``; a region missing or None, as in reports before the static half, prints ``not computed``); a
    row without metrics (None) shows its note."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for name, regions, note in entries:
        if regions is None:
            lines.append(f"| {name} | {note} |" + " |" * (len(TABLE_HEAD) - 2))
            continue
        cells = [format_metric(None if (m := regions.get(region)) is None else getattr(m, key), key)
                 for _, region, key in TABLE_COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines


def format_baselines(report: BaselinesReport) -> str:
    """The baselines report as a markdown table (what ``spikeprep baselines`` prints)."""
    static = ("" if report.static_fraction is None else
              f"static = the {report.static_fraction:.0%} where they differ least; ")
    lines = [f"### Non-learned baselines: {report.split} of {report.store} ({report.frames} frames, K={report.num_bins}; "
             f"{static}boundary = per frame the {report.boundary_fraction:.0%} of pixels where sharp and blur differ "
             f"most)", "", *metric_rows_table([(f"{r.name}: {r.description}", r.regions(), r.note)
                                               for r in report.rows])]
    if report.lpips_note:
        lines.append(f"LPIPS: {report.lpips_note}")
    return "\n".join(lines)
