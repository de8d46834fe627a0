"""Compare the spike arm with the spike-free arm: the acceptance rule, motion-boundary metrics, crops.

DESIGN section 8 and the original document's section 8.3: at equal training steps, on the same validation
data, the spike arm passes when

    PSNR (RGB) >= base PSNR - 0.05 dB    and    LPIPS <= base LPIPS + 0.005.

This module reads the two runs' validation reports (``schemas.val_report.ValReport``; ``load_run``),
tabulates both arms at every step both have (overall and on motion boundaries), judges the rule at the last
common step (``judge``), and gathers it all into a ``schemas.compare_report.CompareReport``; the pictures
(side-by-side crops blur | base recon | spike recon | sharp where the sharp frame differs most from the
blurred one, and both arms' curves) are drawn by ``model.compare_figures``.

Usage::

    from model.compare import compare, format_report
    result = compare("exp_spike", "exp_base", outputs="outputs", crops=4, crop_size=96)
    print(format_report(result))        # the table, the verdict, the crops, the written files
    result.passed                       # True / False; result.report is the CompareReport, result.json_path

A run is an experiment name (its reports are ``{outputs}/metrics/val_{exp}_{step}.json``) or a directory
holding one experiment's ``val_*.json`` (its outputs root, against which ``images_dir`` is resolved, is
that directory's parent, the trainer's ``{outputs}/metrics`` layout). Results go to
``{outputs}/metrics/compare_{spike}_vs_{base}_{step}.{json,png}``, and the two arms' curves (training loss
at every step, validation PSNR overall and on motion boundaries, count-zero sensitivity) to
``compare_{spike}_vs_{base}_{step}_curves.png`` (``load_curves``, ``render_curves``). The loss comes from each
run's TensorBoard events (``{outputs}/logs/{exp}/``, the trainer writes ``train/loss_total`` at every step;
the run logs hold it only every ``--log-every`` steps), the validation curves from its ``val_*.json``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from model.compare_figures import (LOSS_TAG, Curves, find_crops, frame_keys, png_path, read_loss_events,
                                   render_curves, render_picture)
from model.report_tables import metric_rows_table
from schemas.baselines import BaselinesReport, read_baselines_report
from schemas.compare_report import (ArmMetrics, CompareReport, RegionPsnrY, RelianceRow, RuleResult, RunRef,
                                    SkippedSteps, TableRow, Verdict, write_compare_report)
from schemas.val_report import (FITTED_FUSE_TYPES, NOT_COMPUTED, PROBE_TITLES, PROBES, Arm, ValReport,
                                format_metric, read_val_report)
from spikeprep.errors import InputError
from spikeprep.store import refuse_output_in_store

PSNR_TOL_DB = 0.05          # spike PSNR may be at most this much below the base (original document 8.3)
LPIPS_TOL = 0.005           # spike LPIPS may be at most this much above the base
# Reports store full-precision floats: a spike PSNR of exactly base - 0.05 must not fail on rounding.
_EPS = 1e-9

_METRIC_FIELDS = ("psnr_rgb", "psnr_y", "ssim", "ssim_y", "lpips")
_METRIC_TITLES = {"psnr_rgb": "PSNR RGB", "psnr_y": "PSNR Y", "ssim": "SSIM", "ssim_y": "SSIM Y", "lpips": "LPIPS"}


# ---- the runs ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One run's validation reports, by step."""

    exp: str
    arm: Arm
    source: Path                 # the metrics directory the reports came from
    outputs: Path                # the outputs root ``images_dir`` is relative to
    reports: dict[int, ValReport]

    def images_path(self, step: int) -> Path | None:
        """The directory of this run's validation images at ``step`` (None when not written)."""
        d = self.reports[step].images_dir
        if d is None:
            return None
        p = Path(d)
        return p if p.is_absolute() else self.outputs / p


_VAL_NAME = re.compile(r"^val_(?P<exp>.+)_(?P<step>\d+)\.json$")


