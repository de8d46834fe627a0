"""``spike/meta.json``: how a sequence's raw spike data is stored (DESIGN section 4).

One record per sequence, next to the spike files. Frozen and validated: a reader never guesses a
missing field. Version 3 (version 2 is version 3 without ``rgb_homography``, version 1 is version 2 without
``axes`` and ``head_columns``; both still read)::

    {
      "version": 3,
      "format": "dat",                 # dat | npy-binary | npz-binary | npy-events | npz-events
      "layout": "stream",              # stream: one continuous file; per-frame: one file per blur frame
      "height": 250, "width": 400,     # spike sensor resolution (rows, columns)
      "rate_hz": 20000.0,              # spike frames (ticks) per second
      "flipud": true,                  # .dat only: the file stores the image upside down
      "start_s": 0.0,                  # binary stream: time of spike frame 0 on the spike clock
      "stream_file": "stream.dat",     # stream layout: the file holding the stream
      "file_start_s": {"000000": 0.0}, # binary per-frame: time of each file's frame 0, by file stem
      "axes": "NHW",                   # npy/npz-binary only: axis order of the stored array, NHW or HWN
      "head_columns": 16,              # dat only: extra columns at the end of every stored row, dropped
      "rgb_homography": [[2.9, 0.01, 3.2], [-0.01, 2.9, -1.5], [0, 0, 1]]   # spike px -> RGB px (optional)
    }

``rgb_homography`` (version 3, optional): the 3x3 homography from spike pixel coordinates ``(x, y)`` to the RGB
frames' pixel coordinates (pixel centres at integer coordinates in both images), for a rig whose two cameras
do not see the same pixels (a beam splitter: a few pixels of shift, a fraction of a degree, a percent of
scale; resolutions of any ratio). Ingest resamples the RGB frames onto the spike grid with it
(``schemas.registration``); without it, RGB frames that are not the spike grid times an integer are assumed
to see the same field of view.

``axes`` (default ``NHW``): ``[N, H, W]`` (spike frame, row, column) or ``[H, W, N]`` (frames last, as the
SpikingSIM sample of a real recording is stored). ``head_columns`` (default none): each stored row holds
``width + head_columns`` pixels and the last ``head_columns`` carry no image (SpikeCV's SPS10 layout: rows of
416 columns, columns 400..415 dropped, ``width`` 400); the packed frame is ``height * (width + head_columns)``
bits.

Spike frame j of a binary stream starting at s has time ``s + j / rate_hz`` (DESIGN section 3).
Event formats carry their own times; ``rate_hz`` still gives the tick length used for intensities.
"""
from __future__ import annotations

import json
import math
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.record import Record
from schemas.registration import homography_problem

SPIKE_META_VERSION = 3
#: fields a version-1 record cannot hold
_SINCE_V2 = ("axes", "head_columns")
#: fields a version-1 or version-2 record cannot hold
_SINCE_V3 = ("rgb_homography",)
SPIKE_META_FILENAME = "meta.json"

SpikeFormat = Literal["dat", "npy-binary", "npz-binary", "npy-events", "npz-events"]
FORMAT_SUFFIX: dict[str, str] = {
    "dat": ".dat",
    "npy-binary": ".npy",
    "npz-binary": ".npz",
    "npy-events": ".npy",
    "npz-events": ".npz",
}


# Spike cameras run at 20-40 kHz; a GHz is beyond any sensor and keeps tick counts (duration x rate) exact
# in int64 and float64.
MAX_RATE_HZ = 1e9


