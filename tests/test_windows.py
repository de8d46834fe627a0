"""Exposure windows: exact [t0, t1) tick selection and exposure.csv parsing."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikeprep.errors import InputError
from spikeprep.windows import read_exposure_csv, tick_range, write_exposure_csv


def brute_force_range(t0, t1, start_s, rate_hz, n_frames):
    times = start_s + np.arange(n_frames) / rate_hz
    inside = np.flatnonzero((times >= t0) & (times < t1))
    return (int(inside[0]), int(inside[-1]) + 1) if inside.size else None


finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)


@given(start_s=finite, rate_hz=st.sampled_from([1000.0, 20000.0, 40000.0, 19999.7, 3.0]),
       n_frames=st.integers(0, 400), a=st.floats(-0.05, 0.3), span=st.floats(1e-9, 0.05))
def test_tick_range_equals_brute_force(start_s, rate_hz, n_frames, a, span):
    t0 = start_s + a
    t1 = t0 + span
    if not t1 > t0:
        return
    lo, hi = tick_range(t0, t1, start_s, rate_hz, n_frames)
    expected = brute_force_range(t0, t1, start_s, rate_hz, n_frames)
    if expected is None:
        assert lo == hi
    else:
        assert (lo, hi) == expected


@given(start_s=finite, rate_hz=st.sampled_from([20000.0, 40000.0, 12345.6]), j=st.integers(0, 300),
       n=st.integers(1, 50))
def test_window_on_exact_tick_times(start_s, rate_hz, j, n):
    # t0 exactly at a tick includes it; t1 exactly at a tick excludes it.
    t0 = start_s + j / rate_hz
    t1 = start_s + (j + n) / rate_hz
    lo, hi = tick_range(t0, t1, start_s, rate_hz, 1000)
    assert (lo, hi) == brute_force_range(t0, t1, start_s, rate_hz, 1000)
    assert lo == j


@pytest.mark.parametrize("t0, t1", [(0.1, 0.1), (0.2, 0.1), (math.nan, 0.1), (0.0, math.inf)])
def test_tick_range_rejects_bad_windows(t0, t1):
    with pytest.raises(ValueError):
        tick_range(t0, t1, 0.0, 20000.0, 100)


def test_exposure_csv_round_trip_is_exact(tmp_path, rng):
    t0 = np.cumsum(rng.random(20)) / 7.0
    t1 = t0 + rng.random(20) / 100 + 1e-6
    path = write_exposure_csv(tmp_path / "exposure.csv", np.arange(20), t0, t1)
    table = read_exposure_csv(path)
    assert table.frame_idx.tolist() == list(range(20))
    assert np.array_equal(table.t0, t0) and np.array_equal(table.t1, t1)
    assert table.problems() == {}


def test_exposure_problems_are_per_frame(tmp_path):
    path = tmp_path / "exposure.csv"
    path.write_text("frame_idx,t0,t1\n0,0.0,0.1\n1,0.2,0.2\n2,0.05,0.3\n3,0.35,0.4\n4,0.3,0.5\n5,0.38,0.5\n")
    problems = read_exposure_csv(path).problems()
    assert set(problems) == {1, 2, 4, 5}
    assert "t1" in problems[1] and "overlaps" in problems[2] and "order" in problems[4]
    assert "overlaps" in problems[5]


@pytest.mark.parametrize("text, fragment", [
    ("", "header"),
    ("frame,t0,t1\n0,0,1\n", "header"),
    ("frame_idx,t0,t1\n", "no rows"),
    ("frame_idx,t0,t1\n0,0.0\n", "fields"),
    ("frame_idx,t0,t1\n0,abc,1\n", "not numbers"),
    ("frame_idx,t0,t1\n0,nan,1\n", "non-finite"),
    ("frame_idx,t0,t1\n0,0,1\n0,1,2\n", "twice"),
    ("frame_idx,t0,t1\n99999999999999999999,0,1\n", "larger than"),      # issue 16, item 8
])
def test_malformed_exposure_csv(tmp_path, text, fragment):
    path = tmp_path / "exposure.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=fragment) as err:
        read_exposure_csv(path)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


def test_exposure_csv_with_a_byte_order_mark_reads_like_without(tmp_path):
    """Issue 16, item 11: spreadsheets save UTF-8 CSV with a BOM, which used to fail as a wrong header."""
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text("frame_idx,t0,t1\n0,0.0,0.5\n1,0.5,1.0\n")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = read_exposure_csv(plain), read_exposure_csv(marked)
    assert np.array_equal(a.frame_idx, b.frame_idx) and np.array_equal(a.t0, b.t0) and np.array_equal(a.t1, b.t1)


def test_missing_exposure_csv(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_exposure_csv(tmp_path / "exposure.csv")


def test_exposure_csv_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "exposure.csv"
    write_exposure_csv(path, [0, 1], [0.0, 1.0], [0.5, 1.5])
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)  # the new file is never committed
    with pytest.raises(OSError, match="disk full"):
        write_exposure_csv(path, [0], [2.0], [2.5])
    assert path.read_bytes() == before  # the old table, whole
    assert os.listdir(tmp_path) == ["exposure.csv"]  # and no temp file
