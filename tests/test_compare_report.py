"""``schemas.compare_report``: the compare report round-trips through its JSON and refuses what contradicts itself."""
from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from schemas.baselines import BaselineRow, BaselinesReport
from schemas.compare_report import (COMPARE_VERSION, ArmMetrics, CompareReport, CropSpot, RegionPsnrY, RelianceRow,
                                    RuleResult, RunRef, SkippedSteps, TableRow, Verdict, read_compare_report,
                                    write_compare_report)
from schemas.val_report import Metrics


def _m(psnr: float, lpips: float | None = 0.1) -> Metrics:
    return Metrics(frames=4, psnr_rgb=psnr, psnr_y=psnr + 1.0, ssim=0.9, ssim_y=0.92, lpips=lpips)


def _verdict(step: int = 2000, **changes) -> Verdict:
    fields = dict(step=step,
                  psnr=RuleResult(rule="PSNR RGB >= base - 0.05 dB", status="PASS", spike=30.0, base=29.0, margin=1.0),
                  lpips=RuleResult(rule="LPIPS <= base + 0.005", status="not evaluated", spike=None, base=0.1,
                                   margin=None, reason="LPIPS not computed: spike run 'spk': weights unavailable"),
                  result="PASS", summary="PASS on PSNR only; the LPIPS rule was not evaluated (LPIPS not computed)")
    return Verdict(**{**fields, **changes})


def _report(**changes) -> CompareReport:
    rows = [TableRow(step=s, overall=ArmMetrics(spike=_m(28.0 + i, None), base=_m(27.5 + i)),
                     boundary=ArmMetrics(spike=_m(math.inf, None), base=_m(20.0)),
                     static=ArmMetrics(spike=_m(42.0, None), base=_m(56.0)))
            for i, s in enumerate((1000, 2000))]
    baselines = BaselinesReport(store="data/store", split="val", fit_split="train", num_bins=16, clip_len=5, frames=4,
                                fit_frames=8, boundary_fraction=0.05, static_fraction=0.5, seconds=1.0,
                                rows=[BaselineRow(name="blur", description="the blurred input itself",
                                                  overall=_m(25.0), boundary=_m(18.0), static=_m(math.inf)),
                                      BaselineRow(name="tfi", description="TFI", overall=None, boundary=None,
                                                  note="not applicable")])
    fields = dict(
        spike=RunRef(exp="spk", arm="spike", source="outputs/metrics", steps=[1000, 2000, 3000]),
        base=RunRef(exp="vrt", arm="base", source="outputs/metrics", steps=[1000, 2000]),
        split="val", frames=4, boundary_fraction=0.05, static_fraction=0.5,
        spike_fuse_type="ResidualTemporalCrossAttnFittedSpikeHead", steps=[1000, 2000],
        skipped_steps=SkippedSteps(spike_only=[3000], base_only=[]), table=rows, table_markdown="| 2000 | ... |\n",
        lpips_notes={"spike": "weights unavailable"},
        reliance=[RelianceRow(step=1000, db_from_spikes=9.0, boundary_db_from_spikes=None,
                              true=RegionPsnrY(overall=29.0, boundary=math.inf),
                              zeroed=RegionPsnrY(overall=20.0, boundary=None), other_clip=None,
                              reversed=RegionPsnrY(overall=21.0, boundary=12.0))],
        reliance_note="not measured at step 2000 (--no-reliance)", baselines=baselines, verdict=_verdict(),
        picture="outputs/metrics/compare_spk_vs_vrt_2000.png",
        crops=[CropSpot(seq="seq_000", frame=1, y=3, x=4, size=32, score=12.5, psnr_rgb_base=20.0,
                        psnr_rgb_spike=22.0, boxes={"blur": (2, 28, 34, 60)})],
        curves="outputs/metrics/compare_spk_vs_vrt_2000_curves.png", curves_notes={"base": "no TensorBoard events"})
    return CompareReport(**{**fields, **changes})


def test_round_trip_keeps_every_field(tmp_path):
    report = _report()
    path = write_compare_report(tmp_path / "metrics" / "compare_spk_vs_vrt_2000.json", report)
    assert read_compare_report(path) == report
    raw = json.loads(path.read_text())
    assert raw["version"] == COMPARE_VERSION == 3 and report.passed and report.verdict.passed
    assert raw["table"][0]["static"]["base"]["psnr_y"] == 57.0 and raw["table"][0]["overall"]["base"]["ssim_y"] == 0.92
    assert raw["baselines"]["rows"][0]["static"]["psnr_rgb"] == math.inf and raw["static_fraction"] == 0.5
    assert raw["table"][1]["boundary"]["spike"]["psnr_rgb"] == math.inf        # written as Infinity, read back
    assert raw["crops"][0]["boxes"]["blur"] == [2, 28, 34, 60]
    assert raw["verdict"]["result"] == "PASS" and raw["baselines"]["rows"][1]["note"] == "not applicable"


