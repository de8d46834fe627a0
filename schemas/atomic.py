"""Atomic file writes: the one way this project writes a file that others read (DESIGN section 5).

A file is written under a unique temporary name in the destination folder (hidden, carrying the process
id and a random token, so parallel writers of the same file never share a temp file), flushed to disk
with ``fsync``, and renamed onto the destination with ``os.replace`` (atomic on POSIX within one
filesystem). A reader therefore sees the old file or the new one, never half of one. If the write fails,
the temp file is removed and the destination is left as it was.

``atomic_write_bytes`` writes bytes you have in memory; ``atomic_path`` yields the temp path for writers
that want a file name (``np.save``, ``np.savez_compressed``, ``cv2.imwrite``, a validate-then-commit
step). The temp name keeps the destination's suffix, so writers that add a missing ``.npy``/``.npz`` do
not rename it. Folder renames (a sequence built in ``.NAME.partial``) are not covered here.

A writer killed between creating its temp file and the rename (SIGKILL, power loss) leaves the temp file
behind; ``remove_stale_temps`` removes those of one destination whose writer process is gone, so a rerun
ends with the same folder as an uninterrupted run.

Lives in ``schemas`` (imports point cli -> model -> spikeprep -> schemas) so every layer can use it.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "remove_stale_temps", "stale_temps",
           "temp_name"]


def temp_name(path: str | os.PathLike) -> Path:
    """A fresh hidden temp path beside ``path`` that keeps its suffix: ``.NAME.<pid>-<token>.tmp<suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp{path.suffix}")


def _temp_pattern(path: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{12}}\.tmp{re.escape(path.suffix)}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True           # someone else's live process (or a pid we cannot judge): leave its file alone
    return True


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """The temp files of ``temp_name(path)``'s naming beside ``path`` whose writer process is no longer running
    (sorted). Another live writer's temp file is never listed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temp_pattern(path)
    found = []
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and entry.is_file() and not entry.is_symlink() and not _process_alive(int(match.group(1))):
            found.append(entry)
    return sorted(found)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove ``stale_temps(path)``; returns what was removed."""
    removed = stale_temps(path)
    for entry in removed:
        entry.unlink(missing_ok=True)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a unique temp path beside ``path``; on a normal exit move the file written there onto ``path``.

    The body must create the temp file. On normal exit it is fsynced (``fsync=True``) and renamed onto
    ``path``; if the body raises (or writes nothing), the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{path}: nothing was written to the temporary file {tmp.name}")
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and err.filename != str(path):
            # a full disk names the file the caller asked for, not the temp file (or none: a failed write())
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename); returns ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, "xb") as fh:  # "x": never write into a file someone else created
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
