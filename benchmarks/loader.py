"""Loader benchmark: clips per second through a DataLoader, our store (default and compact hand-over) vs
the original document's cache, and the bytes each hands over per clip.

    .venv/bin/python benchmarks/loader.py                 # synth store 720x1280 RGB, 360x640 spikes (s=2)
    .venv/bin/python benchmarks/loader.py --height 256 --width 320 --spike-scale 1 --crop 128
    .venv/bin/python benchmarks/loader.py --root DATA_ROOT --no-write   # an existing store's train split

Three designs serve the same clips (same clip index, same random crops, same collate):

* store  ``SpikeDeblurDataset`` on the spikeprep store: uint8 counts in ``spike_vox.zarr``, one shard per
         frame of (1, K, 64, 64) blosc-zstd chunks, and the decoded blur/sharp frames in ``rgb.zarr``
         ((1, 3, 128, 128) chunks); only the chunks under the crop are read, the counts normalised through
         a float32 table and replicated s x s onto the RGB grid;
* compact the same store with the trainer's compact hand-over (``from_config(compact=True)``): uint8
         frames and the stored counts at the spike grid, made the float32 items on the device by
         ``lookup_upsample`` (not timed here: that runs on the accelerator, after the transfer);
* npy    the original document's design (sections 3 and 4): the blur/sharp PNGs, decoded whole and
         cropped, and one float32 ``.npy`` of shape (K, Hs, Ws) per frame holding the already normalised
         ``(log1p(count) - MEAN) / STD``; ``np.load`` of the whole file, then the same crop and s x s
         replication.

Each is timed through ``DataLoader(batch_size=1, num_workers=--workers)`` (a seeded sampler with
replacement), --warmup batches untimed, then --batches timed; the figure is the median over --repeats
(designs rotate which goes first). Two cache states: ``warm`` (every file read once before, so the page cache holds
it) and ``cold`` (every file the sample read is dropped from the page cache right after, with
posix_fadvise(DONTNEED): a data set much larger than RAM). ``full`` items are the Dataset's items
(blur + sharp + spike_vox, or their compact forms); ``voxels`` items are spike_vox (spike_counts) alone,
to isolate the voxel storage. Host-to-device bytes per clip: the bytes of one collated batch-1 batch,
what the trainer copies to the device per clip of a step (times the batch size per step).
Bytes on disk: what each design adds to the raw PNGs both keep (store: ``spike_vox.zarr`` + ``rgb.zarr``;
npy: the ``.npy`` files). Writes the tables, the command and the machine to benchmarks/RESULTS.md under
"## Loader" (other sections are kept).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import cpu_description, load_average, write_section  # noqa: E402
from spikeprep.images import IMREAD_FLAGS  # noqa: E402
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset, collate_drop_bad  # noqa: E402
from spikeprep.store import open_vox, read_store_info  # noqa: E402

SECTION = "## Loader"


# ---- the original document's design ----------------------------------------------------------------
class NpyClipDataset(SpikeDeblurDataset):
    """The same clips, crops and images, with voxels from one float32 .npy (K, Hs, Ws) per frame."""

    def __init__(self, root, npy_root, **kwargs):
        super().__init__(root, **kwargs)
        self.npy_root = Path(npy_root)

    def npy_path(self, si: int, frame_idx: int) -> Path:
        """The cache file of sequence ``si``'s frame ``frame_idx``."""
        return self.npy_root / self.split / self.sequences[si].name / "spike_vox" / f"{frame_idx:06d}.npy"

    def _read_spike(self, si, pos, box):
        s = self.sequences[si]
        sy, sx = s.scale
        y, x, h, w = box
        out = np.empty((self.clip_len, self.num_bins, h, w), np.float32)
        ys, xs, hs, ws = y // sy, x // sx, h // sy, w // sx
        for t, f in enumerate(s.frame_idx[pos:pos + self.clip_len].tolist()):
            vox = np.load(self.npy_path(si, f))  # the whole frame, as the original loader does
            crop = vox[:, ys:ys + hs, xs:xs + ws]
            if (sy, sx) == (1, 1):
                out[t] = crop
            else:
                out[t].reshape(self.num_bins, hs, sy, ws, sx)[...] = crop[:, :, None, :, None]
        return out

    def _read_images(self, si, pos, box, dtype=np.dtype(np.float32)):
        import cv2

        if dtype != np.float32:
            raise ValueError("the npy design serves float32 frames only (the original document's items)")
        s = self.sequences[si]
        y, x, h, w = box
        images = {}
        for kind, paths in (("blur", s.blur), ("sharp", s.sharp)):
            out = np.empty((self.clip_len, 3, h, w), np.float32)
            for t, path in enumerate(paths[pos:pos + self.clip_len]):
                rgb = cv2.imread(path, IMREAD_FLAGS)[..., ::-1]  # the whole PNG, as the original does
                np.copyto(out[t], rgb[y:y + h, x:x + w].transpose(2, 0, 1))
            np.divide(out, np.float32(255.0), out=out)
            images[kind] = out
        return images

    def voxel_files(self, si: int, pos: int) -> list[str]:
        """The ``.npy`` files the clip at (sequence ``si``, position ``pos``) reads."""
        frames = self.sequences[si].frame_idx[pos:pos + self.clip_len].tolist()
        return [str(self.npy_path(si, f)) for f in frames]

    def image_files(self, si: int, pos: int) -> list[str]:
        """The blur and sharp PNGs the clip at (``si``, ``pos``) reads."""
        s = self.sequences[si]
        return list(s.blur[pos:pos + self.clip_len]) + list(s.sharp[pos:pos + self.clip_len])


