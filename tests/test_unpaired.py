"""Frames without ground truth (issue 27, part 1) and an ingest rerun on an audited store (issue 28, item 4).

A sequence without ``sharp/`` is stored unpaired (voxels and blur frames, ``paired`` False, ``sharp`` null);
a sequence with some sharp frames missing stores those frames unpaired and says so. Training refuses a
training split without paired frames and skips validation on one; ``verify``, ``audit`` and ``test`` use
unpaired frames.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from cli.main import main as cli
from conftest import AUDIT_TREE, TRAIN_K, TRAIN_TREE, tiny_config_dict, torch_threads_fixture
from model.checkpoint import CKPT_VERSION, save_checkpoint
from model.nets.integrate_vrt import build_model
from schemas.config import parse_config
from schemas.store import RGB_DIRNAME
from spikeprep.audit import AuditOptions, audit, unaudited_note
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.spike_deblur_dataset import NoPairedFrames, SpikeDeblurDataset
from spikeprep.stats import stats_from_records
from spikeprep.store import ChunkReader, read_manifest_rows, read_store_info
from schemas.sequence_record import read_sequence_record
from spikeprep.verify import verify_store

_one_thread = torch_threads_fixture(1)
OPTS = IngestOptions(num_bins=TRAIN_K, crop_size=64)


def _raw(synth_tree, dest: Path, *, val_unpaired=True, train_unpaired=False, lost=("seq_001", 2)) -> Path:
    """A copy of TRAIN_TREE (train: seq_000, seq_001; val: seq_002, 6 frames each) without the sharp frames
    of the val (and/or train) split, and with one sharp PNG of a training sequence lost."""
    raw = dest / "raw"
    shutil.copytree(synth_tree(**TRAIN_TREE), raw)
    if val_unpaired:
        shutil.rmtree(raw / "val" / "seq_002" / "sharp")
    if train_unpaired:
        for seq in (raw / "train").iterdir():
            shutil.rmtree(seq / "sharp")
    if lost is not None and not train_unpaired:
        (raw / "train" / lost[0] / "sharp" / f"{lost[1]:06d}.png").unlink()
    return raw


@pytest.fixture(scope="module")
def store(synth_tree, tmp_path_factory):
    """The val split unpaired, train/seq_001 frame 2 unpaired: (store, CLI result of its ingest)."""
    tmp = tmp_path_factory.mktemp("unpaired")
    raw = _raw(synth_tree, tmp)
    out = tmp / "store"
    result = CliRunner().invoke(cli, ["ingest", str(raw), "--out", str(out), "--k", str(TRAIN_K), "--crop", "64",
                                      "--no-progress", "--log-dir", str(tmp / "logs")])
    return out, result


def _rows(store_root: Path) -> list[dict]:
    return read_manifest_rows(store_root)


# ---- ingest --------------------------------------------------------------------------------------------
def test_a_split_without_sharp_frames_is_stored_unpaired(store):
    root, result = store
    assert result.exit_code == 0, result.output
    val = [r for r in _rows(root) if r.split == "val"]
    assert len(val) == 6 and all(r.status == "ok" and r.vox_index is not None for r in val)
    assert all(r.paired is False and r.sharp is None and r.reason is None for r in val)
    # voxels and blur frames stored; the sharp array's rows of unpaired frames hold nothing
    blur, sharp = (ChunkReader(root / "val" / "seq_002" / RGB_DIRNAME / k) for k in ("blur", "sharp"))
    assert all(Path(blur.shard_path(n)).is_file() and not Path(sharp.shard_path(n)).exists() for n in range(6))
    assert "split 'val': all 6 kept frames are unpaired" in result.output
    assert "validation skips it" in result.output


def test_a_sequence_with_a_lost_sharp_frame_stores_that_frame_unpaired_and_says_so(store, synth_tree, tmp_path,
                                                                                    caplog):
    from spikeprep.ingest import log_unpaired
    from spikeprep.raw_layout import discover

    root, result = store
    rows = {(r.seq, r.frame_idx): r for r in _rows(root) if r.split == "train"}
    lost = rows[("seq_001", 2)]
    assert lost.status == "ok" and lost.paired is False and lost.sharp is None
    assert all(r.paired for k, r in rows.items() if k != ("seq_001", 2))
    # said once per sequence, with the count and the frame, in the warning and the summary
    with caplog.at_level(logging.INFO, logger="spikeprep.ingest"):
        for spec in discover(_raw(synth_tree, tmp_path)):
            log_unpaired(spec)
    said = {r.getMessage(): r.levelno for r in caplog.records}
    assert said == {"train/seq_001: 1 of 6 blur frames have no sharp frame (000002): stored unpaired, so training "
                    "and scoring skip them; add the sharp PNGs and re-run ingest if they were lost": logging.WARNING,
                    "val/seq_002: no sharp frames: its 6 frames are stored unpaired (audit and test use them, "
                    "training and scoring do not)": logging.INFO}
    assert "split 'train': 1 of 12 kept frames (1 sequence(s)) are unpaired" in result.output
    # the stats are over the frames training serves: paired ones
    stats = read_store_info(root).stats
    assert stats.n_frames == 11


def test_an_unpaired_training_frame_breaks_the_clips(store):
    root, _ = store
    ds = SpikeDeblurDataset(root, "train", clip_len=3, crop_size=64, seed=0)
    frames = [ds[i]["meta"]["frame_idx"] for i in range(len(ds))]
    seqs = [ds[i]["meta"]["seq"] for i in range(len(ds))]
    assert not any(s == "seq_001" and 2 in f for s, f in zip(seqs, frames))
    assert sorted(tuple(f) for s, f in zip(seqs, frames) if s == "seq_001") == [(3, 4, 5)]


# ---- verify ----------------------------------------------------------------------------------------------
def test_verify_checks_paired_and_unpaired_frames(store, tmp_path):
    root, _ = store
    report = verify_store(root)
    assert report.ok, report.problems
    assert report.frames == 18 and report.unpaired == 7
    result = CliRunner().invoke(cli, ["verify", str(root), "--no-progress"])
    assert result.exit_code == 0 and "verified 18 frames (7 unpaired)" in result.output
    # damage: an unpaired frame's blur shard, and a sharp PNG where the manifest says there is none
    copy = tmp_path / "store"
    shutil.copytree(root, copy)
    blur = ChunkReader(copy / "val" / "seq_002" / RGB_DIRNAME / "blur")
    Path(blur.shard_path(1)).unlink()
    shutil.copyfile(copy / "train" / "seq_000" / "sharp" / "000000.png", copy / "val" / "seq_002" / "sharp" / "000003.png")
    problems = {(p.seq, p.frame_idx): p.problem for p in verify_store(copy).problems}
    assert "missing" in problems[("seq_002", 1)]
    assert "holds a sharp PNG" in problems[("seq_002", 3)]


# ---- audit -----------------------------------------------------------------------------------------------
def test_audit_judges_unpaired_frames_from_blur_and_spikes(store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(store[0], root)
    report = audit(root, AuditOptions(crop_size=64), progress=False)
    val = [r for r in report.rows if r.split == "val"]
    assert all(r.audit_verdict is not None for r in val), [r.reason for r in val]
    assert not any("sharp" in (r.reason or "") for r in report.rows)


# ---- training --------------------------------------------------------------------------------------------
def _config(store_root: Path, tmp: Path) -> Path:
    raw = tiny_config_dict(store_root, tmp / "outputs")
    if raw["DATA"]["NORM"]["MEAN"] is None:
        raise AssertionError("the store has no stats")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_training_refuses_an_unpaired_training_split(synth_tree, store, tmp_path):
    root = tmp_path / "store"
    ingest(_raw(synth_tree, tmp_path, val_unpaired=False, train_unpaired=True), root, OPTS, log_dir=None,
           progress=False)
    assert read_store_info(root).stats is None       # no paired training frame: no stats
    cfg = tiny_config_dict(store[0], tmp_path / "outputs")   # the other store's NORM; this store's data
    cfg["DATA"]["ROOT"] = str(root)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--dry-run", "--workers", "0", "--no-vgg",
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert f"{root / 'manifest.parquet'}: split 'train' has 12 kept frames but none is paired" in result.output
    assert f"spikeprep test --store {root} --split train" in result.output
    with pytest.raises(NoPairedFrames):
        SpikeDeblurDataset(root, "train", clip_len=3, norm_mean=0.0, norm_std=1.0)


def test_training_skips_an_unpaired_validation_split(store, tmp_path):
    from model.train import main
    from model.train_options import TrainOptions

    config = _config(store[0], tmp_path)
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--dry-run", "--workers", "0", "--no-vgg",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.count("note: no validation: split 'val' has 6 kept frames but none is paired") == 1
    run = main(TrainOptions(config=config, exp="u", max_steps=2, val_every=1, visual_every=2, workers=0,
                            perceptual=False, progress=False, device="cpu"))
    assert run.step == 2 and run.reports == [] and run.best_psnr is None
    ckpts = tmp_path / "outputs" / "ckpts" / "u"
    assert (ckpts / "last.pth").is_file() and not (ckpts / "best.pth").exists()
    assert not list((tmp_path / "outputs").glob("metrics/val_*.json"))


# ---- test ------------------------------------------------------------------------------------------------
def test_test_deblurs_an_unpaired_split(store, tmp_path):
    root = store[0]
    cfg = parse_config(tiny_config_dict(root, tmp_path / "outputs"))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "spike.pth", dict(
        version=CKPT_VERSION, arm="spike", exp="t", step=1, model=build_model(cfg, use_spike=True).state_dict(),
        config=cfg.model_dump(mode="json"), config_text="", best_psnr=None))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["test", "--ckpt", str(ckpt), "--store", str(root), "--split", "val",
                                      "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [f"seq_002/{i:06d}.png" for i in range(6)]
    assert all(cv2.imread(str(out / p)).shape == (64, 80, 3) for p in written)
    # and the training split's unpaired frame is deblurred too
    result = CliRunner().invoke(cli, ["test", "--ckpt", str(ckpt), "--store", str(root), "--split", "train",
                                      "--seq", "seq_001", "--output", str(tmp_path / "out2"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out2" / "seq_001" / "000002.png").is_file()


# ---- issue 28, item 4: an ingest rerun keeps the audit's verdicts -----------------------------------------
def test_an_ingest_rerun_keeps_the_audits_drops_and_stats(synth_tree, tmp_path, caplog):
    raw = tmp_path / "raw"
    shutil.copytree(synth_tree(**AUDIT_TREE), raw)
    root = tmp_path / "store"
    options = IngestOptions(num_bins=16, crop_size=32)
    ingest(raw, root, options, log_dir=None, progress=False)
    report = audit(root, AuditOptions(crop_size=32), progress=False)
    dropped = {(r.split, r.seq, r.frame_idx) for r in report.rows if r.status == "dropped"}
    assert dropped and all(seq in ("seq_001", "seq_002") for _, seq, _ in dropped)
    audited_stats = read_store_info(root).stats
    before = {(r.split, r.seq, r.frame_idx): r for r in _rows(root)}

    shutil.copytree(raw / "train" / "seq_000", raw / "train" / "seq_009")   # a new, well aligned sequence
    result = CliRunner().invoke(cli, ["ingest", str(raw), "--out", str(root), "--k", "16", "--crop", "32",
                                      "--no-progress", "--log-dir", str(tmp_path / "logs")])
    # exit 1 only because the audit's drops leave seq_001 and seq_002 without a frame (4-frame sequences)
    assert result.exit_code == 1 and "train/seq_001: all 4 frames dropped" in result.output, result.output
    rows = _rows(root)
    after = {(r.split, r.seq, r.frame_idx): r for r in rows}
    assert {k for k, r in after.items() if r.status == "dropped"} == dropped
    audit_cols = ("status", "reason", "reason_code", "audit_corr", "audit_best_offset_ticks", "audit_verdict")
    assert all({c: getattr(after[k], c) for c in audit_cols} == {c: getattr(before[k], c) for c in audit_cols}
               for k in before)
    assert {after[k].reason_code for k in dropped} <= {"audit_misaligned", "audit_mismatch"}
    assert all(r.audit_verdict is None for r in rows if r.seq == "seq_009")
    n_seq009 = sum(r.seq == "seq_009" for r in rows)
    assert f"kept the audit's verdicts of {len(before)} frames in 3 unchanged sequence(s) ({len(dropped)} stay " \
           "dropped by the audit)" in result.output
    assert "1 sequence(s) were (re)built since the audit and are unaudited (train/seq_009)" in result.output

    # the stats: the audited frames' stats plus the new sequence's frames, audit drops left out
    histograms = {}
    for key in ("train/seq_000", "train/seq_001", "train/seq_009", "val/seq_002"):
        split, seq = key.split("/")
        histograms.update({(split, seq, i): h for i, h in read_sequence_record(root / key / "ingest.json")
                           .histograms.items()})
    stats = read_store_info(root).stats
    assert stats == stats_from_records(rows, histograms)
    assert stats.n_frames == audited_stats.n_frames + n_seq009
    # training is told that the new sequence is unaudited; an audit closes the gap
    assert "were ingested after the last audit" in unaudited_note(root, "train")
    audit(root, AuditOptions(crop_size=32), progress=False)
    assert unaudited_note(root, "train") is None
