"""Signals while training: ``StopOnSignals`` (Ctrl-C and SIGTERM: finish the step, save last.pth, stop;
SIGUSR1: save last.pth after the step and go on) and ``ignore_stop_signals`` for the DataLoader workers.
model/train.py prints the ``--resume`` command (``model.train_options``) after a stop.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
SAVE_SIGNAL = signal.SIGUSR1


class StopOnSignals:
    """SIGINT (Ctrl-C), SIGTERM and SIGUSR1 while training: a context manager around the loop.

    SIGTERM is what a cluster scheduler's preemption, ``docker stop``, ``timeout`` and Kubernetes send; it is
    treated like Ctrl-C. The first one only sets ``requested`` (and ``signum``): the loop finishes the step it
    is in (and a validation already running), saves last.pth as complete as any other checkpoint (the
    ``--stop-at`` path) and stops; the CLI exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
    Stopping mid-step instead would save parameters the optimiser had half updated. A second Ctrl-C or
    SIGTERM raises KeyboardInterrupt at once; checkpoints are written atomically, so a save it cuts short
    leaves the previous last.pth whole.

    SIGUSR1 (the usual "time is nearly up" signal of clusters, e.g. Slurm's ``--signal=USR1@300``) sets
    ``save_requested``: the loop saves last.pth after the current step and trains on (a later SIGTERM saves
    again where it stops). Installed only in the main thread (the only one Python delivers signals to); the
    previous handlers come back on exit.
    """

    def __init__(self, announce: bool = True):
        self.requested = False
        self.signum: int | None = None         # the signal that asked to stop
        self.save_requested = False
        self.announce = announce
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        """How the stop was asked for: "Ctrl-C" or "SIGTERM"."""
        return STOP_SIGNALS.get(self.signum, "a signal")

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (*STOP_SIGNALS, SAVE_SIGNAL):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        return False

    def _handle(self, signum, frame) -> None:
        if signum == SAVE_SIGNAL:
            self.save_requested = True
            self._say(b"\nSIGUSR1: saving last.pth after the current step; training goes on\n")
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        self._say(f"\n{self.name}: finishing the current step, then saving last.pth and stopping ({self.name} "
                  f"again stops at once without saving)\n".encode())

    def _say(self, message: bytes) -> None:
        if self.announce:
            # os.write, not print: the handler may run inside a print of the main code, and a buffered
            # stream refuses a reentrant write.
            with contextlib.suppress(OSError, AttributeError, ValueError):
                os.write(sys.__stdout__.fileno(), message)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C, SIGTERM and SIGUSR1 (a terminal or a scheduler signals the whole
    process group): the main process decides when to stop, and a worker that died of one would fail the
    batch the last step still needs. A worker still ends with the main process (torch's watchdog)."""
    for signum in (*STOP_SIGNALS, SAVE_SIGNAL):
        signal.signal(signum, signal.SIG_IGN)
