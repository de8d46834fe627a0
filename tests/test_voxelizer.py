"""Tests of spikeprep.voxelizer against the original design document's reference ``voxelize``.

The oracle below is copied verbatim from the original design document (spec/original_design_zh.md,
section 3.3). It clips times outside the window into the edge bins; our voxelizers do not count them,
so every comparison feeds the oracle only the spikes selected inside ``[t0, t1)``.
"""
from __future__ import annotations

import multiprocessing as mp
import queue

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeprep import voxelizer as vz
from spikeprep.voxelizer import bin_index, voxelize_binary, voxelize_events, voxelize_packed

from oracles import voxelize  # the original document's reference (section 3.3), verbatim: the oracle


# ---- helpers ---------------------------------------------------------------------------------------

HYP = settings(derandomize=True, deadline=None, database=None, max_examples=60,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def oracle_counts(t, y, x, t0, t1, H, W, K):
    """Reference counts of the events inside [t0, t1), as uint32."""
    t = np.asarray(t, dtype=np.float64)
    sel = (t >= t0) & (t < t1)
    events = np.stack([t[sel], np.asarray(y)[sel].astype(np.float64),
                       np.asarray(x)[sel].astype(np.float64)], axis=1).reshape(-1, 3)
    vox = voxelize(events, t0, t1, H, W, K)
    assert vox.max(initial=0) < 2 ** 24  # float32 counts are exact
    return vox.astype(np.uint32)


def check_output(out, K, H, W):
    assert out.shape == (K, H, W)
    assert out.dtype == np.uint32
    assert out.flags.c_contiguous and out.flags.owndata


def frames_to_events(frames, t):
    """Upright binary frames [N, H, W] -> events (t_j, y, x) in frame, row-major order."""
    j, y, x = np.nonzero(frames)
    return np.asarray(t, dtype=np.float64)[j], y, x


def pack(frames, flipud=True):
    """Pack per the .dat layout: row-major bits, LSB first, stored upside down when flipud."""
    frames = np.asarray(frames, dtype=bool)
    if flipud:
        frames = frames[:, ::-1, :]
    n, h, w = frames.shape
    return np.packbits(frames.reshape(n, h * w), axis=1, bitorder="little")


# ---- events: tables --------------------------------------------------------------------------------

T0, T1 = 0.1, 0.3  # a non-integer window; t1 - t0 is not exactly 0.2 in float64
EDGE_CASES = {
    "t_eq_t0": [T0],
    "t_below_t1": [np.nextafter(T1, -np.inf)],
    "t_eq_t1_excluded": [T1],
    "t_below_t0_excluded": [np.nextafter(T0, -np.inf)],
    "one_event": [0.2],
    "no_events": [],
    "all_edges": [T0, np.nextafter(T0, np.inf), 0.2, np.nextafter(T1, -np.inf), T1, -1.0, 5.0,
                  np.inf, -np.inf],
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("K", [1, 3, 32, 1000])
def test_events_edge_cases(case, K):
    t = np.array(EDGE_CASES[case], dtype=np.float64)
    H, W = 3, 5
    y = (np.arange(t.size) % H).astype(np.int64)
    x = (np.arange(t.size) % W).astype(np.int64)
    out = voxelize_events(t, y, x, T0, T1, H, W, num_bins=K)
    check_output(out, K, H, W)
    np.testing.assert_array_equal(out, oracle_counts(t, y, x, T0, T1, H, W, K))
    inside = int(((t >= T0) & (t < T1)).sum())
    assert out.sum() == inside


@pytest.mark.parametrize("t0,t1,K", [
    (0.0, 1.0, 32), (0.1, 0.3, 32), (1e9, 1e9 + 0.00125, 32), (-3.7, -3.2, 7), (0.0, 1e-9, 5),
    (123.456789, 123.456789 + 1 / 3, 1), (0.0, 0.05, 4096),
])
def test_events_windows_and_bin_boundaries(t0, t1, K):
    # times at, just below and just above every bin boundary the reference would compute
    k = np.arange(K + 1)
    edges = t0 + (t1 - t0) * k / K
    t = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    t = np.concatenate([t, [t0, np.nextafter(t1, -np.inf), t1]])
    rng = np.random.default_rng(K)
    H, W = 2, 3
    y = rng.integers(0, H, t.size)
    x = rng.integers(0, W, t.size)
    out = voxelize_events(t, y, x, t0, t1, H, W, num_bins=K)
    np.testing.assert_array_equal(out, oracle_counts(t, y, x, t0, t1, H, W, K))
    np.testing.assert_array_equal(
        bin_index(t, t0, t1, K),
        np.clip(np.floor((t - t0) / max(t1 - t0, 1e-9) * K).astype(np.int64), 0, K - 1))


@pytest.mark.parametrize("t0,t1,K", [
    (-9.669447289429417, -1.536558167665893, 3), (-6.48688758794882, 2.145038456627697, 2),
    (-4.005762189252304, 0.22168733550308328, 35),
])
@pytest.mark.parametrize("run", [1, 40])
def test_last_bin_clip(t0, t1, K, run):
    """t just below t1 whose expression rounds up to K: clipped into bin K-1, on every path."""
    tl = np.nextafter(t1, -np.inf)
    assert np.floor((tl - t0) / (t1 - t0) * K) == K  # the case is real
    H, W = 2, 4
    t = np.full(run, tl)
    y = np.arange(run) % H
    x = np.arange(run) % W
    expected = oracle_counts(t, y, x, t0, t1, H, W, K)
    assert expected[K - 1].sum() == run
    np.testing.assert_array_equal(voxelize_events(t, y, x, t0, t1, H, W, K), expected)
    frames = np.zeros((run, H, W), bool)
    frames[np.arange(run), y, x] = True
    np.testing.assert_array_equal(voxelize_binary(frames, t, t0, t1, K), expected)
    np.testing.assert_array_equal(voxelize_packed(pack(frames), t, t0, t1, H, W, K), expected)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.uint8])
