"""The readers, the voxelizer and the spk-gopro preset on spike files this project did not make.

The files live beside the project, in ``../shared/data/real/`` (its README gives each file's source and
geometry); they are never committed. Without that folder (a user's fresh clone) every test here skips,
saying why.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from schemas.spike_meta import SpikeMeta
from spikeprep.formats import dat_num_frames, read_dat
from spikeprep.baselines import luma
from spikeprep.images import read_rgb
from spikeprep.raw_layout import discover
from spikeprep.spike_source import SpikeSource

REAL = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real").resolve()
RATE = 20000.0

# file: (height, width, frames, ground truth or None)
FILES = {
    "hist_sflow_car_250x400.dat": (250, 400, 200, None),
    "svrt_gopro_000226_360x640.dat": (360, 640, 88, "svrt_gopro_000226_sharp_720x1280.png"),
    "spikezoo_reds_200_part1_250x400.dat": (250, 400, 301, "spikezoo_reds_200_part1_gt.png"),
    "spikezoo_reds_203_part2_250x400.dat": (250, 400, 301, "spikezoo_reds_203_part2_gt.png"),
}
WITH_GT = [name for name, spec in FILES.items() if spec[3]]


@pytest.fixture(scope="module")
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"no real spike files: {REAL} (../shared/data/real/ beside the project) is absent")
    missing = [name for name in FILES if not (REAL / name).is_file()]
    if missing:
        pytest.skip(f"real spike files missing from {REAL}: {', '.join(missing)}")
    return REAL


def test_every_file_is_covered(real):
    """A file added to the folder needs a row in FILES (and so its tests)."""
    on_disk = {p.name for p in real.iterdir() if p.suffix == ".dat"}
    assert on_disk == set(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_frame_count_and_ranged_reads(real, name):
    h, w, n, _ = FILES[name]
    path = real / name
    assert dat_num_frames(path, h, w) == n
    whole = read_dat(path, h, w)
    assert whole.shape == (n, h, w)
    for a, b in [(0, 1), (n // 2 - 7, n // 2 + 9), (n - 3, n)]:
        np.testing.assert_array_equal(read_dat(path, h, w, a, b), whole[a:b])
    np.testing.assert_array_equal(read_dat(path, h, w, 0, 4, flipud=False), whole[:4, ::-1])


def _source(real: Path, name: str) -> SpikeSource:
    h, w, _, _ = FILES[name]
    meta = SpikeMeta(format="dat", layout="stream", height=h, width=w, rate_hz=RATE, start_s=0.0, stream_file=name)
    return SpikeSource(real, meta=meta)


@pytest.mark.parametrize("name", sorted(FILES))
def test_voxel_sums_equal_spike_counts(real, name):
    h, w, n, _ = FILES[name]
    frames = read_dat(real / name, h, w)
    source = _source(real, name)
    whole = source.window(0.0, n / RATE, 32)
    assert whole.n_ticks == n and whole.covered
    assert whole.event_count == int(whole.counts.sum()) == int(frames.sum())
    np.testing.assert_array_equal(whole.counts.sum(axis=0), frames.sum(axis=0))
    # 64 frames on frame times in 32 bins: two frames per bin, exactly (tick-exact binning)
    j0 = n // 2 - 32
    part = source.window(j0 / RATE, (j0 + 64) / RATE, 32)
    np.testing.assert_array_equal(part.counts, frames[j0:j0 + 64].reshape(32, 2, h, w).sum(axis=1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def _ground_truth(real: Path, name: str) -> np.ndarray:
    import cv2

    h, w, _, gt = FILES[name]
    gray = luma(read_rgb(real / gt))
    return gray if gray.shape == (h, w) else cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("name", WITH_GT)
def test_upright_average_matches_the_ground_truth(real, name):
    """The 64 frames around the middle, read upright, correlate with the ground truth far more than flipped
    (README of the folder: 0.90-0.99 upright, 0.15 or lower upside down for S-VRT)."""
    h, w, n, _ = FILES[name]
    c = n // 2
    avg = read_dat(real / name, h, w, c - 32, c + 32).mean(axis=0)
    gt = _ground_truth(real, name)
    upright, flipped = _corr(avg, gt), _corr(avg[::-1], gt)
    assert upright > 0.9 and upright - flipped > 0.5, (upright, flipped)


def test_spk_gopro_file_through_the_preset(real, tmp_path):
    """The S-VRT file in the Spk-GoPro layout: the preset's geometry (360x640 for 720x1280, the 56 centred
    frames) reads it, the window holds exactly those frames and their average is upright."""
    name = "svrt_gopro_000226_360x640.dat"
    seq = tmp_path / "GOPRO_Large" / "test" / "GOPR0000"
    spike = tmp_path / "GOPRO_Large_spike_seq" / "test" / "GOPR0000" / "spike"
    for d in (seq / "blur_gamma", seq / "sharp", spike):
        d.mkdir(parents=True)
    sharp = real / FILES[name][3]
    for d in ("blur_gamma", "sharp"):   # no blurry frame was published: the sharp one stands in for it
        os.symlink(sharp, seq / d / "000226.png")
    os.symlink(real / name, spike / "000226.dat")
    (spec,) = discover(tmp_path, "spk-gopro")
    assert (spec.spike_meta.height, spec.spike_meta.width) == (360, 640)
    got = SpikeSource(spec.spike_dir, spec.spike_meta).window(spec.exposure.t0[0], spec.exposure.t1[0], 28,
                                                              frame_idx=226)
    frames = read_dat(real / name, 360, 640)
    assert got.n_ticks == 56 and got.covered
    np.testing.assert_array_equal(got.counts, frames[16:72].reshape(28, 2, 360, 640).sum(axis=1))
    avg = got.counts.sum(axis=0) / 56
    gt = _ground_truth(real, name)
    assert _corr(avg, gt) > 0.9 > 0.5 > _corr(avg[::-1], gt)
