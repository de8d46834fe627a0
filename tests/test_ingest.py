"""Ingest: raw tree -> Zarr voxels + manifest + dataset.json; atomic, resumable, exact stats."""
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

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from schemas.config import ConfigError, load_config
from schemas.manifest import ManifestRow
from spikeprep.errors import InputError
from spikeprep.ingest import IngestOptions, ingest, write_align_log
from spikeprep.spike_source import SpikeSource
from spikeprep.stats import histogram_moments, write_config_norm
from spikeprep.store import open_vox, read_manifest_rows, read_store_info
from spikeprep.windows import read_exposure_csv, write_exposure_csv

ROOT = Path(__file__).resolve().parents[1]
OPTS = IngestOptions(num_bins=8, crop_size=32)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_ingest_stream_layout(synth_tree, tmp_path):
    raw = synth_tree()
    result = ingest(raw, tmp_path / "store", OPTS, log_dir=tmp_path / "logs", progress=False)
    table = read_manifest_rows(tmp_path / "store")
    assert len(table) == 12 and all(r.status == "ok" for r in table)
    info = read_store_info(tmp_path / "store")
    assert info.K == 8 and set(info.sequences) == {"train/seq_000", "train/seq_001", "val/seq_002"}
    for r in table:
        key = f"{r.split}/{r.seq}"
        vox = open_vox(tmp_path / "store" / key / "spike_vox.zarr" / "counts")
        assert vox.shape[1:] == (8, 48, 64) and vox.dtype == np.uint8
        stored = np.asarray(vox[r.vox_index])
        source = SpikeSource(raw / key / "spike")
        expected = source.window(r.t0, r.t1, 8).counts
        assert np.array_equal(stored, expected)
        assert r.event_count == int(expected.sum()) and r.n_ticks == 16
        assert (tmp_path / "store" / r.blur).is_file() and (tmp_path / "store" / r.sharp).is_file()
    log_lines = result.align_log.read_text().splitlines()
    assert log_lines[0] == "# train/seq_000"
    first = table[0]
    assert log_lines[1] == f"{first.frame_idx}, {first.t0!r}, {first.t1!r}, {first.event_count}"


def test_stats_equal_brute_force(synth_tree, tmp_path):
    result = ingest(synth_tree(), tmp_path / "store", OPTS, log_dir=None, progress=False)
    values = []
    for r in read_manifest_rows(tmp_path / "store"):
        if r.split == "train" and r.status == "ok":
            vox = open_vox(tmp_path / "store" / "train" / r.seq / "spike_vox.zarr" / "counts")
            values.append(np.log1p(np.asarray(vox[r.vox_index], dtype=np.float64)).ravel())
    v = np.concatenate(values)
    assert result.stats.n_voxels == v.size and result.stats.n_frames == 8
    assert result.stats.mean == pytest.approx(v.mean(), rel=1e-12)
    assert result.stats.std == pytest.approx(v.std(), rel=1e-12)
    assert read_store_info(tmp_path / "store").stats == result.stats


def test_val_sequence_named_like_a_training_one_does_not_change_the_stats(synth_tree, tmp_path):
    # Regression: per-frame histograms were keyed by (seq, frame_idx), so val/seq_000 overwrote
    # train/seq_000's and MEAN/STD came partly from validation data.
    reference = ingest(synth_tree(), tmp_path / "ref", OPTS, log_dir=None, progress=False)
    raw = copy_tree(synth_tree(), tmp_path / "raw")
    (raw / "val" / "seq_002").rename(raw / "val" / "seq_000")
    result = ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    keys = sorted({(r.split, r.seq) for r in result.rows})
    assert keys == [("train", "seq_000"), ("train", "seq_001"), ("val", "seq_000")]
    checksums = {k: [r.vox_checksum for r in result.rows if (r.split, r.seq) == k] for k in keys}
    assert checksums[("train", "seq_000")] != checksums[("val", "seq_000")]  # the clash would show
    assert result.stats == reference.stats
    assert read_store_info(tmp_path / "store").stats == reference.stats


def test_histogram_moments_exact():
    hist = [10, 5, 2, 1]
    v = np.log1p(np.repeat(np.arange(4), hist).astype(np.float64))
    mean, std, n = histogram_moments(hist)
    assert n == 18 and mean == pytest.approx(v.mean(), rel=1e-15) and std == pytest.approx(v.std(), rel=1e-14)
    with pytest.raises(ValueError):
        histogram_moments([0, 0])


def test_zero_std_is_an_error(synth_tree, tmp_path):
    raw = copy_tree(synth_tree(), tmp_path / "raw")
    for seq in ("seq_000", "seq_001"):  # silence every training spike
        dat = raw / "train" / seq / "spike" / "stream.dat"
        dat.write_bytes(bytes(dat.stat().st_size))
    with pytest.raises(InputError, match="STD"):
        ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    assert not (tmp_path / "store" / "dataset.json").exists()


