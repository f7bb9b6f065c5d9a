"""Inverse problems with ∞-Diff (paper §5): super-resolution through the diffusion autoencoder, and
inpainting with reconstruction guidance.

**Super-resolution** (:func:`super_resolve`): encode the low-resolution image (the encoder is a neural
operator: it reads any grid, with its kernels resized by ``R_low / R0``), then sample at the higher
resolution conditioned on that code. The paper notes the limit of this simple scheme: what the code does not
hold is re-invented, not recovered.

**Inpainting** (:func:`inpaint`, :func:`guided_inpaint_sample`): DDIM in the T-space where every step is
followed by the paper's reconstruction-guidance move (after Ho et al. 2022)

``x_{t-1} <- x_{t-1} - lambda_t grad_{x_t} 1/2 || m * (mu_0(x_t, t) - T x_known) ||^2``,

``mu_0`` the network's estimate of ``T x_0``. The step size is ``lambda_t = w sqrt(ab_t ab_{t-1})``:
Ho et al.'s weight ``w ab_t^{1/2}`` on the ``x_0`` estimate, carried into ``x_{t-1}`` by DDIM's
``sqrt(ab_{t-1})``. With a denoiser whose Jacobian is the identity, ``w = 1`` moves the known part of the
estimate all the way onto the data, so ``guidance_scale`` is a fraction, not a resolution- or
step-dependent number. Two choices the paper leaves open, both measured with the exact Gaussian denoiser and
a briefly trained model (``models/infty_diff/README.md``): no guidance at ``t = T - 1`` (the state is pure
noise; the exact correction there is nil, while a trained network's error in ``mu_0`` is amplified by
``1 / sqrt(ab_{T-1})``), and ``"linspace"`` spacing by default (it starts at ``T - 1`` *and* ends with a
step at ``t = 0``, the only step where the correction is complete; few ``"trailing"`` steps end at
``t = T / n`` and leave the known region partly uncorrected). ``T x_known`` is the *normalised* blur of
the known pixels, ``T(m x) / T(m)``, so the pixels outside the mask are never read (the paper blurs the
whole image, which lets whatever the unknown region holds leak in near the mask's border).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rezdiff.core.gaussian import predict_x0
from rezdiff.core.loops import ddim_sample
from rezdiff.core.sampling import EpsAfterClip, EpsFn, Generators, StepInfo, resolve_generators
from rezdiff.core.schedules import TimestepSpacing, timestep_subsequence
from rezdiff.data.coords import Resolution, as_hw
from rezdiff.models.infty_diff.mollified import mollified_initial_state, mollified_noise_operator
from rezdiff.models.infty_diff.mollifier import GaussianMollifier

if TYPE_CHECKING:
    from rezdiff.models.infty_diff import InftyDiff

__all__ = [
    "INPAINT_SPACING",
    "ReconstructionGuidance",
    "blurred_known",
    "guided_inpaint_sample",
    "inpaint",
    "super_resolve",
]

INPAINT_SPACING: TimestepSpacing = "linspace"
"""Inpainting's default time grid: it starts at ``T - 1`` and ends at ``t = 0`` (module docstring)."""


def _require_model(model: object) -> InftyDiff:
    from rezdiff.models.infty_diff import InftyDiff

    if not isinstance(model, InftyDiff):
        raise TypeError(f"expected an InftyDiff model, got {type(model).__name__}")
    return model


def _as_mask(mask: Tensor, images: Tensor) -> Tensor:
    """``mask`` (bool or 0/1; ``[H, W]``, ``[B|1, 1|C, H, W]``) as a float tensor broadcastable to images."""
    if mask.dim() == 2:
        mask = mask[None, None]
    if mask.dim() != 4 or mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"mask must be [H, W] or [B, 1|C, H, W] with the images' size {tuple(images.shape[-2:])}, "
            f"got {tuple(mask.shape)}"
        )
    if mask.shape[0] not in (1, images.shape[0]) or mask.shape[1] not in (1, images.shape[1]):
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast against images {tuple(images.shape)}")
    mask = mask.to(device=images.device, dtype=images.dtype)
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("mask must hold 0 (unknown) and 1 (known) only")
    return mask


