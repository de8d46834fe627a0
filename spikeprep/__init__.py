"""The data pipeline: raw spike readers, exposure windows, the Numba voxelizer, ingest, audit, the Zarr
store, normalisation stats, synthetic data, and the Dataset that reads the store (DESIGN section 1)."""