@pytest.mark.parametrize("shuffle", [False, True])
def test_events_from_spike_frames(dtype, shuffle):
    """Spike-frame events (long runs of equal t: the vectorised path), sorted and shuffled."""
    rng = np.random.default_rng(7)
    N, H, W = 90, 12, 20
    frames = rng.random((N, H, W)) < 0.4
    tf = 2.0 + np.arange(N) / 20000.0
    t, y, x = frames_to_events(frames, tf)
    if shuffle:
        p = rng.permutation(t.size)
        t, y, x = t[p], y[p], x[p]
    y, x = y.astype(dtype), x.astype(dtype)
    t0, t1 = tf[5], tf[80]  # frames 5..79 inside; window edges fall on frame times
    for K in (1, 7, 32):
        out = voxelize_events(t, y, x, t0, t1, H, W, num_bins=K)
        np.testing.assert_array_equal(out, oracle_counts(t, y, x, t0, t1, H, W, K))
        np.testing.assert_array_equal(out, voxelize_binary(frames, tf, t0, t1, num_bins=K))


def test_events_mixed_dtypes_and_float32_times():
    t = np.array([0.25, 0.5, 0.75], dtype=np.float32)
    y = np.array([0, 1, 2], dtype=np.uint8)
    x = np.array([3, 2, 1], dtype=np.int64)
    out = voxelize_events(t, y, x, 0.0, 1.0, 3, 4, num_bins=4)
    np.testing.assert_array_equal(out, oracle_counts(t.astype(np.float64), y, x, 0.0, 1.0, 3, 4, 4))


