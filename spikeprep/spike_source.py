"""One sequence's raw spikes, voxelized per exposure window.

``SpikeSource(spike_dir)`` reads ``spike/meta.json`` once, opens the spike files lazily (``.dat`` and
``.npy`` are memory-mapped, so a window reads only its own bytes) and turns an exposure window
``[t0, t1)`` into voxel counts ``[K, Hs, Ws]`` with the Numba voxelizer: binned exactly on the tick axis
for ``.dat`` and binary arrays, with the float formula for event lists (DESIGN section 3). It is the single place where
the five raw formats and the two layouts (one continuous stream, or one file per blur frame) meet.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from schemas.spike_meta import SpikeMeta
from schemas.store import SequenceInfo
from spikeprep.errors import InputError
from spikeprep.formats.arrays import binary_array_num_frames, read_binary_array
from spikeprep.formats.dat import open_dat
from spikeprep.formats.events import Events, read_events
from spikeprep.formats.meta import read_spike_meta
from spikeprep.voxelizer import voxelize_binary_ticks, voxelize_events, voxelize_packed_ticks
from spikeprep.windows import tick_position, tick_span


@dataclass(frozen=True)
class WindowCounts:
    """Voxel counts of one exposure window.

    counts: uint32 [K, Hs, Ws]; n_ticks: spike frames (binary formats) or clock ticks (events,
    ``round((t1 - t0) * rate_hz)``) inside the window; event_count: spikes counted;
    covered: whether the spike data spans the whole window (for event lists: the span from the first event
    to the end of the last one's tick; None for an empty list); source: the raw file the spikes came from.
    """

    counts: np.ndarray
    n_ticks: int
    event_count: int
    covered: bool | None
    source: Path


class SpikeSource:
    """Raw spikes of one sequence (the ``spike/`` directory of the native layout, DESIGN section 4)."""

    def __init__(self, spike_dir: str | Path, meta: SpikeMeta | None = None,
                 crop: tuple[int, int, int, int] | None = None):
        """``crop`` ``(y0, x0, height, width)``: the spike pixels kept (a registered sequence keeps the part of
        the sensor the RGB camera sees, ``schemas.registration``); counts are of those pixels only."""
        self.spike_dir = Path(spike_dir)
        self.meta = meta if meta is not None else read_spike_meta(self.spike_dir)
        full = (0, 0, self.meta.height, self.meta.width)
        self.crop = None if crop is None or tuple(crop) == full else tuple(int(v) for v in crop)
        if self.crop is not None:
            y0, x0, h, w = self.crop
            if y0 < 0 or x0 < 0 or h < 1 or w < 1 or y0 + h > self.meta.height or x0 + w > self.meta.width:
                raise ValueError(f"crop {crop} lies outside the {self.meta.height}x{self.meta.width} spike grid")
        if self.meta.layout == "stream":
            self.stream_path = self.spike_dir / self.meta.stream_file
            if not self.stream_path.is_file():
                raise InputError(self.stream_path, "spike stream file named in meta.json not found",
                                 fix="put the stream file there or correct 'stream_file' in meta.json")

    @property
    def grid(self) -> tuple[int, int]:
        """(height, width) of the counts ``window`` returns: the crop's, or the sensor's."""
        return (self.crop[2], self.crop[3]) if self.crop is not None else (self.meta.height, self.meta.width)

    def _cropped(self, wc: WindowCounts) -> WindowCounts:
        if self.crop is None:
            return wc
        y0, x0, h, w = self.crop
        counts = np.ascontiguousarray(wc.counts[:, y0:y0 + h, x0:x0 + w])
        return WindowCounts(counts, wc.n_ticks, int(counts.sum(dtype=np.int64)), wc.covered, wc.source)

    # ---- file access (lazy, cached per process: workers open their own) ---------------------------
    def frame_file(self, frame_idx: int) -> Path:
        """The per-frame spike file of blur frame ``frame_idx`` (``NNNNNN`` + the format's suffix)."""
        return self.spike_dir / f"{frame_idx:06d}{self.meta.suffix}"

    @cached_property
    def _stream(self):
        return self._open(self.stream_path)

    def _open(self, path: Path):
        m = self.meta
        if m.format == "dat":
            return open_dat(path, m.height, m.stored_width)
        if m.is_events:
            events = read_events(path, m.height, m.width)
            if max(m.height, m.width) <= np.iinfo(np.uint16).max:
                # half the bytes per event: the events voxelizer is memory-bound (benchmarks/RESULTS.md)
                events = Events(events.t, events.y.astype(np.uint16), events.x.astype(np.uint16), events.p)
            return events
        if m.format == "npz-binary":
            return read_binary_array(path, m.height, m.width, axes=m.axis_order)  # npz cannot be memory-mapped
        return None  # npy-binary: memory-mapped per window by read_binary_array

    def _event_coverage(self, events: Events, t0: float, t1: float) -> tuple[bool | None, float, float]:
        """(whether ``[t0, t1)`` lies inside the recorded span of an event list, the span's start and end).

        An event list carries no length of its own; its span is taken from its first event's tick to the end
        of its last event's tick (a spike camera fires somewhere on the sensor at nearly every tick), with one
        tick of slack at the start. None (cannot tell) for a list without events: the span is then the window.
        """
        if len(events) == 0:
            return None, t0, t1
        tick = 1.0 / self.meta.rate_hz
        first, end = float(events.t[0]), float(events.t[-1]) + tick
        return bool(t0 >= first - tick and t1 <= end), first, end

    def _data_of(self, frame_idx: int | None):
        """(path, opened data, time of its frame 0 or None for events) of the stream or of blur frame
        ``frame_idx``'s file."""
        m = self.meta
        if m.layout == "stream":
            return self.stream_path, self._stream, m.start_s
        else:
            if frame_idx is None:
                raise ValueError("per-frame layout: pass the blur frame index")
            path = self.frame_file(frame_idx)
            if not path.is_file():
                raise InputError(path, f"no spike file for blur frame {frame_idx}",
                                 fix="per-frame layouts need one spike file per blur frame")
            data = self._open(path)
            start_s = None
            if not m.is_events:
                start_s = (m.file_start_s or {}).get(path.stem)
                if start_s is None:
                    raise InputError(self.spike_dir / "meta.json", f"file_start_s has no entry {path.stem!r}",
                                     fix="give the time of frame 0 of every per-frame spike file")
            return path, data, start_s

    def _n_frames(self, path: Path, data) -> int:
        m = self.meta
        return binary_array_num_frames(path, m.height, m.width, m.axis_order) if data is None else len(data)

    def tick_extent(self, frame_idx: int | None = None) -> tuple[float, int] | None:
        """``(time of spike frame 0, number of spike frames)`` of the stream (or of blur frame ``frame_idx``'s
        file in the per-frame layout); None for event lists, which have no frame axis."""
        if self.meta.is_events:
            return None
        path, data, start_s = self._data_of(frame_idx)
        return start_s, self._n_frames(path, data)

    # ---- voxelization -------------------------------------------------------------------------------
    def window(self, t0: float, t1: float, num_bins: int, frame_idx: int | None = None) -> WindowCounts:
        """Counts of the spikes with ``t0 <= t < t1`` in ``num_bins`` equal time bins.

        ``frame_idx`` selects the file in the per-frame layout (required there, ignored for a stream).
        """
        return self._cropped(self._window(t0, t1, num_bins, frame_idx))

    def _window(self, t0: float, t1: float, num_bins: int, frame_idx: int | None = None) -> WindowCounts:
        m = self.meta
        path, data, start_s = self._data_of(frame_idx)
        if m.is_events:
            events: Events = data.select(t0, t1)
            counts = voxelize_events(events.t, events.y, events.x, t0, t1, m.height, m.width, num_bins)
            covered, span0, span1 = self._event_coverage(data, t0, t1)
            # like the frame-based path's ``hi - lo``: ticks of the window inside the data (a window ending at
            # t1 = 1e300 s would hold more ticks than the manifest's int64 column)
            n_ticks = max(0, int(round((min(t1, span1) - max(t0, span0)) * m.rate_hz)))
            return WindowCounts(counts, n_ticks, len(events), covered, path)

        # Frame-based: membership and bins on the tick axis, exactly (DESIGN section 3).
        n_frames = self._n_frames(path, data)
        u0, u1 = tick_position(t0, start_s, m.rate_hz), tick_position(t1, start_s, m.rate_hz)
        lo, hi = tick_span(u0, u1, n_frames)
        covered = bool(u0 >= 0 and u1 <= n_frames)
        if m.format == "dat":
            counts = voxelize_packed_ticks(data[lo:hi], lo, u0, u1, m.height, m.stored_width, num_bins,
                                           flipud=m.flipud)
            if m.head_columns:  # drop the head columns at the end of every row (SPS10)
                counts = np.ascontiguousarray(counts[:, :, :m.width])
        else:
            frames = (read_binary_array(path, m.height, m.width, lo, hi, axes=m.axis_order) if data is None
                      else data[lo:hi])
            counts = voxelize_binary_ticks(frames, lo, u0, u1, num_bins)
        return WindowCounts(counts, hi - lo, int(counts.sum(dtype=np.int64)), covered, path)


def stored_source(seq: SequenceInfo) -> SpikeSource:
    """The raw spikes of a store's sequence, cropped to the spike pixels the store keeps (its registration):
    the counts of a window have the stored grid (Hs, Ws)."""
    return SpikeSource(Path(seq.spike_dir), seq.spike_meta, crop=seq.spike_crop)
