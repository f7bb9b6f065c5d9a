"""Tests for the multi-scale sliced Wasserstein distance (rezdiff.metrics.swd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import convolve
from scipy.stats import wasserstein_distance
from skimage import data

from rezdiff.metrics import MultiScaleSWD, laplacian_pyramid, multiscale_swd, sliced_wasserstein
from rezdiff.metrics.swd import (
    collapse_laplacian_pyramid,
    gaussian_pyramid,
    random_directions,
    wasserstein_1d,
)

# Small but real settings: 32 images of 64x64, three levels (64, 32, 16).
FAST = dict(patches_per_image=64, num_directions=128, num_repeats=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> [1, 3, H/2, W/2] in [-1, 1] (halved so that 64x64 crops hold more content)."""
    t = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1.0
    return F.avg_pool2d(t, 2)


def _crops(image: torch.Tensor, num: int, size: int, seed: int) -> torch.Tensor:
    """``num`` random size x size crops of one [1, C, H, W] image."""
    g = _gen(seed)
    h, w = image.shape[-2:]
    tops = torch.randint(0, h - size + 1, (num,), generator=g).tolist()
    lefts = torch.randint(0, w - size + 1, (num,), generator=g).tolist()
    return torch.cat([image[..., t : t + size, s : s + size] for t, s in zip(tops, lefts, strict=True)])


def _smooth_field(num: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Stationary smooth random fields: white noise blurred a few times, scaled to std 0.5."""
    x = torch.randn(num, channels, size, size, generator=_gen(seed))
    for _ in range(4):
        x = _blur(x)
    return 0.5 * x / x.std()


def _blur(x: torch.Tensor) -> torch.Tensor:
    """3x3-ish binomial blur per channel (independent of the code under test)."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k2, groups=x.shape[1])


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return _to_tensor(data.astronaut())


@pytest.fixture(scope="module")
def astro_a(astronaut: torch.Tensor) -> torch.Tensor:
    return _crops(astronaut, 32, 64, seed=1)


# ------------------------------------------------------------------------------------------------
# Pyramids
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (33, 47)])
def test_laplacian_pyramid_reconstructs_exactly(size: tuple[int, int]) -> None:
    images = torch.rand(2, 3, *size, generator=_gen(0)) * 2 - 1
    pyramid = laplacian_pyramid(images, 3)
    h, w = size
    expected = [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 3) // 4, (w + 3) // 4)]
    assert [tuple(level.shape[-2:]) for level in pyramid] == expected
    assert all(level.shape[:2] == (2, 3) for level in pyramid)
    torch.testing.assert_close(collapse_laplacian_pyramid(pyramid), images, atol=1e-6, rtol=0)
    # The coarsest level is the Gaussian image itself.
    torch.testing.assert_close(pyramid[-1], gaussian_pyramid(images, 3)[-1])


def test_pyramid_matches_scipy_reference() -> None:
    """Down: 5x5 binomial with mirror borders, keep even pixels; up: zero-insert, 4x the filter."""
    images = torch.rand(1, 2, 16, 16, generator=_gen(1), dtype=torch.float64)
    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k2 = np.outer(k, k)[None, None]
    x = images.numpy()
    down = convolve(x, k2, mode="mirror")[..., ::2, ::2]
    up = np.zeros_like(x)
    up[..., ::2, ::2] = down
    up = convolve(up, 4 * k2, mode="mirror")
    pyramid = laplacian_pyramid(images, 2)
    np.testing.assert_allclose(pyramid[1].numpy(), down, atol=1e-12)
    np.testing.assert_allclose(pyramid[0].numpy(), x - up, atol=1e-12)


def test_constant_image_has_zero_bands() -> None:
    pyramid = laplacian_pyramid(torch.full((1, 1, 32, 32), 0.3), 3)
    assert pyramid[0].abs().max() < 1e-6 and pyramid[1].abs().max() < 1e-6
    torch.testing.assert_close(pyramid[2], torch.full((1, 1, 8, 8), 0.3))


# ------------------------------------------------------------------------------------------------
# Sliced Wasserstein
# ------------------------------------------------------------------------------------------------


def test_sliced_wasserstein_of_set_with_itself_is_zero() -> None:
    a = torch.randn(200, 10, generator=_gen(0))
    assert sliced_wasserstein(a, a, generator=_gen(1)).item() == 0.0
    assert sliced_wasserstein(a, a + 0.5, generator=_gen(1)).item() > 0.1


