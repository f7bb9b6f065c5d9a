"""Marginals, posteriors and reverse steps of linear-Gaussian diffusion processes.

The process is the DDPM/VP one, ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``, written with
``alpha_bar`` only, so that discrete schedules (:func:`~rezdiff.core.schedules.alphas_cumprod`) and
continuous ones (:func:`~rezdiff.core.schedules.vp_alpha_bar`) share every formula.

Conventions (all functions):

* Coefficients (``alpha_bar`` & co.) are per-sample: a Python number, a 0-d tensor or a ``[B]`` tensor
  (or a tensor already broadcastable against ``x``). They are turned into float64, combined, and only
  then cast to ``x``'s dtype and device by :func:`expand_like`; results have ``x``'s dtype.
* ``eps`` is the noise *as it appears in ``x_t``* and is what the network predicts.

Linear operators. Correlated processes slot in as callables ``Tensor -> Tensor`` (any linear map that
preserves the shape: a blur, ``C^{1/2}``, ...):

* ∞-Diff (mollified diffusion, operator ``T``): ``x_t = sqrt(ab) T x_0 + sqrt(1 - ab) T eps``, made by
  ``q_sample(x_0, eps, ab, operator=T)``. Everything else runs *in the T-space*: the network predicts
  ``T eps``, :func:`predict_x0` then returns ``T x_0``, :func:`q_posterior` takes ``T x_0`` and returns the
  posterior of the T-space state (covariance ``variance * T T^T``), and the reverse steps add ``T z``
  instead of ``z`` (``noise_operator=T``). ``clip_x0`` then clips ``T x_0`` (a blur of an image in
  ``[-1, 1]`` stays in ``[-1, 1]``).
* Multilevel VP SDE (noise covariance ``C``): ``x_t = sqrt(ab) x_0 + sqrt(1 - ab) C^{1/2} eps``, made by
  ``q_sample(x_0, eps, ab, noise_operator=C_half)``; the network predicts ``C^{1/2} eps`` and the steps
  take ``noise_operator=C_half``. The reverse steps are identical for both: only the fresh noise sees
  the operator.
* DVDP's per-component coefficients fit through ``expand_like`` when they are given as tensors
  broadcastable against ``x`` (e.g. one coefficient map per pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from rezdiff.core.sampling import (
    EpsAfterClip,
    EpsFn,
    Generators,
    Operator,
)
from rezdiff.core.schedules import as_f64, vp_beta, vp_marginal

Coeff = float | Tensor

__all__ = [
    "Coeff",
    "EpsAfterClip",
    "EpsFn",
    "check_eps_after_clip",
    "Operator",
    "ddim_step",
    "ddpm_step",
    "eps_from_v",
    "expand_like",
    "predict_eps",
    "predict_v",
    "predict_x0",
    "q_posterior",
    "q_sample",
    "randn",
    "randn_like",
    "sample_timesteps",
    "vp_heun_step",
    "vp_ode_drift",
    "vp_reverse_step",
    "x0_from_v",
]


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def expand_like(coeff: Coeff, x: Tensor) -> Tensor:
    """Cast a per-sample coefficient to ``x``'s dtype/device and shape it to broadcast against ``x``.

    Scalars and 0-d tensors broadcast as they are; a ``[B]`` (or ``[1]``) tensor becomes
    ``[B, 1, ..., 1]``; a tensor with as many dimensions as ``x`` is taken as already broadcastable.
    """
    c = as_f64(coeff).to(device=x.device, dtype=x.dtype)
    if c.ndim == 0 or (c.ndim == x.ndim and c.ndim != 1):
        return c
    if c.ndim == 1:
        if c.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"per-sample coefficient has {c.shape[0]} entries for a batch of {x.shape[0]}")
        return c.reshape(-1, *([1] * (x.ndim - 1)))
    raise ValueError(
        f"coefficient of shape {tuple(c.shape)} does not broadcast per sample against {tuple(x.shape)}"
    )


def randn(
    shape: tuple[int, ...],
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device, then moved to ``device``.

    A CPU generator thus works for CUDA tensors, and the draw is the same on every device. It is the
    draw diffusers' ``randn_tensor(shape, generator=g, dtype=dtype)`` makes, so a generator in the
    same state gives diffusers' schedulers' noise. A sequence of generators (one per row, per-image
    seeds) draws row ``k`` of ``shape[1:]`` from ``generator[k]``: a row's noise does not depend on
    the batch it is drawn in.
    """
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} rows")
        rows = [randn(tuple(shape[1:]), g, None, dtype) for g in generator]
        return torch.stack(rows).to(device)
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    """Standard normal noise shaped like ``x``, on ``x``'s device and dtype (see :func:`randn`)."""
    return randn(tuple(x.shape), generator, x.device, x.dtype)


