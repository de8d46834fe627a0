"""Malformed-input corpus for every spike reader (issue 2, "Show").

Each ``Case`` builds one bad file under a directory it is given and returns the path the error must
name plus a zero-argument call of the public reader that must fail. The call must raise
``spikeprep.errors.InputError`` (never a bare numpy / pydantic / zipfile exception) whose message
contains the file path, a ``Fix:`` part and every fragment listed. ``tests/test_formats.py`` runs the
table; other tests may import ``CASES`` (e.g. to drive the CLI over the same files).
"""
from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from spikeprep.formats import (binary_array_num_frames, dat_num_frames, open_dat, read_binary_array, read_dat,
                               read_dat_packed, read_events, read_spike_meta)

H, W = 8, 16  # sensor size used by the corpus: 128 bits = 16 bytes per packed frame
FRAME_BYTES = H * W // 8
N = 3  # frames in the "good" files the corpus damages


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], tuple[Path, Callable[[], object]]]
    fragments: tuple[str, ...]


CASES: list[Case] = []


def case(id: str, *fragments: str):
    def register(build):
        CASES.append(Case(id, build, fragments))
        return build
    return register


def _frames(n: int = N, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(7).random((n, h, w)) < 0.4


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _good_npy_bytes(arr: np.ndarray, tmp: Path) -> bytes:
    np.save(tmp / "_good.npy", arr)
    data = (tmp / "_good.npy").read_bytes()
    (tmp / "_good.npy").unlink()
    return data


def _good_npz_bytes(tmp: Path, **arrays) -> bytes:
    np.savez_compressed(tmp / "_good.npz", **arrays)
    data = (tmp / "_good.npz").read_bytes()
    (tmp / "_good.npz").unlink()
    return data


# ------------------------------------------------------------------------------------------------ .dat
# Each bad .dat is offered to every .dat entry point: the message must be the same quality for all.
DAT_READERS: dict[str, Callable] = {
    "read_dat": lambda p, h, w, **kw: read_dat(p, h, w, **kw),
    "read_dat_packed": lambda p, h, w, **kw: read_dat_packed(p, h, w, **kw),
    "open_dat": lambda p, h, w, **kw: open_dat(p, h, w),
    "dat_num_frames": lambda p, h, w, **kw: dat_num_frames(p, h, w),
}
_TRUNC = N * FRAME_BYTES + 5
_WRONG_H = 10  # 10x16 = 20 bytes per frame; 48 bytes is not a whole number of those


def _dat_case(id: str, make: Callable[[Path], Path], h: int, w: int, fragments: tuple[str, ...],
              readers=tuple(DAT_READERS), **kw):
    for name in readers:
        def build(tmp: Path, make=make, name=name):
            path = make(tmp)
            return path, lambda: DAT_READERS[name](path, h, w, **kw)
        CASES.append(Case(f"dat-{id}-{name}", build, fragments))


def _good_dat(tmp: Path) -> Path:
    from spikeprep.formats import write_dat
    return write_dat(tmp / "stream.dat", _frames())


_dat_case("truncated", lambda tmp: _write_bytes(tmp / "cut.dat", b"\xa5" * _TRUNC), H, W,
          (f"size {_TRUNC} bytes", f"{FRAME_BYTES} bytes each", f"{H}x{W}"))
_dat_case("one-byte-short", lambda tmp: _write_bytes(tmp / "short.dat", _good_dat(tmp).read_bytes()[:-1]), H, W,
          (f"size {N * FRAME_BYTES - 1} bytes", f"{FRAME_BYTES} bytes each"))
_dat_case("wrong-hw", _good_dat, _WRONG_H, W,
          (f"size {N * FRAME_BYTES} bytes", f"{_WRONG_H * W // 8} bytes each", "height/width"))
_dat_case("empty", lambda tmp: _write_bytes(tmp / "empty.dat", b""), H, W, ("empty", "0 bytes"))
_dat_case("hw-not-multiple-of-8", _good_dat, 5, 5, ("multiple of 8",))
_dat_case("zero-height", _good_dat, 0, W, ("positive",))
_dat_case("missing", lambda tmp: tmp / "nope.dat", H, W, ("not found",))
_dat_case("directory", lambda tmp: (tmp / "dir.dat").mkdir() or tmp / "dir.dat", H, W, ("not found", "directory"))
_dat_case("range-past-end", _good_dat, H, W, ("[0, 4)", f"{N} frames"), readers=("read_dat", "read_dat_packed"),
          start=0, stop=N + 1)
_dat_case("range-start-past-end", _good_dat, H, W, ("[5, 6)",), readers=("read_dat", "read_dat_packed"),
          start=5, stop=6)
# SPS10 head columns: the file is read as rows of W + head columns
_dat_case("head-columns-not-whole-frames", _good_dat, H, W, (f"{H}x{W + 16} frames", "height/width"),
          readers=("read_dat",), head_columns=16)
_dat_case("range-negative", _good_dat, H, W, ("[-1, 2)",), readers=("read_dat", "read_dat_packed"),
          start=-1, stop=2)
_dat_case("range-reversed", _good_dat, H, W, ("[2, 1)",), readers=("read_dat", "read_dat_packed"),
          start=2, stop=1)


# ------------------------------------------------------------------------------------ binary arrays
BINARY_READERS: dict[str, Callable] = {
    "read_binary_array": lambda p, **kw: read_binary_array(p, H, W, **kw),
    "binary_array_num_frames": lambda p, **kw: binary_array_num_frames(p, H, W, axes=kw.get("axes", "NHW")),
}


def _bin_case(id: str, make: Callable[[Path], Path], fragments: tuple[str, ...], readers=tuple(BINARY_READERS),
              **kw):
    for name in readers:
        def build(tmp: Path, make=make, name=name):
            path = make(tmp)
            return path, lambda: BINARY_READERS[name](path, **kw)
        CASES.append(Case(f"bin-{id}-{name}", build, fragments))


def _npy(name: str, arr) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / name, arr)
        return tmp / name
    return make


