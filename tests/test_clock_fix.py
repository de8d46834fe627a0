"""``spikeprep audit DATA_ROOT --fix``: clock maps recovered from the content, applied through ingest, kept by
reruns, kill-safe; and the synthetic rig it is tested against."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from schemas.clock_fix import FIXED, UNFIXED, ClockFix, clock_fix_path, read_clock_fix
from spikeprep.audit import ALIGNED, MISALIGNED, AuditOptions, blur_luma, audit
from spikeprep.clock_fix import FrameWindow, estimate_clock, fix_store, robust_line
from spikeprep.errors import InputError
from spikeprep.images import write_rgb
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.spike_source import SpikeSource
from spikeprep.store import read_frame, read_manifest_rows, read_store_info
from spikeprep.synth import SynthConfig, recorded_windows, synthesize
from spikeprep.windows import read_exposure_csv, write_exposure_csv

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "hist_sflow_car_250x400.dat"
OPTS = IngestOptions(num_bins=16, crop_size=32)
# The audit's geometry (64x80, 32-tick exposures, K = 16: 2 ticks per bin), 24 frames, 8-tick gaps (a 40-tick
# frame period), margins wide enough for a full period of offset and 2000 ppm of drift.
RIG = dict(height=64, width=80, frames=24, exposure_ticks=32, gap_ticks=8, motion_px=4.0, val_seqs=0)
PROPERTY_TREE = dict(RIG, train_seqs=1, clock_offset_ticks=40.0, clock_drift_ppm=2000.0)
FIX_TREE = dict(RIG, train_seqs=2, clock={"seq_000": (37.0, 1500.0), "seq_001": (-25.0, -1800.0)})
STATIC_TREE = dict(RIG, train_seqs=1, motion_px=0.0, clock={"seq_000": (30.0, 0.0)})


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def true_windows(raw: Path) -> tuple[np.ndarray, np.ndarray]:
    """The windows the blur frames were really exposed in (spike clock), from synth.json."""
    info = json.loads((raw / "synth.json").read_text())
    rate, start = info["config"]["rate_hz"], info["config"]["start_s"]
    a = np.array(info["timeline"]["exposure_start_ticks"], np.float64)
    return start + (a - 0.5) / rate, start + (a + info["config"]["exposure_ticks"] - 0.5) / rate


@pytest.fixture(scope="module")
def property_frames(synth_tree):
    raw = synth_tree(**PROPERTY_TREE)
    seq = raw / "train" / "seq_000"
    lumas = [blur_luma(p) for p in sorted((seq / "blur").glob("*.png"))]
    return SpikeSource(seq / "spike"), lumas, *true_windows(raw)


# ---- the estimate -------------------------------------------------------------------------------------
@settings(max_examples=20)
@given(offset_periods=st.floats(-1.0, 1.0), drift_ppm=st.floats(-2000.0, 2000.0))
def test_the_fix_recovers_any_offset_within_a_period_and_drift_within_2000_ppm(property_frames, offset_periods,
                                                                             drift_ppm):
    source, lumas, t0, t1 = property_frames
    rate, period = source.meta.rate_hz, RIG["exposure_ticks"] + RIG["gap_ticks"]
    r0, r1 = recorded_windows(t0, t1, offset_periods * period / rate, drift_ppm)
    frames = [FrameWindow(i, a, b, luma) for i, (a, b, luma) in enumerate(zip(r0, r1, lumas))]
    est = estimate_clock(source, frames, (1, 1), OPTS.num_bins)
    assert est.verdict == FIXED, est.reason
    fixed0, fixed1 = (1 + est.drift) * r0 + est.offset_s, (1 + est.drift) * r1 + est.offset_s
    assert np.abs(fixed0 - t0).max() * rate <= 1.0      # every one of the 24 windows within one tick
    assert np.abs(fixed1 - t1).max() * rate <= 1.0


def test_robust_line_ignores_outliers():
    x = np.linspace(-1, 1, 24)
    y = 3.0 + 2.0 * x + np.where(np.arange(24) % 2, 0.3, -0.3)
    y[[3, 11, 17]] += [40.0, -25.0, 9.0]
    a, b, used = robust_line(x, y)
    assert abs(a - 3.0) < 0.05 and abs(b - 2.0) < 0.1
    assert not used[[3, 11, 17]].any() and used.sum() == 21


def test_real_car_recording_blurred_from_its_own_spikes(tmp_path):
    """The real recording: blur frames are the mean of its own spikes over each true window; the table is
    recorded 9 ticks late; the fix finds the 9 ticks from the content alone."""
    if not REAL.is_file():
        pytest.skip(f"{REAL} is absent (the real recordings live beside the project, in ../shared/data/real/)")
    spike = tmp_path / "spike"
    spike.mkdir()
    shutil.copyfile(REAL, spike / "stream.dat")
    (spike / "meta.json").write_text(json.dumps(dict(format="dat", layout="stream", stream_file="stream.dat",
                                                     height=250, width=400, rate_hz=20000.0, flipud=True,
                                                     start_s=0.0)))
    source = SpikeSource(spike)
    rate, exposure, period, offset = 20000.0, 12, 16, 9
    starts = np.arange(32, 200 - 32 - exposure + 1, period)                  # 8 frames, 32 ticks of margin
    t0, t1 = (starts - 0.5) / rate, (starts + exposure - 0.5) / rate
    frames = []
    for i, (a, b) in enumerate(zip(t0, t1)):
        mean = source.window(a, b, 1).counts[0] / exposure                    # spikes per tick, [0, 1]
        path = tmp_path / "blur" / f"{i:06d}.png"
        path.parent.mkdir(exist_ok=True)
        write_rgb(path, np.repeat(np.rint(mean * 255).astype(np.uint8)[..., None], 3, axis=2))
        frames.append(FrameWindow(i, a - offset / rate, b - offset / rate, blur_luma(path)))
    est = estimate_clock(source, frames, (1, 1), 4)
    assert est.verdict == FIXED, est.reason
    assert est.frames_located >= 6
    fixed = (1 + est.drift) * np.array([f.t0 for f in frames]) + est.offset_s
    assert np.abs(fixed - t0).max() * rate <= 0.5                             # half a bin of K = 4 is 1.5 ticks


# ---- the store: apply, keep, refuse ------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixed_store(synth_tree, tmp_path_factory):
    """(raw, store before the fix, store after ``fix_store``); the raw tree was only read."""
    raw = synth_tree(**FIX_TREE)
    base = tmp_path_factory.mktemp("clock")
    before = base / "before"
    ingest(raw, before, OPTS, log_dir=None, progress=False)
    after = base / "after"
    shutil.copytree(before, after)
    raw_files = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in raw.rglob("*") if p.is_file()}
    fix_store(after, progress=False)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in raw.rglob("*") if p.is_file()} == raw_files
    return raw, before, after


def test_fix_maps_the_windows_and_revoxelizes_from_raw(fixed_store):
    raw, before, after = fixed_store
    true0, true1 = true_windows(raw)
    rows = read_manifest_rows(after)
    info = read_store_info(after)
    for name in ("seq_000", "seq_001"):
        record = read_clock_fix(clock_fix_path(after, "train", name))
        assert record.verdict == FIXED and record.reason is None
        assert len(record.frames_used) >= 6 and record.residual_ticks <= 1.0
        table = read_exposure_csv(raw / "train" / name / "exposure.csv")
        mine = [r for r in rows if r.seq == name]
        assert [r.t0_recorded for r in mine] == table.t0.tolist()            # the table's windows, kept
        assert [r.t1_recorded for r in mine] == table.t1.tolist()
        t0, t1 = np.array([r.t0 for r in mine]), np.array([r.t1 for r in mine])
        assert np.abs(t0 - true0).max() * 20000 <= 1.0 and np.abs(t1 - true1).max() * 20000 <= 1.0
        np.testing.assert_array_equal(t0, record.map_times(table.t0))
        source = SpikeSource(Path(info.sequences[f"train/{name}"].spike_dir))
        r = next(r for r in mine if r.vox_index is not None)
        stored = read_frame(after / "train" / name / "spike_vox.zarr" / "counts", r.vox_index)
        np.testing.assert_array_equal(stored, source.window(r.t0, r.t1, OPTS.num_bins).counts)
    assert not (after / "audit" / "clock" / "fix_pending.json").exists()


def test_the_audit_afterwards_finds_the_frames_aligned(fixed_store, tmp_path):
    _, before, after = fixed_store
    options = AuditOptions(crop_size=32)
    was = shutil.copytree(before, tmp_path / "before")
    now = shutil.copytree(after, tmp_path / "after")
    old = audit(was, options, progress=False).totals()
    new = audit(now, options, progress=False).totals()
    assert old[ALIGNED] == 0 and old[MISALIGNED] >= 20                      # before: a whole period off
    assert new[MISALIGNED] == 0 and new[ALIGNED] >= 20                     # after: every located frame
    assert abs(new["median_offset_ticks"]) <= 0.5


def test_the_rig_preset_audits_with_no_misaligned_frame_after_the_fix(tmp_path):
    """The README walkthrough's store (``synth --preset rig``, seed 0): before the audit weighed the curve's noise,
    two of its frames, whose fixed windows are within a tick of the truth, were flagged +2 ticks off."""
    raw = synthesize(tmp_path / "rig", SynthConfig.from_preset("rig"), progress=False)
    store = tmp_path / "store"
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    fix_store(store, progress=False)
    report = audit(store, AuditOptions(crop_size=32), progress=False)
    totals = report.totals()
    assert totals[MISALIGNED] == 0 and totals[ALIGNED] >= 48, totals
    assert not report.failed


def test_an_ingest_rerun_keeps_the_fix_and_says_so(fixed_store, tmp_path):
    raw, _, after = fixed_store
    store = shutil.copytree(after, tmp_path / "store")
    digest = tree_digest(store)
    result = ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert tree_digest(store) == digest                                      # nothing rebuilt, nothing changed
    assert len(result.clock_notes) == 2 and all("clock fix kept" in n for n in result.clock_notes)
    res = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(store), "--k", "16", "--crop", "32",
                                    "--no-progress", "--log-dir", str(tmp_path / "logs")])
    assert "train/seq_000: clock fix kept (offset +3" in res.output, res.output


def test_an_edited_exposure_table_drops_the_fix_with_a_note(fixed_store, tmp_path):
    raw, _, after = fixed_store
    raw2 = shutil.copytree(raw, tmp_path / "raw")
    table = read_exposure_csv(raw2 / "train" / "seq_001" / "exposure.csv")
    write_exposure_csv(table.path, table.frame_idx, table.t0 + 1e-6, table.t1 + 1e-6)
    store = shutil.copytree(after, tmp_path / "store")
    result = ingest(raw2, store, OPTS, log_dir=None, progress=False)
    assert any(n.startswith("train/seq_000: clock fix kept") for n in result.clock_notes)
    dropped = [n for n in result.clock_notes if n.startswith("train/seq_001")]
    assert len(dropped) == 1 and "clock fix dropped" in dropped[0] and "changed since" in dropped[0]
    mine = [r for r in result.rows if r.seq == "seq_001"]
    assert all(r.t0 == r.t0_recorded for r in mine)                    # back on the recorded windows


def test_a_static_sequence_is_left_unfixed_with_its_reason(synth_tree, tmp_path):
    raw = synth_tree(**STATIC_TREE)
    store = tmp_path / "store"
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    before = read_manifest_rows(store)
    res = CliRunner().invoke(main, ["audit", str(store), "--fix", "--crop", "32", "--overlays", "0",
                                    "--no-progress"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    record = read_clock_fix(clock_fix_path(store, "train", "seq_000"))
    assert record.verdict == UNFIXED and "static or flat scene" in record.reason
    assert "train/seq_000" in res.output and "unfixed" in res.output
    assert "left unfixed: only" in res.output and "static or flat scene" in res.output
    after = read_manifest_rows(store)
    assert [r.t0 for r in after] == [r.t0 for r in before] == [r.t0_recorded for r in after]


def test_cli_prints_the_fitted_map_per_sequence(fixed_store, tmp_path):
    _, before, _ = fixed_store
    store = shutil.copytree(before, tmp_path / "store")
    res = CliRunner().invoke(main, ["audit", str(store), "--fix", "--crop", "32", "--overlays", "0",
                                    "--no-progress"])
    lines = res.output.splitlines()
    assert any(line.startswith("clock fix (48 frames scanned") for line in lines), res.output
    seq0 = next(line for line in lines if line.startswith("train/seq_000") and "fixed" in line)
    offset_s, ticks, drift, residual, frames = seq0.split()[2:]
    assert abs(float(ticks) - 37.0) < 1.5 and float(offset_s) == pytest.approx(float(ticks) / 20000, rel=1e-3)
    assert float(residual) <= 1.0 and frames.endswith("/24")
    assert "aligned" in res.output and "median offset" in res.output                 # then the audit's table


def test_fix_refuses_a_folder_that_is_not_a_store(tmp_path):
    with pytest.raises(InputError, match="dataset.json"):
        fix_store(tmp_path, progress=False)
    assert not list(tmp_path.iterdir())                                      # and nothing written there


# ---- kill-safety --------------------------------------------------------------------------------------
def fix_killed_at_each(before: Path, tmp_path: Path, signs: dict):
    """For each ``(what, seen)`` of ``signs``: copy the store ``before``, run ``fix_store`` on the copy in a
    subprocess and SIGKILL it as soon as ``seen(copy)`` holds; yield ``(what, copy, killed)`` (killed False
    when the fix finished first). The caller checks the copy, then completes it with a rerun."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for k, (what, seen) in enumerate(signs.items()):
        store = shutil.copytree(before, tmp_path / f"store{k}")
        code = f"from spikeprep.clock_fix import fix_store; fix_store({str(store)!r}, progress=False)"
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if seen(store):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait()
        yield what, store, proc.returncode == -signal.SIGKILL


