"""The original document's acceptance experiment (section 8.3) on synthetic data, sized for this machine.

    .venv/bin/python benchmarks/acceptance.py                       # ~1 hour on 2 CPU cores, writes RESULTS.md
    .venv/bin/python benchmarks/acceptance.py --steps 40 --val-every 20 --no-results   # a quick smoke run

Both arms (VRT + spike branch, and VRT alone with --no-spike) train on the same synthetic store with the
same config, seed, clips, crops and number of steps, side by side (one process per arm, ``--threads``
threads each), then ``spikeprep compare`` applies the rule: PSNR >= base - 0.05 dB and LPIPS <= base + 0.005.
Everything goes through the ``spikeprep`` command line, as a user would run it; the work folder
(``--out``, default ``outputs/acceptance``) keeps the raw data, the store, both runs and their logs.

Data: ``spikeprep synth`` with ``--train-seqs`` + ``--val-seqs`` sequences of ``--frames`` frames at
``--height`` x ``--width`` (independently moving foreground patch over a moving camera), K = ``--k`` bins.
Model: ``configs/deblur/demo_tiny.yaml`` (tiny VRT, 3-frame clips, 64x64 crops) with the store's stats.
Whatever the table shows is the result; RESULTS.md records it with the command and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    """Synth, ingest and audit a store, train both arms side by side, compare them; write RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "acceptance")
    ap.add_argument("--steps", type=int, default=1500, help="optimiser steps per arm")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--train-seqs", type=int, default=6)
    ap.add_argument("--val-seqs", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per arm (both arms run at once)")
    ap.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    t_start = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)

    # -- data ------------------------------------------------------------------------------------------
    run(["synth", str(out / "raw"), "--preset", "demo", "--height", str(args.height), "--width", str(args.width),
         "--train-seqs", str(args.train_seqs), "--val-seqs", str(args.val_seqs), "--frames", str(args.frames),
         "--overwrite", "--workers", "2", "--no-progress"])
    config = out / "config.yaml"
    text = (REPO / "configs/deblur/demo_tiny.yaml").read_text()
    text = text.replace('"demo_out/store"', f'"{out / "store"}"').replace('"demo_out/outputs"', f'"{out / "outputs"}"')
    text = re.sub(r"^(  K:) \d+", rf"\1 {args.k}", text, flags=re.M)
    config.write_text(text)
    run(["ingest", str(out / "raw"), "--out", str(out / "store"), "--config", str(config), "--write-config",
         str(config), "--workers", "2", "--log-dir", str(out / "logs"), "--no-progress"])
    run(["audit", str(out / "store"), "--crop", "64"])

    # -- both arms, side by side ----------------------------------------------------------------------------
    vgg = []
    sys.path.insert(0, str(REPO))          # the repo's `model` package
    from model.losses.vgg_perceptual import vgg19_weights_path

    if not vgg19_weights_path().is_file():
        print(f"note: no VGG19 weights at {vgg19_weights_path()}: both arms train without the perceptual term")
        vgg = ["--no-vgg"]
    common = ["train", "--config", str(config), "--max-steps", str(args.steps), "--val-every", str(args.val_every),
              "--visual-every", str(args.steps), "--workers", "0", "--no-progress", *vgg]
    env = {"OMP_NUM_THREADS": str(args.threads)}
    t_train = time.time()
    procs = {arm: run(common + ["--exp", arm] + (["--no-spike"] if arm == "base" else []),
                      log=out / "logs" / f"train_{arm}.log", env=env) for arm in ("spike", "base")}
    failed = [arm for arm, p in procs.items() if p.wait() != 0]
    if failed:
        for arm in failed:
            print((out / "logs" / f"train_{arm}.log").read_text()[-3000:])
        raise SystemExit(f"training failed: {failed}")
    train_s = time.time() - t_train

    # -- the rule ------------------------------------------------------------------------------------------
    proc = subprocess.run(SPIKEPREP + ["compare", "spike", "base", "--outputs", str(out / "outputs"),
                                       "--crop-size", "64"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)
    print(proc.stdout)
    if proc.returncode not in (0, 1):
        print(proc.stderr)
        raise SystemExit("compare failed")
    report = json.loads(sorted((out / "outputs" / "metrics").glob("compare_spike_vs_base_*.json"))[-1].read_text())
    total_s = time.time() - t_start
    summary = (f"{args.steps} steps per arm, both arms at once ({args.threads} thread(s) each), training "
               f"{train_s / 60:.1f} min, whole run {total_s / 60:.1f} min")
    print(summary)
    if not args.no_results:
        cmd = "benchmarks/acceptance.py " + " ".join(argv if argv is not None else sys.argv[1:])
        body = "\n".join([
            "## Acceptance experiment (original section 8.3)", "",
            f"Command: `.venv/bin/python {cmd.strip()}` ({cpu_description()}, torch on the CPU, "
            f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}).", "",
            f"Data: `spikeprep synth` {args.train_seqs} train + {args.val_seqs} val sequences x {args.frames} frames "
            f"at {args.height}x{args.width}, K={args.k}. Model: configs/deblur/demo_tiny.yaml (tiny VRT, 3-frame "
            f"clips, 64x64 crops, batch 1, LR 5e-4 with 20 warm-up steps, cosine). {summary}."
            + (" No VGG19 weights here: both arms trained without the perceptual term." if vgg else ""), "",
            report["table_markdown"].strip(), "",
            f"Verdict at step {report['verdict']['step']}: **{report['verdict']['result']}**. "
            f"{report['verdict'].get('summary', '')}", ""])
        write_section(REPO / "benchmarks" / "RESULTS.md", "## Acceptance experiment (original section 8.3)", body)
        print("wrote benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
