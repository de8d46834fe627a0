"""The trainer on a tiny synthetic store, on CPU: artefacts, both arms, resume, metrics, errors, DDP."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from click.testing import CliRunner
from PIL import Image

from cli.main import main as cli
from conftest import tiny_config_dict
from model.checkpoint import load_checkpoint
from model.nets.integrate_vrt import build_model
from model.train import TrainResult, lr_factor, main
from model.train_options import TrainOptions
from model.train_step import TrainingDiverged, flow_parameter_names
from schemas.config import ConfigError, parse_config
from schemas.val_report import read_val_report
from spikeprep.errors import InputError, SpikeprepError

REPO = Path(__file__).resolve().parents[1]
STEPS = 4


def write_config(tmp: Path, store: Path, *, drop_path: float = 0.1, fuse: str | None = None, **train) -> Path:
    """A config for the tiny VRT (with drop path, so the resume test covers torch's RNG state)."""
    vrt_yaml = tmp / "vrt_tiny_droppath.yaml"
    vrt_yaml.write_text(yaml.safe_dump({"preset": "tiny", "overrides": {"drop_path_rate": drop_path}}))
    raw = tiny_config_dict(store, tmp / "outputs", **train)
    raw["MODEL"]["VRT_CFG"] = str(vrt_yaml)
    if fuse is not None:
        raw["MODEL"]["FUSE"]["TYPE"] = fuse
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def options(config: Path, **kw) -> TrainOptions:
    base = dict(config=config, max_steps=STEPS, val_every=2, visual_every=STEPS, workers=0, perceptual=False,
                progress=False, device="cpu")
    return TrainOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(train_store, tmp_path_factory):
    """Both arms, 4 steps each, validating at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("train")
    config = write_config(tmp, train_store)
    spike = main(options(config, exp="spike"))
    base = main(options(config, exp="base", use_spike=False))
    return dict(config=config, outputs=tmp / "outputs", spike=spike, base=base)


def test_schedule_is_linear_warmup_then_cosine():
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)


def test_both_arms_write_every_artefact(runs):
    out = runs["outputs"]
    for exp in ("spike", "base"):
        result = runs[exp]
        assert result.step == STEPS and len(result.losses) == STEPS
        assert all(np.isfinite(result.losses))
        for name in ("best.pth", "last.pth"):
            ckpt = load_checkpoint(out / "ckpts" / exp / name)     # weights_only=True inside
            assert ckpt["arm"] == exp and ckpt["exp"] == exp
        last = load_checkpoint(out / "ckpts" / exp / "last.pth")
        assert last["step"] == STEPS and {"optimizer", "scheduler", "scaler", "rng"} <= set(last)
        for step in (2, STEPS):
            report = read_val_report(out / "metrics" / f"val_{exp}_{step}.json")
            assert report.arm == exp and report.step == step and report.overall.frames == 6
            assert report.lpips_note and "not computed" in report.lpips_note
        assert list((out / "logs" / exp).glob("events.out.tfevents.*"))
        run_logs = list((out / "logs").glob(f"run_{exp}_*.txt"))
        assert len(run_logs) == 1
        text = run_logs[0].read_text()
        assert "git: " in text and "CLIP_LEN: 3" in text and "torch==" in text and "numpy==" in text
        final = read_val_report(out / "metrics" / f"val_{exp}_{STEPS}.json")
        images = out / final.images_dir
        assert len(list(images.glob("seq_002/*_recon.png"))) == 6          # every val frame, three images each
        assert len(list(images.glob("seq_002/*_blur.png"))) == len(list(images.glob("seq_002/*_sharp.png"))) == 6
        triptychs = sorted(images.glob("*_triptych.png"))
        assert len(triptychs) == 4
        blur = np.asarray(Image.open(images / "seq_002" / "000000_blur.png"))
        assert np.asarray(Image.open(triptychs[0])).shape == (blur.shape[0], 3 * blur.shape[1] + 4, 3)
        assert read_val_report(out / "metrics" / f"val_{exp}_2.json").images_dir is None


def test_train_result_keeps_the_recent_steps_only(monkeypatch):
    """A long run's result does not grow without bound: the last RECENT_STEPS steps, in order."""
    import model.train as train_mod

    monkeypatch.setattr(train_mod, "RECENT_STEPS", 3)
    result = TrainResult(exp="x", step=0)
    for step in range(5):
        result.record_step(float(step), [("seq", (step,), (0, 0))])
    assert result.losses == [2.0, 3.0, 4.0]
    assert result.batches == [[("seq", (step,), (0, 0))] for step in (2, 3, 4)]


def test_arms_see_the_same_clips_and_crops_and_differ_only_in_spikes(runs):
    assert runs["spike"].batches == runs["base"].batches
    assert len(runs["spike"].batches) == STEPS
    out = runs["outputs"]
    spike, base = (load_checkpoint(out / "ckpts" / e / "last.pth")["model"] for e in ("spike", "base"))
    assert set(base) < set(spike)
    assert all(k.startswith(("spike_encoder.", "spike_tsa.", "fuse.")) for k in set(spike) - set(base))


def test_validation_metrics_equal_basicsr_on_the_written_images(runs):
    out = runs["outputs"]
    report = read_val_report(out / "metrics" / f"val_spike_{STEPS}.json")
    folder = out / report.images_dir / "seq_002"
    psnr, ssim = [], []
    for recon_path in sorted(folder.glob("*_recon.png")):
        recon = np.asarray(Image.open(recon_path))
        sharp = np.asarray(Image.open(str(recon_path).replace("_recon", "_sharp")))
        psnr.append(calculate_psnr(recon, sharp, crop_border=0, input_order="HWC"))
        ssim.append(calculate_ssim(recon, sharp, crop_border=0, input_order="HWC"))
    assert len(psnr) == 6
    assert report.overall.psnr_rgb == pytest.approx(float(np.mean(psnr)), abs=1e-9)
    assert report.overall.ssim == pytest.approx(float(np.mean(ssim)), abs=1e-9)
    assert report.per_sequence["seq_002"].psnr_rgb == pytest.approx(report.overall.psnr_rgb, abs=1e-9)


def test_resume_continues_exactly(runs, tmp_path):
    config = runs["config"]
    first = main(options(config, exp="resumed", stop_at=2))
    assert first.step == 2 and first.losses == runs["spike"].losses[:2]
    second = main(options(config, exp="resumed", resume=True))
    assert second.step == STEPS
    assert second.losses == runs["spike"].losses[2:]                  # bit for bit, on CPU
    a = load_checkpoint(runs["outputs"] / "ckpts" / "spike" / "last.pth")["model"]
    b = load_checkpoint(runs["outputs"] / "ckpts" / "resumed" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fuse,branch", [("ResidualTemporalCrossAttn", True),
                                         ("ResidualTemporalCrossAttnSpikeHead", True),
                                         ("ResidualTemporalCrossAttnFittedSpikeHead", True),
                                         ("ResidualTemporalCrossAttnGatedSpikeHead", True),
                                         ("ResidualTemporalCrossAttnMotionGatedSpikeHead", True),
                                         ("ResidualTemporalCrossAttnMotionGatedSpikeHead", False)])
