"""Tick-exact binning of frame-based sources (DESIGN section 3): window edges read as exact tick positions,
frames binned by the reference formula evaluated in exact rational arithmetic (the oracle: ``voxelize_exact``)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.spike_meta import SpikeMeta
from spikeprep.formats import write_dat, write_spike_meta
from spikeprep.spike_source import SpikeSource
from spikeprep.voxelizer import (bin_index, tick_bin_index, voxelize_binary_ticks, voxelize_packed,
                                 voxelize_packed_ticks)
from spikeprep.windows import TICK_MAX_DENOMINATOR, tick_position, tick_range, tick_span

from oracles import voxelize_exact

RATES = [1000.0, 20000.0, 30000.0, 40000.0, 12345.5]
DENOMINATORS = [1, 2, 4, 5, 25, 50, 100]   # frame times, half ticks (presets), microseconds at 20/40 kHz


def exact_bins(ticks, u0, u1, k):
    """The reference formula on exact times t = s + j / r with t0 = s + u0 / r (s and r cancel)."""
    return [min(max(math.floor((Fraction(j) - u0) / (u1 - u0) * k), 0), k - 1) for j in ticks]


@st.composite
def tick_windows(draw):
    """(start_s, rate_hz, u0, u1, t0, t1): exact tick edges with small denominators and their float seconds."""
    rate = draw(st.sampled_from(RATES))
    start = draw(st.sampled_from([0.0, 0.25, 1.0 / 3.0, 12.5, 1234.5678]))
    q0, q1 = draw(st.sampled_from(DENOMINATORS)), draw(st.sampled_from(DENOMINATORS))
    u0 = Fraction(draw(st.integers(0, 4000 * q0)), q0)
    u1 = u0 + Fraction(draw(st.integers(1, 300 * q1)), q1)
    how = draw(st.sampled_from(["sum", "rounded"]))
    if how == "sum":   # as SpikeMeta.frame_time and a hand-written exposure.csv compute it
        t0, t1 = (start + float(u) / rate for u in (u0, u1))
    else:              # the correctly rounded value of the intended time
        t0, t1 = (float(Fraction(start) + u / Fraction(rate)) for u in (u0, u1))
    return start, rate, u0, u1, t0, t1


@given(tick_windows(), st.sampled_from([1, 3, 8, 32]))
def test_tick_bins_equal_the_exact_reference(case, k):
    start, rate, u0, u1, t0, t1 = case
    assert tick_position(t0, start, rate) == u0 and tick_position(t1, start, rate) == u1
    lo, hi = tick_span(u0, u1, 10**6)
    assert (lo, hi) == (math.ceil(u0), math.ceil(u1))
    ticks = np.arange(lo, hi, dtype=np.int64)
    assert tick_bin_index(ticks, u0, u1, k).tolist() == exact_bins(ticks.tolist(), u0, u1, k)


@given(st.sampled_from(RATES), st.integers(0, 10**6), st.integers(1, 400), st.sampled_from([1, 2, 7, 16, 32]))
def test_window_on_frame_times_gets_even_bins(rate, j0, n, k):
    u0 = tick_position(j0 / rate, 0.0, rate)
    u1 = tick_position((j0 + n) / rate, 0.0, rate)
    assert (u0, u1) == (j0, j0 + n)
    bins = tick_bin_index(np.arange(j0, j0 + n), u0, u1, k)
    sizes = np.bincount(bins, minlength=k)
    assert np.all(np.diff(bins) >= 0)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= (0 if n % k == 0 else 1)


def test_sixty_four_frames_in_thirty_two_bins():
    """The issue's case: the float formula gives 1..3 frames per bin, the exact one 2 each."""
    rate, n, k = 20000.0, 64, 32
    t = np.arange(n) / rate
    float_sizes = np.bincount(bin_index(t, 0.0, n / rate, k), minlength=k)
    assert float_sizes.min() == 1 and float_sizes.max() == 3  # why the float formula is not used here
    u0, u1 = tick_position(0.0, 0.0, rate), tick_position(n / rate, 0.0, rate)
    assert np.bincount(tick_bin_index(np.arange(n), u0, u1, k), minlength=k).tolist() == [2] * k