@pytest.mark.parametrize("m", [300, 170])
def test_one_dimensional_sets_give_exact_w1(m: int) -> None:
    """In 1-D every unit direction is +-1, so SWD is the exact W1 (also for unequal sizes)."""
    a = torch.randn(300, 1, generator=_gen(2), dtype=torch.float64)
    b = 0.5 * torch.rand(m, 1, generator=_gen(3), dtype=torch.float64) + 0.3
    expected = wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy())
    got = sliced_wasserstein(a, b, num_directions=8, num_repeats=2, generator=_gen(4)).item()
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("m", [120, 77])
def test_sliced_wasserstein_averages_exact_w1_of_projections(m: int) -> None:
    a = torch.randn(120, 5, generator=_gen(5), dtype=torch.float64)
    b = torch.randn(m, 5, generator=_gen(6), dtype=torch.float64) * 1.5 + 0.2
    got = sliced_wasserstein(a, b, num_directions=16, num_repeats=3, generator=_gen(7)).item()
    # The same directions, drawn in the documented order (one draw of 16 per repeat).
    g = _gen(7)
    dirs = torch.cat([random_directions(5, 16, g) for _ in range(3)], dim=1).double()
    torch.testing.assert_close(dirs.norm(dim=0), torch.ones(48, dtype=torch.float64))
    pa, pb = (a @ dirs).numpy(), (b @ dirs).numpy()
    expected = np.mean([wasserstein_distance(pa[:, k], pb[:, k]) for k in range(48)])
    assert got == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(
        wasserstein_1d(torch.from_numpy(pa), torch.from_numpy(pb)),
        torch.tensor([wasserstein_distance(pa[:, k], pb[:, k]) for k in range(48)], dtype=torch.float64),
    )


def test_sliced_wasserstein_permutation_invariant_and_reproducible() -> None:
    a = torch.randn(256, 20, generator=_gen(8))
    b = torch.randn(256, 20, generator=_gen(9)) ** 2
    base = sliced_wasserstein(a, b, generator=_gen(10))
    perm_a, perm_b = torch.randperm(256, generator=_gen(11)), torch.randperm(256, generator=_gen(12))
    torch.testing.assert_close(sliced_wasserstein(a[perm_a], b[perm_b], generator=_gen(10)), base)
    torch.testing.assert_close(sliced_wasserstein(b, a, generator=_gen(10)), base)
    assert sliced_wasserstein(a, b, generator=_gen(10)).item() == base.item()
    assert sliced_wasserstein(a, b, generator=_gen(13)).item() != base.item()
    # The global RNG is neither used nor needed.
    state = torch.get_rng_state()
    torch.manual_seed(123)
    first = sliced_wasserstein(a, b).item()
    torch.manual_seed(456)
    assert sliced_wasserstein(a, b).item() == first
    torch.set_rng_state(state)


def test_sliced_wasserstein_rejects_mismatched_dims() -> None:
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        sliced_wasserstein(torch.zeros(4, 3), torch.zeros(4, 2))


# ------------------------------------------------------------------------------------------------
# Multi-scale SWD
# ------------------------------------------------------------------------------------------------


def test_identical_sets_give_zero(astro_a: torch.Tensor) -> None:
    result = multiscale_swd(astro_a, astro_a.clone(), generator=_gen(0), **FAST)
    assert list(result) == ["swd_64", "swd_32", "swd_16", "swd_mean"]
    assert all(value == pytest.approx(0.0, abs=1e-3) for value in result.values())
    # Drawing the patch positions independently (as the original code) leaves only a noise floor.
    indep = multiscale_swd(astro_a, astro_a, generator=_gen(0), independent_positions=True, **FAST)
    assert 0 < indep["swd_mean"] < 60


def test_per_level_normalisation_ignores_brightness_and_contrast(astro_a: torch.Tensor) -> None:
    """Each descriptor set is standardised per channel, so a per-channel affine change is invisible."""
    scale = torch.tensor([0.5, 0.8, 0.3]).view(1, 3, 1, 1)
    result = multiscale_swd(astro_a, scale * astro_a + 0.2, generator=_gen(0), **FAST)
    assert all(value == pytest.approx(0.0, abs=0.05) for value in result.values()), result


def test_swd_grows_with_noise_at_every_level(astro_a: torch.Tensor) -> None:
    noise = torch.randn(astro_a.shape, generator=_gen(5))
    results = [
        multiscale_swd(astro_a, astro_a + std * noise, generator=_gen(0), **FAST)
        for std in (0.05, 0.1, 0.2, 0.4)
    ]
    for key in ("swd_64", "swd_32", "swd_16", "swd_mean"):
        values = [r[key] for r in results]
        assert all(lo < hi for lo, hi in zip(values[:-1], values[1:], strict=True)), (key, values)
    # White noise is a fine-scale change: it shows most at the finest level.
    assert results[0]["swd_64"] > results[0]["swd_16"]


