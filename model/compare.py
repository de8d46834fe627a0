"""Compare the spike arm with the spike-free arm: the acceptance rule, motion-boundary metrics, crops.

DESIGN section 8 and the original document's section 8.3: at equal training steps, on the same validation
data, the spike arm passes when

    PSNR (RGB) >= base PSNR - 0.05 dB    and    LPIPS <= base LPIPS + 0.005.

This module reads the two runs' validation reports (``schemas.val_report.ValReport``), tabulates both arms at
every step both have (overall and on motion boundaries), judges the rule at the last common step, and
draws side-by-side crops (blur | base recon | spike recon | sharp) where the sharp frame differs most from
the blurred one, from the validation images of that step.

Usage::

    from model.compare import compare, format_report
    result = compare("exp_spike", "exp_base", outputs="outputs", crops=4, crop_size=96)
    print(format_report(result))        # the table, the verdict, the crops, the written files
    result.passed                       # True / False; result.json_path, result.picture_path

A run is an experiment name (its reports are ``{outputs}/metrics/val_{exp}_{step}.json``) or a directory
holding one experiment's ``val_*.json`` (its outputs root, against which ``images_dir`` is resolved, is
that directory's parent, the trainer's ``{outputs}/metrics`` layout). Results go to
``{outputs}/metrics/compare_{spike}_vs_{base}_{step}.{json,png}``, and the two arms' curves (training loss
at every step, validation PSNR overall and on motion boundaries, dB from the spikes) to
``compare_{spike}_vs_{base}_{step}_curves.png`` (``load_curves``, ``render_curves``). The loss comes from each
run's TensorBoard events (``{outputs}/logs/{exp}/``, the trainer writes ``train/loss_total`` at every step;
the run logs hold it only every ``--log-every`` steps), the validation curves from its ``val_*.json``.
"""
from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.baselines import BaselinesReport, read_baselines_report
from schemas.val_report import PROBE_TITLES, PROBES, Metrics, ValReport, read_val_report
from schemas.atomic import atomic_path, atomic_write_text
from spikeprep.errors import InputError
from spikeprep.images import read_rgb

COMPARE_VERSION = 1
PSNR_TOL_DB = 0.05          # spike PSNR may be at most this much below the base (original document 8.3)
LPIPS_TOL = 0.005           # spike LPIPS may be at most this much above the base
# Reports store full-precision floats: a spike PSNR of exactly base - 0.05 must not fail on rounding.
_EPS = 1e-9

# Picture layout (pixels); tests and readers use ``CropSpot.boxes`` rather than re-deriving it.
SEP = 2                     # separator between tiles and around the picture
HEADER_H = 14               # strip with the column titles
LABEL_H = 12                # strip above each row: frame name, PSNR on the crop
COLUMNS = ("blur", "base", "spike", "sharp")
_BG = (48, 48, 48)          # separator colour
_STRIP = (255, 255, 255)
_TEXT = (0, 0, 0)

_METRIC_FIELDS = ("psnr_rgb", "psnr_y", "ssim", "lpips")
_METRIC_TITLES = {"psnr_rgb": "PSNR RGB", "psnr_y": "PSNR Y", "ssim": "SSIM", "lpips": "LPIPS"}
NOT_COMPUTED = "not computed"


# ---- the runs ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One run's validation reports, by step."""

    exp: str
    arm: str
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


# ---- table and verdict ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleResult:
    """One rule of the acceptance test: PASS, FAIL or "not evaluated" (with the reason)."""

    rule: str
    status: str
    spike: float | None
    base: float | None
    margin: float | None          # spike - base
    reason: str | None = None

    def as_dict(self) -> dict:
        """The rule's JSON form (``rule, status, spike, base, margin, reason``)."""
        return dict(rule=self.rule, status=self.status, spike=self.spike, base=self.base,
                    margin=self.margin, reason=self.reason)


