"""``spikeprep compare``: the acceptance table, the verdict, the motion-boundary crops and the picture.

Two runs are fabricated in ``tmp_path``: validation reports written with ``schemas.val_report.write_val_report``
and, for the last common step, validation images of a bright square moving over a smooth background
(sharp = the square at its mid position, blur = mean of shifted copies, base recon = mostly blur,
spike recon = mostly sharp).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import main
from model.compare import compare, format_report, load_run
from model.compare_figures import HEADER_H, LABEL_H, SEP, best_windows, window_scores
from schemas.compare_report import read_compare_report
from schemas.val_report import (Metrics, ProbeMetrics, SpikeReliance, ValReport, val_report_path,
                                write_val_report)

H, W = 64, 80
FRAMES = {"seq_000": (0, 1), "seq_001": (0, 1)}   # 4 val frames
N_FRAMES = 4
SPEEDS = {("seq_000", 0): 2, ("seq_000", 1): 5, ("seq_001", 0): 3, ("seq_001", 1): 4}   # px of motion
CROP = 32


def _scene(cx: float, cy: int, ramp: np.ndarray) -> np.ndarray:
    img = ramp.copy()
    img[cy: cy + 16, int(cx): int(cx) + 16] = (230.0, 200.0, 60.0)
    return img


def _frames(seq: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(blur, sharp) uint8 HWC: the square moves along x by SPEEDS px during the exposure."""
    yy, xx = np.mgrid[0:H, 0:W]
    ramp = np.stack([40 + xx * 0.5, 60 + yy * 0.5, np.full((H, W), 90.0)], axis=-1)
    cx, cy = 20 + 8 * frame, 16 + 12 * int(seq[-1])
    speed = SPEEDS[(seq, frame)]
    sharp = _scene(cx, cy, ramp)
    blur = np.mean([_scene(cx + dx, cy, ramp) for dx in range(-speed, speed + 1)], axis=0)
    return np.round(blur).astype(np.uint8), np.round(sharp).astype(np.uint8)


def _m(psnr: float, ssim: float = 0.9, lpips: float | None = 0.1, frames: int = N_FRAMES) -> Metrics:
    return Metrics(frames=frames, psnr_rgb=psnr, psnr_y=psnr + 1.0, ssim=ssim, ssim_y=ssim + 0.01, lpips=lpips)


def _write_images(outputs: Path, rel: str, mix: float) -> None:
    """recon = mix * sharp + (1 - mix) * blur, for every val frame."""
    for seq, frames in FRAMES.items():
        d = outputs / rel / seq
        d.mkdir(parents=True, exist_ok=True)
        for f in frames:
            blur, sharp = _frames(seq, f)
            recon = np.round(mix * sharp.astype(float) + (1 - mix) * blur).astype(np.uint8)
            for kind, img in (("blur", blur), ("recon", recon), ("sharp", sharp)):
                Image.fromarray(img).save(d / f"{f:06d}_{kind}.png")


def make_run(outputs: Path, exp: str, arm: str, steps: dict[int, dict], images: dict[int, float] | None = None,
             lpips_note: str | None = None, frames: int = N_FRAMES, version: int = 3, **fields) -> None:
    """Reports for ``steps`` ({step: {"psnr":, "ssim":, "lpips":, "bpsnr":, "spsnr":}}) and images for ``images``
    ({step: recon mix}); ``version`` 2 writes a report without the static half and SSIM Y; ``fields``: more
    of the report's fields (``reliance``, ``fuse_type``)."""
    images = images or {}
    for step, v in steps.items():
        rel = f"visuals/{exp}/step_{step:07d}" if step in images else None
        if rel is not None:
            _write_images(outputs, rel, images[step])
        lp = v.get("lpips", 0.1)
        rep = ValReport(exp=exp, arm=arm, step=step, split="val",
                        overall=_m(v["psnr"], v.get("ssim", 0.9), lp, frames),
                        boundary=_m(v.get("bpsnr", v["psnr"] - 8), v.get("ssim", 0.9) - 0.2,
                                    None if lp is None else lp + 0.1, frames),
                        boundary_fraction=0.05,
                        per_sequence={s: _m(v["psnr"], lpips=lp, frames=2) for s in FRAMES},
                        static=_m(v.get("spsnr", v["psnr"] + 20), v.get("ssim", 0.9) + 0.05, lp, frames),
                        static_fraction=0.5, lpips_note=lpips_note, images_dir=rel, seconds=1.0, **fields)
        if version == 2:
            old = rep.model_dump(mode="json", exclude={"static", "static_fraction", "fuse_type"})
            for region in ("overall", "boundary"):
                del old[region]["ssim_y"]
            old["per_sequence"] = {s: {k: v for k, v in m.items() if k != "ssim_y"}
                                   for s, m in old["per_sequence"].items()}
            rep = ValReport.model_validate({**old, "version": 2})
            assert rep.static is None and rep.overall.ssim_y is None
        write_val_report(val_report_path(outputs, exp, step), rep)


