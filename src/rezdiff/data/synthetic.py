"""``Synthetic``: procedural continuous images (a colour gradient plus soft-edged shapes) that render
exactly at any resolution; the built-in data of the quickstarts and tests."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rezdiff.data import coords
from rezdiff.data.datasets import FieldDataset, _check_options, stable_seed
from rezdiff.data.images import Channels

# Below this many samples per axis, render() box-filters by evaluating a finer grid and average-pooling.
# A fixed fine resolution makes avg_pool2d(render(2R), 2) == render(R) exactly for R, 2R dividing it.
_SUPERSAMPLE_RESOLUTION = 256
_EDGE_SOFTNESS = 0.01  # logistic scale of shape edges, in domain units (the domain is 2 wide)
_CORNER_RADIUS = 0.06  # rounding of square corners, >> _EDGE_SOFTNESS


class Synthetic(FieldDataset):
    """Procedural continuous images: a smooth colour gradient plus 1-3 soft-edged shapes.

    Shapes are discs, rotated squares and straight bands with random colours, positions and sizes. Image
    ``i`` is defined on ``[-1, 1]^2`` by parameters drawn from a generator seeded with ``(seed, i)``, so it
    renders identically at any resolution: ``render`` box-filters it over each pixel cell by evaluating at
    least a 256-per-axis grid and average-pooling. ``dataset[i]`` is ``render(i, resolution)``.
    """

    def __init__(
        self, num_images: int = 1024, resolution: int = 64, channels: Channels = 3, seed: int = 0
    ) -> None:
        _check_options(channels, "bicubic", "none")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        coords.as_hw(resolution)  # validates
        self.num_images = num_images
        self.resolution = resolution
        self.channels = channels
        self.seed = seed

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Tensor:
        return self.render(index, self.resolution)

    def native_size(self, index: int) -> tuple[int, int]:
        return coords.as_hw(self.resolution)

    def render(self, index: int, resolution: coords.Resolution) -> Tensor:
        index = self._check_index(index)
        height, width = coords.as_hw(resolution)
        factor_h = max(1, math.ceil(_SUPERSAMPLE_RESOLUTION / height))
        factor_w = max(1, math.ceil(_SUPERSAMPLE_RESOLUTION / width))
        points = coords.pixel_centers((height * factor_h, width * factor_w))  # sub-cell centres
        image = self._evaluate(self._parameters(index), points)
        if factor_h > 1 or factor_w > 1:
            image = F.avg_pool2d(image.unsqueeze(0), (factor_h, factor_w)).squeeze(0)
        if self.channels == 1:
            weights = torch.tensor((0.299, 0.587, 0.114)).view(3, 1, 1)
            image = (image * weights).sum(0, keepdim=True)
        return image.clamp_(-1.0, 1.0)

    def _parameters(self, index: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(stable_seed(self.seed, index))

        def uniform(low: float, high: float, *shape: int) -> Tensor:
            return low + (high - low) * torch.rand(shape or (1,), generator=generator)

        # |base| + |slope| * sqrt(2) < 1 keeps the background inside [-1, 1] on the whole square.
        background = (uniform(-0.5, 0.5, 3), uniform(-0.35, 0.35, 3), uniform(0.0, 2 * math.pi))
        count = int(torch.randint(1, 4, (1,), generator=generator))
        shapes = []
        for _ in range(count):
            kind = int(torch.randint(0, 3, (1,), generator=generator))
            shapes.append(
                {
                    "kind": ("disc", "square", "band")[kind],
                    "centre": uniform(-0.6, 0.6, 2),
                    "size": float(uniform(*((0.2, 0.5), (0.2, 0.45), (0.08, 0.2))[kind])),
                    "angle": float(uniform(0.0, math.pi)),
                    "colour": uniform(-0.9, 0.9, 3),
                }
            )
        return {"background": background, "shapes": shapes}

    @staticmethod
    def _evaluate(params: dict[str, Any], points: Tensor) -> Tensor:
        """The continuous RGB image at the grid ``points [H, W, 2]`` -> ``[3, H, W]``.

        The grid is separable (x varies along columns, y along rows), so every rotation and distance is
        built by broadcasting a column vector against a row vector: a few full-grid operations per shape.
        """
        x = points[0, :, 0].view(1, -1)  # [1, W]
        y = points[:, 0, 1].view(-1, 1)  # [H, 1]
        base, slope, direction = params["background"]
        ramp = math.cos(float(direction)) * x + math.sin(float(direction)) * y
        image = base.view(3, 1, 1) + slope.view(3, 1, 1) * ramp
        for shape in params["shapes"]:
            cos, sin = math.cos(shape["angle"]), math.sin(shape["angle"])
            dx, dy = x - float(shape["centre"][0]), y - float(shape["centre"][1])
            size = shape["size"]
            if shape["kind"] == "disc":
                distance = torch.sqrt(dx * dx + dy * dy) - size
            elif shape["kind"] == "square":
                # Signed distance to a square of half-size `size` whose corners are rounded with radius
                # _CORNER_RADIUS: the rounding keeps the edge profile smooth, so box filtering stays exact.
                inner = size - _CORNER_RADIUS
                qu = (cos * dx + sin * dy).abs_().sub_(inner)  # shape frame
                qv = (cos * dy - sin * dx).abs_().sub_(inner)
                outside = torch.sqrt(qu.clamp(min=0).square_() + qv.clamp(min=0).square_())
                distance = outside.add_(torch.maximum(qu, qv).clamp_(max=0)).sub_(_CORNER_RADIUS)
            else:  # band: a straight stripe of half-width `size` through the centre
                distance = (cos * dx + sin * dy).abs_().sub_(size)
            alpha = torch.sigmoid(distance.mul_(-1.0 / _EDGE_SOFTNESS))
            image = image.lerp_(shape["colour"].view(3, 1, 1), alpha)
        return image

    def __repr__(self) -> str:
        return (
            f"Synthetic(num_images={self.num_images}, resolution={self.resolution}, "
            f"channels={self.channels}, seed={self.seed})"
        )