def load_run(run: str | Path, outputs: str | Path = "outputs") -> Run:
    """Find a run's reports: ``run`` is an existing directory of ``val_*.json`` or an experiment name.

    An experiment name is looked up as ``{outputs}/metrics/val_{run}_{step}.json`` (only digits after the
    name, so experiment ``a`` does not pick up ``a_b``'s reports). ``InputError`` when nothing is found,
    a report is unreadable, or the reports mix experiments or arms.
    """
    path = Path(run)
    if path.is_dir():
        metrics_dir, files = path, sorted(path.glob("val_*.json"))
        outputs_root = path.parent
        exps = sorted({m["exp"] for f in files if (m := _VAL_NAME.match(f.name))})
        if len(exps) > 1:
            raise InputError(path, f"holds validation reports of several experiments ({', '.join(exps)})",
                             f"name the experiment instead: spikeprep compare EXP_SPIKE EXP_BASE "
                             f"--outputs {path.parent}")
        what = f"no validation report (val_*.json) in {path}"
    else:
        outputs_root = Path(outputs)
        metrics_dir = outputs_root / "metrics"
        prefix = f"val_{run}_"
        files = sorted(f for f in metrics_dir.glob(f"{_glob_escape(prefix)}*.json")
                       if f.name[len(prefix):-len(".json")].isdigit())
        what = (f"no validation report for experiment {str(run)!r} (looked for "
                f"{metrics_dir / (prefix + '<step>.json')}; it is not a directory either)")
    if not files:
        raise InputError(None, what, "train and validate the run first (spikeprep train), pass --outputs "
                                     "with the run's outputs root, or give the metrics directory itself")
    reports: dict[int, ValReport] = {}
    for f in files:
        try:
            rep = read_val_report(f)
        except ValueError as err:
            raise InputError(None, str(err), "re-run that validation, or remove the file") from err
        m = _VAL_NAME.match(f.name)
        if m is None or int(m["step"]) != rep.step or m["exp"] != rep.exp:
            raise InputError(f, f"report says exp {rep.exp!r} step {rep.step}, which its name does not match",
                             "keep the trainer's file names (val_{exp}_{step}.json)")
        reports[rep.step] = rep
    arms = sorted({r.arm for r in reports.values()})
    exps = sorted({r.exp for r in reports.values()})
    if len(arms) > 1 or len(exps) > 1:
        raise InputError(metrics_dir, f"reports of one run mix arms {arms} / experiments {exps}",
                         "keep each run's reports under its own experiment name")
    return Run(exp=exps[0], arm=arms[0], source=metrics_dir, outputs=outputs_root, reports=reports)


def _glob_escape(text: str) -> str:
    # An experiment name is matched literally, even one with glob metacharacters.
    return re.sub(r"([\[\]*?])", r"[\1]", text)


# ---- the rule ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """What ``compare`` found: the report, and where it was written (``json_path``; None with ``write=False``)."""

    report: CompareReport
    json_path: Path | None = None

    @property
    def verdict(self) -> Verdict:
        """The acceptance rule as judged (``report.verdict``)."""
        return self.report.verdict

    @property
    def passed(self) -> bool:
        """Whether the spike arm passed the acceptance rule (``verdict.passed``)."""
        return self.report.passed


def _check_comparable(spike: Run, base: Run, steps: list[int]) -> None:
    """Both arms must have been validated on the same frames, else equal steps mean nothing."""
    for s in steps:
        a, b = spike.reports[s], base.reports[s]
        diffs = []
        if a.split != b.split:
            diffs.append(f"split {a.split!r} vs {b.split!r}")
        if a.overall.frames != b.overall.frames:
            diffs.append(f"{a.overall.frames} vs {b.overall.frames} frames")
        if sorted(a.per_sequence) != sorted(b.per_sequence):
            diffs.append(f"sequences {sorted(a.per_sequence)} vs {sorted(b.per_sequence)}")
        if not math.isclose(a.boundary_fraction, b.boundary_fraction):
            diffs.append(f"boundary fraction {a.boundary_fraction} vs {b.boundary_fraction}")
        if None not in (a.static_fraction, b.static_fraction) and not math.isclose(a.static_fraction,
                                                                                   b.static_fraction):
            diffs.append(f"static fraction {a.static_fraction} vs {b.static_fraction}")
        if diffs:
            raise InputError(None, f"at step {s} the two runs were validated differently ({'; '.join(diffs)}): "
                                   f"spike {spike.exp!r}, base {base.exp!r}",
                             "validate both arms on the same store, split and settings")


