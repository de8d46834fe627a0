"""The trainer's one way to say things: ``TrainLog`` (used by model/train.py, rank 0).

Every message goes to stdout through the progress bar (``tqdm.write`` clears the bar, prints the line and
redraws the bar, so lines never tear) and, once the run log exists, to the end of
``outputs/logs/run_{exp}_{time}.txt``: the run log holds the same lines as the screen. The bar is drawn only
when stdout is a terminal and ``--no-progress`` was not given. Otherwise (a cluster job's log file, a pipe)
there is no bar and no carriage return: a plain line every ``log_every`` steps says the step, the loss, the
learning rate, steps per second and the time left::

    step 120/3000 loss 0.0834 lr 1.98e-04 2.31 step/s ETA 20:46

Records of the ``spikeprep`` loggers (a dropped unreadable training sample, ...) take the same way while
``capture_spikeprep_logging`` is active. A message that only needs saying once per run (the reason LPIPS is
not computed) goes through ``once``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


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
        self._said: set[str] = set()
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

    def once(self, key: str, message: str) -> None:
        """``info(message)`` the first time ``key`` is given in this run, nothing after."""
        if key not in self._said:
            self._said.add(key)
            self.info(message)

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
