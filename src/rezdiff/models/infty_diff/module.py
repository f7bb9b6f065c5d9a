"""∞-Diff (Bond-Taylor & Willcocks 2024): mollified diffusion trained on random pixel subsets, sampled on any
grid. Mathematics in :mod:`.mollified`, the network in :mod:`.network`; choices, deviations
and results in this folder's README."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rezdiff.core.gaussian import EpsAfterClip, EpsFn, check_eps_after_clip, randn_like, sample_timesteps
from rezdiff.core.samplers import GAUSSIAN, get_sampler
from rezdiff.core.sampling import Callback, Generators, resolve_generators
from rezdiff.core.schedules import TimestepSpacing, alphas_cumprod, cosine_betas, timestep_subsequence
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution, as_hw, gather_pixels
from rezdiff.models.base import DiffusionModule, resolution_or, step_generator
from rezdiff.models.infty_diff.mollified import (
    mollified_initial_state,
    mollified_marginal,
    mollified_sample,
    resolution_factor,
)
from rezdiff.models.infty_diff.mollifier import GaussianMollifier
from rezdiff.models.infty_diff.network import InftyDiffEncoder, InftyDiffNet, LatentConditioning
from rezdiff.models.infty_diff.sparse import Backend
from rezdiff.models.optimization import EMASettings, class_spec

DEFAULT_OPTIMIZER = class_spec("torch.optim.AdamW", lr=5e-5, betas=[0.9, 0.99], weight_decay=0.0)
"""The optimiser of ``optimizer``'s default (see the family README for its source)."""
DEFAULT_EMA = EMASettings(decay=0.995, update_every=10, warmup=False)
"""The EMA of ``ema``'s default."""

__all__ = ["InftyDiff"]

# Images kept from the last training batch of a diffusion autoencoder, to preview reconstructions.
_PREVIEW = 16


