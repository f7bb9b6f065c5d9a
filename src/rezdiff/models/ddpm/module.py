"""The fixed-resolution pixel-space DDPM baseline (Ho et al. 2020; DDIM sampling of Song et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from rezdiff.core.gaussian import (
    EpsAfterClip,
    check_eps_after_clip,
    q_sample,
    randn,
    randn_like,
    sample_timesteps,
)
from rezdiff.core.samplers import GAUSSIAN, get_sampler
from rezdiff.core.sampling import Callback, Generators, SamplerSettings, resolve_generators
from rezdiff.core.schedules import TimestepSpacing, alphas_cumprod, make_betas, timestep_subsequence
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution
from rezdiff.data.views import FieldView
from rezdiff.models.base import DiffusionModule, resolution_or
from rezdiff.models.optimization import EMASettings, class_spec
from rezdiff.nn.unet import DDPM_UNET, UNet, UNetSettings

DEFAULT_OPTIMIZER = class_spec("torch.optim.AdamW", lr=2e-4, betas=[0.9, 0.999], weight_decay=0.0)
"""The optimiser of ``optimizer``'s default (see the family README for its source)."""
DEFAULT_EMA = EMASettings(decay=0.9999, update_every=1, warmup=True)
"""The EMA of ``ema``'s default."""
DEFAULT_UNET = DDPM_UNET
"""The U-Net of ``unet``'s default."""


class DDPM(DiffusionModule):
    """ε-prediction DDPM on a diffusers U-Net, trained on full grids (``FullGrid`` data view).

    Sampling at a resolution other than ``image_size`` enlarges the initial noise and runs the same
    fully convolutional network on it: the naive baseline the resolution-agnostic papers compare with.
    Strided sampling visits ``spacing``'s timesteps (default ``"trailing"``: the first is ``T - 1``, the only
    one whose law is the pure noise it starts from); ``eps_after_clip`` is DDIM's choice of ε once
    ``clip_denoised`` clipped x̂₀ (``"from_x0"``, OpenAI's and DVDP's convention, or diffusers'
    ``"network"``). ``sampler`` is any sampler of the ``"gaussian"`` process (:mod:`rezdiff.core.samplers`).
    ``unet`` is the network (:class:`~rezdiff.nn.unet.UNetSettings`, the group DDPM, DVDP, the multilevel SDE
    and INFD share); the keyword-only ``block_out_channels`` ... ``norm_num_groups`` are its former flat form
    (one FutureWarning; removed in the next release).
    """

    sampler_process = GAUSSIAN

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        unet: UNetSettings = DEFAULT_UNET,
        num_train_steps: int = 1000,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        sampler: str = "ddim",
        sample_steps: int = 100,
        spacing: TimestepSpacing = "trailing",
        eta: float = 0.0,
        clip_denoised: bool = True,
        eps_after_clip: EpsAfterClip = "from_x0",
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema: EMASettings = DEFAULT_EMA,
        *,
        block_out_channels: tuple[int, ...] | None = None,
        layers_per_block: int | None = None,
        attention_levels: tuple[int, ...] | None = None,
        attention_head_dim: int | None = None,
        dropout: float | None = None,
        norm_num_groups: int | None = None,
    ) -> None:  # pragma: no mutate block (a trampolined __init__ records no hyperparameters)
        super().__init__(
            optimizers={"optimizer": optimizer},
            lr_scheduler=lr_scheduler,
            ema=ema,
            unet=unet,
            former_unet_arguments=locals(),  # the deprecated flat U-Net keywords, read by name
        )
        self.save_hyperparameters()
        self.network = UNet(
            in_channels=channels,
            out_channels=channels,
            **self.unet_settings.as_dict(),
        )
        self.network.check_size(image_size, image_size)
        self.image_size = image_size
        self.channels = channels
        self.num_train_steps = num_train_steps
        self.sampler = self.check_sampler(sampler)
        self.sample_steps = sample_steps
        timestep_subsequence(num_train_steps, sample_steps, spacing)  # a bad spacing or count fails here
        self.spacing: TimestepSpacing = spacing
        self.eta = eta
        self.clip_denoised = clip_denoised
        check_eps_after_clip(eps_after_clip)
        self.eps_after_clip: EpsAfterClip = eps_after_clip
        betas = make_betas(schedule, num_train_steps, beta_start, beta_end)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas), persistent=False)
        self.setup_ema()

    @property
    def native_resolution(self) -> tuple[int, int]:
        """``image_size`` as ``(H, W)``: the default of ``sample()``, evaluation and sample grids."""
        return (self.image_size, self.image_size)

    def check_data(self, view: FieldView, role: str, stage: str) -> None:
        self.check_whole_image_data(view, role, stage, self.image_size)

    def loss(self, batch: FieldBatch, generator: torch.Generator) -> Tensor:
        x0 = batch.image
        if x0.shape[1] != self.channels:
            raise ValueError(f"DDPM was built for {self.channels} channels, the data has {x0.shape[1]}")
        t = sample_timesteps(x0.shape[0], self.num_train_steps, generator=generator, device=x0.device)
        noise = randn_like(x0, generator)
        x_t = q_sample(x0, noise, self.alphas_cumprod[t])
        return F.mse_loss(self.network(x_t, t), noise)

    def sample(
        self,
        num: int,
        resolution: Resolution | None = None,
        *,
        steps: int | None = None,
        generator: Generators = None,
        seeds: Sequence[int] | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        spacing: TimestepSpacing | None = None,
        eps_after_clip: EpsAfterClip | None = None,
        use_ema: bool = True,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """``num`` images at ``resolution`` (default ``image_size``) by any ``"gaussian"`` sampler.

        ``sampler="ddpm"`` runs ancestral sampling over ``steps`` timesteps (all 1000 by default);
        ``"ddim"`` (``eta``) and other samplers default to ``sample_steps``. ``spacing`` and
        ``eps_after_clip`` (DDIM only) override the model's settings for this call. ``seeds``: one per
        image (module base class); ``callback`` sees every step (:mod:`rezdiff.core.sampling`).
        """
        # no_grad as a block, not a decorator: mutmut does not mutate decorated functions
        with torch.no_grad():
            height, width = resolution_or(self.image_size, resolution)
            network = self.sampling_network(use_ema)
            self.network.check_size(height, width)
            entry = get_sampler(GAUSSIAN, sampler or self.sampler)
            generator = resolve_generators(num, generator, seeds)
            x_T = randn((num, self.channels, height, width), generator, self.device)
            count = steps or (self.num_train_steps if entry.all_steps else self.sample_steps)
            timesteps = timestep_subsequence(self.num_train_steps, count, spacing or self.spacing)
            settings = SamplerSettings(
                eta=self.eta if eta is None else eta,
                clip_x0=1.0 if self.clip_denoised else None,
                eps_after_clip=eps_after_clip or self.eps_after_clip,
                progress=progress,
            )
            with self.eval_mode():
                x0 = entry.fn(network, x_T, self.alphas_cumprod, timesteps, settings, generator, callback)
            return x0.clamp(-1, 1)