def blurred_known(images: Tensor, mask: Tensor, mollifier: GaussianMollifier, floor: float = 1e-3) -> Tensor:
    """``T(m x) / T(m)``: the mollified image estimated from the known pixels only (``mask`` 1 = known).

    Equal to ``T x`` wherever the whole blur window is known, and a locally weighted mean of the known
    pixels elsewhere; where ``T(m) < floor`` (far from any known pixel) it is 0 (the mask hides it anyway).
    """
    mask = mask.expand_as(images)
    weight = mollifier(mask)
    return torch.where(weight > floor, mollifier(images * mask) / weight.clamp(min=floor), 0.0)


class ReconstructionGuidance:
    """∞-Diff's inpainting guidance as an ε-function wrapper and a step callback (module docstring).

    :meth:`eps` calls the network with gradients and keeps ``grad_{x_t} 1/2 ||m (mu_0(x_t) - target)||^2``
    (not at ``t = T - 1``, nor when ``guidance_scale = 0``); :meth:`callback` subtracts
    ``guidance_scale sqrt(ab_t ab_next)`` times it from the sampler's new state (``ab_next = 1`` at the end).
    """

    def __init__(
        self, eps_fn: EpsFn, alphas_cumprod: Tensor, target: Tensor, mask: Tensor, scale: float
    ) -> None:
        self.eps_fn, self.alphas_cumprod, self.target, self.mask = eps_fn, alphas_cumprod, target, mask
        self.scale = scale
        self._grad: Tensor | None = None

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """The network's ε at ``(x, t)`` (detached); the guidance gradient is kept for :meth:`callback`."""
        step = int(t[0])
        guided = self.scale != 0 and step != self.alphas_cumprod.shape[0] - 1  # nothing to correct in noise
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(guided)
            eps = self.eps_fn(x_in, t)
            self._grad = None
            if guided:
                x0 = predict_x0(x_in, eps, self.alphas_cumprod[step])
                error = 0.5 * (self.mask * (x0 - self.target)).square().sum()
                (self._grad,) = torch.autograd.grad(error, x_in)
        return eps.detach()

    def callback(self, info: StepInfo) -> Tensor | None:
        """``x_{t-1} - w sqrt(ab_t ab_next) grad``, or ``None`` where the step was not guided."""
        grad, self._grad = self._grad, None
        if grad is None:
            return None
        ab_t = self.alphas_cumprod[int(info.t)]
        ab_next = (
            self.alphas_cumprod.new_ones(()) if info.t_next is None else self.alphas_cumprod[int(info.t_next)]
        )
        return info.x - self.scale * float((ab_t * ab_next).sqrt()) * grad


def guided_inpaint_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor | Sequence[int],
    mollifier: GaussianMollifier,
    target: Tensor,
    mask: Tensor,
    guidance_scale: float = 1.0,
    factor: float = 1.0,
    *,
    eta: float = 0.0,
    generator: Generators = None,
    clip_x0: float | None = None,
    eps_after_clip: EpsAfterClip = "network",
    progress: bool = False,
) -> Tensor:
    """DDIM over ``timesteps`` in the T-space with reconstruction guidance towards ``target`` (= ``T x`` on
    the known pixels, ``mask`` 1 = known); returns the final state (an estimate of ``T x_0``).

    :func:`rezdiff.core.loops.ddim_sample` (noise ``T(f z)`` when ``eta > 0``) driven by
    :class:`ReconstructionGuidance`: after each step, except at ``t = T - 1``, ``- w sqrt(ab_t ab_prev)
    grad_{x_t} 1/2 ||m (mu_0 - target)||^2`` (module docstring). ``guidance_scale = 0`` is plain DDIM, draw
    for draw. ``clip_x0`` and ``eps_after_clip`` act in the DDIM step as in
    :func:`rezdiff.core.gaussian.ddim_step`.
    """
    guide = ReconstructionGuidance(eps_fn, alphas_cumprod, target, mask, guidance_scale)
    out = ddim_sample(
        guide.eps,
        x_T.detach(),
        alphas_cumprod,
        timesteps,
        eta=eta,
        generator=generator,
        clip_x0=clip_x0,
        eps_after_clip=eps_after_clip,
        noise_operator=mollified_noise_operator(mollifier, factor),
        progress=progress,
        callback=guide.callback,
    )
    return out.detach()


