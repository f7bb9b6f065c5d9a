"""Points -> grid (windowed k-NN) and grid -> points (bilinear) against brute force and known fields."""

from __future__ import annotations

import time

import pytest
import torch

from rezdiff.data.coords import index_to_coord, pixel_centers
from rezdiff.models.infty_diff.interpolate import grid_to_points, points_to_grid


def random_index(batch: int, pixels: int, num: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(pixels, generator=generator)[:num] for _ in range(batch)])


def field(coords: torch.Tensor) -> torch.Tensor:
    """A smooth field that is not symmetric under transposition (x = column, y = row)."""
    x, y = coords[..., 0], coords[..., 1]
    return torch.stack((torch.sin(2 * x + 0.5) + 0.3 * y, torch.cos(3 * y) * (1 + 0.5 * x)), dim=-1)


def brute_force(values, index, resolution, size, k):
    """Full distance matrix with exact integer squared distances; ties to the smaller flat pixel index."""
    (height, width), (h, w) = resolution, size
    out = torch.zeros(values.shape[0], values.shape[2], h, w, dtype=torch.float64)
    for b in range(values.shape[0]):
        for i in range(h):
            for j in range(w):
                candidates = []
                for n, p in enumerate(index[b].tolist()):
                    r, c = divmod(p, width)
                    # (pixel - cell centre) scaled by (w W) along x and (h H) along y: exact integers
                    dx, dy = (2 * c + 1) * w - (2 * j + 1) * width, (2 * r + 1) * h - (2 * i + 1) * height
                    candidates.append((dx * dx * (h * height) ** 2 + dy * dy * (w * width) ** 2, p, n))
                nearest = sorted(candidates)[:k]
                if nearest[0][0] == 0:
                    weights = [1.0 if d == 0 else 0.0 for d, _, _ in nearest]
                else:
                    weights = [1 / d for d, _, _ in nearest]
                total = sum(weights)
                for weight, (_, _, n) in zip(weights, nearest, strict=True):
                    out[b, :, i, j] += weight / total * values[b, n].double()
    return out


@pytest.mark.parametrize(
    ("resolution", "size", "num", "k"),
    [((12, 12), (6, 6), 40, 3), ((10, 14), (4, 7), 25, 3), ((9, 9), (3, 3), 81, 3), ((16, 12), (5, 4), 6, 2)],
)
def test_knn_matches_brute_force(resolution, size, num, k) -> None:
    index = random_index(2, resolution[0] * resolution[1], num, seed=num)
    values = torch.randn(2, num, 3, dtype=torch.float64)
    coords = index_to_coord(index, resolution, dtype=torch.float64)
    out = points_to_grid(values, coords, size, k, resolution=resolution)
    torch.testing.assert_close(out, brute_force(values, index, resolution, size, k))


def test_exact_hits_take_all_the_weight() -> None:
    # inner grid == pixel grid: every present pixel is a cell centre and must be copied exactly
    index = random_index(1, 64, 20, seed=1)
    values = torch.randn(1, 20, 2)
    out = points_to_grid(values, index_to_coord(index, 8), 8, resolution=8)
    rows, cols = index[0] // 8, index[0] % 8
    torch.testing.assert_close(out[0][:, rows, cols].T, values[0], rtol=0, atol=0)
    image = torch.randn(1, 2, 8, 8)
    full = torch.arange(64)[None]
    points = image.flatten(2).transpose(1, 2)
    torch.testing.assert_close(points_to_grid(points, index_to_coord(full, 8), 8, resolution=8), image)


def test_brute_force_path_for_arbitrary_points() -> None:
    generator = torch.Generator().manual_seed(4)
    coords = torch.rand(2, 30, 2, generator=generator, dtype=torch.float64) * 2 - 1  # no ties
    values = torch.randn(2, 30, 2, generator=generator, dtype=torch.float64)
    out = points_to_grid(values, coords, (4, 5), k=3)
    centres = pixel_centers((4, 5), dtype=torch.float64).view(-1, 2)
    dist2 = ((centres[None, :, None] - coords[:, None]) ** 2).sum(-1)  # [B, M, N]
    d, ids = dist2.topk(3, largest=False)
    weights = (1 / d) / (1 / d).sum(-1, keepdim=True)
    expected = (
        values.gather(1, ids.flatten(1)[..., None].expand(-1, -1, 2)).view(2, 20, 3, 2) * weights[..., None]
    ).sum(2)
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(2, 2, 4, 5))


