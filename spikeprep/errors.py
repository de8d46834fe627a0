"""Errors for bad input: each names the file, what is wrong, and how to fix it."""
from __future__ import annotations

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


class SampleError(Exception):
    """A training sample that cannot be served (the Dataset logs it and returns None; the collate drops it)."""