def test_every_fuse_type_trains_saves_and_resumes(train_store, tmp_path, fuse, branch):
    """(TemporalCrossAttn is the `runs` fixture's type.) Resume is bit for bit; the report measures reliance.
    ``branch`` False: MODEL.SPIKE_BRANCH false, the spike arm without the original's spike branch."""
    from model.nets.registry import fuse_type
    from schemas.fuse_types import FUSE_TYPE_INFO

    config = write_config(tmp_path, train_store, fuse=fuse)
    if not branch:
        raw = yaml.safe_load(config.read_text())
        raw["MODEL"]["SPIKE_BRANCH"] = False
        config.write_text(yaml.safe_dump(raw))
    whole = main(options(config, exp="whole", val_every=STEPS))
    # the reliance probes change nothing in training: only the uninterrupted run pays for them
    main(options(config, exp="cut", stop_at=2, val_every=STEPS, reliance=False))
    resumed = main(options(config, exp="cut", resume=True, val_every=STEPS, reliance=False))
    assert resumed.losses == whole.losses[2:]
    out = tmp_path / "outputs"
    a, b = (load_checkpoint(out / "ckpts" / e / "last.pth") for e in ("whole", "cut"))
    assert a["config"]["MODEL"]["FUSE"]["TYPE"] == fuse
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    info = FUSE_TYPE_INFO[fuse]
    assert any(k.startswith("spike_head.") for k in a["model"]) == (fuse_type(fuse).head is not None)
    assert any(k.startswith("spike_encoder.") for k in a["model"]) == branch    # no-branch: cut out
    if info.fitted:           # started at the training split's least-squares map, kept through the resume
        from spikeprep.baselines import grid_scale, replicate
        from spikeprep.spike_deblur_dataset import SpikeDeblurDataset

        frames = SpikeDeblurDataset(train_store, "train", clip_len=1, train=False, voxels="counts")
        squares = []                     # every training count at every RGB pixel it covers, brute force
        for i in range(len(frames)):
            counts, blur = frames[i]["spike_counts"][0].numpy(), frames[i]["blur"][0].numpy()
            squares.append((replicate(counts, grid_scale(counts, blur)).astype(np.float64) ** 2).ravel())
        count_rms, k = np.sqrt(np.concatenate(squares).mean()), frames.num_bins
        assert not a["model"]["spike_head.input_mean"].any()         # counts / their RMS, the blur as it is
        assert np.allclose(a["model"]["spike_head.input_scale"].numpy(), [count_rms] * k + [1, 1, 1], rtol=1e-6)
        assert torch.equal(a["model"]["spike_head.input_scale"], b["model"]["spike_head.input_scale"])
        assert torch.equal(a["model"]["spike_head.voxel_norm"], b["model"]["spike_head.voxel_norm"])
    report = read_val_report(out / "metrics" / f"val_whole_{STEPS}.json")
    assert report.version == 3 and report.reliance is not None and report.db_from_spikes() is not None
    assert report.fuse_type == fuse and report.fitted_head == info.fitted and report.static is not None
    raw = yaml.safe_load(config.read_text())
    raw["MODEL"]["FUSE"]["TYPE"] = "TemporalCrossAttn"
    raw["MODEL"]["SPIKE_BRANCH"] = True
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="FUSE"):
        main(options(other, exp="whole", resume=True))