@dataclass(frozen=True)
class Verdict:
    """The acceptance rule judged at ``step``: both rules, the overall result and a one-line summary.

    ``passed`` is True when the PSNR rule passes and the LPIPS rule did not fail (it may be not evaluated;
    ``summary`` then says so).
    """

    step: int
    psnr: RuleResult
    lpips: RuleResult
    passed: bool
    summary: str                  # "PASS", "FAIL: ...", or "PASS on PSNR only (LPIPS not evaluated: ...)"

    def as_dict(self) -> dict:
        """The verdict's JSON form; ``result`` is ``"PASS"`` or ``"FAIL"``."""
        return dict(step=self.step, psnr=self.psnr.as_dict(), lpips=self.lpips.as_dict(),
                    result="PASS" if self.passed else "FAIL", summary=self.summary)


@dataclass(frozen=True)
class CropSpot:
    """One crop of the picture: where in the val frame, how strong, and where in the picture."""

    seq: str
    frame: int
    y: int
    x: int
    size: int
    score: float                  # mean |sharp - blur| over the window and RGB, 0..255
    psnr_rgb_base: float | None = None
    psnr_rgb_spike: float | None = None
    boxes: dict[str, list[int]] = field(default_factory=dict)   # column -> [x0, y0, x1, y1] in the picture

    def as_dict(self) -> dict:
        """The crop's JSON form (all fields)."""
        return dict(seq=self.seq, frame=self.frame, y=self.y, x=self.x, size=self.size, score=self.score,
                    psnr_rgb_base=self.psnr_rgb_base, psnr_rgb_spike=self.psnr_rgb_spike, boxes=self.boxes)


@dataclass
class Comparison:
    """Everything ``compare`` found; ``as_dict`` is the JSON written next to the picture."""

    spike: Run
    base: Run
    steps: list[int]
    spike_only: list[int]
    base_only: list[int]
    verdict: Verdict
    lpips_notes: dict[str, str]   # why LPIPS is missing, per arm (only where it is)
    crops: list[CropSpot] = field(default_factory=list)
    picture_path: Path | None = None
    picture_note: str | None = None
    json_path: Path | None = None
    baselines: BaselinesReport | None = None
    curves_path: Path | None = None
    curves_notes: dict[str, str] = field(default_factory=dict)   # per arm: why its loss curve is missing

    @property
    def passed(self) -> bool:
        """Whether the spike arm passed the acceptance rule (``verdict.passed``)."""
        return self.verdict.passed

    @property
    def step(self) -> int:
        """The training step the verdict was judged at (``verdict.step``)."""
        return self.verdict.step

    def rows(self) -> list[dict]:
        """The table: per common step, both arms' overall and boundary metrics."""
        return [dict(step=s,
                     overall=dict(spike=_mdict(self.spike.reports[s].overall),
                                  base=_mdict(self.base.reports[s].overall)),
                     boundary=dict(spike=_mdict(self.spike.reports[s].boundary),
                                   base=_mdict(self.base.reports[s].boundary)))
                for s in self.steps]

    def reliance_rows(self) -> list[dict]:
        """Per common step where the spike run measured it: PSNR-Y with the true voxels and each probe, and
        dB from the spikes (true minus count-zero), overall and on motion boundaries."""
        rows = []
        for s in self.steps:
            rep = self.spike.reports[s]
            if rep.reliance is None:
                continue
            row = dict(step=s, db_from_spikes=rep.db_from_spikes(),
                       boundary_db_from_spikes=rep.db_from_spikes(region="boundary"),
                       true=dict(overall=rep.overall.psnr_y, boundary=rep.boundary.psnr_y))
            for probe in PROBES:
                m = getattr(rep.reliance, probe)
                row[probe] = None if m is None else dict(overall=m.overall.psnr_y, boundary=m.boundary.psnr_y)
            rows.append(row)
        return rows

    def as_dict(self) -> dict:
        """The JSON written next to the picture: both runs, the table, the verdict, the picture and crops."""
        last = self.spike.reports[self.step]
        return dict(
            version=COMPARE_VERSION,
            spike=dict(exp=self.spike.exp, arm=self.spike.arm, source=str(self.spike.source),
                       steps=sorted(self.spike.reports)),
            base=dict(exp=self.base.exp, arm=self.base.arm, source=str(self.base.source),
                      steps=sorted(self.base.reports)),
            split=last.split, frames=last.overall.frames, boundary_fraction=last.boundary_fraction,
            steps=self.steps, skipped_steps=dict(spike_only=self.spike_only, base_only=self.base_only),
            table=self.rows(), table_markdown=format_table(self), lpips_notes=self.lpips_notes,
            reliance=self.reliance_rows(),
            baselines=None if self.baselines is None else self.baselines.model_dump(mode="json"),
            verdict=self.verdict.as_dict(),
            picture=None if self.picture_path is None else str(self.picture_path),
            picture_note=self.picture_note, crops=[c.as_dict() for c in self.crops],
            curves=None if self.curves_path is None else str(self.curves_path), curves_notes=self.curves_notes)


