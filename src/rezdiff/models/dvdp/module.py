"""DVDP: the dimensionality-varying diffusion process (Zhang et al. 2023), with subspace diffusion
(Jing et al. 2022) as the ``process="subspace"`` special case. Mathematics in :mod:`rezdiff.core.pyramid`;
the formulation and every choice are written down in this folder's README."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from rezdiff.core.gaussian import randn, sample_timesteps
from rezdiff.core.pyramid import Process, check_divisible, make_dvdp_schedule, marginal, sampling_timesteps
from rezdiff.core.samplers import DVDP as DVDP_PROCESS
from rezdiff.core.samplers import get_sampler
from rezdiff.core.sampling import Callback, Generators, SamplerSettings, resolve_generators
from rezdiff.core.schedules import TimestepSpacing, timestep_subsequence
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
"""The U-Net of ``unet``'s default: the DDPM baseline's."""


class DVDP(DiffusionModule):
    """ε-prediction DVDP on the DDPM baseline's U-Net, trained on full grids (``FullGrid`` data view).

    One fully convolutional U-Net serves every stage: stage ``k`` (timesteps ``T_k .. T_{k+1} - 1``) runs at
    ``image_size / 2^k`` and the timestep tells the network which stage it is in. Sampling starts from white
    noise at the lowest stage's resolution (``resolution / 2^K``) and upsamples at each turning point (Eq.
    11). ``turning_points`` are the paper's ``T_1 < ... < T_K``; ``()`` gives plain DDPM. ``sampler`` is any
    sampler of the ``"dvdp"`` process (:mod:`rezdiff.core.samplers`); strided sampling visits ``spacing``'s
    timesteps (default ``"trailing"``: from ``T - 1``) plus every turning index. ``unet`` is the network
    (:class:`~rezdiff.nn.unet.UNetSettings`, the group DDPM, DVDP, the multilevel SDE and INFD share); the
    keyword-only ``block_out_channels`` ... ``norm_num_groups`` are its former flat form (one FutureWarning;
    removed in the next release).
    """

    sampler_process = DVDP_PROCESS

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        unet: UNetSettings = DEFAULT_UNET,
        num_train_steps: int = 1000,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        turning_points: tuple[int, ...] = (600,),
        lambda_end: float = 1e-2,
        process: Process = "dvdp",
        stage_sampling: Literal["per_example", "per_batch"] = "per_example",
        sampler: str = "ddpm",
        sample_steps: int = 100,
        spacing: TimestepSpacing = "trailing",
        eta: float = 0.0,
        clip_denoised: bool = True,
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
        self.schedule = make_dvdp_schedule(
            turning_points, num_train_steps, schedule, beta_start, beta_end, lambda_end, process
        )
        self.levels = len(turning_points)
        self._check_size(image_size, image_size)
        self.image_size = image_size
        self.channels = channels
        self.num_train_steps = num_train_steps
        if stage_sampling not in ("per_example", "per_batch"):
            raise ValueError(
                f"unknown stage_sampling {stage_sampling!r}; expected 'per_example' or 'per_batch'"
            )
        self.stage_sampling = stage_sampling
        self.sampler = self.check_sampler(sampler)
        self.sample_steps = sample_steps
        timestep_subsequence(num_train_steps, sample_steps, spacing)  # a bad spacing or count fails here
        self.spacing: TimestepSpacing = spacing
        self.eta = eta
        self.clip_denoised = clip_denoised
        self.setup_ema()

    @property
    def native_resolution(self) -> tuple[int, int]:
        """``image_size`` as ``(H, W)``: the default of ``sample()``, evaluation and sample grids."""
        return (self.image_size, self.image_size)

    def _check_size(self, height: int, width: int) -> None:
        """Sizes must halve ``K`` times and the lowest stage must still suit the U-Net."""
        check_divisible(height, width, self.levels)
        self.network.check_size(height >> self.levels, width >> self.levels)

    def check_data(self, view: FieldView, role: str, stage: str) -> None:
        self.check_whole_image_data(view, role, stage, self.image_size)

    def loss(self, batch: FieldBatch, generator: torch.Generator) -> Tensor:
        """Eq. 12: ``t`` uniform over all ``T`` steps; the stage of ``t`` fixes the resolution.

        ``stage_sampling="per_example"``: each example draws its own ``t`` and the batch is split by stage
        (one network call per stage present). ``"per_batch"``: one ``t`` drawn uniformly picks the stage
        ``k`` of the whole batch (probability proportional to the stage's length, Eq. 12's outer
        ``E_k``), then every example draws ``t`` uniformly in that stage: the same expectation, one
        network call per step (faster, noisier). Each example's error is averaged over its own pixels
        and the batch mean taken, so examples weigh the same whatever their stage's resolution.
        """
        x0 = batch.image
        if x0.shape[1] != self.channels:
            raise ValueError(f"DVDP was built for {self.channels} channels, the data has {x0.shape[1]}")
        self._check_size(x0.shape[-2], x0.shape[-1])
        t = sample_timesteps(x0.shape[0], self.num_train_steps, generator=generator, device=x0.device)
        if self.stage_sampling == "per_batch":
            start, stop = self.schedule.stage_bounds(int(self.schedule.stage_of(t[0])))
            draw = torch.randint(start, stop, t.shape, generator=generator, device=generator.device)
            t = draw.to(x0.device)
        stages = self.schedule.stage_of(t)
        total = x0.new_zeros(())
        for k in range(self.levels + 1):
            index = (stages == k).nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            size = (index.numel(), self.channels, x0.shape[-2] >> k, x0.shape[-1] >> k)
            noise = randn(size, generator, x0.device, x0.dtype)
            x_t = marginal(x0[index], noise, self.schedule, t[index])
            error = (self.network(x_t, t[index]) - noise).square().mean(dim=(1, 2, 3))
            total = total + error.sum()
        return total / x0.shape[0]

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
        use_ema: bool = True,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """``num`` images at ``resolution`` (default ``image_size``; divisible by ``2^K``).

        ``sampler="ddpm"`` is ancestral sampling over all ``T`` steps (or ``steps`` of them); ``"ddim"``
        defaults to ``sample_steps`` (the paper also reports 675). Every turning index ``T_k - 1`` is
        visited whatever ``steps`` and ``spacing`` are. ``seeds``: one per image (turning-point noise
        included); ``callback`` sees every step; ``progress`` shows a bar over the steps.
        """
        # no_grad as a block, not a decorator: mutmut does not mutate decorated functions
        with torch.no_grad():
            height, width = resolution_or(self.image_size, resolution)
            self._check_size(height, width)
            network = self.sampling_network(use_ema)
            entry = get_sampler(DVDP_PROCESS, sampler or self.sampler)
            generator = resolve_generators(num, generator, seeds)
            x_T = randn(
                (num, self.channels, height >> self.levels, width >> self.levels), generator, self.device
            )
            count = steps or (None if entry.all_steps else self.sample_steps)
            timesteps = sampling_timesteps(self.schedule, count, spacing or self.spacing)
            settings = SamplerSettings(
                eta=self.eta if eta is None else eta,
                clip_x0=1.0 if self.clip_denoised else None,
                progress=progress,
            )
            with self.eval_mode():
                x0 = entry.fn(network, x_T, self.schedule, timesteps, settings, generator, callback)
            return x0.clamp(-1, 1)
