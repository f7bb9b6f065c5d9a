"""∞-Diff's second stage: a latent diffusion model over the diffusion autoencoder's codes (paper §5, App. A).

Stage 1 (:class:`~rezdiff.models.infty_diff.InftyDiff` with ``latent_dim``) encodes an image into ``z``
and denoises pixels conditioned on it; stage 2 learns the distribution of ``z`` so that unconditional
sampling is ``z ~ latent DDIM`` followed by the pixel-level DDIM of stage 1 at any resolution. As in the
paper, the latent model is the one of Diffusion Autoencoders (Preechakul et al. 2022): an MLP whose hidden
layers all see the input again ("skip-net"), 10 layers of width 2048, modulated by the timestep,
ε-prediction with an L1 loss, a constant-β schedule (β = 0.008, T = 1000), latents standardised per
dimension over the training set and its horizontal mirror images.

The frozen stage 1 lives *inside* this module (``self.stage1``, its EMA weights as plain weights) and its
class and arguments are recorded as the hyperparameter ``stage1``: a checkpoint of this model rebuilds
with :func:`rezdiff.load` alone, without the stage-1 file (see :class:`InftyDiffLatent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rezdiff.core.gaussian import EpsAfterClip, q_sample, randn, randn_like, sample_timesteps
from rezdiff.core.loops import ddim_sample
from rezdiff.core.samplers import GAUSSIAN
from rezdiff.core.sampling import Callback, Generators, resolve_generators
from rezdiff.core.schedules import TimestepSpacing, alphas_cumprod, make_betas, timestep_subsequence
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution
from rezdiff.models.base import DiffusionModule
from rezdiff.models.infty_diff.module import InftyDiff
from rezdiff.models.optimization import EMASettings, class_spec

DEFAULT_OPTIMIZER = class_spec("torch.optim.AdamW", lr=1e-4, betas=[0.9, 0.999], weight_decay=0.01)
"""The optimiser of ``optimizer``'s default (see the family README for its source)."""
DEFAULT_EMA = EMASettings(decay=0.9999, update_every=1, warmup=False)
"""The EMA of ``ema``'s default."""

LatentSchedule = Literal["constant", "linear", "cosine"]

__all__ = ["InftyDiffLatent", "MLPSkipNet"]


