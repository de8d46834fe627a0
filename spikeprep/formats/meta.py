"""Read and write ``spike/meta.json`` (the record is ``schemas.spike_meta.SpikeMeta``)."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from schemas.atomic import atomic_write_text
from schemas.spike_meta import SPIKE_META_FILENAME, SpikeMeta
from schemas.validation import describe_validation_error
from spikeprep.errors import InputError


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


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
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise InputError(path, f"cannot read the spike meta file ({err.strerror or err})",
                         fix="check the path and its permissions") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 text ({err})", fix="rewrite it as a UTF-8 JSON object") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as err:
        raise InputError(path, f"key {err.args[0]!r} appears more than once",
                         fix="keep one value per field") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, over-long ints, deep nesting
        raise InputError(path, f"not valid JSON ({err})", fix="rewrite it as a JSON object") from None
    if not isinstance(raw, dict):
        raise InputError(path, f"must hold a JSON object, not {type(raw).__name__}",
                         fix="see schemas/spike_meta.py for the fields")
    try:
        # strict: JSON types are taken as written ("250", 250.0 or true are not a height)
        return SpikeMeta.model_validate(raw, strict=True)
    except ValidationError as err:
        raise InputError(path, f"invalid spike meta: {describe_validation_error(err)}",
                         fix="correct these fields (see schemas/spike_meta.py)") from None


def write_spike_meta(path: str | Path, meta: SpikeMeta) -> Path:
    """Write ``meta`` as JSON with sorted keys (stable bytes), atomically; ``path`` may be the spike directory."""
    path = Path(path)
    if path.is_dir():
        path = path / SPIKE_META_FILENAME
    return atomic_write_text(path, meta.to_json())
