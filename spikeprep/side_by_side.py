"""Look at a deblurring result (``spikeprep view DATA_ROOT --restored DIR``): per sequence, the store's blur
frame beside ``spikeprep test``'s restored one (and, on request, the frame's TFP and its sharp frame), as
labelled PNG frames and one video.

Inputs
    A store and a ``spikeprep test`` output folder, ``DIR/<seq>/<frame stem>.png`` (or ``.jpg``), matched by
    sequence (folder name, within one split) and frame (name stem). ``test --store DATA_ROOT --split S``
    restores the frames the manifest keeps (status ok, with voxels: ``StoreIndex.kept``) in runs of
    ``MIN_FRAMES`` or more consecutive frames (``deblurrable_runs``), so those are the frames expected; a
    kept frame without a kept neighbour is not restored and is left out with a note. Blur and sharp come from
    the store's ``rgb.zarr`` (the decoded, cropped frames ``test`` read); sharp frames are optional (a frame
    the manifest marks ``paired = false`` shows a grey "sharp: none" panel).
Pictures
    TFP is ``spikeprep view``'s store reconstruction (``store_reconstructions``: the spike rate per spike
    frame over the centred TFP bins, ``clip(rate * gain, 0, 1)`` as grey), each spike pixel replicated onto
    the RGB grid, as the Dataset does. Panels are the frames' own pixels, untouched, under a label strip
    (``compose``); the canvas is padded to even sides (MPEG-4 drops an odd last row or column).
Output
    ``OUT/<seq>/<frame stem>.png`` per frame and ``OUT/<seq>.mp4`` (or ``.gif``) per sequence, written by
    ``spikeprep.view``'s ``VideoWriter``; nothing outside ``OUT``, which may not lie inside the store or the
    restored folder.

Every mismatch between the restored folder and the store (sequences, frames, sizes) is an ``InputError``
naming the folder and the fix, raised before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.manifest import STATUS_OK
from spikeprep.errors import InputError
from spikeprep.images import write_rgb
from spikeprep.inference_inputs import (IMAGE_SUFFIXES, MIN_FRAMES, ArrayFrames, FileFrames, FrameSource,
                                        StoreIndex, _is_zarr_array, _subfolders, deblurrable_runs, list_files)
from spikeprep.view import (VIDEO_FORMATS, VideoWriter, open_view_source, store_reconstructions, store_tfp_width,
                            to_image)

PANELS = ("blur", "restored", "TFP", "sharp")
NO_SHARP = "sharp: none"   # the label of the sharp panel of an unpaired frame
GAP = 4                    # pixels between panels
BACKGROUND = 24            # grey level of the label strip, the gaps and the padding
UNPAIRED_GREY = 128        # the sharp panel of a frame without a sharp partner
_TEST_HINT = "`spikeprep test --ckpt CKPT --store DATA_ROOT --split SPLIT --output DIR` writes DIR/<seq>/<frame>.png"


# ---- matching a test output to the store ------------------------------------------------------------
@dataclass
class RestoredSequence:
    """One sequence to show: the store's kept frames and the restored images matched to them.

    ``positions[j]`` is the store position (``blur`` / ``frame_idx`` index) of shown frame ``j`` and
    ``restored_pos[j]`` its image in ``restored``; ``paired[p]`` says whether store position ``p`` has a sharp
    frame; ``sharp`` is None unless asked for.
    """

    key: str
    name: str
    blur: FrameSource
    restored: FileFrames
    frame_idx: list[int]
    positions: list[int]
    restored_pos: list[int]
    scale: tuple[int, int]
    paired: list[bool]
    sharp: FrameSource | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        """The shown frames' name stems, in frame order (the PNG names)."""
        return [self.blur.stems[p] for p in self.positions]


def _restored_folders(restored: Path) -> dict[str, FileFrames]:
    """``test``'s output: ``{seq: its images}``; a folder holding images itself is one sequence named after it."""
    restored = Path(restored)
    if not restored.is_dir():
        raise InputError(restored, "not a folder", fix=f"pass the --output folder of `spikeprep test` ({_TEST_HINT})")
    own = list_files(restored, IMAGE_SUFFIXES)
    folders = {restored.name: own} if own else {
        sub.name: files for sub in _subfolders(restored) if (files := list_files(sub, IMAGE_SUFFIXES))}
    if not folders:
        raise InputError(restored, "no PNG/JPEG images here or in its subfolders: not a `spikeprep test` output",
                         fix=f"pass the --output folder of `spikeprep test` ({_TEST_HINT})")
    out = {}
    for name, files in folders.items():
        stems = [f.stem for f in files]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise InputError(files[0].parent, f"frames {twice[:5]} are here twice (several image formats)",
                             fix="keep one image per frame (remove the older .png or .jpg)")
        out[name] = FileFrames(files, files[0].parent)
    return out


