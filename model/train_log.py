"""How a training run reports itself: ``TrainLog`` (the lines a person reads), the run log's header and
TensorBoard (used by model/train.py, rank 0).

``TrainLog``: every message goes to stdout through the progress bar (``tqdm.write`` clears the bar, prints the
line and redraws the bar, so lines never tear) and, once the run log exists, to the end of
``outputs/logs/run_{exp}_{time}.txt``: the run log holds the same lines as the screen. The bar is drawn only
when stdout is a terminal and ``--no-progress`` was not given. Otherwise (a cluster job's log file, a pipe)
there is no bar and no carriage return: a plain line every ``log_every`` steps says the step, the loss, the
learning rate, steps per second and the time left::

    step 120/3000 loss 0.0834 lr 1.98e-04 2.31 step/s ETA 20:46

Records of the ``spikeprep`` loggers (a dropped unreadable training sample, ...) take the same way while
``capture_spikeprep_logging`` is active.

``write_run_log`` writes the run log's header (git revision, command, options, config, pip freeze).
TensorBoard: ``log_train_step`` (the loss terms and lr of a step), ``log_validation`` (also the validation
line on the screen), ``log_triptychs`` and the hparams table (``run_hparams``, ``log_hparams_start``/``_end``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import torch

from schemas.val_report import PROBES, ValReport, format_metric
from spikeprep.images import read_rgb

if TYPE_CHECKING:
    from model.train_options import TrainOptions
    from schemas.config import Config

SOURCE_ROOT = Path(__file__).resolve().parents[1]   # the checkout, when spikeprep runs from one


class TrainLog:
    """Messages and progress of one training run (see the module docstring).

    ``enabled=False`` (ranks other than 0) says nothing except ``rank_info``. ``bar``: the user wants a bar
    (not ``--no-progress``); it is drawn only if ``stream`` is a terminal.
    """

    def __init__(self, *, enabled: bool = True, bar: bool = True, log_every: int = 10, desc: str = "train",
                 stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.use_bar = enabled and bar and _is_terminal(self.stream)
        self.log_every = log_every
        self.desc = desc
        self.run_log: Path | None = None
        self._pending: list[str] = []          # lines said before the run log existed
        self._bar = None
        self._total = 0
        self._clock_step = 0                   # step and time of the last progress line (plain mode)
        self._clock_t = 0.0
        self._paused_at: float | None = None

    # ---- messages -----------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        """Say ``message`` on stdout (through the bar) and in the run log."""
        if not self.enabled:
            return
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()
        self._to_run_log(message)

    def rank_info(self, message: str) -> None:
        """Say ``message`` on every rank (each rank's own counts); rank 0's copy also goes to the run log."""
        if self.enabled:
            self.info(message)
        else:
            print(message, flush=True)

    def attach_run_log(self, path: Path) -> None:
        """From now on append every line to ``path`` (written by ``write_run_log``), starting with the
        lines said before it existed."""
        if not self.enabled:
            return
        self.run_log = Path(path)
        pending, self._pending = self._pending, []
        for line in pending:
            self._to_run_log(line)

    def _to_run_log(self, message: str) -> None:
        if self.run_log is None:
            self._pending.append(message)
            return
        # Appended and closed per line: a killed run's log ends with its last line.
        with open(self.run_log, "a", encoding="utf-8") as fh:
            fh.write(message + "\n")

    # ---- progress -----------------------------------------------------------------------------------
    def start_progress(self, step: int, total: int) -> None:
        """Training starts (or resumes) at ``step`` of ``total``."""
        if not self.enabled:
            return
        self._total = total
        self._clock_step, self._clock_t = step, time.perf_counter()
        if self.use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=step, desc=self.desc, unit="step", file=self.stream,
                             dynamic_ncols=True, mininterval=1.0)

    def step(self, step: int, loss: float, lr: float) -> None:
        """Step ``step`` is done with this loss and learning rate."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self._bar.update(1)
            return
        if step % self.log_every and step != self._total:
            return
        now = time.perf_counter()
        done, seconds = step - self._clock_step, now - self._clock_t
        rate = done / seconds if done > 0 and seconds > 0 else None
        if rate is None:
            speed = "- step/s ETA -"
        else:
            from tqdm import tqdm

            speed = f"{rate:.2f} step/s ETA {tqdm.format_interval((self._total - step) / rate)}"
        self.info(f"step {step}/{self._total} loss {loss:.4f} lr {lr:.2e} {speed}")
        self._clock_step, self._clock_t = step, now

    def pause(self) -> None:
        """Validation starts: its time does not count in the step rate."""
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        """Validation is over: the step clock runs again."""
        if self._paused_at is not None:
            self._clock_t += time.perf_counter() - self._paused_at
            self._paused_at = None
        if self._bar is not None:
            self._bar.unpause()

    def close(self) -> None:
        """Close the bar (lines after this are plain)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):        # closed or a stream-like object without isatty
        return False


class _TrainLogHandler(logging.Handler):
    """Routes ``spikeprep`` logging records through a ``TrainLog`` (the bar stays whole)."""

    def __init__(self, log: TrainLog):
        super().__init__(level=logging.WARNING)
        self.log = log
        self.pid = os.getpid()
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if os.getpid() == self.pid:
                self.log.info(message)
            else:
                # A DataLoader worker (forked): it has no bar of its own to write through. One short append
                # keeps the run log complete; the line goes to its stderr as logging would print it.
                sys.stderr.write(message + "\n")
                if self.log.run_log is not None:
                    with open(self.log.run_log, "a", encoding="utf-8") as fh:
                        fh.write(message + "\n")
        except Exception:  # logging's rule: a failing handler must not stop the program
            self.handleError(record)


@contextlib.contextmanager
def capture_spikeprep_logging(log: TrainLog) -> Iterator[None]:
    """While active, warnings of the ``spikeprep.*`` loggers go through ``log`` (and not to other handlers)."""
    logger = logging.getLogger("spikeprep")
    handler = _TrainLogHandler(log)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# ---- the run log's header and TensorBoard --------------------------------------------------------------
def _git_revision() -> str:
    if not (SOURCE_ROOT / ".git").exists():  # an installed wheel: site-packages may sit inside another repository
        from importlib.metadata import PackageNotFoundError, version
        try:
            return f"spikeprep {version('spikeprep')} (installed, not a git checkout)"
        except PackageNotFoundError:
            return "unknown (not a git checkout)"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=SOURCE_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 \
            else "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _pip_freeze() -> str:
    # importlib.metadata lists what pip freeze would, without a subprocess (and works without pip).
    dists = {(d.metadata["Name"] or "?").lower(): d.version for d in metadata.distributions()}
    return "\n".join(f"{name}=={version}" for name, version in sorted(dists.items()))


def write_run_log(path: Path, opts: TrainOptions, cfg: Config, config_text: str, extra: dict) -> None:
    """Write the run log ``path``: time, git revision, command line, Python/torch versions, the options,
    ``extra`` (one ``key: value`` line each), the config file's text, the resolved config and pip freeze."""
    lines = [f"time: {time.strftime('%Y-%m-%d %H:%M:%S')}",
             f"git: {_git_revision()}",
             f"command: {' '.join(sys.argv)}",
             f"python: {sys.version.split()[0]} on {platform.platform()}",
             f"torch: {torch.__version__}",
             "options: " + json.dumps({k: str(v) for k, v in dataclasses.asdict(opts).items()}),
             *(f"{k}: {v}" for k, v in extra.items()),
             "", f"# config file {opts.config}", config_text.rstrip(),
             "", "# resolved config", json.dumps(cfg.model_dump(mode="json"), indent=2),
             "", "# pip freeze", _pip_freeze(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))



def log_train_step(writer, step: int, terms: dict, lr: float, log_every: int) -> None:
    """TensorBoard after optimiser step ``step``: the total loss at every step (`spikeprep compare` draws its
    loss curve from these), the lr and the other loss terms every ``log_every`` steps and at step 1."""
    if writer is None:
        return
    writer.add_scalar("train/loss_total", terms["total"], step)
    if step % log_every == 0 or step == 1:
        writer.add_scalar("train/lr", lr, step)
        for key, value in terms.items():
            if value is not None and key != "total":
                writer.add_scalar(f"train/loss_{key}", value, step)


def log_validation(writer, report: ValReport, step: int, say, best_psnr: float | None) -> None:
    o, b = report.overall, report.boundary
    static = "" if report.static is None else \
        f"static half: PSNR Y {format_metric(report.static.psnr_y, 'psnr_y')} dB; "
    # every number through format_metric, the reports' one format (LPIPS "not computed": the reason was said
    # at the start)
    say(f"val step {step}: PSNR {format_metric(o.psnr_rgb, 'psnr_rgb')} dB (Y {format_metric(o.psnr_y, 'psnr_y')}), "
        f"SSIM {format_metric(o.ssim, 'ssim')} (Y {format_metric(o.ssim_y, 'ssim_y')}), "
        f"LPIPS {format_metric(o.lpips, 'lpips')}; {static}"
        f"motion boundaries: PSNR {format_metric(b.psnr_rgb, 'psnr_rgb')} dB "
        f"[{o.frames} frames, {report.seconds:.1f} s]")
    gain, boundary_gain = report.db_from_spikes(), report.db_from_spikes(region="boundary")
    if report.reliance is not None:
        say(f"  sensitivity probes at step {step}: count-zero sensitivity (PSNR Y true - count-zero voxels) "
            f"{_db(gain)} overall, {_db(boundary_gain)} on motion boundaries (a diagnostic, not the spikes' worth)")
    if writer is None:
        return
    if best_psnr is not None and math.isfinite(best_psnr):
        writer.add_scalar("val/best_psnr_rgb", best_psnr, step)
    for prefix, m in (("val", o), ("val_boundary", b), ("val_static", report.static)):
        if m is None:
            continue
        for key in ("psnr_rgb", "psnr_y", "ssim", "ssim_y", "lpips"):
            value = getattr(m, key)
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"{prefix}/{key}", value, step)
    if report.reliance is not None:
        for tag, value in (("db_from_spikes", gain), ("boundary_db_from_spikes", boundary_gain)):
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"val_reliance/{tag}", value, step)
        for probe in PROBES:
            m = getattr(report.reliance, probe)
            for region in ("overall", "boundary"):
                value = None if m is None else getattr(m, region).psnr_y
                if value is not None and math.isfinite(value):
                    writer.add_scalar(f"val_reliance/{probe}_{region}_psnr_y", value, step)