def _mdict(m: Metrics) -> dict:
    return m.model_dump(mode="json")


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
        if diffs:
            raise InputError(None, f"at step {s} the two runs were validated differently ({'; '.join(diffs)}): "
                                   f"spike {spike.exp!r}, base {base.exp!r}",
                             "validate both arms on the same store, split and settings")


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
    psnr = RuleResult(f"PSNR RGB >= base - {PSNR_TOL_DB} dB", "PASS" if psnr_ok else "FAIL",
                      a.psnr_rgb, b.psnr_rgb, margin if math.isfinite(margin) else None)
    rule = f"LPIPS <= base + {LPIPS_TOL}"
    if a.lpips is None or b.lpips is None:
        missing = [(r, r.reports[step].lpips_note or "no reason given")
                   for r, m in ((spike, a), (base, b)) if m.lpips is None]
        if len(missing) == 2 and missing[0][1] == missing[1][1]:
            reason = f"LPIPS not computed in either run: {missing[0][1]}"
        else:
            reason = "LPIPS not computed: " + "; ".join(f"{r.arm} run {r.exp!r}: {note}" for r, note in missing)
        lp = RuleResult(rule, "not evaluated", a.lpips, b.lpips, None, reason=reason)
        lpips_ok = None
    else:
        lmargin = a.lpips - b.lpips
        lpips_ok = lmargin <= LPIPS_TOL + _EPS
        lp = RuleResult(rule, "PASS" if lpips_ok else "FAIL", a.lpips, b.lpips, lmargin)
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
    return Verdict(step=step, psnr=psnr, lpips=lp, passed=passed, summary=summary)


def compare_reports(spike: Run, base: Run, step: int | None = None) -> Comparison:
    """Table and verdict of two loaded runs (no images). ``step`` defaults to the last common step."""
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
    notes = {r.arm: n for r in (spike, base) if (n := _lpips_note(r, step)) is not None}
    return Comparison(spike=spike, base=base, steps=steps,
                      spike_only=sorted(set(spike.reports) - set(steps)),
                      base_only=sorted(set(base.reports) - set(steps)),
                      verdict=judge(spike, base, step), lpips_notes=notes)


# ---- formatting ----------------------------------------------------------------------------------------

def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return NOT_COMPUTED
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if name in ("ssim", "lpips") else f"{value:.2f}"


def format_table(comp: Comparison) -> str:
    """Markdown tables, overall and on motion boundaries: per step, each metric for spike, base, delta."""
    head = ["step"]
    for name in _METRIC_FIELDS:
        t = _METRIC_TITLES[name]
        head += [f"{t} spike", f"{t} base", f"{t} Δ"]
    lines = []
    last = comp.spike.reports[comp.step]
    for scope, title in (("overall", f"Overall ({last.split}, {last.overall.frames} frames)"),
                         ("boundary", f"Motion boundaries (per frame the {last.boundary_fraction:.0%} of "
                                      f"pixels where sharp and blur differ most)")):
        lines += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in comp.steps:
            a = getattr(comp.spike.reports[s], scope)
            b = getattr(comp.base.reports[s], scope)
            cells = [str(s)]
            for name in _METRIC_FIELDS:
                va, vb = getattr(a, name), getattr(b, name)
                delta = None if va is None or vb is None else va - vb
                d = "-" if delta is None or not math.isfinite(delta) else f"{delta:+.4f}" if name in (
                    "ssim", "lpips") else f"{delta:+.2f}"
                cells += [_fmt(va, name), _fmt(vb, name), d]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _reliance_table(comp)
    lines += _baselines_table(comp)
    for arm, note in comp.lpips_notes.items():
        lines.append(f"LPIPS {NOT_COMPUTED} ({arm} run): {note}")
    if comp.spike_only or comp.base_only:
        lines.append(f"skipped steps (validated in one run only): spike {comp.spike_only or '-'}, "
                     f"base {comp.base_only or '-'}")
    return "\n".join(lines).rstrip() + "\n"


