"""Exposure windows: exact [t0, t1) tick selection and exposure.csv parsing."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

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
    assert "t1" in problems[1].text and "overlaps" in problems[2].text and "order" in problems[4].text
    assert "overlaps" in problems[5].text
    assert {f: d.code for f, d in problems.items()} == {1: "window_reversed", 2: "window_overlap",
                                                        4: "window_out_of_order", 5: "window_overlap"}


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


# ---- exposure tables as rigs write them (issue 27, part 3) --------------------------------------------
def _write_table(path: Path, header: tuple[str, ...], columns: dict[str, list]) -> Path:
    rows = [",".join(header)] + [",".join(repr(columns[c][i]) for c in header)
                                 for i in range(len(columns["frame_idx"]))]
    path.write_text("\n".join(rows) + "\n")
    return path


@given(starts=st.lists(st.floats(-1e3, 1e4, allow_nan=False), min_size=1, max_size=12),
       exposure=st.floats(1e-6, 0.5), order=st.permutations(["frame_idx", "t_start", "exposure_s"]))
def test_start_times_with_one_exposure_time_give_the_same_windows_in_every_form(tmp_path_factory, starts, exposure,
                                                                                order):
    tmp = tmp_path_factory.mktemp("forms")
    n = len(starts)
    idx = list(range(n))
    ends = [t + exposure for t in starts]
    plain = read_exposure_csv(_write_table(tmp / "t0t1.csv", ("frame_idx", "t0", "t1"),
                                           {"frame_idx": idx, "t0": starts, "t1": ends}))
    column = read_exposure_csv(_write_table(tmp / "column.csv", tuple(order),
                                            {"frame_idx": idx, "t_start": starts, "exposure_s": [exposure] * n}))
    option = read_exposure_csv(_write_table(tmp / "option.csv", tuple(o for o in order if o != "exposure_s"),
                                            {"frame_idx": idx, "t_start": starts}), exposure_s=exposure)
    for table in (column, option):
        assert np.array_equal(table.frame_idx, plain.frame_idx)
        assert np.array_equal(table.t0, plain.t0) and np.array_equal(table.t1, plain.t1)
        assert table.problems() == plain.problems()


@pytest.mark.parametrize("text, exposure_s, fragment", [
    ("frame_idx,t_start\n0,0.0\n", None, "start times only"),
    ("frame_idx,t0,t1\n0,0.0,0.1\n", 0.002, "has its own windows"),
    ("frame_idx,t_start,exposure_s\n0,0.0,0.1\n", 0.002, "has its own windows"),
    ("frame_idx,t_start,exposure_s\n0,0.0,0\n", None, "exposure_s 0.0 is not positive"),
    ("frame_idx,t_start,exposure_s\n0,0.0,-0.1\n", None, "is not positive"),
    ("frame_idx,t_start,exposure_s\n0,1e308,1.7e308\n", None, "overflows float64"),
    ("frame_idx,t_start,exposure_s\n0,0.0\n", None, "fields"),
    ("frame_idx,t_start\n0,0.0\n", float("inf"), "not a positive number"),
    ("frame_idx,t_start,t1\n0,0.0,1\n", None, "header"),
])
def test_malformed_start_time_tables_name_the_file(tmp_path, text, exposure_s, fragment):
    path = tmp_path / "exposure.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=fragment) as err:
        read_exposure_csv(path, exposure_s)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


def test_ingest_reads_start_times_with_the_exposure_option(synth_tree, tmp_path):
    """The same recording with its table as t0,t1 and as start times + --exposure-s: the same manifest."""
    from click.testing import CliRunner

    from cli.main import main
    from spikeprep.store import read_manifest

    raw = tmp_path / "raw"
    shutil.copytree(synth_tree(), raw)
    out = {}
    for form in ("t0t1", "start"):
        if form == "start":
            exposures = set()
            for table_path in raw.glob("*/*/exposure.csv"):
                table = read_exposure_csv(table_path)
                exposures |= set((table.t1 - table.t0).tolist())
                table_path.write_text("frame_idx,t_start\n" + "".join(
                    f"{f},{a!r}\n" for f, a in zip(table.frame_idx.tolist(), table.t0.tolist())))
            exposure = sorted(exposures)[len(exposures) // 2]
            args = ["--exposure-s", repr(exposure)]
        else:
            args = []
        out[form] = tmp_path / form
        result = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(out[form]), "--crop", "48",
                                           "--no-progress", "--log-dir", str(tmp_path / "logs"), *args])
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    a, b = (read_manifest(out[f]).select(["frame_idx", "t0", "n_ticks", "status"]).to_pylist() for f in out)
    assert a == b
    t1a, t1b = (np.asarray(read_manifest(out[f]).column("t1").to_pylist()) for f in out)
    assert np.allclose(t1a, t1b, rtol=0, atol=1e-12)
    # the table of start times alone is a clear error without the option
    result = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(tmp_path / "no_option"), "--crop", "48",
                                       "--no-progress", "--log-dir", str(tmp_path / "logs")])
    assert result.exit_code == 2 and "exposure.csv: the table gives frame start times only" in result.output
