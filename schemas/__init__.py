"""Contracts shared by the data pipeline and the trainer: config, manifest, spike meta, store attributes.

This package imports nothing from spikeprep, model or cli at module level (imports point one way).
"""
