"""The mathematics of DVDP (Zhang et al. 2023): the 2x2 pooling pyramid, attenuated schedules, forward
marginals and reverse steps of a dimensionality-varying diffusion process.

Operators (images ``[B, C, H, W]``):

* ``P`` = 2x2 average pooling, ``N`` = nearest 2x upsampling: ``P N = I``, ``N^T = 4 P`` and ``N P`` is the
  orthogonal projector onto 2x2-block-constant images.
* The paper's downsampling operator ``D = 2 P`` and upsampling operator ``D^T = N / 2`` have orthonormal
  rows (``D D^T = I``), so white noise stays white under ``D`` (Eq. 6) and ``D^T D = N P``.
* Components of an image with ``L`` levels: ``c_m = N^m P^m x - N^{m+1} P^{m+1} x`` for ``m < L`` and
  ``c_L = N^L P^L x``; they are mutually orthogonal and sum to ``x``.

States live in the paper's orthonormal coordinates: the stage-``k`` state is ``x^k = D^k x^0``, at
resolution ``H / 2^k``. There the noise is unchanged (white, unit variance) and the data doubles at each
level (``D^k x_0 = 2^k P^k x_0``, in ``[-2^k, 2^k]``), so the signal-to-noise ratio of a retained
component is exactly the base schedule's: no SNR jump to correct at a turning point.

Timesteps are 0-based indices into the schedule tables (diffusers' convention); ``t = -1`` is the data
(``lambda = 1, sigma = 0``). A paper turning point ``T_k`` means: index ``T_k - 1`` is the last of stage
``k - 1``, and indices ``T_k .. T_{k+1} - 1`` form stage ``k`` (paper times ``(T_k, T_{k+1}]``, Eq. 12).

(Slightly over ~400 lines: the operators, the schedule and the reverse steps share the coordinate and
timestep conventions above and are read together against the paper's equations.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rezdiff.core.gaussian import expand_like, randn_like
from rezdiff.core.sampling import Callback, Generators, StepInfo, after_step, progress_bar
from rezdiff.core.schedules import (
    BetaSchedule,
    TimestepSpacing,
    alphas_cumprod,
    make_betas,
    timestep_subsequence,
)

Process = Literal["dvdp", "subspace"]
Coeffs = Sequence[Tensor | float]

__all__ = [
    "DVDPSchedule",
    "Process",
    "apply_components",
    "check_divisible",
    "check_markov",
    "components",
    "complement",
    "down",
    "dvdp_sample",
    "forward_step",
    "make_dvdp_schedule",
    "marginal",
    "pool",
    "reverse_step",
    "sampling_timesteps",
    "stage_data",
    "turning_point_up",
    "up",
    "upsample",
]


# --------------------------------------------------------------------------------------------------------
# The pyramid
# --------------------------------------------------------------------------------------------------------


def pool(x: Tensor) -> Tensor:
    """``P``: 2x2 average pooling."""
    return F.avg_pool2d(x, 2)


def upsample(x: Tensor) -> Tensor:
    """``N``: nearest 2x upsampling (each pixel copied into a 2x2 block)."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def down(x: Tensor, times: int = 1) -> Tensor:
    """The paper's ``D_k = 2 P`` applied ``times`` times (orthonormal rows: white noise stays white)."""
    for _ in range(times):
        x = 2 * pool(x)
    return x


def up(x: Tensor, times: int = 1) -> Tensor:
    """The paper's ``D_k^T = N / 2`` applied ``times`` times."""
    for _ in range(times):
        x = upsample(x) / 2
    return x


def complement(z: Tensor) -> Tensor:
    """``(I - N P) z``: the part of ``z`` orthogonal to 2x2-block-constant images."""
    return z - upsample(pool(z))


def check_divisible(height: int, width: int, levels: int) -> None:
    """A clear error unless ``H`` and ``W`` are divisible by ``2^levels``."""
    factor = 2**levels
    if height % factor or width % factor:
        raise ValueError(
            f"a {levels}-level pyramid needs H and W divisible by 2^{levels} = {factor}, got {height}x{width}"
        )


