"""Readable pydantic validation errors: the one format used for configs, spike meta and CLI options.

Each problem reads ``dotted.field.path: message`` (``record`` when it concerns the whole record), with
pydantic's ``"Value error, "`` prefix removed from messages raised by our own validators.
"""
from __future__ import annotations

VALUE_ERROR_PREFIX = "Value error, "


def error_location(entry: dict) -> str:
    """Dotted field path of one entry of ``ValidationError.errors()`` (``record`` when empty)."""
    return ".".join(str(p) for p in entry["loc"]) or "record"


def error_message(entry: dict, unknown_key: str | None = None) -> str:
    """Message of one entry of ``ValidationError.errors()``.

    ``unknown_key``, when given, replaces pydantic's message for a forbidden extra field.
    """
    if unknown_key is not None and entry["type"] == "extra_forbidden":
        return unknown_key
    return entry["msg"].removeprefix(VALUE_ERROR_PREFIX)


def describe_validation_error(err, unknown_key: str | None = None) -> str:
    """One ``field.path: message`` per problem of a pydantic ``ValidationError``, joined by ``; ``."""
    return "; ".join(f"{error_location(e)}: {error_message(e, unknown_key)}" for e in err.errors())