class StoreClipDataset(SpikeDeblurDataset):
    """``SpikeDeblurDataset`` on the store, plus the shard files each clip reads (for ``cold`` eviction)."""

    def _shards(self, si: int, pos: int, kind: str) -> list[str]:
        reader = self._reader(si, kind)
        return [reader.shard_path(n) for n in self.sequences[si].vox_index[pos:pos + self.clip_len].tolist()]

    def voxel_files(self, si: int, pos: int) -> list[str]:
        """The ``spike_vox.zarr`` shards the clip at (sequence ``si``, position ``pos``) reads."""
        return self._shards(si, pos, "vox")

    def image_files(self, si: int, pos: int) -> list[str]:
        """The ``rgb.zarr`` blur and sharp shards the clip at (``si``, ``pos``) reads."""
        return self._shards(si, pos, "blur") + self._shards(si, pos, "sharp")


def write_npy_cache(ds: SpikeDeblurDataset, npy_root: Path) -> None:
    """The original design's cache for ``ds``'s kept frames: normalised float32 (K, Hs, Ws) per frame."""
    mean, std = ds.norm_mean, ds.norm_std
    for si, s in enumerate(ds.sequences):
        vox = open_vox(Path(s.vox_path))
        out = npy_root / ds.split / s.name / "spike_vox"
        out.mkdir(parents=True, exist_ok=True)
        for f, n in zip(s.frame_idx.tolist(), s.vox_index.tolist()):
            counts = np.asarray(vox[n])
            norm = (np.log1p(counts.astype(np.float64)) - mean) / std
            np.save(out / f"{f:06d}.npy", norm.astype(np.float32))


# ---- benchmark harness ------------------------------------------------------------------------------
def evict(paths) -> None:
    """Drop the files' pages from the OS page cache (clean pages; no root needed)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths) -> None:
    """Read the files through once so the page cache holds them."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass


