"""Samplers turn one image into one FieldBatch example."""

import math

import pytest
import torch

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.synthetic import Synthetic
from rezdiff.data.views import FieldView, FullGrid, RandomPixels


@pytest.fixture(scope="module")
def dataset():
    return Synthetic(num_images=4, resolution=32, seed=0)


def test_full_grid(dataset):
    example = FullGrid((12, 20))(dataset, 1)
    assert isinstance(example, FieldBatch)
    assert example.image.shape == (3, 12, 20)
    assert torch.equal(example.image, dataset.render(1, (12, 20)))
    assert example.coords is None and example.index is None and example.cell is None
    assert FullGrid(16)(dataset, 0).image.shape == (3, 16, 16)


@pytest.mark.parametrize(("resolution", "fraction"), [(16, 0.25), ((10, 13), 0.3), (8, 1.0)])
def test_random_pixels_selection(dataset, resolution, fraction):
    height, width = coords.as_hw(resolution)
    view = RandomPixels(resolution, fraction)
    example = view(dataset, 2, torch.Generator().manual_seed(0))
    count = math.floor(height * width * fraction)
    assert example.image.shape == (3, height, width)
    assert example.index.shape == (count,) and example.index.dtype == torch.long
    assert torch.equal(example.index, example.index.unique())  # unique and sorted
    assert example.index.min() >= 0 and example.index.max() < height * width
    assert example.coords.shape == (count, 2) and example.cell.shape == (count, 2)
    torch.testing.assert_close(example.cell, coords.cell_size(resolution).expand(count, 2))
    # the coordinates point at the pixels whose values the index selects
    gathered = coords.gather_pixels(example.image[None], example.index[None])
    at_points = coords.sample_at(example.image[None], example.coords[None], mode="nearest")
    assert torch.equal(at_points, gathered)
    torch.testing.assert_close(coords.sample_at(example.image[None], example.coords[None]), gathered)


def test_random_pixels_deterministic_with_generator_random_without(dataset):
    view = RandomPixels(32, 0.1)
    first = view(dataset, 0, torch.Generator().manual_seed(7))
    second = view(dataset, 0, torch.Generator().manual_seed(7))
    other = view(dataset, 0, torch.Generator().manual_seed(8))
    assert torch.equal(first.index, second.index) and torch.equal(first.coords, second.coords)
    assert not torch.equal(first.index, other.index)
    torch.manual_seed(0)
    a = view(dataset, 0).index
    b = view(dataset, 0).index
    torch.manual_seed(0)
    assert not torch.equal(a, b) and torch.equal(view(dataset, 0).index, a)  # global RNG
    batch = FieldBatch.collate([view(dataset, i) for i in range(3)])
    assert batch.index.shape == (3, 102) and batch.values().shape == (3, 102, 3)


def test_random_pixels_validates_fraction():
    for fraction in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            RandomPixels(16, fraction)
    with pytest.raises(ValueError, match="selects no pixel"):
        RandomPixels(4, 0.01)


def test_view_base_is_abstract():
    with pytest.raises(TypeError):
        FieldView()  # type: ignore[abstract]