def log_triptychs(writer, outputs: Path, report: ValReport, step: int) -> None:
    """The validation's blur | recon | sharp triptychs (written as PNGs) also as TensorBoard images, one tag
    per frame (``triptych/{seq}_{frame}``), so the step slider shows each frame's progress."""
    if writer is None or report.images_dir is None:
        return
    for png in sorted((outputs / report.images_dir).glob("*_triptych.png")):
        writer.add_image(f"triptych/{png.name[:-len('_triptych.png')]}", read_rgb(png), step, dataformats="CHW")


# TensorBoard's hparams table: these scalar tags (written by log_validation) are its metric columns; it
# shows each one's last value.
HPARAM_METRICS = ("val/best_psnr_rgb", "val/psnr_rgb", "val/psnr_y", "val/ssim", "val/ssim_y", "val/lpips",
                  "val_static/psnr_y", "val_boundary/psnr_rgb", "val_reliance/db_from_spikes",
                  "val_reliance/boundary_db_from_spikes")


def run_hparams(cfg: Config, opts: TrainOptions, max_steps: int) -> dict[str, str | int | float]:
    """The resolved config's main fields, for TensorBoard's hparams table."""
    return {"MODEL.VRT_CFG": cfg.MODEL.VRT_CFG, "MODEL.FUSE.TYPE": cfg.MODEL.FUSE.TYPE,
            "TRAIN.OPTIM.LR": cfg.TRAIN.OPTIM.LR, "TRAIN.SCHED.WARMUP_STEPS": cfg.TRAIN.SCHED.WARMUP_STEPS,
            "TRAIN.BATCH_SIZE": cfg.TRAIN.BATCH_SIZE, "max_steps": max_steps, "DATA.CROP_SIZE": cfg.DATA.CROP_SIZE,
            "DATA.CLIP_LEN": cfg.DATA.CLIP_LEN, "DATA.K": cfg.DATA.K, "SEED": cfg.SEED,
            # on/off as text: torch's hparams summary would store a bool as the number 1 or 0
            "DATA.TOTALS_ONLY": "on" if cfg.DATA.TOTALS_ONLY else "off",
            "spike": "on" if opts.use_spike else "off", "perceptual": "on" if opts.perceptual else "off",
            "freeze_flow_steps": opts.freeze_flow_steps, "freeze_vrt_steps": opts.freeze_vrt_steps,
            "init_from": str(opts.init_from or "-"),
            "TRAIN.AUX_SPIKE_RECON_WEIGHT": cfg.TRAIN.AUX_SPIKE_RECON_WEIGHT if opts.use_spike else 0.0}


def log_hparams_start(writer, hparams: dict) -> None:
    # In the run's own event file (SummaryWriter.add_hparams would open a sub-run per call), so the
    # table's metric columns are this run's validation scalars. A resumed run writes it again: the same values.
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    experiment, session_start, _ = hparams_summary(hparams, {tag: 0.0 for tag in HPARAM_METRICS})
    file_writer = _event_file(writer)
    file_writer.add_summary(experiment)
    file_writer.add_summary(session_start)


def log_hparams_end(writer) -> None:
    """The session's end (status success) in the hparams table: the run reached its last step."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    _, _, session_end = hparams_summary({}, {})
    _event_file(writer).add_summary(session_end)


def _event_file(writer):
    """The open ``SummaryWriter``'s own event file (its public ``file_writer``, the ``FileWriter`` it writes
    scalars through); a closed writer has none, and reopening one would start a second event file."""
    if writer.file_writer is None:
        raise RuntimeError("the TensorBoard writer is closed: the hparams table goes into its open event file")
    return writer.file_writer


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} dB"