def _reliance_table(comp: Comparison) -> list[str]:
    rows = comp.reliance_rows()
    if not rows:
        note = comp.spike.reports[comp.step].reliance_note
        return [f"Spike reliance: not measured{f' ({note})' if note else ''}", ""]
    probes = [p for p in PROBES if any(r[p] is not None for r in rows)]
    head = ["step", "dB from the spikes", "boundary dB from the spikes", "PSNR Y true"] + \
           [f"PSNR Y {PROBE_TITLES[p]}" for p in probes] + ["boundary PSNR Y true"] + \
           [f"boundary PSNR Y {PROBE_TITLES[p]}" for p in probes]
    lines = [f"### Spike reliance ({comp.spike.exp}: the same frames with altered voxels; dB from the spikes = "
             f"PSNR Y true - count-zero)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["step"]), _signed(r["db_from_spikes"]), _signed(r["boundary_db_from_spikes"]),
                 _fmt(r["true"]["overall"], "psnr")]
        cells += [_fmt(r[p]["overall"] if r[p] else None, "psnr") for p in probes]
        cells += [_fmt(r["true"]["boundary"], "psnr")]
        cells += [_fmt(r[p]["boundary"] if r[p] else None, "psnr") for p in probes]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _signed(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def _baselines_table(comp: Comparison) -> list[str]:
    """The non-learned baselines of the store, under both arms at the judged step, scored the same way."""
    b = comp.baselines
    if b is None:
        return []
    from model.evaluate import metric_rows_table     # (the metrics stack brings torch; see render_picture)

    entries = [(f"{arm} arm {run.exp}", run.reports[comp.step].overall, run.reports[comp.step].boundary, None)
               for arm, run in (("spike", comp.spike), ("base", comp.base))]
    entries += [(f"{r.name}: {r.description}", r.overall, r.boundary, r.note) for r in b.rows]
    lines = [f"### Both arms at step {comp.step} and the non-learned baselines ({b.split} of {b.store}, "
             f"{b.frames} frames)", "", *metric_rows_table(entries)]
    frames = comp.spike.reports[comp.step].overall.frames
    if frames != b.frames:
        lines.append(f"note: the baselines scored {b.frames} frames, the runs {frames} (run `spikeprep baselines` "
                     f"with --clip-len DATA.CLIP_LEN to score the frames validation scores)")
    return lines + [""]


def format_report(comp: Comparison) -> str:
    """The table, the verdict (each rule), the crops and the files written: what the CLI prints."""
    v = comp.verdict
    out = [f"spike: {comp.spike.exp} ({comp.spike.source})   base: {comp.base.exp} ({comp.base.source})", "",
           format_table(comp),
           f"Acceptance at step {v.step} (equal steps, overall metrics):"]
    for r in (v.psnr, v.lpips):
        if r.status == "not evaluated":
            out.append(f"  {r.rule}: not evaluated ({r.reason})")
        else:
            nums = f"spike {_fmt(r.spike, 'lpips' if 'LPIPS' in r.rule else 'psnr')} vs base " \
                   f"{_fmt(r.base, 'lpips' if 'LPIPS' in r.rule else 'psnr')}"
            out.append(f"  {r.rule}: {r.status} ({nums})")
    out.append(f"  result: {v.summary}")
    if comp.crops:
        out.append(f"crops at the strongest motion boundaries (step {comp.step}):")
        for c in comp.crops:
            out.append(f"  {c.seq}/{c.frame:06d} y={c.y} x={c.x} size={c.size} |sharp-blur|={c.score:.1f} "
                       f"PSNR base {_fmt(c.psnr_rgb_base, 'psnr')} spike {_fmt(c.psnr_rgb_spike, 'psnr')}")
    if comp.picture_path is not None:
        out.append(f"picture: {comp.picture_path}")
    if comp.picture_note:
        out.append(f"picture: none ({comp.picture_note})")
    if comp.curves_path is not None:
        out.append(f"curves: {comp.curves_path}")
    for arm, note in comp.curves_notes.items():
        out.append(f"curves: no loss curve for the {arm} run ({note})")
    if comp.json_path is not None:
        out.append(f"json: {comp.json_path}")
    return "\n".join(out)


# ---- crops ---------------------------------------------------------------------------------------------

def _load_rgb(path: Path) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB (the grid and the metrics take channels last)."""
    return read_rgb(path).transpose(1, 2, 0)


def _frame_keys(images: Path) -> list[tuple[str, int]]:
    keys = []
    for f in images.glob("*/*_recon.png"):
        stem = f.name[: -len("_recon.png")]
        if stem.isdigit():
            keys.append((f.parent.name, int(stem)))
    return sorted(keys)


def _png(images: Path, key: tuple[str, int], kind: str) -> Path:
    return images / key[0] / f"{key[1]:06d}_{kind}.png"


def window_scores(blur: np.ndarray, sharp: np.ndarray, size: int) -> np.ndarray:
    """Mean |sharp - blur| (over RGB) of every ``size`` x ``size`` window; ``[H-size+1, W-size+1]``.

    Integral image: every window's mean in O(H W), so any crop size costs the same.
    """
    d = np.abs(sharp.astype(np.int16) - blur.astype(np.int16)).mean(axis=2, dtype=np.float64)
    ii = np.zeros((d.shape[0] + 1, d.shape[1] + 1))
    ii[1:, 1:] = d.cumsum(0).cumsum(1)
    s = size
    return (ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]) / (s * s)


def best_windows(scores: np.ndarray, size: int, n: int) -> list[tuple[float, int, int]]:
    """Up to ``n`` non-overlapping windows of one frame, strongest first: ``(score, y, x)``."""
    scores = scores.copy()
    found = []
    for _ in range(n):
        idx = int(np.argmax(scores))
        y, x = divmod(idx, scores.shape[1])
        best = float(scores[y, x])
        if not np.isfinite(best):
            break
        found.append((best, y, x))
        # Windows whose top-left lies within `size` of this one overlap it.
        scores[max(0, y - size + 1): y + size, max(0, x - size + 1): x + size] = -np.inf
    return found


def find_crops(images: Path, n: int, crop_size: int) -> list[CropSpot]:
    """The ``n`` strongest motion-boundary windows over all val frames in ``images`` (blur/sharp PNGs).

    Windows do not overlap within a frame; the crop size is clamped to the smallest frame so every tile of
    the picture has the same size. Ties go to the earlier sequence, frame, row, column.
    """
    keys = _frame_keys(images)
    sizes = []
    for k in keys:
        with Image.open(_png(images, k, "blur")) as im:   # header only: no decode
            sizes.append(im.size)
    size = min([crop_size] + [min(w, h) for w, h in sizes])
    heap: list[tuple[float, tuple]] = []          # keep the n best (score, -order) seen so far
    order = 0
    for k in keys:
        blur, sharp = _load_rgb(_png(images, k, "blur")), _load_rgb(_png(images, k, "sharp"))
        for score, y, x in best_windows(window_scores(blur, sharp, size), size, n):
            order += 1
            item = (score, -order, (k[0], k[1], y, x))
            if len(heap) < n:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
    best = sorted(heap, reverse=True)
    return [CropSpot(seq=seq, frame=frame, y=y, x=x, size=size, score=score)
            for score, _, (seq, frame, y, x) in best]


def _text_tile(text: str, width: int, height: int, font) -> Image.Image:
    # One strip per tile, so a long label is clipped at its own tile instead of running into the next.
    tile = Image.new("RGB", (width, height), _STRIP)
    ImageDraw.Draw(tile).text((2, 0), text, fill=_TEXT, font=font)
    return tile


def render_picture(spike: Run, base: Run, step: int, crops: list[CropSpot], path: Path) -> list[CropSpot]:
    """Draw the rows blur | base recon | spike recon | sharp; returns the crops with PSNRs and boxes."""
    # Imported here: the metrics module brings torch (LPIPS), which the table alone does not need, and
    # `spikeprep --help` imports this module.
    from model.metrics import image_metrics

    s = crops[0].size
    n = len(crops)
    width = SEP + len(COLUMNS) * (s + SEP)
    height = SEP + HEADER_H + n * (LABEL_H + s + SEP)
    pic = Image.new("RGB", (width, height), _BG)
    font = ImageFont.load_default()
    titles = ("blur", f"base {base.exp}", f"spike {spike.exp}", "sharp")
    for c, title in enumerate(titles):
        pic.paste(_text_tile(title, s, HEADER_H, font), (SEP + c * (s + SEP), SEP))
    sp_dir, base_dir = spike.images_path(step), base.images_path(step)
    out = []
    for r, crop in enumerate(crops):
        key = (crop.seq, crop.frame)
        win = (slice(crop.y, crop.y + s), slice(crop.x, crop.x + s))
        tiles = {"blur": _load_rgb(_png(sp_dir, key, "blur"))[win],
                 "base": _load_rgb(_png(base_dir, key, "recon"))[win],
                 "spike": _load_rgb(_png(sp_dir, key, "recon"))[win],
                 "sharp": _load_rgb(_png(sp_dir, key, "sharp"))[win]}
        base_sharp = _load_rgb(_png(base_dir, key, "sharp"))[win]
        if not np.array_equal(base_sharp, tiles["sharp"]):
            # Same split and frame count were checked; differing pixels mean different data under one name.
            raise InputError(_png(base_dir, key, "sharp"), f"differs from the spike run's sharp frame "
                             f"{_png(sp_dir, key, 'sharp')}", "validate both arms on the same store")
        psnr_b = image_metrics(tiles["base"], tiles["sharp"]).get("psnr_rgb")
        psnr_s = image_metrics(tiles["spike"], tiles["sharp"]).get("psnr_rgb")
        y_label = SEP + HEADER_H + r * (LABEL_H + s + SEP)
        y0 = y_label + LABEL_H
        labels = {"blur": crop.seq, "base": f"{_fmt(psnr_b, 'psnr')} dB",
                  "spike": f"{_fmt(psnr_s, 'psnr')} dB", "sharp": f"#{crop.frame} y{crop.y} x{crop.x}"}
        boxes = {}
        for c, name in enumerate(COLUMNS):
            x0 = SEP + c * (s + SEP)
            pic.paste(_text_tile(labels[name], s, LABEL_H, font), (x0, y_label))
            pic.paste(Image.fromarray(np.ascontiguousarray(tiles[name])), (x0, y0))
            boxes[name] = [x0, y0, x0 + s, y0 + s]
        out.append(CropSpot(**{**crop.as_dict(), "psnr_rgb_base": _num(psnr_b), "psnr_rgb_spike": _num(psnr_s),
                               "boxes": boxes}))
    path.parent.mkdir(parents=True, exist_ok=True)
    pic.save(path)
    return out


def _num(value) -> float | None:
    return None if value is None else float(value)


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
    ks, kb = _frame_keys(spike.images_path(step)), _frame_keys(base.images_path(step))
    if not ks:
        return f"no {{seq}}/{{frame}}_recon.png in {spike.images_path(step)}"
    if ks != kb:
        return (f"the two runs' images at step {step} cover different frames ({len(ks)} vs {len(kb)}); "
                f"the validation was probably interrupted while writing them")
    missing = [str(_png(spike.images_path(step), k, kind)) for k in ks for kind in ("blur", "sharp")
               if not _png(spike.images_path(step), k, kind).is_file()]
    if missing:
        return f"{len(missing)} blur/sharp PNG missing, e.g. {missing[0]}"
    return None


# ---- curves --------------------------------------------------------------------------------------------

ARM_COLOURS = {"spike": "#d62728", "base": "#1f77b4"}   # one colour per arm, in every curves picture
CURVES_FIGSIZE = (12.0, 8.0)                            # inches at CURVES_DPI: 1200 x 800 pixels
CURVES_DPI = 100
LOSS_TAG = "train/loss_total"


@dataclass(frozen=True)
class Curves:
    """One run's curves: the training loss by step (its TensorBoard events) and its validation by step (its
    reports). ``loss_note`` says why the loss is missing (empty ``loss_steps``)."""

    exp: str
    arm: str
    loss_steps: list[int]
    loss: list[float]
    loss_note: str | None
    val_steps: list[int]
    psnr_rgb: list[float | None]
    boundary_psnr_rgb: list[float | None]
    db_from_spikes: list[float | None]            # all None when the run measured no reliance
    boundary_db_from_spikes: list[float | None]


def read_loss_events(events_dir: Path) -> dict[int, float]:
    """``train/loss_total`` by step from the TensorBoard event files in ``events_dir``, oldest file first.

    A resumed run writes a new event file starting at its checkpoint's step + 1; that file's steps replace
    everything the older files hold from its first step on (what a crashed run did after its last save never
    happened as far as the checkpoints are concerned).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def started(f: Path) -> tuple[int, str]:
        # events.out.tfevents.<unix time>.<host>...: order by the time the writer opened the file
        part = f.name.split(".")[3] if len(f.name.split(".")) > 3 else ""
        return (int(part) if part.isdigit() else 0, f.name)

    loss: dict[int, float] = {}
    for f in sorted(events_dir.glob("events.out.tfevents.*"), key=started):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})     # 0: every point, no reservoir sample
        acc.Reload()
        if LOSS_TAG not in acc.Tags().get("scalars", []):
            continue
        points = acc.Scalars(LOSS_TAG)
        if not points:
            continue
        first = min(p.step for p in points)
        loss = {s: v for s, v in loss.items() if s < first}
        loss.update({p.step: p.value for p in points})
    return dict(sorted(loss.items()))


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