def _npz(name: str, **arrays) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.savez(tmp / name, **arrays)
        return tmp / name
    return make


_GOOD_U8 = _frames().astype(np.uint8)
_TWOS = _GOOD_U8.copy()
_TWOS[1, 2, 3] = 2
_THREES = _GOOD_U8.copy()
_THREES[2, 0, 0] = 3

for ext, save in ((".npy", _npy), (".npz", lambda n, a: _npz(n, spikes=a))):
    tag = ext[1:]
    # axis order (meta.json "axes"): the message says which order the array looks like
    _bin_case(f"{tag}-frames-last-read-as-nhw", save("s" + ext, np.moveaxis(_GOOD_U8, 0, 2)),
              ("shape (8, 16, 3)", '"axes": "HWN"'))
    _bin_case(f"{tag}-frames-first-read-as-hwn", save("s" + ext, _GOOD_U8), (f"[{H}, {W}, N]", 'remove "axes"'),
              axes="HWN")
    _bin_case(f"{tag}-hwn-value-2", save("s" + ext, np.moveaxis(_TWOS, 0, 2)), ("value 2",),
              readers=("read_binary_array",), axes="HWN")
    _bin_case(f"{tag}-wrong-shape", save("s" + ext, np.zeros((N, W, H), np.uint8)), ("shape", f"[N, {H}, {W}]"))
    _bin_case(f"{tag}-2d", save("s" + ext, np.zeros((H, W), np.bool_)), ("shape (8, 16)",))
    _bin_case(f"{tag}-4d", save("s" + ext, np.zeros((N, H, W, 1), np.bool_)), ("shape",))
    _bin_case(f"{tag}-float32", save("s" + ext, _GOOD_U8.astype(np.float32)), ("dtype float32",))
    _bin_case(f"{tag}-int16", save("s" + ext, _GOOD_U8.astype(np.int16)), ("dtype int16",))
    _bin_case(f"{tag}-structured", save("s" + ext, np.zeros((N, H, W), [("a", "u1")])), ("dtype",))
    _bin_case(f"{tag}-value-2", save("s" + ext, _TWOS), ("value 2", "0/1"), readers=("read_binary_array",))
    _bin_case(f"{tag}-value-3-in-range", save("s" + ext, _THREES), ("value 3",), readers=("read_binary_array",),
              start=1, stop=3)
    _bin_case(f"{tag}-range-past-end", save("s" + ext, _GOOD_U8), ("[1, 9)", f"{N} frames"),
              readers=("read_binary_array",), start=1, stop=9)
    _bin_case(f"{tag}-empty", lambda tmp, ext=ext: _write_bytes(tmp / ("e" + ext), b""), ("empty", "0 bytes"))
    _bin_case(f"{tag}-garbage", lambda tmp, ext=ext: _write_bytes(tmp / ("g" + ext), bytes(range(256)) * 3),
              ("not a",))
    _bin_case(f"{tag}-missing", lambda tmp, ext=ext: tmp / ("missing" + ext), ("not found",))
    _bin_case(f"{tag}-pickled-object-array", save("o" + ext, np.array([[[1, "a"]]], dtype=object)),
              ("object (pickled)",))