def test_events_inputs_unchanged():
    rng = np.random.default_rng(1)
    t = np.repeat(np.linspace(0, 1, 10), 50)
    y = rng.integers(0, 4, t.size).astype(np.int32)
    x = rng.integers(0, 5, t.size).astype(np.int16)
    copies = [a.copy() for a in (t, y, x)]
    for a in (t, y, x):
        a.flags.writeable = False  # a write would raise
    voxelize_events(t, y, x, 0.2, 0.9, 4, 5, num_bins=6)
    for a, c in zip((t, y, x), copies):
        assert a.dtype == c.dtype
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("run_len", [1, 31, 32, 33, 500])
def test_events_bad_index_named(run_len):
    """The first bad index is reported, whichever path (per event or per run) finds it."""
    t = np.repeat(np.arange(4, dtype=np.float64), run_len)
    y = np.zeros(t.size, np.int64)
    x = np.zeros(t.size, np.int64)
    bad = t.size - 2
    y[bad] = 3
    x[-1] = -1
    with pytest.raises(ValueError, match=rf"event {bad} is outside the 3x4 sensor: y\[{bad}\] = 3"):
        voxelize_events(t, y, x, 0.0, 2.0, 3, 4)  # also for events outside the window
    y[bad] = 0
    with pytest.raises(ValueError, match=rf"event {t.size - 1} .*x\[{t.size - 1}\] = -1"):
        voxelize_events(t, y, x, 0.0, 2.0, 3, 4)


@pytest.mark.parametrize("args,match", [
    (dict(t=np.zeros((2, 2))), "t must be a 1-D array"),
    (dict(t=np.zeros(3, np.int64)), "t must hold float seconds"),
    (dict(y=np.zeros(3, np.float64)), "y must be an integer array"),
    (dict(x=np.zeros(3, bool)), "x must be an integer array"),
    (dict(x=np.zeros((3, 1), np.int64)), "x must be a 1-D integer array"),
    (dict(y=np.zeros(2, np.int64)), "same length"),
    (dict(t=np.array([0.1, np.nan, 0.2])), r"t\[1\] is NaN"),
    (dict(t0=1.0, t1=1.0), "needs t1 > t0"),
    (dict(t0=1.0, t1=0.5), "needs t1 > t0"),
    (dict(t0=0.0, t1=5e-10), "shorter than 1e-09"),
    (dict(t0=0.0, t1=np.inf), "must be finite"),
    (dict(t0=np.nan), "must be finite"),
    (dict(t0="0"), "t0 must be a real number"),
    (dict(num_bins=0), "num_bins must be an integer >= 1"),
    (dict(num_bins=2.0), "num_bins must be an integer"),
    (dict(height=0), "height must be an integer >= 1"),
])
def test_events_bad_arguments(args, match):
    kw = dict(t=np.array([0.1, 0.2, 0.3]), y=np.zeros(3, np.int64), x=np.zeros(3, np.int64),
              t0=0.0, t1=1.0, height=2, width=2, num_bins=4)
    kw.update(args)
    with pytest.raises(ValueError, match=match):
        voxelize_events(**kw)


def test_bin_index_matches_reference_and_rejects_nan():
    t = np.array([[-1.0, 0.0, 0.5], [0.999999, 1.0, 7.0]])
    np.testing.assert_array_equal(bin_index(t, 0.0, 1.0, 4), [[0, 0, 2], [3, 3, 3]])
    with pytest.raises(ValueError, match="NaN"):
        bin_index(np.array([np.nan]), 0.0, 1.0, 4)


# ---- events: hypothesis ----------------------------------------------------------------------------

