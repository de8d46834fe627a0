"""`spikeprep synth`: layout, time windows, determinism, the rendering and spike models, formats, CLI."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

import spikeprep.synth as synth_mod
from cli.synth_cmd import synth as synth_cmd
from spikeprep.errors import InputError
from spikeprep.formats.arrays import read_binary_array
from spikeprep.formats.dat import dat_num_frames, read_dat
from spikeprep.formats.events import read_events
from spikeprep.formats.meta import read_spike_meta
from spikeprep.synth import (SynthConfig, encode_frame, luma, make_plan, read_synth_config, sequence_names,
                             synthesize)
from spikeprep.windows import read_exposure_csv, tick_range

TINY = SynthConfig.from_preset("tiny")
SEQS = [("train", "seq_000"), ("train", "seq_001"), ("val", "seq_002")]


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def stream_spikes(seq_dir: Path) -> np.ndarray:
    meta = read_spike_meta(seq_dir / "spike")
    return read_dat(seq_dir / "spike" / meta.stream_file, meta.height, meta.width)


def make(tmp_path: Path, name: str, workers: int = 1, **overrides) -> Path:
    out = tmp_path / name
    synthesize(out, SynthConfig.from_preset("tiny", **overrides), workers=workers, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    synthesize(out, TINY, workers=1, progress=False)
    return out


# ---- layout ---------------------------------------------------------------------------------------
def test_tree_layout_and_counts(tiny_tree):
    assert sorted(p.name for p in tiny_tree.iterdir()) == ["synth.json", "train", "val"]
    assert sequence_names(TINY) == SEQS
    for split, seq in SEQS:
        d = tiny_tree / split / seq
        names = [f"{i:06d}.png" for i in range(TINY.frames)]
        assert sorted(p.name for p in (d / "blur").iterdir()) == names
        assert sorted(p.name for p in (d / "sharp").iterdir()) == names
        assert sorted(p.name for p in (d / "spike").iterdir()) == ["meta.json", "stream.dat"]
        assert (d / "exposure.csv").read_text().splitlines()[0] == "frame_idx,t0,t1"
        img = read_rgb(d / "blur" / "000000.png")
        assert img.shape == (TINY.height, TINY.width, 3) and img.dtype == np.uint8
    assert not [p for p in tiny_tree.rglob(".*")]  # no temp files or directories left
    info = json.loads((tiny_tree / "synth.json").read_text())
    assert SynthConfig.model_validate(info["config"]) == TINY  # full, re-usable parameters
    assert info["timeline"]["n_ticks"] == TINY.n_ticks
    assert [s["name"] for s in info["sequences"]] == [n for _, n in SEQS]
    assert len({s["background"] for s in info["sequences"]}) == len(SEQS)  # one photograph per sequence
    assert all(s["background"] != s["foreground"] for s in info["sequences"])


def test_meta_validates_and_stream_length(tiny_tree):
    for split, seq in SEQS:
        spike_dir = tiny_tree / split / seq / "spike"
        meta = read_spike_meta(spike_dir)
        assert (meta.format, meta.layout, meta.stream_file, meta.flipud) == ("dat", "stream", "stream.dat", True)
        assert (meta.height, meta.width, meta.rate_hz, meta.start_s) == (48, 64, 20000.0, 0.0)
        assert dat_num_frames(spike_dir / "stream.dat", 48, 64) == TINY.n_ticks


def test_exposure_windows_hold_exactly_E_ticks(tiny_tree):
    E = TINY.exposure_ticks
    starts = TINY.exposure_starts()
    for split, seq in SEQS:
        d = tiny_tree / split / seq
        meta = read_spike_meta(d / "spike")
        table = read_exposure_csv(d / "exposure.csv")
        assert table.problems() == {}
        assert list(table.frame_idx) == list(range(TINY.frames))
        assert np.all(np.diff(table.t0) > 0) and np.all(table.t1[:-1] <= table.t0[1:])  # sorted, disjoint
        times = meta.frame_time(meta.start_s, np.arange(TINY.n_ticks))
        for a, t0, t1 in zip(starts, table.t0, table.t1):
            inside = np.flatnonzero((t0 <= times) & (times < t1))
            assert inside.tolist() == list(range(a, a + E))
            assert tick_range(t0, t1, meta.start_s, meta.rate_hz, TINY.n_ticks) == (a, a + E)


def test_nonzero_start_time(tmp_path):
    out = make(tmp_path, "t", train_seqs=1, val_seqs=0, start_s=1234.5678)
    d = out / "train" / "seq_000"
    meta, table = read_spike_meta(d / "spike"), read_exposure_csv(d / "exposure.csv")
    times = meta.frame_time(meta.start_s, np.arange(TINY.n_ticks))
    for a, t0, t1 in zip(TINY.exposure_starts(), table.t0, table.t1):
        assert np.flatnonzero((t0 <= times) & (times < t1)).tolist() == list(range(a, a + 16))


# ---- determinism ----------------------------------------------------------------------------------
def test_same_seed_is_byte_identical_for_any_worker_count(tiny_tree, tmp_path):
    ref = tree_hashes(tiny_tree)
    assert tree_hashes(make(tmp_path, "w2", workers=2)) == ref
    assert tree_hashes(make(tmp_path, "w1", workers=1)) == ref


def test_different_seeds_differ(tiny_tree, tmp_path):
    other = make(tmp_path, "s1", seed=1)
    for split, seq in SEQS:
        for rel in ("blur/000000.png", "sharp/000000.png", "spike/stream.dat"):
            assert (other / split / seq / rel).read_bytes() != (tiny_tree / split / seq / rel).read_bytes()


# ---- the rendering and spike models ------------------------------------------------------------------
def test_blur_is_mean_of_subframes_and_sharp_is_middle(tiny_tree):
    E = TINY.exposure_ticks
    moving = 0
    for k, (split, seq) in enumerate(SEQS):
        plan = make_plan(TINY, k)
        for i, a in enumerate(TINY.exposure_starts().tolist()):
            subs = [plan.render(j) for j in range(a, a + E)]
            total = np.zeros(subs[0].shape, np.float64)
            for sub in subs:
                total += sub
            blur = read_rgb(tiny_tree / split / seq / "blur" / f"{i:06d}.png")
            sharp = read_rgb(tiny_tree / split / seq / "sharp" / f"{i:06d}.png")
            np.testing.assert_array_equal(blur, encode_frame(total / E))
            np.testing.assert_array_equal(sharp, encode_frame(subs[E // 2]))
            # and, independently of summation order, within one grey level of the plain mean
            plain = np.rint(np.mean(np.stack(subs), axis=0, dtype=np.float64) * 255)
            assert np.abs(blur.astype(np.float64) - plain).max() <= 1
            moving += int(np.abs(blur.astype(int) - sharp).mean() > 0.5)
    assert moving >= len(SEQS) * TINY.frames // 2  # the camera / object really move


@pytest.mark.parametrize("index", [0, 1, 2])
def test_true_flow_warps_the_later_frame_onto_the_earlier(index):
    """Sampling frame b at (x + dx, y + dy) (cv2.remap, not our warp) gives frame a; zero flow and the
    reversed flow do not. Pixels whose target leaves the view are excluded."""
    cfg = SynthConfig.from_preset("demo", height=96, width=128)
    plan = make_plan(cfg, index)
    a = int(cfg.exposure_starts()[2]) + cfg.exposure_ticks // 2
    b = a + cfg.period_ticks
    ref, supp = plan.render(a), plan.render(b)
    flow = plan.true_flow(a, b)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    ys, xs = np.mgrid[0:96, 0:128].astype(np.float32)

    def error(f):
        mx, my = xs + f[..., 0], ys + f[..., 1]
        inside = (mx >= 0) & (mx <= 127) & (my >= 0) & (my <= 95)
        warped = cv2.remap(supp, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.abs(warped - ref).mean(-1)[inside]

    assert np.abs(flow).mean() > 1.0                                   # it really moves
    right, still, wrong = error(flow), error(np.zeros_like(flow)), error(-flow)
    # occlusions (the object's edges) and resampling keep some pixels off; most must match
    assert (right < 0.01).mean() > 0.75 > (still < 0.01).mean() + 0.25
    assert np.median(right) < 0.3 * min(np.median(still), np.median(wrong))
    np.testing.assert_allclose(plan.true_flow(a, a), 0, atol=1e-9)


def test_read_synth_config_round_trips_and_names_a_bad_file(tiny_tree, tmp_path):
    assert read_synth_config(tiny_tree) == TINY
    (tmp_path / "synth.json").write_text('{"config": {"height": -1}}')
    with pytest.raises(InputError, match="synth.json"):
        read_synth_config(tmp_path)
    with pytest.raises(InputError, match="synth.json"):
        read_synth_config(tmp_path / "nowhere")


def test_spikes_are_integrate_and_fire_on_luma(tiny_tree):
    plan = make_plan(TINY, 1)
    thr = TINY.threshold
    acc = np.random.default_rng(plan.spike_seed).uniform(0.0, thr, (48, 64))
    assert acc.min() >= 0 and acc.max() < thr
    expected = np.zeros((TINY.n_ticks, 48, 64), bool)
    for j in range(TINY.n_ticks):
        acc += luma(plan.render(j))
        expected[j] = acc >= thr
        acc[expected[j]] -= thr
    np.testing.assert_array_equal(stream_spikes(tiny_tree / "train" / "seq_001"), expected)


@pytest.mark.parametrize("scale", [1, 2])
def test_spike_rate_tracks_blur_luma(tmp_path, scale):
    cfg = dict(frames=2, exposure_ticks=64, spike_scale=scale)
    out = make(tmp_path, f"r{scale}", **cfg)
    c = SynthConfig.from_preset("tiny", **cfg)
    for split, seq in SEQS:
        d = out / split / seq
        meta = read_spike_meta(d / "spike")
        assert (meta.height, meta.width) == (48 // scale, 64 // scale)
        spikes = stream_spikes(d)
        assert spikes.shape == (c.n_ticks, 48 // scale, 64 // scale)
        for i, a in enumerate(c.exposure_starts().tolist()):
            rate = spikes[a:a + 64].mean(axis=0)
            y = luma(read_rgb(d / "blur" / f"{i:06d}.png").astype(np.float32) / 255, scale)
            assert y.shape == rate.shape
            assert np.corrcoef(rate.ravel(), y.ravel())[0, 1] > 0.9
            # rate ~ luma / threshold
            assert abs(rate.mean() - y.mean() / c.threshold) < 0.05


def test_noise_adds_spurious_spikes(tiny_tree, tmp_path):
    noisy = make(tmp_path, "n", train_seqs=1, val_seqs=0, noise=0.2)
    clean = stream_spikes(tiny_tree / "train" / "seq_000")
    spikes = stream_spikes(noisy / "train" / "seq_000")
    assert not (clean & ~spikes).any()  # same integrate-and-fire spikes, plus spurious ones
    expected = clean.mean() + 0.2 * (1 - clean.mean())
    assert abs(spikes.mean() - expected) < 0.01
    # the RGB frames do not depend on the noise
    for rel in ("blur/000001.png", "sharp/000002.png"):
        assert (noisy / "train/seq_000" / rel).read_bytes() == (tiny_tree / "train/seq_000" / rel).read_bytes()


# ---- layouts, misalignment, formats ---------------------------------------------------------------
def test_per_frame_dat_holds_exposure_plus_margins(tmp_path):
    # like the published sets: 137 spike frames per blur frame, frames 20..116 the exposure
    cfg = dict(train_seqs=1, val_seqs=1, frames=3, exposure_ticks=97, gap_ticks=4, margin_ticks=20)
    stream = make(tmp_path, "stream", **cfg)
    per_frame = make(tmp_path, "pf", layout="per-frame-dat", **cfg)
    c = SynthConfig.from_preset("tiny", **cfg)
    for split, seq in [("train", "seq_000"), ("val", "seq_001")]:
        d = per_frame / split / seq
        meta = read_spike_meta(d / "spike")
        assert meta.layout == "per-frame" and meta.format == "dat" and meta.stream_file is None
        stems = [f"{i:06d}" for i in range(3)]
        assert sorted(meta.file_start_s) == stems
        assert sorted(p.name for p in (d / "spike").iterdir()) == sorted([f"{s}.dat" for s in stems] + ["meta.json"])
        ref = stream_spikes(stream / split / seq)
        smeta = read_spike_meta(stream / split / seq / "spike")
        stream_times = smeta.frame_time(smeta.start_s, np.arange(c.n_ticks))
        table = read_exposure_csv(d / "exposure.csv")
        assert table.t0.tolist() == read_exposure_csv(stream / split / seq / "exposure.csv").t0.tolist()
        for i, a in enumerate(c.exposure_starts().tolist()):
            frames = read_dat(d / "spike" / f"{stems[i]}.dat", meta.height, meta.width)
            assert len(frames) == 137
            np.testing.assert_array_equal(frames, ref[a - 20:a + 117])
            times = meta.frame_time(meta.file_start_s[stems[i]], np.arange(137))
            np.testing.assert_allclose(times, stream_times[a - 20:a + 117], rtol=0, atol=1e-12)
            inside = np.flatnonzero((table.t0[i] <= times) & (times < table.t1[i]))
            assert inside.tolist() == list(range(20, 117))
        for rel in ("blur/000001.png", "sharp/000002.png"):
            assert (d / rel).read_bytes() == (stream / split / seq / rel).read_bytes()


def test_misalign_shifts_only_the_named_sequence(tiny_tree, tmp_path):
    shifted = make(tmp_path, "m", misalign={"seq_001": 3})
    rate = TINY.rate_hz
    for split, seq in SEQS:
        a, b = tiny_tree / split / seq, shifted / split / seq
        for rel in ("blur/000000.png", "sharp/000003.png", "spike/stream.dat", "spike/meta.json"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes()  # content stays at the true times
        if seq != "seq_001":
            assert (a / "exposure.csv").read_bytes() == (b / "exposure.csv").read_bytes()
            continue
        ta, tb = read_exposure_csv(a / "exposure.csv"), read_exposure_csv(b / "exposure.csv")
        np.testing.assert_allclose(tb.t0 - ta.t0, 3 / rate, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tb.t1 - ta.t1, 3 / rate, rtol=0, atol=1e-12)
        times = TINY.start_s + np.arange(TINY.n_ticks) / rate
        for s, t0, t1 in zip(TINY.exposure_starts(), tb.t0, tb.t1):
            assert np.flatnonzero((t0 <= times) & (times < t1)).tolist() == list(range(s + 3, s + 3 + 16))


def test_large_misalign_widens_the_stream_margins(tmp_path):
    out = make(tmp_path, "big", train_seqs=1, val_seqs=0, misalign={"seq_000": -9})
    cfg = SynthConfig.from_preset("tiny", train_seqs=1, val_seqs=0, misalign={"seq_000": -9})
    assert cfg.effective_margin_ticks == 9 and cfg.exposure_starts()[0] == 9
    d = out / "train" / "seq_000"
    meta, table = read_spike_meta(d / "spike"), read_exposure_csv(d / "exposure.csv")
    n = dat_num_frames(d / "spike" / "stream.dat", 48, 64)
    assert n == cfg.n_ticks
    for t0, t1 in zip(table.t0, table.t1):
        lo, hi = tick_range(t0, t1, meta.start_s, meta.rate_hz, n)
        assert hi - lo == 16 and lo >= 0 and hi <= n  # shifted windows stay inside the stream


@pytest.mark.parametrize("fmt", ["npy-binary", "npz-binary", "npy-events", "npz-events"])
def test_spike_formats_round_trip(tiny_tree, tmp_path, fmt):
    out = make(tmp_path, fmt, train_seqs=1, val_seqs=0, spike_format=fmt)
    d = out / "train" / "seq_000"
    meta = read_spike_meta(d / "spike")
    suffix = ".npz" if fmt.startswith("npz") else ".npy"
    assert meta.format == fmt and meta.stream_file == f"stream{suffix}" and not meta.flipud
    ref = stream_spikes(tiny_tree / "train" / "seq_000")  # same seed and sequence: same spikes
    path = d / "spike" / meta.stream_file
    if fmt.endswith("binary"):
        np.testing.assert_array_equal(read_binary_array(path, 48, 64), ref)
    else:
        ev = read_events(path, 48, 64)
        j, y, x = np.nonzero(ref)
        np.testing.assert_array_equal(ev.y, y)
        np.testing.assert_array_equal(ev.x, x)
        np.testing.assert_array_equal(ev.t, meta.frame_time(meta.start_s, j))
        table = read_exposure_csv(d / "exposure.csv")
        for a, t0, t1 in zip(TINY.exposure_starts(), table.t0, table.t1):
            sel = ev.select(t0, t1)
            assert len(sel) == int(ref[a:a + 16].sum())


def test_spike_source_reads_every_format_alike(tiny_tree, tmp_path):
    pytest.importorskip("spikeprep.voxelizer")
    from spikeprep.spike_source import SpikeSource

    trees = {"dat": tiny_tree}
    for fmt in ("npy-binary", "npz-events"):
        trees[fmt] = make(tmp_path, fmt, train_seqs=1, val_seqs=0, spike_format=fmt)
    trees["per-frame"] = make(tmp_path, "pf", train_seqs=1, val_seqs=0, layout="per-frame-dat")
    table = read_exposure_csv(tiny_tree / "train/seq_000/exposure.csv")
    for i, (t0, t1) in enumerate(zip(table.t0, table.t1)):
        counts = {k: SpikeSource(v / "train/seq_000/spike").window(t0, t1, 4, frame_idx=i).counts
                  for k, v in trees.items()}
        for k, c in counts.items():
            np.testing.assert_array_equal(c, counts["dat"], err_msg=k)
        assert counts["dat"].sum() > 0


# ---- configuration, output directory, CLI ----------------------------------------------------------
@pytest.mark.parametrize("bad", [
    dict(spike_scale=5),                                   # 48x64 not divisible by 5
    dict(height=50, width=50, spike_scale=1),              # 2500 px: .dat frames not whole bytes
    dict(layout="per-frame-dat", spike_format="npy-binary"),
    dict(misalign={"seq_999": 2}),
    dict(train_seqs=0, val_seqs=0),
    dict(noise=1.5),
    dict(threshold=0.0),
    dict(unknown_key=1),
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        SynthConfig.from_preset("tiny", **bad)


def test_config_is_frozen_and_presets_are_named():
    with pytest.raises(ValidationError):
        TINY.height = 10
    assert SynthConfig.from_preset("demo") == SynthConfig()
    with pytest.raises(ValueError, match="unknown preset"):
        SynthConfig.from_preset("huge")
    assert SynthConfig.from_preset("tiny", height=50, width=64, spike_format="npy-binary").height == 50


def test_refuses_non_empty_and_foreign_directories(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        synthesize(out, TINY, progress=False)
    with pytest.raises(InputError, match="did not write"):
        synthesize(out, TINY, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_interrupted_sequence_leaves_nothing_complete(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_mod, "_write_spikes", boom)
    out = tmp_path / "x"
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize(out, TINY, progress=False)
    assert not (out / "synth.json").exists()
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert [p.name for p in (out / "train").iterdir()] == []


def test_cli_writes_refuses_and_overwrites(tiny_tree, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(synth_cmd, [str(out), "--preset", "tiny", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert tree_hashes(out) == tree_hashes(tiny_tree)
    res = runner.invoke(synth_cmd, [str(out), "--preset", "tiny", "--no-progress"])
    assert res.exit_code == 2 and "not empty" in res.output and "--overwrite" in res.output
    res = runner.invoke(synth_cmd, [str(out), "--preset", "tiny", "--no-progress", "--overwrite",
                                    "--misalign", "seq_002:-2"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "synth.json").read_text())
    assert info["config"]["misalign"] == {"seq_002": -2}


@pytest.mark.parametrize("args, text", [
    (["--misalign", "seq_001"], "SEQ:TICKS"),
    (["--misalign", "seq_001:x"], "SEQ:TICKS"),
    (["--misalign", "seq_001:1", "--misalign", "seq_001:2"], "given twice"),
    (["--misalign", "seq_042:1"], "unknown sequence"),
    (["--spike-scale", "5"], "multiples of spike_scale"),
    (["--frames", "0"], "--frames"),
    (["--layout", "per-frame-dat", "--spike-format", "npz-events"], "per-frame-dat"),
])
def test_cli_bad_options_are_clear(tmp_path, args, text):
    res = CliRunner().invoke(synth_cmd, [str(tmp_path / "o"), "--preset", "tiny", *args])
    assert res.exit_code == 2
    assert text in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_cli_help_has_examples():
    res = CliRunner().invoke(synth_cmd, ["--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and "spikeprep synth" in res.output and "--misalign" in res.output
