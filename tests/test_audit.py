"""The alignment audit: detects a shifted exposure record, passes clean sequences, flags what it can't tell."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import spikeprep.audit as audit_mod
from cli.main import main
from spikeprep.audit import AuditOptions, audit, judge, write_overlays
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.store import open_vox, read_manifest, read_store_info

from conftest import AUDIT_TREE

K = 16
TICKS_PER_BIN = 32 // K
CLEAN_TREE = dict(height=64, width=80, exposure_ticks=32, motion_px=4.0, seed=2)


@pytest.fixture
def audited(synth_tree, tmp_path):
    ingest(synth_tree(**AUDIT_TREE), tmp_path / "store", IngestOptions(num_bins=K, crop_size=32),
           log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=32), overlays=3, progress=False)
    return tmp_path / "store", report


def rows_of(report, seq):
    return [r for r in report.rows if r["seq"] == seq]


def test_clean_sequence_passes(audited):
    _, report = audited
    rows = rows_of(report, "seq_000")
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["audit_verdict"] in ("aligned", "undetermined") for r in rows)
    assert sum(r["audit_verdict"] == "aligned" for r in rows) >= 3
    assert all(r["audit_corr"] > 0.8 for r in rows)


@pytest.mark.parametrize("seq, recorded_shift", [("seq_001", 3), ("seq_002", -3)])
def test_misaligned_sequence_is_found_within_one_bin(audited, seq, recorded_shift):
    _, report = audited
    rows = rows_of(report, seq)
    found = [r for r in rows if r["audit_verdict"] == "misaligned"]
    assert len(found) >= 3
    for r in found:
        # the recorded window is `recorded_shift` ticks late: the spikes match `-recorded_shift` ticks away
        assert abs(r["audit_best_offset_ticks"] + recorded_shift) <= TICKS_PER_BIN
        assert r["audit_best_offset_s"] == pytest.approx(r["audit_best_offset_ticks"] / 20000.0)
        assert r["status"] == "dropped" and "misaligned" in r["reason"] and r["reason"].startswith("audit: ")
    assert all(r["audit_verdict"] != "aligned" for r in rows)


def test_audit_rewrites_manifest_and_stats(audited):
    root, report = audited
    table = read_manifest(root).to_pylist()
    assert [(r["seq"], r["frame_idx"], r["status"]) for r in table] == \
           [(r["seq"], r["frame_idx"], r["status"]) for r in report.rows]
    kept = [r for r in table if r["split"] == "train" and r["status"] == "ok"]
    values = np.concatenate([np.log1p(np.asarray(open_vox(root / "train" / r["seq"] / "spike_vox.zarr" / "counts")
                                                 [r["vox_index"]], dtype=np.float64)).ravel() for r in kept])
    stats = read_store_info(root).stats
    assert stats.n_frames == len(kept)
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(), rel=1e-12)


def test_rerun_is_idempotent(audited):
    root, report = audited
    again = audit(root, AuditOptions(crop_size=32), progress=False)
    assert again.rows == report.rows


def test_curves_and_overlays_are_written(audited):
    root, report = audited
    curves = pq.read_table(root / "audit" / "curves.parquet").to_pylist()
    assert len(curves) == len(report.curves) > 0
    assert curves[0]["shift_ticks"] == list(range(-8, 9))
    assert len(report.overlays) == 3
    img = cv2.imread(str(report.overlays[0]))
    assert img.shape == (64, 3 * 80, 3)


def test_audit_stats_ignore_a_val_sequence_named_like_a_training_one(synth_tree, tmp_path):
    # Regression: the audit re-keyed histograms by (seq, frame_idx), so val/seq_000 replaced
    # train/seq_000's and the rewritten MEAN/STD came partly from validation data.
    opts = IngestOptions(num_bins=K, crop_size=32)
    ingest(synth_tree(**CLEAN_TREE), tmp_path / "ref", opts, log_dir=None, progress=False)
    reference = audit(tmp_path / "ref", AuditOptions(crop_size=32), progress=False)
    raw = tmp_path / "raw"
    shutil.copytree(synth_tree(**CLEAN_TREE), raw)
    (raw / "val" / "seq_002").rename(raw / "val" / "seq_000")
    ingest(raw, tmp_path / "store", opts, log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=32), progress=False)
    train = lambda rep: [(r["seq"], r["frame_idx"], r["status"]) for r in rep.rows if r["split"] == "train"]  # noqa: E731
    assert train(report) == train(reference)
    assert any(r["split"] == "val" and r["seq"] == "seq_000" and r["vox_index"] is not None for r in report.rows)
    stats = read_store_info(tmp_path / "store").stats
    assert stats is not None and stats == read_store_info(tmp_path / "ref").stats


def test_failed_overlay_encode_is_an_error_not_an_empty_png(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_mod, "overlay_image", lambda root, row, info: np.zeros((4, 12, 3), np.uint8))
    monkeypatch.setattr(audit_mod.cv2, "imencode", lambda ext, img: (False, np.zeros(0, np.uint8)))
    rows = [dict(split="train", seq="seq_000", frame_idx=7, vox_index=0)]
    with pytest.raises(OSError, match="train_seq_000_000007.png"):
        write_overlays(tmp_path, rows, None, n=1)
    assert list((tmp_path / "audit" / "overlays").iterdir()) == []


def test_static_scene_is_undetermined_not_a_pass(synth_tree, tmp_path):
    ingest(synth_tree(height=64, width=80, exposure_ticks=32, motion_px=0.0), tmp_path / "store",
           IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=32), progress=False)
    assert {r["audit_verdict"] for r in report.rows} == {"undetermined"}
    assert all(r["status"] == "ok" for r in report.rows)  # reported, not dropped, not called aligned


def test_spikes_of_another_scene_are_a_mismatch(synth_tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(synth_tree(height=64, width=80, exposure_ticks=32, motion_px=4.0), raw)
    a, b = raw / "train" / "seq_000" / "spike", raw / "train" / "seq_001" / "spike"
    tmp = raw / "swap"
    a.rename(tmp), b.rename(a), tmp.rename(b)
    ingest(raw, tmp_path / "store", IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=32, min_corr=0.5), progress=False)
    swapped = [r for r in report.rows if r["seq"] in ("seq_000", "seq_001")]
    assert sum(r["audit_verdict"] == "mismatch" for r in swapped) >= 6
    assert all(r["status"] == "dropped" for r in swapped if r["audit_verdict"] == "mismatch")


@pytest.mark.parametrize("curve, verdict, best", [
    (1 - 0.01 * np.abs(np.arange(-8, 9)), "aligned", 0),
    (1 - 0.01 * np.abs(np.arange(-8, 9) - 5), "misaligned", 5),
    (1 - 0.01 * np.abs(np.arange(-8, 9) + 1), "aligned", -1),       # within half a bin
    (np.full(17, 0.9) + 1e-5 * np.sin(np.arange(17) * 2.1), "undetermined", None),
    (0.1 - 0.01 * np.abs(np.arange(-8, 9)), "mismatch", 0),
    (np.minimum(0.99, 1 - 0.01 * np.abs(np.arange(-8, 9) + 3) + 0.02), "misaligned", -3),  # plateau
])
def test_judge_table(curve, verdict, best):
    got_verdict, got_best, zero = judge(np.arange(-8, 9), curve, 32, 16, AuditOptions())
    assert (got_verdict, got_best) == (verdict, best)
    assert zero == curve[8]


def test_cli_audit_exit_status(synth_tree, tmp_path):
    runner = CliRunner()
    for name, tree, code in (("clean", CLEAN_TREE, 0),
                             ("shifted", AUDIT_TREE, 1)):
        store = tmp_path / name
        ingest(synth_tree(**tree), store, IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
        res = runner.invoke(main, ["audit", str(store), "--crop", "32", "--overlays", "0", "--no-progress"])
        assert res.exit_code == code, res.output
        assert "train/seq_000" in res.output
        if code:
            assert "FAIL train/seq_001" in res.output and "misaligned" in res.output


@pytest.mark.parametrize("scale", [(1, 1), (2, 2), (2, 3)])
def test_luma_correlator_equals_pearson_on_the_rgb_grid(rng, scale):
    from spikeprep.audit import LumaCorrelator, spike_intensity
    counts = rng.integers(0, 9, (12, 10))
    luma = rng.random((12 * scale[0], 10 * scale[1]))
    expected = np.corrcoef(spike_intensity(counts, 17, scale).ravel(), luma.ravel())[0, 1]  # numpy as the oracle
    assert LumaCorrelator(luma, scale)(counts / 17) == pytest.approx(expected, rel=1e-12)
