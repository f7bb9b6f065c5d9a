"""The coordinate convention agrees with F.grid_sample(align_corners=False) and round-trips exactly."""

import pytest
import torch
import torch.nn.functional as F

from rezdiff.data import coords


@pytest.mark.parametrize("resolution", [(5, 7), (16, 16), (1, 3)])
def test_grid_sample_at_pixel_centers_returns_the_grid(resolution):
    image = torch.randn(2, 3, *resolution, generator=torch.Generator().manual_seed(0))
    grid = coords.pixel_centers(resolution).expand(2, -1, -1, -1)
    nearest = F.grid_sample(image, grid, mode="nearest", align_corners=False)
    bilinear = F.grid_sample(image, grid, mode="bilinear", align_corners=False)
    assert torch.equal(nearest, image)
    torch.testing.assert_close(bilinear, image, atol=1e-5, rtol=0)


def test_pixel_centers_values_and_layout():
    centers = coords.pixel_centers((2, 4))
    assert centers.shape == (2, 4, 2)
    torch.testing.assert_close(centers[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # x along columns
    torch.testing.assert_close(centers[:, 0, 1], torch.tensor([-0.5, 0.5]))  # y along rows


def test_index_coord_round_trip():
    resolution = (7, 11)
    index = torch.arange(7 * 11)
    points = coords.index_to_coord(index, resolution)
    torch.testing.assert_close(points, coords.pixel_centers(resolution).reshape(-1, 2))
    assert torch.equal(coords.coord_to_index(points, resolution), index)
    # any point inside a cell maps to that cell; points outside clamp to the border
    jitter = (torch.rand(index.shape[0], 2) - 0.5) * 0.99 * coords.cell_size(resolution)
    assert torch.equal(coords.coord_to_index(points + jitter, resolution), index)
    assert coords.coord_to_index(torch.tensor([[-5.0, 5.0]]), resolution).item() == 6 * 11


def test_gather_scatter_round_trip_and_sample_at():
    resolution = (6, 9)
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, *resolution, generator=generator)
    index = torch.stack([torch.randperm(54, generator=generator)[:20] for _ in range(2)])
    values = coords.gather_pixels(image, index)
    assert values.shape == (2, 20, 3)
    canvas = coords.scatter_pixels(values, index, resolution, fill=float("nan"))
    mask = ~canvas.isnan()
    assert mask.sum() == 2 * 20 * 3
    assert torch.equal(canvas[mask], image[mask])
    assert torch.equal(coords.gather_pixels(canvas, index), values)
    points = coords.index_to_coord(index, resolution)
    assert torch.equal(coords.sample_at(image, points, mode="nearest"), values)
    torch.testing.assert_close(coords.sample_at(image, points), values, atol=1e-5, rtol=0)


def test_cell_size_and_as_hw():
    torch.testing.assert_close(coords.cell_size((4, 8)), torch.tensor([0.25, 0.5]))  # (2/W, 2/H)
    assert coords.as_hw(32) == (32, 32)
    assert coords.as_hw([3, 5]) == (3, 5)
    with pytest.raises(ValueError):
        coords.as_hw(0)
    with pytest.raises(ValueError):
        coords.as_hw((1, 2, 3))