def test_per_frame_dat_layout_equals_stream(synth_tree, tmp_path):
    stream = ingest(synth_tree(), tmp_path / "a", OPTS, log_dir=None, progress=False)
    per_frame = ingest(synth_tree(layout="per-frame-dat"), tmp_path / "b", OPTS, log_dir=None, progress=False)
    assert [r.vox_checksum for r in stream.rows] == [r.vox_checksum for r in per_frame.rows]
    assert all(r.spike_source.endswith(".dat") and "stream" not in r.spike_source
               for r in per_frame.rows)
    assert stream.stats == per_frame.stats


@pytest.mark.parametrize("fmt", ["npy-binary", "npz-events"])
def test_other_formats_give_the_same_store(synth_tree, tmp_path, fmt):
    a = ingest(synth_tree(), tmp_path / "a", OPTS, log_dir=None, progress=False)
    b = ingest(synth_tree(spike_format=fmt), tmp_path / "b", OPTS, log_dir=None, progress=False)
    assert [r.vox_checksum for r in a.rows] == [r.vox_checksum for r in b.rows]


def _published_tree(src: Path, raw: Path, templates: dict[str, str]) -> None:
    """Rearrange a synth per-frame-dat tree into a published layout (folder templates per kind)."""
    for split, target in (("train", "train"), ("val", "test")):
        for seq_dir in sorted((src / split).iterdir()):
            for kind, template in templates.items():
                shutil.copytree(seq_dir / kind, raw / template.format(split=target, seq=seq_dir.name),
                                ignore=shutil.ignore_patterns("meta.json"))


PUBLISHED = {
    "s-sdm": {"blur": "{split}/blur_data/{seq}", "sharp": "{split}/sharp_data/{seq}",
              "spike": "{split}/spike_data/{seq}"},
    "spk-gopro": {"blur": "GOPRO_Large/{split}/{seq}/blur_gamma", "sharp": "GOPRO_Large/{split}/{seq}/sharp",
                  "spike": "GOPRO_Large_spike_seq/{split}/{seq}/spike"},
}


@pytest.mark.parametrize("layout", sorted(PUBLISHED))
def test_published_per_frame_layouts(synth_tree, tmp_path, layout):
    """Published-style trees built from a synth per-frame tree give the native ingest's voxels."""
    src = synth_tree(layout="per-frame-dat")
    raw = tmp_path / "GOPRO"
    _published_tree(src, raw, PUBLISHED[layout])
    rate = json.loads((src / "train" / "seq_000" / "spike" / "meta.json").read_text())["rate_hz"]
    frames_per_file = (src / "train" / "seq_000" / "spike" / "000000.dat").stat().st_size // (48 * 64 // 8)
    margin = 6  # the tiny preset: exposure ticks [6, 22) of each 28-tick file
    assert frames_per_file == 2 * margin + 16
    if layout == "s-sdm":
        overrides = dict(frames_per_file=frames_per_file, exposure_start=margin, exposure_stop=margin + 16)
    else:  # the exposure is centred in each file; lengths come from the file sizes
        overrides = dict(exposure_length=16)
    result = ingest(raw, tmp_path / "store", IngestOptions(
        num_bins=8, crop_size=32, layout=layout,
        preset_overrides=dict(height=48, width=64, rate_hz=rate, **overrides)), log_dir=None, progress=False)
    assert len(result.rows) == 12 and result.n_ok == 12
    assert {r.split for r in result.rows} == {"train", "val"}
    native = ingest(src, tmp_path / "native", OPTS, log_dir=None, progress=False)
    assert [r.vox_checksum for r in result.rows] == [r.vox_checksum for r in native.rows]


