"""Data views: what one training example is, made from one image of a :class:`FieldDataset`.

A data view (the ``view`` of :class:`~rezdiff.data.FieldDataModule`; the diffusion samplers are
:mod:`rezdiff.core.samplers`) is called with ``(dataset, index, generator)`` and returns one unbatched
:class:`FieldBatch` (``image [C, H, W]``, ``coords [N, 2]``, ``index [N]``, ``cell [N, 2]`` where it
selects points). ``generator=None`` draws from the global torch RNG (training: DataLoader workers are
seeded by torch); a ``torch.Generator`` makes the example deterministic (validation).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset
from rezdiff.data.images import ResizeBoundary, fourier_resize


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


class MultiScalePatches(FieldView):
    """INFD's training example: a fixed-size encoder input and a ``patch x patch`` crop at a random scale.

    For image ``index`` with native size ``S = min(H, W)``:

    - ``cond [C, E, E]``: the image rendered at ``encoder_resolution`` ``E``;
    - a scale ``r``: with probability ``p_max`` the largest, ``r_max = min(S, max_scale)``, otherwise an
      integer uniform in ``[max(min_scale, patch), r_max]``; images with ``S < patch`` (too small for one
      crop) are rendered at ``r = patch``, i.e. the whole image, upsampled, is the patch;
    - ``image [C, P, P]``: a uniformly placed crop of the image rendered at ``r x r``;
    - ``coords [P*P, 2]`` (row-major over the crop) and ``cell [P*P, 2] = 2/r``: the crop's pixel centres in
      the frame of the *whole* ``r x r`` image (:mod:`rezdiff.data.coords`), as the renderer queries them.

    Rendering goes through ``dataset.render`` (so a dataset's ``crop`` option handles non-square images,
    and ``resize_method: lanczos`` on the dataset gives the paper's Lanczos resampling; ``Synthetic``
    renders exactly).

    Balanced mixed-resolution training (INFD §5.3): with ``high_res_min_size`` set, a training draw
    (``generator=None``) is replaced, with probability ``high_res_prob``, by a uniformly drawn image whose
    native ``min(H, W) >= high_res_min_size``; the subset is found once per process from
    ``dataset.native_size`` among the images of the split served: ``FieldDataModule`` hands each split
    :meth:`restricted_to` its indices, so a training draw never lands on a validation image. Validation
    draws (with a generator) are never replaced.
    """

    def __init__(
        self,
        patch: int = 256,
        min_scale: int = 256,
        max_scale: int = 1024,
        encoder_resolution: int = 256,
        p_max: float = 0.0,
        high_res_min_size: int | None = None,
        high_res_prob: float = 0.5,
    ) -> None:
        if patch < 1 or encoder_resolution < 1:
            raise ValueError(f"patch and encoder_resolution must be >= 1, got {patch}, {encoder_resolution}")
        if not patch <= max_scale or min_scale > max_scale:
            raise ValueError(
                f"need patch <= max_scale and min_scale <= max_scale, got patch={patch}, "
                f"min_scale={min_scale}, max_scale={max_scale}"
            )
        for name, value in (("p_max", p_max), ("high_res_prob", high_res_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.patch = patch
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.encoder_resolution = encoder_resolution
        self.p_max = float(p_max)
        self.high_res_min_size = high_res_min_size
        self.high_res_prob = float(high_res_prob)
        self._candidates: list[int] | None = None  # the split it serves (None: the whole data set)
        self._pool: tuple[int, list[int]] | None = None

    def scale_range(self, native: int) -> tuple[int, int]:
        """``(lowest, highest)`` scale drawn for an image whose native ``min(H, W)`` is ``native``."""
        highest = max(self.patch, min(native, self.max_scale))
        return min(max(self.min_scale, self.patch), highest), highest

    def restricted_to(self, indices: Sequence[int]) -> MultiScalePatches:
        """A copy whose balanced draws come from ``indices`` only (the training split)."""
        if self.high_res_min_size is None:
            return self
        view = copy.copy(self)
        view._candidates, view._pool = sorted(int(i) for i in indices), None
        return view

    def high_res_pool(self, dataset: FieldDataset) -> list[int]:
        """Indices (within the split served, see :meth:`restricted_to`) of the images with native
        ``min(H, W) >= high_res_min_size``, cached per data set."""
        if self._pool is None or self._pool[0] != id(dataset):
            threshold = self.high_res_min_size or 0
            candidates = range(len(dataset)) if self._candidates is None else self._candidates
            pool = [i for i in candidates if min(dataset.native_size(i)) >= threshold]
            self._pool = (id(dataset), pool)
        return self._pool[1]

    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch:
        def uniform() -> float:
            return float(torch.rand((), generator=generator))

        def integer(low: int, high: int) -> int:  # inclusive
            return int(torch.randint(low, high + 1, (), generator=generator))

        if generator is None and self.high_res_min_size is not None and uniform() < self.high_res_prob:
            pool = self.high_res_pool(dataset)
            if pool:
                index = pool[integer(0, len(pool) - 1)]
        lowest, highest = self.scale_range(min(dataset.native_size(index)))
        scale = highest if uniform() < self.p_max else integer(lowest, highest)
        full = dataset.render(index, scale)
        top, left = integer(0, scale - self.patch), integer(0, scale - self.patch)
        crop = full[:, top : top + self.patch, left : left + self.patch].contiguous()
        offsets = torch.arange(self.patch)
        flat = ((top + offsets).view(-1, 1) * scale + (left + offsets)).flatten()
        return FieldBatch(
            image=crop,
            coords=coords.index_to_coord(flat, scale),
            cell=coords.cell_size(scale).expand(flat.numel(), 2).contiguous(),
            cond=dataset.render(index, self.encoder_resolution),
        )

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_pool": None}  # dataset ids differ in DataLoader workers

    def __repr__(self) -> str:
        return (
            f"MultiScalePatches(patch={self.patch}, min_scale={self.min_scale}, max_scale={self.max_scale}, "
            f"encoder_resolution={self.encoder_resolution}, p_max={self.p_max}, "
            f"high_res_min_size={self.high_res_min_size}, high_res_prob={self.high_res_prob})"
        )
