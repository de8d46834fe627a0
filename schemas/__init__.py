"""Contracts shared by the data pipeline and the trainer: config, manifest, spike meta, store attributes,
run reports; plus the helpers every layer shares (atomic file writes, validation-error messages).

This package imports nothing from spikeprep, model or cli at module level (imports point one way).
"""
