"""Versioned JSON records on disk: the one way a report (validation, baselines) is written and read back.

Written atomically (``schemas.atomic``), so a reader never sees half a report; read back with the version
checked before validation, so a report of another spikeprep version is refused with what to re-run instead
of failing on a field it does not know. Every error is a ``ValueError`` that names the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.atomic import atomic_write_text
from schemas.validation import describe_validation_error

__all__ = ["read_json_record", "write_json_record"]

RecordT = TypeVar("RecordT", bound=BaseModel)


def write_json_record(path: str | os.PathLike, record: BaseModel) -> Path:
    """Write ``record`` as indented JSON (NaN allowed), atomically; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(record.model_dump(mode="json"), indent=2, allow_nan=True) + "\n")


def read_json_record(path: str | os.PathLike, model: type[RecordT], *, kind: str, versions: tuple[int, ...],
                     rerun: str, unversioned: int | None = None) -> RecordT:
    """Read and validate one ``model`` record; ``kind`` names it in errors ("validation report"), ``versions``
    are the ones this code reads, ``rerun`` says how to write a current one; ``unversioned``, when given, is
    the version a record without a ``version`` field is read as (one written before the record had one)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable {kind} ({err})") from err
    if isinstance(raw, dict) and unversioned is not None and "version" not in raw:
        raw = {**raw, "version": unversioned}
    if isinstance(raw, dict) and raw.get("version") not in versions:
        readable = "version" if len(versions) == 1 else "versions"
        raise ValueError(f"{path}: {kind} version {raw.get('version')!r}, this spikeprep reads {readable} "
                         f"{', '.join(map(str, versions))}; {rerun}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:  # one sentence naming the file, the row and the field
        raise ValueError(f"{path}: invalid {kind}: {describe_validation_error(err)}") from None
