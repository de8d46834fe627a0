"""Read and write ``spike/meta.json`` (the record is ``schemas.spike_meta.SpikeMeta``)."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from schemas.spike_meta import SPIKE_META_FILENAME, SpikeMeta
from spikeprep.errors import InputError, describe_validation_error


def read_spike_meta(path: str | Path) -> SpikeMeta:
    """Read and validate a ``meta.json``; ``path`` may be the file or the spike directory.

    Raises ``InputError`` naming the file, the bad fields and the fix.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SPIKE_META_FILENAME
    if not path.is_file():
        raise InputError(path, "spike meta file not found",
                         fix="write spike/meta.json describing the spike files (fields: schemas/spike_meta.py)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})", fix="rewrite it as a JSON object") from None
    if not isinstance(raw, dict):
        raise InputError(path, "must hold a JSON object", fix="see schemas/spike_meta.py for the fields")
    try:
        return SpikeMeta.model_validate(raw)
    except ValidationError as err:
        raise InputError(path, f"invalid spike meta: {describe_validation_error(err)}",
                         fix="correct these fields (see schemas/spike_meta.py)") from None


def write_spike_meta(path: str | Path, meta: SpikeMeta) -> Path:
    """Write ``meta`` as JSON with sorted keys (stable bytes); ``path`` may be the spike directory."""
    path = Path(path)
    if path.is_dir():
        path = path / SPIKE_META_FILENAME
    path.write_text(meta.to_json())
    return path