def common_steps(spike: Run, base: Run, step: int | None = None) -> tuple[list[int], int]:
    """The steps both runs validated and the one to judge (``step``, default the last); ``InputError`` for
    runs that cannot be compared (same arm, base given first, no common step, validated differently)."""
    if spike.arm == base.arm:
        raise InputError(None, f"both runs are {spike.arm!r} arms ({spike.exp!r}, {base.exp!r})",
                         "compare a spike run with a --no-spike (base) run")
    if spike.arm != "spike":
        raise InputError(None, f"the first run {spike.exp!r} is the base arm and the second {base.exp!r} the "
                               f"spike arm", f"give the spike run first: spikeprep compare {base.exp} {spike.exp}")
    steps = sorted(set(spike.reports) & set(base.reports))
    if not steps:
        raise InputError(None, f"no common validation step: spike {spike.exp!r} has {sorted(spike.reports)}, "
                               f"base {base.exp!r} has {sorted(base.reports)}",
                         "compare at equal steps: train both arms with the same VAL_EVERY and step count")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise InputError(None, f"step {step} is not validated in both runs (common steps: {steps})",
                         "pick one of the common steps, or leave --step out for the last")
    _check_comparable(spike, base, steps)
    return steps, step


def _lpips_note(run: Run, step: int) -> str | None:
    rep = run.reports[step]
    if rep.overall.lpips is not None and rep.boundary.lpips is not None:
        return None
    if rep.lpips_note:
        return rep.lpips_note
    if rep.overall.lpips is not None:
        return "not computed on motion boundaries (the report has no boundary LPIPS)"
    return "not computed (the report gives no reason)"


def judge(spike: Run, base: Run, step: int) -> Verdict:
    """The acceptance rule at ``step`` (overall metrics; boundary metrics are reported, not judged)."""
    a, b = spike.reports[step].overall, base.reports[step].overall
    if a.psnr_rgb is None or b.psnr_rgb is None:
        missing = spike.exp if a.psnr_rgb is None else base.exp
        raise InputError(None, f"run {missing!r} has no PSNR (RGB) at step {step}, so the acceptance rule "
                               f"cannot be judged", "re-run that validation")
    margin = a.psnr_rgb - b.psnr_rgb
    psnr_ok = margin >= -PSNR_TOL_DB - _EPS if math.isfinite(margin) else a.psnr_rgb >= b.psnr_rgb
    psnr = RuleResult(rule=f"PSNR RGB >= base - {PSNR_TOL_DB} dB", status="PASS" if psnr_ok else "FAIL",
                      spike=a.psnr_rgb, base=b.psnr_rgb, margin=margin if math.isfinite(margin) else None)
    rule = f"LPIPS <= base + {LPIPS_TOL}"
    if a.lpips is None or b.lpips is None:
        missing = [(r, r.reports[step].lpips_note or "no reason given")
                   for r, m in ((spike, a), (base, b)) if m.lpips is None]
        if len(missing) == 2 and missing[0][1] == missing[1][1]:
            reason = f"LPIPS not computed in either run: {missing[0][1]}"
        else:
            reason = "LPIPS not computed: " + "; ".join(f"{r.arm} run {r.exp!r}: {note}" for r, note in missing)
        lp = RuleResult(rule=rule, status="not evaluated", spike=a.lpips, base=b.lpips, margin=None, reason=reason)
        lpips_ok = None
    else:
        lmargin = a.lpips - b.lpips
        lpips_ok = lmargin <= LPIPS_TOL + _EPS
        lp = RuleResult(rule=rule, status="PASS" if lpips_ok else "FAIL", spike=a.lpips, base=b.lpips,
                        margin=lmargin)
    passed = psnr_ok and lpips_ok is not False
    if not passed:
        failed = [r.rule for r in (psnr, lp) if r.status == "FAIL"]
        summary = "FAIL: " + "; ".join(failed)
        if lpips_ok is None:
            summary += " (the LPIPS rule was not evaluated: LPIPS not computed)"
    elif lpips_ok is None:
        # Never a silent pass: say that only half of the rule was checked (the reason is on the line above).
        summary = "PASS on PSNR only; the LPIPS rule was not evaluated (LPIPS not computed)"
    else:
        summary = "PASS"
    return Verdict(step=step, psnr=psnr, lpips=lp, result="PASS" if passed else "FAIL", summary=summary)