def test_fix_killed_anywhere_is_completed_byte_identical_by_a_rerun(fixed_store, tmp_path):
    """SIGKILL while records are written, after dataset.json is moved aside, while a sequence is rebuilt: the
    store never looks complete with half a fix, and a rerun ends byte-identical to an uninterrupted run."""
    _, before, after = fixed_store
    clean = tree_digest(after)
    signs = {
        "a clock record is written": lambda s: any((s / "audit" / "clock").rglob("seq_*.json")),
        "dataset.json is moved aside": lambda s: (s / "audit" / "clock" / "fix_pending.json").exists(),
        "a sequence is being rebuilt": lambda s: any(p.name.endswith(".partial") for p in s.glob("*/.*")),
    }
    landed = []
    for what, store, killed in fix_killed_at_each(before, tmp_path, signs):
        if killed:
            landed.append(what)
            if what != "a clock record is written":
                assert not (store / "dataset.json").exists()                    # incomplete, and it says so
                with pytest.raises(InputError, match="incomplete"):
                    read_store_info(store)
        fix_store(store, progress=False)
        assert tree_digest(store) == clean, what
    assert len(landed) >= 2 and set(landed) - {"a clock record is written"}, \
        f"the fix finished before most kills, or none hit the rebuild: only {landed}"