def test_a_totals_only_arm_trains_validates_on_its_voxels_and_resumes_only_with_them(train_store, tmp_path):
    """DATA.TOTALS_ONLY (issue 29): the fitted head starts at the least-squares map of the totals-only counts,
    training and validation serve totals-only voxels, the checkpoint's config keeps the option."""
    from model.checkpoint import model_from_checkpoint
    from model.validate import validate
    from spikeprep.spike_deblur_dataset import SpikeDeblurDataset

    fuse = "ResidualTemporalCrossAttnFittedSpikeHead"
    config = write_config(tmp_path, train_store, fuse=fuse)
    raw = yaml.safe_load(config.read_text())
    raw["DATA"]["TOTALS_ONLY"] = True
    config.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    # the start: one tap for the total, shared by the K bins (least squares' minimum-norm answer to K equal inputs)
    head = build_model(cfg, use_spike=True).spike_head
    train_ds = SpikeDeblurDataset.from_config(cfg, "train", seed=cfg.SEED, compact=True)
    head.fit_start(train_ds, print)
    taps = head.from_counts.weight[0, :, 1, 1]
    assert taps.abs().max() > 0 and torch.allclose(taps, taps[:1].expand_as(taps), rtol=1e-4)

    result = main(options(config, exp="totals", max_steps=2, val_every=2, reliance=False))
    assert result.step == 2 and all(np.isfinite(result.losses))
    out = tmp_path / "outputs"
    ckpt = load_checkpoint(out / "ckpts" / "totals" / "last.pth")
    assert ckpt["config"]["DATA"]["TOTALS_ONLY"] is True
    report = read_val_report(out / "metrics" / "val_totals_2.json")
    model = model_from_checkpoint(ckpt)
    kw = dict(device=torch.device("cpu"), amp=False, exp="totals", step=2, outputs=tmp_path / "again",
              lpips_metric=None, lpips_note=None, tile=(0, 0), write_images=False, visual_frames=0, reliance=False)
    mine = validate(model, SpikeDeblurDataset.from_config(cfg, "val"), **kw)
    assert mine.overall == report.overall                              # validation served totals-only voxels
    true_voxels = validate(model, SpikeDeblurDataset.from_config(parse_config({**raw, "DATA": {
        **raw["DATA"], "TOTALS_ONLY": False}}), "val"), **kw)
    assert true_voxels.overall != report.overall
    raw["DATA"]["TOTALS_ONLY"] = False
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="TOTALS_ONLY"):
        main(options(config, exp="totals", max_steps=4, resume=True, reliance=False))


def test_resume_refuses_the_other_arm(runs):
    with pytest.raises(InputError, match="'spike' arm"):
        main(options(runs["config"], exp="spike", use_spike=False, resume=True))


def test_freeze_flow_steps_keeps_spynet_and_offsets_fixed(runs, tmp_path):
    config = write_config(tmp_path, Path(parse_config(yaml.safe_load(runs["config"].read_text())).DATA.ROOT))
    main(options(config, exp="frozen", max_steps=2, val_every=2, freeze_flow_steps=2))
    cfg = parse_config(yaml.safe_load(config.read_text()))
    torch.manual_seed(cfg.SEED)
    initial = build_model(cfg).state_dict()
    trained = load_checkpoint(tmp_path / "outputs" / "ckpts" / "frozen" / "last.pth")["model"]
    names = flow_parameter_names(build_model(cfg))
    assert any(n.startswith("vrt.spynet.") for n in names) and any(".conv_offset." in n for n in names)
    assert all(torch.equal(initial[n], trained[n]) for n in names)
    assert not torch.equal(initial["vrt.conv_first.weight"], trained["vrt.conv_first.weight"])
    # after the frozen steps they train again
    main(options(config, exp="thawed", max_steps=2, val_every=2, freeze_flow_steps=1))
    thawed = load_checkpoint(tmp_path / "outputs" / "ckpts" / "thawed" / "last.pth")["model"]
    assert not torch.equal(initial["vrt.spynet.basic_module.0.basic_module.0.weight"],
                           thawed["vrt.spynet.basic_module.0.basic_module.0.weight"])


def test_nan_loss_stops_with_the_checks_and_saves_nothing(runs, tmp_path):
    from model.nets.integrate_vrt import build_model as real_build

    def poisoned(cfg, use_spike=True):
        m = real_build(cfg, use_spike)
        m.register_forward_hook(lambda mod, inp, out: out * float("nan"))
        return m

    config = write_config(tmp_path, Path(yaml.safe_load(runs["config"].read_text())["DATA"]["ROOT"]))
    with pytest.raises(TrainingDiverged, match="section 13") as err:
        main(options(config, exp="nan"), model_builder=poisoned)
    assert "DATA.NORM.STD" in str(err.value) and "log1p" in str(err.value)
    assert not (tmp_path / "outputs" / "ckpts" / "nan").exists()


