"""Readable pydantic validation errors: the one format used for configs, spike meta, CLI options and every
record read from disk (``schemas.json_record``, ``dataset.json``).

Each problem reads ``dotted.field.path: message`` (``record`` when it concerns the whole record), with
pydantic's ``"Value error, "`` prefix removed from messages raised by our own validators; a row of a record's
``rows`` list reads ``row N, field name`` (``row N`` when the row as a whole is refused), other list items
``name[N]``. Never pydantic's own dump (its type codes, input reprs and documentation links).
"""
from __future__ import annotations

VALUE_ERROR_PREFIX = "Value error, "


def error_location(entry: dict) -> str:
    """Where one entry of ``ValidationError.errors()`` lies: ``DATA.NORM.STD``, ``row 3, field seq``,
    ``MODEL.CHANNELS_PER_SCALE[1]`` (``record`` when it concerns the whole record)."""
    phrases: list[str] = []
    names: list[str] = []
    for part in entry["loc"]:
        if isinstance(part, int) and names and names[-1] == "rows":
            names.pop()
            if names:
                phrases.append(".".join(names))
            names = []
            phrases.append(f"row {part}")
        elif isinstance(part, int):
            if names:
                names[-1] += f"[{part}]"
            else:
                names.append(f"[{part}]")
        else:
            names.append(str(part))
    if names:
        phrases.append(("field " if phrases else "") + ".".join(names))
    return ", ".join(phrases) or "record"


def error_message(entry: dict, unknown_key: str | None = None) -> str:
    """Message of one entry of ``ValidationError.errors()``.

    ``unknown_key``, when given, replaces pydantic's message for a forbidden extra field.
    """
    if unknown_key is not None and entry["type"] == "extra_forbidden":
        return unknown_key
    return entry["msg"].removeprefix(VALUE_ERROR_PREFIX)


def describe_validation_error(err, unknown_key: str | None = None, limit: int = 5) -> str:
    """One ``field.path: message`` per problem of a pydantic ``ValidationError``, joined by ``; ``; past
    ``limit`` problems, how many more (a record of a thousand bad rows is one line, not a thousand)."""
    entries = err.errors()
    problems = [f"{error_location(e)}: {error_message(e, unknown_key)}" for e in entries[:limit]]
    if len(entries) > limit:
        problems.append(f"and {len(entries) - limit} more")
    return "; ".join(problems)