def _pick_keys(store: StoreIndex, names: list[str], restored: Path, split: str | None,
               seq: str | None) -> list[str]:
    """The store sequences (``split/name``) to show: those of the restored folders ``names`` (or ``seq``)."""
    by_split: dict[str, set[str]] = {}
    for k, s in store.info.sequences.items():
        by_split.setdefault(s.split, set()).add(k.split("/", 1)[1])
    if seq is not None:
        seq_split, _, seq_name = seq.rpartition("/")
        split = seq_split or split
        if seq_name not in names:
            raise InputError(restored, f"no folder {seq_name!r} of restored frames here (it has {sorted(names)[:8]})",
                             fix="pass --seq with one of those, or the --output folder `test` wrote that sequence to")
        names = [seq_name]
    if split is not None and split not in by_split:
        raise InputError(store.root / "dataset.json", f"no split {split!r} in the store (it has {sorted(by_split)})",
                         fix="pass --split with the split `test` ran on")
    if split is None:
        fits = sorted(s for s, have in by_split.items() if set(names) <= have)
        if not fits:
            splits = ", ".join(f"{s}: {sorted(h)[:8]}" for s, h in sorted(by_split.items()))
            raise InputError(restored, f"its sequence folders {sorted(names)[:8]} are not all in one split of "
                             f"{store.root} ({splits})",
                             fix="view the store `test` ran on, with the --restored folder it wrote")
        if len(fits) > 1:
            raise InputError(restored, f"sequences {sorted(names)[:8]} are in several splits ({fits})",
                             fix="pass --split with the split `test` ran on")
        split = fits[0]
    unknown = sorted(set(names) - by_split[split])
    if unknown:
        raise InputError(restored, f"sequence folder(s) {unknown[:8]} are not sequences of split {split!r} of "
                         f"{store.root} (it has {sorted(by_split[split])[:8]})",
                         fix="pass --split with the split `test` ran on (`test --split`), or view the store it ran on")
    return [f"{split}/{n}" for n in sorted(names)]


def _manifest_rows(store: StoreIndex) -> dict[str, dict[str, dict]]:
    """``{split/seq: {blur stem: row}}`` of every manifest row (``SEQUENCE_COLUMNS``, ``paired`` among them)."""
    t = store.table
    out: dict[str, dict[str, dict]] = {}
    for i, (split, name) in enumerate(zip(t["split"], t["seq"])):
        row = {c: t[c][i] for c in t}
        out.setdefault(f"{split}/{name}", {})[Path(row["blur"]).stem] = row
    return out


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image from its header (nothing decoded); InputError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(path, f"cannot read this image ({err})", fix="re-run `spikeprep test` for it") from None


def _match_sequence(store: StoreIndex, manifest: dict[str, dict], key: str, restored: FileFrames,
                    with_sharp: bool) -> RestoredSequence:
    kept = store.kept(key)
    seq = store.sequence(key)
    name, folder = seq.name, restored.where
    stems = seq.stems
    rerun = f"re-run `spikeprep test --ckpt CKPT --store {store.root} --split {key.split('/')[0]} --output ...`"
    have = {s: i for i, s in enumerate(restored.stems)}
    unknown = [s for s in restored.stems if s not in manifest]
    if unknown:
        raise InputError(folder, f"{len(unknown)} restored frame(s) are not frames of {key} in {store.root} "
                         f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''})",
                         fix=f"view the store and split `test` ran on; {rerun}")
    notes = []
    dropped = [s for s in restored.stems if manifest[s]["status"] != STATUS_OK or s not in stems]
    if dropped:
        notes.append(f"{key}: {len(dropped)} restored frame(s) dropped in the manifest are not shown")
    restorable = {p for a, n in deblurrable_runs(seq.runs) for p in range(a, a + n)}
    missing = [stems[p] for p in sorted(restorable) if stems[p] not in have]
    if missing:
        raise InputError(folder, f"{len(missing)} of the {len(restorable)} frames `test` restores of {key} have no "
                         f"image here ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})",
                         fix=f"{rerun} (an interrupted run, or one on other frames)")
    lonely = [p for p in range(len(stems)) if p not in restorable and stems[p] not in have]
    if lonely:
        notes.append(f"{key}: {len(lonely)} kept frame(s) without a kept neighbour are not restored by `test` "
                     f"(VRT needs {MIN_FRAMES} frames per clip): not shown")
    positions = [p for p in range(len(stems)) if stems[p] in have]
    h, w = seq.blur.hw
    for p in positions:
        file = restored.files[have[stems[p]]]
        if _image_size(file) != (h, w):
            hr, wr = _image_size(file)
            raise InputError(file, f"restored frame is {hr}x{wr}, the store's blur frames of {key} are {h}x{w}",
                             fix="view the store `test` ran on (`test --store DATA_ROOT` restores the store's "
                             f"own, cropped frames); {rerun}")
    frame_idx = [int(f) for f in kept.frame_idx]
    paired = [manifest[s]["paired"] for s in stems]
    sharp = None
    if with_sharp and any(paired[p] for p in positions):
        rgb = Path(kept.rgb_path)
        sharp = (ArrayFrames(rgb / "sharp", kept.vox_index.tolist(), stems) if _is_zarr_array(rgb / "sharp")
                 else FileFrames([Path(s) for s in kept.sharp], store.root / key / "sharp"))
    elif with_sharp:
        notes.append(f"{key}: no shown frame has a sharp partner (unpaired): no sharp panel")
    return RestoredSequence(key, name, seq.blur, restored, frame_idx, positions, [have[stems[p]] for p in positions],
                            seq.scale, paired, sharp, notes)


