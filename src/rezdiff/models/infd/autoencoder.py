"""INFD stage 1: the image neural-field autoencoder (Chen et al. 2024, §4.1-4.2, Appendix H).

Encoder (LDM VQ-f4) on the image resized to ``encoder_resolution``, vector quantiser at the start of the
decoder, decoder without RGB layer -> feature map ``phi``, neural-field renderer (CLIF or LIIF) queried at
the pixel centres of multi-scale patches (``MultiScalePatches``). Trained with L1 + perceptual + VQ losses
and a hinge GAN (PatchGAN) whose generator term has LDM's adaptive weight; two Adam optimisers, Lightning
manual optimisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from rezdiff.callbacks.images import log_images
from rezdiff.core.sampling import Generators
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution, as_hw
from rezdiff.data.images import resize
from rezdiff.metrics.reconstruction import psnr
from rezdiff.models.base import DiffusionModule, NonFiniteLossError
from rezdiff.models.infd.clif import CLIF, Box, LIIFRenderer, NormMode, Renderer, render_field
from rezdiff.models.infd.discriminator import PatchGAN
from rezdiff.models.infd.networks import FeatureDecoder, LatentEncoder, VectorQuantizer, perplexity
from rezdiff.models.infd.perceptual import LPIPS, VGG_HINT, LaplacianL1
from rezdiff.models.optimization import class_spec

DEFAULT_OPTIMIZER = class_spec("torch.optim.Adam", lr=3.6e-5, betas=[0.5, 0.9], weight_decay=0.0)
"""The default of both optimisers: the paper's Adam, lr 3.6e-5, betas (0.5, 0.9) (Appendix H.2)."""


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge loss of the discriminator: ``(mean relu(1 - D(real)) + mean relu(1 + D(fake))) / 2``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: Tensor, gan_loss: Tensor, layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """LDM's balance ``||grad rec|| / (||grad gan|| + 1e-4)`` w.r.t. ``layer``, clamped, detached."""
    rec_grad = torch.autograd.grad(rec_loss, layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class INFDAutoencoder(DiffusionModule):
    """Stage 1 of INFD. Not a diffusion model: ``sample`` raises (stage 2, ``rezdiff.models.INFD``, samples);
    it subclasses :class:`DiffusionModule` for the checkpoint contract (``rezdiff.load`` rebuilds it).

    API used by stage 2: ``encode(images) -> z`` (pre-VQ latents), ``decode(z) -> phi``,
    ``render(phi, resolution, tile=, pad=, box=, norm=)``, ``reconstruct(images, resolution)``.
    Training needs ``MultiScalePatches`` batches (``cond``, ``coords``, ``cell``). ``trainer.global_step``
    counts optimiser steps of both optimisers, i.e. two per training iteration (``max_steps`` accordingly);
    ``disc_start`` counts *iterations* (the paper's ``gan_start_after_iters``): the adversarial terms are on
    from iteration ``disc_start`` (0-based), i.e. global step ``2 * disc_start``. ``feature_norm``: ``False``
    (the authors' ``give_pre_end=True``) makes ``phi`` the decoder's raw last activation, ``True`` applies
    the decoder's output GroupNorm + SiLU first (see :class:`rezdiff.models.infd.networks.FeatureDecoder`).
    """

    # checkpoints from before feature_norm had the decoder's output GroupNorm (φ = SiLU(GN(h)))
    recorded_defaults: ClassVar[dict[str, Any]] = {"feature_norm": True}
    optimizer_arguments: ClassVar[tuple[str, ...]] = ("generator_optimizer", "discriminator_optimizer")

    def __init__(
        self,
        encoder_resolution: int = 256,
        channels: int = 3,
        latent_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
        feature_norm: bool = False,
        num_codes: int = 8192,
        vq_beta: float = 0.25,
        renderer: Literal["clif", "liif"] = "clif",
        renderer_channels: int = 256,
        renderer_blocks: int = 2,
        renderer_groups: int = 32,
        l1_weight: float = 1.0,
        perceptual: Literal["lpips_vgg", "lap_l1", "none"] = "lpips_vgg",
        perceptual_weight: float = 1.0,
        vgg_weights: str | None = None,
        lpips_weights: str | None = None,
        vq_weight: float = 1.0,
        gan_weight: float = 0.75,
        disc_start: int = 0,
        disc_channels: int = 64,
        disc_layers: int = 3,
        adaptive_weight_max: float = 1e4,
        generator_optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        discriminator_optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        render_tile: int | None = 256,
        render_pad: int = 8,
        val_render_resolutions: tuple[int, ...] = (),
        val_render_num: int = 4,
    ) -> None:
        super().__init__(  # no EMA and no schedule in stage 1 (the paper has neither)
            optimizers={
                "generator_optimizer": generator_optimizer,
                "discriminator_optimizer": discriminator_optimizer,
            }
        )
        self.save_hyperparameters()
        self.automatic_optimization = False
        if perceptual == "lpips_vgg" and not vgg_weights:
            raise ValueError(f"perceptual='lpips_vgg' needs vgg_weights. {VGG_HINT}")
        if disc_start < 0:
            raise ValueError(f"disc_start counts training iterations and must be >= 0, got {disc_start}")
        if perceptual not in ("lpips_vgg", "lap_l1", "none"):
            raise ValueError(f"perceptual must be 'lpips_vgg', 'lap_l1' or 'none', got {perceptual!r}")
        self.encoder_resolution = encoder_resolution
        self.channels = channels
        self.latent_channels = latent_channels
        self.encoder = LatentEncoder(
            channels, latent_channels, base_channels, tuple(channel_mult), num_res_blocks, norm_num_groups
        )
        if encoder_resolution % self.encoder.downsample_factor:
            raise ValueError(
                f"encoder_resolution {encoder_resolution} must be divisible by "
                f"{self.encoder.downsample_factor}"
            )
        self.latent_size = encoder_resolution // self.encoder.downsample_factor
        self.quantizer = VectorQuantizer(num_codes, latent_channels, vq_beta)
        self.decoder = FeatureDecoder(
            latent_channels, base_channels, tuple(channel_mult), num_res_blocks, norm_num_groups, feature_norm
        )
        self._register_load_state_dict_pre_hook(self._check_feature_norm)
        self.renderer: Renderer
        if renderer == "clif":
            self.renderer = CLIF(
                self.decoder.out_channels, renderer_channels, renderer_blocks, renderer_groups, channels
            )
        elif renderer == "liif":
            self.renderer = LIIFRenderer(self.decoder.out_channels, renderer_channels, 4, channels)
        else:
            raise ValueError(f"renderer must be 'clif' or 'liif', got {renderer!r}")
        self.discriminator = PatchGAN(channels, disc_channels, disc_layers)
        # The perceptual network is frozen and loaded from files: kept out of the state_dict (a list hides
        # it from nn.Module), built on first use (``setup("fit")`` forces it, so a missing VGG file stops
        # `rezdiff fit` before any work while loading the checkpoint elsewhere to render never needs it)
        # and moved to the data's device on use.
        self._perceptual: list[nn.Module] = []
        self._perceptual_kind = perceptual
        self._perceptual_files = (vgg_weights, lpips_weights)
        self.l1_weight = l1_weight
        self.perceptual_weight = perceptual_weight
        self.vq_weight = vq_weight
        self.gan_weight = gan_weight
        self.disc_start = disc_start
        self.adaptive_weight_max = adaptive_weight_max
        self.render_tile = render_tile
        self.render_pad = render_pad
        self.val_render_resolutions = tuple(val_render_resolutions)
        self.val_render_num = val_render_num
        self._val_images: Tensor | None = None

    @property
    def native_resolution(self) -> tuple[int, int]:
        """``encoder_resolution`` as ``(H, W)``: where evaluation reconstructs by default."""
        return (self.encoder_resolution, self.encoder_resolution)

    def _check_feature_norm(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        """Weights with the decoder's output GroupNorm (rezdiff before ``feature_norm``) need that layout."""
        has_norm = any(k.startswith(prefix + "decoder.decoder.conv_norm_out.") for k in state_dict)
        if has_norm and not self.decoder.out_norm:
            raise ValueError(
                "these INFDAutoencoder weights have the decoder's output norm (phi = SiLU(GroupNorm(h)); "
                "the layout before feature_norm existed): build the model with feature_norm=True"
            )

    # ------------------------------------------------------------------ the API stage 2 uses
    @property
    def perceptual(self) -> nn.Module | None:
        """The frozen perceptual loss network (``None`` for ``perceptual="none"``), loaded on first use."""
        if not self._perceptual and self._perceptual_kind == "lpips_vgg":
            self._perceptual.append(LPIPS(*self._perceptual_files))  # type: ignore[arg-type]
        elif not self._perceptual and self._perceptual_kind == "lap_l1":
            self._perceptual.append(LaplacianL1())
        return self._perceptual[0] if self._perceptual else None

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.perceptual  # noqa: B018 -- load the weights files now: a missing one stops fit at start
            strategy = self.trainer.strategy
            if isinstance(strategy, DDPStrategy):
                # each backward pass leaves weights without a gradient (the generator's in the critic's
                # pass, the critic's before disc_start), which plain DDP refuses; setup runs before the
                # strategy wraps the module, so the flag (a private field of DDPStrategy) takes effect
                strategy._ddp_kwargs["find_unused_parameters"] = True

    def encode(self, images: Tensor) -> Tensor:
        """``images [B, C, S, S]`` in [-1, 1] -> pre-VQ latents ``z [B, latent_channels, h, h]``.

        Images not at ``encoder_resolution`` are resized with Lanczos first (on the CPU, not differentiable).
        """
        if images.shape[-2:] != (self.encoder_resolution, self.encoder_resolution):
            images = resize(images, self.encoder_resolution, "lanczos")
        return self.encoder(images)

    @property
    def iteration(self) -> int:
        """Training iterations done (each steps the autoencoder and the critic once): ``global_step // 2``."""
        return self.global_step // 2

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``z`` -> feature map ``phi [B, 128, 4h, 4w]`` (vector quantisation, straight-through)."""
        return self.decoder(self.quantizer(z)[0])

    def render(
        self,
        phi: Tensor,
        resolution: Resolution,
        *,
        tile: int | None = 256,
        pad: int = 8,
        box: Box | None = None,
        norm: NormMode = "global",
    ) -> Tensor:
        """The field of ``phi`` on the ``resolution`` pixel grid of the whole image, or of ``box = (x0, y0,
        x1, y1)`` (whole-image coordinates in [-1, 1]), ``[B, C, H, W]``; tiled for outputs above ``tile``
        (see :func:`rezdiff.models.infd.clif.render_field` for ``pad`` and ``norm``)."""
        return render_field(self.renderer, phi, resolution, box=box, tile=tile, pad=pad, norm=norm)

    def reconstruct(self, images: Tensor, resolution: Resolution | None = None, **render: Any) -> Tensor:
        """``render(decode(encode(images)), resolution)``; ``resolution`` defaults to the images' size."""
        resolution = tuple(images.shape[-2:]) if resolution is None else resolution
        options = {"tile": self.render_tile, "pad": self.render_pad, **render}
        return self.render(self.decode(self.encode(images)), as_hw(resolution), **options)

    def sample(
        self,
        num: int,
        resolution: Resolution | None = None,
        *,
        steps: int | None = None,
        generator: Generators = None,
        seeds: Sequence[int] | None = None,
        use_ema: bool = True,
    ) -> Tensor:
        raise NotImplementedError(
            "INFDAutoencoder is INFD's stage 1 (an autoencoder) and has no generative model: train stage 2 "
            "(rezdiff.models.INFD) on this checkpoint to sample, or call reconstruct(images, resolution)"
        )

    # ------------------------------------------------------------------ losses
    def _render_batch(self, batch: FieldBatch) -> tuple[Tensor, Tensor, Tensor]:
        batch.require("cond", "coords", "cell", view="MultiScalePatches", model="INFDAutoencoder")
        assert batch.cond is not None and batch.coords is not None and batch.cell is not None
        size, height, width = batch.image.shape[0], *batch.image.shape[-2:]
        if batch.coords.shape[1] != height * width:
            raise ValueError(f"batch has {batch.coords.shape[1]} coords for a {height}x{width} patch")
        z_q, vq_loss, codes = self.quantizer(self.encoder(batch.cond))
        phi = self.decoder(z_q)
        grid = batch.coords.view(size, height, width, 2)
        prediction = self.renderer(phi, grid, batch.cell.view(size, height, width, 2))
        return prediction, vq_loss, codes

    def _reconstruction_terms(self, prediction: Tensor, target: Tensor) -> dict[str, Tensor]:
        terms = {"l1": (prediction - target).abs().mean()}
        perceptual = self.perceptual
        if perceptual is not None:
            perceptual.to(prediction.device)
            terms["perceptual"] = perceptual(prediction, target).mean()
        return terms

    def _reconstruction_loss(self, terms: dict[str, Tensor]) -> Tensor:
        loss = self.l1_weight * terms["l1"]
        if "perceptual" in terms:
            loss = loss + self.perceptual_weight * terms["perceptual"]
        return loss

    def loss(self, batch: FieldBatch, generator: torch.Generator | None = None) -> Tensor:
        """The reconstruction objective without the GAN term: L1 + perceptual + VQ (validation, tests)."""
        prediction, vq_loss, _ = self._render_batch(batch)
        return self._reconstruction_loss(self._reconstruction_terms(prediction, batch.image)) + (
            self.vq_weight * vq_loss
        )

    def _check_finite(self, loss: Tensor, what: str, batch_idx: int) -> None:
        finite = bool(torch.isfinite(loss).item())
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"non-finite {what} loss ({loss.item()}) at iteration {self.iteration} (global step "
                f"{self.global_step}), epoch {self.current_epoch}, batch {batch_idx} on some rank; training "
                "stopped before the optimiser step. Lower the learning rate or check the data."
            )

    def training_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        opt_g, opt_d = self.optimizers()  # type: ignore[misc]
        gan_on = 1.0 if self.iteration >= self.disc_start else 0.0  # disc_start is in iterations

        self.toggle_optimizer(opt_g)
        prediction, vq_loss, codes = self._render_batch(batch)
        terms = self._reconstruction_terms(prediction, batch.image)
        rec_loss = self._reconstruction_loss(terms)
        total = rec_loss + self.vq_weight * vq_loss
        logs = {**terms, "vq": vq_loss, "perplexity": perplexity(codes, self.quantizer.num_codes)}
        if gan_on:
            g_loss = -self.discriminator(prediction).mean()
            weight = adaptive_weight(rec_loss, g_loss, self.renderer.last_layer, self.adaptive_weight_max)
            total = total + self.gan_weight * weight * g_loss
            logs |= {"g": g_loss, "d_weight": weight}
        self._check_finite(total, "generator", batch_idx)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        # Discriminator: stepped every iteration (a zero loss before disc_start, as LDM does) so that the
        # global step always advances by two per iteration.
        self.toggle_optimizer(opt_d)
        fake = prediction.detach()
        d_loss = gan_on * hinge_d_loss(self.discriminator(batch.image), self.discriminator(fake))
        self._check_finite(d_loss, "discriminator", batch_idx)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        size = batch.batch_size
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=size)
        self.log("train/d", d_loss.detach(), batch_size=size)
        for name, value in logs.items():
            self.log(f"train/{name}", value.detach(), batch_size=size)
        return total.detach()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        pass  # no EMA

    def configure_optimizers(self) -> Any:
        """The injected ``generator_optimizer`` over encoder, quantiser, decoder and renderer, and the
        injected ``discriminator_optimizer`` over the critic (manual optimisation steps both)."""
        generator = [*self.encoder.parameters(), *self.quantizer.parameters(), *self.decoder.parameters()]
        generator += list(self.renderer.parameters())
        opt_g = self.optimizer_factories["generator_optimizer"](generator)
        opt_d = self.optimizer_factories["discriminator_optimizer"](self.discriminator.parameters())
        return [opt_g, opt_d]

    # ------------------------------------------------------------------ validation and predict
    def _eval_step(self, batch: FieldBatch, batch_idx: int, stage: str) -> Tensor:
        prediction, vq_loss, _ = self._render_batch(batch)
        terms = self._reconstruction_terms(prediction, batch.image)
        loss = self._reconstruction_loss(terms) + self.vq_weight * vq_loss
        size = batch.batch_size
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=size)
        self.log(f"{stage}/l1", terms["l1"], sync_dist=True, batch_size=size)
        self.log(f"{stage}/psnr", psnr(prediction.clamp(-1, 1), batch.image), sync_dist=True, batch_size=size)
        if stage == "val" and batch_idx == 0 and batch.cond is not None:
            self._val_images = batch.cond[: self.val_render_num].detach()
        return loss

    def on_validation_epoch_end(self) -> None:
        """Save reconstructions of the first validation images at ``val_render_resolutions``."""
        images, self._val_images = self._val_images, None
        if images is None or not self.val_render_resolutions or self._trainer is None:
            return
        if self.trainer.sanity_checking:
            return
        # every rank asks: under DDP trainer.log_dir is a broadcast from rank 0 (rank 0 alone would hang)
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "reconstructions"
        if not self.trainer.is_global_zero:
            return
        with torch.no_grad():
            phi = self.decode(self.encoder(images))
            for resolution in self.val_render_resolutions:
                rendered = self.render(phi, resolution, tile=self.render_tile, pad=self.render_pad)
                rendered = rendered.clamp(-1, 1).float().cpu()
                name = f"epoch={self.current_epoch}-step={self.global_step}-res={resolution}"
                tag = f"reconstructions/res={resolution}"
                log_images(self.trainer, tag, rendered, out_dir / f"{name}.png")

    def predict_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        """Reconstructions of the batch's encoder inputs (``cond``, else ``image``) at their own size."""
        images = batch.cond if batch.cond is not None else batch.image
        return self.reconstruct(images).clamp(-1, 1)


def build_for_counting(**overrides: Any) -> INFDAutoencoder:
    """The paper-sized model on the meta device (no memory), for parameter counts."""
    with torch.device("meta"):
        return INFDAutoencoder(**{"perceptual": "none", **overrides})


__all__ = ["INFDAutoencoder", "adaptive_weight", "build_for_counting", "hinge_d_loss"]
