"""Where the RGB camera's pixels lie on the spike camera's: one sequence's registration (DESIGN section 3).

Two records:

``Registration``: what ingest resampled a sequence's RGB frames with, kept in the sequence's ``dataset.json``
entry (``SequenceInfo.registration``) and its ``ingest.json`` record, the homography also in every manifest
row (``rgb_homography``). ``homography`` (3x3, row-major, 9 numbers) maps a spike pixel ``(x, y)`` to the raw
RGB frame's pixel coordinates (pixel centres at integer coordinates, in both images); ``source`` says where it
came from: ``meta`` (``rgb_homography`` of the spike ``meta.json``), ``assumed_scale`` (no registration given
and the RGB frames are not the spike grid times an integer: the same field of view at another resolution was
assumed) or ``audit_fix`` (refined by ``spikeprep audit --fix``). The store keeps the spike grid times the
integer ``scale``, cropped to ``spike_crop`` (``y0, x0, height, width`` in spike pixels): the largest
rectangle of spike pixels that the RGB frame covers, so both cameras see every stored pixel. Spike counts are
stored cropped, never resampled.

``RegistrationFix`` (``DATA_ROOT/audit/registration/<split>/<seq>.json``): what ``audit --fix`` measured and
decided for one sequence, like ``schemas.clock_fix``. ``fixed``: the measured residual was removed, ingest
resamples with ``homography`` (every later rerun too); ``aligned``: the residual is below the fix's threshold and
nothing changed; ``unfixed``: the estimate could not be trusted (``reason_code`` and ``reason``) and the
sequence keeps the registration it had. ``homography`` is what ingest applies (for ``aligned`` and ``unfixed``
records: an earlier fix kept, or None: the meta.json's or the assumed registration, as before). ``given_homography`` is the meta.json homography (None: none given)
the fix was estimated on top of; an edited meta.json drops the fix.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from schemas.json_record import read_json_record, write_json_record
from schemas.record import Record

REGISTRATION_VERSION = 1
REGISTRATION_FIX_VERSION = 1
REGISTRATION_DIRNAME = "registration"      # under DATA_ROOT/audit/
FIXED, UNFIXED, ALIGNED = "fixed", "unfixed", "aligned"
RegistrationSource = Literal["meta", "assumed_scale", "audit_fix"]
# Why a sequence's registration was left as it was (``RegistrationFix.reason_code``)
UnfixedCode = Literal["no_frames", "too_few_frames", "flat_scene", "frames_disagree"]


def homography_problem(values) -> str | None:
    """Why ``values`` is not a usable spike -> RGB homography (9 finite numbers, invertible, orientation kept,
    no vanishing line inside a plausible frame), or None."""
    try:
        h = np.asarray(values, np.float64).reshape(3, 3)
    except (ValueError, TypeError):
        return "must be 9 numbers (a 3x3 matrix, row-major, or 3 rows of 3)"
    if not np.isfinite(h).all():
        return "must hold finite numbers"
    if abs(h[2, 2]) < 1e-12:
        return "has h[2][2] = 0 (normalise it to 1)"
    h = h / h[2, 2]
    det = float(np.linalg.det(h[:2, :2]))
    if not det > 0:
        return "must keep the image's orientation (its 2x2 linear part has a determinant <= 0: a mirror or singular)"
    if float(np.abs(h[2, :2]).max()) > 1e-2:
        return "has a perspective part above 1e-2 per pixel: not a beam-splitter rig's registration"
    return None


def as_matrix(values) -> np.ndarray:
    """A record's 9 numbers as a float64 3x3 matrix normalised to ``h[2, 2] = 1``."""
    h = np.asarray(values, np.float64).reshape(3, 3)
    return h / h[2, 2]


def flat(h: np.ndarray) -> tuple[float, ...]:
    """A 3x3 matrix as the 9 numbers a record keeps (normalised to ``h[2, 2] = 1``)."""
    h = np.asarray(h, np.float64)
    return tuple(float(v) for v in (h / h[2, 2]).ravel())


class Registration(Record):
    """The registration ingest resampled one sequence with (module docstring)."""

    version: Literal[1] = REGISTRATION_VERSION
    homography: tuple[float, float, float, float, float, float, float, float, float]
    source: RegistrationSource
    raw_size: tuple[int, int]                  # the raw RGB frames' (height, width)
    scale: int = Field(ge=1)                   # the store's RGB grid: the (cropped) spike grid times this
    spike_crop: tuple[int, int, int, int]      # (y0, x0, height, width) of the spike grid kept

    @field_validator("homography")
    @classmethod
    def _usable(cls, value):
        problem = homography_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _crop_positive(self) -> "Registration":
        y0, x0, h, w = self.spike_crop
        if y0 < 0 or x0 < 0 or h < 1 or w < 1:
            raise ValueError(f"spike_crop {self.spike_crop} must have y0, x0 >= 0 and a positive size")
        if min(self.raw_size) < 1:
            raise ValueError(f"raw_size {self.raw_size} must be positive")
        return self

    @property
    def matrix(self) -> np.ndarray:
        return as_matrix(self.homography)


class RegistrationFix(Record):
    """One sequence's registration as ``audit --fix`` measured it. ``residual_px``: the measured residual
    misregistration (the largest displacement of the four frame corners, store RGB pixels) of the sequence's
    robust transform, before the fix; ``spread_px``: the median over frames of how far each frame's own
    estimate lies from it at the corners; ``frames_used`` of ``frames_total`` frames gave a usable estimate."""

    version: Literal[1] = REGISTRATION_FIX_VERSION
    split: str
    seq: str
    verdict: Literal["fixed", "unfixed", "aligned"]
    reason_code: UnfixedCode | None
    reason: str | None
    homography: tuple[float, float, float, float, float, float, float, float, float] | None
    given_homography: tuple[float, float, float, float, float, float, float, float, float] | None
    raw_size: tuple[int, int]
    residual_px: float | None
    spread_px: float | None
    frames_total: int = Field(ge=0)
    frames_used: list[int]

    @field_validator("residual_px", "spread_px")
    @classmethod
    def _finite(cls, value):
        if value is not None and not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "RegistrationFix":
        if (self.verdict == UNFIXED) != (self.reason is not None) or (self.reason is None) != (self.reason_code is None):
            raise ValueError(f"a {self.verdict} registration fix " + (
                "needs the reason (and its code) it was left unfixed" if self.verdict == UNFIXED else "has no reason"))
        if self.verdict == FIXED and self.homography is None:
            raise ValueError("a fixed registration fix needs its homography")
        if self.homography is not None:
            problem = homography_problem(self.homography)
            if problem:
                raise ValueError(f"homography {problem}")
        return self


def registration_fix_path(root: str | os.PathLike, split: str, seq: str) -> Path:
    """Where the registration fix of ``split/seq`` lives in the store at ``root``."""
    return Path(root) / "audit" / REGISTRATION_DIRNAME / split / f"{seq}.json"


def write_registration_fix(path: str | os.PathLike, record: RegistrationFix) -> Path:
    """Write atomically; the folder is created."""
    return write_json_record(path, record)


def read_registration_fix(path: str | os.PathLike) -> RegistrationFix:
    """Read and validate; ``ValueError`` naming the file on a missing, unreadable, invalid or foreign record."""
    return read_json_record(path, RegistrationFix, kind="registration fix", versions=(REGISTRATION_FIX_VERSION,),
                            rerun="re-run `spikeprep audit DATA_ROOT --fix`: it writes it again")
