"""``spikeprep verify DATA_ROOT``: a store checked frame by frame against its manifest (an fsck).

For every kept manifest row: the voxel row is read whole through ``ChunkReader`` (every chunk's crc32c
checked, a missing shard or chunk reported) and its sha256 compared with the row's ``vox_checksum``; the
blur and sharp frames of ``rgb.zarr`` are read whole the same way. Per sequence, the manifest's checksums
are compared with ``dataset.json``'s sequence checksum, and every manifest sequence must be in
``dataset.json``. Nothing is written into the store; the report lists every problem, and the command exits
1 when there is one.
"""
from __future__ import annotations

import time
from pathlib import Path

from schemas.manifest import STATUS_OK
from schemas.store import RGB_DIRNAME, VOX_DIRNAME
from schemas.verify import VerifyProblem, VerifyReport
from spikeprep.errors import SampleError
from spikeprep.store import counts_checksum, read_frame, sequence_checksum, read_manifest, read_store_info


def verify_store(root: str | Path, progress: bool = False) -> VerifyReport:
    """Check every stored frame of the store at ``root``; ``InputError`` when it is not a readable store."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    root = Path(root)
    info = read_store_info(root)
    rows = read_manifest(root).select(["split", "seq", "frame_idx", "status", "vox_index", "vox_checksum"]).to_pylist()
    problems: list[VerifyProblem] = []
    by_seq: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_seq.setdefault((r["split"], r["seq"]), []).append(r)

    for (split, seq), seq_rows in by_seq.items():
        record = info.sequences.get(f"{split}/{seq}")
        if record is None:
            problems.append(VerifyProblem(split=split, seq=seq, frame_idx=None, path=str(root / "dataset.json"),
                                          problem="sequence in the manifest but not in dataset.json"))
            continue
        if sequence_checksum([r["vox_checksum"] for r in seq_rows]) != record.checksum:
            problems.append(VerifyProblem(split=split, seq=seq, frame_idx=None, path=str(root / "manifest.parquet"),
                                          problem="the manifest's voxel checksums disagree with dataset.json"))
    kept = [r for r in rows if r["status"] == STATUS_OK and r["vox_index"] is not None
            and f"{r['split']}/{r['seq']}" in info.sequences]
    for r in tqdm(kept, desc="verify", unit="frame", disable=not progress):
        where = root / r["split"] / r["seq"]
        checks = [(where / VOX_DIRNAME, True), (where / RGB_DIRNAME / "blur", False),
                  (where / RGB_DIRNAME / "sharp", False)]
        for path, is_vox in checks:
            try:
                data = read_frame(path, r["vox_index"])
            except (SampleError, OSError, ValueError) as err:
                problems.append(VerifyProblem(split=r["split"], seq=r["seq"], frame_idx=r["frame_idx"],
                                              path=str(path), problem=str(err).removeprefix(f"{path}: ")))
                continue
            if is_vox and counts_checksum(data) != r["vox_checksum"]:
                problems.append(VerifyProblem(split=r["split"], seq=r["seq"], frame_idx=r["frame_idx"],
                                              path=str(path), problem=f"voxel row {r['vox_index']} differs from "
                                              "the manifest's vox_checksum"))
    return VerifyReport(store=str(root.resolve()), sequences=len(by_seq), frames=len(kept), problems=problems,
                        seconds=time.perf_counter() - t0)
