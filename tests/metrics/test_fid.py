"""FID, KID and patch crops against independent references (scipy sqrtm, brute-force MMD, torchmetrics)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from rezdiff.metrics import (
    RandomConvFeatures,
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    kid_from_features,
    random_crops,
    torchmetrics_fid,
)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root (as pytorch-fid computes it)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """96 smooth random colour fields at 32² (cheap stand-ins for a dataset)."""
    coarse = torch.rand(96, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=32, mode="bicubic", align_corners=False).clamp(-1, 1)


def test_frechet_distance_matches_scipy_sqrtm_on_random_gaussians() -> None:
    rng = np.random.default_rng(0)
    for dim, shift in ((8, 0.0), (16, 0.5), (32, 2.0)):
        mix = rng.normal(size=(dim, dim))
        a = rng.normal(size=(400, dim)) @ mix
        b = rng.normal(size=(300, dim)) @ (mix + 0.3 * rng.normal(size=(dim, dim))) + shift
        ours = fid_from_features(torch.from_numpy(a), torch.from_numpy(b))
        assert ours == pytest.approx(scipy_fid(a, b), rel=1e-6, abs=1e-8)


def test_frechet_distance_closed_form_for_isotropic_gaussians() -> None:
    # N(m1, s1² I) vs N(m2, s2² I) in d dims: |m1 - m2|² + d (s1 - s2)².
    d = 5
    value = frechet_distance(torch.zeros(d), 4 * torch.eye(d), torch.ones(d), torch.eye(d))
    assert value == pytest.approx(d * 1 + d * (2 - 1) ** 2)


def test_gaussian_stats_are_float64_and_unbiased() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mean, cov = gaussian_stats(x)
    assert mean.dtype == cov.dtype == torch.float64
    assert torch.allclose(cov, torch.from_numpy(np.cov(x.double().numpy(), rowvar=False)))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(images: torch.Tensor) -> None:
    net = RandomConvFeatures()
    real = net(images)
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-6)
    small = fid_from_features(real, net((images + 0.1).clamp(-1, 1)))
    large = fid_from_features(real, net((images + 0.4).clamp(-1, 1)))
    assert 0 < small < large
    # two disjoint halves of the same distribution are far closer than a shifted copy
    halves = fid_from_features(real[:48], real[48:])
    assert halves < large


def test_torchmetrics_streaming_fid_agrees_with_ours(images: torch.Tensor) -> None:
    net = RandomConvFeatures()
    metric = torchmetrics_fid(net)
    shifted = (images + 0.3).clamp(-1, 1)
    for start in range(0, 96, 32):
        metric.update(images[start : start + 32], real=True)
        metric.update(shifted[start : start + 32], real=False)
    expected = fid_from_features(net(images), net(shifted))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-3)


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³, by explicit double loops over the kernel matrix."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def test_kid_single_subset_equals_brute_force_mmd() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g) + 0.5
    mean, std = kid_from_features(a, b, subsets=1, subset_size=40)
    assert std == 0.0
    assert mean == pytest.approx(brute_force_mmd2(a.double().numpy(), b.double().numpy()), rel=1e-9)


def test_kid_near_zero_for_same_distribution_positive_for_shift(images: torch.Tensor) -> None:
    net = RandomConvFeatures()
    real = net(images)
    same, _ = kid_from_features(real[:48], real[48:], subsets=20, subset_size=40)
    shifted, spread = kid_from_features(real, net((images + 0.4).clamp(-1, 1)), subsets=20, subset_size=40)
    assert shifted > 10 * abs(same) and shifted > 3 * spread
    again = kid_from_features(real, net((images + 0.4).clamp(-1, 1)), subsets=20, subset_size=40)
    assert again == (shifted, spread)  # seeded subsets: reproducible


def test_random_crops_are_unresized_windows_of_the_right_size() -> None:
    images = torch.arange(3 * 2 * 20 * 24, dtype=torch.float32).reshape(3, 2, 20, 24)
    crops = random_crops(images, 8, torch.Generator().manual_seed(0))
    assert crops.shape == (3, 2, 8, 8)
    for image, crop in zip(images, crops, strict=True):
        top = int((crop[0, 0, 0] - image[0, 0, 0]) // 24)
        left = int((crop[0, 0, 0] - image[0, 0, 0]) % 24)
        assert torch.equal(crop, image[:, top : top + 8, left : left + 8])
    positions = {int(c[0, 0, 0]) for c in random_crops(images.repeat(8, 1, 1, 1), 8)}
    assert len(positions) > 3  # random positions, not a fixed crop
    with pytest.raises(ValueError, match="cannot crop"):
        random_crops(images, 21)
