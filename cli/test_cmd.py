"""``spikeprep test``: deblur frames with a trained checkpoint (thin: parse, call ``model.test.run_test``, print)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import click

from spikeprep.images import IMAGE_FORMATS

EXAMPLES = """\b
Examples:
  spikeprep test --ckpt outputs/ckpts/spike/best.pth --store data/store --split val --output outputs/test/spike
  spikeprep test --ckpt outputs/ckpts/base/best.pth --store data/store --output outputs/test/base
  spikeprep test --ckpt best.pth --input_blur frames/seq_003 --input_spike_vox data/store --output out/
  spikeprep test --ckpt best.pth --input_blur GOPRO/blur --input_spike_vox vox_cache/ --output out/ --tile 0 192 192
  spikeprep test --ckpt outputs/ckpts/base/best.pth --input_blur frames/ --output out/   # no voxels needed

\b
Writes OUTPUT/<seq>/<frame name>.png (or .jpg), one per input frame and nothing else, and
<LOG.SAVE_DIR>/metrics/test_<time>.json: seconds per frame (model only and total) and peak memory
(CUDA max allocated, or the process's peak RSS on CPU).
"""


@click.command("test", epilog=EXAMPLES)
@click.option("--ckpt", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="best.pth / last.pth written by `spikeprep train` (loaded with weights_only=True)")
@click.option("--input_blur", "--input-blur", "input_blur", type=click.Path(file_okay=False, path_type=Path),
              help="blurred PNG/JPEG frames of one sequence, or a folder of sequence folders (or their blur/); "
                   "without it, the frames come from the store")
@click.option("--input_spike_vox", "--input-spike-vox", "input_spike_vox",
              type=click.Path(file_okay=False, path_type=Path),
              help="voxel counts: a store (DATA_ROOT), a folder of per-frame .npy counts [K, Hs, Ws] (or of "
                   "sequence folders), or a spike_vox.zarr; matched to the frames by name, else by order. "
                   "Not needed by the spike-free arm (a 'base' checkpoint): given, it is ignored")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path),
              help="DATA_ROOT: voxels and (without --input_blur) blur frames from this store")
@click.option("--split", help="store split to run [the checkpoint config's DATA.VAL_SPLIT]")
@click.option("--seq", "seqs", multiple=True, help="only this sequence (repeatable); with a single folder of "
              "frames: its name (output folder, store sequence)")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="images go to OUTPUT/<seq>/<frame name>.<format>")
@click.option("--spike/--no-spike", "use_spike", default=None,
              help="refuse a checkpoint of the other arm [any arm]")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="refuse a checkpoint whose model (MODEL.*, DATA.K, DATA.NORM) differs from this config's")
@click.option("--clip-len", type=click.IntRange(min=0),
              help="frames per clip [the checkpoint config's DATA.CLIP_LEN]; 0: whole sequences")
@click.option("--tile", nargs=3, type=click.IntRange(min=0), default=(0, 256, 256), show_default=True,
              metavar="T H W", help="tiled_inference tile inside a clip (frames, height, width); 0: no tiling")
@click.option("--overlap", nargs=3, type=click.IntRange(min=0), default=(2, 20, 20), show_default=True,
              metavar="T H W", help="tile overlap (frames, height, width)")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda, cuda:1, ...")
@click.option("--format", "image_format", type=click.Choice(sorted(IMAGE_FORMATS)), default="png", show_default=True)
@click.option("--jpeg-quality", type=click.IntRange(0, 100), default=95, show_default=True)
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path),
              help="where test_<time>.json goes [<LOG.SAVE_DIR of the checkpoint config>/metrics]")
@click.option("--progress/--no-progress", default=True)
def test_cmd(ckpt, input_blur, input_spike_vox, store, split, seqs, output, use_spike, config, clip_len, tile,
             overlap, device, image_format, jpeg_quality, metrics_dir, progress):
    """Deblur frames with a trained checkpoint: one image per frame, timing and peak memory to JSON."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from model.test import run_test  # torch and the model: only when the command runs (--help stays fast)
    from spikeprep.inference_inputs import is_store
    from spikeprep.store import store_lock

    # a store read as input holds its read lock for the run: ingest and audit wait (a read-only store is fine)
    store_read = store or (input_spike_vox if input_spike_vox is not None and is_store(input_spike_vox) else None)
    with store_lock(store_read, "test", shared=True) if store_read is not None else contextlib.nullcontext():
        report = run_test(ckpt=ckpt, output=output, input_blur=input_blur, input_spike_vox=input_spike_vox,
                          store=store, split=split, seqs=seqs, use_spike=use_spike, config=config, clip_len=clip_len,
                          tile=tile, overlap=overlap, device=device, image_format=image_format,
                          jpeg_quality=jpeg_quality, metrics_dir=metrics_dir, progress=progress)
    m = report.metrics
    click.echo(f"{m.arm} arm ({m.exp}, step {m.step}) on {m.device}: {m.frames} frames, "
               f"{len(m.sequences)} sequence(s), {m.clips} clips of {m.clip_len or 'whole runs'}")
    for name, n in m.sequences.items():
        click.echo(f"  {name}: {n} frames -> {Path(m.output) / name}")
    peak = "n/a" if m.peak_memory_mib is None else f"{m.peak_memory_mib:.1f} MiB"
    click.echo(f"model {m.seconds_per_frame:.4f} s/frame, total {m.seconds_per_frame_total:.4f} s/frame; "
               f"peak memory {peak} ({m.peak_memory_method})")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(f"metrics: {report.metrics_path}")