# ---- the record and the rig ---------------------------------------------------------------------------
def test_clock_fix_record_rules(tmp_path):
    base = dict(split="train", seq="s", rate_hz=20000.0, offset_s=1e-3, offset_ticks=20.0, drift_ppm=100.0,
                residual_ticks=0.4, uncertainty_ticks=0.3, frames_total=24, frames_located=20,
                frames_used=[0, 1], scan_ticks=52, exposure_sha256="0" * 64)
    fixed = ClockFix(verdict=FIXED, reason=None, **base)
    assert fixed.map_times(np.array([1.0]))[0] == pytest.approx(1.0001 + 1e-3)
    unfixed = ClockFix(verdict=UNFIXED, reason="static", **base)
    assert unfixed.map_times(2.5) == 2.5
    with pytest.raises(ValueError, match="reason"):
        ClockFix(verdict=UNFIXED, reason=None, **base)
    with pytest.raises(ValueError, match="offset_s"):
        ClockFix(verdict=FIXED, reason=None, **{**base, "offset_s": None})


def test_synth_rig_writes_the_truth_and_streams_past_the_windows(synth_tree):
    raw = synth_tree(frames=6, clock={"seq_000": (25.0, 1000.0)}, clock_offset_ticks=10.0, jitter_ticks=0.5,
                     unpaired_splits=("val",))
    info = json.loads((raw / "synth.json").read_text())
    cfg = SynthConfig.model_validate(info["config"])
    by_name = {s["name"]: s for s in info["sequences"]}
    assert by_name["seq_000"]["clock_offset_ticks"] == 25.0 and by_name["seq_000"]["clock_drift_ppm"] == 1000.0
    assert all(abs(s["clock_offset_ticks"]) <= 25.0 and s["jitter_ticks"] == 0.5 for s in info["sequences"])
    assert by_name["seq_002"]["paired"] is False and not (raw / "val" / "seq_002" / "sharp").exists()
    assert (raw / "train" / "seq_000" / "sharp").is_dir()
    t0, t1 = true_windows(raw)
    rate = cfg.rate_hz
    assert t0[0] * rate >= cfg.period_ticks and cfg.n_ticks - t1[-1] * rate >= cfg.period_ticks
    s = by_name["seq_000"]
    table = read_exposure_csv(raw / "train" / "seq_000" / "exposure.csv")
    back = (1 + s["clock_drift_ppm"] * 1e-6) * table.t0 + s["clock_offset_s"]
    assert np.abs(back - t0).max() * rate <= 4 * 0.5 + 1e-6                    # the truth, up to the jitter
    assert np.all(table.t0 * rate >= 0) and np.all(table.t1 * rate <= cfg.n_ticks)   # recorded: inside too


def test_synth_cli_clock_and_unpaired_options(tmp_path):
    out = tmp_path / "rig"
    res = CliRunner().invoke(main, ["synth", str(out), "--preset", "tiny", "--frames", "3", "--clock",
                                    "seq_001:12.5:-700", "--unpaired", "val", "--no-progress"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "synth.json").read_text())
    assert info["config"]["clock"] == {"seq_001": [12.5, -700.0]} and info["config"]["unpaired_splits"] == ["val"]
    bad = CliRunner().invoke(main, ["synth", str(tmp_path / "x"), "--preset", "tiny", "--clock", "seq_001:1"])
    assert bad.exit_code == 2 and "SEQ:OFFSET_TICKS:DRIFT_PPM" in bad.output
    assert SynthConfig.from_preset("rig").unpaired_splits == ("val",)
