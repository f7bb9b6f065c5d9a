"""The one coordinate convention of rezdiff.

A point is ``(x, y)``: ``x`` the column, ``y`` the row, both in ``[-1, 1]`` over the image domain.
Pixel ``(i, j)`` of an ``H x W`` grid has its centre at ``((2j + 1)/W - 1, (2i + 1)/H - 1)`` and a cell
of size ``(2/W, 2/H)``: exactly what ``F.grid_sample(..., align_corners=False)`` assumes. Nothing else
in the project builds coordinates by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rezdiff.core.shapes import Resolution, as_hw  # noqa: F401  (the one definition; re-exported)


def pixel_centers(
    resolution: Resolution, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Centres of every pixel as an ``[H, W, 2]`` tensor of ``(x, y)``."""
    height, width = as_hw(resolution)
    ys = (2 * torch.arange(height, device=device, dtype=torch.float64) + 1) / height - 1
    xs = (2 * torch.arange(width, device=device, dtype=torch.float64) + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).to(dtype)


def cell_size(
    resolution: Resolution, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Size ``(2/W, 2/H)`` of one pixel cell, as a tensor of shape ``[2]``."""
    height, width = as_hw(resolution)
    return torch.tensor((2.0 / width, 2.0 / height), device=device, dtype=dtype)


def index_to_coord(index: Tensor, resolution: Resolution, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Flat row-major pixel indices ``[...]`` -> their centres ``[..., 2]``."""
    height, width = as_hw(resolution)
    rows = torch.div(index, width, rounding_mode="floor")
    cols = index - rows * width
    x = (2 * cols.to(torch.float64) + 1) / width - 1
    y = (2 * rows.to(torch.float64) + 1) / height - 1
    return torch.stack((x, y), dim=-1).to(dtype)


def coord_to_index(coords: Tensor, resolution: Resolution) -> Tensor:
    """Points ``[..., 2]`` -> flat index of the pixel whose cell contains them (clamped to the grid)."""
    height, width = as_hw(resolution)
    cols = torch.floor((coords[..., 0].to(torch.float64) + 1) * width / 2).long().clamp_(0, width - 1)
    rows = torch.floor((coords[..., 1].to(torch.float64) + 1) * height / 2).long().clamp_(0, height - 1)
    return rows * width + cols


def gather_pixels(image: Tensor, index: Tensor) -> Tensor:
    """Values of ``image [B, C, H, W]`` at flat indices ``index [B, N]`` -> ``[B, N, C]``."""
    flat = image.flatten(2)  # [B, C, H*W]
    values = torch.gather(flat, 2, index.unsqueeze(1).expand(-1, flat.shape[1], -1))
    return values.transpose(1, 2)


def scatter_pixels(values: Tensor, index: Tensor, resolution: Resolution, fill: float = 0.0) -> Tensor:
    """Inverse of :func:`gather_pixels`: ``values [B, N, C]`` written into a ``[B, C, H, W]`` canvas."""
    height, width = as_hw(resolution)
    batch, _, channels = values.shape
    canvas = values.new_full((batch, channels, height * width), fill)
    canvas.scatter_(2, index.unsqueeze(1).expand(-1, channels, -1), values.transpose(1, 2))
    return canvas.view(batch, channels, height, width)


def sample_at(
    image: Tensor, coords: Tensor, *, mode: str = "bilinear", padding_mode: str = "border"
) -> Tensor:
    """Read ``image [B, C, H, W]`` at points ``coords [B, N, 2]`` -> ``[B, N, C]`` (this convention)."""
    grid = coords.to(image.dtype).unsqueeze(1)  # [B, 1, N, 2]
    out = F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out.squeeze(2).transpose(1, 2)