def match_restored(root: Path, restored: Path, *, split: str | None = None, seq: str | None = None,
                   sharp: bool = False) -> tuple[list[RestoredSequence], list[str]]:
    """The sequences of ``restored`` (a ``spikeprep test`` output) matched to store ``root``, and notes.

    ``split``: the split ``test`` ran on (None: the one split holding every restored sequence); ``seq``:
    one sequence, ``SPLIT/SEQ`` or ``SEQ``; ``sharp``: read the sharp frames too. Raises ``InputError``
    (naming the folder or file and the fix) on any mismatch, before anything is written.
    """
    store = StoreIndex(Path(root), None)
    folders = _restored_folders(Path(restored))
    keys = _pick_keys(store, list(folders), Path(restored), split, seq)
    notes = []
    chosen_split = keys[0].split("/", 1)[0]
    if seq is None:
        left = sorted(k for k, s in store.info.sequences.items() if s.split == chosen_split and k not in keys)
        if left:
            notes.append(f"{len(left)} sequence(s) of split {chosen_split!r} have no restored folder in {restored}: "
                         f"{', '.join(left[:5])}{', ...' if len(left) > 5 else ''}")
    manifest = _manifest_rows(store)
    sequences = [_match_sequence(store, manifest[k], k, folders[k.split("/", 1)[1]], sharp) for k in keys]
    for s in sequences:
        notes += s.notes
    return sequences, notes


# ---- pictures ----------------------------------------------------------------------------------------
def label_height(h: int) -> int:
    """Rows of the label strip above panels ``h`` rows tall: about an eighth of them, 14 to 40."""
    return int(np.clip(round(h / 8), 14, 40))


