"""The acceptance experiment sized for one GPU (issue 15): the three arms, baselines and reliance in < 10 minutes.

    python benchmarks/gpu_acceptance.py                                   # one CUDA GPU (an H200: < 10 min)
    python benchmarks/gpu_acceptance.py --device cpu --steps 4 --val-every 2 --no-results \\
        --height 64 --width 96 --frames 6 --train-seqs 2 --crop 64 --batch 1 --vrt-width 16   # CPU smoke run

``benchmarks/acceptance.py`` with larger settings than two CPU cores allow, everything else the same (the
three arms side by side on the one device, the same seed, data order and steps for each; the baselines, the
spike reliance and the small-CNN reference; the rule by ``spikeprep compare``):

- data: 6 + 2 synthetic sequences x 24 frames at 256x384 (the demo preset's motion), K = 32;
- model: the tiny VRT topology at 32 channels, 5-frame 128x128 crops, batch 4, fp16 autocast + GradScaler;
- 1200 steps per arm, LR 1e-3 (demo_tiny.yaml's) with 100 warm-up steps, cosine; validation every 400 steps
  at full size.

The 10 minutes are an estimate until it has run on a GPU (RESULTS.md's "GPU acceptance experiment" section is
written by the run itself, with its wall time): the official preset's step at 5x256x256 took 1.09 s on an
H200 (RESULTS.md, GPU check); this model has about 1/24 of its arithmetic per pixel at the same pixels per
batch, so kernel launches rather than arithmetic should set its pace. Lower ``--steps`` if a run overruns.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceptance  # noqa: E402

GPU_DEFAULTS = ["--steps", "1200", "--val-every", "400", "--train-seqs", "6", "--val-seqs", "2", "--frames", "24",
                "--height", "256", "--width", "384", "--k", "32", "--vrt-width", "32", "--crop", "128",
                "--clip-len", "5", "--batch", "4", "--warmup", "100", "--device", "cuda", "--workers", "4",
                "--threads", "4", "--out", str(acceptance.REPO / "outputs" / "gpu_acceptance"),
                "--section", "## GPU acceptance experiment (issue 15)"]


def main(argv: list[str] | None = None) -> int:
    """``acceptance.main`` with the GPU settings; any of them can be overridden on the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    rc = acceptance.main(GPU_DEFAULTS + argv)        # later flags win in argparse
    print(f"gpu_acceptance: {(time.time() - t0) / 60:.1f} min in all")
    return rc


if __name__ == "__main__":
    sys.exit(main())
