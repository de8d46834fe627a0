"""``spikeprep test``: one image per input frame, the Dataset's normalisation, the metrics JSON, clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from cli.main import main
from model.checkpoint import CKPT_VERSION, load_checkpoint, model_from_checkpoint, save_checkpoint
from model.nets.integrate_vrt import build_model
from spikeprep.inference_inputs import plan_clips, resolve_sequences, spike_lut
from schemas.config import parse_config
from schemas.test_report import read_test_report
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset
from spikeprep.store import open_vox, read_store_info

from conftest import TRAIN_K, tiny_config_dict, torch_threads_fixture

# The tiny VRT is ~10x slower when torch's threads fight other processes for 2 shared cores.
_one_thread = torch_threads_fixture(1)


@pytest.fixture(scope="module")
def setup(train_store, tmp_path_factory):
    """Checkpoints of both arms (made without the trainer), the config, and the val sequence's name."""
    root = tmp_path_factory.mktemp("test_cmd")
    cfg = parse_config(tiny_config_dict(train_store, root / "outputs"))
    ckpts = {}
    for arm in ("spike", "base"):
        torch.manual_seed(0)
        model = build_model(cfg, use_spike=arm == "spike")
        ckpts[arm] = save_checkpoint(root / f"{arm}.pth", dict(
            version=CKPT_VERSION, arm=arm, exp="t", step=7, model=model.state_dict(),
            config=cfg.model_dump(mode="json"), config_text="", best_psnr=None))
    (val_key,) = [k for k, s in read_store_info(train_store).sequences.items() if s.split == "val"]
    return {"store": train_store, "cfg": cfg, "ckpt": ckpts, "seq": val_key.split("/")[1], "root": root}


def run(*args):
    return CliRunner().invoke(main, ["test", *map(str, args), "--no-progress"])


def blur_dir(setup, dest: Path) -> Path:
    """A plain folder of the val sequence's blur PNGs (as a user would have), named after the sequence."""
    folder = dest / setup["seq"]
    shutil.copytree(setup["store"] / "val" / setup["seq"] / "blur", folder)
    return folder


def counts_of(setup) -> np.ndarray:
    return np.asarray(open_vox(setup["store"] / "val" / setup["seq"] / "spike_vox.zarr" / "counts")[:])


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def metrics_of(result) -> tuple[Path, dict]:
    path = Path(result.output.strip().splitlines()[-1].removeprefix("metrics: "))
    return path, json.loads(path.read_text())


@pytest.mark.parametrize("arm", ["spike", "base"])
def test_store_split_one_png_per_frame_and_metrics(setup, arm, tmp_path):
    out = tmp_path / "out"
    result = run("--ckpt", setup["ckpt"][arm], "--store", setup["store"], "--split", "val", "--output", out)
    assert result.exit_code == 0, result.output
    stems = sorted(p.stem for p in (setup["store"] / "val" / setup["seq"] / "blur").glob("*.png"))
    files = images_under(out)
    assert [p.relative_to(out).as_posix() for p in files] == [f"{setup['seq']}/{s}.png" for s in stems]
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 80, 3) and img.dtype == np.uint8
    path, m = metrics_of(result)
    assert path.parent == setup["root"] / "outputs" / "metrics" and path.name.startswith("test_")
    assert m["arm"] == arm and m["step"] == 7 and m["checkpoint"] == str(setup["ckpt"][arm].resolve())
    assert m["frames"] == len(stems) and m["sequences"] == {setup["seq"]: len(stems)}
    assert m["clips"] == 2 and m["clip_len"] == 3 and m["device"] == "cpu"
    assert m["tile"] == [0, 256, 256] and m["overlap"] == [2, 20, 20]
    assert 0 < m["seconds_per_frame"] <= m["seconds_per_frame_total"]
    assert m["peak_memory_mib"] > 0 and "ru_maxrss" in m["peak_memory_method"]
    assert m["inputs"]["splits"] == ["val"]
    assert (m["inputs"]["spike_vox"] is None) == (arm == "base")
    assert read_test_report(path).model_dump(mode="json") == m  # the record, read back