def components(x: Tensor, levels: int) -> list[Tensor]:
    """The ``levels + 1`` orthogonal components ``c_0 .. c_L`` of ``x`` (finest first), each at full size."""
    check_divisible(x.shape[-2], x.shape[-1], levels)
    out, current, scale = [], x, 0
    for _ in range(levels):
        coarse = pool(current)
        out.append(_upsample_times(current - upsample(coarse), scale))
        current, scale = coarse, scale + 1
    out.append(_upsample_times(current, scale))
    return out


def _upsample_times(x: Tensor, times: int) -> Tensor:
    for _ in range(times):
        x = upsample(x)
    return x


def apply_components(x: Tensor, coeffs: Coeffs) -> Tensor:
    """``sum_m coeffs[m] * c_m(x)`` with ``L = len(coeffs) - 1`` levels; coefficients scalar or per sample.

    The block-diagonal operator ``U diag(...) U^T`` of Eqs. 5-7, applied in O(HW) by walking the pyramid
    from the coarsest level up instead of materialising each component.
    """
    levels = len(coeffs) - 1
    check_divisible(x.shape[-2], x.shape[-1], levels)
    pyramid = [x]
    for _ in range(levels):
        pyramid.append(pool(pyramid[-1]))
    out = expand_like(coeffs[levels], pyramid[levels]) * pyramid[levels]
    for m in range(levels - 1, -1, -1):
        detail = pyramid[m] - upsample(pyramid[m + 1])
        out = expand_like(coeffs[m], detail) * detail + upsample(out)
    return out


# --------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------


def check_markov(lam: Tensor, sigma: Tensor, atol: float = 1e-12) -> None:
    """Raise unless every component's ``(lambda, sigma)`` comes from a Markov chain with Gaussian kernels.

    A one-step kernel ``x_t = r x_{t-1} + q z`` exists iff ``q^2 = sigma_t^2 - r^2 sigma_{t-1}^2 >= 0``
    with ``r = lambda_t / lambda_{t-1}`` (Eq. 7); the first step starts from the data (``lambda = 1``,
    ``sigma = 0``). ``lam`` and ``sigma`` are ``[K + 1, T]``.
    """
    lam_prev = torch.cat([torch.ones_like(lam[:, :1]), lam[:, :-1]], dim=1)
    sig_prev = torch.cat([torch.zeros_like(sigma[:, :1]), sigma[:, :-1]], dim=1)
    if bool((lam <= 0).any()) or bool((sigma < 0).any()):
        raise ValueError("invalid DVDP schedule: lambda must be positive and sigma non-negative")
    excess = sigma**2 - (lam / lam_prev) ** 2 * sig_prev**2
    bad = (excess < -atol).nonzero()
    if bad.numel():
        i, t = (int(v) for v in bad[0])
        raise ValueError(
            f"invalid DVDP schedule: component {i} at t={t} has sigma_t^2 = {float(sigma[i, t] ** 2):.6g} < "
            f"(lambda_t / lambda_(t-1))^2 sigma_(t-1)^2 = {float(sigma[i, t] ** 2 - excess[i, t]):.6g}; no "
            "Markov transition has these marginals (Eq. 7). Attenuate more slowly or add noise."
        )


