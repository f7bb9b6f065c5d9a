"""Scale consistency: exact for a field whose pixels are cell averages, sensitive to inconsistent renderers.

The metric on a trained INFD autoencoder is tested in tests/models/test_infd_latent.py (it shares the
tiny stage-1 model trained there).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from rezdiff.data.coords import Resolution, as_hw, pixel_centers
from rezdiff.metrics import ScaleConsistency, box_downsample, render_scale_consistency, scale_consistency


def _params(batch: int, seed: int = 0) -> Tensor:
    """Per image and channel: (frequency a, phase p, frequency b, phase q) of sin(a x + p) cos(b y + q)."""
    g = torch.Generator().manual_seed(seed)
    freqs = 2 + 8 * torch.rand(batch, 3, 2, generator=g, dtype=torch.float64)
    phases = 2 * math.pi * torch.rand(batch, 3, 2, generator=g, dtype=torch.float64)
    return torch.stack((freqs[..., 0], phases[..., 0], freqs[..., 1], phases[..., 1]), dim=-1)


class CellAverage:
    """Renders each pixel as the exact mean of f over its cell: a perfectly scale-consistent field."""

    def render(self, features: Tensor, resolution: Resolution, **options: Any) -> Tensor:
        height, width = as_hw(resolution)
        a, p, b, q = (features[..., k, None] for k in range(4))  # [B, C, 1]
        xe = torch.linspace(-1, 1, width + 1, dtype=torch.float64)
        ye = torch.linspace(-1, 1, height + 1, dtype=torch.float64)
        # ∫ sin(a x + p) dx / dx over each column cell, ∫ cos(b y + q) dy / dy over each row cell
        col = (torch.cos(a * xe[:-1] + p) - torch.cos(a * xe[1:] + p)) / (a * (2 / width))
        row = (torch.sin(b * ye[1:] + q) - torch.sin(b * ye[:-1] + q)) / (b * (2 / height))
        return (row[..., :, None] * col[..., None, :]).float()


class PointSamples:
    """Renders f at the pixel centres (no averaging): consistent only up to O((a / R)^2)."""

    def __init__(self, shift: bool = False) -> None:
        self.shift = shift  # True: the align_corners=True grid (pixel centres at ±1), a convention bug

    def render(self, features: Tensor, resolution: Resolution, **options: Any) -> Tensor:
        height, width = as_hw(resolution)
        if self.shift:
            ys, xs = torch.meshgrid(
                torch.linspace(-1, 1, height, dtype=torch.float64),
                torch.linspace(-1, 1, width, dtype=torch.float64),
                indexing="ij",
            )
        else:
            centres = pixel_centers((height, width), dtype=torch.float64)
            xs, ys = centres[..., 0], centres[..., 1]
        a, p, b, q = (features[..., k, None, None] for k in range(4))
        return (torch.sin(a * xs + p) * torch.cos(b * ys + q)).float()


def test_box_downsample_is_the_block_mean() -> None:
    image = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]]).view(1, 1, 2, 2)
    torch.testing.assert_close(box_downsample(image, 2), expected)
    assert box_downsample(image, 1) is image
    with pytest.raises(ValueError, match="cannot be box-downsampled"):
        box_downsample(image, 3)


def test_cell_average_field_is_consistent_exactly() -> None:
    features = _params(4)
    for factor in (2, 4):
        figures = render_scale_consistency(CellAverage(), features, (12, 16), factor=factor)
        assert figures["l1"] < 1e-6 and figures["psnr"] > 120, figures
    constant = torch.full((2, 3, 8, 8), 0.3)
    assert scale_consistency(torch.full((2, 3, 16, 16), 0.3), constant)["mse"] == 0.0


def test_inconsistent_renderers_are_detected_and_ranked() -> None:
    features = _params(4)
    exact = render_scale_consistency(CellAverage(), features, 16)
    points = render_scale_consistency(PointSamples(), features, 16)
    shifted = render_scale_consistency(PointSamples(shift=True), features, 16)
    # point sampling differs from the cell mean by ~ a^2 h^2 / 24 per axis (h = cell size): clearly visible
    assert 1e-3 < points["l1"] < 0.1 and points["psnr"] < 50, points
    # a half-pixel misalignment between the two grids is worse still
    assert shifted["l1"] > 2 * points["l1"], (shifted, points)
    assert exact["psnr"] > points["psnr"] + 60
    # finer renders of the same point-sampled field are more consistent (error ~ 1/R^2)
    finer = render_scale_consistency(PointSamples(), features, 64)
    assert finer["mse"] < points["mse"] / 50


def test_metric_accumulates_like_the_function() -> None:
    features = _params(6, seed=1)
    renderer = PointSamples()
    high, low = renderer.render(features, 32), renderer.render(features, 16)
    metric = ScaleConsistency()
    metric.update(high[:2], low[:2])
    metric.update(high[2:], low[2:])
    accumulated = {k: float(v) for k, v in metric.compute().items()}
    direct = scale_consistency(high, low)
    for name in ("l1", "mse", "psnr"):
        assert accumulated[name] == pytest.approx(direct[name], rel=1e-9)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="integer multiple"):
        scale_consistency(torch.zeros(1, 3, 24, 24), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="integer multiple"):
        scale_consistency(torch.zeros(1, 3, 32, 48), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="one batch"):
        scale_consistency(torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="before any update"):
        ScaleConsistency().compute()