class Bench(Dataset):
    """Wraps a design: ``full`` items or ``voxels`` only; ``cold`` evicts what each item read."""

    def __init__(self, ds, items: str, cold: bool):
        self.ds, self.items, self.cold = ds, items, cold

    def __len__(self):
        return len(self.ds)

    def files(self, index: int) -> list[str]:
        """The files item ``index`` reads: voxels, plus images for ``full`` items."""
        si, pos = (int(v) for v in self.ds._clips[index])
        files = self.ds.voxel_files(si, pos)
        if self.items == "full":
            files += self.ds.image_files(si, pos)
        return files

    def __getitem__(self, index):
        if self.items == "full":
            item = self.ds[index]
        else:
            si, pos = (int(v) for v in self.ds._clips[index])
            s = self.ds.sequences[si]
            y, x = self.ds._crop_origin(index, s)
            c = self.ds.crop_size
            h, w = (s.H, s.W) if c is None else (c, c)
            box = (y, x, h, w)
            if self.ds.voxels == "counts":
                item = {"spike_counts": torch.from_numpy(self.ds._read_counts(si, pos, box))}
            else:
                item = {"spike_vox": torch.from_numpy(self.ds._read_spike(si, pos, box))}
        if self.cold:
            evict(self.files(index))
        return item


def collate_voxels(batch):
    """Collate ``voxels`` items: ``{"spike_vox" or "spike_counts": [B, T, K, h, w]}``."""
    return {key: default_collate([b[key] for b in batch]) for key in batch[0]}


def batch_clips(batch: dict) -> int:
    """Clips in a collated batch (its batch axis)."""
    return batch["spike_counts" if "spike_counts" in batch else "spike_vox"].shape[0]


def handover_bytes(bench: Bench) -> int:
    """Bytes of the tensors of one collated batch-1 batch: what crosses to the device per clip."""
    collate = collate_drop_bad if bench.items == "full" else collate_voxels
    batch = collate([bench[0]])
    return sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))


def clips_per_second(bench: Bench, workers: int, warmup: int, batches: int, seed: int) -> float:
    """Clips per second through a batch-1 DataLoader over ``batches`` timed batches after ``warmup``."""
    sampler = RandomSampler(bench, replacement=True, num_samples=warmup + batches,
                            generator=torch.Generator().manual_seed(seed))
    collate = collate_drop_bad if bench.items == "full" else collate_voxels
    loader = DataLoader(bench, batch_size=1, sampler=sampler, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(seed))
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        n += batch_clips(batch)
    dt = time.perf_counter() - t0
    del it, loader
    return n / dt