@dataclass(frozen=True)
class DVDPSchedule:
    """Per-component attenuation ``lam[i, t]`` and noise std ``sigma[i, t]`` (``[K + 1, T]``, float64).

    ``turning_points`` are the paper's ``T_1 < ... < T_K`` (component ``i < K`` is dropped after index
    ``T_{i+1} - 1``). Validity (Eq. 7) is checked at construction.
    """

    turning_points: tuple[int, ...]
    lam: Tensor
    sigma: Tensor

    def __post_init__(self) -> None:
        levels = len(self.turning_points)
        if self.lam.shape != self.sigma.shape or self.lam.ndim != 2 or self.lam.shape[0] != levels + 1:
            raise ValueError(
                f"lam and sigma must both be [K + 1, T] with K = {levels}, got {tuple(self.lam.shape)} and "
                f"{tuple(self.sigma.shape)}"
            )
        num_steps = self.lam.shape[1]
        tps = list(self.turning_points)
        if any(a >= b for a, b in zip(tps, tps[1:], strict=False)) or (
            tps and not 1 <= tps[0] <= tps[-1] < num_steps
        ):
            raise ValueError(f"turning points must be strictly increasing in [1, {num_steps - 1}], got {tps}")
        check_markov(self.lam, self.sigma)

    @property
    def levels(self) -> int:
        """``K``, the number of turning points (downsamplings)."""
        return len(self.turning_points)

    @property
    def num_steps(self) -> int:
        return self.lam.shape[1]

    def stage_of(self, t: Tensor | int) -> Tensor:
        """The stage ``k`` of each index ``t``: the number of turning points ``T_k <= t``."""
        t = torch.as_tensor(t)
        bounds = torch.tensor(self.turning_points, dtype=torch.long, device=t.device)
        return (t.unsqueeze(-1) >= bounds).sum(-1) if self.levels else torch.zeros_like(t)

    def stage_bounds(self, k: int) -> tuple[int, int]:
        """The indices ``[start, stop)`` of stage ``k``."""
        edges = [0, *self.turning_points, self.num_steps]
        return edges[k], edges[k + 1]

    def at(self, t: Tensor | int, k: int = 0) -> tuple[list[Tensor], list[Tensor]]:
        """``(lambdas, sigmas)`` of components ``k .. K`` at indices ``t`` (``-1`` = data), each ``[B]``."""
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        lam = torch.cat([torch.ones_like(self.lam[:, :1]), self.lam], dim=1).to(t.device)[:, t + 1]
        sig = torch.cat([torch.zeros_like(self.sigma[:, :1]), self.sigma], dim=1).to(t.device)[:, t + 1]
        return list(lam[k:]), list(sig[k:])


def make_dvdp_schedule(
    turning_points: Sequence[int],
    num_steps: int = 1000,
    schedule: BetaSchedule = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    lambda_end: float = 1e-2,
    process: Process = "dvdp",
) -> DVDPSchedule:
    """The attenuated schedule built from a base DDPM schedule ``alpha_bar``.

    Every component shares the base noise ``sigma_t = sqrt(1 - alpha_bar_t)`` (white noise, as in DDPM).
    The retained component ``K`` keeps ``lambda_{K,t} = sqrt(alpha_bar_t)``. ``process="dvdp"`` attenuates
    component ``i < K`` further by a factor log-linear in time that reaches ``lambda_{i,T_{i+1}} =
    lambda_end`` at its turning point and stays constant after it (a linear tilt of its log-SNR):
    the attenuation ratio only decreases, so Eq. 7 holds. ``process="subspace"`` (Jing et al. 2022) shares
    ``lambda_t = sqrt(alpha_bar_t)`` across components.
    """
    tps = tuple(int(t) for t in turning_points)
    alpha_bar = alphas_cumprod(make_betas(schedule, num_steps, beta_start, beta_end))
    base_lam, base_sig = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    lam = base_lam.repeat(len(tps) + 1, 1)
    if process == "dvdp":
        paper_time = torch.arange(1, num_steps + 1, dtype=torch.float64)
        for i, turn in enumerate(tps):
            if not 1 <= turn < num_steps:
                raise ValueError(f"turning points must lie in [1, {num_steps - 1}], got {list(tps)}")
            if not 0 < lambda_end < float(base_lam[turn - 1]):
                raise ValueError(
                    f"lambda_end must be in (0, {float(base_lam[turn - 1]):.4g}) (base sqrt(alpha_bar) at "
                    f"turning point {turn}), got {lambda_end}"
                )
            log_gain = math.log(lambda_end / float(base_lam[turn - 1]))
            lam[i] = base_lam * torch.exp((paper_time.clamp(max=turn) / turn) * log_gain)
    elif process != "subspace":
        raise ValueError(f"unknown process {process!r}; expected 'dvdp' or 'subspace'")
    return DVDPSchedule(tps, lam, base_sig.repeat(len(tps) + 1, 1))