SPIKE_STEPS = {1000: dict(psnr=28.0, lpips=0.20, bpsnr=21.0),
               2000: dict(psnr=30.0, ssim=0.93, lpips=0.10, bpsnr=24.5),
               3000: dict(psnr=31.0)}
BASE_STEPS = {1000: dict(psnr=27.5, lpips=0.22, bpsnr=20.0), 2000: dict(psnr=29.0, ssim=0.91, lpips=0.12, bpsnr=22.0)}


@pytest.fixture
def outputs(tmp_path) -> Path:
    out = tmp_path / "outputs"
    make_run(out, "spk", "spike", SPIKE_STEPS, images={2000: 0.9})
    make_run(out, "vrt", "base", BASE_STEPS, images={2000: 0.2})
    return out


def _cli(*args: str):
    return CliRunner().invoke(main, ["compare", *args], catch_exceptions=False)


def test_pass_table_picture_and_json(outputs):
    res = _cli("spk", "vrt", "--outputs", str(outputs), "--crop-size", str(CROP))
    assert res.exit_code == 0, res.output
    out = res.output
    # the table: equal steps only, both arms, overall and boundary; step 3000 listed as skipped
    assert "| 1000 | 28.00 | 27.50 | +0.50 | 29.00 | 28.50 |" in out
    assert ("| 2000 | 30.00 | 29.00 | +1.00 | 31.00 | 30.00 | +1.00 | 0.9300 | 0.9100 | +0.0200 | 0.9400 | 0.9200 "
            "| +0.0200 | 0.1000 | 0.1200 |") in out
    assert "| 2000 | 24.50 | 22.00 | +2.50 |" in out                     # boundary row
    assert "### Static half (per frame the 50% of pixels where sharp and blur differ least)" in out
    assert "| 2000 | 50.00 | 49.00 | +1.00 | 51.00 | 50.00 | +1.00 | 0.9800 | 0.9600 | +0.0200 |" in out  # static
    assert "Motion boundaries" in out and "skipped steps" in out and "[3000]" in out
    assert "| 3000 |" not in out
    assert "PSNR RGB >= base - 0.05 dB: PASS" in out and "LPIPS <= base + 0.005: PASS" in out
    assert "result: PASS" in out

    js = outputs / "metrics" / "compare_spk_vs_vrt_2000.json"
    png = outputs / "metrics" / "compare_spk_vs_vrt_2000.png"
    data = json.loads(js.read_text())
    assert data["steps"] == [1000, 2000]
    assert data["skipped_steps"] == {"spike_only": [3000], "base_only": []}
    assert data["verdict"]["result"] == "PASS" and data["verdict"]["step"] == 2000
    assert data["verdict"]["psnr"]["margin"] == pytest.approx(1.0)
    assert data["verdict"]["lpips"]["margin"] == pytest.approx(-0.02)
    row = data["table"][1]
    assert row["step"] == 2000 and row["overall"]["spike"]["psnr_rgb"] == 30.0
    assert row["boundary"]["base"]["psnr_rgb"] == 22.0 and row["overall"]["base"]["lpips"] == 0.12
    assert row["static"]["spike"]["psnr_y"] == 51.0 and row["overall"]["spike"]["ssim_y"] == pytest.approx(0.94)
    assert data["static_fraction"] == 0.5 and data["version"] == 3
    assert data["frames"] == N_FRAMES and data["split"] == "val" and data["picture"] == str(png)
    assert "| 2000 |" in data["table_markdown"]

    # the crops: 4, strongest first, at the frames that moved most, each the window's mean |sharp - blur|
    crops = data["crops"]
    assert len(crops) == 4 and all(c["size"] == CROP for c in crops)
    scores = [c["score"] for c in crops]
    assert scores == sorted(scores, reverse=True)
    assert (crops[0]["seq"], crops[0]["frame"]) == ("seq_000", 1)          # speed 5: the strongest blur
    for c in crops:
        blur, sharp = _frames(c["seq"], c["frame"])
        win = (slice(c["y"], c["y"] + CROP), slice(c["x"], c["x"] + CROP))
        d = np.abs(sharp[win].astype(float) - blur[win].astype(float)).mean()
        assert d == pytest.approx(c["score"])
        assert c["psnr_rgb_spike"] > c["psnr_rgb_base"]           # spike recon is closer to sharp

    # the picture: rows x 4 crops with separators and label strips; the first tile is the blur crop
    pic = np.asarray(Image.open(png).convert("RGB"))
    assert pic.shape == (SEP + HEADER_H + 4 * (LABEL_H + CROP + SEP), SEP + 4 * (CROP + SEP), 3)
    c0 = crops[0]
    blur, sharp = _frames(c0["seq"], c0["frame"])
    win = (slice(c0["y"], c0["y"] + CROP), slice(c0["x"], c0["x"] + CROP))
    x0, y0, x1, y1 = c0["boxes"]["blur"]
    assert (x0, y0) == (SEP, SEP + HEADER_H + LABEL_H) and (x1 - x0, y1 - y0) == (CROP, CROP)
    np.testing.assert_array_equal(pic[y0:y1, x0:x1], blur[win])
    x0, y0, x1, y1 = c0["boxes"]["sharp"]
    np.testing.assert_array_equal(pic[y0:y1, x0:x1], sharp[win])
    x0, y0, x1, y1 = c0["boxes"]["spike"]
    recon_png = outputs / "visuals/spk/step_0002000" / c0["seq"] / f"{c0['frame']:06d}_recon.png"
    spike_recon = np.asarray(Image.open(recon_png))
    np.testing.assert_array_equal(pic[y0:y1, x0:x1], spike_recon[win])