class SpikeMeta(Record):
    """Validated content of ``spike/meta.json`` (see the module docstring for the fields)."""

    version: Literal[1, 2, 3] = SPIKE_META_VERSION
    format: SpikeFormat
    layout: Literal["stream", "per-frame"]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    rate_hz: float = Field(gt=0)
    flipud: bool = True
    start_s: float | None = None
    stream_file: str | None = None
    file_start_s: dict[str, float] | None = None
    axes: Literal["NHW", "HWN"] | None = None
    head_columns: int | None = Field(default=None, gt=0)
    rgb_homography: list[list[float]] | None = None

    @property
    def is_events(self) -> bool:
        """True for event-list formats (``npy-events``, ``npz-events``), False for binary frames."""
        return self.format.endswith("events")

    @property
    def axis_order(self) -> str:
        """Axis order of a stored binary array: ``axes``, or ``NHW`` when unset."""
        return self.axes or "NHW"

    @property
    def stored_width(self) -> int:
        """Pixels per stored row: ``width`` plus the dropped ``head_columns`` (``.dat``)."""
        return self.width + (self.head_columns or 0)

    @property
    def suffix(self) -> str:
        """File suffix of the spike files (``.dat``, ``.npy`` or ``.npz``)."""
        return FORMAT_SUFFIX[self.format]

    @field_validator("version", mode="before")
    @classmethod
    def _version_not_bool(cls, value):
        if isinstance(value, bool):  # True == 1 would otherwise pass as version 1
            raise ValueError("version must be the integer 1, 2 or 3")
        return value

    @field_validator("stream_file")
    @classmethod
    def _plain_file_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        pure = PurePosixPath(value.replace("\\", "/"))
        if not value.strip() or pure.is_absolute() or ".." in pure.parts or PureWindowsPath(value).drive:
            raise ValueError(f"must be a file name relative to the spike directory, got {value!r}")
        return value

    @field_validator("rate_hz", "start_s")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("rate_hz")
    @classmethod
    def _camera_rate(cls, value: float) -> float:
        if value > MAX_RATE_HZ:
            raise ValueError(f"must be at most {MAX_RATE_HZ:g} (spike frames per second; cameras run at 20-40 kHz)")
        return value

    @field_validator("rgb_homography")
    @classmethod
    def _homography(cls, value):
        if value is None:
            return value
        if len(value) != 3 or any(len(row) != 3 for row in value):
            raise ValueError("must be 3 rows of 3 numbers (spike px -> RGB px)")
        problem = homography_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _layout_fields(self) -> "SpikeMeta":
        for name in _SINCE_V2:
            if self.version == 1 and getattr(self, name) is not None:
                raise ValueError(f"'{name}' needs version 2 (set \"version\": 2)")
        for name in _SINCE_V3:
            if self.version < 3 and getattr(self, name) is not None:
                raise ValueError(f"'{name}' needs version 3 (set \"version\": 3)")
        if self.axes is not None and self.format not in ("npy-binary", "npz-binary"):
            raise ValueError(f"'axes' is the axis order of a binary array (npy-binary, npz-binary), "
                             f"not of format {self.format!r}; remove it")
        if self.head_columns is not None and self.format != "dat":
            raise ValueError(f"'head_columns' belongs to format 'dat' (rows with extra columns), "
                             f"not {self.format!r}; remove it")
        if self.format == "dat" and (self.height * self.stored_width) % 8:
            stored = "height*width" if self.head_columns is None else "height*(width + head_columns)"
            raise ValueError(
                f"{stored} = {self.height * self.stored_width} is not a multiple of 8; "
                ".dat frames are whole bytes"
            )
        if self.layout == "stream":
            if self.stream_file is None:
                raise ValueError("layout 'stream' needs 'stream_file' (the file holding the stream)")
            if not self.is_events and self.start_s is None:
                raise ValueError("a binary stream needs 'start_s' (time of spike frame 0, seconds)")
            if self.file_start_s is not None:
                raise ValueError("'file_start_s' belongs to layout 'per-frame', not 'stream'")
        else:
            if self.stream_file is not None:
                raise ValueError("'stream_file' belongs to layout 'stream', not 'per-frame'")
            if not self.is_events and not self.file_start_s:
                raise ValueError(
                    "binary per-frame files need 'file_start_s': {file stem: time of its frame 0}"
                )
            for stem, start in (self.file_start_s or {}).items():
                if not math.isfinite(start):
                    raise ValueError(f"file_start_s[{stem!r}] must be a finite number")
        return self

    def frame_time(self, start_s: float, index):
        """Time of spike frame ``index`` of a binary file whose frame 0 is at ``start_s``.

        The one place this formula lives (DESIGN section 3): ``start_s + index / rate_hz``.
        ``index`` may be an int or an integer numpy array; the result is float64.
        """
        return start_s + index / self.rate_hz

    def to_json(self) -> str:
        """The ``meta.json`` text: unset fields omitted, keys sorted (stable bytes)."""
        return json.dumps(self.model_dump(exclude_none=True), indent=2, sort_keys=True) + "\n"
