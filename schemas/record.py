"""The base of every record that crosses a module boundary or is written to disk: frozen (a record is a value,
never edited in place) and strict (an unknown field is an error that names it, so a misspelled or newer
field is never silently dropped)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Record"]


class Record(BaseModel):
    """A frozen pydantic model that forbids unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
