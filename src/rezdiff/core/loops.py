"""The reverse loops of linear-Gaussian diffusion, one per sampler kind: DDIM, ancestral DDPM, and the
reverse VP SDE/ODE. Each is the loop behind a registered sampler (:mod:`rezdiff.core.samplers`); steps and
formulas are in :mod:`rezdiff.core.gaussian`, the contract (callbacks, per-row generators) in
:mod:`rezdiff.core.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from rezdiff.core.gaussian import (
    EpsAfterClip,
    EpsFn,
    Operator,
    ddim_step,
    ddpm_step,
    randn_like,
    vp_heun_step,
    vp_reverse_step,
)
from rezdiff.core.sampling import Callback, Generators, StepInfo, after_step, check_timesteps, progress_bar

__all__ = ["ddim_sample", "ddpm_sample", "vp_integrate", "vp_sample"]


def ddim_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor | Sequence[int],
    *,
    eta: float = 0.0,
    generator: Generators = None,
    clip_x0: float | None = None,
    eps_after_clip: EpsAfterClip = "network",
    noise_operator: Operator | None = None,
    final_alpha_bar: float = 1.0,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Run DDIM from ``x_T`` over descending ``timesteps``; returns the final sample.

    ``eps_fn(x_t, t)`` gets ``t`` as a long tensor of shape ``[B]`` on ``x_T``'s device. Each step jumps to
    the next timestep of the list; the last one to ``final_alpha_bar`` (1.0 = diffusers'
    ``set_alpha_to_one=True``). With ``eta > 0`` noise is drawn by :func:`randn_like` at every step (also
    the last, where it is multiplied by 0), as diffusers does, so a generator in the same state gives the
    same samples. ``x_T`` must already carry any operator (∞-Diff starts from ``T eps``); pure noise is
    the law of ``x_{T-1}`` only, so ``timesteps`` should start at ``T - 1`` (``"trailing"`` or
    ``"linspace"`` spacing). ``clip_x0``/``eps_after_clip``: see :func:`ddim_step`. ``generator`` may be
    one per row; ``callback`` sees every step (:mod:`rezdiff.core.sampling`).
    """
    ts = check_timesteps(timesteps, alphas_cumprod.shape[0])
    x = x_T
    batch = x.shape[0]
    for i in progress_bar(list(range(len(ts))), progress, "DDIM"):
        t = ts[i]
        t_next = ts[i + 1] if i + 1 < len(ts) else None
        eps = eps_fn(x, torch.full((batch,), t, dtype=torch.long, device=x.device))
        ab_prev = alphas_cumprod[t_next] if t_next is not None else final_alpha_bar
        noise = randn_like(x, generator) if eta > 0 else None
        x_new = ddim_step(
            x,
            eps,
            alphas_cumprod[t],
            ab_prev,
            noise,
            eta=eta,
            clip_x0=clip_x0,
            eps_after_clip=eps_after_clip,
            noise_operator=noise_operator,
        )
        x = after_step(callback, StepInfo(i, t, t_next, x, x_new, eps))
    return x


