"""Between scattered points and a fixed grid: ∞-Diff's k-NN step down and bilinear step back up.

``points_to_grid`` gives each cell centre of an ``h x w`` grid the inverse-squared-distance weighted mean of
its ``k`` nearest points (PointNet++'s interpolation, as the authors with pytorch3d). Without pytorch3d and
without an ``N x M`` distance matrix: when the points are pixel centres of a known ``H x W`` grid
(``resolution``), each cell centre only searches a window of that grid around itself.

* Point ids are scattered into an ``[B, H*W]`` id grid once.
* Distances are exact integers: a pixel centre and a cell centre differ by ``DX / (w W)`` along x and
  ``DY / (h H)`` along y with integer ``DX``, ``DY``, so ``DX² sx² + DY² sy²`` orders squared distances
  exactly (ties included; ties go to the smaller flat pixel index, by a stable sort over the window in
  row-major order).
* A window of radius ``r`` pixels holds every pixel with ``|DX| ≤ 2 w r`` and ``|DY| ≤ 2 h r``; any pixel
  outside it is farther than ``min((2wr+1) sx, (2hr+1) sy)``. When the k-th candidate is strictly closer than
  that bound, the window's answer is the global one; the cells where it is not (too few points nearby)
  are searched again with ``2 r``, until the window covers the image.
* Work is chunked over cells so memory stays bounded (about 4M candidates at a time): 65536 points onto
  128² takes well under a second on a CPU.

Without ``resolution`` (points anywhere) an exact brute-force search runs over chunks of cells.
``grid_to_points`` is ``rezdiff.data.coords.sample_at``: bilinear, (x = column, y = row) in [-1, 1], the
project's one convention (the authors' code read a transposed quadrant here; the tests guard against it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rezdiff.data.coords import Resolution, as_hw, coord_to_index, index_to_coord, pixel_centers, sample_at

_CHUNK = 1 << 22  # candidate (cell, pixel) pairs processed at once


def grid_to_points(grid: Tensor, coords: Tensor) -> Tensor:
    """Bilinear read of ``grid [B, C, h, w]`` at ``coords [B, N, 2]`` -> ``[B, N, C]`` (border padding)."""
    if grid.ndim != 4 or coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != grid.shape[0]:
        raise ValueError(
            f"expected grid [B, C, h, w] and coords [B, N, 2], got {tuple(grid.shape)}, {tuple(coords.shape)}"
        )
    # float32 at least: under autocast a bf16 coordinate would be off by up to half a pixel at 256².
    dtype = torch.promote_types(grid.dtype, torch.float32)
    return sample_at(grid.to(dtype), coords.to(dtype), padding_mode="border").to(grid.dtype)


def _inverse_distance_mean(values: Tensor, ids: Tensor, dist2: Tensor) -> Tensor:
    """``Σ_j w_j values[ids_j] / Σ_j w_j`` with ``w = 1/d²``; an exact hit (d = 0) takes all the weight."""
    hit = dist2 == 0
    weights = torch.where(
        hit.any(-1, keepdim=True), hit.to(torch.float64), 1 / dist2.to(torch.float64).clamp_min(1e-300)
    )
    weights = (weights / weights.sum(-1, keepdim=True)).to(values.dtype)  # [B, M, k]
    channels = values.shape[-1]
    out = None
    for j in range(ids.shape[-1]):  # k gathers of [B, M, C]; never [B, M, k, C]
        picked = values.gather(1, ids[..., j : j + 1].expand(-1, -1, channels))
        term = picked * weights[..., j : j + 1]
        out = term if out is None else out + term
    return out


def _grid_knn(
    canvas: Tensor, resolution: tuple[int, int], size: tuple[int, int], k: int, density: float
) -> tuple[Tensor, Tensor]:
    """k nearest present pixels of every cell centre: ids ``[B, M, k]`` and integer squared-distance keys."""
    (height, width), (h, w) = resolution, size
    batch, device = canvas.shape[0], canvas.device
    g = math.gcd(w * width, h * height)
    sx, sy = h * height // g, w * width // g  # key = DX² sx² + DY² sy²  ∝  squared distance
    cell = torch.arange(h * w, device=device)
    cell_row, cell_col = cell // w, cell % w
    centre_row = torch.div((2 * cell_row + 1) * height, 2 * h, rounding_mode="floor")  # pixel containing it
    centre_col = torch.div((2 * cell_col + 1) * width, 2 * w, rounding_mode="floor")
    ids = torch.zeros(batch * h * w, k, dtype=torch.long, device=device)
    keys = torch.zeros(batch * h * w, k, dtype=torch.long, device=device)
    todo = torch.arange(batch * h * w, device=device)  # flat (example, cell) pairs still unresolved
    radius = max(1, math.ceil(math.sqrt(2 * k / (math.pi * max(density, 1e-12)))))
    while todo.numel():
        offsets = torch.arange(-radius - 1, radius + 1, device=device)
        span = offsets.numel()
        covers = radius >= max(height, width)
        done_parts = []
        for chunk in torch.split(todo, max(1, _CHUNK // span**2)):
            b, m = chunk // (h * w), chunk % (h * w)
            rows = centre_row[m, None] + offsets  # [P, S]
            cols = centre_col[m, None] + offsets
            dy = (2 * rows + 1) * h - ((2 * cell_row[m] + 1) * height)[:, None]
            dx = (2 * cols + 1) * w - ((2 * cell_col[m] + 1) * width)[:, None]
            ok_y = (rows >= 0) & (rows < height) & (dy.abs() <= 2 * h * radius)
            ok_x = (cols >= 0) & (cols < width) & (dx.abs() <= 2 * w * radius)
            flat = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
            point = canvas[b[:, None], flat.reshape(len(chunk), -1)]  # [P, S*S] point id or -1
            key = ((dy * sy) ** 2)[:, :, None] + ((dx * sx) ** 2)[:, None, :]
            present = (ok_y[:, :, None] & ok_x[:, None, :]).reshape(len(chunk), -1) & (point >= 0)
            key = torch.where(present, key.reshape(len(chunk), -1), torch.iinfo(torch.long).max)
            key, order = torch.sort(key, dim=-1, stable=True)  # ties: smaller flat index first
            key, order = key[:, :k], order[:, :k]
            bound = min(((2 * w * radius + 1) * sx) ** 2, ((2 * h * radius + 1) * sy) ** 2)
            done = (key[:, -1] < bound) | covers
            ids[chunk[done]] = point.gather(1, order)[done]
            keys[chunk[done]] = key[done]
            done_parts.append(chunk[~done])
        todo = torch.cat(done_parts)
        radius *= 2
    return ids.view(batch, h * w, k), keys.view(batch, h * w, k)


def _brute_knn(coords: Tensor, size: tuple[int, int], k: int) -> tuple[Tensor, Tensor]:
    """Exact k-NN of every cell centre among arbitrary points, in chunks of cells (float64 distances)."""
    batch, num, _ = coords.shape
    centres = pixel_centers(size, device=coords.device, dtype=torch.float64).view(-1, 2)
    points = coords.to(torch.float64)
    ids, dists = [], []
    for chunk in torch.split(centres, max(1, _CHUNK // max(num * batch, 1))):
        dist2 = ((chunk[None, :, None, :] - points[:, None, :, :]) ** 2).sum(-1)  # [B, m, N]
        dist2, order = torch.sort(dist2, dim=-1, stable=True)
        ids.append(order[..., :k])
        dists.append(dist2[..., :k])
    return torch.cat(ids, 1), torch.cat(dists, 1)


def points_to_grid(
    values: Tensor,
    coords: Tensor,
    grid_size: Resolution,
    k: int = 3,
    *,
    resolution: Resolution | None = None,
    index: Tensor | None = None,
) -> Tensor:
    """``values [B, N, C]`` at ``coords [B, N, 2]`` -> ``[B, C, h, w]`` by inverse-squared-distance k-NN.

    ``resolution`` (the pixel grid the points are centres of) enables the windowed search; ``index [B, N]``
    (their flat pixel indices) saves recomputing them from ``coords``. Without ``resolution`` any points
    are accepted and searched by brute force.
    """
    if values.ndim != 3 or coords.shape != (*values.shape[:2], 2):
        raise ValueError(
            f"expected values [B, N, C], coords [B, N, 2]; got {tuple(values.shape)}, {tuple(coords.shape)}"
        )
    batch, num, channels = values.shape
    if not 1 <= k <= num:
        raise ValueError(f"k must be between 1 and the number of points ({num}), got {k}")
    h, w = as_hw(grid_size)
    if resolution is None:
        ids, dist2 = _brute_knn(coords, (h, w), k)
    else:
        height, width = as_hw(resolution)
        if index is None:
            index = coord_to_index(coords, (height, width))
            error = (
                (index_to_coord(index, (height, width), dtype=torch.float64) - coords.double()).abs().max()
            )
            if error > 1e-3 * 2 / max(height, width):
                raise ValueError(
                    f"coords are not pixel centres of a {height}x{width} grid (off by {float(error):.3g}); "
                    "pass the right resolution or none"
                )
        canvas = torch.full((batch, height * width), -1, dtype=torch.long, device=values.device)
        point_ids = torch.arange(num, device=values.device).expand(batch, num)
        canvas.scatter_(1, index.long(), point_ids)
        if not torch.equal(canvas.gather(1, index.long()), point_ids):
            raise ValueError("two points share a pixel; points_to_grid needs distinct pixels per example")
        ids, dist2 = _grid_knn(canvas, (height, width), (h, w), k, num / (height * width))
    out = _inverse_distance_mean(values, ids, dist2)  # [B, h*w, C]
    return out.transpose(1, 2).reshape(batch, channels, h, w)
