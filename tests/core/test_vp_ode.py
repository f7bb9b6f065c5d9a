"""The probability-flow ODE solvers against the exact flow of a Gaussian: Euler is 1st order, Heun 2nd."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rezdiff.core import vp_heun_step, vp_marginal, vp_ode_drift, vp_reverse_step, vp_sample

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