def _finite_points(steps: list[int], values: list[float | None]) -> tuple[list[int], list[float]]:
    kept = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    return [s for s, _ in kept], [v for _, v in kept]


def render_curves(curves: list[Curves], path: Path) -> Path:
    """Four panels (loss per step; validation PSNR RGB overall; on motion boundaries; dB from the spikes),
    each arm in its ``ARM_COLOURS`` colour; a ``CURVES_FIGSIZE`` x ``CURVES_DPI`` PNG written atomically."""
    # Object-oriented matplotlib on the Agg canvas: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=CURVES_FIGSIZE, dpi=CURVES_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_psnr, ax_boundary, ax_rel = fig.subplots(2, 2).ravel()
    for ax in (ax_psnr, ax_boundary, ax_rel):  # dB as they are, not as an offset and hundredths of it
        ax.ticklabel_format(axis="y", useOffset=False)
    for c in curves:
        colour, label = ARM_COLOURS.get(c.arm, "#444444"), c.exp if c.exp == c.arm else f"{c.exp} ({c.arm} arm)"
        if c.loss_steps:
            ax_loss.plot(c.loss_steps, c.loss, color=colour, alpha=0.35 if len(c.loss) > 200 else 1.0,
                         linewidth=0.8, label=label if len(c.loss) <= 200 else f"{label} (per step)")
            if len(c.loss) > 200:             # a running mean over 1/100 of the run, so the trend shows
                w = len(c.loss) // 100
                mean = np.convolve(c.loss, np.ones(w) / w, mode="valid")
                ax_loss.plot(c.loss_steps[w - 1:], mean, color=colour, linewidth=1.6, label=f"{label} (mean of {w})")
        for ax, values in ((ax_psnr, c.psnr_rgb), (ax_boundary, c.boundary_psnr_rgb)):
            xs, ys = _finite_points(c.val_steps, values)
            if xs:
                ax.plot(xs, ys, color=colour, marker="o", markersize=3, label=label)
        for values, style, what in ((c.db_from_spikes, "-", "overall"),
                                    (c.boundary_db_from_spikes, "--", "motion boundaries")):
            xs, ys = _finite_points(c.val_steps, values)
            if xs:
                ax_rel.plot(xs, ys, color=colour, linestyle=style, marker="o", markersize=3, label=f"{label}, {what}")
    missing_loss = [f"{c.arm} {c.exp}: {c.loss_note}" for c in curves if c.loss_note]
    titles = ((ax_loss, "training loss (every step)", "loss"),
              (ax_psnr, "validation PSNR RGB, overall", "dB"),
              (ax_boundary, "validation PSNR RGB, motion boundaries", "dB"),
              (ax_rel, "dB from the spikes (PSNR Y true - count-zero voxels)", "dB"))
    for ax, title, unit in titles:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # steps are whole numbers
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if ax_loss.lines and all(v > 0 for c in curves for v in c.loss):
        ax_loss.set_yscale("log")
    if missing_loss:
        ax_loss.text(0.02, 0.02, "\n".join(missing_loss), transform=ax_loss.transAxes, fontsize=7, va="bottom",
                     wrap=True)
    if ax_rel.lines:
        ax_rel.axhline(0.0, color="#888888", linewidth=0.8)
    else:
        ax_rel.text(0.5, 0.5, "not measured (no spike-arm validation with --reliance)", transform=ax_rel.transAxes,
                    ha="center", va="center", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=CURVES_DPI, format="png")
    return path