def sample_timesteps(
    batch: int,
    num_steps: int,
    generator: Generators = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``batch`` long timesteps uniform in ``{0, ..., num_steps - 1}``, drawn like :func:`randn_like`."""
    draw_device = generator.device if generator is not None else device
    t = torch.randint(0, num_steps, (batch,), generator=generator, device=draw_device)
    return t.to(device) if device is not None else t


def _apply(operator: Operator | None, x: Tensor) -> Tensor:
    return x if operator is None else operator(x)


# --------------------------------------------------------------------------------------------------------
# Forward process and parametrisations
# --------------------------------------------------------------------------------------------------------


def q_sample(
    x0: Tensor,
    noise: Tensor,
    alpha_bar: Coeff,
    operator: Operator | None = None,
    *,
    noise_operator: Operator | None = None,
) -> Tensor:
    """Draw ``x_t ~ q(x_t | x_0)``: ``operator(sqrt(ab) x_0 + sqrt(1 - ab) noise_operator(noise))``.

    ``operator`` (∞-Diff's mollifier ``T``) applies to the whole state, i.e. to ``x_0`` *and* the noise;
    ``noise_operator`` (a covariance square root ``C^{1/2}``) to the noise only. With ``alpha_bar`` set to
    ``1 - beta_t`` it is one forward step ``q(x_t | x_{t-1})``.
    """
    ab = as_f64(alpha_bar)
    x_t = expand_like(ab.sqrt(), x0) * x0 + expand_like((1 - ab).sqrt(), x0) * _apply(noise_operator, noise)
    return _apply(operator, x_t)


def predict_x0(x_t: Tensor, eps: Tensor, alpha_bar: Coeff) -> Tensor:
    """``x_0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)`` (``T x_0`` in ∞-Diff's T-space)."""
    ab = as_f64(alpha_bar)
    return (x_t - expand_like((1 - ab).sqrt(), x_t) * eps) / expand_like(ab.sqrt(), x_t)


def predict_eps(x_t: Tensor, x0: Tensor, alpha_bar: Coeff) -> Tensor:
    """``eps = (x_t - sqrt(ab) x_0) / sqrt(1 - ab)``."""
    ab = as_f64(alpha_bar)
    return (x_t - expand_like(ab.sqrt(), x_t) * x0) / expand_like((1 - ab).sqrt(), x_t)


def predict_v(x0: Tensor, eps: Tensor, alpha_bar: Coeff) -> Tensor:
    """Velocity ``v = sqrt(ab) eps - sqrt(1 - ab) x_0`` (Salimans & Ho 2022; diffusers' ``get_velocity``)."""
    ab = as_f64(alpha_bar)
    return expand_like(ab.sqrt(), x0) * eps - expand_like((1 - ab).sqrt(), x0) * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar: Coeff) -> Tensor:
    """``x_0 = sqrt(ab) x_t - sqrt(1 - ab) v``."""
    ab = as_f64(alpha_bar)
    return expand_like(ab.sqrt(), x_t) * x_t - expand_like((1 - ab).sqrt(), x_t) * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar: Coeff) -> Tensor:
    """``eps = sqrt(ab) v + sqrt(1 - ab) x_t``."""
    ab = as_f64(alpha_bar)
    return expand_like(ab.sqrt(), x_t) * v + expand_like((1 - ab).sqrt(), x_t) * x_t


def _posterior_coeffs(alpha_bar_t: Coeff, alpha_bar_prev: Coeff) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(coef_x0, coef_xt, small_variance, beta)`` of ``q(x_prev | x_t, x_0)`` for a jump ``t -> prev``."""
    ab_t, ab_prev = as_f64(alpha_bar_t), as_f64(alpha_bar_prev)
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    coef_x0 = ab_prev.sqrt() * beta / (1 - ab_t)
    coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab_t)
    small = (1 - ab_prev) / (1 - ab_t) * beta
    return coef_x0, coef_xt, small, beta


def q_posterior(x0: Tensor, x_t: Tensor, alpha_bar_t: Coeff, alpha_bar_prev: Coeff) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``q(x_prev | x_t, x_0)`` for a jump from ``t`` to any earlier ``prev``.

    With ``beta = 1 - ab_t / ab_prev``: mean ``= sqrt(ab_prev) beta / (1 - ab_t) x_0 +
    sqrt(1 - beta) (1 - ab_prev) / (1 - ab_t) x_t``, variance ``= (1 - ab_prev) / (1 - ab_t) beta``
    (DDPM Eq. 7). The variance is returned broadcastable against ``x_t`` in its dtype; with an operator
    (module docstring) the posterior covariance is ``variance * T T^T``.
    """
    coef_x0, coef_xt, small, _ = _posterior_coeffs(alpha_bar_t, alpha_bar_prev)
    mean = expand_like(coef_x0, x_t) * x0 + expand_like(coef_xt, x_t) * x_t
    return mean, expand_like(small, x_t)