def panel_origins(h: int, w: int, n: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """``([(y, x)] of each of ``n`` panels' top-left corner, (H, W) of the canvas)``: panels side by side
    under a label strip, ``GAP`` pixels apart, the canvas padded to even sides."""
    top = label_height(h)
    origins = [(top, i * (w + GAP)) for i in range(n)]
    height, width = top + h, n * w + (n - 1) * GAP
    return origins, (height + height % 2, width + width % 2)


def _put_label(canvas: np.ndarray, text: str, x: int, w: int, strip: int) -> None:
    """``text`` in white, left-aligned in the strip above the panel at column ``x``, scaled to fit."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(0.6 * strip / (th + base), (w - 4) / tw)
    (_, th), base = cv2.getTextSize(text, font, scale, 1)
    y = (strip + th) // 2
    cv2.putText(canvas, text, (x + 2, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def compose(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Labelled panels ``[(label, uint8 [H, W, 3] RGB)]`` side by side (``panel_origins``) as one uint8
    ``[H', W', 3]`` RGB canvas; each panel's pixels are copied unchanged."""
    h, w = panels[0][1].shape[:2]
    origins, size = panel_origins(h, w, len(panels))
    canvas = np.full(size + (3,), BACKGROUND, np.uint8)
    for (label, img), (y, x) in zip(panels, origins):
        if img.shape != (h, w, 3):
            raise ValueError(f"panel {label!r} is {img.shape}, the first is {(h, w, 3)}")
        canvas[y:y + h, x:x + w] = img
        _put_label(canvas, label, x, w, y)
    return canvas


def tfp_picture(rate: np.ndarray, scale: tuple[int, int], gain: float) -> np.ndarray:
    """``view``'s TFP picture (``to_image``) of a spike rate ``[Hs, Ws]`` on the RGB grid: uint8 ``[H, W, 3]``,
    each spike pixel replicated ``scale`` times per axis."""
    img = np.repeat(np.repeat(to_image(rate, gain), scale[0], axis=0), scale[1], axis=1)
    return np.repeat(img[:, :, None], 3, axis=2)


def panel_labels(seq: RestoredSequence, tfp: bool) -> list[str]:
    """The panels of ``seq``'s frames, left to right."""
    return ["blur", "restored"] + (["TFP"] if tfp else []) + (["sharp"] if seq.sharp is not None else [])


def frames(seq: RestoredSequence, *, tfp: bool = False, tfp_width: int | None = None, gain: float = 1.0,
           store_root: Path | None = None):
    """``(stem, canvas)`` per shown frame of ``seq``, in frame order (``compose``)."""
    recons = None
    if tfp:
        vox = open_view_source(store_root, seq=seq.key).select([seq.frame_idx[p] for p in seq.positions])
        width = store_tfp_width(vox.counts(0).shape[0], tfp_width)
        recons = store_reconstructions(vox, width, with_tfi=False)
    h, w = seq.blur.hw
    for p, r in zip(seq.positions, seq.restored_pos):
        panels = [("blur", seq.blur.read(p).transpose(1, 2, 0)), ("restored", seq.restored.read(r).transpose(1, 2, 0))]
        if recons is not None:
            _, rates = next(recons)
            panels.append(("TFP", tfp_picture(rates["tfp"], seq.scale, gain)))
        if seq.sharp is not None:
            panels.append(("sharp", seq.sharp.read(p).transpose(1, 2, 0)) if seq.paired[p]
                          else (NO_SHARP, np.full((h, w, 3), UNPAIRED_GREY, np.uint8)))
        yield seq.blur.stems[p], compose(panels)


# ---- output ------------------------------------------------------------------------------------------
def check_out(out: Path, sequences: list[RestoredSequence], store_root: Path, restored: Path) -> None:
    """Refuse an ``out`` inside the store or the restored folder, or one whose outputs would hold either."""
    out = Path(out).resolve()
    for what, folder in (("the store", Path(store_root).resolve()), ("the restored folder", Path(restored).resolve())):
        if out == folder or folder in out.parents:
            raise InputError(out, f"--out lies inside {what} {folder}",
                             fix="name a folder outside it, e.g. view/<name>")
        for s in sequences:
            mine = out / s.name
            if folder == mine or mine in folder.parents:
                raise InputError(out, f"view would write {mine}, which holds {what} {folder}",
                                 fix="name another --out")


@dataclass(frozen=True)
class SideBySideResult:
    """What ``write_side_by_side`` wrote: per sequence key, (frames, PNG folder, video or None)."""

    out: Path
    sequences: dict[str, tuple[int, Path, Path | None]]
    panels: dict[str, list[str]]


def write_side_by_side(sequences: list[RestoredSequence], out: Path, *, store_root: Path, tfp: bool = False,
                       tfp_width: int | None = None, gain: float = 1.0, video: str = "mp4", fps: float = 25.0,
                       progress: bool = True) -> SideBySideResult:
    """Write ``out/<seq>/<stem>.png`` per shown frame and ``out/<seq>.<video>`` per sequence (``video`` "none":
    PNGs only). ``out`` must exist (``spikeprep.view.prepare_out``); a video is complete or absent."""
    from tqdm import tqdm

    if video not in VIDEO_FORMATS:
        raise ValueError(f"video must be one of {VIDEO_FORMATS}, got {video!r}")
    done: dict[str, tuple[int, Path, Path | None]] = {}
    for seq in sequences:
        folder = out / seq.name
        folder.mkdir(exist_ok=True)
        writer = VideoWriter(out / f"{seq.name}.{video}", fps) if video != "none" else None
        n = 0
        try:
            for stem, canvas in tqdm(frames(seq, tfp=tfp, tfp_width=tfp_width, gain=gain, store_root=store_root),
                                     total=len(seq.positions), desc=seq.key, unit="frame", disable=not progress):
                write_rgb(folder / f"{stem}.png", canvas)
                if writer is not None:
                    writer.add(canvas)
                n += 1
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        done[seq.key] = (n, folder, writer.close() if writer is not None else None)
    return SideBySideResult(Path(out), done, {s.key: panel_labels(s, tfp) for s in sequences})
