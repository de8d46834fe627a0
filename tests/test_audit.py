"""The alignment audit: detects a shifted exposure record, passes clean sequences, flags what it can't tell."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import spikeprep.audit as audit_mod
from cli.main import main
from schemas.manifest import Drop, DropCode, ManifestRow
from spikeprep.audit import AuditOptions, audit, judge, write_overlays
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.store import open_vox, read_manifest_rows, read_store_info

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
    return [r for r in report.rows if r.seq == seq]


def test_clean_sequence_passes(audited):
    _, report = audited
    rows = rows_of(report, "seq_000")
    assert all(r.status == "ok" for r in rows)
    assert all(r.audit_verdict in ("aligned", "undetermined") for r in rows)
    assert sum(r.audit_verdict == "aligned" for r in rows) >= 3
    assert all(r.audit_corr > 0.8 for r in rows)


@pytest.mark.parametrize("seq, recorded_shift", [("seq_001", 3), ("seq_002", -3)])
def test_misaligned_sequence_is_found_within_one_bin(audited, seq, recorded_shift):
    _, report = audited
    rows = rows_of(report, seq)
    found = [r for r in rows if r.audit_verdict == "misaligned"]
    assert len(found) >= 3
    for r in found:
        # the recorded window is `recorded_shift` ticks late: the spikes match `-recorded_shift` ticks away
        assert abs(r.audit_best_offset_ticks + recorded_shift) <= TICKS_PER_BIN
        assert r.audit_best_offset_s == pytest.approx(r.audit_best_offset_ticks / 20000.0)
        assert r.status == "dropped" and "misaligned" in r.reason and r.reason_code == "audit_misaligned"
    assert all(r.audit_verdict != "aligned" for r in rows)


def test_audit_rewrites_manifest_and_stats(audited):
    root, report = audited
    table = read_manifest_rows(root)
    assert [(r.seq, r.frame_idx, r.status) for r in table] == \
           [(r.seq, r.frame_idx, r.status) for r in report.rows]
    kept = [r for r in table if r.split == "train" and r.status == "ok"]
    values = np.concatenate([np.log1p(np.asarray(open_vox(root / "train" / r.seq / "spike_vox.zarr" / "counts")
                                                 [r.vox_index], dtype=np.float64)).ravel() for r in kept])
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
    info = read_store_info(root)
    for path in report.overlays:
        img = cv2.imread(str(path))
        rank, verdict, split, seq_a, seq_b, frame = path.stem.split("_")
        row = next(r for r in report.rows if (r.split, r.seq, r.frame_idx) == (split, f"{seq_a}_{seq_b}", int(frame)))
        assert verdict == row.audit_verdict
        # the panels, enlarged 2x (4 x 80 px < 480 px), under a banner holding the label
        panels = cv2.resize(audit_mod.overlay_image(root, row, info), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        assert img.shape[1] == 2 * 4 * 80 and img.shape[0] > 2 * 64
        assert np.array_equal(img[-2 * 64:], panels)
        banner = img[:-2 * 64]
        assert (banner > 100).any(), "the label is drawn"


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
    train = lambda rep: [(r.seq, r.frame_idx, r.status) for r in rep.rows if r.split == "train"]  # noqa: E731
    assert train(report) == train(reference)
    assert any(r.split == "val" and r.seq == "seq_000" and r.vox_index is not None for r in report.rows)
    stats = read_store_info(tmp_path / "store").stats
    assert stats is not None and stats == read_store_info(tmp_path / "ref").stats


def test_failed_overlay_encode_is_an_error_not_an_empty_png(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_mod, "overlay_image", lambda root, row, info: np.zeros((4, 12, 3), np.uint8))
    monkeypatch.setattr(audit_mod.cv2, "imencode", lambda ext, img: (False, np.zeros(0, np.uint8)))
    monkeypatch.setattr(audit_mod, "labelled_overlay", lambda panels, lines, verdict: panels)
    rows = [_row("train", "seq_000", 7, audit_verdict="aligned", audit_best_offset_ticks=0, audit_corr=0.9)]
    with pytest.raises(OSError, match="000_aligned_train_seq_000_000007.png"):
        write_overlays(tmp_path, rows, None, n=1)
    assert list((tmp_path / "audit" / "overlays").iterdir()) == []


def test_static_scene_is_undetermined_not_a_pass(synth_tree, tmp_path):
    ingest(synth_tree(height=64, width=80, exposure_ticks=32, motion_px=0.0), tmp_path / "store",
           IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=32), progress=False)
    assert {r.audit_verdict for r in report.rows} == {"undetermined"}
    assert all(r.status == "ok" for r in report.rows)  # reported, not dropped, not called aligned


def test_spikes_of_another_scene_are_a_mismatch(synth_tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(synth_tree(height=64, width=80, exposure_ticks=32, motion_px=4.0), raw)
    a, b = raw / "train" / "seq_000" / "spike", raw / "train" / "seq_001" / "spike"
    tmp = raw / "swap"
    a.rename(tmp), b.rename(a), tmp.rename(b)
    ingest(raw, tmp_path / "store", IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=32, min_corr=0.5), progress=False)
    swapped = [r for r in report.rows if r.seq in ("seq_000", "seq_001")]
    assert sum(r.audit_verdict == "mismatch" for r in swapped) >= 6
    assert all(r.status == "dropped" for r in swapped if r.audit_verdict == "mismatch")


@pytest.mark.parametrize("curve, verdict, best", [
    (1 - 0.01 * np.abs(np.arange(-8, 9)), "aligned", 0),
    (1 - 0.01 * np.abs(np.arange(-8, 9) - 5), "misaligned", 5),
    (1 - 0.01 * np.abs(np.arange(-8, 9) + 1), "aligned", -1),       # within half a bin
    (np.full(17, 0.9) + 1e-5 * np.sin(np.arange(17) * 2.1), "undetermined", None),
    (0.1 - 0.01 * np.abs(np.arange(-8, 9)), "mismatch", 0),
    (np.minimum(0.99, 1 - 0.01 * np.abs(np.arange(-8, 9) + 3) + 0.02), "misaligned", -3),  # plateau
    # flat tops after `audit --fix` (README walkthrough, train/seq_000/12 and seq_001/20): noise of ~1e-3 puts
    # the top's middle at +2.5 and +1.5 ticks; the parabola's vertex (+1.3, +0.4) is within the tolerance
    (np.array([.9483, .9514, .9539, .956, .9593, .9606, .962, .9619, .9621, .9623, .9637, .963, .9617, .9608, .9595,
               .9569, .9559]), "aligned", 1),
    (np.array([.9629, .966, .9682, .9698, .9712, .9734, .9742, .9744, .9742, .9749, .9744, .9739, .973, .9715, .9702,
               .9689, .9672]), "aligned", 0),
    # a true 2-tick misalignment with the same noise is still caught: the vertex stands 2 ticks off, 2 SE clear
    (1 - 0.002 * (np.arange(-8, 9) - 2.0) ** 2 / 4 + 5e-4 * np.sin(np.arange(17) * 2.1), "misaligned", 2),
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


# ---- issue 18, item 5: the flatness rule (DESIGN section 6) on a synthetic curve of each kind --------------
X9, X17 = np.arange(-4, 5), np.arange(-8, 9)
NOISE = np.random.default_rng(18).normal(0.0, 0.003, 17)
# Measured curves, kept verbatim: the tiny preset's val/seq_002 frame 3 (a smooth peak at 0 that the old
# second-difference test called undetermined) and two static scenes (no motion: quantisation noise only).
TINY_VAL = [0.93442, 0.9373, 0.94364, 0.94613, 0.94875, 0.94644, 0.94237, 0.93922, 0.93381]
STATIC_17 = [0.9501, 0.95054, 0.95048, 0.94978, 0.94942, 0.94899, 0.94968, 0.95076, 0.95126, 0.94951, 0.94904,
             0.94927, 0.94987, 0.94972, 0.94946, 0.94793, 0.95006]
STATIC_9 = [0.77097, 0.77406, 0.77261, 0.77584, 0.77571, 0.77742, 0.77872, 0.76375, 0.76243]


@pytest.mark.parametrize("shifts, curve, verdict, best", [
    # smooth broad peaks at 0: their steady curvature is the signal, not jitter
    (X9, 0.9 - 0.0016 * X9 ** 2, "aligned", 0),
    (X17, 0.6 + 0.3 * np.exp(-X17 ** 2 / 50.0), "aligned", 0),
    (X9, np.array(TINY_VAL), "aligned", 0),
    # sharp peaks at 0
    (X9, 0.95 - 0.02 * np.abs(X9), "aligned", 0),
    (X17, 0.95 - 0.01 * np.abs(X17) + 0.0005 * NOISE / 0.003, "aligned", 0),       # with a little noise
    # peaks off zero: misaligned, with the offset
    (X17, 0.9 - 0.0008 * (X17 - 4) ** 2, "misaligned", 4),
    (X9, 0.95 - 0.02 * np.abs(X9 + 3), "misaligned", -3),
    # flat, noisy flat, zigzag, static scenes: no peak to locate
    (X17, np.full(17, 0.9), "undetermined", None),
    (X17, 0.9 + NOISE, "undetermined", None),
    (X17, 0.9 + 0.01 * (-1.0) ** X17, "undetermined", None),
    (X17, 0.9 - 0.0005 * np.abs(X17) + 0.01 * (-1.0) ** X17, "undetermined", None),  # a zigzag on a faint peak
    (X17, np.array(STATIC_17), "undetermined", None),
    (X9, np.array(STATIC_9), "undetermined", None),
])
def test_judge_classifies_each_kind_of_curve(shifts, curve, verdict, best):
    got_verdict, got_best, zero = judge(shifts, curve, len(shifts) * 2, 16, AuditOptions())
    assert (got_verdict, got_best) == (verdict, best)
    assert zero == curve[len(shifts) // 2]


def test_peak_share():
    from spikeprep.audit import peak_share
    assert peak_share(0.9 - 0.001 * X17 ** 2) == pytest.approx(1.0)     # rises, then falls
    assert peak_share(0.5 + 0.01 * X9) == pytest.approx(1.0)            # monotone: the peak is at the edge
    assert peak_share(np.full(9, 0.9)) == 0.0
    zigzag = 0.9 + 0.01 * (-1.0) ** X17                                  # 16 steps of 0.02, ends at the top
    assert peak_share(zigzag) == pytest.approx(0.0)
    assert peak_share(np.array([0.0, 1.0, 0.0, 1.0, 0.0])) == pytest.approx(0.5)


def test_tiny_preset_val_frames_that_peak_at_zero_are_aligned(synth_tree, tmp_path):
    """Issue 18's report: `synth --preset tiny`, ingest, audit: the val frames' curves peak clearly at 0 and
    were all undetermined."""
    ingest(synth_tree(), tmp_path / "store", IngestOptions(crop_size=48), log_dir=None, progress=False)
    report = audit(tmp_path / "store", AuditOptions(crop_size=48), progress=False)
    val = [r for r in report.rows if r.split == "val"]
    assert len(val) == 4 and all(r.audit_verdict == "aligned" and r.audit_best_offset_ticks == 0 for r in val)


# ---- issue 18, items 1-4 and 6: what `spikeprep audit` prints and writes --------------------------------
@pytest.fixture(scope="module")
def shifted_cli(synth_tree, tmp_path_factory):
    """The AUDIT_TREE store (seq_001, seq_002 misaligned) audited by the CLI: (store, result, curves PNG)."""
    store = tmp_path_factory.mktemp("shifted") / "store"
    ingest(synth_tree(**AUDIT_TREE), store, IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    png = store.parent / "elsewhere" / "curves.png"
    res = CliRunner().invoke(main, ["audit", str(store), "--crop", "32", "--overlays", "5", "--show", "2",
                                    "--curves", str(png), "--no-progress"])
    return store, res, png


def test_audit_table_has_full_column_names_a_totals_row_and_a_legend(shifted_cli):
    store, res, _ = shifted_cli
    assert res.exit_code == 1
    lines = res.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("sequence"))
    assert lines[header].split() == ["sequence", "frames", "kept", "dropped", "aligned", "misaligned", "mismatch",
                                     "undetermined", "median", "offset"]
    body = [line.split() for line in lines[header + 1:header + 4]]
    assert [b[0] for b in body] == ["train/seq_000", "train/seq_001", "val/seq_002"]
    total = lines[header + 5].split()
    assert total[0] == "total" and lines[header + 4].startswith("---")
    manifest = read_manifest_rows(store)
    assert [int(v) for v in total[1:8]] == [sum(int(b[i]) for b in body) for i in range(1, 8)]
    assert int(total[1]) == len(manifest) and int(total[3]) == sum(r.status == "dropped" for r in manifest)
    assert int(total[5]) == sum(r.audit_verdict == "misaligned" for r in manifest) >= 6
    for word in ("aligned:", "misaligned:", "mismatch:", "undetermined:"):
        assert any(line.strip().startswith(word) for line in lines), word


def test_failures_are_capped_and_the_printed_query_lists_them_all(shifted_cli):
    store, res, _ = shifted_cli
    failed = [r for r in read_manifest_rows(store) if r.status == "dropped"]
    shown = [line.strip() for line in res.output.splitlines() if line.strip().startswith("FAIL ")]
    assert len(failed) > 2 and len(shown) == 2
    # the code for machines, the prose for people (issue 31)
    assert shown == [f"FAIL {r.split}/{r.seq}/{r.frame_idx:06d} [{r.reason_code}]: {r.reason}" for r in failed[:2]]
    assert f"... and {len(failed) - 2} more: see {store / 'manifest.parquet'} (status, reason_code, reason columns)" \
        in res.output
    query = res.output.splitlines()[next(i for i, line in enumerate(res.output.splitlines()) if "more: see" in line) + 1]
    argv = shlex.split(query.strip())
    assert argv[0] == "python"
    out = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, check=True).stdout
    listed = [line.split()[1:5] for line in out.splitlines()[1:]]
    assert listed == [[r.split, r.seq, str(r.frame_idx), r.reason_code] for r in failed]


def test_overlays_are_labelled_failing_first_then_a_seeded_choice(shifted_cli):
    store, res, _ = shifted_cli
    rows = read_manifest_rows(store)
    failing = [r for r in rows if r.status == "dropped" and r.vox_index is not None]
    names = sorted(p.name for p in (store / "audit" / "overlays").iterdir())
    assert len(names) == 5 and len(failing) >= 5
    assert all(n.split("_")[1] in ("misaligned", "mismatch") for n in names)     # failures first
    assert "overlays:" in res.output and "failing frames first" in res.output
    # the choice is deterministic: the same seed picks the same frames, another seed others
    assert [frame_key_of(r) for r in audit_mod.overlay_choice(rows, 5, seed=0)] == [
        (n.split("_")[2], "_".join(n.split("_")[3:5]), int(n.split("_")[5][:6])) for n in names]


def frame_key_of(row):
    return row.split, row.seq, row.frame_idx


def _row(split: str, seq: str, frame_idx: int, **over) -> ManifestRow:
    """A kept, voxelized manifest row of a 64x80 frame (``over`` replaces fields)."""
    fields = dict(split=split, seq=seq, frame_idx=frame_idx, t0=0.0, t1=0.01, t0_recorded=0.0, t1_recorded=0.01,
                  n_ticks=32, event_count=5, H=64, W=80, Hs=64, Ws=80,
                  blur=f"{split}/{seq}/blur/{frame_idx:06d}.png", sharp=f"{split}/{seq}/sharp/{frame_idx:06d}.png",
                  paired=True, spike_source="raw", vox_index=frame_idx, status="ok", reason=None, reason_code=None,
                  vox_checksum="ab" * 32)
    return ManifestRow(**{**fields, **over})


MISALIGNED_DROP = Drop(DropCode.AUDIT_MISALIGNED, "exposure misaligned")


def test_overlay_choice_puts_failures_first_then_seeds_the_rest():
    rows = [_row("train", "s", i) for i in range(12)]
    for i in (7, 2, 9):
        rows[i] = rows[i].dropped(MISALIGNED_DROP)
    # ingest's drop (no voxels), whose text reads like the audit's: the code, not the text, says who dropped it
    rows[4] = rows[4].model_copy(update=dict(vox_index=None)).dropped(
        Drop(DropCode.SHORT_SIDE_BELOW_CROP, "audit: short side 48 < crop size 256"))
    pick = lambda seed: [r.frame_idx for r in audit_mod.overlay_choice(rows, 6, seed)]     # noqa: E731
    assert pick(0)[:3] == [2, 7, 9] and 4 not in pick(0) and len(set(pick(0))) == 6
    assert pick(0) == pick(0)
    assert len({tuple(pick(seed)) for seed in range(6)}) > 1
    assert [r.frame_idx for r in audit_mod.overlay_choice(rows, 2, 0)] in ([2, 7], [2, 9], [7, 9])


def test_overlay_label_names_frame_verdict_offset_and_peak():
    row = _row("val", "seq_002", 3, audit_verdict="misaligned", audit_best_offset_ticks=-3,
               audit_corr=0.8512).dropped(MISALIGNED_DROP)
    curve = dict(shift_ticks=[-2, -1, 0, 1, 2], corr=[None, 0.9, 0.85, 0.8, 0.7])
    assert audit_mod.overlay_label(row, curve)[:3] == [
        "val/seq_002 frame 3", "misaligned, offset -3 ticks", "peak corr 0.900 at shift -1; at 0: 0.851"]
    row = _row("val", "seq_002", 3).dropped(Drop(DropCode.AUDIT_SHORT_SIDE_BELOW_CROP, "short side 48 < crop size 64"))
    assert audit_mod.overlay_label(row, None)[1:3] == [
        "dropped (audit_short_side_below_crop): short side 48 < crop size 64", "no correlation curve"]


def test_failing_curves_png(shifted_cli, synth_tree, tmp_path):
    store, res, png = shifted_cli
    assert f"curves of the failing frames: {png}" in res.output
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 600
    assert not (store / "audit" / "failing_curves.png").exists()       # --curves put it elsewhere
    # without --curves it sits next to the overlays; a clean store has none, and a stale one goes
    report = audit(store, AuditOptions(crop_size=32), progress=False)
    assert report.curves_png == store / "audit" / "failing_curves.png" and report.curves_png.is_file()
    clean = tmp_path / "clean"
    ingest(synth_tree(**CLEAN_TREE), clean, IngestOptions(num_bins=K, crop_size=32), log_dir=None, progress=False)
    (clean / "audit").mkdir()
    (clean / "audit" / "failing_curves.png").write_bytes(b"stale")
    report = audit(clean, AuditOptions(crop_size=32), progress=False)
    assert report.curves_png is None and not (clean / "audit" / "failing_curves.png").exists()


def test_curves_figure_panels_follow_the_failures(shifted_cli):
    store, _, _ = shifted_cli
    rows = read_manifest_rows(store)
    curves = pq.read_table(store / "audit" / "curves.parquet").to_pylist()
    fig = audit_mod.curves_figure(rows, curves, K, max_panels=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    failing = [r for r in rows if r.audit_verdict in ("misaligned", "mismatch")]
    assert titles == [f"{r.split}/{r.seq} frame {r.frame_idx}: {r.audit_verdict} "
                      f"{r.audit_best_offset_ticks:+d} ticks" for r in failing[:4]]
    assert f"(first 4 of {len(failing)})" in fig._suptitle.get_text()


def test_audit_counts_crop_drops_and_hints_the_crop(synth_tree, tmp_path):
    store = tmp_path / "store"
    ingest(synth_tree(**AUDIT_TREE), store, IngestOptions(), log_dir=None, progress=False)   # crop 256 > 64x80
    res = CliRunner().invoke(main, ["audit", str(store), "--overlays", "0", "--no-progress"])
    assert res.exit_code == 1
    assert ("8 training frame(s) dropped for the crop size (short side 64 < crop size 256): re-run "
            f"`spikeprep ingest RAW --out {store} --crop 64`") in res.output
    # frames ingest kept but a larger audit --crop drops: the fix is the audit's --crop (found by the code
    # audit_short_side_below_crop, the numbers from the rows' H and W and the options)
    ingest(synth_tree(**AUDIT_TREE), tmp_path / "s2", IngestOptions(crop_size=64), log_dir=None, progress=False)
    res = CliRunner().invoke(main, ["audit", str(tmp_path / "s2"), "--crop", "72", "--overlays", "0", "--no-progress"])
    assert ("8 training frame(s) dropped for the crop size (short side 64 < crop size 72): re-run "
            f"`spikeprep audit {tmp_path / 's2'} --crop 64`") in res.output
    assert "[audit_short_side_below_crop]: short side 64 < crop size 72" in res.output
    # issue 31: 48 px frames fit no crop training accepts (64 at least): no --crop 48 advice that training refuses
    ingest(synth_tree(), tmp_path / "s3", IngestOptions(), log_dir=None, progress=False)
    res = CliRunner().invoke(main, ["audit", str(tmp_path / "s3"), "--overlays", "0", "--no-progress"])
    assert ("8 training frame(s) dropped for the crop size (short side 48 < crop size 256): no training crop fits "
            "them (a multiple of 8 and at least 64 pixels): train on frames whose short side is at least 64 px"
            ) in res.output and "--crop 48" not in res.output
