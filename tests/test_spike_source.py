"""SpikeSource: every raw format and both layouts give the same counts as the reference voxelizer (frame-based
formats: the reference formula evaluated exactly on the tick axis; event lists: the float formula)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from schemas.spike_meta import SpikeMeta
from spikeprep.errors import InputError
from spikeprep.formats import write_binary_array, write_dat, write_events, write_spike_meta
from spikeprep.spike_source import SpikeSource

from oracles import voxelize as reference_voxelize
from oracles import voxelize_exact

H, W, RATE, START = 6, 8, 1000.0, 0.25
BINARY_FORMATS = ["dat", "npy-binary", "npz-binary"]
EVENT_FORMATS = ["npy-events", "npz-events"]


def frames_to_events(frames, start_s):
    j, y, x = np.nonzero(frames)
    t = start_s + j / RATE
    return np.stack([t, y, x], axis=1).astype(np.float64)


def oracle(events, t0, t1, K):
    inside = events[(events[:, 0] >= t0) & (events[:, 0] < t1)]
    return reference_voxelize(inside, t0, t1, H, W, K)


def exact_times(n, start=START, first=0):
    """Exact times ``start + (first + j) / RATE`` of n consecutive frames."""
    return [Fraction(start) + Fraction(first + j) / Fraction(RATE) for j in range(n)]


def write_stream(spike_dir, fmt, frames):
    spike_dir.mkdir(parents=True)
    suffix = {"dat": ".dat", "npy-binary": ".npy", "npz-binary": ".npz", "npy-events": ".npy",
              "npz-events": ".npz"}[fmt]
    name = "stream" + suffix
    if fmt == "dat":
        write_dat(spike_dir / name, frames)
    elif fmt.endswith("binary"):
        write_binary_array(spike_dir / name, frames)
    else:
        ev = frames_to_events(frames, START)
        write_events(spike_dir / name, ev[:, 0], ev[:, 1], ev[:, 2])
    meta = SpikeMeta(format=fmt, layout="stream", height=H, width=W, rate_hz=RATE,
                     start_s=None if fmt.endswith("events") else START, stream_file=name)
    write_spike_meta(spike_dir, meta)


@pytest.fixture
def frames(rng):
    return rng.random((300, H, W)) < 0.3


@pytest.mark.parametrize("fmt", BINARY_FORMATS + EVENT_FORMATS)
@pytest.mark.parametrize("K", [1, 4, 32])
def test_stream_windows_equal_reference(tmp_path, frames, fmt, K, rng):
    write_stream(tmp_path / "spike", fmt, frames)
    source = SpikeSource(tmp_path / "spike")
    events = frames_to_events(frames, START)
    for _ in range(8):
        a, b = np.sort(rng.integers(0, 300, 2))
        t0 = START + (a - 0.5 * rng.random()) / RATE
        t1 = START + (b + 1 - rng.random()) / RATE
        got = source.window(t0, t1, K)
        assert got.counts.shape == (K, H, W) and got.counts.dtype == np.uint32
        if fmt.endswith("events"):
            assert np.array_equal(got.counts, oracle(events, t0, t1, K))
        else:  # random edges: the exact value of the floats
            assert np.array_equal(got.counts, voxelize_exact(frames, exact_times(300), t0, t1, K))
        assert got.event_count == int(got.counts.sum())
        if not fmt.endswith("events"):
            ticks = START + np.arange(300) / RATE
            assert got.n_ticks == int(((ticks >= t0) & (ticks < t1)).sum())
            assert got.covered is True


def test_window_on_tick_boundaries_is_half_open(tmp_path, frames):
    write_stream(tmp_path / "spike", "dat", frames)
    source = SpikeSource(tmp_path / "spike")
    t0, t1 = START + 10 / RATE, START + 20 / RATE  # exactly on ticks 10 and 20
    got = source.window(t0, t1, 10)
    assert got.n_ticks == 10
    assert np.array_equal(got.counts, frames[10:20].astype(np.uint32))


def test_window_past_the_stream_is_not_covered(tmp_path, frames):
    write_stream(tmp_path / "spike", "dat", frames)
    source = SpikeSource(tmp_path / "spike")
    got = source.window(START + 290 / RATE, START + 320 / RATE, 4)
    assert got.covered is False and got.n_ticks == 10
    assert source.window(START - 1.0, START - 0.5, 4).n_ticks == 0


@pytest.mark.parametrize("fmt", BINARY_FORMATS + EVENT_FORMATS)
def test_per_frame_layout(tmp_path, frames, fmt):
    spike_dir = tmp_path / "spike"
    spike_dir.mkdir()
    windows = [(0, 40, 60), (1, 100, 130), (2, 200, 262)]  # (frame_idx, first tick, end tick)
    margin = 7
    starts, file_events = {}, {}
    for idx, a, b in windows:
        lo, hi = max(a - margin, 0), min(b + margin, 300)
        stem = f"{idx:06d}"
        part = frames[lo:hi]
        start = START + lo / RATE
        if fmt == "dat":
            write_dat(spike_dir / f"{stem}.dat", part)
        elif fmt.endswith("binary"):
            write_binary_array(spike_dir / f"{stem}.{fmt[:3]}", part)
        else:
            ev = frames_to_events(part, start)
            write_events(spike_dir / f"{stem}.{fmt[:3]}", ev[:, 0], ev[:, 1], ev[:, 2])
        starts[stem] = start
        # Each file has its own clock (start + j / rate): the oracle must use those times, which can
        # differ from the stream's START + (lo + j) / rate in the last bit.
        file_events[idx] = frames_to_events(part, start)
    binary = not fmt.endswith("events")
    write_spike_meta(spike_dir, SpikeMeta(format=fmt, layout="per-frame", height=H, width=W, rate_hz=RATE,
                                          file_start_s=starts if binary else None))
    source = SpikeSource(spike_dir)
    for idx, a, b in windows:
        t0, t1 = START + (a - 0.5) / RATE, START + (b - 0.5) / RATE
        got = source.window(t0, t1, 8, frame_idx=idx)
        if binary:  # half-tick edges, binned exactly: the window [a - 1/2, b - 1/2) in ticks
            e0, e1 = (Fraction(START) + (Fraction(x) - Fraction(1, 2)) / Fraction(RATE) for x in (a, b))
            assert np.array_equal(got.counts, voxelize_exact(frames, exact_times(300), e0, e1, 8))
        else:
            assert np.array_equal(got.counts, oracle(file_events[idx], t0, t1, 8))
        assert got.event_count == int(frames[a:b].sum())
        if binary:
            assert got.n_ticks == b - a and got.covered is True
    with pytest.raises(InputError, match="no spike file for blur frame 3"):
        source.window(0.0, 1.0, 8, frame_idx=3)


def test_missing_stream_file_is_named(tmp_path, frames):
    write_stream(tmp_path / "spike", "dat", frames)
    (tmp_path / "spike" / "stream.dat").unlink()
    with pytest.raises(InputError, match="stream.dat"):
        SpikeSource(tmp_path / "spike")


def test_dat_size_mismatch_is_named(tmp_path, frames):
    write_stream(tmp_path / "spike", "dat", frames)
    with open(tmp_path / "spike" / "stream.dat", "ab") as fh:
        fh.write(b"\x00\x01\x02")
    with pytest.raises(InputError, match="not a whole number"):
        SpikeSource(tmp_path / "spike").window(START, START + 0.01, 4)


def test_head_columns_and_frames_last_give_the_plain_counts(tmp_path, frames):
    """meta.json version 2: an SPS10-style .dat (extra columns at the end of each row, dropped) and an
    [H, W, N] binary array voxelize like the plain [N, H, W] stream."""
    write_stream(tmp_path / "plain", "dat", frames)
    plain = SpikeSource(tmp_path / "plain")
    head = tmp_path / "head"
    head.mkdir()
    padded = np.concatenate([frames, np.ones((300, H, 8), bool)], axis=2)  # 8 head columns, all firing
    write_dat(head / "s.dat", padded)
    write_spike_meta(head, SpikeMeta(version=2, format="dat", layout="stream", height=H, width=W, rate_hz=RATE,
                                     start_s=START, stream_file="s.dat", head_columns=8))
    last = tmp_path / "last"
    last.mkdir()
    np.save(last / "s.npy", np.moveaxis(frames, 0, 2))
    write_spike_meta(last, SpikeMeta(version=2, format="npy-binary", layout="stream", height=H, width=W,
                                     rate_hz=RATE, start_s=START, stream_file="s.npy", axes="HWN"))
    for t0, t1 in [(START + 3 / RATE, START + 67 / RATE), (START + 100.5 / RATE, START + 197.5 / RATE)]:
        want = plain.window(t0, t1, 8)
        for other in (SpikeSource(head), SpikeSource(last)):
            got = other.window(t0, t1, 8)
            assert np.array_equal(got.counts, want.counts) and got.n_ticks == want.n_ticks