def test_other_versions_and_unknown_keys_are_refused(tmp_path):
    path = write_compare_report(tmp_path / "c.json", _report())
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "version": 1}))
    with pytest.raises(ValueError, match=r"c\.json: compare report version 1, this spikeprep reads versions 2, 3; "
                                         r"re-run `spikeprep compare`"):
        read_compare_report(path)
    path.write_text(json.dumps({**raw, "colour": "red"}))
    with pytest.raises(ValueError, match=r"(?s)c\.json: invalid compare report.*colour"):
        read_compare_report(path)
    with pytest.raises(ValidationError):
        _report().model_validate({**_report().model_dump(), "version": 4})


def _drop(raw, *keys):
    """``raw`` (a dumped record, nested) without ``keys`` anywhere: what an older version wrote."""
    if isinstance(raw, dict):
        return {k: _drop(v, *keys) for k, v in raw.items() if k not in keys}
    if isinstance(raw, list):
        return [_drop(v, *keys) for v in raw]
    return raw


def test_version_2_reports_are_still_read_without_the_static_half(tmp_path):
    # A version 2 compare report (holding a version 1 baselines report): no static half, no SSIM Y, no fuse type.
    raw = json.loads(write_compare_report(tmp_path / "c.json", _report()).read_text())
    old = _drop(raw, "static", "static_fraction", "ssim_y", "spike_fuse_type")
    old["version"], old["baselines"]["version"] = 2, 1
    (tmp_path / "old.json").write_text(json.dumps(old))
    report = read_compare_report(tmp_path / "old.json")
    assert report.version == 2 and report.static_fraction is None and report.spike_fuse_type is None
    assert report.table[0].static is None and report.table[0].overall.spike.ssim_y is None
    assert report.baselines.row("blur").static is None and report.baselines.row("blur").regions()["static"] is None
    # A current baselines report must carry the static half of every scored row.
    with pytest.raises(ValidationError, match="static half"):
        BaselinesReport.model_validate({**old["baselines"], "version": 2})


def test_records_are_frozen():
    with pytest.raises(ValidationError):
        _report().split = "test"
    with pytest.raises(ValidationError):
        _verdict().result = "FAIL"


@pytest.mark.parametrize("changes, fragment", [
    (dict(result="FAIL"), "contradicts the rules"),
    (dict(psnr=RuleResult(rule="r", status="FAIL", spike=28.0, base=29.0, margin=-1.0)), "contradicts the rules"),
    (dict(lpips=RuleResult(rule="r", status="FAIL", spike=0.2, base=0.1, margin=0.1)), "contradicts the rules"),
])
def test_verdict_follows_its_rules(changes, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _verdict(**changes)
    fail = {**changes, "result": "FAIL"} if "result" not in changes else None
    if fail is not None:
        assert not _verdict(**fail).passed


@pytest.mark.parametrize("fields, fragment", [
    (dict(status="not evaluated", spike=None, base=None, margin=None), "needs a reason"),
    (dict(status="PASS", spike=None, base=0.1, margin=None), "both numbers and no reason"),
    (dict(status="FAIL", spike=0.2, base=0.1, margin=0.1, reason="why"), "both numbers and no reason"),
    (dict(status="maybe", spike=0.2, base=0.1, margin=0.1), "status"),
])
def test_rule_is_judged_or_explained(fields, fragment):
    with pytest.raises(ValidationError, match=fragment):
        RuleResult(rule="LPIPS <= base + 0.005", **fields)


@pytest.mark.parametrize("changes, fragment", [
    (dict(steps=[1000]), "one row per common step"),
    (dict(verdict=_verdict(step=3000)), "not a common step"),
    (dict(spike=RunRef(exp="vrt", arm="base", source="m", steps=[1000, 2000]),
          base=RunRef(exp="spk", arm="spike", source="m", steps=[1000, 2000])), "the spike and the base arm"),
    (dict(reliance=[RelianceRow(step=3000, db_from_spikes=None, boundary_db_from_spikes=None,
                                true=RegionPsnrY(overall=None, boundary=None), zeroed=None, other_clip=None,
                                reversed=None)]), "common steps only"),
    (dict(steps=[]), "at least 1"),
    (dict(boundary_fraction=0.0), "greater than 0"),
    (dict(lpips_notes={"other": "x"}), "lpips_notes"),
])
def test_report_refuses_what_contradicts_itself(changes, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _report(**changes)


def test_crop_spot_validates_its_window():
    spot = CropSpot(seq="s", frame=0, y=0, x=0, size=16, score=0.0)
    assert spot.boxes == {} and spot.psnr_rgb_base is None
    for bad in (dict(size=0), dict(y=-1), dict(score=-0.5)):
        with pytest.raises(ValidationError):
            CropSpot.model_validate({**spot.model_dump(), **bad})
    with pytest.raises(ValidationError):
        CropSpot.model_validate({**spot.model_dump(), "boxes": {"blur": [0, 0, 16]}})
