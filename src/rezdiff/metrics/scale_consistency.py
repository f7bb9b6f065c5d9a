"""Scale consistency of a renderer (INFD paper §5.7): render at ``k·R``, box-downsample, compare with ``R``.

A field rendered at two resolutions is scale consistent when the fine render, averaged over each
coarse pixel, equals the coarse render. Under rezdiff's coordinate convention (:mod:`rezdiff.data.coords`)
coarse pixel ``(i, j)`` of an ``R x R`` grid is exactly the union of the ``k x k`` fine pixels
``(k i + a, k j + b)`` of the ``kR x kR`` grid, so the downsampling used here is the *box (area) average*
over those pixels (``F.avg_pool2d`` with kernel and stride ``k``). It is the only filter for which a
renderer whose pixels are the cell averages of one underlying function is consistent exactly; any wider
filter (bicubic, Lanczos) would mix in neighbouring cells and report a difference for a perfect field.

Reported figures, all on images in ``[-1, 1]``: ``l1`` and ``mse`` (mean over pixels and channels) and
``psnr`` in dB with peak-to-peak range 2 (``10 log10(4 / mse)``), computed per image and averaged.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from rezdiff.data.coords import Resolution, as_hw

__all__ = [
    "ScaleConsistency",
    "box_downsample",
    "consistency_errors",
    "render_scale_consistency",
    "scale_consistency",
]

# PSNR of two identical renders would be infinite; MSE is floored here so that every figure is finite
# (10 log10(4 / 1e-20) ~ 206 dB reads as "identical to float precision").
_MSE_FLOOR = 1e-20


def box_downsample(image: Tensor, factor: int) -> Tensor:
    """Average ``image [B, C, kH, kW]`` over ``factor x factor`` pixel blocks -> ``[B, C, H, W]``."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    height, width = image.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"a {height}x{width} image cannot be box-downsampled by {factor}")
    return image if factor == 1 else F.avg_pool2d(image, kernel_size=factor, stride=factor)


def consistency_errors(high: Tensor, low: Tensor) -> dict[str, Tensor]:
    """Per-image ``l1``, ``mse`` and ``psnr`` (``[B]`` tensors) between ``box_downsample(high)`` and ``low``.

    ``high [B, C, kH, kW]`` is the render at ``k`` times the resolution of ``low [B, C, H, W]``; ``k`` must
    be the same integer along both axes.
    """
    if high.ndim != 4 or low.ndim != 4 or high.shape[:2] != low.shape[:2]:
        raise ValueError(
            f"expected [B, C, H, W] renders of one batch, got {tuple(high.shape)} and {tuple(low.shape)}"
        )
    (hh, hw), (lh, lw) = high.shape[-2:], low.shape[-2:]
    factor = hh // lh
    if factor < 1 or hh != factor * lh or hw != factor * lw:
        raise ValueError(
            f"the fine render {hh}x{hw} must be an integer multiple (same along both axes) of the coarse "
            f"render {lh}x{lw}"
        )
    diff = box_downsample(high.to(torch.float64), factor) - low.to(torch.float64)
    l1 = diff.abs().flatten(1).mean(1)
    mse = diff.square().flatten(1).mean(1)
    psnr = 10 * torch.log10(4.0 / mse.clamp(min=_MSE_FLOOR))
    return {"l1": l1, "mse": mse, "psnr": psnr}


def scale_consistency(high: Tensor, low: Tensor) -> dict[str, float]:
    """Batch means of :func:`consistency_errors`: ``{"l1", "mse", "psnr"}`` as floats."""
    return {name: float(value.mean()) for name, value in consistency_errors(high, low).items()}


class Renderer(Protocol):
    """Anything with INFD's ``render(features, resolution, ...)`` (e.g. ``INFDAutoencoder``)."""

    def render(self, features: Tensor, resolution: Resolution, **options: Any) -> Tensor: ...


@torch.no_grad()
def render_scale_consistency(
    model: Renderer, features: Tensor, resolution: Resolution, factor: int = 2, **render_options: Any
) -> dict[str, float]:
    """Render ``features`` with ``model.render`` at ``resolution`` and at ``factor`` times it; compare.

    ``render_options`` (e.g. ``tile=None``) go to both ``render`` calls. Returns :func:`scale_consistency`.
    """
    height, width = as_hw(resolution)
    low = model.render(features, (height, width), **render_options)
    high = model.render(features, (factor * height, factor * width), **render_options)
    return scale_consistency(high, low)


class ScaleConsistency(Metric):
    """Accumulating form of :func:`scale_consistency` (torchmetrics; synchronised across DDP ranks).

    ``update(high, low)`` per batch; ``compute()`` returns the means over every image seen.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("l1", "mse", "psnr"):
            self.add_state(f"sum_{name}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, high: Tensor, low: Tensor) -> None:
        errors = consistency_errors(high, low)
        for name, value in errors.items():
            state = getattr(self, f"sum_{name}")
            setattr(self, f"sum_{name}", state + value.sum().to(state))
        self.count = self.count + high.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if int(self.count) == 0:
            raise ValueError("ScaleConsistency.compute() called before any update()")
        return {name: getattr(self, f"sum_{name}") / self.count for name in ("l1", "mse", "psnr")}
