"""One experiment's outputs under LOG.SAVE_DIR, and who may write them (used by model/train.py, rank 0).

An experiment ``exp`` owns, under the outputs folder (LOG.SAVE_DIR)::

    ckpts/{exp}/                   best.pth, last.pth
    metrics/val_{exp}_{step}.json  its validation reports
    visuals/{exp}/                 triptychs and images
    logs/{exp}/                    TensorBoard
    logs/run_{exp}_{time}.txt      run logs

``experiment_lock``: one training per experiment at a time. The second stops at once, naming the first (its
pid, host, start time and command, which the holder writes into the lock file ``ckpts/.{exp}.lock``). The
lock is ``flock``'s, like ``spikeprep.store.store_lock``: the kernel drops it when its holder exits, however
it exits, so a killed run never leaves a stale lock.

``check_new_run``: a run without ``--resume`` refuses an experiment that already has outputs (a forgotten
``--resume`` would otherwise overwrite best.pth with a worse model and mix two runs' reports), unless
``--start-over`` asks to move the old run aside first (``move_aside``: to ``superseded/{exp}_{time}/``, the
same layout inside).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spikeprep.errors import InputError

SUPERSEDED_DIRNAME = "superseded"


@dataclass(frozen=True)
class ExperimentOutputs:
    """Where experiment ``exp`` writes under ``outputs`` (the module docstring lists them)."""

    outputs: Path
    exp: str

    @property
    def ckpt_dir(self) -> Path:
        return self.outputs / "ckpts" / self.exp

    @property
    def lock_file(self) -> Path:
        return self.outputs / "ckpts" / f".{self.exp}.lock"

    def existing(self) -> list[Path]:
        """What this experiment has written so far (the folders that hold anything, and its files)."""
        found = [d for d in (self.ckpt_dir, self.outputs / "visuals" / self.exp, self.outputs / "logs" / self.exp)
                 if d.is_dir() and any(d.iterdir()) or d.is_file()]
        found += self._files("metrics", rf"val_{re.escape(self.exp)}_\d+\.json")
        return found

    def run_logs(self) -> list[Path]:
        return self._files("logs", rf"run_{re.escape(self.exp)}_\d{{8}}_\d{{6}}\.txt")

    def _files(self, folder: str, pattern: str) -> list[Path]:
        where = self.outputs / folder
        if not where.is_dir():
            return []
        rx = re.compile(pattern)
        return sorted(p for p in where.iterdir() if rx.fullmatch(p.name))


@contextlib.contextmanager
def experiment_lock(paths: ExperimentOutputs) -> Iterator[None]:
    """Hold experiment ``paths.exp``'s lock while training; ``InputError`` at once, naming the holder, if
    another training of it holds the lock."""
    paths.lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that has not said who"
        os.close(fd)
        raise InputError(paths.ckpt_dir, f"another training of experiment {paths.exp!r} is running: {holder}; "
                         "two runs would overwrite each other's checkpoints and TensorBoard logs",
                         fix=f"wait for it to end (then --resume continues it), stop it, or choose another --exp"
                         ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()}, started "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}, command: {' '.join(sys.argv)}\n").encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_new_run(paths: ExperimentOutputs, *, resume: bool, start_over: bool, say) -> None:
    """Before a run writes anything: refuse (``InputError``, naming the folder) an experiment that has outputs
    when the run neither resumes it nor starts over; with ``start_over``, move them aside (said)."""
    if resume and start_over:
        raise InputError(None, "--resume and --start-over both given", fix="--resume continues the run in "
                         f"{paths.ckpt_dir}; --start-over moves it aside and starts from step 0: pick one")
    found = paths.existing()
    if resume or not found:
        return
    if start_over:
        moved_to = move_aside(paths)
        say(f"--start-over: moved the previous run of {paths.exp!r} to {moved_to} (its checkpoints, reports, "
            "visuals, TensorBoard and run logs); this run starts from step 0")
        return
    names = ", ".join(str(p.relative_to(paths.outputs)) for p in found[:4]) + (" ..." if len(found) > 4 else "")
    raise InputError(paths.ckpt_dir, f"experiment {paths.exp!r} already has a run in {paths.outputs} ({names}); "
                     "a new run would overwrite its best.pth and last.pth and mix its validation reports with "
                     "the new ones", fix="continue it with --resume (the same options), start over with "
                     f"--start-over (moves the old run to {paths.outputs / SUPERSEDED_DIRNAME}/), or choose "
                     "another --exp")


def move_aside(paths: ExperimentOutputs) -> Path:
    """Move everything experiment ``paths.exp`` wrote to ``superseded/{exp}_{time}/`` under the outputs folder
    (the same relative paths inside); returns that folder."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    dest = paths.outputs / SUPERSEDED_DIRNAME / f"{paths.exp}_{stamp}"
    n = 1
    while dest.exists():                     # two start-overs in one second keep both
        n += 1
        dest = paths.outputs / SUPERSEDED_DIRNAME / f"{paths.exp}_{stamp}_{n}"
    for src in paths.existing() + paths.run_logs():
        target = dest / src.relative_to(paths.outputs)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)             # one filesystem (both under the outputs folder): a rename
    return dest