def test_cli_preset_overrides(synth_tree, tmp_path):
    src = synth_tree(layout="per-frame-dat")
    _published_tree(src, tmp_path / "GOPRO", PUBLISHED["s-sdm"])
    cfg = _clip_cfg(tmp_path, 4)           # the tiny tree's 4-frame sequences hold clips of 4 (issue 18, item 6)
    args = ["ingest", str(tmp_path / "GOPRO"), "--out", str(tmp_path / "store"), "--layout", "s-sdm",
            "--height", "48", "--width", "64", "--exposure-length", "16", "--k", "8", "--crop", "32",
            "--config", str(cfg), "--log-dir", str(tmp_path / "logs"), "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "12 ok, 0 dropped" in res.output
    res = CliRunner().invoke(main, ["ingest", str(src), "--out", str(tmp_path / "s2"), "--height", "48"])
    assert res.exit_code == 2 and "preset overrides apply" in res.output


def test_interrupted_ingest_resumes_byte_identical(synth_tree, tmp_path):
    raw = synth_tree(frames=6, height=96, width=128)
    clean = tmp_path / "clean"
    ingest(raw, clean, OPTS, log_dir=None, progress=False)
    store = tmp_path / "store"
    code = ("import sys; from spikeprep.ingest import ingest, IngestOptions;"
            f"ingest({str(raw)!r}, {str(store)!r}, IngestOptions(num_bins=8, crop_size=32), log_dir=None,"
            " progress=False)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = False
    for delay in (0.0, 0.05, 0.2):  # kill at the first sign of work, then a little later
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if store.exists() and any(p.name.endswith(".partial") for p in store.glob("*/.*")):
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
        proc.wait()
        if killed and not (store / "dataset.json").exists():
            break
    assert killed, "ingest finished before it could be interrupted"
    assert not (store / "dataset.json").exists()  # nothing that looks complete
    with pytest.raises(InputError, match="incomplete"):
        read_store_info(store)
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert not list(store.glob("*/.*.partial"))
    assert tree_digest(store) == tree_digest(clean)


def test_rerun_removes_temp_files_a_killed_run_left(synth_tree, tmp_path):
    """A SIGKILL between a store file's temp write and its rename leaves the temp file; the rerun removes it."""
    raw = synth_tree()
    clean, store = tmp_path / "clean", tmp_path / "store"
    ingest(raw, clean, OPTS, log_dir=None, progress=False)
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()                                                      # a writer that is gone
    for name in (f".manifest.parquet.{proc.pid}-{'0a' * 6}.tmp.parquet", f".dataset.json.{proc.pid}-{'0b' * 6}.tmp.json"):
        (store / name).write_bytes(b"half a file")
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert tree_digest(store) == tree_digest(clean)


def test_rerun_reuses_complete_sequences(synth_tree, tmp_path):
    raw = synth_tree()
    ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    vox = tmp_path / "store" / "train" / "seq_000" / "spike_vox.zarr" / "counts" / "zarr.json"
    before = vox.stat().st_mtime_ns
    ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    assert vox.stat().st_mtime_ns == before
    digest = tree_digest(tmp_path / "store")
    ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False, force=True)   # rebuilt, equal
    assert vox.stat().st_mtime_ns != before and tree_digest(tmp_path / "store") == digest
    ingest(raw, tmp_path / "store", IngestOptions(num_bins=4, crop_size=32), log_dir=None, progress=False)
    assert read_store_info(tmp_path / "store").K == 4
    assert open_vox(vox.parent).shape[1] == 4


def _as_unversioned_records(store: Path) -> None:
    """Rewrite every ingest.json as spikeprep wrote it before the record had a version (same fields)."""
    for path in store.glob("*/*/ingest.json"):
        record = json.loads(path.read_text())
        del record["version"]
        path.write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")


def test_rerun_keeps_a_sequence_whose_unversioned_record_matches(synth_tree, tmp_path):
    """An older spikeprep's ingest.json is read as record version 0: its sequence is reused, not rebuilt, and
    the audit recomputes the stats from its histograms."""
    from spikeprep.audit import AuditOptions, audit

    raw, store = synth_tree(), tmp_path / "store"
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    _as_unversioned_records(store)
    digest = tree_digest(store)
    vox = store / "train" / "seq_000" / "spike_vox.zarr" / "counts" / "zarr.json"
    before = vox.stat().st_mtime_ns
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert vox.stat().st_mtime_ns == before and tree_digest(store) == digest   # kept as it was
    report = audit(store, AuditOptions(crop_size=32), progress=False)
    assert read_store_info(store).stats is not None and len(report.rows) == 12


@pytest.mark.parametrize("damage", ["not json", '{"rows": []}', '{"version": 99}'])
def test_rerun_rebuilds_a_sequence_whose_record_is_unreadable(synth_tree, tmp_path, damage):
    raw, clean, store = synth_tree(), tmp_path / "clean", tmp_path / "store"
    ingest(raw, clean, OPTS, log_dir=None, progress=False)
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    (store / "val" / "seq_002" / "ingest.json").write_text(damage)
    vox = store / "val" / "seq_002" / "spike_vox.zarr" / "counts" / "zarr.json"
    before = vox.stat().st_mtime_ns
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert vox.stat().st_mtime_ns != before and tree_digest(store) == tree_digest(clean)


def test_workers_give_the_same_store(synth_tree, tmp_path):
    raw = synth_tree()
    ingest(raw, tmp_path / "a", OPTS, workers=1, log_dir=None, progress=False)
    ingest(raw, tmp_path / "b", OPTS, workers=2, log_dir=None, progress=False)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


# ---- malformed raw trees: a clear error, or a logged drop with the reason ----------------------------
def _edit_exposure(seq_dir: Path, fn):
    table = read_exposure_csv(seq_dir / "exposure.csv")
    t0, t1 = table.t0.copy(), table.t1.copy()
    fn(t0, t1)
    write_exposure_csv(seq_dir / "exposure.csv", table.frame_idx, t0, t1)


def _swap_rows(t0, t1):
    t0[1], t0[2] = t0[2], t0[1]
    t1[1], t1[2] = t1[2], t1[1]


DROP_CASES = {   # damage, frame, fragment of the reason (prose), reason_code (issue 31)
    # (a missing sharp frame is no drop: the frame is stored unpaired, test_unpaired.py)
    "missing blur frame": (lambda s: (s / "blur" / "000001.png").unlink(), 1, "missing blur frame", "missing_blur"),
    "unreadable PNG": (lambda s: (s / "blur" / "000002.png").write_bytes(b"not a png"), 2, "unreadable",
                       "unreadable_image"),
    "size mismatch": (lambda s: cv2.imwrite(str(s / "sharp" / "000000.png"), np.zeros((40, 64, 3), np.uint8)),
                      0, "blur is 48x64 but sharp is 40x64", "sharp_size_mismatch"),
    "frame size differs from the sequence's": (lambda s: [cv2.imwrite(str(s / kind / "000002.png"),
                                                                      np.zeros((56, 64, 3), np.uint8))
                                                          for kind in ("blur", "sharp")],
                                               2, "the sequence's frames are 48x64", "frame_size_mismatch"),
    "t1 <= t0": (lambda s: _edit_exposure(s, lambda t0, t1: t1.__setitem__(3, t0[3])), 3, "t1", "window_reversed"),
    "unsorted windows": (lambda s: _edit_exposure(s, _swap_rows), 2, "out of order", "window_out_of_order"),
    "overlapping windows": (lambda s: _edit_exposure(s, lambda t0, t1: t0.__setitem__(2, t1[1] - 1e-6)), 2,
                            "overlaps", "window_overlap"),
    "window past the stream": (lambda s: _edit_exposure(s, lambda t0, t1: (t0.__setitem__(3, t0[3] + 0.01),
                                                                         t1.__setitem__(3, t1[3] + 0.01))),
                               3, "past the spike data", "window_past_spikes"),
    "empty window": (lambda s: _edit_exposure(s, lambda t0, t1: t1.__setitem__(2, t0[2] + 0.2 / 20000)),
                     2, "empty window", "window_empty"),
    # issue 16, item 8: degenerate numbers are counted drops, not tracebacks
    "0.1 ns window": (lambda s: _edit_exposure(s, lambda t0, t1: t1.__setitem__(1, t0[1] + 1e-10)), 1,
                      "shorter than 1e-09 s", "window_too_short"),
    "window overflowing float64": (lambda s: _edit_exposure(s, lambda t0, t1: (t0.__setitem__(0, -1.5e308),
                                                                              t1.__setitem__(0, 1.5e308))),
                                   0, "overflows float64", "window_too_long"),
    "last t1 1e300": (lambda s: _edit_exposure(s, lambda t0, t1: t1.__setitem__(len(t1) - 1, 1e300)), 3,
                      "past the spike data", "window_past_spikes"),
    "PNG header of 2^31+16 rows": (lambda s: _png_header_rows(s / "blur" / "000001.png", 2**31 + 16), 1,
                                   "not a valid PNG size", "unreadable_image"),
    "PNG header of 0x0": (lambda s: _png_header_rows(s / "sharp" / "000002.png", 0, 0), 2, "not a valid PNG size",
                          "unreadable_image"),
    "PNG body cut after its header": (lambda s: _truncate(s / "blur" / "000003.png", 60), 3, "", "unreadable_image"),
}


def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _png_header_rows(path: Path, rows: int, cols: int | None = None) -> None:
    """Rewrite the IHDR height (and width) of a PNG without touching anything else."""
    data = bytearray(path.read_bytes())
    data[20:24] = rows.to_bytes(4, "big")
    if cols is not None:
        data[16:20] = cols.to_bytes(4, "big")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", sorted(DROP_CASES))
def test_malformed_frames_are_dropped_with_reason(synth_tree, tmp_path, case, caplog):
    raw = copy_tree(synth_tree(), tmp_path / "raw")
    damage, frame, fragment, code = DROP_CASES[case]
    damage(raw / "train" / "seq_000")
    with caplog.at_level("INFO", logger="spikeprep.ingest"):
        result = ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    dropped = {(r.seq, r.frame_idx): r for r in result.rows if r.status == "dropped"}
    assert ("seq_000", frame) in dropped, dropped
    assert fragment in dropped[("seq_000", frame)].reason
    assert dropped[("seq_000", frame)].reason_code == code
    assert fragment in caplog.text and f"({code})" in caplog.text
    # the manifest on disk says the same
    on_disk = {(r.seq, r.frame_idx): r.reason_code for r in read_manifest_rows(tmp_path / "store")
               if r.status == "dropped"}
    assert on_disk == {k: r.reason_code for k, r in dropped.items()}
    assert all(seq != "seq_001" for seq, _ in dropped)  # other sequences untouched
    assert (tmp_path / "store" / "dataset.json").is_file()


@pytest.mark.parametrize("fmt", ["npy-events", "npz-events", "dat"])
@pytest.mark.parametrize("edge", ["last t1 1e300", "first t0 -1e300"])
def test_window_past_the_data_is_dropped_in_every_format(synth_tree, tmp_path, fmt, edge):
    """Issue 28 (round one replayed): an event list's window ending at 1e300 s was an OverflowError (its tick
    count overflowed the manifest's int64); it is dropped as past the spike data, as the .dat path does."""
    raw = copy_tree(synth_tree(spike_format=fmt), tmp_path / "raw")
    seq = raw / "train" / "seq_000"
    if edge.startswith("last"):
        _edit_exposure(seq, lambda t0, t1: t1.__setitem__(len(t1) - 1, 1e300))
    else:
        _edit_exposure(seq, lambda t0, t1: t0.__setitem__(0, -1e300))
    result = ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    frame = 3 if edge.startswith("last") else 0
    row = next(r for r in result.rows if r.seq == "seq_000" and r.split == "train" and r.frame_idx == frame)
    assert row.status == "dropped" and "past the spike data" in row.reason
    assert row.reason_code == "window_past_spikes"
    assert 0 <= row.n_ticks < 10**6
    kept = [r for r in result.rows if r.status == "ok"]
    assert len(kept) == len(result.rows) - 1       # every other window is inside the data, events or not


def test_short_side_below_crop_drops_training_frames_only(synth_tree, tmp_path):
    result = ingest(synth_tree(), tmp_path / "store", IngestOptions(num_bins=8, crop_size=64), log_dir=None,
                    progress=False)
    for r in result.rows:
        assert (r.status == "dropped") == (r.split == "train")
        if r.split == "train":
            assert "short side 48 < crop size 64" in r.reason and r.reason_code == "short_side_below_crop"
    assert result.stats is None


@pytest.mark.parametrize("damage, fragment", [
    (lambda s: (s / "exposure.csv").unlink(), "exposure.csv"),
    (lambda s: (s / "spike" / "meta.json").unlink(), "meta.json"),
    (lambda s: (s / "spike" / "meta.json").write_text('{"format": "dat"}'), "layout"),
    (lambda s: (s / "spike" / "stream.dat").unlink(), "stream.dat"),
])
def test_structural_errors_name_the_file(synth_tree, tmp_path, damage, fragment):
    raw = copy_tree(synth_tree(), tmp_path / "raw")
    damage(raw / "train" / "seq_001")
    with pytest.raises(InputError, match=fragment) as err:
        ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    assert "Fix:" in str(err.value)
    assert not (tmp_path / "store" / "dataset.json").exists()


def test_a_frame_dropped_for_its_images_is_never_voxelized(synth_tree, tmp_path, monkeypatch):
    """Issue 16, item 7: the voxels of a frame that is dropped anyway are not computed (its grid may be absurd)."""
    from spikeprep import spike_source

    raw = copy_tree(synth_tree(), tmp_path / "raw")
    cv2.imwrite(str(raw / "train" / "seq_000" / "sharp" / "000001.png"), np.zeros((40, 64, 3), np.uint8))
    asked = []
    window = spike_source.SpikeSource.window
    monkeypatch.setattr(spike_source.SpikeSource, "window",
                        lambda self, *a, **kw: asked.append(kw.get("frame_idx")) or window(self, *a, **kw))
    result = ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    assert any(r.seq == "seq_000" and r.frame_idx == 1 and r.status == "dropped" for r in result.rows)
    kept = sum(r.status == "ok" for r in result.rows)
    assert len(asked) == kept and len(result.rows) == kept + 1


def ingest_cli(synth_tree, tmp_path, damage, args):
    """``spikeprep ingest`` on a copy of the tiny tree with ``damage`` applied to train/seq_000: (result, --out)."""
    raw = copy_tree(synth_tree(), tmp_path / "raw")
    if damage is not None:
        damage(raw / "train" / "seq_000")
    out = tmp_path / "store"
    return CliRunner().invoke(main, ["ingest", str(raw), "--out", str(out), "--no-progress", "--log-dir",
                                     str(tmp_path / "logs"), *args]), out


@pytest.mark.parametrize("args, damage, fragment", [
    (["--k", "100000000"], None, "fewer bins"),
    ([], lambda s: (s / "spike" / "meta.json").write_text((s / "spike" / "meta.json").read_text().replace(
        '"height": 48', '"height": 100000').replace('"width": 64', '"width": 100000')), "GiB"),
    ([], lambda s: (s / "spike" / "meta.json").write_text((s / "spike" / "meta.json").read_text().replace(
        '"rate_hz": 20000.0', '"rate_hz": 1e300')), "rate_hz"),
    (["--layout", "s-sdm", "--exposure-start", "50", "--exposure-stop", "10"], None, "exposure_start"),
])
def test_sizes_and_numbers_no_machine_can_hold_stop_before_anything_is_written(synth_tree, tmp_path, args,
                                                                               damage, fragment):
    """Issue 16, items 7 and 8: exit 2 naming the cause and the fix; no store folder is created."""
    res, out = ingest_cli(synth_tree, tmp_path, damage, args)
    assert res.exit_code == 2 and fragment in res.output and "Fix:" in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_write_config_norm_uses_its_own_temp_file(tmp_path):
    # A fixed temp name (".cfg.yaml.tmp") is shared by parallel writers: one renames the other's file.
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text((ROOT / "configs" / "deblur" / "vrt_spike_baseline.yaml").read_text())
    other = tmp_path / ".cfg.yaml.tmp"
    other.write_text("another writer's half-written file\n")
    write_config_norm(cfg, 0.25, 0.5)
    assert other.read_text() == "another writer's half-written file\n"
    assert (load_config(cfg).DATA.NORM.MEAN, load_config(cfg).DATA.NORM.STD) == (0.25, 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cfg.yaml.tmp", "cfg.yaml"]


def test_write_config_norm_failure_leaves_config_and_no_temp_file(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    text = (ROOT / "configs" / "deblur" / "vrt_spike_baseline.yaml").read_text()
    text = text.replace("TRAIN:", "TRAIN:\n  BOGUS: 1", 1)  # the rewritten file fails validation
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="TRAIN.BOGUS: unknown key") as err:
        write_config_norm(cfg, 0.25, 0.5)
    assert str(err.value).startswith(f"{cfg}: ")  # names the config, not a temp file
    assert cfg.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]


def test_align_log_is_written_atomically(tmp_path, monkeypatch):
    rows = [ManifestRow(split="train", seq="seq_000", frame_idx=0, t0=0.0, t1=0.5, t0_recorded=0.0, t1_recorded=0.5,
                        n_ticks=10, event_count=3, H=48, W=64, Hs=48, Ws=64, blur="train/seq_000/blur/000000.png",
                        sharp=None, paired=False, spike_source="raw", vox_index=0, status="ok", reason=None,
                        reason_code=None, vox_checksum="ab" * 32)]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)  # the write fails before it is committed
    with pytest.raises(OSError, match="disk full"):
        write_align_log(tmp_path / "logs", rows)
    assert list((tmp_path / "logs").iterdir()) == []  # no partial log, no temp file
    monkeypatch.undo()
    path = write_align_log(tmp_path / "logs", rows)
    assert path.read_text() == "# train/seq_000\n0, 0.0, 0.5, 3\n"
    assert list((tmp_path / "logs").iterdir()) == [path]