def ddpm_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    *,
    generator: Generators = None,
    variance: Literal["small", "large"] = "small",
    clip_x0: float | None = None,
    noise_operator: Operator | None = None,
    timesteps: Tensor | Sequence[int] | None = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling from ``x_T`` over ``timesteps`` (default: every step, ``T - 1`` down to 0).

    Each step jumps to the next timestep of the list (``beta`` of the jump is ``1 - ab_t / ab_prev``), the
    last one to ``alpha_bar = 1``, where no noise is added. ``x_T`` is taken as a draw of the state at the
    first timestep: pure noise is that law only at ``T - 1``. Noise is drawn by :func:`randn_like` for every
    step but the last, which matches diffusers' ``DDPMScheduler`` whenever the last timestep is 0.
    ``generator`` may be one per row; ``callback`` sees every step (:mod:`rezdiff.core.sampling`).
    """
    num_train = alphas_cumprod.shape[0]
    ts = check_timesteps(range(num_train - 1, -1, -1) if timesteps is None else timesteps, num_train)
    x = x_T
    batch = x.shape[0]
    for i in progress_bar(list(range(len(ts))), progress, "DDPM"):
        t = ts[i]
        eps = eps_fn(x, torch.full((batch,), t, dtype=torch.long, device=x.device))
        last = i + 1 == len(ts)
        t_next = None if last else ts[i + 1]
        ab_prev = 1.0 if t_next is None else alphas_cumprod[t_next]
        noise = None if last else randn_like(x, generator)
        x_new = ddpm_step(
            x,
            eps,
            alphas_cumprod[t],
            ab_prev,
            noise,
            variance=variance,
            clip_x0=clip_x0,
            noise_operator=noise_operator,
        )
        x = after_step(callback, StepInfo(i, t, t_next, x, x_new, eps))
    return x


def vp_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    num_steps: int,
    *,
    t_max: float = 1.0,
    t_min: float = 1e-3,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    generator: Generators = None,
    noise_operator: Operator | None = None,
    ode: bool = False,
    solver: Literal["euler", "heun"] = "euler",
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Integrate the reverse VP SDE (Euler-Maruyama) or ODE (Euler, Heun) on a uniform grid t_max -> t_min.

    ``eps_fn(x_t, t)`` gets ``t`` as a float tensor of shape ``[B]`` in ``x_T``'s dtype. ``x_T`` is the
    prior draw (``C^{1/2} z`` for a correlated prior). Returns the state at ``t_min`` (no final denoising).
    ``solver="heun"`` (ODE only) costs two network calls per step. The loop is :func:`vp_integrate`.
    """
    grid = torch.linspace(t_max, t_min, num_steps + 1, dtype=torch.float64)
    return vp_integrate(
        eps_fn,
        x_T,
        grid,
        beta_min=beta_min,
        beta_max=beta_max,
        generator=generator,
        noise_operator=noise_operator,
        ode=ode,
        solver=solver,
        progress=progress,
        callback=callback,
    )


def vp_integrate(
    eps_fn: EpsFn,
    x_T: Tensor,
    grid: Tensor,
    *,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    generator: Generators = None,
    noise_operator: Operator | None = None,
    ode: bool = False,
    solver: Literal["euler", "heun"] = "euler",
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """The reverse VP loop over a descending float64 time ``grid`` (end point included: ``len - 1`` steps).

    Euler-Maruyama on the SDE, or Euler/Heun on the probability-flow ODE (:func:`vp_sample`); ``generator``
    may be one per row; ``callback`` sees every step (:mod:`rezdiff.core.sampling`).
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver {solver!r}; expected 'euler' or 'heun'")
    if solver == "heun" and not ode:
        raise ValueError(
            "solver='heun' integrates the probability-flow ODE; pass ode=True (the SDE uses Euler-Maruyama)"
        )
    grid = grid.to(torch.float64)
    if grid.ndim != 1 or grid.numel() < 2 or bool((grid[1:] >= grid[:-1]).any()):
        raise ValueError(f"the VP time grid must be 1-D, strictly decreasing, with >= 2 points; got {grid}")
    x = x_T
    batch = x.shape[0]
    desc = "VP SDE" if not ode else f"VP ODE ({solver})"
    for i in progress_bar(list(range(grid.numel() - 1)), progress, desc):
        t, t_next = grid[i], grid[i + 1]
        eps = eps_fn(x, torch.full((batch,), float(t), dtype=x.dtype, device=x.device))
        if solver == "heun":
            x_new = vp_heun_step(
                eps_fn, x, float(t), float(t_next), beta_min=beta_min, beta_max=beta_max, eps=eps
            )
        else:
            noise = None if ode else randn_like(x, generator)
            x_new = vp_reverse_step(
                x,
                eps,
                t,
                t_next,
                noise,
                beta_min=beta_min,
                beta_max=beta_max,
                noise_operator=noise_operator,
                ode=ode,
            )
        x = after_step(callback, StepInfo(i, float(t), float(t_next), x, x_new, eps))
    return x
