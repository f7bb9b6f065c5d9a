"""∞-Diff's mollified process: Monte-Carlo checks of the marginal, the posterior and the reverse steps
against dense matrices built from T, and the exact denoiser of a one-point data set through the samplers."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from rezdiff.core import alphas_cumprod, cosine_betas, ddpm_step, q_posterior
from rezdiff.core.operators import dct2, dct_pixel_variance, idct2
from rezdiff.core.schedules import timestep_subsequence
from rezdiff.models.infty_diff.mollified import (
    gaussian_data_eps,
    mollified_initial_state,
    mollified_marginal,
    mollified_noise_operator,
    mollified_sample,
    resolution_factor,
)
from rezdiff.models.infty_diff.mollifier import GaussianMollifier
from tests.helpers import gen

H, W = 4, 5  # 20 pixels: dense 20 x 20 covariance matrices
N = 40_000
T_STEPS = 1000
AB = alphas_cumprod(cosine_betas(T_STEPS))


def matrix(mollifier: GaussianMollifier, height: int = H, width: int = W) -> Tensor:
    """T as a dense ``[HW, HW]`` matrix: column k is T applied to the k-th pixel indicator."""
    eye = torch.eye(height * width, dtype=torch.float64).reshape(-1, height, width)
    return mollifier(eye).reshape(height * width, -1).T


def cov(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Sample (cross-)covariance of the rows of ``x`` (and ``y``), ``[N, d]``."""
    y = x if y is None else y
    return (x - x.mean(0)).T @ (y - y.mean(0)) / (x.shape[0] - 1)


def close(estimate: Tensor, exact: Tensor, rel: float) -> None:
    error = (estimate - exact).norm() / exact.norm()
    assert error < rel, f"relative error {error:.4f} >= {rel}"


def flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


@pytest.fixture
def x0() -> Tensor:
    return torch.linspace(-1, 1, H * W, dtype=torch.float64).reshape(1, 1, H, W).sin()