def test_write_config_norm_keeps_other_lines(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    original = (ROOT / "configs" / "deblur" / "vrt_spike_baseline.yaml").read_text()
    cfg.write_text(original)
    write_config_norm(cfg, 0.123456789012345, 0.3)
    new = cfg.read_text()
    loaded = load_config(cfg)
    assert (loaded.DATA.NORM.MEAN, loaded.DATA.NORM.STD) == (0.123456789012345, 0.3)
    changed = [(a, b) for a, b in zip(original.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 2 and all("# written by ingest" in b for _, b in changed)
    assert len(original.splitlines()) == len(new.splitlines())


def test_cli_ingest_and_errors(synth_tree, tmp_path):
    runner = CliRunner()
    cfg = tmp_path / "cfg.yaml"
    raw_cfg = yaml.safe_load((ROOT / "configs" / "deblur" / "vrt_spike_baseline.yaml").read_text())
    raw_cfg["DATA"].update(K=8, CROP_SIZE=32, CLIP_LEN=4)
    cfg.write_text(yaml.safe_dump(raw_cfg))
    res = runner.invoke(main, ["ingest", str(synth_tree()), "--out", str(tmp_path / "store"), "--config", str(cfg),
                               "--write-config", str(cfg), "--log-dir", str(tmp_path / "logs"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "12 ok, 0 dropped; K=8" in res.output
    stats = read_store_info(tmp_path / "store").stats
    assert load_config(cfg).DATA.NORM.MEAN == stats.mean
    res = runner.invoke(main, ["stats", str(tmp_path / "store")])
    assert res.exit_code == 0 and repr(stats.std) in res.output

    raw_cfg["DATA"]["KK"] = 3
    cfg.write_text(yaml.safe_dump(raw_cfg))
    res = runner.invoke(main, ["ingest", str(synth_tree()), "--out", str(tmp_path / "s2"), "--config", str(cfg)])
    assert res.exit_code == 2 and "DATA.KK: unknown key" in res.output and "Traceback" not in res.output

    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["ingest", str(empty), "--out", str(tmp_path / "s3")])
    assert res.exit_code == 2 and "no sequences found" in res.output and "Fix:" in res.output


# ---- issue 16, item 1: ingest never deletes or overwrites a file it did not create ---------------------
@pytest.mark.parametrize("where", ["raw itself", "inside raw", "holding raw"])
def test_ingest_refuses_an_output_that_overlaps_the_raw_tree(synth_tree, tmp_path, where):
    raw = copy_tree(synth_tree(), tmp_path / "work" / "raw")
    before = tree_digest(tmp_path / "work")
    out = {"raw itself": raw, "inside raw": raw / "train" / "store", "holding raw": tmp_path / "work"}[where]
    res = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(out), "--log-dir", str(tmp_path / "logs"),
                                    "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "Fix:" in res.output and str(out) in res.output
    assert tree_digest(tmp_path / "work") == before                  # nothing deleted, nothing written


def test_ingest_never_replaces_what_it_did_not_write(synth_tree, tmp_path):
    raw, out = synth_tree(), tmp_path / "store"
    ingest(raw, out, OPTS, log_dir=None, progress=False)
    labels = out / "train" / "seq_000" / "labels.txt"
    labels.write_text("the user's own notes\n")
    other = IngestOptions(num_bins=4, crop_size=32)                 # another K: every sequence is rebuilt
    with pytest.raises(InputError, match="labels.txt") as err:
        ingest(raw, out, other, log_dir=None, progress=False)
    assert err.value.fix and labels.read_text() == "the user's own notes\n"
    assert read_store_info(out).K == 8                               # refused before anything was written
    labels.unlink()
    ingest(raw, out, other, log_dir=None, progress=False)            # without it the rebuild goes ahead
    assert read_store_info(out).K == 4

    foreign = tmp_path / "foreign"
    (foreign / "train" / "seq_000").mkdir(parents=True)
    (foreign / "train" / "seq_000" / "photo.png").write_bytes(b"not ours")
    with pytest.raises(InputError, match="not a sequence spikeprep wrote"):
        ingest(raw, foreign, OPTS, log_dir=None, progress=False)
    assert (foreign / "train" / "seq_000" / "photo.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in foreign.iterdir()) == ["train"]

    for name, content in (("dataset.json", '{"title": "my dataset"}'), ("manifest.parquet", "mine")):
        folder = tmp_path / f"has_{name}"
        folder.mkdir()
        (folder / name).write_text(content)
        with pytest.raises(InputError, match="not a spikeprep store"):
            ingest(raw, folder, OPTS, log_dir=None, progress=False)
        assert (folder / name).read_text() == content and sorted(p.name for p in folder.iterdir()) == [name]


def test_a_second_ingest_into_a_store_being_written_stops_with_a_clear_error(synth_tree, tmp_path):
    """Issue 16, item 2, with two real processes: the first holds the store's write lock (as a running
    ingest does) until told to let go; the second is refused without touching the store."""
    raw, out = synth_tree(), tmp_path / "store"
    ingest(raw, out, OPTS, log_dir=None, progress=False)
    before = tree_digest(out)
    code = ("import sys; from pathlib import Path; from spikeprep.store import store_lock\n"
            f"with store_lock(Path({str(out)!r}), 'ingest'):\n    print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = subprocess.run([sys.executable, "-m", "cli.main", "ingest", str(raw), "--out", str(out), "--k", "4",
                              "--log-dir", str(tmp_path / "logs"), "--no-progress"], cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
        assert res.returncode == 2, res.stdout + res.stderr
        text = res.stdout + res.stderr
        assert "another spikeprep command is writing this store" in text and "Traceback" not in text
        assert tree_digest(out) == before
    finally:
        holder.communicate("\n", timeout=60)
    ingest(raw, out, OPTS, log_dir=None, progress=False)             # the lock went with its holder


@pytest.mark.parametrize("damage, args, fragment", [
    (None, [], "[short_side_below_crop]"),                                         # crop larger than frames
    (lambda s: (s / "spike" / "stream.dat").write_bytes(b""), ["--crop", "32"], "train/seq_000: all 4 frames"),
])
def test_a_sequence_that_keeps_no_frame_is_an_error_naming_it(synth_tree, tmp_path, damage, args, fragment):
    """Issue 16 ("also noticed") and 18: one bad file or option behind every drop of a sequence is exit 1, with
    the cause; the store is still written and a rerun reuses the good sequences."""
    res, out = ingest_cli(synth_tree, tmp_path, damage, args)
    assert res.exit_code == 1 and fragment in res.output and "Traceback" not in res.output, res.output
    assert "kept no frame" in res.output and (out / "dataset.json").is_file()
    if damage is not None:
        assert "train/seq_001: all" not in res.output     # the intact sequences are not blamed


def test_a_spike_file_linked_from_outside_raw_is_named(synth_tree, tmp_path, caplog):
    """Issue 16, item 4: a symlink out of RAW is followed, but never silently."""
    raw = copy_tree(synth_tree(), tmp_path / "raw")
    elsewhere = tmp_path / "other_disk"
    elsewhere.mkdir()
    stream = raw / "train" / "seq_001" / "spike" / "stream.dat"
    shutil.move(stream, elsewhere / "stream.dat")
    stream.symlink_to(elsewhere / "stream.dat")
    with caplog.at_level("WARNING", logger="spikeprep.ingest"):
        ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    assert "train/seq_001: 1 input file(s) are symlinks leading outside" in caplog.text
    assert str(elsewhere / "stream.dat") in caplog.text and "seq_000" not in caplog.text


# ---- issue 18, item 6: a split left with no clip to train on is exit 1, saying why ------------------------
def _clip_cfg(tmp_path, clip_len):
    """The baseline config with DATA.CLIP_LEN = ``clip_len`` and a crop the tiny tree's frames fit."""
    raw_cfg = yaml.safe_load((ROOT / "configs" / "deblur" / "vrt_spike_baseline.yaml").read_text())
    raw_cfg["DATA"].update(CLIP_LEN=clip_len, CROP_SIZE=32)
    cfg = tmp_path / f"clip{clip_len}.yaml"
    cfg.write_text(yaml.safe_dump(raw_cfg))
    return cfg


def test_ingest_exit_status_when_a_split_has_no_clip(synth_tree, tmp_path):
    # the default crop (256) drops every 48x64 training frame: the crop count, and no clip. No crop that
    # training accepts (a multiple of 8, at least 64) fits 48 px frames, so none is advised (issue 31)
    res, out = ingest_cli(synth_tree, tmp_path / "a", None, [])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    too_small = ("no training crop fits them (a multiple of 8 and at least 64 pixels): train on frames whose short "
                 "side is at least 64 px")
    assert f"8 training frame(s) dropped for the crop size (short side 48 < crop size 256): {too_small}" in res.output
    assert ("error: split 'train' has no run of 5 consecutive kept frames in one sequence (longest: 0; 5 is the "
            "default DATA.CLIP_LEN), so training has no clip: 8 of its frames were dropped for the crop size: "
            f"{too_small}") in res.output
    assert "--crop 48" not in res.output
    # frames that fit a valid crop: the largest one is advised
    raw = synth_tree(height=72, width=96)
    res = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(tmp_path / "c"), "--no-progress"])
    assert ("8 training frame(s) dropped for the crop size (short side 72 < crop size 256): pass --crop 72 (the "
            "largest crop training accepts within the frames' short side) or a --config whose DATA.CROP_SIZE is 72"
            ) in res.output, res.output
    assert (out / "dataset.json").is_file()                           # the store is still written
    # every frame kept, but 4-frame sequences hold no clip of the config's CLIP_LEN 5: said, with the fix
    cfg = _clip_cfg(tmp_path, 5)
    res, _ = ingest_cli(synth_tree, tmp_path / "b", None, ["--config", str(cfg)])
    assert res.exit_code == 1 and "12 ok, 0 dropped" in res.output, res.output
    for split in ("train", "val"):
        assert (f"error: split '{split}' has no run of 5 consecutive kept frames in one sequence (longest: 4; 5 "
                f"is DATA.CLIP_LEN of {cfg}), so training has no clip: its longest sequence has 4 frames") in res.output
    assert "kept no frame" not in res.output
    # the config's CLIP_LEN 4 fits: exit 0
    res, _ = ingest_cli(synth_tree, tmp_path / "c", None, ["--config", str(_clip_cfg(tmp_path, 4))])
    assert res.exit_code == 0 and "has no run" not in res.output and "next: spikeprep audit" in res.output, res.output


def test_ingest_lists_the_first_dropped_frames_and_where_the_rest_are(synth_tree, tmp_path):
    res, out = ingest_cli(synth_tree, tmp_path, None, ["--show", "3"])
    listed = [line for line in res.output.splitlines() if line.startswith("  dropped ")]
    assert len(listed) == 3
    # the code for machines beside the prose for people (issue 31)
    assert listed[0] == "  dropped train/seq_000/000000 [short_side_below_crop]: short side 48 < crop size 256"
    assert f"... and 5 more: see {out / 'manifest.parquet'} (status, reason_code, reason columns)" in res.output
