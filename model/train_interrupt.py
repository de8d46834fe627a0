"""Ctrl-C while training: ``StopOnCtrlC`` (finish the step, save last.pth, stop) and ``ignore_sigint`` for
the DataLoader workers. model/train.py prints the ``--resume`` command (``model.train_options``) after it."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


class StopOnCtrlC:
    """SIGINT (Ctrl-C) while training: a context manager around the loop.

    The first Ctrl-C only sets ``requested``: the loop finishes the step it is in (and a validation already
    running), saves last.pth as complete as any other checkpoint (the ``--stop-at`` path) and stops; the CLI
    exits 130. Stopping mid-step instead would save parameters the optimiser had half updated. The second
    Ctrl-C raises KeyboardInterrupt at once; checkpoints are written atomically, so a save it cuts short
    leaves the previous last.pth whole. Installed only in the main thread (the only one Python delivers
    signals to); the previous handler comes back on exit.
    """

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous = None

    def __enter__(self) -> "StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            # os.write, not print: the handler may run inside a print of the main code, and a buffered
            # stream refuses a reentrant write.
            with contextlib.suppress(OSError, AttributeError, ValueError):
                os.write(sys.__stdout__.fileno(), b"\nCtrl-C: finishing the current step, then saving last.pth "
                         b"and stopping (Ctrl-C again stops at once without saving)\n")


def ignore_sigint(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C (the terminal sends it to the whole process group): the main process
    decides when to stop, and a worker that died of it would fail the batch the last step still needs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