_bin_case("npy-truncated-data", lambda tmp: _write_bytes(tmp / "t.npy", _good_npy_bytes(_GOOD_U8, tmp)[:-7]),
          ("not a readable",))
_bin_case("npy-truncated-header", lambda tmp: _write_bytes(tmp / "t.npy", _good_npy_bytes(_GOOD_U8, tmp)[:20]),
          ("not a readable",))
_bin_case("npy-magic-then-garbage", lambda tmp: _write_bytes(tmp / "m.npy", b"\x93NUMPY\x01\x00" + b"\xff" * 100),
          ("not a readable",))
_bin_case("npy-bad-header-dict", lambda tmp: _write_bytes(
    tmp / "h.npy", b"\x93NUMPY\x01\x00\x76\x00" + b"{'descr': 'zz', 'fortran_order': False, 'shape': (3,), }"
    .ljust(117) + b"\n"), ("not a readable",))
_bin_case("npy-raw-pickle", lambda tmp: _write_bytes(tmp / "p.npy", pickle.dumps(_GOOD_U8)), ("not a .npy file",))
_bin_case("npy-is-a-zip", lambda tmp: _write_bytes(tmp / "z.npy", _good_npz_bytes(tmp, spikes=_GOOD_U8)),
          ("name it .npz",))
_bin_case("npz-is-a-npy", lambda tmp: _write_bytes(tmp / "z.npz", _good_npy_bytes(_GOOD_U8, tmp)),
          ("not an .npz",))
