"""``spikeprep view SRC``: TFP and TFI reconstructions of a recording as PNG frames and a video (``spikeprep.view``);
``spikeprep view DATA_ROOT --restored DIR``: a ``test`` output beside the store's blur frames (``spikeprep.side_by_side``)."""
from __future__ import annotations

from pathlib import Path

import click

from spikeprep.errors import InputError


@click.command(epilog="""\b
SRC is a spike file (.dat: give --height/--width; .npy/.npz binary arrays), a spike directory with
meta.json, a native sequence (its spike/meta.json) or a store (DATA_ROOT: one picture per blur frame from
its voxels, --seq picks the sequence). Writes OUT/tfp/NNNNNN.png, OUT/tfi/NNNNNN.png and OUT/tfp.mp4,
OUT/tfi.mp4 (or .gif), nothing outside OUT.
\b
  TFP   spike rate per frame over --tfp-width frames centred on each instant (a sliding window;
        store voxels: the centred --tfp-width bins)
  TFI   1 / inter-spike interval across each instant, searched over --tfi-window frames
        (store voxels: only where a bin is at most one spike frame wide)
Pictures are clip(rate * --gain, 0, 1) as 8-bit grey: no tone curve. .dat files are read upright
(--no-flipud reads them as stored).
\b
With --restored DIR (a `spikeprep test --store DATA_ROOT --split S --output DIR` folder; SRC is DATA_ROOT):
per sequence, the store's blur frame | the restored frame [| TFP with --tfp] [| sharp with --sharp], labelled,
as OUT/<seq>/<frame>.png and OUT/<seq>.mp4 (or .gif). Frames are matched by sequence and name; DIR must hold
every frame `test` restores of each of its sequences (the manifest's kept frames), at the store's size.
\b
Examples:
  spikeprep view ../shared/data/real/hist_sflow_car_250x400.dat --height 250 --width 400 --out view/car
  spikeprep view data/raw/train/seq_000 --tfp-width 64 --step 4 --video gif
  spikeprep view data/store --seq val/seq_004 --out view/store
  spikeprep view data/store --restored outputs/test/spike --split val --tfp --out view/restored
""")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="folder to write into (new or empty; --overwrite to reuse) [view/<SRC name>]")
@click.option("--height", type=click.IntRange(min=1), help="sensor rows (needed for a bare .dat file)")
@click.option("--width", type=click.IntRange(min=1), help="sensor columns (needed for a bare .dat file)")
@click.option("--flipud/--no-flipud", default=True, show_default=True,
              help="a bare .dat stores the image upside down (the camera's layout)")
@click.option("--head-columns", type=click.IntRange(min=0), default=0, show_default=True,
              help="bare .dat: extra columns at the end of each row, dropped (SPS10: 16, with --width 400)")
@click.option("--axes", type=click.Choice(["NHW", "HWN"]), default="NHW", show_default=True,
              help="bare .npy/.npz: axis order of the array")
@click.option("--seq", help="store: the sequence to view, SPLIT/SEQ [the first; with --restored: all of DIR]")
@click.option("--restored", type=click.Path(path_type=Path),
              help="a `spikeprep test` output folder: view it beside SRC's (a store's) blur frames")
@click.option("--split", help="--restored: the split `test` ran on [the one holding DIR's sequences]")
@click.option("--tfp", "with_tfp", is_flag=True, help="--restored: add a TFP panel (the store's voxels)")
@click.option("--sharp", "with_sharp", is_flag=True,
              help="--restored: add the sharp frame (grey 'sharp: none' for an unpaired frame)")
@click.option("--tfp-width", type=click.IntRange(min=1),
              help="TFP window: spike frames [32], or bins for store voxels [about K/2]")
@click.option("--tfi-window", type=click.IntRange(min=2), default=64, show_default=True,
              help="TFI: spike frames searched around each instant for the spanning interval")
@click.option("--step", type=click.IntRange(min=1), default=1, show_default=True,
              help="spike frames between output instants")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="first spike frame used")