# --------------------------------------------------------------------------------------------------------
# Reverse steps
# --------------------------------------------------------------------------------------------------------


def _x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Coeff, clip_x0: float | None) -> Tensor:
    x0 = predict_x0(x_t, eps, alpha_bar_t)
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


def _add_noise(
    x: Tensor, std: Tensor, noise: Tensor | None, noise_operator: Operator | None, who: str
) -> Tensor:
    """``x + std * noise_operator(noise)``, skipping the operator where every ``std`` is zero."""
    if not bool((std != 0).any()):
        return x
    if noise is None:
        raise ValueError(f"{who} needs `noise` for a stochastic step")
    return x + expand_like(std, x) * _apply(noise_operator, noise)


def ddpm_step(
    x_t: Tensor,
    eps: Tensor,
    alpha_bar_t: Coeff,
    alpha_bar_prev: Coeff,
    noise: Tensor | None,
    *,
    variance: Literal["small", "large"] = "small",
    clip_x0: float | None = None,
    noise_operator: Operator | None = None,
) -> Tensor:
    """One ancestral step ``x_t -> x_prev``: posterior mean from predicted ``x_0``, plus ``std * noise``.

    ``variance="small"`` uses the posterior variance ``(1 - ab_prev) / (1 - ab_t) beta`` (diffusers'
    ``fixed_small``), ``"large"`` uses ``beta = 1 - ab_t / ab_prev`` (``fixed_large``). No noise is added
    where ``alpha_bar_prev == 1`` (the final step to ``x_0``), as diffusers does at ``t = 0``. ``clip_x0``
    clamps the predicted ``x_0`` to ``[-clip_x0, clip_x0]`` first. ``noise_operator`` is applied to
    ``noise`` only (``T z`` in ∞-Diff). ``noise=None`` is allowed only where no noise is needed.
    """
    x0 = _x0_from_eps(x_t, eps, alpha_bar_t, clip_x0)
    coef_x0, coef_xt, small, beta = _posterior_coeffs(alpha_bar_t, alpha_bar_prev)
    mean = expand_like(coef_x0, x_t) * x0 + expand_like(coef_xt, x_t) * x_t
    if variance == "small":
        var = small
    elif variance == "large":
        var = beta
    else:
        raise ValueError(f"unknown variance {variance!r}; expected 'small' or 'large'")
    std = var.clamp(min=0).sqrt() * (as_f64(alpha_bar_prev) < 1)
    return _add_noise(mean, std, noise, noise_operator, "ddpm_step")


def check_eps_after_clip(eps_after_clip: str) -> None:
    """Raise the ValueError that names the two choices if ``eps_after_clip`` is neither."""
    if eps_after_clip not in ("network", "from_x0"):
        raise ValueError(f"unknown eps_after_clip {eps_after_clip!r}; expected 'network' or 'from_x0'")


def ddim_step(
    x_t: Tensor,
    eps: Tensor,
    alpha_bar_t: Coeff,
    alpha_bar_prev: Coeff,
    noise: Tensor | None = None,
    *,
    eta: float = 0.0,
    clip_x0: float | None = None,
    eps_after_clip: EpsAfterClip = "network",
    noise_operator: Operator | None = None,
) -> Tensor:
    """One DDIM step (Song et al. 2021, Eq. 12): ``sqrt(ab_prev) x_0 + sqrt(1 - ab_prev - s^2) eps + s z``.

    ``s = eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))``: ``eta = 0`` is deterministic,
    ``eta = 1`` has DDPM's posterior variance. When ``clip_x0`` clips the predicted ``x_0``,
    ``eps_after_clip`` says which ``eps`` the direction term uses: ``"network"`` keeps the network's output
    (diffusers), ``"from_x0"`` re-derives ``eps = (x_t - sqrt(ab_t) x_0) / sqrt(1 - ab_t)`` from the
    clipped ``x_0`` (OpenAI's ``_predict_eps_from_xstart``), so that the step stays on the line through
    ``x_t`` and the clipped ``x_0``. Without ``clip_x0`` the two agree. ``noise`` (``z``, mapped by
    ``noise_operator``) is needed only when ``eta > 0``.
    """
    check_eps_after_clip(eps_after_clip)
    x0 = _x0_from_eps(x_t, eps, alpha_bar_t, clip_x0)
    if clip_x0 is not None and eps_after_clip == "from_x0":
        eps = predict_eps(x_t, x0, alpha_bar_t)
    ab_t, ab_prev = as_f64(alpha_bar_t), as_f64(alpha_bar_prev)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp(min=0).sqrt()
    direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt()
    x_prev = expand_like(ab_prev.sqrt(), x_t) * x0 + expand_like(direction, x_t) * eps
    return _add_noise(x_prev, sigma, noise, noise_operator, "ddim_step with eta > 0")