def test_written_json_is_the_returned_report(outputs):
    comp = compare("spk", "vrt", outputs=outputs, crops=2, crop_size=CROP)
    assert comp.json_path == outputs / "metrics" / "compare_spk_vs_vrt_2000.json"
    report = read_compare_report(comp.json_path)
    assert report == comp.report and report.version == 3 and report.passed
    assert [c.boxes["blur"] for c in report.crops] == [(SEP, SEP + HEADER_H + LABEL_H + r * (LABEL_H + CROP + SEP),
                                                        SEP + CROP, SEP + HEADER_H + LABEL_H + CROP
                                                        + r * (LABEL_H + CROP + SEP)) for r in range(2)]
    assert report.reliance == [] and report.reliance_note is None
    assert report.table_markdown in format_report(comp)                   # printed as written
    dry = compare("spk", "vrt", outputs=outputs, crops=2, crop_size=CROP, write=False)
    assert dry.json_path is None and dry.report.picture is None and dry.report.curves is None
    assert [c.model_dump(exclude={"boxes", "psnr_rgb_base", "psnr_rgb_spike"}) for c in dry.report.crops] == \
        [c.model_dump(exclude={"boxes", "psnr_rgb_base", "psnr_rgb_spike"}) for c in report.crops]


def test_reports_before_the_static_half_still_compare(tmp_path):
    """A version 2 run (no static half, no SSIM Y) beside a current one: compared, the missing columns say so."""
    make_run(tmp_path, "a", "spike", {1000: dict(psnr=30.0)})
    make_run(tmp_path, "b", "base", {1000: dict(psnr=29.0)}, version=2)
    comp = compare("a", "b", outputs=tmp_path, crops=0, write=False)
    assert comp.passed and comp.report.static_fraction is None and comp.report.table[0].static is None
    text = format_report(comp)
    assert "### Static half" not in text and "Static half: not computed" in text
    assert "| 1000 | 30.00 | 29.00 | +1.00 | 31.00 | 30.00 | +1.00 | 0.9000 | 0.9000 | +0.0000 | 0.9100 | not computed | - |" \
        in text


def _probes(true: Metrics, zeroed_psnr: float) -> SpikeReliance:
    zeroed = ProbeMetrics(overall=_m(zeroed_psnr - 1.0), boundary=_m(zeroed_psnr - 9.0))
    return SpikeReliance(zeroed=zeroed, other_clip=None, reversed=ProbeMetrics(overall=true, boundary=true))