# ---- the whole command ---------------------------------------------------------------------------------

def compare(run_spike: str | Path, run_base: str | Path, outputs: str | Path = "outputs", crops: int = 4,
            crop_size: int = 96, step: int | None = None, write: bool = True,
            baselines: str | Path | None = None) -> Comparison:
    """Load both runs, judge the rule, draw the crops, write ``compare_{spike}_vs_{base}_{step}.{json,png}``.

    ``InputError`` for runs that cannot be compared (missing, same arm, no common step, validated
    differently). A missing picture is not an error: ``picture_note`` says why, and the table stands.
    """
    spike, base = load_run(run_spike, outputs), load_run(run_base, outputs)
    comp = compare_reports(spike, base, step)
    if baselines is not None:
        try:
            comp.baselines = read_baselines_report(baselines)
        except ValueError as err:
            raise InputError(None, str(err), "run `spikeprep baselines DATA_ROOT` first, or drop --baselines") from err
        if comp.baselines.split != spike.reports[comp.step].split:
            raise InputError(Path(baselines), f"scores split {comp.baselines.split!r}, the runs validated on "
                             f"{spike.reports[comp.step].split!r}", "run `spikeprep baselines` on the runs' val split")
    stem = f"compare_{spike.exp}_vs_{base.exp}_{comp.step}"
    metrics_dir = Path(outputs) / "metrics"
    if crops > 0:
        comp.picture_note = _picture_blocker(spike, base, comp.step)
        if comp.picture_note is None:
            spots = find_crops(spike.images_path(comp.step), crops, crop_size)
            png = metrics_dir / f"{stem}.png"
            if write:
                comp.crops = render_picture(spike, base, comp.step, spots, png)
                comp.picture_path = png
            else:
                comp.crops = spots
    else:
        comp.picture_note = "no crops asked for (--crops 0)"
    stale = metrics_dir / f"{stem}.png"
    if write and comp.picture_path is None and stale.exists():
        stale.unlink()      # an earlier compare's picture would contradict this JSON's "picture": null
    if write:
        curves = [load_curves(spike), load_curves(base)]
        comp.curves_notes = {c.arm: c.loss_note for c in curves if c.loss_note}
        comp.curves_path = render_curves(curves, metrics_dir / f"{stem}_curves.png")
        comp.json_path = metrics_dir / f"{stem}.json"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        # allow_nan: an identical pair has PSNR inf, as in the validation reports themselves.
        atomic_write_text(comp.json_path,
                          json.dumps(comp.as_dict(), indent=2, allow_nan=True, ensure_ascii=False) + "\n")
    return comp
