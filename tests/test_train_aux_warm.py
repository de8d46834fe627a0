"""Issue 29, item 3: the auxiliary spike-branch luma target (TRAIN.AUX_SPIKE_RECON_WEIGHT) and the warm start
of the VRT backbone from a spikeprep checkpoint (--init-from, --freeze-vrt-steps), on the tiny store, on CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from model.checkpoint import load_checkpoint, save_checkpoint
from model.losses.deblur_loss import DeblurLoss, rec601_luma
from model.nets.integrate_vrt import build_model
from model.train import main
from schemas.config import ConfigError, parse_config
from spikeprep.errors import InputError
from test_train import options, write_config

MOTION_GATED = "ResidualTemporalCrossAttnMotionGatedSpikeHead"
QUIET = dict(val_every=100, reliance=False)      # validation only at the last step, no reliance probes


def _with(config, **train):
    raw = yaml.safe_load(config.read_text())
    raw["TRAIN"].update(train)
    out = config.with_name(f"{config.stem}_{'_'.join(f'{k}{v}' for k, v in train.items())}.yaml")
    out.write_text(yaml.safe_dump(raw))
    return out


def test_aux_weight_0_is_today_and_above_0_trains_the_branch_and_resumes_exactly(train_store, tmp_path):
    config = write_config(tmp_path, train_store, fuse=MOTION_GATED)
    plain = main(options(config, exp="plain", max_steps=2, **QUIET))
    zero = main(options(_with(config, AUX_SPIKE_RECON_WEIGHT=0.0), exp="zero", max_steps=2, **QUIET))
    assert zero.losses == plain.losses                                   # bit for bit: the original's loss
    out = tmp_path / "outputs"
    assert not any(k.startswith("aux_luma.") for k in load_checkpoint(out / "ckpts" / "zero" / "last.pth")["model"])

    aux_config = _with(config, AUX_SPIKE_RECON_WEIGHT=0.1)
    whole = main(options(aux_config, exp="aux", max_steps=4, **QUIET))
    assert whole.losses[:1] != plain.losses[:1]                          # the aux term is in the total
    main(options(aux_config, exp="cut", max_steps=4, stop_at=2, **QUIET))
    resumed = main(options(aux_config, exp="cut", max_steps=4, resume=True, **QUIET))
    assert resumed.losses == whole.losses[2:]
    a, b = (load_checkpoint(out / "ckpts" / e / "last.pth") for e in ("aux", "cut"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    cfg = parse_config(yaml.safe_load(aux_config.read_text()))
    torch.manual_seed(cfg.SEED)
    initial = build_model(cfg).state_dict()
    assert not torch.equal(initial["aux_luma.weight"], a["model"]["aux_luma.weight"])   # it trained
    run_log = next((out / "logs").glob("run_aux_*.txt")).read_text()
    assert "AUX_SPIKE_RECON_WEIGHT: 0.1" in run_log
    events = [p for p in (out / "logs" / "aux").glob("events.out.tfevents.*")]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    assert "train/loss_aux_spike_recon" in acc.Tags()["scalars"]
    # the head exists in one model only: resuming across 0 / > 0 is refused (and the other way round)
    with pytest.raises(InputError, match="AUX_SPIKE_RECON_WEIGHT"):
        main(options(config, exp="aux", max_steps=4, resume=True, **QUIET))
    with pytest.raises(InputError, match="AUX_SPIKE_RECON_WEIGHT"):
        main(options(aux_config, exp="zero", max_steps=4, resume=True, **QUIET))


def test_the_aux_head_carries_a_gradient_into_the_spike_branch():
    cfg = parse_config({"DATA": {"ROOT": "/nowhere", "K": 4},
                        "MODEL": {"VRT_CFG": "tiny", "CHANNELS_PER_SCALE": [16] * 4, "FUSE": {"TYPE": MOTION_GATED}},
                        "TRAIN": {"AUX_SPIKE_RECON_WEIGHT": 0.5}})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.aux_luma is not None and build_model(cfg, use_spike=False).aux_luma is None
    blur, vox = torch.rand(1, 2, 3, 64, 64), torch.randn(1, 2, 4, 64, 64)
    recon, aux = model(blur, vox, with_aux=True)
    assert aux.shape == (1, 2, 1, 64, 64) and torch.equal(recon, model(blur, vox))
    sharp = torch.rand(1, 2, 3, 64, 64)
    loss, terms = DeblurLoss(perceptual_weight=0.0, aux_spike_recon_weight=0.5)(recon, sharp, aux)
    plain, _ = DeblurLoss(perceptual_weight=0.0)(recon, sharp)
    charb = torch.sqrt((aux - rec601_luma(sharp)) ** 2 + 1e-6).mean()
    assert torch.allclose(loss, plain + 0.5 * charb) and terms["aux_spike_recon"] == pytest.approx(float(charb.detach()))
    # the aux term alone reaches the aux head and the branch (the encoder's first layer)
    (0.5 * charb).backward()
    assert model.aux_luma.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.spike_encoder.parameters())
    assert rec601_luma(torch.ones(1, 3, 2, 2)).allclose(torch.ones(1, 1, 2, 2))


def test_the_aux_target_needs_the_spike_branch():
    with pytest.raises(ConfigError, match="AUX_SPIKE_RECON_WEIGHT.*SPIKE_BRANCH"):
        parse_config({"DATA": {"ROOT": "/nowhere", "K": 4},
                      "MODEL": {"VRT_CFG": "tiny", "FUSE": {"TYPE": MOTION_GATED}, "SPIKE_BRANCH": False},
                      "TRAIN": {"AUX_SPIKE_RECON_WEIGHT": 0.1}})
    with pytest.raises(ConfigError, match="AUX_SPIKE_RECON_WEIGHT"):
        parse_config({"DATA": {"ROOT": "/nowhere", "K": 4}, "MODEL": {"VRT_CFG": "tiny"},
                      "TRAIN": {"AUX_SPIKE_RECON_WEIGHT": -1}})


def test_init_from_a_base_checkpoint_and_freeze_vrt_steps(train_store, tmp_path):
    config = write_config(tmp_path, train_store, fuse=MOTION_GATED)
    out = tmp_path / "outputs"
    main(options(config, exp="base", use_spike=False, max_steps=2, **QUIET))
    base_ckpt = out / "ckpts" / "base" / "last.pth"
    base = load_checkpoint(base_ckpt)["model"]
    vrt_keys = [k for k in base if k.startswith("vrt.")]
    cfg = parse_config(yaml.safe_load(config.read_text()))
    torch.manual_seed(cfg.SEED)
    initial = build_model(cfg).state_dict()
    assert any(not torch.equal(initial[k], base[k]) for k in vrt_keys)   # the base trained

    # the backbone is the base's exactly, and stays so for the 2 frozen steps while the branch trains
    warm = dict(exp="warm", max_steps=3, init_from=base_ckpt, freeze_vrt_steps=2, **QUIET)
    main(options(config, stop_at=2, **warm))
    frozen = load_checkpoint(out / "ckpts" / "warm" / "last.pth")
    assert all(torch.equal(frozen["model"][k], base[k]) for k in vrt_keys)
    branch = [k for k in initial if k.startswith(("spike_encoder.", "spike_tsa.", "fuse."))]
    assert any(not torch.equal(frozen["model"][k], initial[k]) for k in branch)
    assert frozen["schedule"]["freeze_vrt_steps"] == 2 and frozen["schedule"]["init_from"] == str(base_ckpt)
    assert f"--init-from: the VRT backbone starts from {base_ckpt}" in \
        next((out / "logs").glob("run_warm_*.txt")).read_text()
    # then VRT trains (the resumed run keeps the freeze's schedule; it does not load the base again)
    resumed = options(config, resume=True, **{**warm, "init_from": None})
    main(resumed)
    thawed = load_checkpoint(out / "ckpts" / "warm" / "last.pth")["model"]
    assert any(not torch.equal(thawed[k], base[k]) for k in vrt_keys)

    # refusals: with --resume, a damaged file, another VRT, missing keys, the spike-free arm
    with pytest.raises(InputError, match="--init-from starts a new run"):
        main(options(config, resume=True, **warm))
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(base_ckpt.read_bytes()[:1000])
    with pytest.raises(InputError, match="damaged.pth.*not a readable checkpoint"):
        main(options(config, **{**warm, "exp": "w2", "init_from": damaged}))
    ckpt = load_checkpoint(base_ckpt)
    other_vrt = save_checkpoint(tmp_path / "other_vrt.pth",
                                {**ckpt, "config": {**ckpt["config"], "MODEL": {**ckpt["config"]["MODEL"],
                                                                                "VRT_CFG": "small"}}})
    with pytest.raises(InputError, match="other_vrt.pth.*VRT_CFG 'small'"):
        main(options(config, **{**warm, "exp": "w3", "init_from": other_vrt}))
    missing = save_checkpoint(tmp_path / "missing.pth",
                              {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if k != vrt_keys[0]}})
    with pytest.raises(InputError, match="missing.pth.*do not fit.*" + vrt_keys[0][len("vrt."):]):
        main(options(config, **{**warm, "exp": "w4", "init_from": missing}))
    with pytest.raises(InputError, match="--freeze-vrt-steps 2 with --no-spike"):
        main(options(config, use_spike=False, **{**warm, "exp": "w5"}))


def test_dry_runs_show_the_aux_term_and_the_base_arm_says_it_ignores_it(train_store, tmp_path, capsys):
    config = _with(write_config(tmp_path, train_store, fuse=MOTION_GATED), AUX_SPIKE_RECON_WEIGHT=0.1)
    main(options(config, dry_run=True))
    spike = capsys.readouterr().out
    assert "aux spike luma" in spike and "ignored by the spike-free arm" not in spike
    main(options(config, dry_run=True, use_spike=False))
    base = capsys.readouterr().out
    assert "TRAIN.AUX_SPIKE_RECON_WEIGHT 0.1 is ignored by the spike-free arm" in base and "aux spike luma" not in base


@pytest.mark.slow          # the ablation's runs validate with the reliance probes (minutes on 2 shared cores)
def test_the_ablation_runs_a_warm_started_row_from_its_base_checkpoint(train_store, tmp_path):
    """benchmarks/spike_ablation.py's runs of an init_from_base row, 2 + 1 steps: the base keeps its checkpoint at
    step 1 and trains on to 2 (resumed); the spike arm starts its VRT from that checkpoint."""
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import spike_ablation as ablation

    config = write_config(tmp_path, train_store, fuse=MOTION_GATED)
    out = tmp_path / "outputs"
    common = dict(config=config, device="cpu", reference=None, init_from=None, freeze_vrt_steps=0, keep_at=None)
    assert ablation.run_one(argparse.Namespace(**{**common, "run": "base_x2", "steps": 2, "no_spike": True,
                                                  "keep_at": 1})) == 0
    kept = ablation.kept_checkpoint(out, "base_x2", 1)
    assert load_checkpoint(kept)["step"] == 1 and load_checkpoint(out / "ckpts" / "base_x2" / "last.pth")["step"] == 2
    assert ablation.run_one(argparse.Namespace(**{**common, "run": "warm", "steps": 1, "no_spike": False,
                                                  "init_from": kept, "freeze_vrt_steps": 1})) == 0
    warm = load_checkpoint(out / "ckpts" / "warm" / "last.pth")
    base = load_checkpoint(kept)["model"]
    assert all(torch.equal(warm["model"][k], base[k]) for k in base if k.startswith("vrt."))   # frozen its 1 step
    assert (out / "metrics" / "ablation_warm.json").exists()
