"""Samplers: what one training example is, made from one image of a :class:`FieldDataset`.

A sampler is called with ``(dataset, index, generator)`` and returns one unbatched :class:`FieldBatch`
(``image [C, H, W]``, ``coords [N, 2]``, ``index [N]``, ``cell [N, 2]`` where it selects points).
``generator=None`` draws from the global torch RNG (training: DataLoader workers are seeded by torch);
a ``torch.Generator`` makes the example deterministic (validation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset


class FieldSampler(ABC):
    """Turns image ``index`` of a dataset into one training example."""

    @abstractmethod
    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch: ...


class FullGrid(FieldSampler):
    """The whole image at ``resolution`` (int or ``(H, W)``); no point selection (models use every pixel)."""

    def __init__(self, resolution: int | tuple[int, int]) -> None:
        self.resolution = coords.as_hw(resolution)

    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch:
        return FieldBatch(image=dataset.render(index, self.resolution))

    def __repr__(self) -> str:
        return f"FullGrid(resolution={self.resolution})"


class RandomPixels(FieldSampler):
    """The whole image at ``resolution`` plus a uniform random subset of its pixels (∞-Diff).

    ``floor(H * W * fraction)`` distinct pixels, the same count for every example so that batches stack,
    sorted by flat index. The full image is kept because ∞-Diff's mollifier needs the whole ground truth.
    """

    def __init__(self, resolution: int | tuple[int, int], fraction: float = 0.25) -> None:
        self.resolution = coords.as_hw(resolution)
        if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
            raise ValueError(f"RandomPixels fraction must be in (0, 1], got {fraction!r}")
        height, width = self.resolution
        self.num_points = math.floor(height * width * fraction)
        if self.num_points < 1:
            raise ValueError(
                f"RandomPixels fraction={fraction} selects no pixel of a {height}x{width} grid; "
                f"use at least {1 / (height * width):.3g}"
            )
        self.fraction = float(fraction)

    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch:
        image = dataset.render(index, self.resolution)
        height, width = self.resolution
        chosen = torch.randperm(height * width, generator=generator)[: self.num_points]
        flat = chosen.sort().values
        return FieldBatch(
            image=image,
            coords=coords.index_to_coord(flat, self.resolution),
            index=flat,
            cell=coords.cell_size(self.resolution).expand(self.num_points, 2).contiguous(),
        )

    def __repr__(self) -> str:
        return f"RandomPixels(resolution={self.resolution}, fraction={self.fraction})"


# MultiScalePatches (INFD: random crops at random scales plus a fixed-size encoder input) and Levels
# (multilevel training at a schedule of resolutions) arrive later in this module; they follow the same
# contract: __call__(dataset, index, generator) -> one FieldBatch of a fixed shape.
