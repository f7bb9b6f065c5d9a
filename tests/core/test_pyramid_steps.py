"""DVDP's steps and sampling loop by hand: each step against its formula written with scalars (a shared
``lambda`` makes every component operator a number), ``turning_point_up`` on a schedule whose components
have distinct noise levels, and ``dvdp_sample`` against the loop its docstring describes, draw for draw.

Each test names what a plausible slip breaks: the clip range ``2^k clip_x0``, the noise added on the step to
``t = 0``, a sign of a noise term, the component whose sigma fills a turning point, a setting or the
generator not passed on, a step info field.
"""

from __future__ import annotations

import pytest
import torch

from rezdiff.core.pyramid import (
    DVDPSchedule,
    apply_components,
    complement,
    components,
    dvdp_sample,
    forward_step,
    make_dvdp_schedule,
    marginal,
    reverse_step,
    sampling_timesteps,
    turning_point_up,
    up,
    upsample,
)
from rezdiff.core.sampling import StepInfo
from rezdiff.core.schedules import timestep_subsequence
from tests.helpers import gen

pytestmark = pytest.mark.filterwarnings("ignore:schedule=.linear.:UserWarning")
SMALL = dict(num_steps=20, beta_start=1e-3, beta_end=0.3)


def normal(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def shared(t: int, schedule: DVDPSchedule) -> tuple[float, float]:
    """``(lambda, sigma)`` at ``t`` of a schedule with one lambda for all components (-1: the data)."""
    return (1.0, 0.0) if t < 0 else (float(schedule.lam[0, t]), float(schedule.sigma[0, t]))


@pytest.mark.parametrize("k, t, t_prev", [(0, 6, 3), (1, 14, 9), (1, 9, 8)])
def test_ddim_step_with_clipping_is_the_scalar_formula_on_the_stage_range(
    k: int, t: int, t_prev: int
) -> None:
    """x0 = clamp((x_t - s eps) / l, -2^k c, 2^k c), eps' = (x_t - l x0) / s, x_prev = l' x0 + s' eps'."""
    schedule = make_dvdp_schedule((8,), **SMALL, process="subspace")
    x_t, eps = 3 * normal(2, 1, 4, 4, seed=1), normal(2, 1, 4, 4, seed=2)
    (lam, sig), (lam_p, sig_p), clip = shared(t, schedule), shared(t_prev, schedule), 0.4
    x0 = ((x_t - sig * eps) / lam).clamp(-clip * 2**k, clip * 2**k)
    assert bool((x0.abs() == clip * 2**k).any()) and bool((x0.abs() < clip * 2**k).any())  # clipping acts
    expected = lam_p * x0 + sig_p * (x_t - lam * x0) / sig
    out = reverse_step(x_t, eps, schedule, t, t_prev, k, None, sampler="ddim", clip_x0=clip)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_the_step_to_index_zero_is_noisy_and_only_the_step_to_the_data_is_not() -> None:
    schedule = make_dvdp_schedule((8,), **SMALL, process="subspace")
    x_t, eps, z = normal(2, 1, 4, 4, seed=3), normal(2, 1, 4, 4, seed=4), normal(2, 1, 4, 4, seed=5)
    (lam, sig), (lam_p, sig_p) = shared(1, schedule), shared(0, schedule)
    posterior_std = (sig_p**2 * (sig**2 - (lam / lam_p) ** 2 * sig_p**2) / sig**2) ** 0.5
    noisy = reverse_step(x_t, eps, schedule, 1, 0, 0, z) - reverse_step(x_t, eps, schedule, 1, 0, 0, 0 * z)
    torch.testing.assert_close(noisy, posterior_std * z, rtol=1e-10, atol=0)
    to_data = reverse_step(x_t, eps, schedule, 0, -1, 0, z)
    torch.testing.assert_close(to_data, (x_t - shared(0, schedule)[1] * eps) / shared(0, schedule)[0])


def test_reverse_step_refuses_an_unknown_sampler_and_a_missing_noise_by_name() -> None:
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    x = normal(1, 1, 4, 4, seed=6)
    with pytest.raises(ValueError, match=r"^unknown sampler 'euler'; expected 'ddpm' or 'ddim'$"):
        reverse_step(x, x, schedule, 5, 4, 0, x, sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^reverse_step needs `noise` for a stochastic step$"):
        reverse_step(x, x, schedule, 5, 4, 0, None)


def test_forward_step_adds_its_noise_with_the_kernels_std() -> None:
    """``x_t = r x_prev + q z`` per component with ``q^2 = sigma_t^2 - r^2 sigma_prev^2`` (Eq. 7)."""
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    x_prev, z, t = normal(2, 1, 4, 4, seed=7), normal(2, 1, 4, 4, seed=8), 5
    ratio = schedule.lam[:, t] / schedule.lam[:, t - 1]
    q = (schedule.sigma[:, t] ** 2 - ratio**2 * schedule.sigma[:, t - 1] ** 2).sqrt()
    parts_x, parts_z = components(x_prev, 1), components(z, 1)
    expected = sum(r * c for r, c in zip(ratio, parts_x, strict=True)) + sum(
        s * c for s, c in zip(q, parts_z, strict=True)
    )
    torch.testing.assert_close(forward_step(x_prev, z, schedule, t, 0), expected, rtol=1e-12, atol=1e-12)


def _distinct_noise_schedule() -> DVDPSchedule:
    """Three components whose sigmas differ by a constant factor (each row is a valid Markov chain)."""
    base = make_dvdp_schedule((3, 6), 10, "linear", 1e-3, 0.3, lambda_end=0.05)
    return DVDPSchedule(base.turning_points, base.lam, base.sigma * torch.tensor([[1.0], [0.8], [0.6]]))


@pytest.mark.parametrize("k, t", [(1, 2), (2, 5)])
def test_turning_point_noise_is_the_finer_components_sigma(k: int, t: int) -> None:
    """Eq. 11: ``x^{k-1} = D^T x^k + sigma_{k-1,t} (I - N P) z``, sigma of component ``k - 1`` only."""
    schedule = _distinct_noise_schedule()
    x, z = normal(2, 3, 2, 2, seed=9), normal(2, 3, 4, 4, seed=10)
    expected = up(x) + float(schedule.sigma[k - 1, t]) * complement(z)
    torch.testing.assert_close(turning_point_up(x, schedule, t, k, z), expected, rtol=1e-12, atol=0)


def test_marginal_names_the_stages_a_mixed_batch_spans() -> None:
    schedule = make_dvdp_schedule((8,), **SMALL, lambda_end=0.05)
    x0 = normal(2, 1, 4, 4, seed=11)
    with pytest.raises(
        ValueError, match=r"^all timesteps of one call must lie in one stage, got stages \[0, 1\]$"
    ):
        marginal(x0, x0, schedule, torch.tensor([7, 8]))


def test_a_width_the_pyramid_cannot_halve_is_refused() -> None:
    for fn in (lambda x: components(x, 2), lambda x: apply_components(x, [1.0, 2.0, 3.0])):
        with pytest.raises(ValueError, match=r"got 4x6"):
            fn(torch.zeros(1, 1, 4, 6))
        with pytest.raises(ValueError, match=r"got 6x4"):
            fn(torch.zeros(1, 1, 6, 4))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_sampling_timesteps_are_the_spacings_subsequence_with_every_turning_index(spacing: str) -> None:
    schedule = make_dvdp_schedule((6, 12), **SMALL, lambda_end=0.05)
    sub = set(timestep_subsequence(20, 4, spacing).tolist())  # type: ignore[arg-type]
    assert sampling_timesteps(schedule, 4, spacing) == sorted(sub | {5, 11}, reverse=True)  # type: ignore[arg-type]
    assert sampling_timesteps(schedule, 4) == sorted({19, 14, 9, 4, 5, 11}, reverse=True)  # trailing default


def _by_hand(eps_fn, x_T, schedule, ts, generator, sampler="ddpm", eta=0.0, clip_x0=None, callback=None):
    """The loop of ``dvdp_sample``'s docstring: a step per index, the noise of a stochastic step and then a
    turning point's noise drawn from ``generator`` in that order, the callback's state carried on."""
    x = x_T
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        k = int(schedule.stage_of(t))
        eps = eps_fn(x, torch.full((x.shape[0],), t))
        stochastic = t_prev >= 0 and (sampler == "ddpm" or eta > 0)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) if stochastic else None
        new = reverse_step(x, eps, schedule, t, t_prev, k, noise, sampler=sampler, eta=eta, clip_x0=clip_x0)
        if t_prev >= 0 and int(schedule.stage_of(t_prev)) == k - 1:
            z = torch.randn(upsample(new).shape, generator=generator, dtype=x.dtype)
            new = turning_point_up(new, schedule, t_prev, k, z)
        info = StepInfo(i, t, t_prev if t_prev >= 0 else None, x, new, eps)
        replaced = callback(info) if callback else None
        x = new if replaced is None else replaced
    return x


def _eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A made-up ε-predictor of the state and the step (not an oracle: only the loop is under test)."""
    return 0.3 * x + 0.01 * t.double().reshape(-1, 1, 1, 1) - 0.2


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"sampler": "ddpm", "clip_x0": 0.5},
        {"sampler": "ddim"},
        {"sampler": "ddim", "eta": 0.5, "clip_x0": 0.5},
    ],
)
def test_dvdp_sample_is_its_documented_loop_draw_for_draw(options: dict) -> None:
    schedule = make_dvdp_schedule((6, 12), **SMALL, lambda_end=0.05)
    x_T = 2 * normal(2, 1, 2, 2, seed=12)
    for steps in (None, 5):
        ts = sampling_timesteps(schedule, steps)
        ours = dvdp_sample(_eps, x_T, schedule, ts, generator=gen(13), **options)
        ref = _by_hand(_eps, x_T, schedule, ts, gen(13), **options)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        assert ours.shape == (2, 1, 8, 8)


def test_dvdp_sample_defaults_are_ancestral_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    schedule = make_dvdp_schedule((6,), **SMALL, lambda_end=0.05)
    x_T, ts = normal(2, 1, 4, 4, seed=14), sampling_timesteps(schedule, 6)
    plain = dvdp_sample(_eps, x_T, schedule, ts, generator=gen(15))
    torch.testing.assert_close(plain, _by_hand(_eps, x_T, schedule, ts, gen(15), sampler="ddpm"))
    ddim = dvdp_sample(_eps, x_T, schedule, ts, sampler="ddim", generator=gen(16))  # eta = 0: no step noise
    torch.testing.assert_close(ddim, _by_hand(_eps, x_T, schedule, ts, gen(16), sampler="ddim"))
    assert capsys.readouterr().err == ""
    dvdp_sample(_eps, x_T, schedule, ts, sampler="ddim", progress=True)
    assert "DVDP ddim" in capsys.readouterr().err


def test_dvdp_sample_reports_every_step_and_takes_the_callbacks_state() -> None:
    schedule = make_dvdp_schedule((6,), **SMALL, lambda_end=0.05)
    x_T, ts = normal(1, 1, 4, 4, seed=16), [19, 9, 5, 2, 0]
    seen: list[StepInfo] = []

    def nudge(info: StepInfo) -> torch.Tensor:
        seen.append(info)
        return info.x + 0.1

    out = dvdp_sample(_eps, x_T, schedule, ts, sampler="ddim", generator=gen(17), callback=nudge)
    steps = [(0, 19, 9), (1, 9, 5), (2, 5, 2), (3, 2, 0), (4, 0, None)]
    assert [(s.index, s.t, s.t_next) for s in seen] == steps
    assert [s.x.shape[-1] for s in seen] == [4, 8, 8, 8, 8]  # x after the upsampling at index 5
    assert seen[0].x_t is x_T and torch.equal(seen[1].x_t, seen[0].x + 0.1)
    torch.testing.assert_close(seen[2].eps, _eps(seen[2].x_t, torch.tensor([5])))
    torch.testing.assert_close(out, seen[-1].x + 0.1)
    torch.testing.assert_close(
        out, _by_hand(_eps, x_T, schedule, ts, gen(17), "ddim", callback=lambda i: i.x + 0.1)
    )


def test_the_network_sees_long_timesteps_on_the_states_device() -> None:
    schedule = make_dvdp_schedule((6,), **SMALL, lambda_end=0.05)
    seen: list[torch.Tensor] = []

    class Stop(Exception):
        pass

    def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        raise Stop

    with pytest.raises(Stop):
        dvdp_sample(network, torch.zeros(3, 1, 2, 2, device="meta"), schedule, [19, 5])
    assert seen[0].dtype == torch.long and seen[0].device.type == "meta" and seen[0].shape == (3,)
    with pytest.raises(Stop):
        dvdp_sample(network, torch.zeros(3, 1, 2, 2), schedule, [19, 5])
    assert seen[1].tolist() == [19, 19, 19]