class _ModulatedLayer(nn.Module):
    """``act(norm(W x * (1 + C cond)))``: one hidden layer of the skip-net."""

    def __init__(self, in_features: int, out_features: int, cond_features: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.cond = nn.Linear(cond_features, out_features)
        self.norm = nn.LayerNorm(out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.linear(x) * (1 + self.cond(cond))
        return self.dropout(F.silu(self.norm(h)))


class MLPSkipNet(nn.Module):
    """Noise predictor for vectors ``[B, D]`` at timesteps ``[B]`` (Diffusion Autoencoders' latent net).

    A sinusoidal timestep embedding (``time_embed_dim``) goes through a two-layer MLP to a conditioning
    vector of size ``D``; each of the ``num_layers - 1`` hidden layers takes the previous activations
    concatenated with the input ``x`` (the "skips"; the first takes ``x`` alone), multiplies its linear map
    by ``1 + Linear(cond)``, then LayerNorm and SiLU; a final linear layer returns ``[B, D]``.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int = 2048,
        num_layers: int = 10,
        time_embed_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"MLPSkipNet needs num_layers >= 2, got {num_layers}")
        self.time_embed_dim = time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.layers = nn.ModuleList(
            _ModulatedLayer(dim if i == 0 else hidden_dim + dim, hidden_dim, dim, dropout)
            for i in range(num_layers - 1)
        )
        self.out = nn.Linear(hidden_dim + dim, dim)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        embedding = get_timestep_embedding(
            t.reshape(-1), self.time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        cond = self.time_mlp(embedding.to(x.dtype))
        h = self.layers[0](x, cond)
        for layer in self.layers[1:]:
            h = layer(torch.cat([h, x], dim=1), cond)
        return self.out(torch.cat([h, x], dim=1))


def _stage1_spec(model: InftyDiff) -> dict[str, Any]:
    cls = type(model)
    args = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def _load_stage1(path: str, spec: dict[str, Any] | None) -> tuple[InftyDiff, dict[str, Any]]:
    """Stage 1 from its checkpoint (``spec is None``) or, with its weights to come from our own state_dict,
    rebuilt from the recorded ``spec``. Either way its EMA weights become its only weights."""
    from rezdiff.loading import build, load  # lazy: rezdiff.loading imports the models package

    # build() and load() record stage 1's own hyperparameters even inside LightningCLI's instantiation.
    model = load(path) if spec is None else build(spec["class_path"], spec["init_args"])
    if spec is None:
        if not isinstance(model, InftyDiff) or model.latent_dim is None:
            raise ValueError(
                f"stage1_ckpt {path} holds a {type(model).__name__} without an encoder; the latent "
                "stage needs an InftyDiff diffusion autoencoder (trained with model.init_args.latent_dim set)"
            )
        if model.ema is not None:
            model.ema.copy_to(model.network)
        spec = _stage1_spec(model)
    model.ema = None  # type: ignore[assignment]
    model.requires_grad_(False)
    return model.eval(), spec


class InftyDiffLatent(DiffusionModule):
    """Latent diffusion over a frozen ∞-Diff autoencoder; ``sample`` = latent DDIM → pixel DDIM of stage 1.

    ``stage1_ckpt``: the stage-1 checkpoint (an :class:`InftyDiff` with ``latent_dim``), read once, at
    construction, with :func:`rezdiff.load` (its EMA weights). Its class and arguments are then stored in the
    hyperparameter ``stage1`` and its weights in this module's state_dict (``stage1.*``), so that a checkpoint
    of this model is self-contained: ``rezdiff.load`` rebuilds stage 1 from ``stage1`` and fills its weights
    from the state_dict, and the original file is no longer needed. Leave ``stage1`` unset in configs.

    Stage 1 is frozen (no gradients, eval mode, outside the optimiser and the EMA). Latent statistics
    (per-dimension mean and standard deviation over the training images and their mirror images) are
    computed at the start of ``fit`` unless a checkpoint already holds them, and stored as buffers.
    """

    sampler_process = GAUSSIAN  # stage 1's pixel samplers (the codes are drawn by DDIM)

    latent_mean: Tensor
    latent_std: Tensor
    latent_count: Tensor

    def __init__(
        self,
        stage1_ckpt: str,
        stage1: dict[str, Any] | None = None,
        hidden_dim: int = 2048,
        num_layers: int = 10,
        time_embed_dim: int = 64,
        dropout: float = 0.0,
        num_train_steps: int = 1000,
        schedule: LatentSchedule = "constant",
        beta: float = 0.008,
        sample_steps: int = 100,
        spacing: TimestepSpacing = "trailing",
        eta: float = 0.0,
        flip: bool = True,
        stats_max_images: int | None = None,
        stats_batch_size: int = 64,
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema: EMASettings = DEFAULT_EMA,
    ) -> None:
        super().__init__(optimizers={"optimizer": optimizer}, lr_scheduler=lr_scheduler, ema=ema)
        self.save_hyperparameters()
        if schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"unknown schedule {schedule!r}; expected 'constant', 'linear' or 'cosine'")
        self.stage1, spec = _load_stage1(stage1_ckpt, stage1)
        self.hparams["stage1"] = spec  # what rezdiff.load rebuilds stage 1 from
        self.latent_dim = int(self.stage1.latent_dim)  # type: ignore[arg-type]
        self.network = MLPSkipNet(self.latent_dim, hidden_dim, num_layers, time_embed_dim, dropout)
        self.num_train_steps = num_train_steps
        self.sample_steps = sample_steps
        timestep_subsequence(num_train_steps, sample_steps, spacing)  # a bad spacing or count fails here
        self.spacing: TimestepSpacing = spacing
        self.eta = eta
        self.flip = flip
        self.stats_max_images = stats_max_images
        self.stats_batch_size = stats_batch_size
        if schedule == "constant":
            betas = torch.full((num_train_steps,), beta, dtype=torch.float64)
        else:
            betas = make_betas(schedule, num_train_steps)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas), persistent=False)
        self.register_buffer("latent_mean", torch.zeros(self.latent_dim))
        self.register_buffer("latent_std", torch.ones(self.latent_dim))
        self.register_buffer("latent_count", torch.zeros((), dtype=torch.long))
        self.setup_ema()

    @property
    def native_resolution(self) -> tuple[int, int]:
        """Stage 1's ``train_resolution`` as ``(H, W)``: the default of ``sample()``, evaluation, grids."""
        return self.stage1.native_resolution

    def train(self, mode: bool = True) -> InftyDiffLatent:
        """Stage 1 stays in eval mode (no dropout) whatever the mode of this module."""
        super().train(mode)
        self.stage1.eval()
        return self

    # ----------------------------------------------------------------- latents
    def standardize(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean) / self.latent_std

    def unstandardize(self, z: Tensor) -> Tensor:
        return z * self.latent_std + self.latent_mean

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Stage 1's (deterministic, all-pixel) code of ``images [B, C, H, W]``, not standardised."""
        return self.stage1.encode(images)

    @torch.no_grad()
    def compute_latent_statistics(self, batches: Iterable[FieldBatch | Tensor]) -> None:
        """Per-dimension mean and std of the codes of the images in ``batches`` and, if ``flip``, of their
        mirror images (at most ``stats_max_images`` images); stored in the buffers."""
        total = torch.zeros(self.latent_dim, dtype=torch.float64, device=self.device)
        square = torch.zeros_like(total)
        count = 0
        for batch in batches:
            images = (batch.image if isinstance(batch, FieldBatch) else batch).to(self.device)
            if self.stats_max_images is not None:
                images = images[: max(0, self.stats_max_images - count)]
            if images.shape[0] == 0:
                break
            views = [images, images.flip(-1)] if self.flip else [images]
            for chunk in torch.cat(views).split(self.stats_batch_size):
                z = self.encode(chunk).to(torch.float64)
                total += z.sum(0)
                square += z.square().sum(0)
            count += images.shape[0]
        n = count * (2 if self.flip else 1)
        if n < 2:
            raise ValueError("latent statistics need at least one training image (two codes)")
        mean = total / n
        std = ((square - n * mean.square()) / (n - 1)).clamp(min=0).sqrt()
        self.latent_mean.copy_(mean.to(self.latent_mean))
        self.latent_std.copy_(std.clamp(min=1e-6).to(self.latent_std))
        self.latent_count.fill_(n)

    def on_fit_start(self) -> None:
        if int(self.latent_count) > 0:  # resumed: the checkpoint holds them
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError(
                "InftyDiffLatent computes its latent statistics from trainer.datamodule at fit start; "
                "with plain dataloaders call model.compute_latent_statistics(train_loader) before fit"
            )
        self.compute_latent_statistics(datamodule.train_dataloader())

    # ----------------------------------------------------------------- diffusion
    def loss(self, batch: FieldBatch, generator: torch.Generator) -> Tensor:
        images = batch.image
        if self.flip:
            draw = torch.rand(images.shape[0], generator=generator, device=generator.device).to(images.device)
            images = torch.where((draw < 0.5).view(-1, 1, 1, 1), images.flip(-1), images)
        z0 = self.standardize(self.encode(images))
        t = sample_timesteps(z0.shape[0], self.num_train_steps, generator=generator, device=z0.device)
        noise = randn_like(z0, generator)
        z_t = q_sample(z0, noise, self.alphas_cumprod[t])
        return F.l1_loss(self.network(z_t, t), noise)

    @torch.no_grad()
    def sample_latents(
        self,
        num: int,
        *,
        steps: int | None = None,
        generator: Generators = None,
        use_ema: bool = True,
        eta: float | None = None,
        spacing: TimestepSpacing | None = None,
        progress: bool = False,
    ) -> Tensor:
        """``num`` codes ``[num, latent_dim]`` by latent DDIM, in stage 1's (unstandardised) units; the
        timesteps follow ``spacing`` (default: the model's, ``"trailing"`` = from ``T - 1``); ``generator``
        may be one per code."""
        network = self.sampling_network(use_ema)
        timesteps = timestep_subsequence(
            self.num_train_steps, steps or self.sample_steps, spacing or self.spacing
        )
        z_T = randn((num, self.latent_dim), generator, self.device)
        with self.eval_mode():
            z = ddim_sample(
                network,
                z_T,
                self.alphas_cumprod,
                timesteps,
                eta=self.eta if eta is None else eta,
                generator=generator,
                progress=progress,
            )
        return self.unstandardize(z)

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
        latent_steps: int | None = None,
        latent_spacing: TimestepSpacing | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        spacing: TimestepSpacing | None = None,
        eps_after_clip: EpsAfterClip | None = None,
        deblur: bool | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """Unconditional samples: codes from the latent model (``latent_steps``, ``latent_spacing``, EMA
        weights unless ``use_ema=False``), then stage 1's pixel sampler at ``resolution`` (``steps``,
        ``sampler``, ``eta``, ``spacing``, ``eps_after_clip``, ``deblur``, ``callback`` as in
        :meth:`InftyDiff.sample`). ``seeds``: one per image; image ``k``'s code and pixel noise both come
        from its generator."""
        generator = resolve_generators(num, generator, seeds)
        z = self.sample_latents(
            num,
            steps=latent_steps,
            generator=generator,
            use_ema=use_ema,
            spacing=latent_spacing,
            progress=progress,
        )
        return self.stage1.sample(
            num,
            resolution,
            steps=steps,
            generator=generator,
            z=z,
            sampler=sampler,
            eta=eta,
            spacing=spacing,
            eps_after_clip=eps_after_clip,
            deblur=deblur,
            progress=progress,
            callback=callback,
        )
