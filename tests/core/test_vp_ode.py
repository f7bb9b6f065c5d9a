"""The probability-flow ODE solvers against the exact flow of a Gaussian: Euler is 1st order, Heun 2nd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from rezdiff.core import vp_heun_step, vp_integrate, vp_marginal, vp_ode_drift, vp_reverse_step, vp_sample
from rezdiff.core.sampling import StepInfo, seed_generators

DATA_STD = 0.3  # x_0 ~ N(0, DATA_STD^2 I): then eps(x_t, t) is linear in x_t and the ODE flow is known


def exact_eps(x: Tensor, t: Tensor) -> Tensor:
    """E[eps | x_t] for x_t = m x_0 + std eps and Gaussian data: std / (m^2 s^2 + std^2) x_t."""
    mean, std = vp_marginal(t.to(torch.float64))
    ratio = std / (mean**2 * DATA_STD**2 + std**2)
    return ratio.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) * x


def marginal_std(t: float) -> float:
    mean, std = vp_marginal(t)
    return float((mean**2 * DATA_STD**2 + std**2).sqrt())


def ode_error(steps: int, solver: str) -> float:
    x_T = torch.linspace(-2, 2, 8, dtype=torch.float64).view(8, 1)
    out = vp_sample(exact_eps, x_T, steps, t_min=0.05, ode=True, solver=solver)
    exact = x_T * marginal_std(0.05) / marginal_std(1.0)  # the flow only rescales a centred Gaussian
    return float((out - exact).abs().max())


def test_drift_is_minus_the_euler_increment() -> None:
    x, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    step = vp_reverse_step(x, eps, 0.6, 0.55, ode=True)
    torch.testing.assert_close(step, x - 0.05 * vp_ode_drift(x, eps, 0.6))


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2)])
def test_convergence_order_on_a_gaussian(solver: str, order: int) -> None:
    coarse, fine = ode_error(40, solver), ode_error(80, solver)
    assert coarse / fine == pytest.approx(2**order, rel=0.25), (coarse, fine)


def test_heun_beats_euler_at_the_same_number_of_network_calls() -> None:
    assert ode_error(80, "heun") < 0.5 * ode_error(160, "euler")  # 160 evaluations each


def test_heun_step_reuses_a_given_first_evaluation() -> None:
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    calls: list[float] = []

    def counting(x_t: Tensor, t: Tensor) -> Tensor:
        calls.append(float(t[0]))
        return exact_eps(x_t, t)

    first = exact_eps(x, torch.full((2,), 0.5, dtype=torch.float64))
    out = vp_heun_step(counting, x, 0.5, 0.4, eps=first)
    assert calls == [pytest.approx(0.4)]
    torch.testing.assert_close(out, vp_heun_step(exact_eps, x, 0.5, 0.4))


def test_heun_needs_the_ode() -> None:
    with pytest.raises(ValueError, match="ode=True"):
        vp_sample(exact_eps, torch.zeros(1, 1), 2, solver="heun")
    with pytest.raises(ValueError, match="unknown solver"):
        vp_sample(exact_eps, torch.zeros(1, 1), 2, ode=True, solver="rk4")  # type: ignore[arg-type]


# the VP loops written out by hand: non-default rates, a non-uniform grid, per-row generators and a noise
# operator, so that a dropped argument, a wrong coefficient or a swapped time shows at 1e-12
BETA_MIN, BETA_MAX = 0.3, 12.0
MIX = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.8, 0.3], [0.2, 0.0, 0.6]], dtype=torch.float64)


def _beta(t: float) -> float:
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def _std(t: float) -> float:
    return math.sqrt(-math.expm1(-(0.5 * t * t * (BETA_MAX - BETA_MIN) + t * BETA_MIN)))


def toy_eps(x: Tensor, t: Tensor) -> Tensor:
    """A network stand-in, nonlinear in x and depending on t (a row's t scales its output)."""
    return torch.tanh(x) * (0.5 + t.view(-1, 1, 1)) + 0.2 * x.roll(1, dims=-1)


def mix(z: Tensor) -> Tensor:
    """The noise operator ``C^{1/2}``: a fixed non-symmetric 3×3 on the last dimension."""
    return z @ MIX.T


def by_hand(mode: str, x_T: Tensor, grid: list[float], seeds: list[int]) -> tuple[Tensor, list[tuple]]:
    """Euler-Maruyama on the reverse SDE, or Euler/Heun on the probability-flow ODE, step by step; the
    state after step 1 is halved (what the callback below does)."""
    x, steps = x_T, []
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    for i, (t, t_next) in enumerate(zip(grid, grid[1:], strict=False)):
        eps = toy_eps(x, torch.full((x.shape[0],), t, dtype=x.dtype))
        h = t - t_next
        if mode == "sde":
            z = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generators])
            new = x + h * _beta(t) * (x / 2 - eps / _std(t)) + math.sqrt(_beta(t) * h) * mix(z)
        elif mode == "ode_euler":
            new = x + h * _beta(t) / 2 * (x - eps / _std(t))
        else:

            def drift(y: Tensor, s: float, e: Tensor) -> Tensor:  # dx/dt
                return -_beta(s) / 2 * (y - e / _std(s))

            first = drift(x, t, eps)
            predicted = x - h * first
            second = drift(
                predicted, t_next, toy_eps(predicted, torch.full((x.shape[0],), t_next, dtype=x.dtype))
            )
            new = x - h / 2 * (first + second)
        steps.append((i, t, t_next, x, new, eps))
        x = new / 2 if i == 1 else new
    return x, steps


@pytest.mark.parametrize(("ode", "solver"), [(False, "euler"), (True, "euler"), (True, "heun")])
def test_vp_loops_are_their_schemes_written_out_by_hand(ode: bool, solver: str) -> None:
    mode = "sde" if not ode else f"ode_{solver}"
    x_T = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected, expected_steps = by_hand(mode, x_T, [0.9, 0.6, 0.45, 0.1], [5, 6])
    seen: list[tuple] = []

    def callback(info: StepInfo) -> Tensor | None:
        seen.append((info.index, info.t, info.t_next, info.x_t, info.x, info.eps))
        return info.x / 2 if info.index == 1 else None

    settings = {
        "beta_min": BETA_MIN,
        "beta_max": BETA_MAX,
        "noise_operator": mix,
        "ode": ode,
        "solver": solver,
    }
    grid = torch.tensor([0.9, 0.6, 0.45, 0.1], dtype=torch.float64)
    out = vp_integrate(toy_eps, x_T, grid, generator=seed_generators([5, 6]), callback=callback, **settings)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert [s[:3] for s in seen] == [s[:3] for s in expected_steps]
    for got, want in zip(seen, expected_steps, strict=True):
        for a, b in zip(got[3:], want[3:], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # vp_sample: the uniform grid t_max -> t_min with num_steps + 1 points, every setting forwarded
    expected, _ = by_hand(mode, x_T, [0.8, 0.55, 0.3, 0.05], [7, 8])
    halve = lambda info: info.x / 2 if info.index == 1 else None
    out = vp_sample(
        toy_eps, x_T, 3, t_max=0.8, t_min=0.05, generator=seed_generators([7, 8]), callback=halve, **settings
    )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
