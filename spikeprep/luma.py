"""Rec.601 luma: the one definition of the grey level that spikes integrate (DESIGN sections 4 and 6).

``spikeprep synth`` fires spikes on this luma, and the alignment audit correlates spike intensity with
the blur frame's luma; both take the coefficients from here.
"""
from __future__ import annotations

LUMA_601 = (0.299, 0.587, 0.114)  # weights of R, G, B