@st.composite
def event_case(draw):
    H = draw(st.integers(1, 6))
    W = draw(st.integers(1, 6))
    K = draw(st.sampled_from([1, 2, 3, 5, 32, 100, 777]))
    t0 = draw(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
    dur = draw(st.floats(1e-6, 1e3))
    t1 = t0 + dur
    if not t1 > t0 or t1 - t0 < 1e-9:
        t1 = t0 + max(1.0, abs(t0) * 1e-9)
    special = [t0, t1, np.nextafter(t0, np.inf), np.nextafter(t0, -np.inf),
               np.nextafter(t1, -np.inf), np.nextafter(t1, np.inf), t0 - dur, t1 + dur]
    tval = st.one_of(st.sampled_from(special),
                     st.floats(0.0, 1.0).map(lambda u: t0 + u * (t1 - t0)),
                     st.integers(0, K).map(lambda k: t0 + (t1 - t0) * k / K))
    # runs of equal t (spike frames) of random lengths, some long enough for the vectorised path
    runs = draw(st.lists(st.tuples(tval, st.integers(1, 70)), max_size=12))
    t = np.array([tv for tv, n in runs for _ in range(n)], dtype=np.float64)
    y = np.array(draw(st.lists(st.integers(0, H - 1), min_size=t.size, max_size=t.size)), np.int64)
    x = np.array(draw(st.lists(st.integers(0, W - 1), min_size=t.size, max_size=t.size)), np.int64)
    dtype = draw(st.sampled_from([np.int64, np.int32, np.uint16, np.uint8]))
    return t, y.astype(dtype), x.astype(dtype), t0, t1, H, W, K


@HYP
@given(event_case())
def test_events_match_oracle_hypothesis(case):
    t, y, x, t0, t1, H, W, K = case
    before = (t.copy(), y.copy(), x.copy())
    out = voxelize_events(t, y, x, t0, t1, H, W, num_bins=K)
    check_output(out, K, H, W)
    np.testing.assert_array_equal(out, oracle_counts(t, y, x, t0, t1, H, W, K))
    for a, b in zip((t, y, x), before):
        np.testing.assert_array_equal(a, b)


# ---- packed and binary -----------------------------------------------------------------------------

@st.composite
def frame_case(draw):
    H = draw(st.integers(1, 9))
    W = draw(st.sampled_from([w for w in range(1, 17) if (H * w) % 8 == 0] or [8]))
    N = draw(st.integers(0, 24))
    K = draw(st.sampled_from([1, 2, 4, 32, 101]))
    p = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    t0 = draw(st.floats(-100.0, 100.0))
    dur = draw(st.sampled_from([1e-3, 0.1, 1.0 / 3, 2.5]))
    t1 = t0 + dur
    special = [t0, t1, np.nextafter(t1, -np.inf), np.nextafter(t0, -np.inf), t0 - 1.0, t1 + 1.0]
    tval = st.one_of(st.sampled_from(special),
                     st.floats(0.0, 1.0).map(lambda u: t0 + u * (t1 - t0)))
    t = np.sort(np.array(draw(st.lists(tval, min_size=N, max_size=N)), dtype=np.float64))
    frames = np.random.default_rng(seed).random((N, H, W)) < p
    flipud = draw(st.booleans())
    return frames, t, t0, t1, K, flipud


@HYP
@given(frame_case())
def test_packed_and_binary_match_oracle_hypothesis(case):
    frames, t, t0, t1, K, flipud = case
    N, H, W = frames.shape
    packed = pack(frames, flipud=flipud)
    before = packed.copy()
    te, ye, xe = frames_to_events(frames, t)
    expected = oracle_counts(te, ye, xe, t0, t1, H, W, K)
    out = voxelize_packed(packed, t, t0, t1, H, W, num_bins=K, flipud=flipud)
    check_output(out, K, H, W)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(packed, before)
    for fr in (frames, frames.astype(np.uint8)):
        fr_before = fr.copy()
        np.testing.assert_array_equal(voxelize_binary(fr, t, t0, t1, num_bins=K), expected)
        np.testing.assert_array_equal(fr, fr_before)
    np.testing.assert_array_equal(voxelize_events(te, ye, xe, t0, t1, H, W, num_bins=K), expected)


@pytest.mark.parametrize("K", [1, 2, 5])
def test_packed_counts_above_255_flush(K):
    """More than 255 frames in one bin: the 8-bit accumulators must be flushed in time."""
    rng = np.random.default_rng(3)
    N, H, W = 1600, 4, 6
    frames = rng.random((N, H, W)) < 0.9
    frames[:, 0, 0] = True  # this pixel counts every frame of its bin
    t = np.arange(N, dtype=np.float64) * 1e-4
    t0, t1 = t[3], t[-2]
    out = voxelize_packed(pack(frames), t, t0, t1, H, W, num_bins=K)
    te, ye, xe = frames_to_events(frames, t)
    expected = oracle_counts(te, ye, xe, t0, t1, H, W, K)
    assert expected.max() > 255
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(voxelize_binary(frames, t, t0, t1, num_bins=K), expected)
    assert out[0, 0, 0] == ((t >= t0) & (t < t1) & (bin_index(t, t0, t1, K) == 0)).sum()


def test_packed_from_memmap_and_strided(tmp_path):
    rng = np.random.default_rng(5)
    N, H, W = 40, 5, 8
    frames = rng.random((N, H, W)) < 0.3
    packed = pack(frames)
    path = tmp_path / "s.dat"
    path.write_bytes(packed.tobytes())
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(N, H * W // 8))
    t = 10.0 + np.arange(N) / 40000.0
    t0, t1 = t[7], t[31]
    expected = voxelize_binary(frames, t, t0, t1, num_bins=6)
    np.testing.assert_array_equal(voxelize_packed(mm, t, t0, t1, H, W, num_bins=6), expected)
    np.testing.assert_array_equal(voxelize_packed(mm[4:30], t[4:30], t0, t1, H, W, num_bins=6),
                                  voxelize_binary(frames[4:30], t[4:30], t0, t1, num_bins=6))
    np.testing.assert_array_equal(voxelize_packed(packed[::2], t[::2], t0, t1, H, W, num_bins=6),
                                  voxelize_binary(frames[::2], t[::2], t0, t1, num_bins=6))
    wide = np.zeros((N, 2 * packed.shape[1]), np.uint8)  # rows with a stride
    wide[:, ::2] = packed
    np.testing.assert_array_equal(voxelize_packed(wide[:, ::2], t, t0, t1, H, W, num_bins=6), expected)
    del mm


def test_packed_no_frames_in_window_and_empty():
    packed = pack(np.ones((3, 2, 4), bool))
    t = np.array([0.0, 1.0, 2.0])
    out = voxelize_packed(packed, t, 5.0, 6.0, 2, 4, num_bins=3)
    check_output(out, 3, 2, 4)
    assert not out.any()
    out = voxelize_packed(np.zeros((0, 1), np.uint8), np.zeros(0), 0.0, 1.0, 2, 4, num_bins=3)
    check_output(out, 3, 2, 4)
    assert not out.any()


@pytest.mark.parametrize("packed,t,hw,match", [
    (np.zeros((2, 1), np.int8), [0.0, 1.0], (2, 4), "packed must be uint8"),
    (np.zeros((2, 2), np.uint8), [0.0, 1.0], (2, 4), r"packed must be \[N, H\*W/8\] = \[N, 1\]"),
    (np.zeros(2, np.uint8), [0.0, 1.0], (2, 4), "packed must be"),
    (np.zeros((2, 1), np.uint8), [0.0, 1.0], (3, 3), "not a multiple of 8"),
    (np.zeros((3, 1), np.uint8), [0.0, 2.0, 1.0], (2, 4), r"non-decreasing.*t\[2\] = 1.0 < t\[1\] = 2.0"),
    (np.zeros((3, 1), np.uint8), [0.0, np.nan, 1.0], (2, 4), r"t\[1\] is NaN"),
    (np.zeros((3, 1), np.uint8), [np.nan, 0.0, 1.0], (2, 4), r"t\[0\] is NaN"),
    (np.zeros((3, 1), np.uint8), [0.0, 1.0], (2, 4), "2 times for 3 packed frames"),
    (np.zeros((2, 1), np.uint8), [0, 1], (2, 4), "t must hold float seconds"),
])
def test_packed_bad_arguments(packed, t, hw, match):
    t = np.asarray(t)
    with pytest.raises(ValueError, match=match):
        voxelize_packed(packed, t, 0.0, 1.5, *hw)


def test_binary_rejects_bad_values_and_dtypes():
    fr = np.zeros((3, 2, 2), np.uint8)
    fr[1, 1, 0] = 2
    t = np.array([0.0, 0.5, 2.0])
    with pytest.raises(ValueError, match=r"0/1 spikes, but frames\[1, 1, 0\] = 2"):
        voxelize_binary(fr, t, 0.0, 1.0)
    with pytest.raises(ValueError, match="bool or uint8"):
        voxelize_binary(fr.astype(np.int16), t, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"frames must be \[N, H, W\]"):
        voxelize_binary(fr[0], t, 0.0, 1.0)
    with pytest.raises(ValueError, match="2 times for 3 frames"):
        voxelize_binary(fr, t[:2], 0.0, 1.0)


def test_binary_any_order_and_strided():
    rng = np.random.default_rng(11)
    frames = rng.random((30, 6, 7)) < 0.5
    t = rng.uniform(-0.5, 1.5, 30)
    te, ye, xe = frames_to_events(frames, t)
    np.testing.assert_array_equal(voxelize_binary(frames, t, 0.0, 1.0, num_bins=5),
                                  oracle_counts(te, ye, xe, 0.0, 1.0, 6, 7, 5))
    sub = frames[::3, ::2, 1::2]
    te, ye, xe = frames_to_events(sub, t[::3])
    np.testing.assert_array_equal(voxelize_binary(sub, t[::3], 0.0, 1.0, num_bins=5),
                                  oracle_counts(te, ye, xe, 0.0, 1.0, 3, 3, 5))


# ---- compiled-kernel contract and fork safety ------------------------------------------------------

def test_kernels_cached_serial_and_exact():
    from numba.core.caching import NullCache

    for fn in (vz._events_kernel, vz._events_slow, vz._packed_kernel, vz._binary_kernel, vz._flush):
        assert not isinstance(fn._cache, NullCache), fn  # cache=True: on-disk cache
        assert not fn.targetoptions.get("parallel"), fn
        assert not fn.targetoptions.get("fastmath"), fn


def _fork_case():
    rng = np.random.default_rng(21)
    frames = rng.random((300, 8, 10)) < 0.5
    t = 1.0 + np.arange(300) / 20000.0
    return frames, t, t[10], t[290]


def _fork_worker(q, which):
    try:
        frames, t, t0, t1 = _fork_case()
        te, ye, xe = frames_to_events(frames, t)
        outs = [voxelize_events(te, ye.astype(np.uint16), xe.astype(np.uint16), t0, t1, 8, 10),
                voxelize_packed(pack(frames), t, t0, t1, 8, 10),
                voxelize_binary(frames, t, t0, t1)]
        q.put((which, [o.tobytes() for o in outs], None))
    except BaseException as exc:  # report instead of dying silently
        q.put((which, None, repr(exc)))


def test_fork_workers_after_compile():
    frames, t, t0, t1 = _fork_case()
    te, ye, xe = frames_to_events(frames, t)
    expected = voxelize_binary(frames, t, t0, t1)
    # compile (or load from cache) every path in the parent first
    np.testing.assert_array_equal(
        voxelize_events(te, ye.astype(np.uint16), xe.astype(np.uint16), t0, t1, 8, 10), expected)
    np.testing.assert_array_equal(voxelize_packed(pack(frames), t, t0, t1, 8, 10), expected)

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_fork_worker, args=(q, i), daemon=True) for i in range(2)]
    for p in procs:
        p.start()
    try:
        results = {}
        for _ in procs:
            try:
                which, outs, err = q.get(timeout=60)
            except queue.Empty:
                pytest.fail("a forked worker hung (no result within 60 s)")
            assert err is None, f"worker {which} failed: {err}"
            results[which] = outs
        for outs in results.values():
            for raw in outs:
                got = np.frombuffer(raw, dtype=np.uint32).reshape(expected.shape)
                np.testing.assert_array_equal(got, expected)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