def _chunk_bytes(reader, n: int, box: tuple[int, int, int, int]) -> int:
    """Shard index + stored chunks under ``box`` (y0, x0, y1, x1 in the array's grid) of frame ``n``."""
    th, tw = reader._tile
    y0, x0, y1, x1 = box
    idx = reader.shard_index(n)
    tiles = [(ty, tx) for ty in range(y0 // th, (y1 - 1) // th + 1) for tx in range(x0 // tw, (x1 - 1) // tw + 1)]
    return reader._index_bytes + sum(int(idx[t][1]) for t in tiles if int(idx[t][0]) != 2**64 - 1)


def bytes_read_per_clip(store_ds: "StoreClipDataset", npy_ds: NpyClipDataset, n: int, seed: int):
    """Mean bytes a clip reads, (voxels, images) per design, over ``n`` clips drawn like the sampler:
    store: shard indexes + chunks under the crop; npy: whole .npy files and whole PNGs."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(store_ds), (n,), generator=gen).tolist()
    store_vox = store_img = npy_vox = npy_img = 0
    for index in picks:
        si, pos = (int(v) for v in store_ds._clips[index])
        s = store_ds.sequences[si]
        y, x = store_ds._crop_origin(index, s)
        c = store_ds.crop_size
        h, w = (s.H, s.W) if c is None else (c, c)
        sy, sx = s.scale
        for n_vox in s.vox_index[pos:pos + store_ds.clip_len].tolist():
            store_vox += _chunk_bytes(store_ds._reader(si), n_vox, (y // sy, x // sx, (y + h) // sy, (x + w) // sx))
            store_img += sum(_chunk_bytes(store_ds._reader(si, kind), n_vox, (y, x, y + h, x + w))
                             for kind in ("blur", "sharp"))
        npy_vox += sum(os.path.getsize(p) for p in npy_ds.voxel_files(si, pos))
        npy_img += sum(os.path.getsize(p) for p in npy_ds.image_files(si, pos))
    return store_vox / n, store_img / n, npy_vox / n, npy_img / n


def single_process_costs(designs, n: int, all_files) -> tuple[float, float, dict]:
    """(ms to decode a clip's PNGs whole, ms to read its frames' crops from rgb.zarr, {design: ms for a
    clip's voxels}) in this process, warm cache; ``designs``: ``[(name, dataset)]``, store first."""
    import cv2

    warm(all_files)
    store_ds = designs[0][1]
    s = store_ds.sequences[0]
    paths = (s.blur + s.sharp)[:2 * store_ds.clip_len]
    t = time.perf_counter()
    for _ in range(n):
        for p in paths:
            cv2.imread(p, IMREAD_FLAGS)
    png_ms = (time.perf_counter() - t) / n * 1e3
    c = store_ds.crop_size
    box = (0, 0, *((s.H, s.W) if c is None else (c, c)))
    store_ds._read_images(0, 0, box)  # open the readers
    t = time.perf_counter()
    for _ in range(n):
        store_ds._read_images(0, 0, box)
    chunk_ms = (time.perf_counter() - t) / n * 1e3
    vox_ms = {}
    for name, ds in designs:
        bench = Bench(ds, "voxels", cold=False)
        bench[0]
        t = time.perf_counter()
        for i in range(n):
            bench[i % len(bench)]
        vox_ms[name] = (time.perf_counter() - t) / n * 1e3
    return png_ms, chunk_ms, vox_ms


def tree_bytes(paths) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) of every file under ``paths``."""
    files = size = alloc = 0
    for root in paths:
        for p in Path(root).rglob("*"):
            if p.is_file():
                st = p.stat()
                files += 1
                size += st.st_size
                alloc += st.st_blocks * 512
    return files, size, alloc


def machine_info() -> str:
    """CPU, RAM, Python and library versions and the load average, for RESULTS.md."""
    mem = ""
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    import cv2
    import zarr
    return (f"{cpu_description()}{mem}, {platform.python_implementation()} "
            f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, zarr "
            f"{zarr.__version__}, opencv {cv2.__version__}, {load_average()} at start")


def build_store(args, work: Path) -> Path:
    """``spikeprep synth`` (demo preset, the args' geometry) + ingest under ``work``; the store's root."""
    from spikeprep.ingest import IngestOptions, ingest
    from spikeprep.synth import SynthConfig, synthesize

    raw, root = work / "raw", work / "store"
    cfg = SynthConfig.from_preset("demo", height=args.height, width=args.width, spike_scale=args.spike_scale,
                                  train_seqs=args.train_seqs, val_seqs=0, frames=args.frames,
                                  exposure_ticks=args.exposure_ticks, seed=args.seed)
    t = time.perf_counter()
    synthesize(raw, cfg, workers=args.build_workers, progress=False)
    print(f"synth: {time.perf_counter() - t:.0f} s ({cfg.train_seqs} x {cfg.frames} frames at "
          f"{cfg.height}x{cfg.width}, spike scale {cfg.spike_scale})", flush=True)
    t = time.perf_counter()
    ingest(raw, root, IngestOptions(num_bins=args.bins, crop_size=args.crop or 1),
           workers=args.build_workers, log_dir=None, progress=False)
    print(f"ingest: {time.perf_counter() - t:.0f} s", flush=True)
    return root


def timing_table(results: dict, modes, designs) -> tuple[list[str], dict]:
    """The clips/s table (median per design; each store design against npy as the median of the
    per-repeat ratios) and ``{(items, cache, design): median ratio}``."""
    names = [n for n, _ in designs if n != "npy"]
    table = ["| items | page cache | " + " | ".join(f"{n} clips/s" for n in names) + " | npy clips/s | "
             + " | ".join(f"{n} / npy (median, range)" for n in names) + " |",
             "|---|---|" + "---:|" * (2 * len(names) + 1)]
    ratio_of = {}
    for items, cache in modes:
        npy = results[(items, cache, "npy")]
        rates, ratios = [], []
        for n in names:
            a = results[(items, cache, n)]
            paired = [x / y for x, y in zip(a, npy)]  # paired: the runs of a repeat are back to back
            ratio_of[(items, cache, n)] = statistics.median(paired)
            rates.append(f"{statistics.median(a):.2f}")
            ratios.append(f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})")
        table.append(f"| {items} | {cache} | {' | '.join(rates)} | {statistics.median(npy):.2f} | "
                     f"{' | '.join(ratios)} |")
    return table, ratio_of


def handover_table(designs, modes) -> list[str]:
    """Host-to-device bytes per clip (a batch-1 batch) of the default (store, npy) and compact items."""
    by_name = dict(designs)
    table = ["| items | default hand-over (store, npy: float32 on the RGB grid) | compact hand-over (uint8 "
             "frames, counts at the spike grid) | compact / default |", "|---|---:|---:|---:|"]
    for items in dict.fromkeys(i for i, _ in modes):
        a, b = (handover_bytes(Bench(by_name[n], items, cold=False)) for n in ("store", "compact"))
        table.append(f"| {items} | {a:,} B ({a / 1e6:.1f} MB) | {b:,} B ({b / 1e6:.1f} MB) | "
                     f"{b / a:.3f} (1/{a / b:.1f}) |")
    return table


def main(argv=None) -> int:
    """Build or open a store, time both designs warm and cold, print and (unless --no-write) record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: .venv/bin/python benchmarks/loader.py --workers 2")
    g = ap.add_argument_group("store (built with `spikeprep synth` + ingest unless --root)")
    g.add_argument("--root", type=Path, help="an existing store (DATA_ROOT); its train split is read")
    g.add_argument("--height", type=int, default=720, help="RGB rows (default 720)")
    g.add_argument("--width", type=int, default=1280, help="RGB columns (default 1280)")
    g.add_argument("--spike-scale", type=int, default=2, help="RGB / spike grid per axis (default 2: "
                   "spikes 360x640 for 720x1280, the Spk-GoPro geometry)")
    g.add_argument("--frames", type=int, default=24, help="frames per sequence (default 24)")
    g.add_argument("--train-seqs", type=int, default=2, help="training sequences (default 2)")
    g.add_argument("--exposure-ticks", type=int, default=96, help="spike ticks per exposure (default 96, "
                   "about the S-SDM sets' 97)")
    g.add_argument("--bins", type=int, default=32, help="K (default 32)")
    g.add_argument("--seed", type=int, default=0, help="synth and sampler seed")
    g.add_argument("--build-workers", type=int, default=2, help="processes for synth/ingest (default 2)")
    g.add_argument("--workdir", type=Path, help="where to build (default: a temp dir, removed at the end)")
    m = ap.add_argument_group("measurement")
    m.add_argument("--crop", type=int, default=256,
                   help="train crop (default 256, the original config; 0: full frames)")
    m.add_argument("--clip-len", type=int, default=5, help="T (default 5)")
    m.add_argument("--workers", type=int, default=2, help="DataLoader workers, both designs (default 2)")
    m.add_argument("--batches", type=int, default=40, help="timed batches (batch size 1) per run")
    m.add_argument("--warmup", type=int, default=8, help="untimed batches first (worker start-up)")
    m.add_argument("--repeats", type=int, default=3, help="runs per design and setting; median reported")
    m.add_argument("--modes", default="full:warm,full:cold,voxels:warm,voxels:cold",
                   help="comma list of ITEMS:CACHE, ITEMS full|voxels, CACHE warm|cold")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md",
                    help="markdown file whose '## Loader' section is (re)written")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    modes = [tuple(m.split(":")) for m in args.modes.split(",")]
    for items, cache in modes:
        if items not in ("full", "voxels") or cache not in ("warm", "cold"):
            ap.error(f"--modes: {items}:{cache} is not ITEMS:CACHE with full|voxels and warm|cold")

    machine = machine_info()
    cmd = "python benchmarks/loader.py" + ("" if argv is None and len(sys.argv) == 1 else
                                           " " + shlex.join(sys.argv[1:] if argv is None else argv))
    tmp = None
    work = args.workdir
    if work is None:
        tmp = tempfile.mkdtemp(prefix="spikeprep-loader-bench-")
        work = Path(tmp)
    try:
        root = args.root if args.root is not None else build_store(args, work)
        kw = dict(split="train", clip_len=args.clip_len, crop_size=args.crop or None, train=True,
                  seed=args.seed)
        store_ds = StoreClipDataset(root, **kw)
        compact_ds = StoreClipDataset(root, **kw, voxels="counts", images="uint8")
        npy_root = work / "npy"
        t = time.perf_counter()
        write_npy_cache(store_ds, npy_root)
        print(f"npy cache: {time.perf_counter() - t:.0f} s", flush=True)
        npy_ds = NpyClipDataset(root, npy_root, **kw)
        designs = [("store", store_ds), ("compact", compact_ds), ("npy", npy_ds)]
        info = read_store_info(root)
        seqs = store_ds.sequences
        s0 = seqs[0]
        n_frames = sum(len(s.frame_idx) for s in seqs)

        store_files = [Path(s.vox_path) for s in seqs] + [Path(s.rgb_path) for s in seqs]
        npy_files = [npy_root / "train"]
        all_files = [str(p) for d in store_files + npy_files for p in Path(d).rglob("*") if p.is_file()]
        all_files += [p for s in seqs for p in s.blur + s.sharp]

        results: dict[tuple, list[float]] = {}
        for r in range(args.repeats):
            for items, cache in modes:
                order = designs[r % len(designs):] + designs[:r % len(designs)]
                for name, ds in order:
                    if cache == "cold":
                        evict(all_files)
                    else:
                        warm(all_files)
                    rate = clips_per_second(Bench(ds, items, cache == "cold"), args.workers, args.warmup,
                                            args.batches, args.seed + r)
                    results.setdefault((items, cache, name), []).append(rate)
                    print(f"  repeat {r + 1}/{args.repeats} {items:6s} {cache} {name:7s}: "
                          f"{rate:7.2f} clips/s", flush=True)

        store_vox, store_img, npy_vox, npy_img = bytes_read_per_clip(store_ds, npy_ds, 200, args.seed)
        png_ms, chunk_ms, vox_ms = single_process_costs(designs, 10, all_files)
        h2d = handover_table(designs, modes)
        vf, vsize, valloc = tree_bytes(store_files[:len(seqs)])
        rf, rsize, ralloc = tree_bytes(store_files[len(seqs):])
        nf, nsize, nalloc = tree_bytes(npy_files)
        png_files = [p for s in seqs for p in s.blur + s.sharp]
        psize = sum(os.path.getsize(p) for p in png_files)
        total = vsize + rsize
        crop_desc = f"{args.crop}x{args.crop} crop" if args.crop else "full frames"
        head = (f"Store: {len(seqs)} training sequences, {n_frames} frames, RGB {s0.H}x{s0.W}, spikes "
                f"{s0.Hs}x{s0.Ws} (scale {s0.scale[0]}), K={info.K}, counts "
                f"{info.sequences[f'train/{s0.name}'].dtype}; "
                f"clips of T={args.clip_len}, {crop_desc}; DataLoader batch 1, {args.workers} workers, "
                f"{args.warmup} warm-up + {args.batches} timed batches, median of {args.repeats}.")
        table, ratio_of = timing_table(results, modes, designs)
        sizes = ["| data | files | bytes | allocated (du) | per frame | vs npy |",
                 "|---|---:|---:|---:|---:|---:|",
                 f"| store: spike_vox.zarr | {vf} | {vsize:,} | {valloc:,} | "
                 f"{vsize / n_frames / 1e6:.2f} MB | {vsize / nsize:.4f} (1/{nsize / vsize:.0f}) |",
                 f"| store: rgb.zarr (decoded blur + sharp) | {rf} | {rsize:,} | {ralloc:,} | "
                 f"{rsize / n_frames / 1e6:.2f} MB | |",
                 f"| **store total** | {vf + rf} | {total:,} | {valloc + ralloc:,} | "
                 f"{total / n_frames / 1e6:.2f} MB | **{total / nsize:.4f} (1/{nsize / total:.1f})** |",
                 f"| npy (float32 K x Hs x Ws) | {nf} | {nsize:,} | {nalloc:,} | "
                 f"{nsize / n_frames / 1e6:.2f} MB | 1 |",
                 f"| raw PNGs (kept by both; the store hard-links them) | {len(png_files)} | {psize:,} | | "
                 f"{psize / n_frames / 1e6:.2f} MB | |"]
        try:
            end_load = "; load average %.2f %.2f %.2f at the end" % os.getloadavg()
        except OSError:
            end_load = ""
        met = [f"{i}/{c}" for i, c in modes if ratio_of[(i, c, "store")] >= 2.0]
        missed = [f"{i}/{c} {ratio_of[(i, c, 'store')]:.2f}x" for i, c in modes
                  if ratio_of[(i, c, "store")] < 2.0]
        verdict = (f"Bytes: 1/{nsize / total:.1f} ({'met' if total * 4 <= nsize else 'NOT met'}). "
                   f"Clips/s >= 2x (store): met for {', '.join(met) or 'no setting'}; not met for "
                   f"{', '.join(missed) or 'no setting'}.")
        compact_voxels = [(c, ratio_of[(i, c, "compact")]) for i, c in modes if i == "voxels"]
        verdict_19 = ("Target (issue 19): voxels only >= 4x the npy design with the compact hand-over: "
                      + ("; ".join(f"{c} {r:.2f}x ({'met' if r >= 4 else 'NOT met'})" for c, r in compact_voxels)
                         or "voxels not measured") + ".")
        body = "\n".join([
            SECTION, "", f"Command: `{cmd}`", "", f"Machine: {machine}{end_load}.", "", head, "",
            "`full`: the Dataset's items (blur, sharp, spike_vox; the store reads the crop's chunks of "
            "rgb.zarr, the npy design decodes the PNGs whole); `voxels`: spike_vox only (isolates the "
            "voxel storage). `store`: the default hand-over (float32 on the RGB grid); `compact`: the "
            "trainer's hand-over from the same store (uint8 frames, stored counts at the spike grid; "
            "`lookup_upsample` makes them the same float32 tensors on the device, not timed here). `warm`: all files in the page cache; `cold`: each file "
            "dropped from the page cache after every read (posix_fadvise DONTNEED; a data set larger than "
            "RAM).", "", *table, "",
            "clips/s: median over repeats of each design; the ratio is the median of the per-repeat "
            "ratios (the designs run back to back, rotating which goes first), which is steadier "
            "than the ratio of medians when other work shares the machine.", "",
            "Bytes on disk that each design adds to the raw PNGs (which both keep):", "",
            *sizes, "",
            f"Read per clip (mean of 200 sampled clips): store {store_vox / 1e6:.2f} MB of voxels + "
            f"{store_img / 1e6:.2f} MB of frame chunks (shard indexes + the chunks under the crop); npy "
            f"{npy_vox / 1e6:.2f} MB of .npy + {npy_img / 1e6:.2f} MB of PNG (whole files).", "",
            f"Single-process costs per clip (one core, warm cache): frames {chunk_ms:.0f} ms (store, "
            f"rgb.zarr crop) vs {png_ms:.0f} ms (npy design, {2 * args.clip_len} whole PNG decodes); voxels "
            f"{vox_ms['store']:.0f} ms (store) vs {vox_ms['compact']:.0f} ms (compact) vs "
            f"{vox_ms['npy']:.0f} ms (npy).", "",
            "Host-to-device bytes per clip (one collated batch-1 batch: what the worker hands the main "
            "process through shared memory and the trainer copies to the device; a step copies "
            "TRAIN.BATCH_SIZE times this):", "", *h2d, "",
            "Target (issue 3): >= 2x the clips per second at <= 1/4 of the bytes. " + verdict, "",
            verdict_19, ""])
        print()
        print(body)
        if not args.no_write:
            write_section(args.results, SECTION, body)
            print(f"wrote {args.results} ({SECTION})")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
