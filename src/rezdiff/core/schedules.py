"""Noise schedules, discrete and continuous.

Discrete schedules follow DDPM: ``betas[i]`` is the variance added by step ``i`` (0-based, ``i = 0`` is the
least noisy step) and ``alphas_cumprod[i] = prod_{j <= i} (1 - betas[j])`` is the signal fraction
``alpha_bar`` of ``x_i`` (diffusers' convention). Continuous schedules take ``t`` in ``[0, 1]``.

Every function returns float64 tensors: schedules are small, and products over a thousand steps lose
digits in float32. Callers cast (the functions in :mod:`rezdiff.core.gaussian` do it for them).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

BetaSchedule = Literal["linear", "cosine"]
TimestepSpacing = Literal["leading", "trailing", "linspace"]

__all__ = [
    "BetaSchedule",
    "TimestepSpacing",
    "alphas_cumprod",
    "as_f64",
    "cosine_alpha_bar",
    "cosine_betas",
    "linear_betas",
    "make_betas",
    "timestep_subsequence",
    "vp_alpha_bar",
    "vp_beta",
    "vp_integrated_beta",
    "vp_marginal",
]


def as_f64(t: Tensor | float) -> Tensor:
    """``t`` as a float64 tensor on its own device (Python numbers go to the CPU; MPS has no float64, so a
    tensor there becomes float32): schedules and step coefficients are computed in double precision."""
    if isinstance(t, Tensor):
        return t.to(torch.float32 if t.device.type == "mps" else torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------
# Discrete schedules
# --------------------------------------------------------------------------------------------------------

TERMINAL_SIGNAL = 0.05
"""Largest ``sqrt(alpha_bar)`` at the last training step that :func:`make_betas` accepts without a warning."""


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Betas evenly spaced from ``beta_start`` to ``beta_end`` (DDPM; diffusers' ``"linear"``)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_alpha_bar(t: Tensor | float, s: float = 0.008) -> Tensor:
    """Continuous cosine ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2((t + s) / (1 + s) * pi / 2)``.

    Nichol & Dhariwal (2021), Eq. 17; normalised so that ``alpha_bar(0) = 1``. Without the final clipping,
    ``alphas_cumprod(cosine_betas(T))[i] == cosine_alpha_bar((i + 1) / T)``.
    """

    def f(u: Tensor) -> Tensor:
        return torch.cos((u + s) / (1 + s) * (math.pi / 2)) ** 2

    t = as_f64(t)
    return f(t) / f(torch.zeros((), dtype=torch.float64, device=t.device))


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule: ``1 - alpha_bar((i+1)/T) / alpha_bar(i/T)``, clipped at ``max_beta``.

    Equals diffusers' ``"squaredcos_cap_v2"`` (the clip keeps the last steps from being singular).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    grid = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    alpha_bar = cosine_alpha_bar(grid, s)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def make_betas(
    kind: BetaSchedule, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    """Betas of a named schedule; ``beta_start``/``beta_end`` only matter for ``"linear"``.

    Warns when the schedule leaves more than ``TERMINAL_SIGNAL`` of the data in ``x_{T-1}``
    (``sqrt(alpha_bar_{T-1})``): every sampler starts from pure noise, which is then not the law the network
    was trained on at ``T - 1`` (DDPM's linear betas over 200 steps keep 0.36 of the data; over their 1000
    steps, 0.006).
    """
    if kind == "linear":
        betas = linear_betas(num_steps, beta_start, beta_end)
    elif kind == "cosine":
        betas = cosine_betas(num_steps)
    else:
        raise ValueError(f"unknown beta schedule {kind!r}; expected 'linear' or 'cosine'")
    if betas.is_meta:  # a model built on the meta device (to inspect a config) has no values to check
        return betas
    signal = alphas_cumprod(betas)[-1].sqrt().item()
    if signal > TERMINAL_SIGNAL:
        ends = f", beta_end={beta_end}" if kind == "linear" else ""
        warnings.warn(
            f"schedule={kind!r} with num_train_steps={num_steps}{ends} keeps {signal:.2f} of the data at the "
            "last step (sqrt(alpha_bar)), but sampling starts from pure noise: use schedule='cosine', "
            "more steps (1000) or a larger beta_end",
            stacklevel=2,
        )
    return betas


def alphas_cumprod(betas: Tensor) -> Tensor:
    """``alpha_bar[i] = prod_{j <= i} (1 - betas[j])`` in float64."""
    return torch.cumprod(1 - betas.to(torch.float64), dim=0)


def timestep_subsequence(
    num_train_steps: int, num_steps: int, spacing: TimestepSpacing = "trailing", offset: int = 0
) -> Tensor:
    """``num_steps`` descending integer timesteps out of ``range(num_train_steps)`` for strided sampling.

    The default, ``"trailing"``, starts at ``T - 1``: sampling starts from pure noise, which is the law of
    ``x_{T-1}`` alone (Lin et al. 2023). ``"leading"`` (diffusers' old default) starts at
    ``T - T // n`` (990/960/900 for 100/25/10 steps of 1000), where the signal is not yet gone.

    Identical to diffusers' ``DDIMScheduler.set_timesteps`` (and ``DDPMScheduler``'s) for each spacing of
    Lin et al. (2023), Table 2 -- including its floating-point rounding -- so checkpoints trained with
    diffusers sample the same way:

    * ``"leading"``: ``i * (T // n) + offset`` (``offset`` is diffusers' ``steps_offset``, 1 in Stable
      Diffusion); never reaches ``T - 1``.
    * ``"trailing"``: ``round(T - i * T / n) - 1``; always starts at ``T - 1``.
    * ``"linspace"``: ``round(linspace(0, T - 1, n))``; always contains ``0`` and ``T - 1``.

    One deliberate difference: for some ``n`` (e.g. 61, 103, 121 with ``T = 1000``) diffusers' "trailing"
    rounding yields ``n + 1`` timesteps, the last being ``-1``. Here the result always has ``num_steps``
    entries, equal to diffusers' first ``num_steps``.
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    i = torch.arange(num_steps, dtype=torch.float64)
    if spacing == "leading":
        step = num_train_steps // num_steps
        return torch.arange(num_steps - 1, -1, -1, dtype=torch.long) * step + offset
    if spacing == "trailing":
        # numpy's arange(T, 0, -T/n) fills start + i * delta with delta = (start - step) - start; the
        # same arithmetic reproduces its rounding exactly (ties such as T=1000, n=48, i=3 depend on it).
        start = torch.tensor(float(num_train_steps), dtype=torch.float64)
        delta = (start - num_train_steps / num_steps) - start
        return torch.round(start + i * delta).long() - 1
    if spacing == "linspace":
        # numpy's linspace: i * step, with the last point set to the end exactly.
        if num_steps > 1:
            values = i * ((num_train_steps - 1) / (num_steps - 1))
            values[-1] = num_train_steps - 1
        else:
            values = i
        return torch.round(values).long().flip(0)
    raise ValueError(f"unknown timestep spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")


