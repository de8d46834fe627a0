"""The original document's acceptance experiment (section 8.3) on synthetic data, sized for this machine.

    .venv/bin/python benchmarks/acceptance.py                       # < 1 hour on 2 CPU cores, writes RESULTS.md
    .venv/bin/python benchmarks/acceptance.py --steps 40 --val-every 20 --no-results   # a quick smoke run

Four arms train on the same synthetic store with the same config, seed, clips, crops and number of steps,
side by side (one process per arm, ``--threads`` threads each): the spike arm with the shipped fusion
(``configs/deblur/demo_tiny.yaml``'s MODEL.FUSE.TYPE), the same arm on totals-only voxels (DATA.TOTALS_ONLY:
each pixel's K bins replaced by their mean, so ``spike - totals_only`` is what the spikes' timing adds), the
same arm without the original's spike branch (MODEL.SPIKE_BRANCH false: ``spike - no_branch`` is what the
branch adds), and VRT alone (``--no-spike``); ``--literal`` adds the spike arm with the original's literal
fusion (``TemporalCrossAttn``). ``spikeprep compare`` applies the rule (PSNR >= base - 0.05 dB and LPIPS <=
base + 0.005) to the spike arms against the base arm, with the store's non-learned baselines (``spikeprep
baselines``) beside them. The small CNN reference of ``benchmarks/references.py`` (blur + voxels, no VRT)
trains in the same trainer for the same steps afterwards. Everything but the reference goes through the ``spikeprep`` command line, as a user
would run it; the work folder (``--out``, default ``outputs/acceptance``) keeps the raw data, the store, the
runs and their logs.

Data: ``spikeprep synth`` with ``--train-seqs`` + ``--val-seqs`` sequences of ``--frames`` frames at
``--height`` x ``--width`` (independently moving foreground patch over a moving camera), K = ``--k`` bins.
Model: ``configs/deblur/demo_tiny.yaml`` (tiny VRT, 3-frame clips, 64x64 crops) with the store's stats.
Whatever the tables show is the result; RESULTS.md records it with the command and the machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_description, write_section  # noqa: E402

SPIKEPREP = [sys.executable, "-m", "cli.main"]


def run(args: list[str], log: Path | None = None, env: dict | None = None) -> subprocess.Popen | None:
    """Run a spikeprep command: in the foreground (log None), or in the background into ``log``."""
    cmd = SPIKEPREP + args
    print("$ spikeprep " + " ".join(shlex.quote(a) for a in args), flush=True)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if log is None:
        subprocess.run(cmd, cwd=REPO, env=full_env, check=True)
        return None
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def make_data(args, out: Path, config: Path, literal: Path) -> None:
    """Synth, ingest, audit and score the baselines of the store; write both arms' configs."""
    run(["synth", str(out / "raw"), "--preset", "demo", "--height", str(args.height), "--width", str(args.width),
         "--train-seqs", str(args.train_seqs), "--val-seqs", str(args.val_seqs), "--frames", str(args.frames),
         "--overwrite", "--workers", str(min(8, os.cpu_count() or 2)), "--no-progress"])
    raw = yaml.safe_load((REPO / "configs/deblur/demo_tiny.yaml").read_text())
    data, train = raw["DATA"], raw["TRAIN"]
    args.crop, args.clip_len = args.crop or data["CROP_SIZE"], args.clip_len or data["CLIP_LEN"]
    args.batch, args.lr = args.batch or train["BATCH_SIZE"], args.lr or train["OPTIM"]["LR"]
    args.warmup = train["SCHED"]["WARMUP_STEPS"] if args.warmup is None else args.warmup
    data.update(ROOT=str(out / "store"), K=args.k, CROP_SIZE=args.crop, CLIP_LEN=args.clip_len)
    train.update(BATCH_SIZE=args.batch)
    train["OPTIM"]["LR"] = args.lr
    train["SCHED"]["WARMUP_STEPS"] = args.warmup
    raw["LOG"]["SAVE_DIR"] = str(out / "outputs")
    if args.vrt_width:
        vrt_cfg = out / f"vrt_tiny_{args.vrt_width}ch.yaml"
        vrt_cfg.write_text(yaml.safe_dump({"preset": "tiny", "overrides": {"embed_dims": [args.vrt_width] * 11}}))
        raw["MODEL"].update(VRT_CFG=str(vrt_cfg), CHANNELS_PER_SCALE=[args.vrt_width] * 4)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    run(["ingest", str(out / "raw"), "--out", str(out / "store"), "--config", str(config), "--write-config",
         str(config), "--workers", str(min(8, os.cpu_count() or 2)), "--log-dir", str(out / "logs"), "--no-progress"])
    run(["audit", str(out / "store"), "--crop", str(args.crop)])
    run(["baselines", str(out / "store"), "--clip-len", str(args.clip_len), "--no-progress"])
    raw = yaml.safe_load(config.read_text())                  # with DATA.NORM from ingest
    raw["MODEL"]["FUSE"]["TYPE"] = "TemporalCrossAttn"
    literal.write_text(yaml.safe_dump(raw, sort_keys=False))


