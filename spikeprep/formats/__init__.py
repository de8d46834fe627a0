"""Raw spike readers and writers: ``.dat`` (packed bits), binary arrays, event lists, ``meta.json``."""
from spikeprep.formats.arrays import binary_array_num_frames, read_binary_array, write_binary_array
from spikeprep.formats.dat import (dat_num_frames, open_dat, pack_frames, read_dat, read_dat_packed,
                                   unpack_frames, write_dat)
from spikeprep.formats.events import Events, read_events, validate_events, write_events
from spikeprep.formats.meta import read_spike_meta, write_spike_meta

__all__ = [
    "Events", "binary_array_num_frames", "dat_num_frames", "open_dat", "pack_frames", "read_binary_array",
    "read_dat", "read_dat_packed", "read_events", "read_spike_meta", "unpack_frames", "validate_events",
    "write_binary_array", "write_dat", "write_events", "write_spike_meta",
]
