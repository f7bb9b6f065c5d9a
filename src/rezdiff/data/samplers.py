"""Deprecated alias of :mod:`rezdiff.data.views` (the data views were called samplers, a name the diffusion
samplers of :mod:`rezdiff.core.samplers` also use); importing it warns, and it goes in the next release."""

from __future__ import annotations

import warnings

from rezdiff.data.views import FieldView, FullGrid, Levels, RandomPixels
from rezdiff.models.infd.views import MultiScalePatches

FieldSampler = FieldView

warnings.warn(
    "rezdiff.data.samplers is renamed rezdiff.data.views (and its base class FieldSampler is FieldView); "
    "the old module will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["FieldSampler", "FieldView", "FullGrid", "Levels", "MultiScalePatches", "RandomPixels"]
