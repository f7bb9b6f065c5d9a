"""INFD's two data views: stage 1's :class:`MultiScalePatches` (an encoder input and a crop at a random
scale) and stage 2's :class:`CachedLatents` (the cached stage-1 latent of an image).

They follow the data-view contract of :mod:`rezdiff.data.views` (``(dataset, index, generator)`` -> one
unbatched :class:`~rezdiff.data.batch.FieldBatch`) and live here because only INFD trains on them; configs
name them ``rezdiff.models.infd.MultiScalePatches`` and ``rezdiff.models.infd.CachedLatents`` (the old
``rezdiff.data.MultiScalePatches`` reads through for one release).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset
from rezdiff.data.views import FieldView

__all__ = ["CachedLatents", "MultiScalePatches"]


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


class CachedLatents(FieldView):
    """The data view of INFD stage 2: the cached stage-1 latent of image ``index`` as ``FieldBatch(image=z)``.

    It holds no latents until :class:`INFD` fills it at the start of fit/validate/test (see the module
    docstring); it takes no arguments, so a config names it as ``view: rezdiff.models.infd.CachedLatents``.
    """

    def __init__(self) -> None:
        self.latents: Tensor | None = None
        self.key: str | None = None

    def fill(self, latents: Tensor, key: str) -> None:
        self.latents, self.key = latents.detach().cpu().contiguous(), key

    def __call__(
        self, dataset: FieldDataset, index: int, generator: torch.Generator | None = None
    ) -> FieldBatch:
        if self.latents is None:
            raise RuntimeError(
                "CachedLatents is empty: it is filled by rezdiff.models.INFD when fit/validate/test starts "
                "(use it only as the data view of an INFD model)"
            )
        if len(self.latents) != len(dataset):
            raise RuntimeError(
                f"the latent cache holds {len(self.latents)} images, the dataset {len(dataset)}"
            )
        return FieldBatch(image=self.latents[index])

    def __repr__(self) -> str:
        return f"CachedLatents(filled={self.latents is not None})"
