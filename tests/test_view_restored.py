"""``spikeprep view DATA_ROOT --restored DIR``: a ``test`` output beside the store's blur frames, as labelled
PNG frames and a video per sequence; clear errors when the folder does not match the store."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cli.main import main
from schemas.manifest import Drop, DropCode
from spikeprep.baselines import centred_bins
from spikeprep.side_by_side import (BACKGROUND, NO_SHARP, UNPAIRED_GREY, compose, frames, label_height,
                                    match_restored, panel_origins)
from spikeprep.store import open_vox, read_manifest, read_manifest_rows, read_store_info, write_manifest
from spikeprep.view import to_image

from conftest import TRAIN_K, tiny_config_dict, torch_threads_fixture

_one_thread = torch_threads_fixture(1)
H, W = 64, 80            # conftest TRAIN_TREE frames


def run(*args):
    return CliRunner().invoke(main, ["view", *map(str, args), "--no-progress"])


def val_seq(store: Path) -> str:
    (key,) = [k for k, s in read_store_info(store).sequences.items() if s.split == "val"]
    return key.split("/")[1]


def rgb(store: Path, seq: str, kind: str = "blur") -> np.ndarray:
    """The store's decoded frames of val/``seq`` as ``[N, H, W, 3]`` RGB (what `test --store` reads)."""
    return np.asarray(open_vox(store / "val" / seq / "rgb.zarr" / kind)[:]).transpose(0, 2, 3, 1)


def stems(store: Path, seq: str) -> list[str]:
    return sorted(p.stem for p in (store / "val" / seq / "blur").glob("*.png"))


def fake_restored(store: Path, dest: Path, frames_kept: list[int] | None = None) -> Path:
    """A `test`-shaped output: DEST/<seq>/<stem>.png, each the inverted blur frame (so panels differ)."""
    seq = val_seq(store)
    (dest / seq).mkdir(parents=True)
    blur = rgb(store, seq)
    for i, stem in enumerate(stems(store, seq)):
        if frames_kept is None or i in frames_kept:
            cv2.imwrite(str(dest / seq / f"{stem}.png"), cv2.cvtColor(255 - blur[i], cv2.COLOR_RGB2BGR))
    return dest


def png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def panel(canvas: np.ndarray, i: int, n: int) -> np.ndarray:
    (y, x) = panel_origins(H, W, n)[0][i]
    return canvas[y:y + H, x:x + W]


def tfp_expected(store: Path, seq: str, i: int) -> np.ndarray:
    """TFP picture of frame ``i``, from the stored counts: mean count over the centred K/2 bins per spike
    frame (K / n_ticks), grey, replicated onto the RGB grid."""
    counts = np.asarray(open_vox(store / "val" / seq / "spike_vox.zarr" / "counts")[i]).astype(np.float64)
    n_ticks = [r for r in read_manifest(store).to_pylist() if r["seq"] == seq and r["frame_idx"] == i][0]["n_ticks"]
    k = counts.shape[0]
    width = k // 2
    rate = counts[centred_bins(k, width)].sum(axis=0) / width * k / n_ticks
    sy, sx = read_store_info(store).sequences[f"val/{seq}"].scale
    grey = np.kron(to_image(rate), np.ones((sy, sx), np.uint8))
    return np.repeat(grey[:, :, None], 3, axis=2)


def read_video(path: Path) -> list[np.ndarray]:
    if path.suffix == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def test_blur_restored_tfp_sharp_frames_and_video(train_store, tmp_path):
    store, seq = train_store, val_seq(train_store)
    restored = fake_restored(store, tmp_path / "test_out")
    out = tmp_path / "view"
    res = run(store, "--restored", restored, "--tfp", "--sharp", "--out", out)
    assert res.exit_code == 0, res.output
    assert f"val/{seq}: 6 frames (blur | restored | TFP | sharp)" in res.output
    assert sorted(p.name for p in out.iterdir()) == [seq, f"{seq}.mp4"]
    names = stems(store, seq)
    assert sorted(p.stem for p in (out / seq).iterdir()) == names
    blur, sharp = rgb(store, seq), rgb(store, seq, "sharp")
    canvases = [png(out / seq / f"{s}.png") for s in names]
    size = panel_origins(H, W, 4)[1]
    for i, canvas in enumerate(canvases):
        assert canvas.shape == size + (3,) and size[0] % 2 == 0 and size[1] % 2 == 0
        np.testing.assert_array_equal(panel(canvas, 0, 4), blur[i])
        np.testing.assert_array_equal(panel(canvas, 1, 4), 255 - blur[i])
        np.testing.assert_array_equal(panel(canvas, 2, 4), tfp_expected(store, seq, i))
        np.testing.assert_array_equal(panel(canvas, 3, 4), sharp[i])
    # labels: text drawn in the strip above each panel, a different text above each
    strips = [canvases[0][:label_height(H), x:x + W] for _, x in panel_origins(H, W, 4)[0]]
    for s in strips:
        assert (s > BACKGROUND + 100).sum() > 20
    assert len({s.tobytes() for s in strips}) == 4
    video = read_video(out / f"{seq}.mp4")
    assert len(video) == 6 and video[0].shape == canvases[0].shape
    for v, c, b in zip(video, canvases, blur):
        assert np.abs(v.astype(int) - c).mean() < 6                        # mp4v is lossy; same picture
        assert np.abs(panel(v, 1, 4).astype(int) - (255 - b)).mean() < np.abs(panel(v, 1, 4).astype(int) - b).mean()