@click.option("--stop", type=click.IntRange(min=1), help="one past the last spike frame used [the end]")
@click.option("--gain", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="picture = clip(rate * gain, 0, 1)")
@click.option("--video", type=click.Choice(["mp4", "gif", "none"]), default="mp4", show_default=True)
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True)
@click.option("--overwrite", is_flag=True, help="reuse a non-empty --out (view's own outputs there are replaced)")
@click.option("--progress/--no-progress", default=True)
def view_cmd(src: Path, out: Path | None, height, width, flipud, head_columns, axes, seq, restored, split, with_tfp,
             with_sharp, tfp_width, tfi_window, step, start, stop, gain, video, fps, overwrite, progress) -> None:
    """Reconstruct a recording with TFP and TFI; write PNG frames and a video to look at before trusting it.
    With --restored: a deblurring result beside its blur frames."""
    if restored is not None:
        _view_restored(src, restored, out, split, seq, with_tfp, with_sharp, tfp_width, gain, video, fps, overwrite,
                       progress)
        return
    if split or with_tfp or with_sharp:
        raise click.UsageError("--split, --tfp and --sharp go with --restored DIR")
    from spikeprep.view import (SpikeFrames, open_view_source, prepare_out, store_reconstructions,
                                store_tfp_width, stream_instants, stream_reconstructions, write_view)
    from spikeprep.store import refuse_output_in_store

    source = open_view_source(src, height=height, width=width, flipud=flipud, head_columns=head_columns,
                              axes=axes, seq=seq)
    if isinstance(source, SpikeFrames):
        tfp_width = tfp_width or 32
        if stop is not None and stop <= start:
            raise click.BadParameter(f"--stop {stop} must be after --start {start}", param_hint="--stop")
        instants = stream_instants(source.n_frames, tfp_width, tfi_window, step, start, stop)
        if not len(instants):
            raise InputError(source.path, f"{source.n_frames} spike frames: too few for a TFP width of {tfp_width} "
                                          f"and a TFI window of {tfi_window} in [{start}, {stop or source.n_frames})",
                             fix="use a smaller --tfp-width / --tfi-window, or a wider --start/--stop range")
        recons = stream_reconstructions(source, instants, tfp_width, tfi_window)
        total, what = len(instants), (f"{source.height}x{source.width}, {source.n_frames} spike frames; "
                                      f"TFP over {tfp_width} frames, TFI within {tfi_window}, every {step}")
    else:
        k = source.counts(0).shape[0] if source.frame_idx else 0
        try:
            width_bins = store_tfp_width(k, tfp_width)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--tfp-width") from None
        recons = store_reconstructions(source, width_bins)
        total, what = len(source.frame_idx), f"{len(source.frame_idx)} blur frames, K = {k}; TFP over {width_bins} bins"
    out = out if out is not None else Path("view") / src.resolve().name
    refuse_output_in_store(out, "--out")
    out = prepare_out(out, overwrite)
    result = write_view(recons, out, total=total, gain=gain, video=video, fps=fps, progress=progress)
    click.echo(f"{source.path}: {what}")
    for m, n in result.pngs.items():
        click.echo(f"  {m}: {n} PNG frames in {out / m}" + (f", video {result.videos[m]}" if m in result.videos else ""))
    for note in result.notes:
        click.echo(f"  {note}")


def _view_restored(src: Path, restored: Path, out: Path | None, split, seq, with_tfp, with_sharp, tfp_width, gain,
                   video, fps, overwrite, progress) -> None:
    from spikeprep.inference_inputs import is_store
    from spikeprep.side_by_side import check_out, match_restored, write_side_by_side
    from spikeprep.store import read_store_info
    from spikeprep.view import prepare_out, store_tfp_width

    if not is_store(src):
        raise InputError(src, "--restored needs a store here (DATA_ROOT with dataset.json): the one `test` ran on",
                         fix="spikeprep view DATA_ROOT --restored OUTPUT_OF_TEST")
    if with_tfp:
        try:
            store_tfp_width(read_store_info(src).K, tfp_width)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--tfp-width") from None
    sequences, notes = match_restored(src, restored, split=split, seq=seq, sharp=with_sharp)
    out = out if out is not None else Path("view") / Path(restored).resolve().name
    check_out(out, sequences, src, restored)
    out = prepare_out(out, overwrite, own=tuple(s.name for s in sequences))
    result = write_side_by_side(sequences, out, store_root=src, tfp=with_tfp, tfp_width=tfp_width, gain=gain,
                                video=video, fps=fps, progress=progress)
    for key, (n, folder, video_path) in result.sequences.items():
        click.echo(f"{key}: {n} frames ({' | '.join(result.panels[key])}) in {folder}"
                   + (f", video {video_path}" if video_path else ""))
    for note in notes:
        click.echo(f"  {note}")