def test_blur_differs_mostly_at_finest_level(astro_a: torch.Tensor) -> None:
    result = multiscale_swd(astro_a, _blur(astro_a), generator=_gen(0), **FAST)
    assert result["swd_64"] > 3 * result["swd_16"]
    assert result["swd_64"] > 30


def test_same_distribution_much_closer_than_different(astronaut: torch.Tensor) -> None:
    astro_a, astro_b = _crops(astronaut, 32, 64, seed=1), _crops(astronaut, 32, 64, seed=2)
    field_a, field_b = _smooth_field(32, 3, 64, seed=3), _smooth_field(32, 3, 64, seed=4)
    swd = lambda x, y: multiscale_swd(x, y, generator=_gen(0), **FAST)["swd_mean"]
    astro_vs_field = swd(astro_a, field_a)
    assert swd(astro_a, astro_b) < 0.5 * astro_vs_field
    assert swd(field_a, field_b) < 0.25 * astro_vs_field


def test_grey_and_non_square_and_unequal_counts() -> None:
    real = _smooth_field(12, 1, 80, seed=0)[..., :48, :]
    fake = _smooth_field(9, 1, 80, seed=1)[..., :48, :]
    result = multiscale_swd(real, fake, generator=_gen(0), **FAST)
    assert list(result) == ["swd_48x80", "swd_24x40", "swd_mean"]
    assert all(np.isfinite(v) and v >= 0 for v in result.values())
    assert result["swd_mean"] == pytest.approx((result["swd_48x80"] + result["swd_24x40"]) / 2)
    rgb = multiscale_swd(real.expand(-1, 3, -1, -1), fake.expand(-1, 3, -1, -1), min_resolution=24, **FAST)
    assert list(rgb) == ["swd_48x80", "swd_24x40", "swd_mean"]


def test_reproducible_and_independent_of_chunking(astro_a: torch.Tensor) -> None:
    fake = astro_a.flip(-1) + 0.1
    base = multiscale_swd(astro_a, fake, generator=_gen(3), **FAST)
    assert multiscale_swd(astro_a, fake, generator=_gen(3), chunk_size=5, **FAST) == pytest.approx(base)
    assert multiscale_swd(astro_a.double(), fake.half(), generator=_gen(3), **FAST) == pytest.approx(
        base, rel=1e-2
    )
    assert multiscale_swd(astro_a, fake, generator=_gen(4), **FAST) != base


def test_multiscale_swd_validates_inputs() -> None:
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="same channels and size"):
        multiscale_swd(x, torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="same channels and size"):
        multiscale_swd(x, torch.zeros(2, 3, 32, 16))
    with pytest.raises(ValueError, match="min_resolution"):
        multiscale_swd(x, x, min_resolution=64)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        multiscale_swd(x[0], x[0])
    with pytest.raises(ValueError, match="odd"):
        multiscale_swd(x, x, patch_size=6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(astro_a: torch.Tensor) -> None:
    fake = astro_a + 0.1 * torch.randn(astro_a.shape, generator=_gen(1))
    cpu = multiscale_swd(astro_a, fake, generator=_gen(0), **FAST)
    gpu = multiscale_swd(astro_a.cuda(), fake.cuda(), generator=_gen(0), **FAST)
    assert gpu == pytest.approx(cpu, rel=1e-3)


# ------------------------------------------------------------------------------------------------
# torchmetrics wrapper
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_metric_class_equals_functional(astro_a: torch.Tensor) -> None:
    fake = _blur(astro_a) + 0.05 * torch.randn(astro_a.shape, generator=_gen(2))
    metric = MultiScaleSWD(seed=7, **FAST)
    for start in range(0, 32, 10):
        metric.update(astro_a[start : start + 10], real=True)
        metric.update(fake[start : start + 10], real=False)
    expected = multiscale_swd(astro_a, fake, generator=_gen(7), **FAST)
    assert metric.compute() == expected
    metric.reset()
    with pytest.raises(ValueError, match="both real and fake"):
        metric.compute()
    metric.update(astro_a, real=True)
    with pytest.raises(ValueError, match="share channels and size"):
        metric.update(astro_a[..., :32, :32], real=False)
