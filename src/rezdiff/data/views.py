"""Data views: what one training example is, made from one image of a :class:`FieldDataset`.

A data view (the ``view`` of :class:`~rezdiff.data.FieldDataModule`; the diffusion samplers are
:mod:`rezdiff.core.samplers`) is called with ``(dataset, index, generator)`` and returns one unbatched
:class:`FieldBatch` (``image [C, H, W]``, ``coords [N, 2]``, ``index [N]``, ``cell [N, 2]`` where it
selects points). ``generator=None`` draws from the global torch RNG (training: DataLoader workers are
seeded by torch); a ``torch.Generator`` makes the example deterministic (validation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset
from rezdiff.data.images import ResizeBoundary, fourier_resize
from rezdiff.moved import moved_attribute

# data views that moved to their family's folder (issue 18), read through for one release
MOVED = {"MultiScalePatches": "rezdiff.models.infd.views"}


class FieldView(ABC):
    """Turns image ``index`` of a dataset into one training example."""

    @abstractmethod
    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch: ...

    def example_resolution(self) -> tuple[int, int] | None:
        """``(H, W)`` of every example's ``image``, or ``None`` when examples vary (crops at random scales):
        what a model that trains on whole images checks against its own training size."""
        return None

    def restricted_to(self, indices: Sequence[int]) -> FieldView:
        """This view for a split that holds only ``indices`` of the data set: itself unless it draws
        images of its own (see :class:`MultiScalePatches`), so that a split never reads another's images."""
        return self


class FullGrid(FieldView):
    """The whole image at ``resolution`` (int or ``(H, W)``); no point selection (models use every pixel)."""

    def __init__(self, resolution: int | tuple[int, int]) -> None:
        self.resolution = coords.as_hw(resolution)

    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch:
        return FieldBatch(image=dataset.render(index, self.resolution))

    def example_resolution(self) -> tuple[int, int]:
        return self.resolution

    def __repr__(self) -> str:
        return f"FullGrid(resolution={self.resolution})"


class RandomPixels(FieldView):
    """The whole image at ``resolution`` plus a uniform random subset of its pixels (∞-Diff).

    ``floor(H * W * fraction)`` distinct pixels, the same count for every example so that batches stack,
    sorted by flat index. The full image is kept because ∞-Diff's mollifier needs the whole ground truth.
    ``points="sobol"`` is the quasi-Monte-Carlo ablation of the ∞-Diff paper (Table 2): the pixels hit by a
    randomly scrambled 2-D Sobol sequence (low discrepancy: on power-of-two grids and counts every
    power-of-two block of pixels gets its exact share), topped up with uniform pixels if some coincide.
    """

    def __init__(
        self,
        resolution: int | tuple[int, int],
        fraction: float = 0.25,
        points: Literal["uniform", "sobol"] = "uniform",
    ) -> None:
        if points not in ("uniform", "sobol"):
            raise ValueError(f"RandomPixels points must be 'uniform' or 'sobol', got {points!r}")
        self.points = points
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
        if self.points == "sobol":
            flat = _sobol_pixels(height, width, self.num_points, generator)
        else:
            flat = torch.randperm(height * width, generator=generator)[: self.num_points].sort().values
        return FieldBatch(
            image=image,
            coords=coords.index_to_coord(flat, self.resolution),
            index=flat,
            cell=coords.cell_size(self.resolution).expand(self.num_points, 2).contiguous(),
        )

    def example_resolution(self) -> tuple[int, int]:
        return self.resolution

    def __repr__(self) -> str:
        return f"RandomPixels(resolution={self.resolution}, fraction={self.fraction}, points={self.points!r})"


def _sobol_pixels(height: int, width: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` distinct sorted flat pixel indices hit by a scrambled Sobol sequence (seeded from
    ``generator``); duplicates are replaced by uniformly drawn unused pixels."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    points = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(count, dtype=torch.float64)
    rows = (points[:, 0] * height).long().clamp_(max=height - 1)
    cols = (points[:, 1] * width).long().clamp_(max=width - 1)
    flat = (rows * width + cols).unique()
    if flat.numel() < count:
        free = torch.ones(height * width, dtype=torch.bool)
        free[flat] = False
        spare = free.nonzero().squeeze(1)
        extra = spare[torch.randperm(spare.numel(), generator=generator)[: count - flat.numel()]]
        flat = torch.cat([flat, extra]).sort().values
    return flat


class Levels(FieldView):
    """Multilevel training data: the whole image at the finest of ``resolutions``; coarser levels on demand.

    ``resolutions`` are the square grid sizes of the levels (e.g. ``[32, 64]``), kept sorted. Each example is
    the image rendered by the dataset at the finest level, ``image [C, R, R]``, with ``level`` set to that
    level's index; a model picks its training level per step and gets it with :meth:`downsample` on the
    device (Fourier truncation, :func:`rezdiff.data.images.fourier_resize`). Keeping the level choice out
    of the data pipeline makes it a function of the training step alone, so DataLoader workers, DDP ranks
    and resumed runs never disagree about it (see :class:`rezdiff.callbacks.ResolutionSchedule`).
    ``boundary`` names the basis of the resize; ``MultilevelSDE`` resizes in its prior's basis and raises a
    ValueError at setup when this boundary is not the prior's.
    """

    def __init__(
        self, resolutions: list[int] | tuple[int, ...], boundary: ResizeBoundary = "periodic"
    ) -> None:
        levels = sorted({int(r) for r in resolutions})
        if not levels or min(levels) < 2:
            raise ValueError(f"Levels needs one or more resolutions >= 2, got {resolutions!r}")
        if len(levels) != len(list(resolutions)):
            raise ValueError(f"Levels resolutions must be distinct, got {resolutions!r}")
        if boundary not in ("periodic", "reflect"):
            raise ValueError(f"unknown boundary {boundary!r}; choose 'periodic' or 'reflect'")
        self.resolutions = tuple(levels)
        self.boundary = boundary

    @property
    def finest(self) -> int:
        return self.resolutions[-1]

    def example_resolution(self) -> tuple[int, int]:
        return (self.finest, self.finest)

    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch:
        image = dataset.render(index, self.finest)
        return FieldBatch(image=image, level=torch.tensor(len(self.resolutions) - 1))

    def downsample(self, image: torch.Tensor, resolution: int) -> torch.Tensor:
        """``image [..., R, R]`` at one of the levels, by Fourier truncation with this view's boundary."""
        if resolution not in self.resolutions:
            raise ValueError(f"{resolution} is not one of the levels {list(self.resolutions)}")
        return fourier_resize(image, resolution, self.boundary)

    def __repr__(self) -> str:
        return f"Levels(resolutions={list(self.resolutions)}, boundary={self.boundary!r})"


def __getattr__(name: str) -> Any:
    """``MultiScalePatches``, INFD's view, now in :mod:`rezdiff.models.infd.views` (one FutureWarning)."""
    return moved_attribute(__name__, name, MOVED)