# --------------------------------------------------------------------------------------------------------
# Continuous time: VP SDE, dX = -1/2 beta X dt + sqrt(beta) C^{1/2} dW
# --------------------------------------------------------------------------------------------------------


def vp_reverse_step(
    x_t: Tensor,
    eps: Tensor,
    t: Coeff,
    t_next: Coeff,
    noise: Tensor | None = None,
    *,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    noise_operator: Operator | None = None,
    ode: bool = False,
) -> Tensor:
    """One Euler(-Maruyama) step of the reverse VP SDE, or its probability-flow ODE, from ``t`` to ``t_next``.

    ``eps`` is the noise as it appears in ``x_t = m(t) x_0 + std(t) eps`` (so ``C^{1/2} eps_white`` for a
    correlated prior), which makes the preconditioned score ``C grad log p = -eps / std``. With
    ``h = t - t_next``: SDE ``x + h beta (x / 2 - eps / std) + sqrt(beta h) C^{1/2} z``; ODE
    ``x + h beta (x - eps / std) / 2``.
    """
    t64, tn64 = as_f64(t), as_f64(t_next)
    h = t64 - tn64
    if ode:  # Euler on the probability-flow ODE, dt = -h
        return x_t - expand_like(h, x_t) * vp_ode_drift(x_t, eps, t64, beta_min=beta_min, beta_max=beta_max)
    beta = vp_beta(t64, beta_min, beta_max)
    _, std = vp_marginal(t64, beta_min, beta_max)
    x_next = expand_like(1 + 0.5 * beta * h, x_t) * x_t - expand_like(beta * h / std, x_t) * eps
    return _add_noise(x_next, (beta * h).sqrt(), noise, noise_operator, "vp_reverse_step (SDE)")


def vp_ode_drift(
    x_t: Tensor, eps: Tensor, t: Coeff, *, beta_min: float = 0.1, beta_max: float = 20.0
) -> Tensor:
    """``dx/dt`` of the probability-flow ODE: ``-beta(t) / 2 (x - eps / std(t))``.

    ``eps`` is the noise as it appears in ``x_t`` (see :func:`vp_reverse_step`), so ``-eps / std`` is the
    preconditioned score ``C grad log p_t``; the ODE carries the marginals of the forward SDE.
    """
    t64 = as_f64(t)
    beta = vp_beta(t64, beta_min, beta_max)
    _, std = vp_marginal(t64, beta_min, beta_max)
    return expand_like(-0.5 * beta, x_t) * x_t + expand_like(0.5 * beta / std, x_t) * eps


def vp_heun_step(
    eps_fn: EpsFn,
    x_t: Tensor,
    t: float,
    t_next: float,
    *,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    eps: Tensor | None = None,
) -> Tensor:
    """One Heun (explicit trapezoidal, 2nd order) step of the probability-flow ODE from ``t`` to ``t_next``.

    Euler predictor ``x' = x + (t_next - t) f(x, t)``, then ``x + (t_next - t) (f(x, t) + f(x', t_next)) / 2``
    with ``f`` = :func:`vp_ode_drift`: two network calls per step (``eps``, if given, is the first one).
    ``eps_fn(x, t)`` gets ``t`` as a ``[B]`` tensor in ``x``'s dtype.
    """
    batch = x_t.shape[0]

    def drift(x: Tensor, time: float, given: Tensor | None) -> Tensor:
        e = (
            given
            if given is not None
            else eps_fn(x, torch.full((batch,), time, dtype=x.dtype, device=x.device))
        )
        return vp_ode_drift(x, e, time, beta_min=beta_min, beta_max=beta_max)

    h = float(t_next) - float(t)
    first = drift(x_t, float(t), eps)
    predicted = x_t + h * first
    return x_t + 0.5 * h * (first + drift(predicted, float(t_next), None))
