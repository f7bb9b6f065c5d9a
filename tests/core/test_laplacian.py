"""The binomial pyramids against scipy's ``ndimage.convolve`` (an independent filter), at odd sizes, at the
smallest sides (replicated borders), with both upsamplers, and their refusals word for word."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import convolve

from rezdiff.core.laplacian import (
    BINOMIAL_5,
    binomial_blur,
    collapse_laplacian_pyramid,
    gaussian_pyramid,
    laplacian_pyramid,
    pyr_down,
    pyr_up,
)
from tests.helpers import record_calls

KERNEL = np.outer([1.0, 4.0, 6.0, 4.0, 1.0], [1.0, 4.0, 6.0, 4.0, 1.0])[None, None] / 256


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("size", [(7, 5), (3, 9), (16, 3)])
def test_blur_is_scipys_mirror_convolution_per_channel(size: tuple[int, int]) -> None:
    x = images(2, 3, *size)
    np.testing.assert_allclose(
        binomial_blur(x).numpy(), convolve(x.numpy(), KERNEL, mode="mirror"), atol=1e-14
    )
    np.testing.assert_allclose(
        pyr_down(x).numpy(), convolve(x.numpy(), KERNEL, mode="mirror")[..., ::2, ::2], atol=1e-14
    )


def test_the_filter_is_made_on_the_images_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel left on the CPU cannot convolve a GPU batch; here (CPU, and meta convolves with a CPU kernel)
    only the call that makes the kernel shows it."""
    made = record_calls(monkeypatch, torch, "tensor")
    blurred = binomial_blur(torch.zeros(1, 2, 8, 8, device="meta"))
    assert blurred.device.type == "meta" and blurred.shape == (1, 2, 8, 8)
    kernels = [kwargs for args, kwargs in made if args and args[0] == BINOMIAL_5]
    assert kernels and all(torch.device(kwargs["device"]).type == "meta" for kwargs in kernels)


@pytest.mark.parametrize("size", [(2, 5), (6, 2), (1, 4)])
def test_sides_under_three_pixels_replicate_their_border(size: tuple[int, int]) -> None:
    x = images(1, 2, *size)
    np.testing.assert_allclose(
        binomial_blur(x).numpy(), convolve(x.numpy(), KERNEL, mode="nearest"), atol=1e-14
    )


def test_pyrup_is_zero_insertion_then_four_times_the_filter_at_odd_sizes() -> None:
    coarse = images(1, 2, 4, 3, seed=1)
    for size in ((7, 5), (8, 6), (8, 5)):
        inserted = np.zeros((1, 2, *size))
        inserted[..., ::2, ::2] = coarse.numpy()
        expected = convolve(inserted, 4 * KERNEL, mode="mirror")
        np.testing.assert_allclose(pyr_up(coarse, size).numpy(), expected, atol=1e-14)
    bilinear = pyr_up(coarse, (7, 6), "bilinear")
    torch.testing.assert_close(
        bilinear, F.interpolate(coarse, size=(7, 6), mode="bilinear", align_corners=False)
    )


@pytest.mark.parametrize(
    "size, upsample, message",
    [
        ((9, 6), "pyrup", "cannot upsample 4x3 to 9x6"),
        ((8, 4), "bilinear", "cannot upsample 4x3 to 8x4"),
        ((8, 6), "nearest", "upsample must be 'pyrup' or 'bilinear', got 'nearest'"),
    ],
)
def test_pyr_up_refuses_a_size_it_cannot_come_from_and_an_unknown_upsampler(size, upsample, message) -> None:
    with pytest.raises(ValueError, match=message):
        pyr_up(images(1, 1, 4, 3), size, upsample)


def test_gaussian_pyramid_levels_and_its_refusals() -> None:
    x = images(2, 1, 9, 12)
    levels = gaussian_pyramid(x, 3)
    assert len(levels) == 3 and levels[0] is x
    torch.testing.assert_close(levels[2], pyr_down(pyr_down(x)))
    assert [tuple(level.shape[-2:]) for level in levels] == [(9, 12), (5, 6), (3, 3)]
    assert gaussian_pyramid(x, 1) == [x]
    assert len(gaussian_pyramid(x, 4)) == 4  # the 3x3 level is filtered once more, to 2x2
    with pytest.raises(ValueError, match=r"cannot filter a 2x2 image: every filtered pyramid level needs"):
        gaussian_pyramid(x, 5)
    with pytest.raises(ValueError, match=r"cannot filter a 2x8 image"):
        gaussian_pyramid(images(1, 1, 2, 8), 2)
    with pytest.raises(ValueError, match=r"num_levels must be >= 1, got 0"):
        gaussian_pyramid(x, 0)
    with pytest.raises(ValueError, match=r"images must be a \[B, C, H, W\] tensor, got shape \(1, 9, 12\)"):
        gaussian_pyramid(x[0], 2)


@pytest.mark.parametrize("upsample", ["pyrup", "bilinear"])
def test_laplacian_bands_use_the_chosen_upsampler_and_collapse_back(upsample: str) -> None:
    x = images(2, 3, 13, 10, seed=2)
    gauss = gaussian_pyramid(x, 3)
    bands = laplacian_pyramid(x, 3, upsample)
    assert len(bands) == 3 and torch.equal(bands[-1], gauss[-1])
    for i in range(2):
        torch.testing.assert_close(bands[i], gauss[i] - pyr_up(gauss[i + 1], gauss[i].shape[-2:], upsample))
    torch.testing.assert_close(collapse_laplacian_pyramid(bands, upsample), x, atol=1e-14, rtol=0)
    other = "bilinear" if upsample == "pyrup" else "pyrup"
    assert not torch.allclose(collapse_laplacian_pyramid(bands, other), x, atol=1e-3)
    assert laplacian_pyramid(x, 1) == [x]