@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 40), st.integers(0, 200), st.sampled_from([2, 4, 7]),
       st.sampled_from([1, 2, 4]), st.booleans(), st.integers(0, 2**31 - 1))
def test_packed_and_binary_ticks_equal_the_exact_oracle(h, w8, first, a, span, q, flipud, seed):
    rng = np.random.default_rng(seed)
    height, width = h, 8 * w8
    frames = rng.random((60, height, width)) < 0.4
    u0 = Fraction(a, q) - 5
    u1 = u0 + Fraction(span * 7, q)
    times = [Fraction(first + j) for j in range(60)]  # rate 1, start 0: times are ticks
    expected = voxelize_exact(frames, times, u0, u1, 8)
    stored = frames[:, ::-1] if flipud else frames
    packed = np.packbits(stored.reshape(60, -1), axis=1, bitorder="little")
    np.testing.assert_array_equal(voxelize_packed_ticks(packed, first, u0, u1, height, width, 8, flipud), expected)
    np.testing.assert_array_equal(voxelize_binary_ticks(frames, first, u0, u1, 8), expected)


@given(st.floats(-10.0, 1000.0), st.sampled_from(RATES), st.floats(-0.5, 5.0), st.floats(1e-4, 0.05))
def test_tick_span_agrees_with_the_float_membership(start, rate, a, span):
    """Random edges (no small rational): exact membership equals the brute-force float scan."""
    t0 = start + a
    t1 = t0 + span
    u0, u1 = tick_position(t0, start, rate), tick_position(t1, start, rate)
    assert tick_span(u0, u1, 5000) == tick_range(t0, t1, start, rate, 5000)


def test_tick_position_snaps_only_within_float_noise():
    assert tick_position(3 / 20000.0, 0.0, 20000.0) == 3
    assert tick_position(0.25 + 2.5 / 20000.0, 0.25, 20000.0) == Fraction(5, 2)
    assert tick_position(1e-6, 0.0, 20000.0) == Fraction(1, 50)    # one microsecond at 20 kHz
    off = 3 / 20000.0 + 1e-12                                      # a nanosecond's thousandth off a tick
    assert tick_position(off, 0.0, 20000.0) == Fraction(off) * 20000
    assert TICK_MAX_DENOMINATOR == 100
    with pytest.raises(ValueError):
        tick_position(float("nan"), 0.0, 20000.0)
    with pytest.raises(ValueError):
        tick_span(Fraction(3), Fraction(3), 10)


def test_spike_source_bins_exactly_and_events_keep_the_float_formula(tmp_path, rng):
    frames = rng.random((200, 4, 8)) < 0.3
    spike = tmp_path / "spike"
    spike.mkdir()
    write_dat(spike / "s.dat", frames)
    write_spike_meta(spike, SpikeMeta(format="dat", layout="stream", height=4, width=8, rate_hz=20000.0,
                                      start_s=0.5, stream_file="s.dat"))
    t0, t1 = 0.5 + 10 / 20000.0, 0.5 + 74 / 20000.0
    got = SpikeSource(spike).window(t0, t1, 32)
    assert got.n_ticks == 64 and got.covered
    np.testing.assert_array_equal(got.counts, frames[10:74].reshape(32, 2, 4, 8).sum(axis=1))
    # the float path (what event lists use) on the same frames is uneven
    t = 0.5 + np.arange(200) / 20000.0
    pk = np.packbits(frames[:, ::-1].reshape(200, -1), axis=1, bitorder="little")
    assert not np.array_equal(voxelize_packed(pk, t, t0, t1, 4, 8, 32), got.counts)
