"""Data: the coordinate convention, FieldBatch, datasets, samplers and the FieldDataModule.

The coordinate helpers stay in :mod:`rezdiff.data.coords`.
"""

from __future__ import annotations

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
from rezdiff.data.samplers import FieldSampler, FullGrid, Levels, MultiScalePatches, RandomPixels
from rezdiff.data.synthetic import Synthetic

__all__ = [
    "Bundled",
    "FieldBatch",
    "FieldDataModule",
    "FieldDataset",
    "FieldSampler",
    "FullGrid",
    "ImageFolder",
    "Levels",
    "MultiScalePatches",
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