# --------------------------------------------------------------------------------------------------------
# Continuous VP SDE (Song et al. 2021): dX = -1/2 beta(t) X dt + sqrt(beta(t)) dW, t in [0, 1]
# --------------------------------------------------------------------------------------------------------


def vp_beta(t: Tensor | float, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """Linear rate ``beta(t) = beta_min + t (beta_max - beta_min)`` of the VP SDE."""
    return beta_min + as_f64(t) * (beta_max - beta_min)


def vp_integrated_beta(t: Tensor | float, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """``int_0^t beta(s) ds = 1/2 t^2 (beta_max - beta_min) + t beta_min``."""
    t = as_f64(t)
    return 0.5 * t**2 * (beta_max - beta_min) + t * beta_min


def vp_alpha_bar(t: Tensor | float, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """Signal fraction ``exp(-int_0^t beta)`` of the VP marginal, so the discrete-time formulas apply."""
    return torch.exp(-vp_integrated_beta(t, beta_min, beta_max))


def vp_marginal(t: Tensor | float, beta_min: float = 0.1, beta_max: float = 20.0) -> tuple[Tensor, Tensor]:
    """``(mean_coeff, std)`` of ``X_t | X_0 ~ N(mean_coeff X_0, std^2 C)``.

    ``mean_coeff = exp(-1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min)``, ``std^2 = 1 - mean_coeff^2``
    (``C`` is the noise covariance; ``I`` for the plain SDE). ``expm1`` keeps ``std`` accurate near 0.
    """
    integral = vp_integrated_beta(t, beta_min, beta_max)
    mean_coeff = torch.exp(-0.5 * integral)
    std = torch.sqrt(-torch.expm1(-integral))
    return mean_coeff, std