def test_gif_two_panels_and_overwrite_keeps_other_files(train_store, tmp_path):
    store, seq = train_store, val_seq(train_store)
    restored = fake_restored(store, tmp_path / "test_out")
    out = tmp_path / "view"
    (out / seq).mkdir(parents=True)
    (out / seq / "old.png").write_bytes(b"old")
    (out / "keep.txt").write_text("mine")
    res = run(store, "--restored", restored, "--seq", f"val/{seq}", "--video", "gif", "--out", out)
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = run(store, "--restored", restored, "--seq", f"val/{seq}", "--video", "gif", "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert "(blur | restored)" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", seq, f"{seq}.gif"]
    assert not (out / seq / "old.png").exists() and (out / "keep.txt").read_text() == "mine"
    video = read_video(out / f"{seq}.gif")
    canvas = png(out / seq / f"{stems(store, seq)[0]}.png")
    assert len(video) == 6 and video[0].shape == canvas.shape == panel_origins(H, W, 2)[1] + (3,)
    assert np.abs(video[0].astype(int) - canvas).mean() < 6                 # a 256-colour palette per frame


def test_unpaired_frame_shows_a_grey_sharp_panel(train_store, tmp_path):
    store, seq = train_store, val_seq(train_store)
    (s,), _ = match_restored(store, fake_restored(store, tmp_path / "t"), sharp=True)
    s.paired = [i != 2 for i in range(len(s.paired))]                   # as a manifest with paired = false says
    got = dict(frames(s))
    names = stems(store, seq)
    np.testing.assert_array_equal(panel(got[names[2]], 2, 3), np.full((H, W, 3), UNPAIRED_GREY, np.uint8))
    np.testing.assert_array_equal(panel(got[names[1]], 2, 3), rgb(store, seq, "sharp")[1])
    strip = lambda c: c[:label_height(H), panel_origins(H, W, 3)[0][2][1]:][:, :W]  # noqa: E731
    assert not np.array_equal(strip(got[names[2]]), strip(got[names[1]]))  # "sharp: none" vs "sharp"
    assert NO_SHARP == "sharp: none"


def _store_with_dropped_frame(store: Path, dest: Path, frame: int) -> Path:
    """A copy of ``store`` whose val frame ``frame`` the manifest drops."""
    copy = dest / "store"
    shutil.copytree(store, copy)
    drop = Drop(DropCode.AUDIT_MISALIGNED, "test: dropped by hand")
    rows = [r.dropped(drop) if r.split == "val" and r.frame_idx == frame else r for r in read_manifest_rows(copy)]
    write_manifest(copy, rows)
    return copy


def test_frames_test_does_not_restore_are_left_out_with_a_note(train_store, tmp_path):
    """Frame 1 dropped: frame 0 has no kept neighbour, so `test` restores frames 2..5 only."""
    store = _store_with_dropped_frame(train_store, tmp_path, 1)
    seq = val_seq(store)
    restored = fake_restored(store, tmp_path / "t", frames_kept=[1, 2, 3, 4, 5])
    res = run(store, "--restored", restored, "--out", tmp_path / "v", "--video", "none")
    assert res.exit_code == 0, res.output
    assert "1 kept frame(s) without a kept neighbour are not restored" in res.output
    assert "1 restored frame(s) dropped in the manifest are not shown" in res.output
    assert sorted(p.stem for p in (tmp_path / "v" / seq).iterdir()) == stems(store, seq)[2:]