# ---- the report ----------------------------------------------------------------------------------------

def _table_rows(spike: Run, base: Run, steps: list[int]) -> list[TableRow]:
    def static(s: int) -> ArmMetrics | None:
        a, b = spike.reports[s].static, base.reports[s].static
        return None if a is None or b is None else ArmMetrics(spike=a, base=b)

    return [TableRow(step=s,
                     overall=ArmMetrics(spike=spike.reports[s].overall, base=base.reports[s].overall),
                     boundary=ArmMetrics(spike=spike.reports[s].boundary, base=base.reports[s].boundary),
                     static=static(s))
            for s in steps]


def _reliance_rows(spike: Run, steps: list[int]) -> list[RelianceRow]:
    """Per common step where the spike run measured it: PSNR-Y with the true voxels and each probe, and
    the count-zero sensitivity (true minus count-zero), overall and on motion boundaries."""
    rows = []
    for s in steps:
        rep = spike.reports[s]
        if rep.reliance is None:
            continue
        probes = {p: None if (m := getattr(rep.reliance, p)) is None else
                  RegionPsnrY(overall=m.overall.psnr_y, boundary=m.boundary.psnr_y) for p in PROBES}
        rows.append(RelianceRow(step=s, db_from_spikes=rep.db_from_spikes(),
                                boundary_db_from_spikes=rep.db_from_spikes(region="boundary"),
                                true=RegionPsnrY(overall=rep.overall.psnr_y, boundary=rep.boundary.psnr_y),
                                **probes))
    return rows


def _run_ref(run: Run) -> RunRef:
    return RunRef(exp=run.exp, arm=run.arm, source=str(run.source), steps=sorted(run.reports))


def build_report(spike: Run, base: Run, steps: list[int], verdict: Verdict, **parts) -> CompareReport:
    """The report of ``judge``'s ``verdict`` over the common ``steps``, its ``table_markdown`` included;
    ``parts``: the report's other fields (``baselines``, ``picture``, ``picture_note``, ``crops``,
    ``curves``, ``curves_notes``)."""
    last = spike.reports[verdict.step]
    draft = CompareReport(
        spike=_run_ref(spike), base=_run_ref(base), split=last.split, frames=last.overall.frames,
        boundary_fraction=last.boundary_fraction, steps=steps,
        static_fraction=last.static_fraction if base.reports[verdict.step].static is not None else None,
        spike_fuse_type=last.fuse_type,
        skipped_steps=SkippedSteps(spike_only=sorted(set(spike.reports) - set(steps)),
                                   base_only=sorted(set(base.reports) - set(steps))),
        table=_table_rows(spike, base, steps), table_markdown="",
        lpips_notes={r.arm: n for r in (spike, base) if (n := _lpips_note(r, verdict.step)) is not None},
        reliance=_reliance_rows(spike, steps), reliance_note=last.reliance_note, verdict=verdict, **parts)
    # The markdown is the table of the record's own rows: it is drawn from the validated draft.
    return draft.model_copy(update={"table_markdown": format_table(draft)})


# ---- formatting ----------------------------------------------------------------------------------------

def _delta(spike: float | None, base: float | None, name: str) -> str:
    delta = None if spike is None or base is None else spike - base
    if delta is None or not math.isfinite(delta):
        return "-"
    return f"{delta:+.4f}" if name in ("ssim", "ssim_y", "lpips") else f"{delta:+.2f}"


