"""The DDIM and ancestral loops against their steps written out by hand, every setting forwarded; the
loops' defaults; and what the VP loop must not do (skip a grid check, call the network twice at a point,
draw noise on the ODE)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import Tensor

from rezdiff.core import (
    ddim_step,
    ddpm_step,
    vp_heun_step,
    vp_integrate,
    vp_ode_drift,
    vp_reverse_step,
    vp_sample,
)
from rezdiff.core.loops import ddim_sample, ddpm_sample
from rezdiff.core.sampling import StepInfo
from rezdiff.core.schedules import vp_beta

ALPHAS_CUMPROD = torch.linspace(0.98, 0.02, 10, dtype=torch.float64)
TIMESTEPS = [9, 6, 4, 1]


def toy_eps(x: Tensor, t: Tensor) -> Tensor:
    """A fixed, timestep-dependent, non-linear stand-in for a network."""
    assert t.dtype == torch.long
    return torch.tanh(x) * (1 + t.to(x.dtype).view(-1, 1, 1) / 10)


def mix(z: Tensor) -> Tensor:
    """A noise operator that is not the identity (it mixes the last axis)."""
    return z + 0.5 * z.roll(1, dims=-1)


def run_with_record(loop, **settings) -> tuple[Tensor, list[StepInfo]]:  # noqa: ANN001
    seen: list[StepInfo] = []

    def callback(info: StepInfo) -> None:
        seen.append(info)

    x_T = 3 * torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = loop(toy_eps, x_T, ALPHAS_CUMPROD, callback=callback, **settings)
    return out, seen


LOOPS = {  # loop, its step, settings that all differ from the loop's defaults, noise drawn at the last step
    "ddim": (ddim_sample, ddim_step, {"eta": 0.7, "clip_x0": 1.0, "eps_after_clip": "from_x0"}, True),
    "ddpm": (ddpm_sample, ddpm_step, {"variance": "large", "clip_x0": 1.0}, False),
}


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_gaussian_loop_is_its_steps_with_every_setting(kind: str) -> None:
    """Every setting (with the noise operator) reaches every step (x_T is large, so clipping acts and DDIM's
    "from_x0" differs from "network"), noise is drawn in order from the generator, and the callback sees
    the network's eps of that step; each setting, left at its default, changes the result."""
    loop, step, settings, noise_at_last = LOOPS[kind]
    settings = {**settings, "noise_operator": mix}
    out, seen = run_with_record(
        loop, timesteps=TIMESTEPS, generator=torch.Generator().manual_seed(3), **settings
    )
    generator = torch.Generator().manual_seed(3)
    x = seen[0].x_t
    for i, t in enumerate(TIMESTEPS):
        eps = toy_eps(x, torch.full((2,), t))
        last = i + 1 == len(TIMESTEPS)
        prev = 1.0 if last else ALPHAS_CUMPROD[TIMESTEPS[i + 1]]
        draw = noise_at_last or not last
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) if draw else None
        x_new = step(x, eps, ALPHAS_CUMPROD[t], prev, noise, **settings)
        assert (seen[i].index, seen[i].t) == (i, t)
        torch.testing.assert_close(seen[i].eps, eps, rtol=0, atol=0)
        torch.testing.assert_close(seen[i].x, x_new, rtol=0, atol=0)
        x = x_new
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    for name in settings:
        other = {k: v for k, v in settings.items() if k != name}
        changed, _ = run_with_record(
            loop, timesteps=TIMESTEPS, generator=torch.Generator().manual_seed(3), **other
        )
        assert not torch.allclose(changed, out), name


def test_loop_defaults_are_the_papers() -> None:
    """DDIM's default is Song et al.'s deterministic eta = 0; every VP function's beta range is Song et al.
    (2021)'s (0.1, 20), the same as the schedule's. Checked by calling (a signature can hide a default that
    a wrapper does not pass on)."""
    x = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    defaults = ddim_sample(toy_eps, x, ALPHAS_CUMPROD, TIMESTEPS)
    torch.testing.assert_close(
        defaults, ddim_sample(toy_eps, x, ALPHAS_CUMPROD, TIMESTEPS, eta=0.0), rtol=0, atol=0
    )
    schedule = inspect.signature(vp_beta).parameters
    assert (schedule["beta_min"].default, schedule["beta_max"].default) == (0.1, 20.0)
    paper = {"beta_min": 0.1, "beta_max": 20.0}

    def eps(y: Tensor, t: Tensor) -> Tensor:
        return torch.tanh(y)

    grid = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    calls = {
        "vp_integrate": lambda **kw: vp_integrate(eps, x, grid, ode=True, solver="heun", **kw),
        "vp_sample": lambda **kw: vp_sample(eps, x, 3, ode=True, **kw),
        "vp_heun_step": lambda **kw: vp_heun_step(eps, x, 0.9, 0.5, **kw),
        "vp_reverse_step": lambda **kw: vp_reverse_step(x, eps(x, x), 0.9, 0.5, ode=True, **kw),
        "vp_ode_drift": lambda **kw: vp_ode_drift(x, eps(x, x), 0.9, **kw),
    }
    for name, call in calls.items():
        torch.testing.assert_close(call(), call(**paper), rtol=0, atol=0, msg=name)
        assert not torch.allclose(call(), call(beta_min=0.2, beta_max=20.0)), name  # the range matters


def test_vp_grid_must_decrease_at_every_step() -> None:
    """A grid that goes back up once is refused, even when every point stays below the first."""
    grid = torch.tensor([1.0, 0.2, 0.5, 0.1], dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        vp_integrate(lambda x, t: x, torch.zeros(1, 2), grid)


def test_vp_heun_calls_the_network_twice_per_step_and_the_ode_draws_no_noise() -> None:
    calls: list[float] = []

    def counting_eps(x: Tensor, t: Tensor) -> Tensor:
        calls.append(float(t[0]))
        return 0.5 * x

    x_T = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    vp_sample(counting_eps, x_T, 4, ode=True, solver="heun")
    assert len(calls) == 8  # one at t (shared with the callback's eps), one at the predicted t_next
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    vp_sample(counting_eps, x_T, 4, ode=True, generator=generator)
    assert torch.equal(generator.get_state(), state)


def test_the_network_gets_its_times_on_the_state_device() -> None:
    """On a GPU a time tensor left on the CPU fails or copies every step; the meta device shows it here."""

    def eps_on_device(x: Tensor, t: Tensor) -> Tensor:
        assert t.device == x.device and t.shape == (x.shape[0],), (t.device, t.shape)
        return 0.5 * x

    x = torch.zeros(2, 3, device="meta", dtype=torch.float64)
    assert vp_heun_step(eps_on_device, x, 0.9, 0.5).device == x.device
    assert vp_sample(eps_on_device, x, 2, ode=True, solver="heun").device == x.device
    assert ddim_sample(eps_on_device, x, ALPHAS_CUMPROD, TIMESTEPS).device == x.device
