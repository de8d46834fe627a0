"""Errors for bad input: each names the file, what is wrong, and how to fix it."""
from __future__ import annotations

import errno
from pathlib import Path


class SpikeprepError(Exception):
    """Base class of the errors spikeprep raises on purpose (the CLI prints them without a traceback)."""


class InputError(SpikeprepError, ValueError):
    """A user-supplied file is malformed or inconsistent.

    ``str(err)`` reads ``<path>: <problem>. Fix: <fix>``.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str | None = None):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        tail = f". Fix: {fix}" if fix else ""
        super().__init__(f"{where}{problem}{tail}")

    def __reduce__(self):
        # raised in an ingest worker process, it crosses to the parent pickled: keep its three parts
        return type(self), (self.path, self.problem, self.fix)


class SampleError(Exception):
    """A training sample that cannot be served (the Dataset logs it and returns None; the collate drops it)."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` of a full disk or an exhausted quota."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def disk_full_error(err: OSError, path: str | Path, what: str, fix: str) -> InputError:
    """``InputError`` for a full disk: "no space left on the device" and the file being written (the error's
    own file name when it has one, else ``path``); ``what`` says what happened to the partial output."""
    target = err.filename if err.filename else path
    quota = " (the disk quota is exceeded)" if err.errno == errno.EDQUOT else ""
    return InputError(target, f"no space left on the device{quota} while writing it; {what}", fix=fix)