def test_missing_vgg_weights_is_a_clear_error(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(SpikeprepError, match="--no-vgg"):
        main(options(runs["config"], exp="vgg", perceptual=True))


def test_dry_run_prints_shapes_and_counts_and_writes_nothing(train_store, tmp_path):
    config = write_config(tmp_path, train_store)
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--dry-run", "--workers", "0",
                                      "--no-vgg", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # 4 scales, Fr_i and Fs_i of equal (B, T_i, C_i, H_i, W_i): T kept, H and W halved per scale
    for i in range(4):
        row = next(line for line in lines if line.strip().startswith(f"{i + 1} |"))
        fr, fs = (part.strip() for part in row.split("|")[1:])
        assert fr == fs == str((1, 3, 16, 64 >> i, 64 >> i))
    assert "spike branch" in result.output and "parameters" in result.output
    assert not (tmp_path / "outputs").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_gloo_keeps_ranks_identical(train_store, tmp_path):
    config = write_config(tmp_path, train_store, drop_path=0.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "cli.main", "train", "--config", str(config), "--exp", "ddp",
           "--max-steps", "2", "--val-every", "2", "--workers", "0", "--device", "cpu", "--no-vgg",
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DDP: parameters identical across 2 ranks" in proc.stdout
    assert proc.stdout.count("val step 2") == 1                          # rank 0 alone validates and logs
    ckpt = load_checkpoint(tmp_path / "outputs" / "ckpts" / "ddp" / "last.pth")
    assert ckpt["step"] == 2
    assert json.loads((tmp_path / "outputs" / "metrics" / "val_ddp_2.json").read_text())["step"] == 2


def test_compare_reads_what_the_trainer_wrote(runs):
    # The two real runs (not fabricated reports): the table, the verdict and the picture come out.
    out = runs["outputs"]
    result = CliRunner().invoke(cli, ["compare", "spike", "base", "--outputs", str(out), "--crop-size", "32"])
    assert result.exit_code in (0, 1), result.output                  # PASS or FAIL, not an input error
    assert "PASS" in result.output or "FAIL" in result.output
    assert "not computed" in result.output                             # LPIPS weights are not on this machine
    report = json.loads((out / "metrics" / f"compare_spike_vs_base_{STEPS}.json").read_text())
    assert report["steps"] == [2, STEPS] and Path(report["picture"]).is_file()
    # the curves: every step's loss from the trainer's TensorBoard events, the validations from the reports
    from model.compare import load_curves, load_run
    from model.compare_figures import CURVES_DPI, CURVES_FIGSIZE

    with Image.open(report["curves"]) as im:
        im.load()
        assert im.size == (round(CURVES_FIGSIZE[0] * CURVES_DPI), round(CURVES_FIGSIZE[1] * CURVES_DPI))
    assert report["curves_notes"] == {}
    for exp in ("spike", "base"):
        curves = load_curves(load_run(exp, out))
        assert curves.loss_steps == list(range(1, STEPS + 1))
        assert curves.loss == [np.float32(v) for v in runs[exp].losses]       # TensorBoard keeps float32
        assert curves.val_steps == [2, STEPS]
        assert curves.psnr_rgb == [read_val_report(out / "metrics" / f"val_{exp}_{s}.json").overall.psnr_rgb
                                   for s in (2, STEPS)]
    spike = load_curves(load_run("spike", out))
    assert spike.db_from_spikes[-1] == read_val_report(out / "metrics" / f"val_spike_{STEPS}.json").db_from_spikes()


def test_damaged_training_frames_are_dropped_and_counted(train_store, tmp_path, capsys):
    import shutil

    from spikeprep.store import ChunkReader
    from spikeprep.store import read_manifest

    store = Path(shutil.copytree(train_store, tmp_path / "store"))
    row = next(r for r in read_manifest(store).to_pylist() if r["split"] == "train" and r["frame_idx"] == 2)
    shard = Path(ChunkReader(store / "train" / row["seq"] / "spike_vox.zarr" / "counts").shard_path(row["vox_index"]))
    shard.write_bytes(shard.read_bytes()[:10])                     # truncated voxel shard
    result = main(options(write_config(tmp_path, store), exp="damaged", max_steps=8, val_every=8))
    assert result.step == 8 and all(np.isfinite(result.losses))
    out = capsys.readouterr().out
    assert "all-bad batches skipped" in out                          # batch 1: a bad clip is a skipped batch
    assert not any(seq == row["seq"] and 2 in frames for step in result.batches for seq, frames, _ in step)


def test_a_store_whose_training_samples_are_all_damaged_stops_with_an_error(train_store, tmp_path):
    """Issue 16, item 5: it used to skip all-bad batches forever."""
    import shutil

    store = Path(shutil.copytree(train_store, tmp_path / "store"))
    shards = [p for p in (store / "train").rglob("spike_vox.zarr/counts/c/**/*") if p.is_file()]
    assert shards
    for shard in shards:
        shard.write_bytes(shard.read_bytes()[:10])                  # every training voxel shard truncated
    with pytest.raises(SpikeprepError, match="training batches were all unreadable") as err:
        main(options(write_config(tmp_path, store), exp="damaged", max_steps=2, val_every=2))
    assert str(store) in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(SpikeprepError, match="no readable training batch") as err:   # item 9: StopIteration
        main(options(write_config(tmp_path, store), exp="damaged", dry_run=True))
    assert str(store) in str(err.value)


def test_bad_crop_size_and_weights_are_clear_errors(train_store, tmp_path):
    """Issue 16, item 10: a crop VRT cannot take and a pickle payload as --vrt-weights, without a traceback."""
    raw = yaml.safe_load(write_config(tmp_path, train_store).read_text())
    raw["DATA"]["CROP_SIZE"] = 60
    bad = tmp_path / "crop60.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="CROP_SIZE is 60") as err:
        main(options(bad, exp="crop"))
    assert str(bad) in str(err.value) and "Fix:" in str(err.value)

    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InputError, match="cannot be loaded as official VRT weights") as err:
        main(options(write_config(tmp_path, train_store), exp="w", vrt_weights=weights, max_steps=1))
    assert str(weights) in str(err.value)
    assert not (tmp_path / "outputs" / "ckpts" / "w").exists()


# ---- what a person reads while training: the log, TensorBoard, Ctrl-C ------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_validation_line_formats_every_number_with_format_metric():
    """The line a person reads uses the reports' one number format (2 decimals for PSNR, 4 for SSIM)."""
    from model.train_log import log_validation
    from schemas.val_report import Metrics, ValReport

    m = Metrics(frames=6, psnr_rgb=21.2, psnr_y=27.5617, ssim=0.663, ssim_y=0.87321, lpips=None)
    boundary = Metrics(frames=6, psnr_rgb=16.3, psnr_y=18.0, ssim=0.5, ssim_y=0.5)
    report = ValReport(exp="e", arm="base", step=3, split="val", overall=m, boundary=boundary,
                       boundary_fraction=0.05, static=m, static_fraction=0.5, per_sequence={"s": m}, seconds=60.5)
    said = []
    log_validation(None, report, 3, said.append, None)
    assert said == ["val step 3: PSNR 21.20 dB (Y 27.56), SSIM 0.6630 (Y 0.8732), LPIPS not computed; static half: "
                    "PSNR Y 27.56 dB; motion boundaries: PSNR 16.30 dB [6 frames, 60.5 s]"]


def test_log_lines_go_through_the_bar_or_are_plain_lines_without_a_terminal(tmp_path):
    from model.train_log import TrainLog, capture_spikeprep_logging

    # A terminal: the bar is drawn, and a message clears it first (the line starts clean, not torn).
    screen = _Terminal()
    log = TrainLog(bar=True, log_every=1, desc="exp", stream=screen)
    log.start_progress(0, 3)
    log.step(1, 0.5, 1e-4)
    log.info("val step 1: PSNR 20.00 dB")
    log.step(2, 0.4, 1e-4)
    log.close()
    lines = screen.getvalue().split("\n")
    assert "%|" in screen.getvalue()                                     # the bar was there
    # the bar was cleared (carriage return, blanks, carriage return) before the line: it starts clean
    assert any(re.search(r"\r *\rval step 1: PSNR 20\.00 dB$", line) for line in lines), lines

    # Not a terminal (a job's log file): no bar, no carriage return, a line per log_every steps; the run log
    # gets the same lines, those said before it existed included; spikeprep's warnings come the same way.
    job_log = io.StringIO()
    log = TrainLog(bar=True, log_every=2, stream=job_log)
    log.info("said before the run log existed")
    run_log = tmp_path / "run.txt"
    run_log.write_text("# header\n")
    log.attach_run_log(run_log)
    log.start_progress(0, 5)
    with capture_spikeprep_logging(log):
        for step in range(1, 6):
            log.step(step, 1.0 / step, 2e-4)
        logging.getLogger("spikeprep.dataset").warning("seq_001 frame 2: unreadable voxels, dropped")
    text = job_log.getvalue()
    assert "\r" not in text and "%|" not in text
    steps = [line for line in text.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2/5", "4/5", "5/5"]
    assert re.fullmatch(r"step 2/5 loss 0\.5000 lr 2\.00e-04 [\d.]+ step/s ETA \S+", steps[0])
    assert "WARNING seq_001 frame 2: unreadable voxels, dropped" in text
    assert run_log.read_text() == "# header\n" + text


def test_run_log_holds_the_printed_lines_and_the_lpips_reason_once(runs):
    text = next((runs["outputs"] / "logs").glob("run_spike_*.txt")).read_text()
    printed = text[text.index("# pip freeze"):]
    assert "training spike (spike arm): 4 steps" in printed and "val step 2: PSNR" in printed
    assert f"step {STEPS}/{STEPS} loss " in printed and "\r" not in text
    assert text.count("weights unavailable") == 1                        # said once, not on each validation
    assert "val step 4: PSNR" in printed and "LPIPS not computed;" in printed


def test_tensorboard_holds_triptychs_and_hparams(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = runs["outputs"]
    acc = EventAccumulator(str(out / "logs" / "spike"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    final = read_val_report(out / "metrics" / f"val_spike_{STEPS}.json")
    pngs = sorted((out / final.images_dir).glob("*_triptych.png"))
    tags = sorted(t for t in acc.Tags()["images"] if t.startswith("triptych/"))
    assert tags == [f"triptych/{p.name[:-len('_triptych.png')]}" for p in pngs] and len(tags) == 4
    for tag, png in zip(tags, pngs):
        (image,) = acc.Images(tag)                                        # the visual step only
        h, w = np.asarray(Image.open(png)).shape[:2]
        assert image.step == STEPS and (image.height, image.width) == (h, w)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["MODEL.FUSE.TYPE"].string_value == "TemporalCrossAttn" and hp["MODEL.VRT_CFG"].string_value
    assert hp["spike"].string_value == "on" and hp["DATA.K"].number_value == 8 and hp["SEED"].number_value == 123
    assert hp["DATA.TOTALS_ONLY"].string_value == "off"
    assert hp["max_steps"].number_value == STEPS and hp["DATA.CROP_SIZE"].number_value == 64
    assert hp["DATA.CLIP_LEN"].number_value == 3 and hp["TRAIN.OPTIM.LR"].number_value == pytest.approx(2e-4)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"val/best_psnr_rgb", "val/psnr_rgb", "val_boundary/psnr_rgb", "val_reliance/db_from_spikes",
            "val/ssim_y", "val_static/psnr_y"} <= metrics
    assert acc.Scalars("val_static/psnr_y")[-1].value == pytest.approx(final.static.psnr_y, rel=1e-6)
    assert "_hparams_/session_end_info" in content                       # the run reached its last step
    assert acc.Scalars("val/best_psnr_rgb")[-1].value == pytest.approx(runs["spike"].best_psnr, rel=1e-6)
    assert acc.Scalars("val/psnr_rgb")[-1].value == pytest.approx(final.overall.psnr_rgb, rel=1e-6)
    base = EventAccumulator(str(out / "logs" / "base"), size_guidance={"tensors": 0})
    base.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        base.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["spike"].string_value == "off"


def test_ctrl_c_handler_first_asks_then_stops_at_once(tmp_path, monkeypatch):
    from model.checkpoint import save_checkpoint
    from model.train_interrupt import StopOnSignals

    before = signal.getsignal(signal.SIGINT)
    with StopOnSignals(announce=False) as ctrl_c:
        signal.raise_signal(signal.SIGINT)
        assert ctrl_c.requested                                          # asked, nothing raised
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before

    # The second Ctrl-C in the middle of writing last.pth: the previous last.pth stays whole.
    last = tmp_path / "last.pth"
    save_checkpoint(last, {"step": 2})
    real_save = torch.save

    def interrupted_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")                                # (save_checkpoint passes a file)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(last, {"step": 3})
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(last, weights_only=True) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]          # no temp file left


def test_ctrl_c_saves_last_pth_at_the_current_step_and_the_printed_resume_continues(train_store, tmp_path):
    config = write_config(tmp_path, train_store)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "cli.main", "train", "--config", str(config), "--exp", "ctrlc", "--max-steps", "6",
           "--val-every", "6", "--visual-every", "6", "--log-every", "1", "--workers", "1", "--device", "cpu",
           "--no-vgg", "--no-reliance"]
    # A session of its own: Ctrl-C in a terminal signals the whole process group, the DataLoader worker too.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    watchdog = threading.Timer(600, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:                  # not a terminal: plain progress lines, one per step
            lines.append(line)
            if line.startswith("step 2/6 "):
                os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait()
    finally:
        watchdog.cancel()
    out = "".join(lines)
    assert code == 130, out
    assert "Traceback" not in out and "Aborted!" not in out and "\r" not in out
    saved = re.search(r"interrupted \(Ctrl-C\) after step (\d+); saved (\S+) at step (\d+)", out)
    assert saved, out
    step = int(saved[1])
    assert 2 <= step < 6 and int(saved[3]) == step
    assert Path(saved[2]) == tmp_path / "outputs" / "ckpts" / "ctrlc" / "last.pth"
    ckpt = load_checkpoint(saved[2])
    assert ckpt["step"] == step and {"optimizer", "scheduler", "scaler", "rng"} <= set(ckpt)
    assert not (tmp_path / "outputs" / "metrics").exists()               # no validation was due yet
    resume = shlex.split(next(line for line in lines if line.startswith("resume with: "))[len("resume with: "):])
    assert resume[:2] == ["spikeprep", "train"] and resume[-1] == "--resume"
    done = subprocess.run([sys.executable, "-m", "cli.main", *resume[1:]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"at step {step} (epoch 0, batch {step})" in done.stdout
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("step ")] == \
        [f"{s}/6" for s in range(step + 1, 7)]
    assert load_checkpoint(tmp_path / "outputs" / "ckpts" / "ctrlc" / "last.pth")["step"] == 6


# ---- issue 28: reruns, concurrent runs, signals, diverged weights, full disks ------------------------------
def _cli_train(config: Path, exp: str, *extra: str):
    return CliRunner().invoke(cli, ["train", "--config", str(config), "--exp", exp, "--max-steps", "1", "--val-every",
                                    "1", "--visual-every", "1", "--workers", "0", "--device", "cpu", "--no-vgg",
                                    "--no-progress", "--no-reliance", *extra])


def test_a_rerun_of_an_experiment_is_refused_and_start_over_moves_the_old_run_aside(train_store, tmp_path):
    """Issue 28, item 1: a rerun without --resume used to overwrite best.pth/last.pth and mix the reports
    (--resume with outputs: test_resume_continues_exactly). Also: the temp file of a killed checkpoint save is
    removed by the next run."""
    config = write_config(tmp_path, train_store)
    out = tmp_path / "outputs"
    ckpts = out / "ckpts" / "a"
    assert _cli_train(config, "a").exit_code == 0
    before = (ckpts / "last.pth").read_bytes()

    again = _cli_train(config, "a")
    assert again.exit_code == 2, again.output
    assert f"error: {ckpts}: experiment 'a' already has a run in {out}" in again.output, again.output
    assert "--resume" in again.output and "--start-over" in again.output and "Traceback" not in again.output
    assert (ckpts / "last.pth").read_bytes() == before and sorted(os.listdir(out / "metrics")) == ["val_a_1.json"]

    stale = ckpts / ".last.pth.999999999-0123456789ab.tmp.pth"        # a save killed before its rename
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    fresh = _cli_train(config, "a", "--start-over")
    assert fresh.exit_code == 0, fresh.output
    assert f"removed {stale}" in fresh.output and not stale.exists()
    moved = Path(re.search(r"moved the previous run of 'a' to (\S+) ", fresh.output)[1])
    assert moved.parent == out / "superseded" and moved.name.startswith("a_")
    assert (moved / "ckpts" / "a" / "last.pth").read_bytes() == before
    assert os.listdir(moved / "metrics") == ["val_a_1.json"] and (moved / "logs" / "a").is_dir()
    assert len(list((moved / "logs").glob("run_a_*.txt"))) == 1 and len(list((out / "logs").glob("run_a_*.txt"))) == 1
    assert os.listdir(out / "metrics") == ["val_a_1.json"] and load_checkpoint(ckpts / "last.pth")["step"] == 1
    assert _cli_train(config, "a", "--start-over", "--resume").exit_code == 2


def test_a_second_training_of_the_same_experiment_stops_at_once_naming_the_first(train_store, tmp_path):
    """Issue 28, item 3: two runs of one --exp used to write one checkpoint folder together."""
    config = write_config(tmp_path, train_store)
    out = tmp_path / "outputs"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from model.experiment import ExperimentOutputs, experiment_lock\n"
         "with experiment_lock(ExperimentOutputs(Path(sys.argv[1]), 'b')):\n    print('held', flush=True); "
         "time.sleep(600)", str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        second = _cli_train(config, "b")
        assert second.exit_code == 2, second.output
        assert f"another training of experiment 'b' is running: pid {holder.pid} on " in second.output
        assert "Fix:" in second.output and not (out / "ckpts" / "b").exists() and not (out / "metrics").exists()
    finally:
        holder.kill()
        holder.wait()
    from model.experiment import ExperimentOutputs, experiment_lock

    with experiment_lock(ExperimentOutputs(out, "b")):               # the kernel dropped the killed holder's lock
        pass


def test_outputs_inside_the_store_are_refused(train_store, tmp_path):
    """Issue 28, item 6: LOG.SAVE_DIR inside DATA_ROOT would put checkpoints among the store's files."""
    raw = yaml.safe_load(write_config(tmp_path, train_store).read_text())
    raw["LOG"]["SAVE_DIR"] = str(train_store / "outputs")
    config = tmp_path / "inside.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=f"LOG.SAVE_DIR of {config} lies inside the store {train_store}"):
        main(options(config, exp="inside"))
    assert not (train_store / "outputs").exists()


def test_sigterm_saves_last_pth_and_says_how_to_resume_and_sigusr1_saves_and_trains_on(train_store, tmp_path):
    """Issue 28, item 2: SIGTERM used to kill the run (exit 143) with nothing saved since the last validation."""
    config = write_config(tmp_path, train_store)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "cli.main", "train", "--config", str(config), "--exp", "term", "--max-steps", "8",
           "--val-every", "8", "--visual-every", "8", "--log-every", "1", "--workers", "1", "--device", "cpu",
           "--no-vgg", "--no-reliance"]
    # The signals go to the whole process group, the DataLoader worker too (a scheduler signals every process).
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    watchdog = threading.Timer(600, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step 1/8 "):
                os.killpg(proc.pid, signal.SIGUSR1)
            if line.startswith("SIGUSR1: saved "):
                os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait()
    finally:
        watchdog.cancel()
    out = "".join(lines)
    assert code == 143, out
    assert "Traceback" not in out and "\r" not in out
    ckpt = tmp_path / "outputs" / "ckpts" / "term" / "last.pth"
    kept = re.search(rf"SIGUSR1: saved {re.escape(str(ckpt))} at step (\d+); training goes on", out)
    stopped = re.search(rf"interrupted \(SIGTERM\) after step (\d+); saved {re.escape(str(ckpt))} at step (\d+)", out)
    assert kept and stopped, out
    assert 1 <= int(kept[1]) < int(stopped[1]) == int(stopped[2]) < 8          # it trained on after SIGUSR1
    assert load_checkpoint(ckpt)["step"] == int(stopped[1])
    resume = next(line for line in lines if line.startswith("resume with: "))
    assert shlex.split(resume[len("resume with: "):])[-1] == "--resume" and "--exp term" in resume


def test_weights_that_turn_non_finite_are_never_saved_and_the_message_names_the_good_checkpoint(
        train_store, tmp_path):
    """Issue 28, also found: the NaN-loss message said "last.pth holds the last good state" of a last.pth that
    held the NaN weights (a non-finite update while the loss was still finite)."""
    from model.nets.integrate_vrt import build_model as real_build

    def nan_gradient(cfg, use_spike=True):           # step 1's loss is finite, its update makes NaN weights
        m = real_build(cfg, use_spike)
        m.vrt.conv_first.weight.register_hook(lambda grad: grad * float("nan"))
        return m

    config = write_config(tmp_path, train_store)
    with pytest.raises(TrainingDiverged, match=r"weights are not finite after step 1 .* although the loss was "
                                               r"finite; nothing was saved for this step \(no checkpoint was saved"):
        main(options(config, exp="nangrad", max_steps=2, val_every=1, reliance=False), model_builder=nan_gradient)
    assert not (tmp_path / "outputs" / "ckpts" / "nangrad").exists()

    def nan_at_step_2(cfg, use_spike=True):
        m = real_build(cfg, use_spike)
        calls = []
        m.register_forward_hook(lambda mod, inp, out: (calls.append(1), out * float("nan") if len(calls) == 2
                                                       else out)[1] if mod.training else out)
        return m

    last = tmp_path / "outputs" / "ckpts" / "nan2" / "last.pth"
    with pytest.raises(TrainingDiverged, match=f"at step 2; nothing was saved for this step \\({re.escape(str(last))} "
                                               "holds step 1, the last good state\\)"):
        main(options(config, exp="nan2", max_steps=3, val_every=1, reliance=False), model_builder=nan_at_step_2)
    assert load_checkpoint(last)["step"] == 1                        # and its weights are finite (it loads)


def test_a_store_whose_training_frames_are_all_damaged_stops_before_the_fitted_heads_start(train_store, tmp_path):
    """Issue 28, round one replayed: the fitted head's least-squares start raised a bare ValueError."""
    import shutil

    store = Path(shutil.copytree(train_store, tmp_path / "store"))
    for shard in (p for p in (store / "train").rglob("spike_vox.zarr/counts/c/**/*") if p.is_file()):
        shard.write_bytes(shard.read_bytes()[:10])
    config = write_config(tmp_path, store, fuse="ResidualTemporalCrossAttnFittedSpikeHead")
    for dry_run in (True, False):
        with pytest.raises(SpikeprepError, match="every train frame was unreadable") as err:
            main(options(config, exp="fitted", dry_run=dry_run))
        assert str(store) in str(err.value) and "Fix:" in str(err.value)


def test_a_checkpoint_save_on_a_full_disk_says_so_and_leaves_nothing_partial(tmp_path, monkeypatch):
    """Issue 28, item 9 (simulated: a write that raises ENOSPC, as on any machine). Before: torch's
    "[enforce fail at inline_container.cc:672] unexpected pos"."""
    import builtins
    import errno

    import model.checkpoint as checkpoint_module
    from model.checkpoint import save_checkpoint

    last = tmp_path / "ckpts" / "last.pth"
    save_checkpoint(last, {"step": 1})

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.room = fh, 1000

        def write(self, data):
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(checkpoint_module, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k)), raising=False)
    with pytest.raises(InputError, match="no space left") as err:
        save_checkpoint(last, {"step": 2, "model": {"w": torch.zeros(100_000)}})
    assert str(err.value).startswith(f"{last}: ") and "Fix:" in str(err.value)
    assert os.listdir(last.parent) == ["last.pth"] and torch.load(last, weights_only=True) == {"step": 1}

    last.unlink()
    last.mkdir()                                    # last.pth a folder: said, not "checkpoint not found"
    with pytest.raises(InputError, match="is a folder, not a checkpoint file"):
        load_checkpoint(last)


def test_training_onto_a_full_tmpfs_stops_with_no_space_left_naming_the_checkpoint(train_store, tmp_path):
    """Issue 28, item 9 on a real full disk: a 1 MiB tmpfs as LOG.SAVE_DIR (mounting needs root)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err}); the simulated ENOSPC test covers the save")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the simulated ENOSPC test covers the save")
    try:
        raw = yaml.safe_load(write_config(tmp_path, train_store).read_text())
        raw["LOG"]["SAVE_DIR"] = str(mount / "outputs")
        config = tmp_path / "full.yaml"
        config.write_text(yaml.safe_dump(raw))
        result = _cli_train(config, "full")
        assert result.exit_code == 2, result.output
        ckpts = mount / "outputs" / "ckpts" / "full"
        assert re.search(rf"error: {re.escape(str(ckpts))}/(best|last)\.pth: no space left", result.output), \
            result.output
        assert "Traceback" not in result.output and not [p for p in ckpts.iterdir() if ".tmp" in p.name]
    finally:
        subprocess.run(["umount", str(mount)], timeout=30)


def test_sigterm_before_the_training_loop_is_said_and_exits_143(tmp_path, monkeypatch):
    """Issue 28, item 2: outside the loop (reading data, building the model) SIGTERM used to end the process
    without a word; it now leaves like a Ctrl-C there (nothing was trained yet, so nothing to save)."""
    import model.train as train_module

    def terminated_while_loading(opts):
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(train_module, "main", terminated_while_loading)
    before = signal.getsignal(signal.SIGTERM)
    config = tmp_path / "any.yaml"
    config.write_text("{}")
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--exp", "t"])
    assert result.exit_code == 143, result.output
    assert "interrupted (SIGTERM); checkpoints saved before it are whole" in result.output
    assert signal.getsignal(signal.SIGTERM) is before
