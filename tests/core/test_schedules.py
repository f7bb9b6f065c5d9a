"""Schedules against diffusers (the reference implementation) and against numerical integration."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy.integrate import quad

from rezdiff.core import (
    alphas_cumprod,
    cosine_alpha_bar,
    cosine_betas,
    linear_betas,
    make_betas,
    timestep_subsequence,
    vp_alpha_bar,
    vp_beta,
    vp_integrated_beta,
    vp_marginal,
)
from rezdiff.core.schedules import TERMINAL_SIGNAL


@pytest.mark.parametrize("num_steps", [1000, 250])
@pytest.mark.parametrize(("kind", "diffusers_kind"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_betas_match_diffusers(kind: str, diffusers_kind: str, num_steps: int) -> None:
    ref = DDPMScheduler(num_train_timesteps=num_steps, beta_schedule=diffusers_kind)
    betas = make_betas(kind, num_steps)
    assert betas.dtype == torch.float64 and betas.shape == (num_steps,)
    # diffusers keeps float32: agreement to float32 precision, relative to each value.
    torch.testing.assert_close(betas.float(), ref.betas, rtol=2e-6, atol=1e-9)
    acp = alphas_cumprod(betas)
    assert acp.dtype == torch.float64
    torch.testing.assert_close(acp.float(), ref.alphas_cumprod, rtol=2e-5, atol=1e-9)


def test_linear_betas_custom_range() -> None:
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0015, beta_end=0.0195)
    torch.testing.assert_close(linear_betas(1000, 0.0015, 0.0195).float(), ref.betas, rtol=1e-6, atol=0)


def test_cosine_betas_are_clipped_and_consistent_with_alpha_bar() -> None:
    betas = cosine_betas(1000)
    assert betas.max().item() == pytest.approx(0.999)
    assert betas.min().item() > 0
    acp = alphas_cumprod(betas)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    unclipped = betas < 0.999
    torch.testing.assert_close(acp[unclipped], cosine_alpha_bar(t)[unclipped], rtol=1e-10, atol=1e-15)
    assert cosine_alpha_bar(0.0).item() == 1.0
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("sigmoid", 10)  # type: ignore[arg-type]


def test_a_schedule_that_leaves_data_in_its_last_step_warns_with_the_settings_and_the_fix() -> None:
    """DDPM's linear betas over 200 steps keep sqrt(alpha_bar) = 0.36 of the data where sampling starts
    from pure noise (the notebook's first DDPM trained so and drew blobs); the paper's 1000 steps, LDM's
    range and the cosine schedule do not warn."""
    with pytest.warns(UserWarning) as record:
        make_betas("linear", 200)
    assert str(record[0].message) == (
        "schedule='linear' with num_train_steps=200, beta_end=0.02 keeps 0.36 of the data at the last step "
        "(sqrt(alpha_bar)), but sampling starts from pure noise: use schedule='cosine', more steps (1000) or "
        "a larger beta_end"
    )
    levels: list[object] = []  # reported at the caller's line (stacklevel 2), not inside rezdiff
    real_warn = warnings.warn
    warnings.warn = lambda *args, **kwargs: (
        levels.append(kwargs.get("stacklevel")) or real_warn(*args, **kwargs)
    )
    try:
        with pytest.warns(UserWarning):
            make_betas("linear", 200)
    finally:
        warnings.warn = real_warn
    assert levels == [2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_betas("linear", 1000)
        make_betas("linear", 1000, 0.0015, 0.0195)
        make_betas("cosine", 20)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_subsequence_matches_diffusers_for_every_n(spacing: str) -> None:
    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    extra = []
    for n in range(1, 1001):
        ours = timestep_subsequence(1000, n, spacing)  # type: ignore[arg-type]
        ref.set_timesteps(n)
        theirs = ref.timesteps
        assert ours.dtype == torch.long and ours.shape == (n,)
        assert torch.equal(ours, theirs[:n]), (spacing, n)
        if len(theirs) != n:
            # diffusers' "trailing" rounding bug: one extra timestep, -1 (see timestep_subsequence).
            assert spacing == "trailing" and len(theirs) == n + 1 and theirs[-1] == -1
            extra.append(n)
        assert torch.all(ours[:-1] > ours[1:]) and ours.min() >= 0 and ours.max() <= 999
    if spacing == "trailing":
        assert 61 in extra  # documents the known difference; we always return n steps


@pytest.mark.parametrize("num_train", [500, 4000])
@pytest.mark.parametrize("n", [1, 7, 48, 50, 100, 333])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_subsequence_other_lengths_and_ddpm(num_train: int, n: int, spacing: str) -> None:
    for cls in (DDIMScheduler, DDPMScheduler):
        ref = cls(num_train_timesteps=num_train, timestep_spacing=spacing)
        ref.set_timesteps(n)
        assert torch.equal(timestep_subsequence(num_train, n, spacing), ref.timesteps[:n])  # type: ignore[arg-type]


def test_timestep_subsequence_examples_and_offset() -> None:
    assert timestep_subsequence(1000, 1000).tolist() == list(range(999, -1, -1))
    assert timestep_subsequence(1000, 4, "leading").tolist() == [750, 500, 250, 0]
    assert timestep_subsequence(1000, 4, "trailing").tolist() == [999, 749, 499, 249]
    assert timestep_subsequence(1000, 4, "linspace").tolist() == [999, 666, 333, 0]
    ref = DDIMScheduler(num_train_timesteps=1000, steps_offset=1)
    ref.set_timesteps(50)
    assert torch.equal(timestep_subsequence(1000, 50, "leading", offset=1), ref.timesteps)
    with pytest.raises(ValueError):
        timestep_subsequence(1000, 1001)
    with pytest.raises(ValueError):
        timestep_subsequence(1000, 10, "uniform")  # type: ignore[arg-type]


@pytest.mark.parametrize(("beta_min", "beta_max"), [(0.1, 20.0), (0.5, 5.0)])
def test_vp_marginal_matches_numerical_integration(beta_min: float, beta_max: float) -> None:
    ts = [1e-4, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0]
    mean, std = vp_marginal(torch.tensor(ts, dtype=torch.float64), beta_min, beta_max)
    for i, t in enumerate(ts):
        integral, _ = quad(lambda s: vp_beta(s, beta_min, beta_max).item(), 0.0, t)
        assert mean[i].item() == pytest.approx(math.exp(-0.5 * integral), rel=1e-12)
        assert std[i].item() ** 2 == pytest.approx(1 - math.exp(-integral), rel=1e-10)
        assert vp_alpha_bar(t, beta_min, beta_max).item() == pytest.approx(math.exp(-integral), rel=1e-12)
    # the closed form quoted for the multilevel paper
    t = torch.tensor(0.3, dtype=torch.float64)
    m, _ = vp_marginal(t)
    assert m.item() == pytest.approx(math.exp(-0.25 * 19.9 * 0.09 - 0.05 * 0.3), rel=1e-14)
    assert mean.dtype == std.dtype == torch.float64


def test_vp_marginal_is_a_solution_of_the_sde_moments() -> None:
    """d/dt mean = -beta/2 mean and d/dt var = beta (1 - var): check by finite differences."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    m0, s0 = vp_marginal(t)
    m1, s1 = vp_marginal(t + h)
    m_1, s_1 = vp_marginal(t - h)
    dm = (m1 - m_1) / (2 * h)
    dv = (s1**2 - s_1**2) / (2 * h)
    torch.testing.assert_close(dm, -0.5 * vp_beta(t) * m0, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dv, vp_beta(t) * (1 - s0**2), rtol=1e-6, atol=1e-8)


def test_vp_defaults_are_song_et_al_beta_min_0_1_and_beta_max_20() -> None:
    """Every VP function defaults to the VP SDE of Song et al. (2021): beta(t) = 0.1 + 19.9 t."""
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    integral = 0.1 * t + 0.5 * 19.9 * t**2
    torch.testing.assert_close(vp_beta(t), 0.1 + 19.9 * t, rtol=1e-15, atol=0)
    torch.testing.assert_close(vp_integrated_beta(t), integral, rtol=1e-15, atol=0)
    torch.testing.assert_close(vp_alpha_bar(t), torch.exp(-integral), rtol=1e-14, atol=0)
    mean, std = vp_marginal(t)
    torch.testing.assert_close(mean, torch.exp(-0.5 * integral), rtol=1e-14, atol=0)
    torch.testing.assert_close(std[1:], torch.sqrt(1 - torch.exp(-integral[1:])), rtol=1e-14, atol=0)


def test_cosine_offset_reaches_the_betas_and_one_step_is_a_schedule() -> None:
    """``s`` is the schedule's offset (Nichol & Dhariwal's Eq. 17) all the way down; a one-step schedule
    exists; fewer steps are named."""
    s = 0.05
    f = [math.cos((i / 10 + s) / (1 + s) * math.pi / 2) ** 2 for i in range(11)]
    by_hand = torch.tensor([1 - f[i + 1] / f[i] for i in range(10)], dtype=torch.float64).clamp(max=0.999)
    torch.testing.assert_close(cosine_betas(10, s=s), by_hand)
    assert cosine_betas(1).shape == (1,) and linear_betas(1).shape == (1,)
    for betas in (cosine_betas, linear_betas):
        with pytest.raises(ValueError) as error:
            betas(0)
        assert str(error.value) == "num_steps must be >= 1, got 0"
    with pytest.raises(ValueError) as error:
        timestep_subsequence(100, 101)
    assert str(error.value) == "num_steps must be in [1, 100], got 101"
    with pytest.raises(ValueError) as error:
        timestep_subsequence(100, 10, "middle")  # type: ignore[arg-type]
    assert (
        str(error.value) == "unknown timestep spacing 'middle'; expected 'leading', 'trailing' or 'linspace'"
    )


def test_linear_betas_defaults_and_make_betas_passes_its_range_on() -> None:
    """DDPM's defaults 1e-4 to 0.02; ``make_betas("linear", ...)`` uses the range it is given."""
    torch.testing.assert_close(linear_betas(10), torch.linspace(1e-4, 0.02, 10, dtype=torch.float64))
    torch.testing.assert_close(
        make_betas("linear", 1000, 1e-3, 0.05), torch.linspace(1e-3, 0.05, 1000, dtype=torch.float64)
    )


def test_schedule_arithmetic_is_float64_except_on_mps() -> None:
    """Schedules are computed in double precision from float32 inputs; a tensor on MPS (no float64 there)
    becomes float32 instead. A tensor that reports the MPS device stands in for one."""
    from rezdiff.core.schedules import as_f64

    class OnMPS(torch.Tensor):
        @property
        def device(self) -> torch.device:  # type: ignore[override]
            return torch.device("mps")

    assert as_f64(torch.ones(2)).dtype == torch.float64 and as_f64(0.5).dtype == torch.float64
    assert as_f64(torch.ones(2).as_subclass(OnMPS)).dtype == torch.float32
    assert alphas_cumprod(torch.full((3,), 0.1)).dtype == torch.float64


def test_a_schedule_keeping_exactly_the_terminal_signal_does_not_warn() -> None:
    """The warning is for *more* than ``TERMINAL_SIGNAL`` left at ``T - 1``: two betas chosen so that
    ``sqrt(alpha_bar_1)`` is the float 0.05 exactly (found by search) sit on the bound and stay quiet."""
    betas = (0.5297, 0.994684244099511)
    signal = alphas_cumprod(torch.tensor(betas, dtype=torch.float64))[-1].sqrt().item()
    assert signal == TERMINAL_SIGNAL == 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_betas("linear", 2, *betas)
    with pytest.warns(UserWarning, match="keeps 0.05 of the data"):
        make_betas("linear", 2, betas[0], math.nextafter(betas[1], 0.0))  # a hair more signal