def finished_training_s(out: Path, arm: str, steps: int) -> float | None:
    """Seconds an earlier run of ``arm`` trained (its run log's start to its last checkpoint), when that
    checkpoint reached ``steps``; None otherwise."""
    from model.checkpoint import load_checkpoint

    ckpt = out / "outputs" / "ckpts" / arm / "last.pth"
    logs = sorted((out / "outputs" / "logs").glob(f"run_{arm}_*.txt"))
    if not ckpt.is_file() or not logs or load_checkpoint(ckpt)["step"] != steps:
        return None
    started = time.mktime(time.strptime(logs[-1].stem.removeprefix(f"run_{arm}_"), "%Y%m%d_%H%M%S"))
    return ckpt.stat().st_mtime - started


def main(argv: list[str] | None = None) -> int:
    """Synth, ingest and audit a store, train both arms side by side, compare them; write RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "acceptance")
    ap.add_argument("--steps", type=int, default=900, help="optimiser steps per arm")
    ap.add_argument("--val-every", type=int, help="validate every N steps [--steps: once, at the end; each "
                    "validation of a spike arm scores the val split four times, for its spike reliance]")
    ap.add_argument("--train-seqs", type=int, default=6)
    ap.add_argument("--val-seqs", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per arm (the arms run at once)")
    ap.add_argument("--vrt-width", type=int, default=0, help="VRT channels (tiny topology); 0: the tiny preset's")
    ap.add_argument("--crop", type=int, help="DATA.CROP_SIZE [demo_tiny.yaml's]")
    ap.add_argument("--clip-len", type=int, help="DATA.CLIP_LEN [demo_tiny.yaml's]")
    ap.add_argument("--batch", type=int, help="TRAIN.BATCH_SIZE [demo_tiny.yaml's]")
    ap.add_argument("--lr", type=float, help="TRAIN.OPTIM.LR [demo_tiny.yaml's]")
    ap.add_argument("--warmup", type=int, help="TRAIN.SCHED.WARMUP_STEPS [demo_tiny.yaml's]")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (every arm on it; AMP on CUDA)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers per arm")
    ap.add_argument("--section", default="## Acceptance experiment (original section 8.3)",
                    help="the RESULTS.md heading to write")
    ap.add_argument("--literal", action="store_true", help="also train the spike arm with the original's literal "
                    "fusion (a fifth arm: past the hour on 2 CPU cores at 900 steps)")
    ap.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    ap.add_argument("--reuse", action="store_true", help="finish an interrupted run: keep --out's store and every "
                    "arm whose last checkpoint reached --steps (their time is read from their logs)")
    args = ap.parse_args(argv)
    args.val_every = args.val_every or args.steps
    t_start = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)

    # -- data ------------------------------------------------------------------------------------------
    config, literal = out / "config.yaml", out / "config_literal.yaml"
    baselines = out / "store" / "baselines" / "val.json"
    reuse_data = args.reuse and all(p.is_file() for p in (config, literal, baselines, out / "store" / "dataset.json"))
    if reuse_data:
        print(f"--reuse: keeping the store, configs and baselines in {out}")
    else:
        make_data(args, out, config, literal)
    cfg_raw = yaml.safe_load(config.read_text())
    args.crop, args.clip_len = cfg_raw["DATA"]["CROP_SIZE"], cfg_raw["DATA"]["CLIP_LEN"]
    args.batch, args.lr = cfg_raw["TRAIN"]["BATCH_SIZE"], cfg_raw["TRAIN"]["OPTIM"]["LR"]
    args.warmup = cfg_raw["TRAIN"]["SCHED"]["WARMUP_STEPS"]
    data_s = time.time() - t_start

    # -- three arms, side by side ------------------------------------------------------------------------
    vgg = []
    sys.path.insert(0, str(REPO))          # the repo's `model` package
    from model.losses.vgg_perceptual import vgg19_weights_path
    from schemas.config import load_config

    fuse_type = load_config(config).MODEL.FUSE.TYPE
    if not vgg19_weights_path().is_file():
        print(f"note: no VGG19 weights at {vgg19_weights_path()}: every arm trains without the perceptual term")
        vgg = ["--no-vgg"]
    common = ["--max-steps", str(args.steps), "--val-every", str(args.val_every), "--device", args.device,
              "--visual-every", str(args.steps), "--workers", str(args.workers), "--no-progress", *vgg]
    variants = {"totals_only": out / "config_totals_only.yaml", "no_branch": out / "config_no_branch.yaml"}
    for name, path in variants.items():          # the shipped arm with one switch changed (spike arm only)
        raw = yaml.safe_load(config.read_text())
        if name == "totals_only":
            raw["DATA"]["TOTALS_ONLY"] = True
        else:
            raw["MODEL"]["SPIKE_BRANCH"] = False
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    arms = {"spike": ["--config", str(config)], "base": ["--config", str(config), "--no-spike"],
            **{name: ["--config", str(path)] for name, path in variants.items()}}
    if args.literal and fuse_type != "TemporalCrossAttn":
        arms["literal"] = ["--config", str(literal)]
    env = {"OMP_NUM_THREADS": str(args.threads)}
    t_train = time.time()
    reused = {arm: finished_training_s(out, arm, args.steps) for arm in arms} if args.reuse else {}
    reused = {arm: s for arm, s in reused.items() if s is not None}
    if reused:
        print(f"--reuse: keeping the finished arms {sorted(reused)}")
    # --start-over: an arm that is not reused is trained afresh (a killed earlier run's outputs move aside)
    procs = {arm: run(["train", *a, *common, "--exp", arm, "--start-over"], log=out / "logs" / f"train_{arm}.log",
                      env=env)
             for arm, a in arms.items() if arm not in reused}
    failed = [arm for arm, p in procs.items() if p.wait() != 0]
    if failed:
        for arm in failed:
            print((out / "logs" / f"train_{arm}.log").read_text()[-3000:])
        raise SystemExit(f"training failed: {failed}")
    train_s = max([time.time() - t_train, *reused.values()])
    t_ref = time.time()
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "spike_ablation.py"), "--run", "cnn", "--reference",
                    "cnn", "--config", str(config), "--steps", str(args.steps), "--device", args.device],
                   cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"},
                   stdout=(out / "logs" / "train_cnn.log").open("w"), stderr=subprocess.STDOUT)
    ref_s = time.time() - t_ref
    t_ref_end = time.time()

    # -- the rule, per spike arm ---------------------------------------------------------------------------
    from schemas.compare_report import read_compare_report

    reports = {}
    for arm in [a for a in ("spike", "literal", "totals_only", "no_branch") if a in arms]:
        proc = subprocess.run(SPIKEPREP + ["compare", arm, "base", "--outputs", str(out / "outputs"),
                                           "--crop-size", str(args.crop), "--baselines", str(baselines)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        print(proc.stdout)
        if proc.returncode not in (0, 1):
            print(proc.stderr)
            raise SystemExit("compare failed")
        written = sorted((out / "outputs" / "metrics").glob(f"compare_{arm}_vs_base_*.json"))
        reports[arm] = read_compare_report(written[-1])
    targets = issue_targets(out, args.steps, fuse_type, baselines)
    print(targets)
    total_s = time.time() - t_start
    if reuse_data or reused:
        # time the earlier invocation spent on what was reused: data (up to the first arm's start) + training
        first_log = min((out / "outputs" / "logs").glob("run_*_*.txt"), key=lambda p: p.stem[-15:])
        data_s = (time.mktime(time.strptime(first_log.stem[-15:], "%Y%m%d_%H%M%S"))
                  - (out / "raw" / "synth.json").stat().st_mtime) if reuse_data else data_s
        total_s = data_s + train_s + ref_s + (time.time() - t_ref_end)
    summary = (f"{args.steps} steps per arm, the {len(arms)} arms at once ({args.threads} thread(s) each), training "
               f"{train_s / 60:.1f} min, then the CNN reference {ref_s / 60:.1f} min; whole run {total_s / 60:.1f} min"
               + (f" (finished with --reuse: data and training of {sorted(reused)} timed from the earlier "
                  "invocation's logs)" if reused else ""))
    print(summary)
    if not args.no_results:
        cmd = "benchmarks/acceptance.py " + " ".join(argv if argv is not None else sys.argv[1:])
        body = [
            args.section, "",
            f"Command: `.venv/bin/python {cmd.strip()}` ({cpu_description()}, torch on the CPU, "
            f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}).", "",
            f"Data: `spikeprep synth` {args.train_seqs} train + {args.val_seqs} val sequences x {args.frames} frames "
            f"at {args.height}x{args.width}, K={args.k}. Model: configs/deblur/demo_tiny.yaml (tiny VRT"
            f"{f' at {args.vrt_width} channels' if args.vrt_width else ''}, {args.clip_len}-frame clips, "
            f"{args.crop}x{args.crop} crops, batch {args.batch}, LR {args.lr:g} with {args.warmup} warm-up steps, "
            f"cosine; device {args.device}{', AMP fp16' if args.device.startswith('cuda') else ''}); the spike arm `spike` uses its "
            f"MODEL.FUSE.TYPE `{fuse_type}`; `totals_only` is that arm with DATA.TOTALS_ONLY, `no_branch` with "
            f"MODEL.SPIKE_BRANCH false"
            + (", the spike arm `literal` the original's `TemporalCrossAttn`" if "literal" in arms else "")
            + f". {summary}."
            + (" No VGG19 weights here: every arm trained without the perceptual term." if vgg else ""), "",
            targets, ""]
        for arm, report in reports.items():
            body += [f"### `{arm}` against `base`", "", report.table_markdown.strip(), "",
                     f"Verdict at step {report.verdict.step}: **{report.verdict.result}**. "
                     f"{report.verdict.summary}", ""]
        write_section(REPO / "benchmarks" / "RESULTS.md", args.section, "\n".join(body))
        print("wrote benchmarks/RESULTS.md")
    return 0


def issue_targets(out: Path, steps: int, fuse_type: str, baselines: Path) -> str:
    """Issue 29's targets at the last step: the shipped spike arm against the least-squares baseline (overall
    and at motion boundaries, + 1.5 dB), against plain VRT's SSIM, against its totals-only twin (+ 1 dB: what
    the spikes' timing adds) and its no-branch twin (what the original's branch adds, aim + 0.3 dB); every
    arm's numbers beside them, with the non-learned floors."""
    from schemas.baselines import read_baselines_report
    from schemas.val_report import read_val_report

    metrics = out / "outputs" / "metrics"
    rep = {name: read_val_report(p) for name in ("spike", "totals_only", "no_branch", "literal", "base", "cnn")
           if (p := metrics / f"val_{name}_{steps}.json").exists()}
    floors = read_baselines_report(baselines)
    lsq, blur = floors.row("lsq"), floors.row("blur")
    spike, base = rep["spike"], rep["base"]

    def check(value, floor):
        return "PASS" if value is not None and floor is not None and value >= floor - 1e-9 else "FAIL"

    def static(r):
        return f"{r.static.psnr_y:.2f}" if getattr(r, "static", None) and r.static.psnr_y is not None else "-"

    lines = [f"### Issue 29's targets at step {steps} (val split; `spike` is `{fuse_type}`)", "",
             "| target | value | floor | verdict |", "|---|---|---|---|"]
    targets = [("PSNR-Y >= least squares + 1.5", spike.overall.psnr_y, lsq.overall.psnr_y + 1.5),
               ("boundary PSNR-Y >= least squares + 1.5", spike.boundary.psnr_y, lsq.boundary.psnr_y + 1.5),
               ("SSIM >= plain VRT's", spike.overall.ssim, base.overall.ssim)]
    if "totals_only" in rep:
        targets.append(("spike - totals-only >= 1 dB (PSNR-Y)",
                        spike.overall.psnr_y - rep["totals_only"].overall.psnr_y, 1.0))
    for label, value, floor in targets:
        lines.append(f"| {label} | {value:.4g} | {floor:.4g} | {check(value, floor)} |")
    if "no_branch" in rep:
        d = spike.overall.psnr_y - rep["no_branch"].overall.psnr_y
        lines.append(f"| spike - no-branch (PSNR-Y; reported, the aim >= 0.3 dB) | {d:+.2f} | 0.3 | "
                     f"{'met' if d >= 0.3 else 'not met'} |")
    lines += ["", "| arm | PSNR-Y | boundary PSNR-Y | static-half PSNR-Y | SSIM | SSIM-Y |", "|---|---|---|---|---|---|"]
    for name, r in rep.items():
        ssim_y = f"{r.overall.ssim_y:.4f}" if r.overall.ssim_y is not None else "-"
        lines.append(f"| `{name}` | {r.overall.psnr_y:.2f} | {r.boundary.psnr_y:.2f} | {static(r)} | "
                     f"{r.overall.ssim:.4f} | {ssim_y} |")
    for name, row in (("least squares", lsq), ("blur", blur)):
        ssim_y = f"{row.overall.ssim_y:.4f}" if getattr(row.overall, "ssim_y", None) is not None else "-"
        lines.append(f"| {name} (non-learned) | {row.overall.psnr_y:.2f} | {row.boundary.psnr_y:.2f} | "
                     f"{static(row)} | {row.overall.ssim:.4f} | {ssim_y} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