_bin_case("npz-truncated", lambda tmp: _write_bytes(
    tmp / "t.npz", (lambda b: b[: len(b) // 2])(_good_npz_bytes(tmp, spikes=_GOOD_U8))), ("not a readable",))


def _corrupt_npz(tmp: Path) -> Path:
    data = bytearray(_good_npz_bytes(tmp, spikes=np.random.default_rng(1).random((N, H, W)) < 0.5))
    start = data.index(b"spikes.npy") + len(b"spikes.npy") + 30
    for i in range(start, start + 40):
        data[i] ^= 0x5A
    return _write_bytes(tmp / "c.npz", bytes(data))


def _zip_with(name: str, member: str, payload: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        with zipfile.ZipFile(tmp / name, "w") as zf:
            zf.writestr(member, payload)
        return tmp / name
    return make


_bin_case("npz-corrupt-deflate", _corrupt_npz, ("not a readable",))
_bin_case("npz-several-no-spikes-key", _npz("k.npz", a=_GOOD_U8, b=_GOOD_U8), ("['a', 'b']", "'spikes'"))
_bin_case("npz-no-arrays", _zip_with("n.npz", "readme.txt", b"hi"), ("is not a .npy array",))
_bin_case("npz-member-not-npy", _zip_with("m.npz", "spikes.npy", b"not an array"), ("'spikes'", "not a .npy"))
_bin_case("npz-empty-archive", lambda tmp: (zipfile.ZipFile(tmp / "e.npz", "w").close(), tmp / "e.npz")[1],
          ("holds arrays []",))
_bin_case("directory", lambda tmp: (tmp / "d.npy").mkdir() or tmp / "d.npy", ("not found", "directory"))


# ------------------------------------------------------------------------------------------ events
def _ev_case(id: str, make: Callable[[Path], Path], fragments: tuple[str, ...]):
    def build(tmp: Path):
        path = make(tmp)
        return path, lambda: read_events(path, H, W)
    CASES.append(Case(f"events-{id}", build, fragments))


def _good_events(n: int = 6, cols: int = 3) -> np.ndarray:
    ev = np.zeros((n, cols), np.float64)
    ev[:, 0] = np.arange(n) * 0.5
    ev[:, 1] = np.arange(n) % H
    ev[:, 2] = (3 * np.arange(n)) % W
    if cols == 4:
        ev[:, 3] = 1
    return ev


def _with(row: int, col: int, value, cols: int = 3) -> np.ndarray:
    ev = _good_events(cols=cols)
    ev[row, col] = value
    return ev


def _structured(fields: list[tuple[str, str]], n: int = 4, **values) -> np.ndarray:
    arr = np.zeros(n, fields)
    for name, _ in fields:
        arr[name] = values.get(name, np.arange(n) if name != "t" else np.arange(n) * 0.25)
    return arr


_EVENT_BAD = {
    "nan-time": (_with(2, 0, np.nan), ("event 2", "NaN or infinite")),
    "inf-time": (_with(3, 0, np.inf), ("event 3", "NaN or infinite")),
    "minus-inf-time": (_with(0, 0, -np.inf), ("event 0", "NaN or infinite")),
    "unsorted": (_with(4, 0, 0.1), ("not sorted", "event 4", "sort")),
    "y-negative": (_with(1, 1, -1), ("y = -1", f"outside [0, {H})")),
    "y-too-big": (_with(1, 1, H), (f"y = {H}", f"outside [0, {H})")),
    "x-negative": (_with(5, 2, -3), ("x = -3", f"outside [0, {W})")),
    "x-too-big": (_with(5, 2, W), (f"x = {W}", f"outside [0, {W})")),
    "x-huge": (_with(0, 2, 1e30), ("outside",)),
    "y-non-integral": (_with(2, 1, 1.5), ("non-integral y", "1.5")),
    "x-nan": (_with(2, 2, np.nan), ("non-integral x",)),
    "p-nan": (_with(2, 3, np.nan, cols=4), ("polarity",)),
    "two-columns": (_good_events()[:, :2], ("shape (6, 2)", "[N, 3] or [N, 4]")),
    "five-columns": (np.zeros((6, 5)), ("shape (6, 5)",)),
    "one-d": (np.zeros(6), ("shape (6,)",)),
    "three-d": (np.zeros((2, 6, 3)), ("shape (2, 6, 3)",)),
    "string-dtype": (_good_events().astype(str), ("dtype <U",)),
    "bool-dtype": (np.ones((6, 3), np.bool_), ("dtype bool",)),
    "complex-dtype": (_good_events().astype(np.complex128), ("dtype complex128",)),
    "int-y-huge-unsigned": (np.array([[0, 2**63 + 5, 0]], np.uint64), ("outside",)),
    "structured-missing-x": (_structured([("t", "f8"), ("y", "i2")]), ("lack fields ['x']",)),
    "structured-missing-t": (_structured([("y", "i2"), ("x", "i2"), ("p", "i1")]), ("lack fields ['t']",)),
    "structured-string-t": (_structured([("t", "U8"), ("y", "i2"), ("x", "i2")], t=["0", "1", "2", "3"]),
                            ("field 't'",)),
    "structured-2d": (np.zeros((2, 3), [("t", "f8"), ("y", "i2"), ("x", "i2")]), ("1-D",)),
    "structured-subarray-t": (np.zeros(3, [("t", "f8", (2,)), ("y", "i2"), ("x", "i2")]), ("field 't'",)),
    "structured-y-out-of-range": (_structured([("t", "f8"), ("y", "i4"), ("x", "i4")], y=[0, 1, H + 4, 2]),
                                  (f"y = {H + 4}",)),
    "structured-unsorted": (_structured([("t", "f4"), ("y", "u1"), ("x", "u1")], t=[0.0, 2.0, 1.0, 3.0]),
                            ("not sorted",)),
}
for key, (arr, frags) in _EVENT_BAD.items():
    _ev_case(f"npy-{key}", _npy("ev.npy", arr), frags)
    _ev_case(f"npz-{key}", _npz("ev.npz", events=arr), frags)

_ev_case("npy-empty-file", lambda tmp: _write_bytes(tmp / "ev.npy", b""), ("empty",))
_ev_case("npz-empty-file", lambda tmp: _write_bytes(tmp / "ev.npz", b""), ("empty",))
_ev_case("npy-garbage", lambda tmp: _write_bytes(tmp / "ev.npy", b"t,y,x\n0,1,2\n"), ("not a .npy",))
_ev_case("npz-garbage", lambda tmp: _write_bytes(tmp / "ev.npz", b"PK\x03\x04" + b"\x00" * 50), ("not a readable",))
_ev_case("npy-pickled-object", _npy("ev.npy", np.array([[0.0, 1, None]], dtype=object)), ("object (pickled)",))
_ev_case("npz-pickled-object", _npz("ev.npz", events=np.array([[0.0, 1, None]], dtype=object)),
         ("object (pickled)",))
_ev_case("npz-several-no-events-key", _npz("ev.npz", a=_good_events(), b=_good_events()), ("'events'",))
_ev_case("missing", lambda tmp: tmp / "nope.npz", ("not found",))


# --------------------------------------------------------------------------------------- meta.json
META_DAT_STREAM = dict(version=1, format="dat", layout="stream", height=H, width=W, rate_hz=20000.0,
                       flipud=True, start_s=0.0, stream_file="stream.dat")
META_BINARY_PER_FRAME = dict(format="npy-binary", layout="per-frame", height=H, width=W, rate_hz=40000.0,
                             file_start_s={"000000": 0.0, "000001": 0.01})
META_EVENTS_STREAM = dict(format="npz-events", layout="stream", height=H, width=W, rate_hz=20000.0,
                          stream_file="events.npz")


def _meta_case(id: str, text: str | bytes | None, fragments: tuple[str, ...]):
    def build(tmp: Path):
        spike = tmp / "spike"
        spike.mkdir()
        path = spike / "meta.json"
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text)
        return path, lambda: read_spike_meta(spike)
    CASES.append(Case(f"meta-{id}", build, fragments))


def _meta(base: dict, drop: tuple[str, ...] = (), **over) -> str:
    record = {k: v for k, v in base.items() if k not in drop}
    record.update(over)
    return json.dumps(record)


for field in ("format", "layout", "height", "width", "rate_hz"):
    _meta_case(f"missing-{field}", _meta(META_DAT_STREAM, drop=(field,)), (field, "Field required"))
_meta_case("missing-start_s-binary-stream", _meta(META_DAT_STREAM, drop=("start_s",)), ("start_s",))
_meta_case("missing-stream_file", _meta(META_EVENTS_STREAM, drop=("stream_file",)), ("stream_file",))
_meta_case("missing-file_start_s-binary-per-frame", _meta(META_BINARY_PER_FRAME, drop=("file_start_s",)),
           ("file_start_s",))
_meta_case("empty-file_start_s-binary-per-frame", _meta(META_BINARY_PER_FRAME, file_start_s={}), ("file_start_s",))
_meta_case("unknown-field", _meta(META_DAT_STREAM, exposure_s=0.01), ("exposure_s", "Extra inputs"))
_meta_case("height-string", _meta(META_DAT_STREAM, height="8"), ("height", "valid integer"))
_meta_case("height-float", _meta(META_DAT_STREAM, height=8.0), ("height", "valid integer"))
_meta_case("height-bool", _meta(META_DAT_STREAM, height=True), ("height",))
_meta_case("height-negative", _meta(META_DAT_STREAM, height=-8), ("height", "greater than 0"))
_meta_case("width-zero", _meta(META_DAT_STREAM, width=0), ("width", "greater than 0"))
_meta_case("rate-string", _meta(META_DAT_STREAM, rate_hz="20kHz"), ("rate_hz", "valid number"))
_meta_case("rate-negative", _meta(META_DAT_STREAM, rate_hz=-20000.0), ("rate_hz", "greater than 0"))
_meta_case("rate-zero", _meta(META_DAT_STREAM, rate_hz=0), ("rate_hz",))
_meta_case("rate-nan", _meta(META_DAT_STREAM, rate_hz=float("nan")), ("rate_hz",))
_meta_case("rate-infinite", _meta(META_DAT_STREAM, rate_hz=float("inf")), ("rate_hz", "finite"))
_meta_case("start-nan", _meta(META_DAT_STREAM, start_s=float("nan")), ("start_s", "finite"))
_meta_case("file-start-nan", _meta(META_BINARY_PER_FRAME, file_start_s={"000000": float("nan")}),
           ("file_start_s",))
_meta_case("file-start-list", _meta(META_BINARY_PER_FRAME, file_start_s=[0.0, 0.01]), ("file_start_s",))
_meta_case("flipud-string", _meta(META_DAT_STREAM, flipud="yes"), ("flipud",))
_meta_case("flipud-int", _meta(META_DAT_STREAM, flipud=1), ("flipud",))
_meta_case("format-unknown", _meta(META_DAT_STREAM, format="hdf5"), ("format",))
_meta_case("layout-unknown", _meta(META_DAT_STREAM, layout="folder"), ("layout",))
# version 2 fields: axes (binary arrays), head_columns (.dat)
META_V2_BINARY = dict(META_BINARY_PER_FRAME, version=2)
_meta_case("axes-unknown", _meta(META_V2_BINARY, axes="TWH"), ("axes", "'NHW' or 'HWN'"))
_meta_case("axes-lowercase", _meta(META_V2_BINARY, axes="hwn"), ("axes",))
_meta_case("axes-on-dat", _meta(META_DAT_STREAM, version=2, axes="HWN"), ("'axes'", "binary array", "remove it"))
_meta_case("axes-on-events", _meta(META_EVENTS_STREAM, version=2, axes="NHW"), ("'axes'", "npz-events"))
_meta_case("axes-version-1", _meta(META_BINARY_PER_FRAME, version=1, axes="HWN"), ("'axes' needs version 2",))
_meta_case("head-columns-zero", _meta(META_DAT_STREAM, version=2, head_columns=0), ("head_columns", "greater than 0"))
_meta_case("head-columns-string", _meta(META_DAT_STREAM, version=2, head_columns="16"),
           ("head_columns", "valid integer"))
_meta_case("head-columns-on-npy", _meta(META_V2_BINARY, head_columns=16), ("'head_columns'", "format 'dat'"))
_meta_case("head-columns-not-whole-bytes", _meta(META_DAT_STREAM, version=2, height=1, width=8, head_columns=3),
           ("height*(width + head_columns) = 11", "multiple of 8"))
_meta_case("head-columns-version-1", _meta(META_DAT_STREAM, head_columns=16), ("'head_columns' needs version 2",))
_meta_case("version-4", _meta(META_DAT_STREAM, version=4), ("version",))
_meta_case("rgb-homography-version-2", _meta(META_DAT_STREAM, version=2, rgb_homography=[[2, 0, 0], [0, 2, 0], [0, 0, 1]]),
           ("'rgb_homography' needs version 3",))
_meta_case("rgb-homography-mirror", _meta(META_DAT_STREAM, version=3, rgb_homography=[[-2, 0, 0], [0, 2, 0], [0, 0, 1]]),
           ("rgb_homography", "orientation"))
_meta_case("rgb-homography-2x3", _meta(META_DAT_STREAM, version=3, rgb_homography=[[2, 0, 0], [0, 2, 0]]),
           ("rgb_homography", "3 rows of 3"))
_meta_case("version-bool", _meta(META_DAT_STREAM, version=True), ("version",))
_meta_case("dat-hw-not-multiple-of-8", _meta(META_DAT_STREAM, height=5, width=5), ("multiple of 8",))
_meta_case("stream-with-file_start_s", _meta(META_DAT_STREAM, file_start_s={"000000": 0.0}), ("file_start_s",))
_meta_case("per-frame-with-stream_file", _meta(META_BINARY_PER_FRAME, stream_file="s.npy"), ("stream_file",))
_meta_case("stream_file-escapes", _meta(META_DAT_STREAM, stream_file="../other/stream.dat"), ("stream_file",))
_meta_case("stream_file-absolute", _meta(META_DAT_STREAM, stream_file="/data/stream.dat"), ("stream_file",))
_meta_case("stream_file-empty", _meta(META_DAT_STREAM, stream_file=""), ("stream_file",))
_meta_case("stream_file-number", _meta(META_DAT_STREAM, stream_file=7), ("stream_file",))
_meta_case("invalid-json", '{"format": "dat", "height": 8,,}', ("not valid JSON",))
_meta_case("truncated-json", _meta(META_DAT_STREAM)[:-9], ("not valid JSON",))
_meta_case("empty-file", "", ("not valid JSON",))
_meta_case("json-list", json.dumps([META_DAT_STREAM]), ("JSON object", "list"))
_meta_case("json-string", json.dumps("dat"), ("JSON object",))
_meta_case("json-null", "null", ("JSON object",))
_meta_case("duplicate-key", _meta(META_DAT_STREAM)[:-1] + ', "height": 16}', ("'height'", "more than once"))
_meta_case("not-utf8", b'{"format": "\xff\xfe"}', ("UTF-8",))
_meta_case("huge-int", '{"height": ' + "9" * 5000 + "}", ("not valid JSON",))
_meta_case("missing-file", None, ("not found", "spike/meta.json"))
