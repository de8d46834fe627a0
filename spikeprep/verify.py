"""``spikeprep verify DATA_ROOT``: a store checked frame by frame against its manifest (an fsck).

For every kept manifest row: the voxel row is read whole through ``ChunkReader`` (every chunk's crc32c
checked, a missing shard or chunk reported) and its sha256 compared with the row's ``vox_checksum``; the
blur and sharp frames of ``rgb.zarr`` are read whole the same way. An unpaired row (``paired`` False: no
sharp frame) has its voxels and blur frame checked the same way, and its row of the ``sharp`` array must
hold nothing (no shard: ingest writes none for it), nor may the store hold a sharp PNG for it. Per sequence, the manifest's checksums
are compared with ``dataset.json``'s sequence checksum, every manifest sequence must be in
``dataset.json``, and the coordinates of both zarr groups (``frame_idx``, ``t0``, ``t1``: what an xarray user
selects by) must equal the manifest's rows with voxels, row for row. Nothing is written into the store; the report lists every problem, and the command exits
1 when there is one.
"""
from __future__ import annotations

import time
from pathlib import Path

from schemas.manifest import STATUS_OK, ManifestRow
from schemas.store import FRAME_COORDS, RGB_ARRAYS, RGB_DIRNAME, VOX_ARRAY, VOX_DIRNAME
from schemas.verify import VerifyProblem, VerifyReport
from spikeprep.errors import InputError, SampleError
from spikeprep.store import (ChunkReader, counts_checksum, read_frame, read_manifest_rows, read_store_info,
                             sequence_checksum, store_lock)


def coordinates_problem(group: Path, stored: list[ManifestRow]) -> str | None:
    """Why the ``frame_idx`` / ``t0`` / ``t1`` coordinates of ``group`` differ from ``stored`` (the sequence's
    manifest rows with voxels, in ``vox_index`` order), or None. Read through zarr, crc32c checked (a chunk
    deleted reads as zeros, which the comparison catches)."""
    import zarr

    n_rows = len(stored)
    if any(r.vox_index != n for n, r in enumerate(stored)):
        return f"the manifest's vox_index values are not the rows 0..{n_rows - 1}"
    for name in FRAME_COORDS:
        try:
            values = zarr.open_array(str(group / name), mode="r")[...].tolist()
        except (OSError, ValueError, KeyError, TypeError) as err:  # missing, bad metadata, checksum mismatch
            return f"coordinate {name} unreadable ({type(err).__name__}: {str(err)[:160]})"
        expected = [getattr(r, name) for r in stored]
        if values != expected:
            first = next((n for n, (a, b) in enumerate(zip(values, expected)) if a != b), min(len(values), n_rows))
            return (f"coordinate {name} ({len(values)} rows) disagrees with the manifest's {n_rows} stored rows "
                    f"from row {first} on")
    return None


def unpaired_sharp_problem(where: Path, row: ManifestRow) -> tuple[str, str] | None:
    """``(path, problem)`` when an unpaired frame has a sharp frame in the store after all (a shard in the
    ``sharp`` array's row, or a sharp PNG): the manifest and the store disagree on what is ground truth."""
    png = where / "sharp" / f"{row.frame_idx:06d}.png"
    if png.exists():
        return str(png), "the manifest says unpaired (no sharp frame) but the store holds a sharp PNG"
    try:
        reader = ChunkReader(where / RGB_DIRNAME / "sharp")
    except (InputError, OSError, ValueError) as err:
        return str(where / RGB_DIRNAME / "sharp"), f"unreadable ({str(err)[:160]})"
    if reader.fast and Path(reader.shard_path(row.vox_index)).exists():
        return (reader.shard_path(row.vox_index), f"the manifest says unpaired but row {row.vox_index} of "
                "the sharp array holds data")
    return None


def verify_store(root: str | Path, progress: bool = False) -> VerifyReport:
    """Check every stored frame of the store at ``root``; ``InputError`` when it is not a readable store, or
    while a command writes it (verify holds the store's read lock: ``store_lock``; a read-only store is fine)."""
    with store_lock(root, "verify", shared=True):
        return _verify_store(root, progress)


def _verify_store(root: str | Path, progress: bool) -> VerifyReport:
    from tqdm import tqdm

    t0 = time.perf_counter()
    root = Path(root)
    info = read_store_info(root)
    rows = read_manifest_rows(root)
    problems: list[VerifyProblem] = []
    by_seq: dict[tuple[str, str], list[ManifestRow]] = {}
    for r in rows:
        by_seq.setdefault((r.split, r.seq), []).append(r)

    for (split, seq), seq_rows in by_seq.items():
        record = info.sequences.get(f"{split}/{seq}")
        if record is None:
            problems.append(VerifyProblem(split=split, seq=seq, frame_idx=None, path=str(root / "dataset.json"),
                                          problem="sequence in the manifest but not in dataset.json"))
            continue
        if sequence_checksum([r.vox_checksum for r in seq_rows]) != record.checksum:
            problems.append(VerifyProblem(split=split, seq=seq, frame_idx=None, path=str(root / "manifest.parquet"),
                                          problem="the manifest's voxel checksums disagree with dataset.json"))
        stored = sorted((r for r in seq_rows if r.vox_index is not None), key=lambda r: r.vox_index)
        groups = [root / split / seq / VOX_DIRNAME] + ([root / split / seq / RGB_DIRNAME] if stored else [])
        for group in groups:
            problem = coordinates_problem(group, stored)
            if problem:
                problems.append(VerifyProblem(split=split, seq=seq, frame_idx=None, path=str(group), problem=problem))
    kept = [r for r in rows if r.status == STATUS_OK and r.vox_index is not None
            and f"{r.split}/{r.seq}" in info.sequences]
    for r in tqdm(kept, desc="verify", unit="frame", disable=not progress):
        where = root / r.split / r.seq
        checks = [(where / VOX_DIRNAME / VOX_ARRAY, True)] + [(where / RGB_DIRNAME / kind, False)
                                                              for kind in RGB_ARRAYS if r.paired or kind != "sharp"]
        if not r.paired:
            problem = unpaired_sharp_problem(where, r)
            if problem:
                problems.append(VerifyProblem(split=r.split, seq=r.seq, frame_idx=r.frame_idx,
                                              path=problem[0], problem=problem[1]))
        for path, is_vox in checks:
            try:
                data = read_frame(path, r.vox_index)
            except (SampleError, OSError, ValueError) as err:
                problems.append(VerifyProblem(split=r.split, seq=r.seq, frame_idx=r.frame_idx,
                                              path=str(path), problem=str(err).removeprefix(f"{path}: ")))
                continue
            if is_vox and counts_checksum(data) != r.vox_checksum:
                problems.append(VerifyProblem(split=r.split, seq=r.seq, frame_idx=r.frame_idx,
                                              path=str(path), problem=f"voxel row {r.vox_index} differs from "
                                              "the manifest's vox_checksum"))
    return VerifyReport(store=str(root.resolve()), sequences=len(by_seq), frames=len(kept),
                        unpaired=sum(not r.paired for r in kept), problems=problems,
                        seconds=time.perf_counter() - t0)
