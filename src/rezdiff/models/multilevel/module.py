"""Multilevel diffusion (Hagemann et al. 2023): a VP score SDE in function space with trace-class noise
``C``, an FNO score network, and coarse-to-fine training. Mathematics in :mod:`rezdiff.core`
(:mod:`~rezdiff.core.operators` for ``C``, the ``"vp"`` samplers of :mod:`~rezdiff.core.samplers`);
conventions, choices and results in this folder's README."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from rezdiff.classpaths import ClassPathError, import_attribute
from rezdiff.core.gaussian import predict_x0, randn
from rezdiff.core.operators import Boundary
from rezdiff.core.samplers import VP, check_sampler, get_sampler
from rezdiff.core.sampling import Callback, Generators, SamplerSettings, VPSchedule, resolve_generators
from rezdiff.core.schedules import vp_marginal
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution
from rezdiff.data.images import fourier_resize
from rezdiff.data.views import FieldView, Levels
from rezdiff.models.base import DiffusionModule, resolution_or
from rezdiff.models.multilevel.fno import FNO, Positional, check_even
from rezdiff.models.multilevel.priors import Covariance, Matern
from rezdiff.models.optimization import EMASettings, class_spec
from rezdiff.nn.unet import UNet, UNetSettings

DEFAULT_OPTIMIZER = class_spec("torch.optim.AdamW", lr=1e-3, betas=[0.9, 0.999], weight_decay=0.0)
"""The optimiser of ``optimizer``'s default (see the family README for its source)."""
DEFAULT_EMA = EMASettings(decay=0.999, update_every=1, warmup=True)
"""The EMA of ``ema``'s default."""
DEFAULT_UNET = UNetSettings(
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    attention_levels=(),
    attention_head_dim=32,
    dropout=0.0,
    norm_num_groups=16,
)
"""The U-Net of ``unet``'s default (used with ``network="unet"``)."""

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- priors


def covariance_spec(prior: Covariance) -> dict[str, Any]:
    """``prior`` as a plain ``{"class_path", "init_args"}`` dict (what a config or a checkpoint holds)."""
    cls = type(prior)
    args: dict[str, Any] = {}
    for field in dataclasses.fields(prior):
        value = getattr(prior, field.name)
        if isinstance(value, tuple) and all(isinstance(v, Covariance) for v in value):
            value = [covariance_spec(v) for v in value]
        args[field.name] = value
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def build_covariance(spec: Covariance | dict[str, Any]) -> Covariance:
    """The inverse of :func:`covariance_spec`; a :class:`Covariance` is returned as it is."""
    if isinstance(spec, Covariance):
        return spec
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"a prior is a Covariance or a {{'class_path', 'init_args'}} dict, got {spec!r}")
    path = spec["class_path"]
    if "." not in path:
        path = f"rezdiff.models.multilevel.priors.{path}"
    try:  # checkpoint text imports rezdiff modules only; a user's own prior needs its module imported first
        cls = import_attribute(path, trusted=("rezdiff",))
    except ClassPathError as error:
        if error.reason == "not_imported":
            raise ValueError(
                f"prior class_path {spec['class_path']!r}: import {error.module} first to use a prior of it"
            ) from None
        raise ValueError(f"prior class_path {spec['class_path']!r} cannot be imported") from None
    if not (isinstance(cls, type) and issubclass(cls, Covariance)):
        raise ValueError(
            f"prior class_path {spec['class_path']!r} is not a rezdiff.models.multilevel.priors.Covariance"
        )
    args = dict(spec.get("init_args") or {})
    if "parts" in args:
        args["parts"] = tuple(build_covariance(part) for part in args["parts"])
    return cls(**args)


# ----------------------------------------------------------------------------------------------- module


