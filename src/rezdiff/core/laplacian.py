"""Binomial Gaussian and Laplacian pyramids, shared by the SWD metric and the Lap1 perceptual loss.

Every level is the 5-tap binomial filter ``[1, 4, 6, 4, 1] / 16`` applied separably (the 5x5 Gaussian of
``cv2.pyrDown``), mirror borders, then every second row and column (odd sizes round up). A Laplacian band
is ``G_i - up(G_{i+1})`` with ``up`` either ``"pyrup"`` (insert zeros, blur with 4x the filter: cv2's
``pyrUp``, what SWD's reference code uses) or ``"bilinear"`` (the Lap1 loss). Either way the pyramid is
linear and collapses back to the image exactly.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Upsample = Literal["pyrup", "bilinear"]
BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def binomial_blur(images: Tensor) -> Tensor:
    """The separable binomial filter per channel of ``[B, C, H, W]`` images, mirror borders (scipy's
    ``'mirror'`` = torch's ``'reflect'``; sides under 3 pixels, which cannot mirror 2 pixels, replicate)."""
    channels = images.shape[1]
    kernel = torch.tensor(BINOMIAL_5, device=images.device, dtype=images.dtype) / 16.0
    mode = "reflect" if min(images.shape[-2:]) > 2 else "replicate"
    x = F.pad(images, (2, 2, 2, 2), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)


def pyr_down(images: Tensor) -> Tensor:
    """Blur, then keep every second row and column (size ``ceil(H/2) x ceil(W/2)``)."""
    return binomial_blur(images)[..., ::2, ::2]


def pyr_up(images: Tensor, size: tuple[int, int], upsample: Upsample = "pyrup") -> Tensor:
    """``images`` brought to ``size`` (twice their size, rounded as :func:`pyr_down` rounds)."""
    b, c, h, w = images.shape
    if ((size[0] + 1) // 2, (size[1] + 1) // 2) != (h, w):
        raise ValueError(f"cannot upsample {h}x{w} to {size[0]}x{size[1]}")
    if upsample == "bilinear":
        return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
    if upsample != "pyrup":
        raise ValueError(f"upsample must be 'pyrup' or 'bilinear', got {upsample!r}")
    up = images.new_zeros(b, c, *size)
    up[..., ::2, ::2] = images
    return 4.0 * binomial_blur(up)


def gaussian_pyramid(images: Tensor, num_levels: int) -> list[Tensor]:
    """``num_levels`` levels of ``[B, C, H, W]`` images, finest (the input) first; each halves H and W.
    Every level that is filtered must be at least 3x3."""
    if images.ndim != 4:
        raise ValueError(f"images must be a [B, C, H, W] tensor, got shape {tuple(images.shape)}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    levels = [images]
    for _ in range(num_levels - 1):
        h, w = levels[-1].shape[-2:]
        if min(h, w) < 3:
            raise ValueError(
                f"cannot filter a {h}x{w} image: every filtered pyramid level needs at least 3x3"
            )
        levels.append(pyr_down(levels[-1]))
    return levels


def laplacian_pyramid(images: Tensor, num_levels: int, upsample: Upsample = "pyrup") -> list[Tensor]:
    """Bands ``G_i - up(G_{i+1})``, finest first, then the coarsest Gaussian level ``G_{n-1}``."""
    gauss = gaussian_pyramid(images, num_levels)
    pairs = zip(gauss[:-1], gauss[1:], strict=True)
    bands = [fine - pyr_up(coarse, fine.shape[-2:], upsample) for fine, coarse in pairs]
    return [*bands, gauss[-1]]


def collapse_laplacian_pyramid(pyramid: list[Tensor], upsample: Upsample = "pyrup") -> Tensor:
    """The image of :func:`laplacian_pyramid`'s output: upsample the coarsest level and add each band."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = band + pyr_up(image, band.shape[-2:], upsample)
    return image
