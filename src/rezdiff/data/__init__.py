"""Data: the coordinate convention, FieldBatch, datasets, data views and the FieldDataModule.

The coordinate helpers stay in :mod:`rezdiff.data.coords`.
"""

from __future__ import annotations

import warnings
from typing import Any

from rezdiff.data.batch import FieldBatch
from rezdiff.data.datamodule import FieldDataModule, SampledDataset
from rezdiff.data.datasets import Bundled, FieldDataset, ImageFolder
from rezdiff.data.images import (
    UnreadableImageError,
    fourier_resize,
    load_image,
    make_grid,
    resize,
    save_image,
    to_uint8,
)
from rezdiff.data.photographs import Photographs
from rezdiff.data.synthetic import Synthetic
from rezdiff.data.views import FieldView, FullGrid, Levels, RandomPixels
from rezdiff.moved import moved_attribute

__all__ = [
    "Bundled",
    "FieldBatch",
    "FieldDataModule",
    "FieldDataset",
    "FieldView",
    "FullGrid",
    "ImageFolder",
    "Levels",
    "Photographs",
    "RandomPixels",
    "SampledDataset",
    "Synthetic",
    "UnreadableImageError",
    "fourier_resize",
    "load_image",
    "make_grid",
    "resize",
    "save_image",
    "to_uint8",
]


def __getattr__(name: str) -> Any:
    """``FieldSampler``, the old name of :class:`FieldView`, with a DeprecationWarning, and
    ``MultiScalePatches``, now ``rezdiff.models.infd.MultiScalePatches``, with a FutureWarning (for one
    release)."""
    if name == "FieldSampler":
        warnings.warn(
            "rezdiff.data.FieldSampler is renamed rezdiff.data.FieldView; the old name will be removed in "
            "the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return FieldView
    return moved_attribute(__name__, name, {"MultiScalePatches": "rezdiff.models.infd.views"})
