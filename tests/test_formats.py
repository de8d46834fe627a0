"""Spike readers and writers (issue 2, item 2): exact round trips, the published .dat bit layout,
half-open event selection, and the malformed-input corpus (``tests/malformed_corpus.py``)."""
from __future__ import annotations

import builtins
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeprep.formats.dat as dat_module
from schemas.spike_meta import SPIKE_META_VERSION, SpikeMeta
from spikeprep.errors import InputError
from spikeprep.formats import (Events, binary_array_num_frames, dat_num_frames, open_dat, pack_frames,
                               read_binary_array, read_dat, read_dat_packed, read_events, read_spike_meta,
                               unpack_frames, validate_events, write_binary_array, write_dat, write_events,
                               write_spike_meta)
from tests.malformed_corpus import CASES

# CI-stable: the same examples on every run and machine, no example database, no deadline.
settings.register_profile(
    "formats-ci", derandomize=True, deadline=None, database=None, print_blob=True,
    max_examples=int(os.environ.get("SPIKEPREP_FORMATS_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = settings.get_profile("formats-ci")


@contextmanager
def scratch():
    """A fresh directory per hypothesis example (``tmp_path`` is per test, not per example)."""
    with tempfile.TemporaryDirectory(prefix="spikeprep-formats-") as d:
        yield Path(d)


@st.composite
def frame_shapes(draw, max_n: int = 6):
    """``(N, H, W)`` with ``H*W`` a multiple of 8 (the .dat rule), small."""
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 12))
    w = w * 8 // math.gcd(h * w, 8)
    return draw(st.integers(0, max_n)), h, w


@st.composite
def binary_frames(draw, dtype=np.bool_, min_n: int = 0, max_n: int = 6):
    n, h, w = draw(frame_shapes(max_n=max_n))
    n = max(n, min_n)
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    frames = np.random.default_rng(seed).random((n, h, w)) < density
    return frames.astype(dtype)


# ------------------------------------------------------------------------------- .dat bit layout
def oracle_dat_bytes(frames: list[list[list[int]]], flipud: bool = True) -> bytes:
    """The published rule with plain ints: file pixel i -> bit i%8 of byte i//8 (LSB first), rows
    stored bottom-up when ``flipud``; frames concatenated. No numpy."""
    out = bytearray()
    for frame in frames:
        h, w = len(frame), len(frame[0])
        rows = frame[::-1] if flipud else frame
        frame_bytes = [0] * (h * w // 8)
        for i in range(h * w):
            if rows[i // w][i % w]:
                frame_bytes[i // 8] |= 1 << (i % 8)
        out += bytes(frame_bytes)
    return bytes(out)


def one_pixel(h: int, w: int, y: int, x: int) -> list[list[int]]:
    frame = [[0] * w for _ in range(h)]
    frame[y][x] = 1
    return frame


# Literal bytes, worked by hand from DESIGN section 3 (2x8: row 1 is stored first when flipped).
@pytest.mark.parametrize("h,w,y,x,flipud,expected", [
    (2, 8, 0, 0, True, b"\x00\x01"),
    (2, 8, 0, 0, False, b"\x01\x00"),
    (2, 8, 1, 7, True, b"\x80\x00"),
    (2, 8, 1, 7, False, b"\x00\x80"),
    (2, 8, 0, 3, True, b"\x00\x08"),
    (1, 16, 0, 9, True, b"\x00\x02"),
    (4, 2, 3, 1, True, b"\x02"),  # file pixel 1 is row 3 (stored first), column 1
    (4, 2, 0, 0, True, b"\x40"),  # row 0 is stored last: file pixel 6
    (3, 8, 1, 5, True, b"\x00\x20\x00"),
])
def test_dat_bit_layout_literals(tmp_path, h, w, y, x, flipud, expected):
    frame = one_pixel(h, w, y, x)
    assert oracle_dat_bytes([frame], flipud) == expected
    path = write_dat(tmp_path / "one.dat", np.array([frame], bool), flipud=flipud)
    assert path.read_bytes() == expected
    back = read_dat(path, h, w, flipud=flipud)
    assert back.tolist() == [[[bool(v) for v in row] for row in frame]]


def test_dat_bit_layout_hand_built_frames(tmp_path):
    h, w = 3, 8
    frames = [
        [[1, 0, 0, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 1, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0]],
        [[0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0, 0, 0]],
    ]
    # Bottom row first: [1,1,1,1,0,0,0,0] -> 0x0F, [0,1,0,1,0,1,0,1] -> 0xAA, [1,0,...,0,1] -> 0x81.
    assert oracle_dat_bytes(frames) == bytes([0x0F, 0xAA, 0x81, 0x04, 0xFF, 0x00])
    path = write_dat(tmp_path / "hand.dat", np.array(frames, np.uint8))
    assert path.read_bytes() == oracle_dat_bytes(frames)
    assert read_dat(path, h, w).astype(int).tolist() == frames
    # Reading a file whose bytes were written by hand (not by our writer) gives the same frames.
    raw = tmp_path / "raw.dat"
    raw.write_bytes(bytes([0x0F, 0xAA, 0x81, 0x04, 0xFF, 0x00]))
    assert read_dat(raw, h, w).astype(int).tolist() == frames
    assert read_dat(raw, h, w, flipud=False).astype(int).tolist() == [f[::-1] for f in frames]


@FORMATS
@given(frames=binary_frames(max_n=3), flipud=st.booleans())
def test_dat_bytes_match_bit_oracle(frames, flipud):
    as_lists = frames.astype(int).tolist()
    if len(frames):
        with scratch() as d:
            path = write_dat(d / "s.dat", frames, flipud=flipud)
            assert path.read_bytes() == oracle_dat_bytes(as_lists, flipud)
    assert pack_frames(frames, flipud=flipud).tobytes() == oracle_dat_bytes(as_lists, flipud)


# --------------------------------------------------------------------------- .dat round trips
@FORMATS
@given(frames=binary_frames(), flipud=st.booleans(), as_uint8=st.booleans())
def test_pack_unpack_round_trip(frames, flipud, as_uint8):
    n, h, w = frames.shape
    given_frames = frames.astype(np.uint8) if as_uint8 else frames
    before = given_frames.copy()
    packed = pack_frames(given_frames, flipud=flipud)
    assert packed.dtype == np.uint8 and packed.shape == (n, h * w // 8)
    assert np.array_equal(given_frames, before)  # input untouched
    back = unpack_frames(packed, h, w, flipud=flipud)
    assert back.dtype == np.bool_ and back.shape == (n, h, w)
    assert np.array_equal(back, frames)
    # The flip is exactly an upside-down image, nothing else.
    assert np.array_equal(unpack_frames(packed, h, w, flipud=not flipud), frames[:, ::-1, :])


@FORMATS
@given(frames=binary_frames(min_n=1, max_n=8), flipud=st.booleans(), data=st.data())
def test_write_read_dat_round_trip_and_ranges(frames, flipud, data):
    n, h, w = frames.shape
    packed = pack_frames(frames, flipud=flipud)
    with scratch() as d:
        path = write_dat(d / "stream.dat", frames, flipud=flipud)
        assert sorted(p.name for p in d.iterdir()) == ["stream.dat"]  # no temp file left behind
        assert path.read_bytes() == packed.tobytes()
        assert dat_num_frames(path, h, w) == n
        assert np.array_equal(read_dat(path, h, w, flipud=flipud), frames)
        assert np.array_equal(read_dat_packed(path, h, w), packed)
        for _ in range(3):
            start = data.draw(st.integers(0, n), label="start")
            stop = data.draw(st.integers(start, n), label="stop")
            part = read_dat(path, h, w, start, stop, flipud=flipud)
            assert part.shape == (stop - start, h, w)
            assert np.array_equal(part, frames[start:stop])
            assert np.array_equal(read_dat_packed(path, h, w, start, stop), packed[start:stop])
        mm = open_dat(path, h, w)
        assert isinstance(mm, np.memmap) and mm.shape == packed.shape and not mm.flags.writeable
        assert np.array_equal(mm, packed)
        assert np.array_equal(unpack_frames(mm[n // 2:], h, w, flipud=flipud), frames[n // 2:])
        del mm


@pytest.mark.parametrize("n,start,stop", [(5, 0, 5), (5, 0, 0), (5, 5, 5), (5, 2, 3), (5, 4, 5), (5, 1, None),
                                          (1, 0, 1), (7, 3, 6)])
def test_read_dat_packed_reads_only_its_bytes(tmp_path, monkeypatch, n, start, stop):
    h, w = 4, 6  # 3 bytes per frame
    frames = np.random.default_rng(n + start).random((n, h, w)) < 0.5
    path = write_dat(tmp_path / "s.dat", frames)
    reads: list[tuple[str, int]] = []

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def seek(self, pos, *a):
            reads.append(("seek", pos))
            return self.fh.seek(pos, *a)

        def read(self, size=-1):
            reads.append(("read", size))
            return self.fh.read(size)

    monkeypatch.setattr(dat_module, "open", lambda *a, **k: Spy(builtins.open(*a, **k)), raising=False)
    out = read_dat_packed(path, h, w, start, stop)
    end = n if stop is None else stop
    assert reads == [("seek", start * 3), ("read", (end - start) * 3)]
    assert np.array_equal(out, pack_frames(frames)[start:end])


def test_read_dat_returns_independent_writable_arrays(tmp_path):
    frames = np.zeros((2, 2, 4), bool)
    path = write_dat(tmp_path / "s.dat", frames)
    out = read_dat(path, 2, 4)
    out[0, 0, 0] = True  # must not fail, must not touch the file
    assert path.read_bytes() == b"\x00\x00"


def test_dat_accepts_numpy_integer_sizes(tmp_path):
    frames = np.ones((3, 2, 4), bool)
    path = write_dat(tmp_path / "s.dat", frames)
    assert dat_num_frames(path, np.int64(2), np.int32(4)) == 3
    assert np.array_equal(read_dat(path, np.int64(2), np.int64(4), np.int64(1), np.int64(3)), frames[1:3])


@pytest.mark.parametrize("frames,error", [
    (np.zeros((2, 3, 3), bool), "multiple of 8"),
    (np.zeros((4, 8), bool), "N, H, W"),
    (np.full((1, 2, 4), 2, np.uint8), "0/1"),
    (np.zeros((1, 2, 4), np.float32), "bool or uint8"),
    (np.zeros((0, 2, 4), bool), "no frames"),
])
def test_write_dat_refuses_bad_frames(tmp_path, frames, error):
    with pytest.raises(ValueError, match=error):
        write_dat(tmp_path / "bad.dat", frames)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- binary arrays
@FORMATS
@given(frames=binary_frames(), dtype=st.sampled_from([np.bool_, np.uint8]),
       suffix=st.sampled_from([".npy", ".npz"]), ours=st.booleans(), data=st.data())
def test_binary_array_round_trip(frames, dtype, suffix, ours, data):
    n, h, w = frames.shape
    frames = frames.astype(dtype)
    with scratch() as d:
        path = d / f"stream{suffix}"
        if ours:
            write_binary_array(path, frames)
            assert sorted(p.name for p in d.iterdir()) == [path.name]
        elif suffix == ".npy":
            np.save(path, frames)
        else:  # a user's archive: the only array, under any key
            np.savez(path, anything=frames)
        assert binary_array_num_frames(path, h, w) == n
        full = read_binary_array(path, h, w)
        assert full.dtype == np.bool_ and np.array_equal(full, frames.astype(bool))
        start = data.draw(st.integers(0, n), label="start")
        stop = data.draw(st.integers(start, n), label="stop")
        part = read_binary_array(path, h, w, start, stop)
        assert part.shape == (stop - start, h, w) and np.array_equal(part, frames[start:stop].astype(bool))
        part[...] = True  # an independent, writable copy (not the memory map)
        assert np.array_equal(read_binary_array(path, h, w, start, stop), frames[start:stop].astype(bool))


def test_binary_npz_prefers_the_spikes_key(tmp_path):
    spikes = np.eye(8, dtype=bool)[None]
    np.savez(tmp_path / "s.npz", other=np.zeros((1, 8, 8), bool), spikes=spikes)
    assert np.array_equal(read_binary_array(tmp_path / "s.npz", 8, 8), spikes)


def test_binary_bool_file_with_odd_bytes_reads_canonical(tmp_path):
    raw = np.array([[[0, 1, 2, 255]]], np.uint8)
    np.save(tmp_path / "b.npy", raw.view(np.bool_))  # e.g. written by C code: nonzero bytes are True
    out = read_binary_array(tmp_path / "b.npy", 1, 4)
    assert out.view(np.uint8).tolist() == [[[0, 1, 1, 1]]]


def test_write_binary_array_refuses_counts(tmp_path):
    with pytest.raises(ValueError, match="0/1"):
        write_binary_array(tmp_path / "s.npy", np.full((1, 2, 4), 2, np.uint8))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        write_binary_array(tmp_path / "s.npy", np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="suffix"):
        write_binary_array(tmp_path / "s.bin", np.zeros((1, 2, 4), bool))
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- events
@st.composite
def event_lists(draw):
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    n = draw(st.integers(0, 25))
    times = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=True),
                          min_size=n, max_size=n))
    t = np.sort(np.array(times, np.float64))
    y = np.array(draw(st.lists(st.integers(0, h - 1), min_size=n, max_size=n)), np.int64)
    x = np.array(draw(st.lists(st.integers(0, w - 1), min_size=n, max_size=n)), np.int64)
    p = np.array(draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)), np.int64)
    return h, w, t, y, x, draw(st.one_of(st.none(), st.just(p)))


def check_events(ev: Events, t, y, x, p):
    assert isinstance(ev, Events) and len(ev) == len(t)
    assert ev.t.dtype == np.float64 and ev.y.dtype == np.int64 and ev.x.dtype == np.int64
    assert ev.t.tobytes() == np.asarray(t, np.float64).tobytes()  # bit-exact times
    assert np.array_equal(ev.y, y) and np.array_equal(ev.x, x)
    if p is None:
        assert ev.p is None
    else:
        assert np.array_equal(ev.p, p)


@FORMATS
@given(case=event_lists(), suffix=st.sampled_from([".npy", ".npz"]))
def test_events_round_trip_writer(case, suffix):
    h, w, t, y, x, p = case
    with scratch() as d:
        path = write_events(d / f"ev{suffix}", t, y, x, p)
        assert sorted(q.name for q in d.iterdir()) == [path.name]
        check_events(read_events(path, h, w), t, y, x, p)


STRUCTURED_DTYPES = [
    [("t", "<f8"), ("y", "<i2"), ("x", "<u2")],
    [("t", ">f8"), ("y", ">i4"), ("x", ">i4"), ("p", "i1")],
    [("x", "u1"), ("p", "<f4"), ("t", "<f8"), ("y", "u1")],  # any field order
    [("t", "<f8"), ("y", "<f4"), ("x", "<f8"), ("p", "<i8")],
    [("t", "<i8"), ("y", "<i8"), ("x", "<i8")],  # integer times (whole seconds) are allowed
]


@FORMATS
@given(case=event_lists(), dtype=st.sampled_from(STRUCTURED_DTYPES), suffix=st.sampled_from([".npy", ".npz"]))
def test_events_round_trip_structured(case, dtype, suffix):
    h, w, t, y, x, _ = case
    names = [f for f, _ in dtype]
    if dict(dtype)["t"].endswith("i8"):
        t = np.round(t).astype(np.int64)
    arr = np.zeros(len(t), dtype)
    arr["t"], arr["y"], arr["x"] = t, y, x
    p = None
    if "p" in names:
        p = (np.arange(len(t)) % 2).astype(arr.dtype["p"])
        arr["p"] = p
    with scratch() as d:
        path = d / f"ev{suffix}"
        np.save(path, arr) if suffix == ".npy" else np.savez(path, events=arr)
        check_events(read_events(path, h, w), arr["t"].astype(np.float64), y, x, p)


@pytest.mark.parametrize("cols", [3, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_events_plain_arrays(tmp_path, cols, dtype):
    ev = np.array([[0, 0, 0, 1], [1, 3, 4, -1], [1, 2, 4, 1], [7, 3, 0, 0]], dtype)[:, :cols]
    np.save(tmp_path / "ev.npy", ev)
    got = read_events(tmp_path / "ev.npy", 4, 5)
    check_events(got, ev[:, 0], ev[:, 1], ev[:, 2], ev[:, 3] if cols == 4 else None)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_events_empty_list_is_valid(tmp_path, suffix):
    path = write_events(tmp_path / f"ev{suffix}", [], [], [])
    ev = read_events(path, 2, 2)
    assert len(ev) == 0 and ev.t.dtype == np.float64
    assert len(ev.select(-np.inf, np.inf)) == 0


def test_validate_events_does_not_modify_inputs_and_checks_lengths(tmp_path):
    t = np.array([0.0, 1.0]); y = np.array([1.0, 0.0]); x = np.array([2, 1])
    copies = [a.copy() for a in (t, y, x)]
    ev = validate_events(tmp_path / "x.npy", t, y, x, None, 2, 3)
    ev.t[0] = 9.0
    assert all(np.array_equal(a, b) for a, b in zip((t, y, x), copies))
    with pytest.raises(InputError, match="differ in length"):
        validate_events(tmp_path / "x.npy", t, y[:1], x, None, 2, 3)


# ------------------------------------------------------------------------- Events.select [t0, t1)
T = np.array([0.0, 0.1, 0.1, 0.1, 0.2, 0.3, 0.3, 0.5, 0.5, 0.5, 0.9])


@pytest.mark.parametrize("t0,t1,expected", [
    (0.1, 0.5, [0.1, 0.1, 0.1, 0.2, 0.3, 0.3]),  # all duplicates at t0 in, all at t1 out
    (0.1, 0.1, []),                              # empty window
    (0.5, 0.9, [0.5, 0.5, 0.5]),
    (0.5, np.nextafter(0.5, 1.0), [0.5, 0.5, 0.5]),
    (np.nextafter(0.1, 0.0), 0.1, []),           # just below a boundary: nothing
    (np.nextafter(0.1, 1.0), 0.3, [0.2]),
    (-1.0, 0.0, []),
    (-1.0, np.nextafter(0.0, 1.0), [0.0]),
    (0.9, 2.0, [0.9]),
    (0.0, 0.9, list(T[:-1])),
    (-np.inf, np.inf, list(T)),
    (0.6, 0.2, []),                              # reversed window is empty, not an error
])
def test_select_is_half_open(t0, t1, expected):
    ev = Events(T, np.arange(len(T)), np.arange(len(T)) * 2, np.arange(len(T)) % 2)
    sel = ev.select(t0, t1)
    assert sel.t.tolist() == expected
    mask = (T >= t0) & (T < t1)
    assert np.array_equal(sel.y, np.arange(len(T))[mask]) and np.array_equal(sel.x, (np.arange(len(T)) * 2)[mask])
    assert np.array_equal(sel.p, (np.arange(len(T)) % 2)[mask])


@FORMATS
@given(ticks=st.lists(st.integers(0, 12), max_size=40), b0=st.integers(-1, 13), b1=st.integers(-1, 13),
       rate=st.sampled_from([3.0, 7.0, 20000.0]))
def test_select_matches_mask(ticks, b0, b1, rate):
    t = np.sort(np.array(ticks, np.int64)) / rate  # many exact duplicates and boundary hits
    ev = Events(t, np.arange(len(t)), np.arange(len(t)), None)
    t0, t1 = b0 / rate, b1 / rate
    sel = ev.select(t0, t1)
    mask = (t >= t0) & (t < t1)
    assert np.array_equal(sel.t, t[mask]) and np.array_equal(sel.y, np.flatnonzero(mask))
    assert sel.p is None


# ----------------------------------------------------------------------------------- meta.json
@st.composite
def spike_metas(draw):
    fmt = draw(st.sampled_from(["dat", "npy-binary", "npz-binary", "npy-events", "npz-events"]))
    layout = draw(st.sampled_from(["stream", "per-frame"]))
    h = draw(st.integers(1, 2000))
    w = draw(st.integers(1, 2000))
    head = draw(st.sampled_from([None, 16, 24])) if fmt == "dat" else None
    if fmt == "dat":
        w = w * 8 // math.gcd(h * w, 8)   # h * (w + head) stays a multiple of 8 for head in {16, 24}
    finite = st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False)
    record = dict(format=fmt, layout=layout, height=h, width=w, flipud=draw(st.booleans()),
                  rate_hz=draw(st.floats(1e-3, 1e7, allow_nan=False, allow_infinity=False)))
    binary = not fmt.endswith("events")
    if head is not None:
        record["head_columns"] = head
    if fmt in ("npy-binary", "npz-binary") and draw(st.booleans()):
        record["axes"] = draw(st.sampled_from(["NHW", "HWN"]))
    if layout == "stream":
        record["stream_file"] = "stream" + {"dat": ".dat"}.get(fmt, "." + fmt[:3])
        if binary or draw(st.booleans()):
            record["start_s"] = draw(finite)
    elif binary or draw(st.booleans()):
        stems = draw(st.lists(st.from_regex(r"[0-9]{6}", fullmatch=True), min_size=1, max_size=4, unique=True))
        record["file_start_s"] = {s: draw(finite) for s in stems}
    return SpikeMeta(**record)


@FORMATS
@given(meta=spike_metas(), as_dir=st.booleans())
def test_meta_round_trip(meta, as_dir):
    with scratch() as d:
        path = write_spike_meta(d if as_dir else d / "meta.json", meta)
        assert path == d / "meta.json" and sorted(p.name for p in d.iterdir()) == ["meta.json"]
        back = read_spike_meta(d if as_dir else path)
        assert back == meta
        assert path.read_text() == back.to_json()  # stable bytes
        assert json.loads(path.read_text())["version"] == SPIKE_META_VERSION == 3


def test_meta_reads_minimal_handwritten_record(tmp_path):
    (tmp_path / "meta.json").write_text('{"format": "npz-events", "layout": "stream", "height": 250,\n'
                                        ' "width": 400, "rate_hz": 20000, "stream_file": "events.npz"}')
    meta = read_spike_meta(tmp_path)
    assert meta.rate_hz == 20000.0 and isinstance(meta.rate_hz, float)
    assert meta.flipud is True and meta.version == SPIKE_META_VERSION and meta.start_s is None
    assert meta.axis_order == "NHW" and meta.stored_width == 400


def test_meta_version_1_records_still_read(tmp_path):
    (tmp_path / "meta.json").write_text('{"version": 1, "format": "dat", "layout": "stream", "height": 250,'
                                        ' "width": 400, "rate_hz": 20000.0, "start_s": 0.0, "stream_file": "s.dat"}')
    meta = read_spike_meta(tmp_path)
    assert meta.version == 1 and meta.head_columns is None and meta.stored_width == 400


def test_dat_head_columns_are_dropped(tmp_path):
    """SPS10 rows: 416 stored columns, columns 400..415 carry no image (SpikeCV's layout)."""
    frames = np.random.default_rng(3).random((4, 2, 416)) < 0.5
    write_dat(tmp_path / "s.dat", frames)
    got = read_dat(tmp_path / "s.dat", 2, 400, head_columns=16)
    np.testing.assert_array_equal(got, frames[:, :, :400])
    np.testing.assert_array_equal(read_dat(tmp_path / "s.dat", 2, 400, 1, 3, head_columns=16), frames[1:3, :, :400])


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_binary_frames_last_axes(tmp_path, suffix):
    frames = np.random.default_rng(4).random((5, 3, 4)) < 0.5
    path = tmp_path / f"s{suffix}"
    (np.save if suffix == ".npy" else lambda p, a: np.savez(p, spikes=a))(path, np.moveaxis(frames, 0, 2))
    assert binary_array_num_frames(path, 3, 4, axes="HWN") == 5
    np.testing.assert_array_equal(read_binary_array(path, 3, 4, axes="HWN"), frames)
    np.testing.assert_array_equal(read_binary_array(path, 3, 4, 1, 4, axes="HWN"), frames[1:4])


# ----------------------------------------------------------------------------- atomic writers
_FRAMES = np.eye(8, dtype=bool).reshape(1, 8, 8)
_META = SpikeMeta(format="dat", layout="stream", height=8, width=8, rate_hz=1.0, start_s=0.0, stream_file="s.dat")
WRITERS = {
    "s.dat": lambda p: write_dat(p, _FRAMES),
    "s.npy": lambda p: write_binary_array(p, _FRAMES),
    "s.npz": lambda p: write_binary_array(p, _FRAMES),
    "e.npy": lambda p: write_events(p, [0.0], [1], [2]),
    "e.npz": lambda p: write_events(p, [0.0], [1], [2]),
    "meta.json": lambda p: write_spike_meta(p, _META),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writers_are_atomic(tmp_path, monkeypatch, name):
    target = tmp_path / name
    assert WRITERS[name](target) == target and os.listdir(tmp_path) == [name]
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)  # the new file is never committed
    with pytest.raises(OSError, match="disk full"):
        WRITERS[name](target)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == [name]


# ----------------------------------------------------------------------------- malformed corpus
def test_corpus_is_complete():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(ids) >= 150
    for prefix in ("dat-", "bin-npy-", "bin-npz-", "events-npy-", "events-npz-", "meta-"):
        assert any(i.startswith(prefix) for i in ids), prefix


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_a_clear_input_error(tmp_path, case):
    path, call = case.build(tmp_path)
    with pytest.raises(InputError) as info:
        call()
    err = info.value
    message = str(err)
    assert str(path) in message, message
    assert "Fix: " in message and err.fix, message
    assert err.path == Path(path)
    for fragment in case.fragments:
        assert fragment in message, (fragment, message)
    assert err.__cause__ is None  # not a re-labelled traceback of some library error