def test_resolution_factor() -> None:
    assert resolution_factor(32, 64) == 2.0 and resolution_factor((32, 32), (16, 16)) == 0.5
    assert resolution_factor(32, (32, 128)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        resolution_factor(32, 0)


@pytest.mark.parametrize("t", [50, 600])
def test_marginal_mean_and_covariance(x0: Tensor, t: int) -> None:
    """x_t ~ N(sqrt(ab) T x0, (1 - ab) T T*), target T eps ~ N(0, T T*), Cov(x_t, target) = sqrt(1-ab) TT*."""
    mollifier = GaussianMollifier(1.0)
    tm = matrix(mollifier)
    noise = torch.randn(N, 1, H, W, generator=gen(0), dtype=torch.float64)
    x_t, target = mollified_marginal(x0.expand(N, -1, -1, -1), noise, AB[t], mollifier)
    ab = float(AB[t])
    mean = math.sqrt(ab) * tm @ x0.flatten()
    std_of_mean = math.sqrt((1 - ab) * float((tm @ tm.T).diagonal().max()) / N)
    assert (flat(x_t).mean(0) - mean).abs().max() < 5 * std_of_mean
    close(cov(flat(x_t)), (1 - ab) * tm @ tm.T, 0.03)
    close(cov(flat(target)), tm @ tm.T, 0.03)
    close(cov(flat(x_t), flat(target)), math.sqrt(1 - ab) * tm @ tm.T, 0.03)
    torch.testing.assert_close(target, mollifier(noise))  # the target is exactly T eps


def test_finer_grid_noise_is_the_same_random_field() -> None:
    """T'(f eps) at 2x and 4x has the per-pixel variance of T eps at 1x, about 1 / (4 pi std^2)."""
    base = GaussianMollifier(1.0)
    variances = []
    for factor in (1, 2, 4):
        size = 32 * factor
        noise = mollified_initial_state((64, 1, size, size), base.scaled(factor), factor, gen(factor))
        interior = noise[..., size // 4 : -size // 4, size // 4 : -size // 4]
        variances.append(float(interior.var()))
    assert variances[0] == pytest.approx(1 / (4 * math.pi), rel=0.05)
    assert variances[1] == pytest.approx(variances[0], rel=0.05)
    assert variances[2] == pytest.approx(variances[0], rel=0.05)


def pixel_variance(operator: Callable[[Tensor], Tensor], size: int) -> Tensor:
    """Exact per-pixel variance ``diag(L L^T)`` of a DCT-diagonal operator ``L`` on ``size x size`` grids.

    Reads ``L``'s DCT multiplier off ``L`` itself (``dct2(L(idct2(1)))``), checks on a random input that
    ``L`` is that multiplier, then sums ``multiplier^2 psi_u(i)^2 psi_v(j)^2`` over the modes
    (:func:`rezdiff.core.operators.dct_pixel_variance`)."""
    ones = torch.ones(1, 1, size, size, dtype=torch.float64)
    multiplier = dct2(operator(idct2(ones)))[0, 0]
    z = torch.randn(2, 1, size, size, generator=gen(11), dtype=torch.float64)
    torch.testing.assert_close(operator(z), idct2(multiplier * dct2(z)))
    return dct_pixel_variance(multiplier)


@pytest.mark.parametrize("factor", [4.0, 2.0, 1.0, 0.5, 0.25])
def test_noise_is_the_same_random_field_at_every_resolution(factor: float) -> None:
    """The noise operator on a grid f = R / R0 times finer gives every pixel farther than 4 training pixels
    from the border the per-pixel variance of the continuum field T eps, 1 / (4 pi std^2), to 1e-4 (the
    border pixels see their mirror images); below 1x too, where the plain T'(f eps) loses 5% (0.5x) and
    46% (0.25x) of it."""
    base_size = 64
    size = int(base_size * factor)
    operator = mollified_noise_operator(GaussianMollifier(1.0).scaled(factor), factor)
    variance = pixel_variance(operator, size)
    margin = math.ceil(4 * factor)
    interior = variance[margin:-margin, margin:-margin]
    # rtol: at f >= 1 the field is band-limited to the grid, which drops m^2 <= exp(-pi^2) ~ 5e-5 at 1x
    torch.testing.assert_close(interior, torch.full_like(interior, 1 / (4 * math.pi)), rtol=1e-4, atol=0)


def covariance_of(operator: Callable[[Tensor], Tensor], size: int) -> Tensor:
    """``L L^T``, ``[size^2, size^2]``, from ``L`` applied to every pixel indicator."""
    eye = torch.eye(size * size, dtype=torch.float64).reshape(-1, 1, size, size)
    columns = operator(eye).reshape(size * size, -1)
    return columns.T @ columns


@pytest.mark.parametrize(("train", "odd"), [(8, 3), (16, 5)])
def test_coarse_noise_is_the_finer_field_read_at_its_pixel_centres(train: int, odd: int) -> None:
    """Below 1x the noise is the restriction of the fine one: the covariance of a 4x4 grid (0.5x of 8,
    0.25x of 16) equals that of a grid ``odd`` times finer (1.5x, 1.25x: plain band-limited T'(f eps)) read
    at the fine pixels whose centres are the coarse ones (``odd * i + odd // 2``)."""
    base = GaussianMollifier(1.0)
    coarse, fine = 4, 4 * odd
    cov_coarse = covariance_of(mollified_noise_operator(base.scaled(coarse / train), coarse / train), coarse)
    cov_fine = covariance_of(mollified_noise_operator(base.scaled(fine / train), fine / train), fine)
    keep = torch.arange(coarse) * odd + odd // 2
    rows = (keep[:, None] * fine + keep[None, :]).flatten()
    torch.testing.assert_close(cov_coarse, cov_fine[rows][:, rows], rtol=0, atol=1e-8)


@pytest.mark.parametrize("t", [3, 400])
def test_posterior_matches_the_chain(x0: Tensor, t: int) -> None:
    """Simulate x_{t-1} ~ q(.|x0), x_t ~ N(sqrt(a_t) x_{t-1}, beta_t T T*); the residual of x_{t-1} after
    Eq. 10's mean has mean 0, covariance beta_tilde T T* and no correlation with x_t; the ancestral step
    with T-noise and the exact (one-point) denoiser draws from the same law."""
    mollifier = GaussianMollifier(1.0)
    tm = matrix(mollifier)
    ab_t, ab_prev = AB[t], AB[t - 1]
    alpha = float(ab_t / ab_prev)
    x0s = x0.expand(N, -1, -1, -1)
    prev, _ = mollified_marginal(
        x0s, torch.randn(x0s.shape, generator=gen(1), dtype=torch.float64), ab_prev, mollifier
    )
    step_noise = mollifier(torch.randn(x0s.shape, generator=gen(2), dtype=torch.float64))
    x_t = math.sqrt(alpha) * prev + math.sqrt(1 - alpha) * step_noise
    mean, variance = q_posterior(mollifier(x0s), x_t, ab_t, ab_prev)
    residual = flat(prev - mean)
    beta_tilde = float(variance)
    assert beta_tilde == pytest.approx((1 - float(ab_prev)) / (1 - float(ab_t)) * (1 - alpha))
    scale = math.sqrt(beta_tilde * float((tm @ tm.T).diagonal().max()) / N)
    assert residual.mean(0).abs().max() < 5 * scale
    close(cov(residual), beta_tilde * tm @ tm.T, 0.03)
    cross = cov(residual, flat(x_t))
    assert cross.abs().max() < 5 * math.sqrt(beta_tilde * (1 - float(ab_t)) / N) * float(tm.diagonal().max())

    eps = gaussian_data_eps(x_t, ab_t, mollifier, x0)  # exact for the data set {x0}
    z = torch.randn(x0s.shape, generator=gen(3), dtype=torch.float64)
    drawn = ddpm_step(x_t, eps, ab_t, ab_prev, z, noise_operator=mollifier)
    close(cov(flat(drawn - mean)), beta_tilde * tm @ tm.T, 0.03)
    torch.testing.assert_close(drawn - math.sqrt(beta_tilde) * mollifier(z), mean)


def test_gaussian_data_eps_is_the_conditional_mean() -> None:
    """For x0 ~ N(mu, s^2 I): target - E[target | x_t] has mean 0 and is uncorrelated with x_t (the
    orthogonality that characterises the conditional mean of jointly Gaussian variables); also at 2x and at
    0.5x, where the noise is folded and the conditioning runs per DCT mode."""
    for factor in (1.0, 2.0, 0.5):
        mollifier = GaussianMollifier(1.0).scaled(factor)
        mu = torch.linspace(-0.5, 0.5, H * W, dtype=torch.float64).reshape(1, 1, H, W)
        x0 = mu + 0.4 * torch.randn(N, 1, H, W, generator=gen(4), dtype=torch.float64)
        noise = torch.randn(N, 1, H, W, generator=gen(5), dtype=torch.float64)
        t = 300
        x_t, target = mollified_marginal(x0, noise, AB[t], mollifier, factor)
        residual = flat(target - gaussian_data_eps(x_t, AB[t], mollifier, mu, 0.4, factor))
        assert residual.mean(0).abs().max() < 0.02
        assert cov(residual, flat(x_t)).abs().max() < 0.01
        assert float(residual.var(0).mean()) < 0.8 * float(
            flat(target).var(0).mean()
        )  # it explains something


@pytest.mark.parametrize("factor", [1.0, 0.5, 0.25])
def test_gaussian_data_eps_equals_dense_gaussian_conditioning(factor: float) -> None:
    """E[n | x_t] = C_nx C_xx^{-1} (x_t - sqrt(ab) T mu) with the dense matrices of T and of the noise
    operator L (C_nx = sqrt(1 - ab) L L^T, C_xx = ab s^2 T T^T + (1 - ab) L L^T). (Above 1x, C_xx is too
    ill-conditioned on a 4x5 grid for a dense inverse; there the gain is a scalar anyway.)"""
    mollifier = GaussianMollifier(1.0).scaled(factor)
    tm = matrix(mollifier)
    operator = mollified_noise_operator(mollifier, factor)
    eye = torch.eye(H * W, dtype=torch.float64).reshape(-1, 1, H, W)
    lm = operator(eye).reshape(H * W, -1).T
    ab, std = float(AB[300]), 0.4
    mu = torch.linspace(-0.5, 0.5, H * W, dtype=torch.float64).reshape(1, 1, H, W)
    x_t = torch.randn(3, 1, H, W, generator=gen(12), dtype=torch.float64)
    noise_cov = lm @ lm.T
    gain = math.sqrt(1 - ab) * noise_cov @ torch.linalg.inv(ab * std**2 * tm @ tm.T + (1 - ab) * noise_cov)
    dense = (flat(x_t) - math.sqrt(ab) * (tm @ mu.flatten())) @ gain.T
    torch.testing.assert_close(flat(gaussian_data_eps(x_t, AB[300], mollifier, mu, std, factor)), dense)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("factor", [1.0, 2.0, 0.5])
def test_exact_denoiser_of_one_point_recovers_t_x0(sampler: str, factor: float) -> None:
    """DDIM (eta = 0) and ancestral sampling with the exact denoiser of {x0} end at T x0, at 1x, 2x, 0.5x."""
    size = int(8 * factor)
    mollifier = GaussianMollifier(1.0).scaled(factor)
    x0 = torch.linspace(-1, 1, size, dtype=torch.float64).outer(torch.ones(size, dtype=torch.float64))
    x0 = torch.stack([x0, x0.T]).unsqueeze(0).expand(3, -1, -1, -1)  # [3, 2, size, size]

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        return gaussian_data_eps(x, AB[t], mollifier, x0, 0.0, factor)

    x_T = mollified_initial_state(x0.shape, mollifier, factor, gen(6), dtype=torch.float64)
    timesteps = timestep_subsequence(T_STEPS, 20)
    out = mollified_sample(eps_fn, x_T, AB, timesteps, mollifier, factor, sampler=sampler, generator=gen(7))
    torch.testing.assert_close(out, mollifier(x0), atol=1e-8, rtol=0)


def test_noise_operator_and_errors() -> None:
    with pytest.raises(ValueError, match="std > 0"):
        GaussianMollifier(0.0).folded_multiplier(4, 4)
    white = torch.randn(1, 1, 4, 4, generator=gen(9))  # std = 0: f z, the pixel average of white noise
    torch.testing.assert_close(mollified_noise_operator(GaussianMollifier(0.0), 0.5)(white), 0.5 * white)
    mollifier = GaussianMollifier(1.0).scaled(2.0)
    z = torch.randn(1, 1, 8, 8, generator=gen(8))
    torch.testing.assert_close(mollified_noise_operator(mollifier, 2.0)(z), mollifier(2 * z))
    assert mollified_noise_operator(mollifier) is mollifier
    with pytest.raises(ValueError, match="sampler"):
        mollified_sample(lambda x, t: x, z, AB, [10, 0], mollifier, sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        mollified_marginal(z, z[:, :, :4], 0.5, mollifier)