@pytest.mark.parametrize("fuse_type, fitted", [("ResidualTemporalCrossAttnFittedSpikeHead", True),
                                               ("ResidualTemporalCrossAttnSpikeHead", False)])
def test_probes_are_labelled_sensitivity_not_worth(tmp_path, fuse_type, fitted):
    make_run(tmp_path, "a", "spike", {1000: dict(psnr=30.0)}, reliance=_probes(_m(30.0), 10.0), fuse_type=fuse_type)
    make_run(tmp_path, "b", "base", {1000: dict(psnr=29.0)})
    comp = compare("a", "b", outputs=tmp_path, crops=0, write=False)
    text = format_report(comp)
    assert comp.report.spike_fuse_type == fuse_type and comp.report.reliance[0].db_from_spikes == pytest.approx(21.0)
    assert "### Sensitivity probes" in text and "| 1000 | +21.00 |" in text and "count-zero sensitivity" in text
    assert "dB from the spikes" not in text and "spike - totals-only" in text
    assert ("its count-zero sensitivity is not what the spikes add" in text) == fitted


def test_fail_when_roles_swapped(tmp_path):
    out = tmp_path / "o"
    make_run(out, "spk", "spike", BASE_STEPS)          # the spike arm now has the base's (worse) numbers
    make_run(out, "vrt", "base", SPIKE_STEPS)
    res = _cli("spk", "vrt", "--outputs", str(out), "--crops", "0")
    assert res.exit_code == 1, res.output
    assert "PSNR RGB >= base - 0.05 dB: FAIL" in res.output and "LPIPS <= base + 0.005: FAIL" in res.output
    data = json.loads((out / "metrics" / "compare_spk_vs_vrt_2000.json").read_text())
    assert data["verdict"]["result"] == "FAIL" and data["picture"] is None


@pytest.mark.parametrize("spike, base, expect", [
    (dict(psnr=29.95, lpips=0.105), dict(psnr=30.0, lpips=0.1), 0),     # both at the tolerance: PASS
    (dict(psnr=29.94, lpips=0.10), dict(psnr=30.0, lpips=0.1), 1),      # PSNR 0.06 dB below
    (dict(psnr=31.0, lpips=0.106), dict(psnr=30.0, lpips=0.1), 1),      # better PSNR, LPIPS 0.006 worse
])
def test_rule_tolerances(tmp_path, spike, base, expect):
    make_run(tmp_path, "a", "spike", {500: spike})
    make_run(tmp_path, "b", "base", {500: base})
    comp = compare("a", "b", outputs=tmp_path, crops=0, write=False)
    assert int(not comp.passed) == expect, comp.verdict


def test_lpips_not_computed(tmp_path):
    note = "not computed (weights unavailable: no alexnet in $TORCH_HOME)"
    make_run(tmp_path, "a", "spike", {1000: dict(psnr=30.0, lpips=None)}, lpips_note=note)
    make_run(tmp_path, "b", "base", {1000: dict(psnr=30.0, lpips=None)}, lpips_note=note)
    res = _cli("a", "b", "--outputs", str(tmp_path), "--crops", "0")
    assert res.exit_code == 0, res.output
    assert "| not computed | not computed |" in res.output
    assert "LPIPS <= base + 0.005: not evaluated (LPIPS not computed in either run: " + note in res.output
    assert "PASS on PSNR only" in res.output and note in res.output
    data = json.loads((tmp_path / "metrics" / "compare_a_vs_b_1000.json").read_text())
    assert data["verdict"]["lpips"]["status"] == "not evaluated"
    assert "PASS on PSNR only" in data["verdict"]["summary"] and data["lpips_notes"]["spike"] == note
    # one arm without LPIPS is enough to skip the rule; a PSNR failure still fails
    make_run(tmp_path, "c", "base", {1000: dict(psnr=31.0, lpips=0.1)})
    res = _cli("a", "c", "--outputs", str(tmp_path), "--crops", "0")
    assert res.exit_code == 1 and "FAIL" in res.output and "not evaluated" in res.output


