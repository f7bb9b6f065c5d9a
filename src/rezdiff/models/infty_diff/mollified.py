"""∞-Diff's mollified diffusion (Bond-Taylor & Willcocks, paper §3.2 and Appendix B).

With ``T`` the Gaussian mollifier (:class:`~.mollifier.GaussianMollifier`) the forward marginal
is ``x_t = sqrt(ab) T x_0 + sqrt(1 - ab) T eps`` (Eq. 9), computed on the *full* pixel grid (``T`` is a
global operator) and only then read at the sampled pixels. The network predicts ``T eps``; the posterior
``q(x_{t-1} | x_t, x_0)`` is DDPM's with ``x_0`` replaced by ``T x_0`` and covariance ``beta_tilde T T*``
(Eq. 10). So the reverse steps of :mod:`rezdiff.core.gaussian` apply unchanged in the T-space, with
``noise_operator`` = the mollifier; this module adds what is specific to ∞-Diff:

* **Other resolutions.** A grid ``f = R / R0`` times finer than the training grid holds the same functions:
  the blur becomes ``std * f`` pixels (:meth:`GaussianMollifier.scaled`). For ``f >= 1`` the white noise is
  multiplied by ``f``, so ``T'(f eps)`` is the same random field as ``T eps`` (per-pixel variance
  ``1 / (4 pi std^2)``). Below the training resolution that is false: the blur of ``std * f < 1`` pixel no
  longer band-limits the field within the coarse grid's band, and ``T'(f eps)`` loses the variance beyond
  it (exact per-pixel variance away from the borders 0.0755 at 0.5x and 0.0430 at 0.25x instead of
  0.0796 for ``std = 1``). So for
  ``f < 1`` the noise is the *point values* of the same continuum field at the coarse pixel centres (its
  spectrum folded onto the grid, :meth:`GaussianMollifier.noise_multiplier`); sampling below ``R0`` thus
  means drawing the model's continuous image at fewer, sparser points (the network's kernels shrink to
  ``>= 3`` taps). Every function here takes the already scaled mollifier and the factor ``f``.
* **Reference denoisers.** :func:`gaussian_data_eps` is the exact ``E[T(f eps) | x_t]`` for Gaussian data
  (a one-point data set when ``std = 0``): the closed form that tests of the samplers and of the inverse
  problems run against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rezdiff.core.gaussian import Coeff, Operator, expand_like, q_sample, randn
from rezdiff.core.operators import dct2, idct2
from rezdiff.core.samplers import GAUSSIAN, get_sampler
from rezdiff.core.sampling import Callback, EpsAfterClip, EpsFn, Generators, SamplerSettings
from rezdiff.core.schedules import as_f64
from rezdiff.core.shapes import as_hw
from rezdiff.models.infty_diff.mollifier import GaussianMollifier

__all__ = [
    "gaussian_data_eps",
    "mollified_initial_state",
    "mollified_marginal",
    "mollified_noise_operator",
    "mollified_sample",
    "resolution_factor",
]


def resolution_factor(train_resolution: int | Sequence[int], resolution: int | Sequence[int]) -> float:
    """``f = R / R0``: how many times finer ``resolution`` is than ``train_resolution`` (ints or ``(H, W)``).

    For a change of aspect ratio the two axes differ; ``f`` is then their geometric mean
    ``sqrt(H W / (H0 W0))`` (the mollifier and the network's kernels are isotropic, one factor each).
    """
    h0, w0 = as_hw(train_resolution, "train_resolution")
    h, w = as_hw(resolution)
    return math.sqrt((h * w) / (h0 * w0))


def mollified_noise_operator(mollifier: GaussianMollifier, factor: float = 1.0) -> Operator:
    """``z -> T(f z)``: the noise of the mollified process on a grid ``f`` times finer than training.

    ``mollifier`` is the one of that grid (``base.scaled(f)``). For ``f < 1`` the operator is the folded
    one (:meth:`GaussianMollifier.noise`): point values of the same field, not ``T(f z)``. Pass it as
    ``noise_operator`` to the steps of :mod:`rezdiff.core.gaussian`.
    """
    if factor == 1.0:
        return mollifier
    if factor > 1.0:
        return lambda z: mollifier(z * factor)
    return lambda z: mollifier.noise(z, factor)


def mollified_marginal(
    x0: Tensor, noise: Tensor, alpha_bar: Coeff, mollifier: GaussianMollifier, factor: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``(x_t, target)`` on the full grid: ``x_t = sqrt(ab) T x_0 + sqrt(1 - ab) T(f eps)``, ``target =
    T(f eps)`` (what the network predicts). ``x0``, ``noise``: ``[B, C, H, W]``; one DCT pass for both."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
    if factor < 1.0:  # the noise is folded, not T(f eps): two passes
        t_x0, target = mollifier(x0), mollified_noise_operator(mollifier, factor)(noise)
    else:
        t_x0, target = mollifier(torch.cat([x0, noise * factor])).split(x0.shape[0])
    return q_sample(t_x0, target, alpha_bar), target


def mollified_initial_state(
    shape: Sequence[int],
    mollifier: GaussianMollifier,
    factor: float = 1.0,
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``x_T = T(f eps)``, ``eps`` white (drawn by :func:`~rezdiff.core.gaussian.randn`), ``[B, C, H, W]``."""
    return mollified_noise_operator(mollifier, factor)(randn(tuple(shape), generator, device, dtype))


def gaussian_data_eps(
    x_t: Tensor,
    alpha_bar: Coeff,
    mollifier: GaussianMollifier,
    mean: Tensor,
    std: float = 0.0,
    factor: float = 1.0,
) -> Tensor:
    """The exact mollified-noise predictor ``E[T(f eps) | x_t]`` for data ``x_0 ~ N(mean, std^2 I)``.

    With ``y = T^{-1} x_t = sqrt(ab) x_0 + sqrt(1 - ab) f eps`` (pixel-wise independent), Gaussian
    conditioning gives ``E[f eps | y] = sqrt(1 - ab) f^2 (y - sqrt(ab) mean) / (ab std^2 + (1 - ab) f^2)``;
    ``T`` is linear, so no inverse blur is needed. ``std = 0`` is a one-point data set ``{mean}``, for which
    every sampler must return ``T mean`` exactly. For ``f < 1`` (folded noise, multiplier ``n`` against
    ``T``'s ``m``) the same conditioning runs per DCT mode: gain ``sqrt(1 - ab) n^2 / (ab m^2 std^2 +
    (1 - ab) n^2)``.
    """
    ab = as_f64(alpha_bar)
    residual = x_t - expand_like(ab.sqrt(), x_t) * mollifier(mean.to(x_t))
    if factor >= 1.0 or std == 0:
        gain = (1 - ab).sqrt() * factor**2 / (ab * std**2 + (1 - ab) * factor**2)
        return expand_like(gain, x_t) * residual
    height, width = x_t.shape[-2:]
    m2 = mollifier.multiplier(height, width).to(x_t.device) ** 2
    n2 = mollifier.noise_multiplier(height, width, factor).to(x_t.device) ** 2
    ab = expand_like(ab.to(x_t.device), x_t)
    gain = (1 - ab).sqrt() * n2 / (ab * m2 * std**2 + (1 - ab) * n2)
    return idct2(gain.to(x_t.dtype) * dct2(residual))


def mollified_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor | Sequence[int],
    mollifier: GaussianMollifier,
    factor: float = 1.0,
    *,
    sampler: str = "ddim",
    eta: float = 0.0,
    generator: Generators = None,
    clip_x0: float | None = None,
    eps_after_clip: EpsAfterClip = "network",
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Reverse the mollified process from ``x_T`` (:func:`mollified_initial_state`); returns ``T x_0``.

    ``eps_fn(x_t, t)`` predicts ``T(f eps)``. ``sampler`` is any sampler of the ``"gaussian"`` process
    (:mod:`rezdiff.core.samplers`) run in the T-space with fresh noise ``T(f z)``: ``"ddim"`` (Eq. 6 in the
    T-space; ``eta > 0`` adds ``T(f z)``) or ``"ddpm"`` (posterior covariance ``beta_tilde T T*``, Eq. 10)
    over ``timesteps``. ``clip_x0`` clips the predicted ``T x_0`` (a blur of an image in [-1, 1] stays in
    [-1, 1]); ``eps_after_clip`` is DDIM's ε after that clip (:func:`~rezdiff.core.gaussian.ddim_step`; the
    ancestral step reads only ``T x_0``). Deblurring the result (``mollifier.deblur``) is the caller's choice.
    """
    settings = SamplerSettings(
        eta=eta,
        clip_x0=clip_x0,
        eps_after_clip=eps_after_clip,
        noise_operator=mollified_noise_operator(mollifier, factor),
        progress=progress,
    )
    run = get_sampler(GAUSSIAN, sampler).fn
    return run(eps_fn, x_T, alphas_cumprod, timesteps, settings, generator, callback)
