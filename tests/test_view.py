"""``spikeprep view``: TFP / TFI reconstructions of spike files, sequences and stores, as PNG frames and a video."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from schemas.spike_meta import SpikeMeta
from spikeprep.baselines import tfi_rate, tfp_rate
from spikeprep.formats import write_dat, write_events, write_spike_meta
from spikeprep.view import open_view_source, stream_instants, stream_reconstructions, to_image

H, W, N = 16, 24, 80


@pytest.fixture
def upright(rng):
    """Frames whose top half fires often and bottom half rarely (so orientation shows)."""
    p = np.where(np.arange(H)[:, None] < H // 2, 0.8, 0.1)[None]
    return rng.random((N, H, W)) < p


def run(*args):
    result = CliRunner().invoke(main, ["view", *map(str, args), "--no-progress"])
    return result


def grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, path
    return img


def test_dat_file_frames_video_and_orientation(tmp_path, upright):
    write_dat(tmp_path / "rec.dat", upright)
    out = tmp_path / "out"
    res = run(tmp_path / "rec.dat", "--height", H, "--width", W, "--out", out, "--tfp-width", 8,
              "--tfi-window", 16, "--step", 5)
    assert res.exit_code == 0, res.output
    instants = list(stream_instants(N, 8, 16, 5))
    assert sorted(p.name for p in out.iterdir()) == ["tfi", "tfi.mp4", "tfp", "tfp.mp4"]
    assert sorted(p.name for p in (out / "tfp").iterdir()) == [f"{c:06d}.png" for c in instants]
    c = instants[2]
    np.testing.assert_array_equal(grey(out / "tfp" / f"{c:06d}.png"),
                                  to_image(upright[c - 4:c + 4].mean(axis=0)))
    np.testing.assert_array_equal(grey(out / "tfi" / f"{c:06d}.png"),
                                  to_image(tfi_rate(upright[c - 8:c + 8].astype(np.uint8))))
    img = grey(out / "tfp" / f"{c:06d}.png")
    assert img[:H // 2].mean() > 3 * img[H // 2:].mean()          # upright: the busy half on top
    cap = cv2.VideoCapture(str(out / "tfp.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(instants)
    cap.release()


def test_stream_reconstructions_are_the_baselines_rates(upright):
    src = open_view_source(_write(upright), height=H, width=W)
    (c, rates), = stream_reconstructions(src, range(40, 41), 6, 10)
    np.testing.assert_array_equal(rates["tfp"], tfp_rate(upright[37:43].view(np.uint8), 6))
    np.testing.assert_array_equal(rates["tfi"], tfi_rate(upright[35:45].view(np.uint8)))


def _write(frames, path=None):
    import tempfile

    path = Path(path or tempfile.mkdtemp()) / "rec.dat"
    write_dat(path, frames)
    return path


def test_sequence_dir_and_gif(tmp_path, synth_tree):
    seq = synth_tree() / "train" / "seq_000"
    res = run(seq, "--out", tmp_path / "v", "--tfp-width", 4, "--tfi-window", 8, "--step", 16, "--video", "gif")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v" / "tfp.gif").is_file() and (tmp_path / "v" / "tfi.gif").is_file()
    assert len(list((tmp_path / "v" / "tfp").iterdir())) >= 1


def test_store_voxels(tmp_path, train_store):
    from spikeprep.store import read_manifest

    rows = [r for r in read_manifest(train_store).to_pylist() if r["vox_index"] is not None]
    key = f"{rows[0]['split']}/{rows[0]['seq']}"
    n = sum(1 for r in rows if f"{r['split']}/{r['seq']}" == key)
    res = run(train_store, "--seq", key, "--out", tmp_path / "v", "--video", "none")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "v" / "tfp").iterdir())) == n
    assert "TFI: no frame (not applicable" in res.output       # 16 ticks in 8 bins: bins 2 frames wide
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["tfp"]


@pytest.mark.parametrize("case", ["dat-without-size", "not-empty", "events", "too-short", "bad-suffix",
                                  "store-bad-seq", "odd-width"])
def test_bad_input_is_a_clean_error(tmp_path, upright, case, train_store):
    out = tmp_path / "out"
    dat = _write(upright, tmp_path)
    if case == "dat-without-size":
        args, msg = [dat, "--out", out], "--height H --width W"
    elif case == "not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        args, msg = [dat, "--height", H, "--width", W, "--out", out], "--overwrite"
    elif case == "events":
        spike = tmp_path / "spike"
        spike.mkdir()
        write_events(spike / "e.npz", [0.0, 0.1], [1, 2], [3, 4])
        write_spike_meta(spike, SpikeMeta(format="npz-events", layout="stream", height=H, width=W, rate_hz=1000.0,
                                          stream_file="e.npz"))
        args, msg = [spike, "--out", out], "event list"
    elif case == "too-short":
        args, msg = [dat, "--height", H, "--width", W, "--out", out, "--tfi-window", 200], "too few"
    elif case == "bad-suffix":
        (tmp_path / "rec.txt").write_text("x")
        args, msg = [tmp_path / "rec.txt", "--out", out], "cannot view"
    elif case == "store-bad-seq":
        args, msg = [train_store, "--seq", "val/nope", "--out", out], "no sequence 'val/nope'"
    else:
        args, msg = [dat, "--height", 3, "--width", 5, "--out", out], "whole bytes"
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert msg in res.output and "Traceback" not in res.output
    if case == "not-empty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()


def test_overwrite_replaces_only_views_outputs(tmp_path, upright):
    dat = _write(upright, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "tfp").mkdir()
    (out / "tfp" / "999999.png").write_bytes(b"old")
    res = run(dat, "--height", H, "--width", W, "--out", out, "--overwrite", "--video", "none", "--step", 20)
    assert res.exit_code == 0, res.output
    assert (out / "keep.txt").read_text() == "mine" and not (out / "tfp" / "999999.png").exists()


REAL = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real").resolve()


def test_real_reds_file_tfp_matches_its_ground_truth(tmp_path):
    """On a Spike-Zoo REDS file, the TFP picture at the middle instant is the upright scene."""
    name = "spikezoo_reds_200_part1_250x400.dat"
    if not (REAL / name).is_file():
        pytest.skip(f"no real spike files: {REAL / name} (../shared/data/real/ beside the project) is absent")
    res = run(REAL / name, "--height", 250, "--width", 400, "--out", tmp_path / "v", "--start", 118, "--stop", 182,
              "--tfp-width", 64, "--tfi-window", 64, "--video", "none")
    assert res.exit_code == 0, res.output
    (png,) = sorted((tmp_path / "v" / "tfp").iterdir())
    assert png.name == "000150.png"
    gt = grey(REAL / "spikezoo_reds_200_part1_gt.png").astype(np.float64)
    img = grey(png).astype(np.float64)
    assert np.corrcoef(img.ravel(), gt.ravel())[0, 1] > 0.9 > 0.3 > np.corrcoef(img[::-1].ravel(), gt.ravel())[0, 1]


def test_help_has_examples():
    res = CliRunner().invoke(main, ["view", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "--tfp-width" in res.output
