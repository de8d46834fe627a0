"""The store under ``DATA_ROOT`` (DESIGN section 5): Zarr voxel arrays, the manifest, ``dataset.json``.

Voxel counts of a sequence live in the group ``{split}/{seq}/spike_vox.zarr``, array ``counts`` (and its
decoded blur/sharp frames in the group ``{split}/{seq}/rgb.zarr``, arrays ``blur`` and ``sharp``, uint8
``[N, 3, H, W]``, chunks ``(1, 3, 128, 128)``): shape ``[N, K, Hs, Ws]`` (frame, time bin, spike row, spike
column), uint8 or uint16, at the spike sensor's native resolution. Chunks are ``(1, K, 64, 64)`` so a random
crop reads only the tiles under it; chunks are grouped into one shard per frame so a sequence is a handful
of files, not thousands. Every array carries zarr v3 ``dimension_names`` and CF-style attributes, and each
group holds the coordinates ``frame_idx``, ``t0``, ``t1`` of its frame axis (the kept frames only; row n is
the manifest's ``vox_index`` n) and, in ``spike_vox.zarr``, the ``bin_edge`` of the K bins, with its metadata
consolidated, so ``xarray.open_zarr`` opens either group as a Dataset. Every chunk carries a crc32c of its
compressed bytes (zarr's ``crc32c`` codec after blosc) and every chunk is stored, all-zero ones too, so a
flipped bit is a checksum error and a missing shard or chunk is damage, never a frame of zeros (the one
exception: the ``sharp`` row of an unpaired frame, manifest ``paired`` False, holds no shard at all): both are
refused by ``ChunkReader`` (the Dataset drops and counts such clips), and ``spikeprep verify`` checks a
whole store against the manifest's per-frame ``vox_checksum`` (and the coordinates against its rows). Every
file is written atomically (temp file + rename: ``schemas.atomic``, re-exported here) and ``dataset.json``
last, so a store without it is incomplete whatever else it holds.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from pydantic import ValidationError
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.errors import ZarrUserWarning

from schemas.atomic import atomic_write_bytes  # also importable from here, as before
from schemas.manifest import (MANIFEST_FILENAME, MANIFEST_SCHEMA, ManifestRow, ManifestSchemaError,
                              validate_manifest_table)
from schemas.store import (BIN_EDGE, COORD_ATTRS, COUNTS_ATTRS, DATASET_FILENAME, FRAME_COORDS, FRAME_DIM, RGB_ARRAYS, RGB_ATTRS,
                           RGB_AXES, RGB_GROUP_ATTRS, STORE_VERSION, VOX_ARRAY, VOX_AXES, VOX_GROUP_ATTRS, StoreInfo)
from schemas.validation import describe_validation_error
from spikeprep.errors import InputError, SampleError

log = logging.getLogger("spikeprep.store")

VOX_TILE = 64  # spike pixels per chunk side
RGB_TILE = 128  # RGB pixels per chunk side of the decoded frames
_MAX_U64 = np.uint64(2**64 - 1)  # shard index entry of a chunk that is not stored


def create_vox_array(path: Path, n_frames: int, num_bins: int, height: int, width: int,
                     dtype: np.dtype, attributes: dict | None = None) -> zarr.Array:
    """Create an empty voxel array ``[n_frames, K, Hs, Ws]`` (dimensions ``VOX_AXES``) chunked for crop reads."""
    tile_h, tile_w = min(VOX_TILE, height), min(VOX_TILE, width)
    shard = (1, num_bins, -(-height // tile_h) * tile_h, -(-width // tile_w) * tile_w)
    return zarr.create_array(
        store=str(path), shape=(n_frames, num_bins, height, width), dtype=dtype,
        chunks=(1, num_bins, tile_h, tile_w), shards=shard, fill_value=0,
        compressors=(BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()),
        dimension_names=VOX_AXES, attributes={**COUNTS_ATTRS, **(attributes or {})}, overwrite=True,
        config={"write_empty_chunks": True})


def create_vox_group(path: Path, n_frames: int, num_bins: int, height: int, width: int, dtype: np.dtype,
                     attributes: dict | None = None) -> zarr.Array:
    """Create ``spike_vox.zarr``: a group (``attributes`` on it) holding the empty ``counts`` array; its
    coordinates follow once the kept frames are known (``write_frame_coordinates``)."""
    zarr.open_group(str(path), mode="w", attributes={**VOX_GROUP_ATTRS, **(attributes or {})})
    return create_vox_array(Path(path) / VOX_ARRAY, n_frames, num_bins, height, width, dtype)


def create_rgb_arrays(path: Path, n_frames: int, height: int, width: int,
                      attributes: dict | None = None) -> dict[str, zarr.Array]:
    """Create the group of decoded frames: arrays ``blur`` and ``sharp``, uint8 ``[n, 3, H, W]`` (RGB,
    dimensions ``RGB_AXES``).

    Chunks ``(1, 3, 128, 128)`` in one shard per frame, like the voxels, so a crop reads its tiles only.
    """
    group = zarr.open_group(str(path), mode="w", attributes={**RGB_GROUP_ATTRS, **(attributes or {})})
    tile_h, tile_w = min(RGB_TILE, height), min(RGB_TILE, width)
    shard = (1, 3, -(-height // tile_h) * tile_h, -(-width // tile_w) * tile_w)
    return {kind: group.create_array(kind, shape=(n_frames, 3, height, width), dtype=np.uint8,
                                     chunks=(1, 3, tile_h, tile_w), shards=shard, fill_value=0,
                                     compressors=(BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle"),
                                                  Crc32cCodec()),
                                     dimension_names=RGB_AXES, attributes=RGB_ATTRS[kind],
                                     config={"write_empty_chunks": True})
            for kind in RGB_ARRAYS}


def write_frame_coordinates(path: Path, frame_idx: np.ndarray, t0: np.ndarray, t1: np.ndarray,
                            num_bins: int | None = None) -> None:
    """Write the coordinates of group ``path`` (``spike_vox.zarr`` or ``rgb.zarr``), once its arrays hold
    their final rows: ``frame_idx``, ``t0``, ``t1`` along ``frame`` (the kept frames, one per row) and, with
    ``num_bins``, ``bin_edge`` (``K + 1`` fractions of the window); then consolidate its metadata, so
    ``xarray.open_zarr`` reads one file to open it. Checksummed like every other chunk of the store."""
    group = zarr.open_group(str(path), mode="r+")
    values = {"frame_idx": np.asarray(frame_idx, np.int64), "t0": np.asarray(t0, np.float64),
              "t1": np.asarray(t1, np.float64)}
    dims = {name: (FRAME_DIM,) for name in FRAME_COORDS}
    if num_bins is not None:
        values[BIN_EDGE] = np.arange(num_bins + 1, dtype=np.float64) / num_bins
        dims[BIN_EDGE] = (BIN_EDGE,)
    for name, data in values.items():
        array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(max(len(data), 1),),
                                   fill_value=0, compressors=(Crc32cCodec(),), dimension_names=dims[name],
                                   attributes=COORD_ATTRS[name], config={"write_empty_chunks": True})
        array[...] = data
    with warnings.catch_warnings():
        # zarr says consolidated metadata is not (yet) in the v3 spec: it is an optional extra
        # ("must_understand": false) that readers without it ignore; xarray uses it and warns without it.
        warnings.simplefilter("ignore", ZarrUserWarning)
        zarr.consolidate_metadata(str(path))


def open_vox(path: Path) -> zarr.Array:
    """Open a voxel (or frame) array read-only (cheap: reads only its metadata)."""
    try:
        return zarr.open_array(str(path), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot open the voxel store ({err})",
                         fix="re-run `spikeprep ingest` to rebuild it") from None


def sequence_checksum(vox_checksums: list[str | None]) -> str:
    """sha256 over a sequence's per-frame voxel checksums in manifest order (``-`` for a frame without voxels)."""
    return hashlib.sha256("".join(c or "-" for c in vox_checksums).encode()).hexdigest()


