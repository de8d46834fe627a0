"""TFP and TFI (what ``spikeprep view`` shows) on the two Spike-Zoo REDS files, scored against their ground truth.

    .venv/bin/python benchmarks/real_view.py              # ../shared/data/real/ beside the project
    .venv/bin/python benchmarks/real_view.py --real DIR --no-write

Each file holds 301 spike frames (250x400) and the grey ground truth of its middle instant (frame 150). The
reconstructions at that instant are ``spikeprep.view.stream_reconstructions`` (``baselines.tfp_rate`` over a
window of W frames centred there, ``baselines.tfi_rate`` searched over W frames), turned into 8-bit pictures
by ``view.to_image``; PSNR and SSIM are ``model.metrics.image_metrics`` (basicsr's, crop 0) on the grey
picture against the ground truth. Two readings of the rate:

* ``raw``   the picture ``spikeprep view`` writes with ``--gain 1``: rate per frame as grey level, no tone curve;
* ``gain``  the one scalar gain that fits the rate to the ground truth best (least squares): an oracle
            brightness (Spike-Zoo corrects brightness with a known ``rate`` per file), an upper bound for
            any global scale.

Writes the table, the command and the machine to benchmarks/RESULTS.md under the section below.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import cpu_description, load_average, write_section  # noqa: E402
from model.metrics import image_metrics  # noqa: E402
from spikeprep.baselines import luma  # noqa: E402
from spikeprep.images import read_rgb  # noqa: E402
from spikeprep.view import open_view_source, stream_reconstructions, to_image  # noqa: E402

SECTION = "## Real recordings: TFP and TFI on Spike-Zoo's REDS files (issue 17)"
FILES = [("spikezoo_reds_200_part1_250x400.dat", "spikezoo_reds_200_part1_gt.png"),
         ("spikezoo_reds_203_part2_250x400.dat", "spikezoo_reds_203_part2_gt.png")]
SPIKEZOO_DOC = ("Spike-Zoo's documentation (`docs/source/发行版本介绍.rst`, release v0.2.3 table, chenkang455/Spike-Zoo "
                "commit 0b220b07) gives, with 41-frame inputs: TFP 24.287 dB PSNR / 0.644 SSIM, TFI 16.503 dB / "
                "0.454 SSIM. Those are averages over the evaluation set of that table (the section is about the "
                "REDS_BASE release; the table does not name its set), not numbers for these two files, and "
                "Spike-Zoo applies a per-file brightness `rate`; it gives no per-file figures.")


def score(rate: np.ndarray, gt: np.ndarray, gain: float) -> dict[str, float]:
    img = np.repeat(to_image(rate, gain)[:, :, None], 3, axis=2)
    ref = np.repeat(np.round(gt).astype(np.uint8)[:, :, None], 3, axis=2)
    m = image_metrics(img, ref)
    return {"psnr": m["psnr_rgb"], "ssim": m["ssim"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=ROOT / ".." / "shared" / "data" / "real",
                    help="folder holding the real files [../shared/data/real]")
    ap.add_argument("--widths", default="32,41,64", help="window widths W in spike frames (TFP and TFI)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    real = args.real.resolve()
    if not all((real / f).is_file() and (real / g).is_file() for f, g in FILES):
        print(f"the REDS files are not in {real}", file=sys.stderr)
        return 2
    widths = [int(w) for w in args.widths.split(",")]
    info = (f"{cpu_description()}, {platform.python_implementation()} {platform.python_version()}, "
            f"numpy {np.__version__}, {load_average()} at start")
    table = ["| file | method | W (frames) | PSNR raw (dB) | SSIM raw | gain | PSNR gain (dB) | SSIM gain |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, gt_name in FILES:
        src = open_view_source(real / name, height=250, width=400)
        gt = luma(read_rgb(real / gt_name))           # a grey PNG: the three channels are equal
        c = src.n_frames // 2
        for w in widths:
            (_, rates), = stream_reconstructions(src, range(c, c + 1), w, w)
            for method in ("tfp", "tfi"):
                rate = rates[method]
                gain = float((rate * gt).sum() / max((rate * rate).sum(), 1e-12)) / 255.0
                raw, fit = score(rate, gt, 1.0), score(rate, gt, gain)
                table.append(f"| {name} | {method.upper()} | {w} | {raw['psnr']:.2f} | {raw['ssim']:.3f} | "
                             f"{gain:.2f} | {fit['psnr']:.2f} | {fit['ssim']:.3f} |")
    rest = argv if argv is not None else sys.argv[1:]
    cmd = ".venv/bin/python benchmarks/real_view.py" + ("".join(" " + shlex.quote(a) for a in rest))
    body = "\n".join([
        SECTION, "", f"Command: `{cmd}`", "", f"Machine: {info}.", "",
        "At the middle instant (frame 150 of 301) of each file: TFP = spike rate over the W frames centred there, "
        "TFI = 1 / inter-spike interval spanning it (searched over W frames; a pixel without a spike on one side "
        "keeps the window's rate), as `spikeprep view` computes them; PSNR/SSIM by basicsr (crop 0) on the grey "
        "picture against the ground truth PNG. `raw`: the rate as grey level (`view --gain 1`); `gain`: the one "
        "least-squares gain against the ground truth (an oracle brightness; it comes out near 1 / 0.6 = 1.67, the "
        "brightness `rate = 0.6` Spike-Zoo's own examples pass for this 250x400 data).", "",
        *table, "", SPIKEZOO_DOC, ""])
    print(body)
    if not args.no_write:
        write_section(args.results, SECTION, body)
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
