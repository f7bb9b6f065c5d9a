"""DVDP mathematics: the pooling pyramid, attenuated schedules, forward marginals and reverse steps."""

from __future__ import annotations

import pytest
import torch

from rezdiff.core.gaussian import q_sample
from rezdiff.core.pyramid import (
    DVDPSchedule,
    apply_components,
    complement,
    components,
    down,
    dvdp_sample,
    forward_step,
    make_dvdp_schedule,
    marginal,
    pool,
    reverse_step,
    sampling_timesteps,
    stage_data,
    turning_point_up,
    up,
    upsample,
)
from rezdiff.core.schedules import alphas_cumprod, make_betas
from tests.helpers import gen

SMALL = dict(num_steps=20, beta_start=1e-3, beta_end=0.3)  # a short schedule that still reaches noise


def operator_matrix(fn, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map on images of ``shape`` (columns = images of the basis vectors)."""
    d = int(torch.tensor(shape).prod())
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return fn(basis).reshape(d, -1).T


@pytest.mark.parametrize("levels, size", [(0, (4, 6)), (1, (4, 6)), (2, (8, 12)), (3, (16, 8))])
def test_components_are_orthogonal_and_sum_to_x(levels: int, size: tuple[int, int]) -> None:
    x = torch.randn(3, 2, *size, generator=gen(), dtype=torch.float64)
    parts = components(x, levels)
    assert len(parts) == levels + 1
    torch.testing.assert_close(sum(parts), x)
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            inner = (parts[i] * parts[j]).sum(dim=(1, 2, 3))
            torch.testing.assert_close(inner, torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    coeffs = [0.5, -2.0, 3.0, 0.1][: levels + 1]
    torch.testing.assert_close(
        apply_components(x, coeffs), sum(c * p for c, p in zip(coeffs, parts, strict=True))
    )


def test_pool_upsample_identities_and_adjoints() -> None:
    x = torch.randn(2, 3, 8, 8, generator=gen(1), dtype=torch.float64)
    y = torch.randn(2, 3, 4, 4, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(pool(upsample(y)), y)  # P N = I
    torch.testing.assert_close((upsample(y) * x).sum(), (y * 4 * pool(x)).sum())  # N^T = 4 P
    torch.testing.assert_close((up(y) * x).sum(), (y * down(x)).sum())  # D^T is D's adjoint
    torch.testing.assert_close(down(up(y)), y)  # D D^T = I
    projector = operator_matrix(lambda v: upsample(pool(v)), (1, 4, 4))
    torch.testing.assert_close(projector, projector.T)
    torch.testing.assert_close(projector @ projector, projector)
    with pytest.raises(ValueError, match="divisible by 2\\^2"):
        components(torch.zeros(1, 1, 6, 8), 2)


def test_schedule_attenuates_each_component_by_its_turning_point() -> None:
    schedule = make_dvdp_schedule((300, 600), lambda_end=1e-3)
    base = alphas_cumprod(make_betas("linear", 1000)).sqrt()
    torch.testing.assert_close(schedule.lam[2], base)
    assert abs(float(schedule.lam[0, 299]) - 1e-3) < 1e-9 and abs(float(schedule.lam[1, 599]) - 1e-3) < 1e-9
    assert bool((schedule.lam[:2] <= base + 1e-12).all())
    torch.testing.assert_close(schedule.sigma[0], (1 - base**2).sqrt())
    assert schedule.stage_of(torch.tensor([0, 299, 300, 599, 600, 999])).tolist() == [0, 0, 1, 1, 2, 2]
    cosine = make_dvdp_schedule((600,), schedule="cosine", lambda_end=1e-2)
    assert abs(float(cosine.lam[0, 599]) - 1e-2) < 1e-9


def test_markov_validity_is_checked_at_construction() -> None:
    good = make_dvdp_schedule((10,), **SMALL, lambda_end=0.05)
    sigma = good.sigma.clone()
    sigma[0, 12] = 0.5 * sigma[0, 11]  # noise falls while the signal is barely attenuated
    with pytest.raises(ValueError, match="Markov"):
        DVDPSchedule(good.turning_points, good.lam, sigma)
    with pytest.raises(ValueError, match="lambda_end"):
        make_dvdp_schedule((10,), **SMALL, lambda_end=0.99)
    with pytest.raises(ValueError, match="strictly increasing"):
        DVDPSchedule((10, 5), good.lam.repeat(3, 1)[:3], good.sigma.repeat(3, 1)[:3])


def test_chained_one_step_transitions_reproduce_the_closed_form_marginals() -> None:
    """Forward Markov chain through a turning point vs Eq. 6, Monte-Carlo mean and covariance."""
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    x0 = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    n, g = 40000, gen(3)
    x = x0.expand(n, -1, -1, -1)
    for t in range(0, 13):  # indices 0..12: stage 0 up to 7, downsample, stage 1 from 8
        k = int(schedule.stage_of(t))
        if t == 8:
            x = down(x)
        x = forward_step(x, torch.randn(x.shape, generator=g, dtype=torch.float64), schedule, t, k)
    lam, sig = schedule.at(12, 1)
    mean = apply_components(stage_data(x0, 1), lam)
    cov = operator_matrix(lambda v: apply_components(v, [s**2 for s in sig]), (1, 2, 2))
    flat = x.reshape(n, -1)
    torch.testing.assert_close(flat.mean(0), mean.reshape(-1), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(flat.T), cov, atol=0.03, rtol=0)
    direct = marginal(
        x0.expand(n, -1, -1, -1), torch.randn(n, 1, 2, 2, generator=g, dtype=torch.float64), schedule, 12
    )
    torch.testing.assert_close(direct.reshape(n, -1).mean(0), mean.reshape(-1), atol=0.03, rtol=0)


def test_turning_point_noise_law_is_exact() -> None:
    """``N P (sigma eps) + sigma (I - N P) z ~ N(0, sigma^2 I)``: exactly, and by MC."""
    sigma = 0.7
    exact = operator_matrix(upsample, (1, 2, 2)) @ operator_matrix(pool, (1, 4, 4))
    cov = (
        sigma**2 * exact @ exact.T
        + sigma**2
        * (torch.eye(16, dtype=torch.float64) - exact)
        @ (torch.eye(16, dtype=torch.float64) - exact).T
    )
    torch.testing.assert_close(cov, sigma**2 * torch.eye(16, dtype=torch.float64))
    n, g = 40000, gen(4)
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    sigma_t = float(schedule.sigma[0, 7])
    eps = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    x = turning_point_up(
        down(sigma_t * eps), schedule, 7, 1, torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    )
    torch.testing.assert_close(
        torch.cov(x.reshape(n, -1).T), sigma_t**2 * torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0
    )
    torch.testing.assert_close(complement(complement(eps)), complement(eps))


def test_subspace_process_is_ddpm_per_stage() -> None:
    schedule = make_dvdp_schedule((8,), **SMALL, process="subspace")
    alpha_bar = alphas_cumprod(make_betas("linear", 20, 1e-3, 0.3))
    assert torch.equal(schedule.lam[0], schedule.lam[1])
    x0 = torch.randn(2, 3, 8, 8, generator=gen(5), dtype=torch.float64)
    noise = torch.randn(2, 3, 8, 8, generator=gen(6), dtype=torch.float64)
    torch.testing.assert_close(marginal(x0, noise, schedule, 5), q_sample(x0, noise, alpha_bar[5]))
    torch.testing.assert_close(
        marginal(x0, down(noise), schedule, 12), down(q_sample(x0, noise, alpha_bar[12]))
    )


def test_reverse_steps_are_consistent_with_the_forward_process() -> None:
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    x0 = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    n, g = 40000, gen(7)
    for t, t_prev, k in ((6, 3, 0), (15, 11, 1), (4, -1, 0)):
        shape = (n, 1, 4 // 2**k, 4 // 2**k)
        eps = torch.randn(shape, generator=g, dtype=torch.float64)
        x_t = marginal(x0.expand(n, -1, -1, -1), eps, schedule, t)
        # DDIM (eta = 0) with the true noise lands exactly on the same trajectory.
        ddim = reverse_step(x_t, eps, schedule, t, t_prev, k, None, sampler="ddim")
        torch.testing.assert_close(
            ddim,
            marginal(x0.expand(n, -1, -1, -1), eps, schedule, t_prev)
            if t_prev >= 0
            else stage_data(x0, k).expand(n, -1, -1, -1),
        )
        # Ancestral posterior steps from q(x_t | x0) give q(x_prev | x0): mean and covariance.
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        prev = reverse_step(x_t, eps, schedule, t, t_prev, k, z, sampler="ddpm").reshape(n, -1)
        lam, sig = schedule.at(t_prev, k)
        torch.testing.assert_close(
            prev.mean(0), apply_components(stage_data(x0, k), lam).reshape(-1), atol=0.03, rtol=0
        )
        var = float(sig[0] ** 2)
        torch.testing.assert_close(
            torch.cov(prev.T), var * torch.eye(prev.shape[1], dtype=torch.float64), atol=0.03, rtol=0
        )


def test_sampler_visits_turning_points_and_returns_full_resolution() -> None:
    schedule = make_dvdp_schedule((6, 12), **SMALL, lambda_end=0.05)
    ts = sampling_timesteps(schedule, 4)
    assert {5, 11} <= set(ts) and ts == sorted(ts, reverse=True)
    assert sampling_timesteps(schedule, None) == list(range(19, -1, -1))
    for sampler in ("ddpm", "ddim"):
        out = dvdp_sample(
            lambda x, t: torch.zeros_like(x),
            torch.randn(2, 3, 2, 2, generator=gen(8)),
            schedule,
            ts,
            sampler=sampler,
            generator=gen(9),
        )
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="turning index"):
        dvdp_sample(lambda x, t: torch.zeros_like(x), torch.randn(1, 1, 2, 2), schedule, [19, 10, 0])


def _gaussian_kl(cov_q: torch.Tensor, cov_p: torch.Tensor) -> float:
    d = cov_q.shape[0]
    inv_p = torch.linalg.inv(cov_p)
    return 0.5 * float(torch.trace(inv_p @ cov_q) - d + torch.logdet(cov_p) - torch.logdet(cov_q))


def _turning_point_kl(schedule: DVDPSchedule, data_cov: torch.Tensor) -> float:
    """KL(q(x_T1^0) || p(x_T1^0)) on zero-mean Gaussian data, p from the reverse turning step (Eq. 11)."""
    t = schedule.turning_points[0] - 1
    lam, sig = schedule.at(t, 0)
    shape = (1, 4, 4)
    a = operator_matrix(lambda v: apply_components(v, lam), shape)
    s = operator_matrix(lambda v: apply_components(v, [x**2 for x in sig]), shape)
    cov_q = a @ data_cov @ a.T + s
    proj = operator_matrix(lambda v: up(down(v)), shape)
    sig0 = float(sig[0])
    cov_p = proj @ cov_q @ proj.T + sig0**2 * (torch.eye(16, dtype=torch.float64) - proj)
    return _gaussian_kl(cov_q, cov_p)


def test_turning_point_error_vanishes_as_lambda_goes_to_zero() -> None:
    """Theorem 1, empirically: the error of Eq. 11 shrinks with lambda at T_1; subspace's is larger."""
    coords = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(
        -1, 2
    )
    data_cov = (
        0.3 * torch.exp(-(torch.cdist(coords, coords) ** 2) / 4).double() + 0.05 * torch.eye(16).double()
    )
    kls = [
        _turning_point_kl(make_dvdp_schedule((8,), **SMALL, lambda_end=e), data_cov)
        for e in (0.2, 0.1, 0.03, 0.01, 0.001)
    ]
    assert all(a > b for a, b in zip(kls, kls[1:], strict=False)), kls
    assert kls[-1] < 1e-4 * kls[0] + 1e-8, kls
    subspace = _turning_point_kl(make_dvdp_schedule((8,), **SMALL, process="subspace"), data_cov)
    assert subspace > kls[1], (subspace, kls)


@pytest.mark.parametrize("process", ["dvdp", "subspace"])
@pytest.mark.parametrize("sampler, steps", [("ddim", 50), ("ddpm", None)])
def test_sampler_with_the_exact_denoiser_of_one_image_returns_it(
    process: str, sampler: str, steps: int | None
) -> None:
    """For a one-point data set the optimal ε is known in closed form; both samplers must land on the point
    (the turning-point step loses nothing here because the attenuated component is reconstructed later)."""
    schedule = make_dvdp_schedule((300, 600), 1000, "cosine", process=process)
    target = torch.rand(1, 3, 8, 8, generator=gen(10), dtype=torch.float64) * 2 - 1

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = int(schedule.stage_of(t[0]))
        lam, sig = schedule.at(t, k)
        data = stage_data(target, k).expand(len(t), -1, -1, -1)
        return apply_components(x - apply_components(data, lam), [1 / s for s in sig])

    x_T = torch.randn(2, 3, 2, 2, generator=gen(11), dtype=torch.float64)
    out = dvdp_sample(
        oracle,
        x_T,
        schedule,
        sampling_timesteps(schedule, steps),
        sampler=sampler,
        clip_x0=1.0,
        generator=gen(12),
    )
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1), atol=1e-6, rtol=0)


