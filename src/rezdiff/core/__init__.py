"""Diffusion mathematics as small pure functions: schedules, Gaussian processes, spectral operators, EMA.

Tensors in, tensors out; no Lightning and no trainable parameters (the EMA only holds a frozen copy).
"""

from typing import Any

from rezdiff.core.ema import EMA
from rezdiff.core.gaussian import (
    Coeff,
    EpsFn,
    Operator,
    ddim_step,
    ddpm_step,
    eps_from_v,
    expand_like,
    predict_eps,
    predict_v,
    predict_x0,
    q_posterior,
    q_sample,
    randn,
    randn_like,
    sample_timesteps,
    vp_heun_step,
    vp_ode_drift,
    vp_reverse_step,
    x0_from_v,
)
from rezdiff.core.loops import ddim_sample, ddpm_sample, vp_integrate, vp_sample
from rezdiff.core.operators import MOVED, Boundary, LaplacianKind, dct2, idct2, laplacian_eigenvalues
from rezdiff.core.samplers import get_sampler, register_sampler, sampler_names
from rezdiff.core.sampling import SamplerSettings, StepInfo, VPSchedule
from rezdiff.core.schedules import (
    BetaSchedule,
    TimestepSpacing,
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

__all__ = [
    "EMA",
    "SamplerSettings",
    "StepInfo",
    "VPSchedule",
    "get_sampler",
    "register_sampler",
    "sampler_names",
    "BetaSchedule",
    "Boundary",
    "Coeff",
    "EpsFn",
    "LaplacianKind",
    "Operator",
    "TimestepSpacing",
    "alphas_cumprod",
    "cosine_alpha_bar",
    "cosine_betas",
    "dct2",
    "ddim_sample",
    "ddim_step",
    "ddpm_sample",
    "ddpm_step",
    "eps_from_v",
    "expand_like",
    "idct2",
    "laplacian_eigenvalues",
    "linear_betas",
    "make_betas",
    "predict_eps",
    "predict_v",
    "predict_x0",
    "q_posterior",
    "q_sample",
    "randn",
    "randn_like",
    "sample_timesteps",
    "timestep_subsequence",
    "vp_alpha_bar",
    "vp_beta",
    "vp_integrated_beta",
    "vp_marginal",
    "vp_heun_step",
    "vp_ode_drift",
    "vp_reverse_step",
    "vp_integrate",
    "vp_sample",
    "x0_from_v",
]


def __getattr__(name: str) -> Any:
    """A name that moved to its family's folder (``operators.MOVED``: the mollifier, the covariances),
    read through with one FutureWarning."""
    from rezdiff.moved import moved_attribute

    return moved_attribute(__name__, name, MOVED)