# --------------------------------------------------------------------------------------------------------
# Forward process
# --------------------------------------------------------------------------------------------------------


def _single_stage(schedule: DVDPSchedule, t: Tensor | int) -> int:
    stages = schedule.stage_of(t).unique()
    if stages.numel() != 1:
        raise ValueError(f"all timesteps of one call must lie in one stage, got stages {stages.tolist()}")
    return int(stages)


def stage_data(x0: Tensor, k: int) -> Tensor:
    """``x_0^k = D^k x_0 = 2^k P^k x_0``: the data as stage ``k`` sees it (orthonormal coordinates)."""
    return down(x0, k)


def marginal(x0: Tensor, noise: Tensor, schedule: DVDPSchedule, t: Tensor | int) -> Tensor:
    """Closed-form ``x_t^k`` (Eqs. 5, 6) for full-resolution ``x0`` and stage-resolution white ``noise``.

    All ``t`` must lie in one stage ``k``; the result has resolution ``H / 2^k``.
    """
    k = _single_stage(schedule, t)
    lam, sig = schedule.at(t, k)
    return apply_components(stage_data(x0, k), lam) + apply_components(noise, sig)


def forward_step(x_prev: Tensor, noise: Tensor, schedule: DVDPSchedule, t: Tensor | int, k: int) -> Tensor:
    """One Markov step ``x_{t-1}^k -> x_t^k`` of the stage-``k`` ADP (Eq. 7)."""
    lam, sig = schedule.at(t, k)
    lam_prev, sig_prev = schedule.at(torch.as_tensor(t) - 1, k)
    ratio = [a / b for a, b in zip(lam, lam_prev, strict=True)]
    std = [(s**2 - r**2 * sp**2).clamp(min=0).sqrt() for s, r, sp in zip(sig, ratio, sig_prev, strict=True)]
    return apply_components(x_prev, ratio) + apply_components(noise, std)


# --------------------------------------------------------------------------------------------------------
# Reverse process
# --------------------------------------------------------------------------------------------------------


def reverse_step(
    x_t: Tensor,
    eps: Tensor,
    schedule: DVDPSchedule,
    t: int,
    t_prev: int,
    k: int,
    noise: Tensor | None,
    *,
    sampler: Literal["ddpm", "ddim"] = "ddpm",
    eta: float = 0.0,
    clip_x0: float | None = None,
) -> Tensor:
    """One reverse step ``x_t^k -> x_{t_prev}^k`` within stage ``k`` (Eq. 10), per component.

    The predicted data ``x_0^k = sum_i (c_i(x_t) - sigma_i c_i(eps)) / lambda_i`` is clamped to
    ``[-2^k clip_x0, 2^k clip_x0]`` (the range of ``D^k x_0``) when ``clip_x0`` is set, and ``eps`` is then
    recomputed from the clipped ``x_0`` (OpenAI's DDIM convention, not diffusers'), so that DDIM with
    ``eta = 1`` is exactly the ancestral step even where clipping acts. ``"ddpm"`` takes the
    posterior ``q(x_prev | x_t, x_0)`` of each component (mean and variance below, "fixed small");
    ``"ddim"`` takes ``lambda'_i x0_i + sqrt(sigma'^2 - s_i^2) eps_i + s_i z_i`` with
    ``s_i = eta * posterior std``. ``t_prev = -1`` steps to the data (no noise).
    """
    lam, sig = schedule.at(t, k)
    lam_p, sig_p = schedule.at(t_prev, k)
    x0 = apply_components(x_t - apply_components(eps, sig), [1 / a for a in lam])
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0 * 2**k, clip_x0 * 2**k)
        eps = apply_components(x_t - apply_components(x0, lam), [1 / s for s in sig])  # consistent with x0
    ratio = [a / b for a, b in zip(lam, lam_p, strict=True)]
    q2 = [(s**2 - r**2 * sp**2).clamp(min=0) for s, r, sp in zip(sig, ratio, sig_p, strict=True)]
    post_var = [sp**2 * q / s**2 for sp, q, s in zip(sig_p, q2, sig, strict=True)]
    if sampler == "ddpm":
        mean = apply_components(x0, [lp * q / s**2 for lp, q, s in zip(lam_p, q2, sig, strict=True)])
        mean = mean + apply_components(
            x_t, [r * sp**2 / s**2 for r, sp, s in zip(ratio, sig_p, sig, strict=True)]
        )
        std = [v.sqrt() for v in post_var]
    elif sampler == "ddim":
        std = [eta * v.sqrt() for v in post_var]
        direction = [(sp**2 - s**2).clamp(min=0).sqrt() for sp, s in zip(sig_p, std, strict=True)]
        mean = apply_components(x0, lam_p) + apply_components(eps, direction)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; expected 'ddpm' or 'ddim'")
    if t_prev < 0 or not any(bool((s > 0).any()) for s in std):
        return mean
    if noise is None:
        raise ValueError("reverse_step needs `noise` for a stochastic step")
    return mean + apply_components(noise, std)