def test_picture_needs_images_table_still_prints(tmp_path):
    make_run(tmp_path, "a", "spike", SPIKE_STEPS, images={2000: 0.9})
    make_run(tmp_path, "b", "base", BASE_STEPS)                          # no images at all
    res = _cli("a", "b", "--outputs", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "| 2000 |" in res.output and "picture: none (the picture needs the validation images" in res.output
    assert not (tmp_path / "metrics" / "compare_a_vs_b_2000.png").exists()
    data = json.loads((tmp_path / "metrics" / "compare_a_vs_b_2000.json").read_text())
    assert data["picture"] is None and "base run 'b'" in data["picture_note"] and data["crops"] == []


def test_run_given_as_metrics_directory(tmp_path):
    make_run(tmp_path / "A", "spk", "spike", SPIKE_STEPS, images={2000: 0.9})
    make_run(tmp_path / "B", "vrt", "base", BASE_STEPS, images={2000: 0.2})
    res = _cli(str(tmp_path / "A" / "metrics"), str(tmp_path / "B" / "metrics"), "--outputs", str(tmp_path / "R"),
               "--crops", "2", "--crop-size", "200")                     # clamped to the 64 px short side
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "R" / "metrics" / "compare_spk_vs_vrt_2000.json").read_text())
    assert [c["size"] for c in data["crops"]] == [H, H]
    assert Image.open(data["picture"]).size == (SEP + 4 * (H + SEP), SEP + HEADER_H + 2 * (LABEL_H + H + SEP))


def _error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output
    return lines[0]


def test_errors(tmp_path):
    make_run(tmp_path, "s1", "spike", {1000: dict(psnr=30.0)})
    make_run(tmp_path, "s2", "spike", {1000: dict(psnr=29.0)})
    make_run(tmp_path, "b_late", "base", {5000: dict(psnr=29.0)})
    make_run(tmp_path, "b_small", "base", {1000: dict(psnr=29.0)}, frames=3)
    make_run(tmp_path, "b", "base", {1000: dict(psnr=29.0)})
    o = ["--outputs", str(tmp_path)]
    assert "both runs are 'spike' arms" in _error(_cli("s1", "s2", *o))
    assert "no common validation step" in _error(_cli("s1", "b_late", *o))
    assert "validated differently" in _error(_cli("s1", "b_small", *o))
    assert "give the spike run first" in _error(_cli("b", "s1", *o))
    msg = _error(_cli("s1", "nope", *o))
    assert "no validation report for experiment 'nope'" in msg and "Fix:" in msg
    assert "step 7 is not validated in both runs" in _error(_cli("s1", "b", *o, "--step", "7"))
    # experiment "s" must not pick up "s1"'s reports
    assert "experiment 's'" in _error(_cli("s", "b", *o))
    # a directory mixing experiments names them and says what to do
    assert "several experiments" in _error(_cli(str(tmp_path / "metrics"), "b", *o))


def test_window_search_matches_brute_force(rng):
    blur = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    sharp = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    s = 6
    scores = window_scores(blur, sharp, s)
    d = np.abs(sharp.astype(float) - blur).mean(axis=2)
    brute = np.array([[d[y:y + s, x:x + s].mean() for x in range(24 - s + 1)] for y in range(20 - s + 1)])
    np.testing.assert_allclose(scores, brute, atol=1e-9)
    found = best_windows(scores, s, 5)
    assert found[0][0] == pytest.approx(brute.max())
    for i, (_, y, x) in enumerate(found):                 # pairwise non-overlapping
        for _, y2, x2 in found[i + 1:]:
            assert abs(y - y2) >= s or abs(x - x2) >= s


def test_load_run_checks_names(tmp_path):
    make_run(tmp_path, "a", "spike", {1000: dict(psnr=30.0)})
    run = load_run("a", tmp_path)
    assert run.exp == "a" and run.arm == "spike" and sorted(run.reports) == [1000]
    (tmp_path / "metrics" / "val_a_2000.json").write_text("{not json")
    with pytest.raises(ValueError, match="val_a_2000.json"):
        load_run("a", tmp_path)


