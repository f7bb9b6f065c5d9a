"""Fourier resizing is exact on band-limited functions; the Levels view renders the finest level."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from rezdiff.data import FieldBatch, FieldDataModule, FullGrid, Levels, Synthetic, fourier_resize


def band_limited(n: int) -> Tensor:
    """A periodic function with wave numbers up to 7, at the pixel centres of an n x n grid."""
    s = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    x, y = torch.meshgrid(s, s, indexing="ij")
    return torch.sin(2 * math.pi * (3 * x + 0.1)) * torch.cos(2 * math.pi * 5 * y - 1) + torch.cos(
        2 * math.pi * (7 * x - 2 * y)
    )


def cosine_series(n: int) -> Tensor:
    s = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    x, y = torch.meshgrid(s, s, indexing="ij")
    return torch.cos(math.pi * 3 * x) * torch.cos(math.pi * 9 * y) + 0.5 * torch.cos(math.pi * 11 * x)


@pytest.mark.parametrize(("source", "target"), [(64, 32), (32, 64), (128, 32), (30, 64), (64, 48)])
def test_periodic_resize_gives_the_values_on_the_new_grid(source: int, target: int) -> None:
    torch.testing.assert_close(fourier_resize(band_limited(source), target), band_limited(target))


@pytest.mark.parametrize(("source", "target"), [(64, 32), (32, 64), (24, 40)])
def test_reflect_resize_is_exact_on_cosine_series(source: int, target: int) -> None:
    got = fourier_resize(cosine_series(source), target, "reflect")
    torch.testing.assert_close(got, cosine_series(target))


def test_down_after_up_is_the_identity_on_the_coarse_band() -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = fourier_resize(fourier_resize(x, 30), 32)  # drop the 32-grid Nyquist modes
    torch.testing.assert_close(fourier_resize(fourier_resize(x, 64), 32), x, atol=1e-5, rtol=0)
    y = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        fourier_resize(fourier_resize(y, 64, "reflect"), 32, "reflect"), y, atol=1e-5, rtol=0
    )
    assert fourier_resize(y, 32) is y and fourier_resize(y.half(), 16).dtype == torch.half


def test_levels_renders_the_finest_level_and_downsamples_on_demand() -> None:
    dataset = Synthetic(num_images=4, resolution=64, channels=1)
    view = Levels([64, 16, 32])
    assert view.resolutions == (16, 32, 64) and view.finest == 64
    example = view(dataset, 1)
    torch.testing.assert_close(example.image, dataset.render(1, 64))
    assert int(example.level) == 2
    batch = FieldBatch.collate([view(dataset, i) for i in range(3)])
    coarse = view.downsample(batch.image, 32)
    assert coarse.shape == (3, 1, 32, 32)
    torch.testing.assert_close(coarse, fourier_resize(batch.image, 32))
    with pytest.raises(ValueError, match="not one of the levels"):
        view.downsample(batch.image, 48)


def test_levels_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Levels([32, 32])
    with pytest.raises(ValueError, match=">= 2"):
        Levels([])
    with pytest.raises(ValueError, match="boundary"):
        Levels([32], boundary="zero")  # type: ignore[arg-type]


def test_levels_feeds_the_datamodule() -> None:
    module = FieldDataModule(
        Synthetic(num_images=6, resolution=32, channels=1), Levels([16, 32]), batch_size=2
    )
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch.image.shape == (2, 1, 32, 32) and batch.level.tolist() == [1, 1]
    assert isinstance(FieldDataModule(module.dataset, FullGrid(32)).val_view, FullGrid)