def turning_point_up(x: Tensor, schedule: DVDPSchedule, t: int, k: int, noise: Tensor) -> Tensor:
    """Eq. 11 at index ``t = T_k - 1``: ``x^{k-1} = D^T x^k + sigma_{k-1,t} (I - N P) z``, ``z`` at stage
    ``k - 1``'s resolution. The added noise replaces exactly the noise component the forward ``D`` dropped;
    the attenuated data component ``lambda_{k-1,t} v_{k-1}`` is neglected (Theorem 1)."""
    _, sig = schedule.at(t, k - 1)
    return up(x) + expand_like(sig[0], noise) * complement(noise)


def sampling_timesteps(
    schedule: DVDPSchedule, steps: int | None, spacing: TimestepSpacing = "trailing"
) -> list[int]:
    """Descending indices to visit: all ``T`` when ``steps`` is None, else ``timestep_subsequence`` with
    ``spacing`` (default ``"trailing"``: starts at ``T - 1``, the pure noise sampling starts from); every
    turning index ``T_k - 1`` is added so that each upsampling happens exactly where Eq. 11 applies."""
    num = schedule.num_steps
    ts = set(range(num)) if steps is None else set(timestep_subsequence(num, steps, spacing).tolist())
    ts |= {tp - 1 for tp in schedule.turning_points}
    return sorted(ts, reverse=True)


def dvdp_sample(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    schedule: DVDPSchedule,
    timesteps: Sequence[int],
    *,
    sampler: Literal["ddpm", "ddim"] = "ddpm",
    eta: float = 0.0,
    clip_x0: float | None = None,
    generator: Generators = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Run the reverse DVDP from ``x_T`` (white noise at the lowest stage's resolution) to an image.

    ``timesteps`` must be descending and contain every ``T_k - 1`` (see :func:`sampling_timesteps`). The
    result is ``x_0^0`` at full resolution, in data coordinates; ``progress`` shows a bar over the steps.
    ``generator`` may be one per row (turning-point noise included); ``callback`` sees every step, after
    any upsampling (:mod:`rezdiff.core.sampling`).
    """
    ts = list(timesteps)
    x = x_T
    for i, t in enumerate(progress_bar(ts, progress, f"DVDP {sampler}")):
        k = int(schedule.stage_of(t))
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        k_prev = int(schedule.stage_of(t_prev)) if t_prev >= 0 else 0
        if k_prev not in (k, k - 1) or (k_prev == k - 1 and t_prev != schedule.turning_points[k - 1] - 1):
            raise ValueError(
                f"timesteps must contain every turning index T_k - 1; cannot step {t} -> {t_prev}"
            )
        eps = eps_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        noise = randn_like(x, generator) if t_prev >= 0 and (sampler == "ddpm" or eta > 0) else None
        x_new = reverse_step(x, eps, schedule, t, t_prev, k, noise, sampler=sampler, eta=eta, clip_x0=clip_x0)
        if k_prev == k - 1:
            z = randn_like(upsample(x_new), generator)
            x_new = turning_point_up(x_new, schedule, t_prev, k, z)
        x = after_step(callback, StepInfo(i, t, t_prev if t_prev >= 0 else None, x, x_new, eps))
    return x