def _case(case: str, store: Path, tmp_path: Path) -> tuple[list, str]:
    seq = val_seq(store)
    restored = fake_restored(store, tmp_path / "t")
    out = tmp_path / "v"
    if case == "missing-frame":
        (restored / seq / f"{stems(store, seq)[3]}.png").unlink()
        return [store, "--restored", restored, "--out", out], "have no image here"
    if case == "unknown-frame":
        shutil.copy(restored / seq / f"{stems(store, seq)[0]}.png", restored / seq / "999999.png")
        return [store, "--restored", restored, "--out", out], "not frames of val/"
    if case == "other-size":
        f = restored / seq / f"{stems(store, seq)[2]}.png"
        cv2.imwrite(str(f), cv2.resize(cv2.imread(str(f)), (W // 2, H // 2)))
        return [store, "--restored", restored, "--out", out], f"is {H // 2}x{W // 2}, the store's blur frames"
    if case == "unknown-seq":
        (restored / seq).rename(restored / "seq_zzz")
        return [store, "--restored", restored, "--out", out], "not all in one split"
    if case == "wrong-split":
        return [store, "--restored", restored, "--split", "train", "--out", out], "not sequences of split 'train'"
    if case == "no-split":
        return [store, "--restored", restored, "--split", "test", "--out", out], "no split 'test'"
    if case == "bad-seq":
        return [store, "--restored", restored, "--seq", "val/nope", "--out", out], "no folder 'nope'"
    if case == "not-a-store":
        return [restored, "--restored", restored, "--out", out], "--restored needs a store"
    if case == "empty-folder":
        empty = tmp_path / "empty"
        empty.mkdir()
        return [store, "--restored", empty, "--out", out], "not a `spikeprep test` output"
    if case == "out-in-store":
        return [store, "--restored", restored, "--out", store / "view"], "inside the store"
    if case == "out-in-restored":
        return [store, "--restored", restored, "--out", restored / "view"], "inside the restored folder"
    if case == "bad-tfp-width":
        return [store, "--restored", restored, "--tfp", "--tfp-width", 3, "--out", out], "cannot be centred"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing-frame", "unknown-frame", "other-size", "unknown-seq", "wrong-split",
                                  "no-split", "bad-seq", "not-a-store", "empty-folder", "out-in-store",
                                  "out-in-restored", "bad-tfp-width"])
def test_a_folder_that_does_not_match_the_store_is_a_clear_error(train_store, tmp_path, case):
    store = tmp_path / "store"
    shutil.copytree(train_store, store)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    args, msg = _case(case, store, tmp_path)
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert msg in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "v").exists() and not (store / "view").exists()
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_restored_options_need_restored(train_store, tmp_path):
    res = run(train_store, "--tfp", "--out", tmp_path / "v")
    assert res.exit_code == 2 and "go with --restored" in res.output


@given(h=st.integers(1, 40), w=st.integers(1, 40), n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_compose_copies_each_panel_unchanged_on_an_even_canvas(h, w, n, seed):
    r = np.random.default_rng(seed)
    panels = [(f"p{i}", r.integers(0, 256, (h, w, 3), dtype=np.uint8)) for i in range(n)]
    canvas = compose(panels)
    origins, size = panel_origins(h, w, n)
    assert canvas.shape == size + (3,) and size[0] % 2 == 0 and size[1] % 2 == 0
    for (_, img), (y, x) in zip(panels, origins):
        np.testing.assert_array_equal(canvas[y:y + h, x:x + w], img)


def test_on_a_real_test_output(train_store, tmp_path):
    """`spikeprep test --store --split val` with a (randomly initialised) tiny checkpoint, then view: the
    restored panel holds test's own pixels."""
    import torch

    from model.checkpoint import CKPT_VERSION, save_checkpoint
    from model.nets.integrate_vrt import build_model
    from model.test import run_test
    from schemas.config import parse_config

    cfg = parse_config(tiny_config_dict(train_store, tmp_path / "outputs"))
    torch.manual_seed(0)
    model = build_model(cfg, use_spike=True)
    ckpt = save_checkpoint(tmp_path / "spike.pth", dict(
        version=CKPT_VERSION, arm="spike", exp="t", step=1, model=model.state_dict(),
        config=cfg.model_dump(mode="json"), config_text="", best_psnr=None))
    assert cfg.DATA.K == TRAIN_K
    report = run_test(ckpt=ckpt, output=tmp_path / "test_out", store=train_store, split="val",
                      metrics_dir=tmp_path / "metrics")
    seq = val_seq(train_store)
    res = run(train_store, "--restored", tmp_path / "test_out", "--tfp", "--out", tmp_path / "v")
    assert res.exit_code == 0, res.output
    assert f"val/{seq}: {report.metrics.frames} frames (blur | restored | TFP)" in res.output
    blur = rgb(train_store, seq)
    for i, image in enumerate(sorted(report.images)):
        canvas = png(tmp_path / "v" / seq / image.name)
        np.testing.assert_array_equal(panel(canvas, 1, 3), png(image))
        np.testing.assert_array_equal(panel(canvas, 0, 3), blur[i])
    assert len(read_video(tmp_path / "v" / f"{seq}.mp4")) == report.metrics.frames