def inpaint(
    model: InftyDiff,
    images: Tensor,
    mask: Tensor,
    *,
    guidance_scale: float = 1.0,
    steps: int | None = None,
    generator: Generators = None,
    seeds: Sequence[int] | None = None,
    use_ema: bool = True,
    z: Tensor | None = None,
    eta: float | None = None,
    spacing: TimestepSpacing | None = None,
    deblur: bool | None = None,
    paste_known: bool = False,
    progress: bool = False,
) -> Tensor:
    """Fill the unknown pixels of ``images [B, C, H, W]`` (in [-1, 1], any resolution) where ``mask`` is 0.

    DDIM with ``steps`` (default: the model's ``sample_steps``) spaced by ``spacing`` (default
    ``"linspace"``: from the pure noise at ``T - 1`` to a last step at ``t = 0``, where the guidance completes
    its correction; module docstring) and reconstruction guidance of
    strength ``guidance_scale`` (1 = the full correction of the known pixels of the ``x_0`` estimate at every
    step; see the module docstring). A diffusion autoencoder is conditioned on ``z`` if given, else on the
    code of the *known pixels alone* (its encoder reads any point set). Returns images in [-1, 1], deblurred
    unless ``deblur=False`` (default: the model's ``deblur``); ``paste_known`` copies the known pixels
    back in. ``seeds`` (one per image, instead of ``generator``): image k draws all its noise from its seed.
    """
    model = _require_model(model)
    if images.dim() != 4 or images.shape[1] != model.channels:
        raise ValueError(f"images must be [B, {model.channels}, H, W], got {tuple(images.shape)}")
    generator = resolve_generators(images.shape[0], generator, seeds)
    images = images.to(model.device)
    mask = _as_mask(mask, images)
    resolution = as_hw(tuple(images.shape[-2:]))
    mollifier, factor = model.process_at(resolution)
    if model.latent_dim is not None and z is None:
        z = model.encode_known(images, mask, use_ema=use_ema)
    target = blurred_known(images, mask, mollifier)
    timesteps = timestep_subsequence(
        model.num_train_steps, steps or model.sample_steps, spacing or INPAINT_SPACING
    )
    x_T = mollified_initial_state(images.shape, mollifier, factor, generator, model.device)
    eps_fn = model.denoiser(resolution, z=z, use_ema=use_ema)
    with model.eval_mode():
        out = guided_inpaint_sample(
            eps_fn,
            x_T,
            model.alphas_cumprod,
            timesteps,
            mollifier,
            target,
            mask,
            guidance_scale,
            factor,
            eta=model.eta if eta is None else eta,
            generator=generator,
            clip_x0=1.0 if model.clip_denoised else None,
            eps_after_clip=model.eps_after_clip,
            progress=progress,
        )
    out = model.finish(out, mollifier, deblur)
    return torch.where(mask.expand_as(out) > 0, images, out) if paste_known else out


@torch.no_grad()
def super_resolve(
    model: InftyDiff,
    low_res_images: Tensor,
    resolution: Resolution,
    *,
    steps: int | None = None,
    generator: Generators = None,
    seeds: Sequence[int] | None = None,
    use_ema: bool = True,
    eta: float | None = None,
    spacing: TimestepSpacing | None = None,
    deblur: bool | None = None,
    progress: bool = False,
) -> Tensor:
    """``low_res_images [B, C, h, w]`` (any size) -> ``[B, C, H, W]`` at ``resolution`` (paper §5): the
    diffusion autoencoder's code of the low-resolution images conditions pixel-level DDIM on the new grid;
    ``seeds`` as in :func:`inpaint`."""
    model = _require_model(model)
    if model.latent_dim is None:
        raise ValueError(
            "super_resolve needs an InftyDiff diffusion autoencoder (latent_dim set): the low-resolution "
            "image enters through its code"
        )
    z = model.encode(low_res_images.to(model.device), use_ema=use_ema)
    return model.sample(
        low_res_images.shape[0],
        resolution,
        steps=steps,
        generator=generator,
        seeds=seeds,
        use_ema=use_ema,
        z=z,
        eta=eta,
        spacing=spacing,
        deblur=deblur,
        progress=progress,
    )