class MultilevelSDE(DiffusionModule):
    """Function-space VP score SDE ``dX = -beta/2 X dt + sqrt(beta) C^{1/2} dW`` with an FNO (or U-Net).

    **Convention.** Images are functions on the unit square; a grid holds their values at pixel centres.
    ``prior`` is the covariance ``C`` (any :class:`~rezdiff.models.multilevel.priors.Covariance`, chosen by
    ``class_path`` in configs; default the Matérn ``(8 I - Δ)^{-0.55}``); its draws are the same random
    function at every resolution. The network predicts the noise ``C^{1/2} xi`` as it appears in
    ``x_t = m(t) x_0 + std(t) C^{1/2} xi`` (denoising score matching for the preconditioned score
    ``C grad log p_t = -eps / std``, weight ``std^2``); the loss is the mean over pixels and channels, i.e.
    the squared L² norm of a function, comparable across resolutions.

    **Training data.** Full grids (``FullGrid``) or ``Levels``: a batch is trained at
    ``train_resolution`` (set per step by :class:`rezdiff.callbacks.ResolutionSchedule`; ``None`` = the
    batch's size), Fourier-downsampled on the device in the prior's basis (``prior.boundary``: Fourier
    for ``"periodic"``, cosine for ``"reflect"``); a ``Levels`` data view with another boundary is an
    error. Validation logs ``val/loss_<R>`` at every level of a ``Levels`` data view with the same ``t``
    and noise draws, and ``val/loss`` at the finest.

    **Sampling** at any even resolution: a prior draw on that grid, then the reverse SDE (Euler-Maruyama with
    prior-correlated noise) or the probability-flow ODE (Euler or Heun) from ``t = 1`` to ``sample_t_min``,
    then one Tweedie denoising step (``denoise_final``). ``unet`` is the network
    (:class:`~rezdiff.nn.unet.UNetSettings`, the group DDPM, DVDP, the multilevel SDE and INFD share); the
    keyword-only ``block_out_channels`` ... ``norm_num_groups`` are its former flat form (one FutureWarning;
    removed in the next release).
    """

    sampler_process = VP

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        prior: Covariance | dict[str, Any] | None = None,
        network: Literal["fno", "unet"] = "fno",
        modes: int = 14,
        width: int = 32,
        n_layers: int = 4,
        projection: int = 128,
        positional: Positional = "periodic",
        time_embedding: int = 128,
        unet: UNetSettings = DEFAULT_UNET,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        train_t_min: float = 1e-5,
        sample_t_min: float = 1e-3,
        sampler: str = "sde",
        sample_steps: int = 1000,
        denoise_final: bool = True,
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
    ) -> None:
        super().__init__(
            optimizers={"optimizer": optimizer},
            lr_scheduler=lr_scheduler,
            ema=ema,
            unet=unet,
            former_unet_arguments=locals(),  # the deprecated flat U-Net keywords, read by name
        )
        self.save_hyperparameters()
        self.prior = build_covariance(Matern(tau=8.0, power=0.55) if prior is None else prior)
        self.hparams["prior"] = covariance_spec(self.prior)  # plain values: weights_only checkpoints
        check_sampler(VP, sampler)
        if not 0 < train_t_min < 1 or not 0 < sample_t_min < 1:
            raise ValueError("train_t_min and sample_t_min must lie in (0, 1)")
        if network == "fno":
            self.network = FNO(
                in_channels=channels,
                width=width,
                modes=modes,
                n_layers=n_layers,
                projection=projection,
                positional=positional,
                time_embedding=time_embedding,
            )
        elif network == "unet":
            self.network = UNet(
                in_channels=channels,
                out_channels=channels,
                **self.unet_settings.as_dict(),
            )
        else:
            raise ValueError(f"unknown network {network!r}; expected 'fno' or 'unet'")
        self.network_kind = network
        self.image_size = image_size
        self.channels = channels
        self.beta_min, self.beta_max = beta_min, beta_max
        self.train_t_min, self.sample_t_min = train_t_min, sample_t_min
        self.sampler = sampler
        self.sample_steps = sample_steps
        self.denoise_final = denoise_final
        self.train_resolution: int | None = None  # set per step by ResolutionSchedule
        self.levels: tuple[int, ...] | None = None  # validation levels, from a Levels data view
        self.check_size(image_size, image_size)
        self.setup_ema()

    @property
    def native_resolution(self) -> tuple[int, int]:
        """``image_size`` (the finest level, not the current step's ``train_resolution``) as ``(H, W)``:
        the default of ``sample()``, evaluation and sample grids."""
        return (self.image_size, self.image_size)

    # ------------------------------------------------------------------------------------ helpers
    def check_size(self, height: int, width: int) -> None:
        """Raise a ValueError unless the network can process an ``height x width`` grid."""
        if self.network_kind == "fno":
            check_even(height, width)
        else:
            self.network.check_size(height, width)

    def eps(self, x_t: Tensor, t: Tensor, use_ema: bool = False) -> Tensor:
        """The predicted noise ``C^{1/2} xi`` at ``x_t`` and times ``t [B]`` in ``(0, 1]``."""
        return self.sampling_network(use_ema)(x_t, t.to(x_t.dtype) * 1000)

    def _image(self, batch: FieldBatch) -> Tensor:
        if batch.index is not None or batch.coords is not None:
            raise ValueError(
                "MultilevelSDE trains on full grids, but this batch selects points; configure the data "
                "module with `view: Levels` (multilevel training) or `view: FullGrid` "
                "(e.g. --data.init_args.view.class_path rezdiff.data.Levels)"
            )
        x0 = batch.image
        if x0.shape[1] != self.channels:
            raise ValueError(
                f"MultilevelSDE was built for {self.channels} channels, the data has {x0.shape[1]}"
            )
        return x0

    # ------------------------------------------------------------------------------------ training
    def loss(self, batch: FieldBatch, generator: torch.Generator, resolution: int | None = None) -> Tensor:
        """Noise-prediction DSM at ``resolution`` (default ``train_resolution``, else the batch's size).

        ``t ~ U(train_t_min, 1)``, ``xi`` white noise on the grid, target ``C^{1/2} xi``; the batch is
        Fourier-downsampled to the level first, in the prior's basis (:attr:`boundary`).
        """
        x0 = self._image(batch)
        size = resolution or self.train_resolution
        if size is not None and size != x0.shape[-1]:
            if size > x0.shape[-1] or x0.shape[-2] != x0.shape[-1]:
                raise ValueError(
                    f"cannot train at {size}x{size} on {tuple(x0.shape[-2:])} data: Levels' finest "
                    "resolution must be the largest level of the schedule"
                )
            x0 = fourier_resize(x0, size, self.boundary)
        self.check_size(x0.shape[-2], x0.shape[-1])
        draw = torch.rand(x0.shape[0], generator=generator, device=generator.device, dtype=torch.float64)
        t = (self.train_t_min + (1 - self.train_t_min) * draw).to(x0.device)
        noise = self.prior.sqrt(randn(tuple(x0.shape), generator, x0.device, x0.dtype))
        mean, std = vp_marginal(t, self.beta_min, self.beta_max)
        shape = (-1, 1, 1, 1)
        x_t = mean.to(x0.dtype).view(shape) * x0 + std.to(x0.dtype).view(shape) * noise
        return (self.eps(x_t, t) - noise).square().mean()

    @property
    def boundary(self) -> Boundary:
        """The basis of levels and noise: the prior's boundary, the one source of truth for both."""
        return self.prior.boundary

    def check_levels(self, view: object) -> None:
        """Raise a ValueError if the data view ``view`` is a ``Levels`` whose boundary is not the prior's."""
        if isinstance(view, Levels) and view.boundary != self.boundary:
            raise ValueError(
                f"Levels(boundary={view.boundary!r}) disagrees with the prior's boundary "
                f"{self.boundary!r} (the model resizes levels in the prior's basis); set the view's "
                f"boundary: {self.boundary} or build the prior with boundary: {view.boundary}"
            )

    def check_data(self, view: FieldView, role: str, stage: str) -> None:
        """A ``Levels`` view must resize in the prior's basis (:meth:`check_levels`). Training at a finest
        size other than ``image_size`` works (the score network and the prior act on functions, not grids),
        but ``image_size`` stays the default sampling grid: one warning."""
        self.check_levels(view)
        size = view.example_resolution()
        if stage == "fit" and role == "view" and size is not None and size != (self.image_size,) * 2:
            logger.warning(
                "MultilevelSDE: image_size=%d but the data's view renders %dx%d, so it trains at %dx%d "
                "and samples at %d by default; set the view's (finest) resolution or image_size to agree",
                self.image_size,
                *size,
                *size,
                self.image_size,
            )

    def setup(self, stage: str) -> None:
        """Check the data module's data views (:meth:`check_data`); take the validation levels."""
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        view = getattr(datamodule, "val_view", None)
        self.levels = view.resolutions if isinstance(view, Levels) else None

    def _eval_step(self, batch: FieldBatch, batch_idx: int, stage: str) -> Tensor:
        size = batch.image.shape[-1]
        levels = [r for r in (self.levels or ()) if r < size] + [size]
        for resolution in levels:  # the same t and noise keys at every level
            loss = self.loss(batch, self._generator(batch_idx, stage), resolution)
            self.log(f"{stage}/loss_{resolution}", loss, sync_dist=True, batch_size=batch.batch_size)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=batch.batch_size)
        return loss

    # ------------------------------------------------------------------------------------ sampling
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
        sampler: str | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """``num`` images at ``resolution`` (default ``image_size``; any even size): prior on that grid.

        ``sampler``: any of the ``"vp"`` process (:mod:`rezdiff.core.samplers`): ``"sde"``
        (Euler-Maruyama, noise ``C^{1/2} z``), ``"ode_euler"`` or ``"ode_heun"`` (probability-flow ODE;
        Heun costs two network calls per step), on a uniform grid from ``t = 1`` (the last training time)
        to ``sample_t_min``; ``steps`` defaults to ``sample_steps``. ``seeds``: one per image (prior draw
        and SDE noise); ``callback`` sees every step. Returns ``[num, C, H, W]`` clamped to ``[-1, 1]``.
        """
        height, width = resolution_or(self.image_size, resolution)
        self.check_size(height, width)
        entry = get_sampler(VP, sampler or self.sampler)
        generator = resolve_generators(num, generator, seeds)

        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.eps(x, t, use_ema)

        x_T = self.prior.sample((num, self.channels, height, width), generator, self.device)
        grid = torch.linspace(1.0, self.sample_t_min, (steps or self.sample_steps) + 1, dtype=torch.float64)
        settings = SamplerSettings(noise_operator=self.prior.sqrt, progress=progress)
        schedule = VPSchedule(self.beta_min, self.beta_max)
        with self.eval_mode():
            x = entry.fn(eps_fn, x_T, schedule, grid, settings, generator, callback)
            if self.denoise_final:
                t = torch.full((num,), self.sample_t_min, dtype=x.dtype, device=x.device)
                mean, std = vp_marginal(self.sample_t_min, self.beta_min, self.beta_max)
                x = predict_x0(x, eps_fn(x, t), float(mean) ** 2)
        return x.clamp(-1, 1)