def format_table(report: CompareReport) -> str:
    """Markdown tables, overall, on the static half and on motion boundaries: per step, each metric for spike,
    base, delta; then the spike run's sensitivity probes, the baselines, why LPIPS is missing and the skipped
    steps."""
    head = ["step"]
    for name in _METRIC_FIELDS:
        t = _METRIC_TITLES[name]
        head += [f"{t} spike", f"{t} base", f"{t} Δ"]
    lines = []
    static = ("static", f"Static half (per frame the {report.static_fraction:.0%} of pixels where sharp and blur "
                        f"differ least)") if report.static_fraction is not None else None
    regions = [("overall", f"Overall ({report.split}, {report.frames} frames)"), *([static] if static else []),
               ("boundary", f"Motion boundaries (per frame the {report.boundary_fraction:.0%} of pixels where "
                            f"sharp and blur differ most)")]
    for scope, title in regions:
        lines += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in report.table:
            both = getattr(row, scope)
            cells = [str(row.step)]
            for name in _METRIC_FIELDS:
                va, vb = (None, None) if both is None else (getattr(both.spike, name), getattr(both.base, name))
                cells += [format_metric(va, name), format_metric(vb, name), _delta(va, vb, name)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if static is None:
        lines += ["Static half: not computed (a run's validation reports predate it; re-validate with this "
                  "version)", ""]
    lines += _reliance_table(report)
    lines += _baselines_table(report)
    for arm, note in report.lpips_notes.items():
        lines.append(f"LPIPS {NOT_COMPUTED} ({arm} run): {note}")
    skipped = report.skipped_steps
    if skipped.spike_only or skipped.base_only:
        lines.append(f"skipped steps (validated in one run only): spike {skipped.spike_only or '-'}, "
                     f"base {skipped.base_only or '-'}")
    return "\n".join(lines).rstrip() + "\n"


SENSITIVITY_NOTE = ("test-time sensitivity probes, diagnostics: a model that reads only the spike total and one "
                    "that reads their timing can both lose under them; what the spikes are worth is measured by "
                    "training (spike - base above; spike - totals-only: an arm trained with DATA.TOTALS_ONLY)")


def fitted_head_note(fuse_type: str | None) -> str | None:
    """Why a head fitted with counts has a large count-zero sensitivity (None for other heads)."""
    if fuse_type not in FITTED_FUSE_TYPES:
        return None
    return (f"{fuse_type} starts at a least-squares map fitted with the counts present, so with every count "
            "zero its output is far from the blur by construction: its count-zero sensitivity is not what the "
            "spikes add (spike - base is)")


def _reliance_table(report: CompareReport) -> list[str]:
    rows = report.reliance
    if not rows:
        note = report.reliance_note
        return [f"Sensitivity probes: not measured{f' ({note})' if note else ''}", ""]
    probes = [p for p in PROBES if any(getattr(r, p) is not None for r in rows)]
    head = ["step", "count-zero sensitivity", "boundary count-zero sensitivity", "PSNR Y true"] + \
           [f"PSNR Y {PROBE_TITLES[p]}" for p in probes] + ["boundary PSNR Y true"] + \
           [f"boundary PSNR Y {PROBE_TITLES[p]}" for p in probes]
    lines = [f"### Sensitivity probes ({report.spike.exp}: the same frames with altered voxels; count-zero "
             f"sensitivity = PSNR Y true - count-zero)", "", f"({SENSITIVITY_NOTE})", ""]
    if (why := fitted_head_note(report.spike_fuse_type)) is not None:
        lines += [f"({why})", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        measured = [getattr(r, p) for p in probes]
        cells = [str(r.step), _signed(r.db_from_spikes), _signed(r.boundary_db_from_spikes),
                 format_metric(r.true.overall, "psnr")]
        cells += [format_metric(m.overall if m else None, "psnr") for m in measured]
        cells += [format_metric(r.true.boundary, "psnr")]
        cells += [format_metric(m.boundary if m else None, "psnr") for m in measured]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _signed(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def _baselines_table(report: CompareReport) -> list[str]:
    """The non-learned baselines of the store, under both arms at the judged step, scored the same way."""
    b = report.baselines
    if b is None:
        return []
    judged = next(r for r in report.table if r.step == report.verdict.step)
    entries = [(f"{arm} arm {ref.exp}",
                {region: None if (both := getattr(judged, region)) is None else getattr(both, arm)
                 for region in ("overall", "static", "boundary")}, None)
               for arm, ref in (("spike", report.spike), ("base", report.base))]
    entries += [(f"{r.name}: {r.description}", r.regions(), r.note) for r in b.rows]
    lines = [f"### Both arms at step {report.verdict.step} and the non-learned baselines ({b.split} of {b.store}, "
             f"{b.frames} frames)", "", *metric_rows_table(entries)]
    if report.frames != b.frames:
        lines.append(f"note: the baselines scored {b.frames} frames, the runs {report.frames} (run `spikeprep "
                     f"baselines` with --clip-len DATA.CLIP_LEN to score the frames validation scores)")
    return lines + [""]


def format_report(comp: Comparison) -> str:
    """The table, the verdict (each rule), the crops and the files written: what the CLI prints."""
    rep, v = comp.report, comp.report.verdict
    out = [f"spike: {rep.spike.exp} ({rep.spike.source})   base: {rep.base.exp} ({rep.base.source})", "",
           rep.table_markdown,
           f"Acceptance at step {v.step} (equal steps, overall metrics):"]
    for r in (v.psnr, v.lpips):
        if r.status == "not evaluated":
            out.append(f"  {r.rule}: not evaluated ({r.reason})")
        else:
            kind = "lpips" if "LPIPS" in r.rule else "psnr"
            out.append(f"  {r.rule}: {r.status} (spike {format_metric(r.spike, kind)} vs base "
                       f"{format_metric(r.base, kind)})")
    out.append(f"  result: {v.summary}")
    if rep.crops:
        out.append(f"crops at the strongest motion boundaries (step {v.step}):")
        for c in rep.crops:
            out.append(f"  {c.seq}/{c.frame:06d} y={c.y} x={c.x} size={c.size} |sharp-blur|={c.score:.1f} "
                       f"PSNR base {format_metric(c.psnr_rgb_base, 'psnr')} "
                       f"spike {format_metric(c.psnr_rgb_spike, 'psnr')}")
    if rep.picture is not None:
        out.append(f"picture: {rep.picture}")
    if rep.picture_note:
        out.append(f"picture: none ({rep.picture_note})")
    if rep.curves is not None:
        out.append(f"curves: {rep.curves}")
    for arm, note in rep.curves_notes.items():
        out.append(f"curves: no loss curve for the {arm} run ({note})")
    if comp.json_path is not None:
        out.append(f"json: {comp.json_path}")
    return "\n".join(out)


# ---- the pictures' inputs ------------------------------------------------------------------------------

def _picture_blocker(spike: Run, base: Run, step: int) -> str | None:
    """Why the picture cannot be drawn at ``step`` (None when it can)."""
    problems = []
    for run in (spike, base):
        d = run.images_path(step)
        if d is None or not d.is_dir():
            have = [s for s in sorted(run.reports) if (p := run.images_path(s)) is not None and p.is_dir()]
            where = "not written" if d is None else f"{d} missing"
            problems.append(f"{run.arm} run {run.exp!r}: images of step {step} {where}"
                            + (f" (it has images at steps {have})" if have else ""))
    if problems:
        return ("the picture needs the validation images (blur/recon/sharp PNGs) of the compared step in both "
                "runs, which the trainer writes at least at the final validation; " + "; ".join(problems))
    spike_images = spike.images_path(step)
    ks, kb = frame_keys(spike_images), frame_keys(base.images_path(step))
    if not ks:
        return f"no {{seq}}/{{frame}}_recon.png in {spike_images}"
    if ks != kb:
        return (f"the two runs' images at step {step} cover different frames ({len(ks)} vs {len(kb)}); "
                f"the validation was probably interrupted while writing them")
    missing = [str(png_path(spike_images, k, kind)) for k in ks for kind in ("blur", "sharp")
               if not png_path(spike_images, k, kind).is_file()]
    if missing:
        return f"{len(missing)} blur/sharp PNG missing, e.g. {missing[0]}"
    return None


def load_curves(run: Run) -> Curves:
    """``run``'s curves: loss from ``{outputs}/logs/{exp}/`` events, validation from its reports."""
    events_dir = run.outputs / "logs" / run.exp
    loss, note = {}, None
    if not events_dir.is_dir():
        note = f"no TensorBoard events: {events_dir} does not exist (LOG.TENSORBOARD off, or another outputs root)"
    else:
        loss = read_loss_events(events_dir)
        if not loss:
            note = f"no {LOSS_TAG} scalars in the TensorBoard events of {events_dir}"
    steps = sorted(run.reports)
    reps = [run.reports[s] for s in steps]
    return Curves(exp=run.exp, arm=run.arm, loss_steps=list(loss), loss=list(loss.values()), loss_note=note,
                  val_steps=steps, psnr_rgb=[r.overall.psnr_rgb for r in reps],
                  boundary_psnr_rgb=[r.boundary.psnr_rgb for r in reps],
                  db_from_spikes=[r.db_from_spikes() if r.reliance is not None else None for r in reps],
                  boundary_db_from_spikes=[r.db_from_spikes(region="boundary") if r.reliance is not None else None
                                           for r in reps])


# ---- the whole command ---------------------------------------------------------------------------------

def _read_baselines(path: str | Path, split: str) -> BaselinesReport:
    try:
        report = read_baselines_report(path)
    except ValueError as err:
        raise InputError(None, str(err), "run `spikeprep baselines DATA_ROOT` first, or drop --baselines") from err
    if report.split != split:
        raise InputError(Path(path), f"scores split {report.split!r}, the runs validated on {split!r}",
                         "run `spikeprep baselines` on the runs' val split")
    return report


def _crops(spike: Run, base: Run, step: int, crops: int, crop_size: int, png: Path, write: bool) -> dict:
    """The report's picture fields: the crops found (drawn into ``png`` when ``write``), or why there are none."""
    if crops <= 0:
        return dict(picture_note="no crops asked for (--crops 0)")
    blocker = _picture_blocker(spike, base, step)
    if blocker is not None:
        return dict(picture_note=blocker)
    spots = find_crops(spike.images_path(step), crops, crop_size)
    if not write:
        return dict(crops=spots)
    drawn = render_picture(spots, png, spike_exp=spike.exp, spike_images=spike.images_path(step),
                           base_exp=base.exp, base_images=base.images_path(step))
    return dict(crops=drawn, picture=str(png))


def compare(run_spike: str | Path, run_base: str | Path, outputs: str | Path = "outputs", crops: int = 4,
            crop_size: int = 96, step: int | None = None, write: bool = True,
            baselines: str | Path | None = None) -> Comparison:
    """Load both runs, judge the rule, draw the crops, write ``compare_{spike}_vs_{base}_{step}.{json,png}``.

    ``InputError`` for runs that cannot be compared (missing, same arm, no common step, validated
    differently). A missing picture is not an error: ``picture_note`` says why, and the table stands.
    """
    if write:                            # before anything is read: the report would land among the store's files
        refuse_output_in_store(Path(outputs) / "metrics", "compare's report folder (--outputs OUTPUTS/metrics)")
    spike, base = load_run(run_spike, outputs), load_run(run_base, outputs)
    steps, step = common_steps(spike, base, step)
    verdict = judge(spike, base, step)
    parts = {}
    if baselines is not None:
        parts["baselines"] = _read_baselines(baselines, spike.reports[step].split)
    metrics_dir = Path(outputs) / "metrics"
    stem = f"compare_{spike.exp}_vs_{base.exp}_{step}"
    png = metrics_dir / f"{stem}.png"
    parts.update(_crops(spike, base, step, crops, crop_size, png, write))
    if not write:
        return Comparison(build_report(spike, base, steps, verdict, **parts))
    if "picture" not in parts and png.exists():
        png.unlink()      # an earlier compare's picture would contradict this JSON's "picture": null
    curves = [load_curves(spike), load_curves(base)]
    parts["curves_notes"] = {c.arm: c.loss_note for c in curves if c.loss_note}
    parts["curves"] = str(render_curves(curves, metrics_dir / f"{stem}_curves.png"))
    report = build_report(spike, base, steps, verdict, **parts)
    # NaN and inf are written as JSON's NaN / Infinity: an identical pair has PSNR inf, as in the val reports.
    return Comparison(report, write_compare_report(metrics_dir / f"{stem}.json", report))