def test_voxels_are_the_datasets_and_output_is_the_models(setup, tmp_path):
    cfg, store = setup["cfg"], setup["store"]
    ds = SpikeDeblurDataset(store, "val", clip_len=cfg.DATA.CLIP_LEN, num_bins=TRAIN_K, norm_mean=cfg.DATA.NORM.MEAN,
                            norm_std=cfg.DATA.NORM.STD, train=False)
    from_store, _ = resolve_sequences(num_bins=TRAIN_K, use_spike=True, cfg=cfg, input_spike_vox=store, split="val")
    from_dir, _ = resolve_sequences(num_bins=TRAIN_K, use_spike=True, cfg=cfg, input_spike_vox=store,
                                    input_blur=blur_dir(setup, tmp_path / "frames"))
    lut = spike_lut(cfg)
    for (seq,) in (from_store, from_dir):
        clips = plan_clips(seq.runs, cfg.DATA.CLIP_LEN)
        assert len(clips) == len(ds)
        for i, positions in enumerate(clips):
            item = ds[i]
            assert [seq.stems[p] for p in positions] == [f"{f:06d}" for f in item["meta"]["frame_idx"]]
            blur, spike = seq.load_clip(positions, lut, TRAIN_K)
            np.testing.assert_array_equal(blur, item["blur"].numpy())
            np.testing.assert_array_equal(spike, item["spike_vox"].numpy())

    out = tmp_path / "out"
    result = run("--ckpt", setup["ckpt"]["spike"], "--store", store, "--output", out)  # split: DATA.VAL_SPLIT
    assert result.exit_code == 0, result.output
    model = model_from_checkpoint(load_checkpoint(setup["ckpt"]["spike"])).eval()
    for i in range(len(ds)):
        item = ds[i]
        with torch.no_grad():
            recon = model(item["blur"][None], item["spike_vox"][None])[0]
        expected = (recon.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for t, f in enumerate(item["meta"]["frame_idx"]):
            got = cv2.imread(str(out / setup["seq"] / f"{f:06d}.png"))[..., ::-1]
            assert np.abs(got.astype(int) - expected[t]).max() <= 1


def test_npy_voxel_dir_on_a_coarser_spike_grid(setup, tmp_path):
    """The original document's cache (float32 counts per frame), spikes at half the RGB resolution."""
    cfg = setup["cfg"]
    frames = blur_dir(setup, tmp_path / "frames")
    counts = counts_of(setup).astype(np.float32)
    coarse = counts.reshape(*counts.shape[:2], 32, 2, 40, 2).sum(axis=(3, 5))  # [N, K, 32, 40]
    vox = tmp_path / "vox"
    vox.mkdir()
    for p, c in zip(sorted(frames.glob("*.png")), coarse):
        np.save(vox / f"{p.stem}.npy", c)
    (seq,), _ = resolve_sequences(num_bins=TRAIN_K, use_spike=True, cfg=cfg, input_blur=frames, input_spike_vox=vox)
    assert seq.scale == (2, 2)
    _, spike = seq.load_clip([0, 1], spike_lut(cfg), TRAIN_K)
    oracle = (np.log1p(coarse[:2].astype(np.float64)) - cfg.DATA.NORM.MEAN) / cfg.DATA.NORM.STD
    oracle = oracle.repeat(2, axis=2).repeat(2, axis=3).astype(np.float32)
    np.testing.assert_array_equal(spike, oracle)

    # names that do not match the frames: paired by (natural) order
    other = tmp_path / "vox_other"
    other.mkdir()
    for i, c in enumerate(coarse):
        np.save(other / f"v{i}.npy", c.astype(np.uint16))
    (seq2,), _ = resolve_sequences(num_bins=TRAIN_K, use_spike=True, cfg=cfg, input_blur=frames,
                                   input_spike_vox=other)
    np.testing.assert_array_equal(seq2.load_clip([0, 1], spike_lut(cfg), TRAIN_K)[1], spike)

    out = tmp_path / "out"
    result = run("--ckpt", setup["ckpt"]["spike"], "--input_blur", frames, "--input_spike_vox", vox, "--output", out,
                 "--metrics-dir", tmp_path / "metrics")
    assert result.exit_code == 0, result.output
    assert [p.name for p in images_under(out)] == [p.name for p in sorted(frames.glob("*.png"))]
    assert len(list((tmp_path / "metrics").glob("test_*.json"))) == 1


def test_base_arm_needs_no_voxels_and_writes_jpeg(setup, tmp_path):
    frames = blur_dir(setup, tmp_path / "frames")
    out = tmp_path / "out"
    result = run("--ckpt", setup["ckpt"]["base"], "--input_blur", frames, "--input_spike_vox", tmp_path / "nowhere",
                 "--output", out, "--format", "jpg", "--metrics-dir", tmp_path / "metrics")
    assert result.exit_code == 0, result.output
    assert "uses no voxels" in result.output
    assert [p.name for p in images_under(out)] == [p.stem + ".jpg" for p in sorted(frames.glob("*.png"))]
    # the seed's names stay; the dashed spellings are the same options
    dashed = run("--ckpt", setup["ckpt"]["base"], "--input-blur", frames, "--input-spike-vox", tmp_path / "nowhere",
                 "--output", tmp_path / "dashed", "--format", "jpg", "--metrics-dir", tmp_path / "metrics")
    assert dashed.exit_code == 0, dashed.output
    assert [p.name for p in images_under(tmp_path / "dashed")] == [p.name for p in images_under(out)]

    result = run("--ckpt", setup["ckpt"]["spike"], "--input_blur", frames, "--output", out)
    assert result.exit_code == 2 and "needs voxel counts" in result.output and "--input_spike_vox" in result.output


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_checkpoint_is_a_clear_error(setup, damage, tmp_path):
    bad = tmp_path / "best.pth"
    data = setup["ckpt"]["spike"].read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint\n" * 64)
    result = run("--ckpt", bad, "--store", setup["store"], "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"error: {bad}: not a readable checkpoint" in result.output and "Fix:" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_wrong_arm_or_config_is_refused(setup, tmp_path):
    out = tmp_path / "out"
    result = run("--ckpt", setup["ckpt"]["spike"], "--no-spike", "--store", setup["store"], "--output", out)
    assert result.exit_code == 2 and "is the 'spike' arm, but the 'base' arm was asked for" in result.output
    result = run("--ckpt", setup["ckpt"]["base"], "--spike", "--store", setup["store"], "--output", out)
    assert result.exit_code == 2 and "is the 'base' arm" in result.output

    raw = tiny_config_dict(setup["store"], tmp_path / "outputs")
    raw["MODEL"]["SPIKE_TSA"]["HEADS"] = 4  # another model
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    result = run("--ckpt", setup["ckpt"]["spike"], "--config", other, "--store", setup["store"], "--output", out)
    assert result.exit_code == 2 and "different models: MODEL.SPIKE_TSA" in result.output
    assert str(setup["ckpt"]["spike"]) in result.output and not out.exists()


def test_mismatched_voxels_are_clear_errors(setup, tmp_path):
    frames = blur_dir(setup, tmp_path / "frames")
    counts = counts_of(setup)
    n = len(counts)

    def vox_dir(name, arrays):
        folder = tmp_path / name
        folder.mkdir()
        for i, a in enumerate(arrays):
            np.save(folder / f"{i:06d}.npy", a)
        return folder

    cases = {
        "count": (vox_dir("short", counts[:-1]), f"{n - 1} voxel frames here but {n} blur frames in {frames}"),
        "k": (vox_dir("k4", counts[:, :4]), f"voxels hold K=4 time bins, the checkpoint was trained with K={TRAIN_K}"),
        "grid": (vox_dir("grid", counts[:, :, :48]), "spike grid 48x80 does not divide the RGB frames 64x80"),
        "normalised": (vox_dir("norm", np.log1p(counts.astype(np.float32))), "look normalised already"),
    }
    for name, (vox, message) in cases.items():
        result = run("--ckpt", setup["ckpt"]["spike"], "--input_blur", frames, "--input_spike_vox", vox,
                     "--output", tmp_path / "out")
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output and "Fix:" in result.output, (name, result.output)
        assert str(vox) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_help_has_examples():
    result = CliRunner().invoke(main, ["test", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "spike-free arm" in result.output


@pytest.mark.parametrize("damage", ["flipped bit", "deleted shard"])
def test_a_damaged_store_shard_is_a_clear_error(setup, damage, tmp_path):
    """Issue 16, item 9: a corrupted voxel shard used to end in blosc's RuntimeError; a deleted one gave zeros."""
    from spikeprep.store import ChunkReader

    store = Path(shutil.copytree(setup["store"], tmp_path / "store"))
    vox = store / "val" / setup["seq"] / "spike_vox.zarr" / "counts"
    shard = Path(ChunkReader(vox).shard_path(0))
    if damage == "flipped bit":
        data = bytearray(shard.read_bytes())
        data[20] ^= 0x10
        shard.write_bytes(bytes(data))
    else:
        shard.unlink()
    out = tmp_path / "out"
    result = run("--ckpt", setup["ckpt"]["spike"], "--store", store, "--split", "val", "--output", out)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert str(vox) in result.output and "Fix:" in result.output


# ---- issue 28: non-finite weights and outputs, an output inside the store ---------------------------------
def _edited_checkpoint(setup, dest: Path, edit) -> Path:
    ckpt = load_checkpoint(setup["ckpt"]["spike"])
    edit(ckpt["model"])
    return save_checkpoint(dest, ckpt)


def test_a_checkpoint_of_non_finite_weights_is_refused_when_it_loads(setup, tmp_path):
    """Issue 28, item 5: NaN weights used to be "tested" into constant-colour images with exit 0."""
    nan = _edited_checkpoint(setup, tmp_path / "nan.pth", lambda m: m["vrt.conv_first.weight"].fill_(float("nan")))
    out = tmp_path / "out"
    result = run("--ckpt", nan, "--store", setup["store"], "--output", out)
    assert result.exit_code == 2, result.output
    assert f"error: {nan}: the weights are not finite" in result.output and "vrt.conv_first.weight" in result.output
    assert "Fix:" in result.output and "Traceback" not in result.output and not out.exists()


def test_non_finite_outputs_are_an_error_naming_the_frame(setup, tmp_path):
    """Issue 28, item 5: finite weights whose output overflows (1e38 in the last conv) name the frame."""
    huge = _edited_checkpoint(setup, tmp_path / "huge.pth", lambda m: m["vrt.conv_last.weight"].fill_(1e38))
    out = tmp_path / "out"
    result = run("--ckpt", huge, "--store", setup["store"], "--output", out, "--metrics-dir", tmp_path / "metrics")
    assert result.exit_code == 2, result.output
    first = out / setup["seq"] / "000000.png"
    assert f"error: {huge}: the model's output for sequence {setup['seq']}" in result.output, result.output
    assert f"(its image would be {first})" in result.output and "NaN or infinite" in result.output
    assert "Traceback" not in result.output and not first.exists() and not (tmp_path / "metrics").exists()


@pytest.mark.parametrize("where", ["--output", "--metrics-dir"])
def test_an_output_inside_the_store_is_refused(setup, where, tmp_path):
    """Issue 28, item 6: `--output S/val` used to write PNGs into the store, which the next ingest refused."""
    store = setup["store"]
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    inside = store / "val"
    out = inside if where == "--output" else tmp_path / "out"
    args = ["--ckpt", setup["ckpt"]["spike"], "--store", store, "--output", out]
    if where == "--metrics-dir":
        args += ["--metrics-dir", inside / "metrics"]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"{where} lies inside the store {store}" in result.output and "Fix:" in result.output
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_a_totals_only_checkpoint_is_tested_on_totals_only_voxels(setup, tmp_path):
    """DATA.TOTALS_ONLY in the checkpoint's stored config: ``spikeprep test`` serves what the arm trained on."""
    cfg = setup["cfg"].model_copy(update={"DATA": setup["cfg"].DATA.model_copy(update={"TOTALS_ONLY": True})})
    torch.manual_seed(0)
    model = build_model(cfg, use_spike=True)
    ckpt = save_checkpoint(tmp_path / "totals.pth", dict(
        version=CKPT_VERSION, arm="spike", exp="t", step=7, model=model.state_dict(),
        config=cfg.model_dump(mode="json"), config_text="", best_psnr=None))
    ds = SpikeDeblurDataset(setup["store"], "val", clip_len=cfg.DATA.CLIP_LEN, norm_mean=cfg.DATA.NORM.MEAN,
                            norm_std=cfg.DATA.NORM.STD, train=False, totals_only=True)
    (seq,), _ = resolve_sequences(num_bins=TRAIN_K, use_spike=True, cfg=cfg, input_spike_vox=setup["store"],
                                  split="val")
    for i, positions in enumerate(plan_clips(seq.runs, cfg.DATA.CLIP_LEN)):
        _, spike = seq.load_clip(positions, spike_lut(cfg), TRAIN_K, totals_only=True)
        np.testing.assert_array_equal(spike, ds[i]["spike_vox"].numpy())
        assert (spike == spike[:, :1]).all()                          # no timing left
    out = tmp_path / "out"
    result = run("--ckpt", ckpt, "--store", setup["store"], "--split", "val", "--output", out)
    assert result.exit_code == 0, result.output
    item = ds[0]
    with torch.no_grad():
        recon = model.eval()(item["blur"][None], item["spike_vox"][None])[0]
    expected = (recon.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for t, f in enumerate(item["meta"]["frame_idx"]):
        got = cv2.imread(str(out / setup["seq"] / f"{f:06d}.png"))[..., ::-1]
        assert np.abs(got.astype(int) - expected[t]).max() <= 1
    # and a config that says otherwise does not match the checkpoint
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(setup["cfg"].model_dump(mode="json")))
    refused = run("--ckpt", ckpt, "--store", setup["store"], "--output", tmp_path / "o2", "--config", other)
    assert refused.exit_code == 2 and "TOTALS_ONLY" in refused.output