def counts_checksum(counts: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of one frame's stored counts."""
    h = hashlib.sha256(f"{counts.dtype.str}{counts.shape}".encode())
    h.update(np.ascontiguousarray(counts).tobytes())
    return h.hexdigest()


# ---- one writer, or any number of readers, at a time -----------------------------------------------------
LOCK_FILENAME = ".spikeprep.lock"   # hidden, empty; held with flock: exclusive by a writer, shared by readers

# Commands that only read a store, and so work on a read-only one (README, "A store others are using").
READ_ONLY_COMMANDS = ("verify", "stats", "view", "baselines --out FILE", "test --store", "train")


def store_read_only_error(root: Path, command: str, err: OSError) -> InputError:
    """The error of a command that writes the store when the store cannot be written (read-only mount, no
    write permission)."""
    return InputError(root, f"the store is read-only ({err.strerror}); {command} writes into it",
                      fix=f"run {command} on a writable copy of the store (cp -a), or make it writable; "
                      f"these commands only read a store and work on a read-only one: {', '.join(READ_ONLY_COMMANDS)}")


def _lock_holders(fd: int) -> tuple[str, bool]:
    """Who holds the flock on the open file ``fd`` (Linux ``/proc/locks``: pid and command line of each holder),
    e.g. ``"pid 812: spikeprep train --config my.yaml"`` (``"another process"`` where it cannot tell), and
    whether one of them holds it to write."""
    try:
        st = os.fstat(fd)
        inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process", True
    holders, writing = {}, False
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
            pid = int(fields[4])
            writing |= fields[3] == "WRITE"
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                cmd = " ".join(a.decode(errors="replace") for a in argv)
            except OSError:
                cmd = "?"
            holders[pid] = f"pid {pid}: {cmd if len(cmd) <= 120 else cmd[:117] + '...'}"
    return "; ".join(holders.values()) or "another process", writing or not holders


class StoreLock:
    """The store's lock for one command: exclusive for a writer (``ingest``, ``audit``), shared for a reader
    (``train``, ``test --store``, ``baselines``, ``verify``). Either refuses at once, naming the process in
    the way: a writer while anyone reads or writes, a reader while someone writes (a training whose store
    ingest rewrites under it would read half-written shards). The kernel drops the lock when its holder exits,
    however it exits (a killed run never leaves a stale lock), so the file itself carries no state.

    On a read-only store a writer gets ``store_read_only_error``; a reader goes on without the lock file when
    it cannot open it (nobody can write that store either). A context manager, or ``acquire()`` /
    ``release()`` for a holder whose scope is not one block (the trainer).
    """

    def __init__(self, root: str | Path, command: str, shared: bool = False):
        self.root, self.command, self.shared = Path(root), command, shared
        self.fd: int | None = None

    def _open(self) -> int | None:
        path = self.root / LOCK_FILENAME
        if self.shared:
            try:
                return os.open(path, os.O_RDONLY)
            except FileNotFoundError:        # a store ingest wrote has one; a folder that is no store gets none
                if not (self.root / DATASET_FILENAME).is_file():
                    return None
            except OSError:                  # unreadable lock file: reading needs no lock nobody can take
                return None
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            if self.shared:
                log.debug("%s: read-only store, read without a lock (%s)", self.root, err)
                return None
            raise store_read_only_error(self.root, self.command, err) from None

    def acquire(self) -> "StoreLock":
        fd = self._open()
        if fd is not None:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holders, writing = _lock_holders(fd)
                os.close(fd)
                if self.shared:
                    raise InputError(self.root, f"another spikeprep command is writing this store ({holders}); "
                                     f"{self.command} would read half-rewritten files",
                                     fix=f"wait for it to end, then run {self.command} again") from None
                if writing:
                    raise InputError(self.root, f"another spikeprep command is writing this store ({holders}); "
                                     f"{self.command} would mix its files with that one's",
                                     fix="wait for the other command to end, then run this one again (an ingest "
                                     "rerun resumes)") from None
                raise InputError(self.root, f"spikeprep commands are reading this store ({holders}); "
                                 f"{self.command} would rewrite files under them",
                                 fix=f"wait for them to end (a training reads its store for its whole run), then "
                                 f"run {self.command} again") from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def store_lock(root: Path, command: str, shared: bool = False) -> StoreLock:
    """The lock of the store at ``root`` for ``command`` (``StoreLock``): ``with store_lock(out, "ingest"):``
    for a writer, ``shared=True`` for a reader."""
    return StoreLock(root, command, shared)


def write_manifest(root: Path, rows: list[ManifestRow]) -> Path:
    """Write ``manifest.parquet`` atomically from its rows (the one place rows become Arrow), validated
    against the manifest schema."""
    table = validate_manifest_table(pa.Table.from_pylist([r.model_dump() for r in rows], schema=MANIFEST_SCHEMA))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return atomic_write_bytes(Path(root) / MANIFEST_FILENAME, sink.getvalue().to_pybytes())


def read_manifest(root: Path) -> pa.Table:
    """Read and validate ``manifest.parquet``."""
    path = Path(root) / MANIFEST_FILENAME
    if not path.is_file():
        raise InputError(path, "manifest not found", fix="run `spikeprep ingest RAW --out DATA_ROOT` first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:      # not Parquet, truncated, unreadable
        raise InputError(path, f"not a readable Parquet manifest ({err})",
                         fix="re-run `spikeprep ingest RAW --out DATA_ROOT` (a rerun rewrites it)") from None
    try:
        return validate_manifest_table(table, str(path))
    except ManifestSchemaError as err:
        raise InputError(path, str(err).removeprefix(f"{path}: ")) from None


def read_manifest_rows(root: Path) -> list[ManifestRow]:
    """``manifest.parquet`` as ``ManifestRow`` records, in file order (the one place Arrow becomes rows;
    readers that need a few columns of a large store read them with ``read_manifest``)."""
    path = Path(root) / MANIFEST_FILENAME
    rows = []
    for i, row in enumerate(read_manifest(root).to_pylist()):
        try:
            rows.append(ManifestRow.model_validate(row))
        except ValidationError as err:
            raise InputError(path, f"row {i} is not a valid manifest row ({describe_validation_error(err)})",
                             fix="re-run `spikeprep ingest RAW --out DATA_ROOT`") from None
    return rows


def write_store_info(root: Path, info: StoreInfo) -> Path:
    """Write ``dataset.json`` atomically; ingest calls it last, so its presence marks a complete store."""
    return atomic_write_bytes(Path(root) / DATASET_FILENAME, info.to_json().encode())


def read_store_info(root: Path) -> StoreInfo:
    """Read ``dataset.json``; its absence means the store is incomplete (an interrupted ingest)."""
    path = Path(root) / DATASET_FILENAME
    if not path.is_file():
        raise InputError(path, "no dataset.json: the store is missing or incomplete (interrupted ingest?)",
                         fix="run `spikeprep ingest RAW --out DATA_ROOT` (a rerun resumes)")
    try:
        text = path.read_text()
        version = json.loads(text).get("version") if text.lstrip().startswith("{") else None
    except (OSError, ValueError) as err:
        raise InputError(path, f"unreadable dataset.json ({err})", fix="re-run `spikeprep ingest`") from None
    if isinstance(version, int) and version < STORE_VERSION:
        raise InputError(path, f"store version {version}, written by an older spikeprep (this one reads version "
                         f"{STORE_VERSION}: every chunk checksummed and stored, zarr groups with named dimensions "
                         "and coordinates that xarray opens)",
                         fix="re-run `spikeprep ingest RAW --out DATA_ROOT`: it rebuilds the store in place") from None
    try:
        return StoreInfo.model_validate_json(text)
    except ValidationError as err:
        raise InputError(path, f"invalid dataset.json: {describe_validation_error(err)}",
                         fix="re-run `spikeprep ingest`") from None


# ---- direct reads of one frame's chunks (the Dataset's and `spikeprep test`'s reader) -----------------
class ChunkReader:
    """Reads ``array[n, :, y0:y1, x0:x1]`` of one store array (``spike_vox.zarr/counts``, or the ``blur`` /
    ``sharp`` frames of ``rgb.zarr``), touching only the chunks under it.

    Opened lazily (per process). ``fast`` tells whether the direct shard path is used (the store's own
    layout) or zarr's generic path.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.array = open_vox(self.path)
        self.shape = tuple(int(n) for n in self.array.shape)
        self.dtype = np.dtype(self.array.dtype)
        self.fast = False
        try:
            self._setup_fast()
        except (AttributeError, IndexError, TypeError, ValueError) as err:  # unknown layout
            log.debug("%s: generic zarr reads (%s)", self.path, err)
            self.fast = False

    def _setup_fast(self) -> None:
        from numcodecs import Blosc
        from numcodecs import blosc as numcodecs_blosc
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation

        meta = self.array.metadata
        codecs = meta.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            raise ValueError("not one sharding codec")
        shard = codecs[0]
        inner, index = shard.codecs, shard.index_codecs
        if (len(inner) != 3 or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], BloscCodec)
                or not isinstance(inner[2], Crc32cCodec) or len(index) != 2
                or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
                or shard.index_location != ShardingCodecIndexLocation.end):
            raise ValueError("codecs other than bytes+blosc+crc32c / bytes+crc32c index at the end")
        n, k, h, w = self.shape
        shard_shape = tuple(int(s) for s in self.array.shards)
        chunk = tuple(int(c) for c in shard.chunk_shape)
        if shard_shape[:2] != (1, k) or shard_shape[2] < h or shard_shape[3] < w or chunk[:2] != (1, k):
            raise ValueError(f"shards {shard_shape} / chunks {chunk} are not one frame per shard")
        if shard_shape[2] % chunk[2] or shard_shape[3] % chunk[3]:
            raise ValueError("shard not a whole number of chunks")
        endian = getattr(inner[0], "endian", None)
        order = {None: "<", "little": "<", "big": ">"}[getattr(endian, "value", endian)]
        if index[0].endian is not None and getattr(index[0].endian, "value", index[0].endian) != "little":
            raise ValueError("big-endian shard index")
        self._item = self.dtype.newbyteorder(order) if self.dtype.itemsize > 1 else self.dtype
        self._tile = chunk[2:]
        self._grid = (shard_shape[2] // chunk[2], shard_shape[3] // chunk[3])
        self._index_bytes = 16 * self._grid[0] * self._grid[1] + 4
        self._key = meta.chunk_key_encoding.encode_chunk_key
        self._blosc = Blosc()
        # numcodecs decodes with blosc's own thread pool when called from a main thread. For ~100 KB
        # chunks that gains nothing and its spinning threads fight torch's intra-op threads and the
        # other DataLoader workers for the cores (3x slower items measured on 2 cores). zarr decodes
        # in its thread pool, where numcodecs is single-threaded already; do the same here.
        if numcodecs_blosc.use_threads is None:
            numcodecs_blosc.use_threads = False
        self.fast = True

    def shard_path(self, n: int) -> str:
        """Path of the shard file holding frame ``n`` (fast path only: one shard per frame)."""
        return str(self.path / self._key((int(n), 0, 0, 0)))

    def shard_index(self, n: int) -> np.ndarray:
        """``[grid_y, grid_x, 2]`` uint64 (offset, nbytes) of frame ``n``'s chunks (crc32c checked)."""
        path = self.shard_path(n)
        fd = os.open(path, os.O_RDONLY)
        try:
            return self._read_index(fd, path)[0]
        finally:
            os.close(fd)

    def _read_index(self, fd: int, path: str) -> tuple[np.ndarray, int]:
        size = os.fstat(fd).st_size
        if size < self._index_bytes:
            raise OSError(f"{path}: shard of {size} bytes is smaller than its index")
        raw = os.pread(fd, self._index_bytes, size - self._index_bytes)
        if len(raw) != self._index_bytes:
            raise OSError(f"{path}: short read of the shard index")
        return self._parse_index(path, raw, size), size

    def _parse_index(self, path: str, raw: bytes, size: int) -> np.ndarray:
        body, crc = raw[:-4], int.from_bytes(raw[-4:], "little")
        if google_crc32c.value(body) != crc:
            raise OSError(f"{path}: shard index checksum mismatch (damaged file)")
        idx = np.frombuffer(body, "<u8").reshape(*self._grid, 2)
        stored = idx[..., 0] != _MAX_U64
        if np.any(idx[..., 0][stored] + idx[..., 1][stored] > np.uint64(size)):
            raise OSError(f"{path}: shard index points past the end of the file")
        return idx

    def read(self, n: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """``[C, y1-y0, x1-x0]`` of frame ``n`` (the array's own grid: spike grid for counts)."""
        n_frames, k, h, w = self.shape
        if not (0 <= n < n_frames and 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise SampleError(f"{self.path}: read [{n}, :, {y0}:{y1}, {x0}:{x1}] outside shape {self.shape}")
        if not self.fast:
            return np.asarray(self.array[n, :, y0:y1, x0:x1])
        out = np.empty((k, y1 - y0, x1 - x0), self.dtype)
        path = self.shard_path(n)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # ingest stores every chunk of every row: a missing shard is damage
            raise SampleError(f"{path}: shard missing (damaged store; `spikeprep verify` lists what else is "
                              "damaged, an ingest rerun rebuilds it)") from None
        th, tw = self._tile
        tiles = [(ty, tx) for ty in range(y0 // th, (y1 - 1) // th + 1)
                 for tx in range(x0 // tw, (x1 - 1) // tw + 1)]
        try:
            idx, _ = self._read_index(fd, path)
            for ty, tx in tiles:
                offset, nbytes = (int(v) for v in idx[ty, tx])
                ys, xs = max(y0, ty * th), max(x0, tx * tw)
                ye, xe = min(y1, (ty + 1) * th), min(x1, (tx + 1) * tw)
                dst = out[:, ys - y0:ye - y0, xs - x0:xe - x0]
                if offset == _MAX_U64:
                    raise SampleError(f"{path}: chunk ({ty}, {tx}) missing from its shard (damaged store)")
                data = os.pread(fd, nbytes, offset)
                if len(data) != nbytes or nbytes < 4:
                    raise OSError(f"{path}: short read of chunk ({ty}, {tx})")
                if google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:], "little"):
                    raise OSError(f"{path}: chunk ({ty}, {tx}) checksum mismatch (damaged file)")
                tile = np.frombuffer(self._blosc.decode(data[:-4]), self._item).reshape(k, th, tw)
                dst[...] = tile[:, ys - ty * th:ye - ty * th, xs - tx * tw:xe - tx * tw]
        finally:
            os.close(fd)
        return out


def read_frame(path: str | Path, n: int) -> np.ndarray:
    """The whole row ``n`` of a store array (``[K, Hs, Ws]`` counts or ``[3, H, W]`` frames), every chunk
    checked; ``SampleError`` / ``OSError`` naming the shard when it is missing or damaged."""
    reader = ChunkReader(path)
    _, _, h, w = reader.shape
    return reader.read(int(n), 0, h, 0, w)



# ---- outputs of other commands never go inside a store -------------------------------------------------
def enclosing_store(path: str | Path) -> Path | None:
    """The store (a folder holding ``dataset.json``) that ``path`` is, or lies inside, else None. ``path`` need
    not exist; it is resolved first (symlinks and ``..`` cannot hide a store)."""
    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / DATASET_FILENAME).is_file():
            return folder
    return None


def refuse_output_in_store(path: str | Path, what: str, *, own: str | Path | None = None) -> None:
    """``InputError`` if ``path`` (a file or folder a command is about to write: ``what``, e.g. "--output")
    lies inside a store, unless it lies inside ``own``, the command's own part of its store (e.g.
    ``DATA_ROOT/baselines``). Anything else there is a file ingest did not write: the next ingest refuses
    the store."""
    root = enclosing_store(path)
    if root is None:
        return
    if own is not None and Path(path).resolve().is_relative_to(Path(own).resolve()):
        return
    where = f" (only {own} is this command's part of a store)" if own is not None else ""
    raise InputError(path, f"{what} lies inside the store {root}{where}; files written there would mix with the "
                     "store's own and the next ingest would refuse it",
                     fix=f"choose a folder outside {root} (e.g. under outputs/)")