class InftyDiffNetworks(nn.Module):
    """The denoiser and, for the diffusion autoencoder, its encoder: one module, so that the optimiser and
    the EMA cover both."""

    def __init__(self, denoiser: InftyDiffNet, encoder: InftyDiffEncoder | None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.encoder = encoder


def _accepted(cls: type, arguments: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``arguments`` that ``cls.__init__`` takes (the encoder takes a subset of the net's)."""
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in arguments.items() if k in names}


def _all_pixels(batch: int, height: int, width: int, device: torch.device) -> Tensor:
    return torch.arange(height * width, device=device).expand(batch, -1)


def _random_pixels(
    batch: int, total: int, count: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """``[batch, count]`` sorted distinct flat indices out of ``total``, one uniform subset per row."""
    keys = torch.rand((batch, total), generator=generator, device=generator.device)
    return keys.argsort(dim=1)[:, :count].sort(dim=1).values.to(device)


class InftyDiff(DiffusionModule):
    """∞-Diff: the network predicts the mollified noise ``T eps`` at a random subset of pixels.

    Training (``loss``) needs the ``RandomPixels`` data view: the whole image is mollified on the full grid
    (``T`` = Gaussian blur of ``mollifier_std`` pixels at ``train_resolution``, DCT, reflecting borders),
    noised, and read at the batch's pixels; MSE to ``T eps`` there. With ``latent_dim`` the model is the
    paper's diffusion autoencoder: an encoder reads the *clean* image on its own random subset of pixels
    (as many as the batch's, drawn from the step's generator) and its code modulates the denoiser
    (``latent_conditioning``: ``"scale"``, the authors' ``1 + mlp(z)`` in every sparse block and U-Net
    resnet, or ``"embedding"``, z added to the U-Net's time embedding; :class:`.network.InftyDiffNet`).

    Sampling (``sample``) runs on every pixel of any grid: a grid ``f = R / R0`` times finer starts from
    ``T'(f eps)`` with ``T'`` the blur of ``std * f`` pixels (below 1x the point values of that field,
    :func:`~.mollified.mollified_noise_operator`), and the network's kernels are resized by ``f``.
    It returns the Wiener-deblurred estimate of ``x_0`` (inverse SNR ``wiener_inverse_snr``, the images the
    paper shows) in [-1, 1], or the mollified sample ``T x_0`` itself with ``deblur=False``.

    Defaults are the paper's (Appendix A): cosine schedule with 1000 steps, DDIM with 100 steps and
    ``eta = 0`` from ``t = T - 1`` (``spacing="trailing"``; the authors' timesteps, set by the paper configs,
    are ``"linspace"``'s), ε re-derived from the clipped ``T x_0`` (``eps_after_clip="from_x0"``, the
    authors' code), Adam with lr 5e-5 and betas (0.9, 0.99), EMA 0.995 every 10 steps (started as an exact
    copy of the network); gradient clipping (1.0) is trainer configuration.
    """

    # checkpoints from before latent_conditioning added Linear(z) to the time embedding
    recorded_defaults: ClassVar[dict[str, Any]] = {"latent_conditioning": "embedding"}
    sampler_process = GAUSSIAN

    def __init__(
        self,
        channels: int = 3,
        train_resolution: int = 256,
        sparse_width: int = 64,
        sparse_blocks: int = 3,
        kernel_size: int = 7,
        mlp_ratio: int = 2,
        inner_resolution: int = 128,
        inner_channels: int = 128,
        inner_multipliers: tuple[int, ...] = (1, 2, 4, 8, 8),
        inner_layers_per_block: int = 2,
        inner_attention_resolutions: tuple[int, ...] = (16, 8),
        dropout: float = 0.1,
        depthwise: bool = True,
        backend: Backend = "auto",
        knn: int = 3,
        dropout_resolution: int = 16,
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        latent_dim: int | None = None,
        latent_conditioning: LatentConditioning = "scale",
        mollifier_std: float = 1.0,
        wiener_inverse_snr: float = 0.05,
        num_train_steps: int = 1000,
        sampler: str = "ddim",
        sample_steps: int = 100,
        spacing: TimestepSpacing = "trailing",
        eta: float = 0.0,
        clip_denoised: bool = True,
        eps_after_clip: EpsAfterClip = "from_x0",
        deblur: bool = True,
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema: EMASettings = DEFAULT_EMA,
    ) -> None:
        super().__init__(optimizers={"optimizer": optimizer}, lr_scheduler=lr_scheduler, ema=ema)
        self.save_hyperparameters()
        self.check_sampler(sampler)
        if train_resolution < 1:
            raise ValueError(f"train_resolution must be positive, got {train_resolution}")
        if latent_dim is not None and latent_dim < 1:
            raise ValueError(
                f"latent_dim must be positive (or None for an unconditional model), got {latent_dim}"
            )
        if not 1 <= sample_steps <= num_train_steps:
            raise ValueError(
                f"sample_steps must be in [1, num_train_steps={num_train_steps}], got {sample_steps}"
            )
        timestep_subsequence(num_train_steps, sample_steps, spacing)  # an unknown spacing fails here
        check_eps_after_clip(eps_after_clip)
        arguments = dict(
            channels=channels,
            sparse_width=sparse_width,
            sparse_blocks=sparse_blocks,
            kernel_size=kernel_size,
            mlp_ratio=mlp_ratio,
            inner_resolution=inner_resolution,
            inner_channels=inner_channels,
            inner_multipliers=tuple(inner_multipliers),
            inner_layers_per_block=inner_layers_per_block,
            inner_attention_resolutions=tuple(inner_attention_resolutions),
            dropout=dropout,
            depthwise=depthwise,
            backend=backend,
            knn=knn,
            dropout_resolution=dropout_resolution,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            latent_dim=latent_dim,
            latent_conditioning=latent_conditioning,
        )
        encoder = None if latent_dim is None else InftyDiffEncoder(**_accepted(InftyDiffEncoder, arguments))
        self.network = InftyDiffNetworks(InftyDiffNet(**arguments), encoder)
        self.channels = channels
        self.train_resolution = train_resolution
        self.latent_dim = latent_dim
        self.mollifier = GaussianMollifier(mollifier_std, wiener_inverse_snr)
        self.num_train_steps = num_train_steps
        self.sampler = sampler
        self.sample_steps = sample_steps
        self.spacing: TimestepSpacing = spacing
        self.eta = eta
        self.clip_denoised = clip_denoised
        self.eps_after_clip: EpsAfterClip = eps_after_clip
        self.deblur = deblur
        self.register_buffer(
            "alphas_cumprod", alphas_cumprod(cosine_betas(num_train_steps)), persistent=False
        )
        self._preview: Tensor | None = None
        self.setup_ema()

    @property
    def native_resolution(self) -> tuple[int, int]:
        """``train_resolution`` as ``(H, W)``: the default of ``sample()``, evaluation and sample grids."""
        return (self.train_resolution, self.train_resolution)

    # ----------------------------------------------------------------- resolution
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, with a clear error for weights of the other latent conditioning."""
        embedded = "network.denoiser.latent_embedding.weight" in state_dict
        if embedded != (self.network.denoiser.latent_embedding is not None) and self.latent_dim is not None:
            wanted = "embedding" if embedded else "scale"
            raise ValueError(
                f"these weights condition the U-Net on z the {wanted!r} way: build InftyDiff with "
                f"latent_conditioning={wanted!r} (checkpoints from before that option are 'embedding')"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def process_at(self, resolution: Resolution) -> tuple[GaussianMollifier, float]:
        """``(T', f)``: the mollifier of a grid ``f = R / R0`` times finer than training, and ``f``."""
        factor = resolution_factor(self.train_resolution, as_hw(resolution))
        return self.mollifier.scaled(factor), factor

    def finish(self, x: Tensor, mollifier: GaussianMollifier, deblur: bool | None = None) -> Tensor:
        """A final state ``T x_0`` as images in [-1, 1]: Wiener-deblurred unless ``deblur`` (default: the
        model's ``deblur``) is False."""
        if self.deblur if deblur is None else deblur:
            x = mollifier.deblur(x)
        return x.clamp(-1, 1)

    # ----------------------------------------------------------------- networks as functions
    def denoiser(self, resolution: Resolution, *, z: Tensor | None = None, use_ema: bool = True) -> EpsFn:
        """``eps_fn(x_t [B, C, H, W], t [B]) -> T eps`` on every pixel of ``resolution`` (kernels resized by
        ``R / R0``), conditioned on ``z [B, latent_dim]`` for the diffusion autoencoder."""
        height, width = as_hw(resolution)
        _, factor = self.process_at((height, width))
        net = self.sampling_network(use_ema).denoiser
        self._check_code(z)

        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            batch = x.shape[0]
            values = x.flatten(2).transpose(1, 2)
            index = _all_pixels(batch, height, width, x.device)
            out = net(values, index, (height, width), t, z, kernel_scale=factor)
            return out.transpose(1, 2).reshape(x.shape)

        return eps_fn

    def _check_code(self, z: Tensor | None) -> None:
        if self.latent_dim is None and z is not None:
            raise ValueError("this InftyDiff is unconditional (latent_dim=None); it takes no code z")
        if self.latent_dim is not None and z is not None and (z.dim() != 2 or z.shape[1] != self.latent_dim):
            raise ValueError(f"z must be [B, {self.latent_dim}], got {tuple(z.shape)}")

    @torch.no_grad()
    def encode(
        self,
        images: Tensor,
        *,
        index: Tensor | None = None,
        use_ema: bool = True,
    ) -> Tensor:
        """The diffusion autoencoder's code ``[B, latent_dim]`` of ``images [B, C, H, W]`` (any resolution).

        Reads every pixel by default (deterministic; the Monte-Carlo estimate of the encoder's integrals
        with the least variance), or only the flat pixel indices ``index [B, N]``.
        """
        if self.latent_dim is None:
            raise ValueError("encode() needs a diffusion autoencoder: build InftyDiff with latent_dim set")
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"images must be [B, {self.channels}, H, W], got {tuple(images.shape)}")
        images = images.to(self.device)
        batch, _, height, width = images.shape
        if index is None:
            index = _all_pixels(batch, height, width, images.device)
        _, factor = self.process_at((height, width))
        encoder = self.sampling_network(use_ema).encoder
        with self.eval_mode():
            return encoder(gather_pixels(images, index), index, (height, width), kernel_scale=factor)

    def encode_known(self, images: Tensor, mask: Tensor, *, use_ema: bool = True) -> Tensor:
        """The code of the pixels where ``mask`` (``[B|1, 1|C, H, W]``, 1 = known) is set in every channel."""
        known = (mask != 0).all(dim=1).flatten(1).expand(images.shape[0], -1)  # [B, H*W]
        counts = known.sum(1)
        if bool((counts == 0).any()):
            raise ValueError("every image needs at least one known pixel to be encoded")
        if bool((counts == counts[0]).all()):
            index = known.nonzero()[:, 1].view(images.shape[0], -1)
            return self.encode(images, index=index, use_ema=use_ema)
        codes = [
            self.encode(images[i : i + 1], index=known[i].nonzero().view(1, -1), use_ema=use_ema)
            for i in range(images.shape[0])
        ]
        return torch.cat(codes)

    # ----------------------------------------------------------------- training
    def loss(self, batch: FieldBatch, generator: torch.Generator) -> Tensor:
        batch.require("index", view="RandomPixels", model="InftyDiff")
        x0, index = batch.image, batch.index
        batch_size, channels, height, width = x0.shape
        if channels != self.channels:
            raise ValueError(f"InftyDiff was built for {self.channels} channels, the data has {channels}")
        if (height, width) != (self.train_resolution, self.train_resolution):
            raise ValueError(
                f"InftyDiff trains at train_resolution={self.train_resolution} (its mollifier's std is in "
                f"pixels of that grid), but the data is {height}x{width}; set the data view's resolution to "
                f"{self.train_resolution} or the model's train_resolution to the data's"
            )
        t = sample_timesteps(batch_size, self.num_train_steps, generator=generator, device=x0.device)
        noise = randn_like(x0, generator)
        x_t, target = mollified_marginal(x0, noise, self.alphas_cumprod[t], self.mollifier)
        z = None
        if self.network.encoder is not None:
            own = _random_pixels(batch_size, height * width, index.shape[1], generator, x0.device)
            z = self.network.encoder(gather_pixels(x0, own), own, (height, width))
            if self.training:
                self._preview = x0[:_PREVIEW].detach()
        prediction = self.network.denoiser(gather_pixels(x_t, index), index, (height, width), t, z)
        return F.mse_loss(prediction, gather_pixels(target, index))

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        num: int,
        resolution: Resolution | None = None,
        *,
        steps: int | None = None,
        generator: Generators = None,
        seeds: Sequence[int] | None = None,
        use_ema: bool = True,
        z: Tensor | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        spacing: TimestepSpacing | None = None,
        eps_after_clip: EpsAfterClip | None = None,
        deblur: bool | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """``num`` images ``[num, C, H, W]`` in [-1, 1] at ``resolution`` (default ``train_resolution``).

        ``sampler``: any of the ``"gaussian"`` process, run in the T-space: ``"ddim"`` (``steps`` default
        ``sample_steps``, ``eta``) or ``"ddpm"`` (ancestral, every training step unless ``steps``);
        ``seeds``: one per image; ``callback`` sees every step; ``spacing``/``eps_after_clip`` override the
        model's settings for this call (see :func:`rezdiff.core.gaussian.ddim_step`). A diffusion
        autoencoder needs its codes ``z [num, latent_dim]`` (from :meth:`encode`, or :class:`InftyDiffLatent`
        for unconditional samples); without ``z`` during or right after training it reconstructs the last
        training images (what the sample grids of a stage-1 run show). ``deblur=False`` returns the
        mollified samples ``T x_0``.
        """
        height, width = resolution_or(self.train_resolution, resolution)
        sampler = sampler or self.sampler
        entry = get_sampler(GAUSSIAN, sampler)
        generator = resolve_generators(num, generator, seeds)
        if z is None and self.latent_dim is not None:
            z = self._preview_codes(num, use_ema)
        self._check_code(z)
        if z is not None and z.shape[0] != num:
            raise ValueError(f"got {z.shape[0]} codes for {num} samples")
        z = None if z is None else z.to(self.device)
        mollifier, factor = self.process_at((height, width))
        count = steps or (self.num_train_steps if entry.all_steps else self.sample_steps)
        timesteps = timestep_subsequence(self.num_train_steps, count, spacing or self.spacing)
        x_T = mollified_initial_state(
            (num, self.channels, height, width), mollifier, factor, generator, self.device
        )
        with self.eval_mode():
            x0 = mollified_sample(
                self.denoiser((height, width), z=z, use_ema=use_ema),
                x_T,
                self.alphas_cumprod,
                timesteps,
                mollifier,
                factor,
                sampler=sampler,
                eta=self.eta if eta is None else eta,
                generator=generator,
                clip_x0=1.0 if self.clip_denoised else None,
                eps_after_clip=eps_after_clip or self.eps_after_clip,
                progress=progress,
                callback=callback,
            )
        return self.finish(x0, mollifier, deblur)

    def _preview_codes(self, num: int, use_ema: bool) -> Tensor:
        if self._preview is None:
            raise ValueError(
                "this InftyDiff is a diffusion autoencoder: pass z (codes from model.encode(images)), or "
                "sample unconditionally through a second stage (rezdiff.models.InftyDiffLatent)"
            )
        repeats = -(-num // self._preview.shape[0])
        return self.encode(self._preview.repeat(repeats, 1, 1, 1)[:num], use_ema=use_ema)

    def predict_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        """Unconditional models sample; a diffusion autoencoder reconstructs the batch's images."""
        if self.latent_dim is None:
            return super().predict_step(batch, batch_idx)
        generator = step_generator(self._seed(), 3, batch_idx, self.global_rank, device=self.device)
        z = self.encode(batch.image)
        return self.sample(batch.batch_size, tuple(batch.image.shape[-2:]), generator=generator, z=z)