def test_reverse_step_is_the_exact_gaussian_posterior() -> None:
    """Eq. 10 with the true x0 equals q(x_prev | x_t, x0) computed by dense Gaussian conditioning."""
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    shape, t, t_prev = (1, 4, 4), 6, 3
    x0 = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, *shape)
    x_t = torch.randn(1, *shape, generator=gen(13), dtype=torch.float64)
    lam, sig = schedule.at(t, 0)
    lam_p, sig_p = schedule.at(t_prev, 0)
    matrix = lambda coeffs: operator_matrix(lambda v: apply_components(v, coeffs), shape)  # noqa: E731
    # Joint law: x_prev = A' x0 + S' e',  x_t = A x0 + S e,  Cov(x_t, x_prev) = S'^2 R with R = A A'^-1.
    a, a_p, s2, s2_p = matrix(lam), matrix(lam_p), matrix([s**2 for s in sig]), matrix([s**2 for s in sig_p])
    cross = s2_p @ a @ torch.linalg.inv(a_p)
    gain = cross @ torch.linalg.inv(s2)
    mean = a_p @ x0.reshape(-1) + gain @ (x_t.reshape(-1) - a @ x0.reshape(-1))
    cov = s2_p - gain @ cross.T
    eps = apply_components(x_t - apply_components(x0, lam), [1 / s for s in sig])  # the true noise
    step = lambda z: reverse_step(x_t, eps, schedule, t, t_prev, 0, z)  # noqa: E731  (affine in z)
    without_noise = step(torch.zeros(1, *shape, dtype=torch.float64))
    torch.testing.assert_close(without_noise.reshape(-1), mean)
    noise_map = operator_matrix(lambda z: step(z) - without_noise, shape)
    torch.testing.assert_close(noise_map @ noise_map.T, cov)
    assert float(torch.linalg.matrix_norm(cov - torch.diag(torch.diagonal(cov)))) > 1e-3  # not trivially iid


@pytest.mark.parametrize("sampler, eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5)])
def test_shared_schedule_reverse_step_is_the_platform_step(sampler: str, eta: float) -> None:
    """With one lambda for all components the per-component step is DDPM/DDIM (tested against diffusers)."""
    from rezdiff.core.gaussian import ddim_step, ddpm_step

    schedule = make_dvdp_schedule((8,), **SMALL, process="subspace")
    alpha_bar = alphas_cumprod(make_betas("linear", 20, 1e-3, 0.3))
    x_t, eps, z = (torch.randn(2, 3, 8, 8, generator=gen(20 + i), dtype=torch.float64) for i in range(3))
    for t, t_prev in ((7, 4), (5, 4), (3, -1)):
        ab_prev = alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        ours = reverse_step(x_t, eps, schedule, t, t_prev, 0, z, sampler=sampler, eta=eta)
        if sampler == "ddpm":
            ref = ddpm_step(x_t, eps, alpha_bar[t], ab_prev, z if t_prev >= 0 else None)
        else:
            ref = ddim_step(x_t, eps, alpha_bar[t], ab_prev, z, eta=eta)
        torch.testing.assert_close(ours, ref)