def test_grid_to_points_at_pixel_centres_is_exact() -> None:
    grid = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    coords = pixel_centers((6, 9), dtype=torch.float64).view(1, -1, 2).expand(2, -1, -1)
    expected = grid.flatten(2).transpose(1, 2)
    torch.testing.assert_close(grid_to_points(grid, coords), expected, rtol=0, atol=1e-12)


def test_asymmetric_field_catches_row_column_mixups() -> None:
    resolution, size = (24, 40), (12, 20)
    coords = pixel_centers(resolution).view(1, -1, 2)
    values = field(coords)
    grid = points_to_grid(values, coords, size, resolution=resolution)
    expected = field(pixel_centers(size)).permute(2, 0, 1)[None]
    # k = 3 of the 4 equidistant pixels around each cell centre: a 1/6-pixel bias, at most ~0.06 here
    assert (grid - expected).abs().max() < 0.08
    assert (
        grid[:, :, :, :12] - expected.transpose(-1, -2)[:, :, :12, :12]
    ).abs().max() > 0.3  # transposed is far
    back = grid_to_points(grid, coords)
    assert (back - values).abs().mean() < 0.04  # border rows extrapolate (border padding)
    # a grid that varies only along x, read at points that vary only along y, stays constant
    ramp = torch.linspace(-1, 1, 20).expand(1, 1, 12, 20)
    column = torch.stack((torch.zeros(12), pixel_centers(size)[:, 0, 1]), dim=-1)[None]
    torch.testing.assert_close(grid_to_points(ramp, column), torch.zeros(1, 12, 1), rtol=0, atol=1e-6)


def test_round_trip_error_is_small_and_shrinks_with_density() -> None:
    resolution, size = 64, 32
    errors = []
    for density in (1 / 16, 1 / 4, 1.0):
        num = int(density * resolution**2)
        index = random_index(2, resolution**2, num, seed=9)
        coords = index_to_coord(index, resolution)
        values = field(coords)
        grid = points_to_grid(values, coords, size, resolution=resolution, index=index)
        errors.append(float((grid_to_points(grid, coords) - values).abs().mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 and errors[0] < 0.05


def test_scales_to_65536_points_onto_128_squared() -> None:
    resolution, size = 256, 128
    index = random_index(1, resolution**2, resolution**2 // 4, seed=2)
    coords = index_to_coord(index, resolution)
    values = field(coords)
    start = time.perf_counter()
    grid = points_to_grid(values, coords, size, resolution=resolution)
    sparse_seconds = time.perf_counter() - start
    full = torch.arange(resolution**2)[None]
    start = time.perf_counter()
    dense = points_to_grid(
        field(index_to_coord(full, resolution)), index_to_coord(full, resolution), size, resolution=resolution
    )
    full_seconds = time.perf_counter() - start
    expected = field(pixel_centers(size)).permute(2, 0, 1)[None]
    assert (grid - expected).abs().max() < 0.1 and (dense - expected).abs().max() < 0.02
    assert sparse_seconds < 10 and full_seconds < 10, (sparse_seconds, full_seconds)


def test_clear_errors() -> None:
    index = random_index(1, 64, 10)
    coords = index_to_coord(index, 8)
    values = torch.randn(1, 10, 2)
    with pytest.raises(ValueError, match="k must be"):
        points_to_grid(values, coords, 4, k=11, resolution=8)
    with pytest.raises(ValueError, match="pixel centres"):
        points_to_grid(values, coords + 0.05, 4, resolution=8)
    with pytest.raises(ValueError, match="share a pixel"):
        points_to_grid(values[:, :2], index_to_coord(torch.tensor([[3, 3]]), 8), 4, k=1, resolution=8)
    with pytest.raises(ValueError, match="coords"):
        points_to_grid(values, coords[:, :5], 4, resolution=8)
    with pytest.raises(ValueError, match="grid"):
        grid_to_points(torch.randn(2, 4, 4), coords)