def _write_losses(outputs: Path, exp: str, losses: dict[int, float]) -> None:
    """One TensorBoard event file of ``train/loss_total`` (what one trainer process writes)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(outputs / "logs" / exp)) as writer:
        for step, value in losses.items():
            writer.add_scalar("train/loss_total", value, step)


def test_curves_picture_and_its_points(outputs):
    from model.compare import load_curves
    from model.compare_figures import ARM_COLOURS, CURVES_DPI, CURVES_FIGSIZE

    # The spike run: steps 1-8 logged, then (a crash after step 8, last.pth at step 5) a resumed process
    # logs 6-10 again: the resumed values replace the crashed run's from step 6 on.
    first = {s: 1.0 / s for s in range(1, 9)}
    resumed = {s: 2.0 / s for s in range(6, 11)}
    _write_losses(outputs, "spk", first)
    _write_losses(outputs, "spk", resumed)
    res = _cli("spk", "vrt", "--outputs", str(outputs), "--crop-size", str(CROP))
    assert res.exit_code == 0, res.output
    curves_png = outputs / "metrics" / "compare_spk_vs_vrt_2000_curves.png"
    with Image.open(curves_png) as im:
        im.load()                                                        # decodes: a whole PNG
        assert im.format == "PNG"
        assert im.size == (round(CURVES_FIGSIZE[0] * CURVES_DPI), round(CURVES_FIGSIZE[1] * CURVES_DPI))
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(ARM_COLOURS[a][i:i + 2], 16) for i in (1, 3, 5)) for a in ("spike", "base")}
    assert all((pixels == c).all(axis=1).any() for c in colours)         # both arms drawn in their colours
    data = json.loads((outputs / "metrics" / "compare_spk_vs_vrt_2000.json").read_text())
    assert data["curves"] == str(curves_png) and f"curves: {curves_png}" in res.output
    assert set(data["curves_notes"]) == {"base"} and "no TensorBoard events" in data["curves_notes"]["base"]

    spike = load_curves(load_run("spk", outputs))
    expect = {**{s: v for s, v in first.items() if s < 6}, **resumed}
    assert spike.loss_steps == list(range(1, 11))
    assert spike.loss == [np.float32(expect[s]) for s in range(1, 11)]  # TensorBoard stores float32
    assert spike.loss_note is None
    assert spike.val_steps == [1000, 2000, 3000] and spike.psnr_rgb == [28.0, 30.0, 31.0]
    assert spike.boundary_psnr_rgb == [21.0, 24.5, 23.0]
    assert spike.db_from_spikes == [None, None, None]                    # these reports measured no reliance
    base = load_curves(load_run("vrt", outputs))
    assert base.loss_steps == [] and base.val_steps == [1000, 2000] and base.psnr_rgb == [27.5, 29.0]


def test_baselines_table_has_the_arms_columns(tmp_path):
    """The non-learned floor beside both arms, row for row: the same static-half and SSIM-Y columns."""
    from schemas.baselines import BaselineRow, BaselinesReport, write_baselines_report

    make_run(tmp_path, "a", "spike", {1000: dict(psnr=30.0, spsnr=42.0)})
    make_run(tmp_path, "b", "base", {1000: dict(psnr=29.0, spsnr=56.0)})
    rows = [BaselineRow(name="blur", description="the blurred input itself", overall=_m(28.0), boundary=_m(19.0),
                        static=_m(95.0)),
            BaselineRow(name="tfi", description="TFI", overall=None, boundary=None, note="not applicable")]
    path = write_baselines_report(tmp_path / "b.json", BaselinesReport(
        store="s", split="val", fit_split="train", num_bins=8, clip_len=2, frames=N_FRAMES, fit_frames=8,
        boundary_fraction=0.05, static_fraction=0.5, rows=rows, seconds=1.0))
    text = compare("a", "b", outputs=tmp_path, crops=0, write=False, baselines=path).report.table_markdown
    head = ("| restoration | PSNR RGB | PSNR Y | SSIM | SSIM Y | static PSNR Y | static SSIM Y | boundary PSNR RGB | "
            "boundary PSNR Y | boundary SSIM |")
    assert head in text
    assert "| spike arm a | 30.00 | 31.00 | 0.9000 | 0.9100 | 43.00 | 0.9600 | 22.00 | 23.00 | 0.7000 |" in text
    assert "| base arm b | 29.00 | 30.00 | 0.9000 | 0.9100 | 57.00 | 0.9600 | 21.00 | 22.00 | 0.7000 |" in text
    assert "| blur: the blurred input itself | 28.00 | 29.00 | 0.9000 | 0.9100 | 96.00 | 0.9100 | 19.00 | 20.00 |" in text
    assert "| tfi: TFI | not applicable |" in text
