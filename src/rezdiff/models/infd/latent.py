"""INFD stage 2: latent diffusion over a frozen image-neural-field autoencoder, rendered at any resolution.

The diffusion model is an ADM-sized U-Net on the raw *pre-VQ* encoder outputs of stage 1
(:class:`~rezdiff.models.infd.autoencoder.INFDAutoencoder`); a sample is latent DDIM → VQ + decoder
(feature map φ) → CLIF render at any resolution, tiled for large outputs. Box-guided sampling
(paper §5.5) lives in :mod:`rezdiff.models.infd.guidance` and is reached through ``sample(guidance=...)``.

**The stage-1 model inside stage 2.** ``autoencoder_ckpt`` is read once, when the model is first built;
its class and (inference-only) arguments are recorded in the hyperparameter ``autoencoder_config`` and
its weights become the frozen submodule ``autoencoder`` of this model's state_dict. A stage-2 checkpoint
therefore rebuilds with ``rezdiff.load`` alone, even after the stage-1 file moved or was deleted. The
training-only parts of stage 1 are left out: the perceptual network (and its VGG weights file) is
switched off by :data:`INFERENCE_OVERRIDES`, and the discriminator is dropped if the class allows it.

**Latent cache.** Batches must come from the :class:`CachedLatents` data view. On ``fit``/``validate``/
``test`` start the model encodes every image of the data module's dataset once (encoder input:
``dataset.render(i, encoder_resolution)``, the ``cond`` of stage 1's ``MultiScalePatches``) and hands
the ``[N, C, h, w]`` tensor to that view, which returns ``latents[index]`` for image ``index``.
The tensor is also saved to ``latent_cache_dir`` (default ``<trainer.default_root_dir>/latent_cache``)
as ``infd_latents_<key>.pt``; ``key`` hashes the stage-1 weights, ``repr(dataset)``, its length and the
encoder resolution, so a changed autoencoder or dataset description makes a new file (images edited in
place under the same folder name are not detected: delete the folder). Under DDP rank 0 encodes and
writes, the others wait at a barrier and read the same file, so every rank trains on identical latents.

(Over ~400 lines: stage 2 owns the frozen stage 1 (its rebuild from the recorded config and weights), the
latent scale, the latent cache and tiled rendering; each is stage-2 state, kept with the class that saves it.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rezdiff.core.gaussian import q_sample, randn, randn_like, sample_timesteps
from rezdiff.core.samplers import GAUSSIAN, get_sampler
from rezdiff.core.sampling import Callback, Generators, SamplerSettings, chain_callbacks, resolve_generators
from rezdiff.core.schedules import TimestepSpacing, alphas_cumprod, make_betas, timestep_subsequence
from rezdiff.data.batch import FieldBatch
from rezdiff.data.coords import Resolution
from rezdiff.data.datasets import FieldDataset
from rezdiff.models.base import DiffusionModule, resolution_or, step_generator
from rezdiff.models.infd.clif import NormMode, check_norm_mode
from rezdiff.models.infd.views import CachedLatents
from rezdiff.models.optimization import EMASettings, class_spec
from rezdiff.nn.unet import UNet, UNetSettings

DEFAULT_OPTIMIZER = class_spec("torch.optim.AdamW", lr=9.6e-5, betas=[0.9, 0.999], weight_decay=0.01)
"""The optimiser of ``optimizer``'s default (see the family README for its source)."""
DEFAULT_EMA = EMASettings(decay=0.9999, update_every=1, warmup=False)
"""The EMA of ``ema``'s default."""
DEFAULT_UNET = UNetSettings(
    block_out_channels=(224, 448, 672, 896),
    layers_per_block=2,
    attention_levels=(1, 2, 3),
    attention_head_dim=32,
    dropout=0.0,
    norm_num_groups=32,
)
"""The latent U-Net of ``unet``'s default (the paper's, see the family README)."""

# Stage-1 arguments replaced when the autoencoder is rebuilt for inference inside stage 2: the perceptual
# loss is training-only and would otherwise need its VGG weights file at every load.
INFERENCE_OVERRIDES: dict[str, Any] = {"perceptual": "none", "vgg_weights": None}
# Bump when the way images become encoder inputs changes, so old latent caches are not reused.
_CACHE_FORMAT = 1


def read_autoencoder_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``({"class_path", "init_args"}, state_dict)`` of a stage-1 checkpoint, with inference overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no stage-1 checkpoint at {path}: train the autoencoder first (e.g. rezdiff fit --config "
            "configs/infd_ffhq.yaml) and set model.init_args.autoencoder_ckpt to its checkpoints/last.ckpt"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    info = checkpoint.get("rezdiff") if isinstance(checkpoint, dict) else None
    if not info:
        raise ValueError(f"{path} is not a rezdiff checkpoint (no 'rezdiff' entry naming the model class)")
    args = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    args.update({k: v for k, v in INFERENCE_OVERRIDES.items() if k in args})
    return {"class_path": info["class_path"], "init_args": args}, checkpoint["state_dict"]


def build_autoencoder(config: dict[str, Any]) -> nn.Module:
    """The stage-1 module described by ``config`` (weights uninitialised), without training-only parts."""
    from rezdiff.loading import build  # lazy: rezdiff.loading imports the models package

    autoencoder = build(config["class_path"], config["init_args"])
    if hasattr(autoencoder, "discriminator"):
        autoencoder.discriminator = None  # adversarial training only; not needed to encode/decode/render
    return autoencoder


def _mark_old_checkpoint_scale_set(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Checkpoints written before ``latent_scale_set`` existed hold a fitted scale: mark it set."""
    if prefix + "latent_scale_value" in state_dict and prefix + "latent_scale_set" not in state_dict:
        state_dict[prefix + "latent_scale_set"] = torch.tensor(True)


class INFD(DiffusionModule):
    """Latent ε-prediction diffusion on a frozen INFD autoencoder; samples render at any resolution.

    Defaults are the paper's (Appendix H): ADM U-Net with 224 base channels, multipliers (1, 2, 3, 4), two
    residual blocks, attention at 32², 16², 8² of the 64² latent (levels 1, 2, 3) with 32 channels per
    head; linear betas 0.0015 → 0.0195 over 1000 steps; AdamW lr 9.6e-5, weight decay 0.01; EMA 0.9999
    (no warm-up, as the authors); 200 DDIM steps with η = 1, from ``t = T - 1`` (``spacing="trailing"``; the
    authors' ``"ddim200"`` stride is ``"leading"``'s, from 995). ``latent_scale`` multiplies latents before
    diffusion (1.0 = raw latents as in the paper; ``None`` = ``1 / std`` of the cached latents, estimated
    once, at the start of the first ``fit``, and stored in the checkpoint: the persistent buffers
    ``latent_scale_value`` and ``latent_scale_set`` travel with ``rezdiff.load`` and ``--ckpt_path`` resume,
    and a set scale is never re-estimated, whatever data a later validate/test/fit sees).
    """

    sampler_process = GAUSSIAN  # the latent samplers

    latent_scale_value: Tensor
    latent_scale_set: Tensor

    def __init__(
        self,
        autoencoder_ckpt: str,
        autoencoder_config: dict[str, Any] | None = None,
        latent_scale: float | None = 1.0,
        latent_cache_dir: str | None = None,
        encode_batch_size: int = 32,
        unet: UNetSettings = DEFAULT_UNET,
        num_train_steps: int = 1000,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 0.0015,
        beta_end: float = 0.0195,
        sample_steps: int = 200,
        spacing: TimestepSpacing = "trailing",
        eta: float = 1.0,
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
        if latent_scale is not None and latent_scale <= 0:
            raise ValueError(f"latent_scale must be positive or None (estimate), got {latent_scale}")
        self.save_hyperparameters()
        state = None
        if autoencoder_config is None:  # first build: read the stage-1 file and remember what it was
            autoencoder_config, state = read_autoencoder_config(autoencoder_ckpt)
            self.hparams["autoencoder_config"] = autoencoder_config
        self.autoencoder = build_autoencoder(autoencoder_config)
        if state is not None:
            own = self.autoencoder.state_dict()
            missing = [k for k in own if k not in state]
            if missing:
                raise ValueError(f"{autoencoder_ckpt} lacks autoencoder weights {missing[:5]}")
            self.autoencoder.load_state_dict({k: state[k] for k in own})
        self.autoencoder.requires_grad_(False).eval()
        self.encoder_resolution = int(self.autoencoder.encoder_resolution)
        size = int(self.autoencoder.latent_size)
        self.latent_shape = (int(self.autoencoder.latent_channels), size, size)
        self.network = UNet(
            in_channels=self.latent_shape[0],
            out_channels=self.latent_shape[0],
            **self.unet_settings.as_dict(),
        )
        self.network.check_size(*self.latent_shape[1:])
        self.latent_scale = latent_scale
        self.latent_cache_dir = latent_cache_dir
        self.encode_batch_size = encode_batch_size
        self.num_train_steps = num_train_steps
        self.sample_steps = sample_steps
        timestep_subsequence(num_train_steps, sample_steps, spacing)  # a bad spacing or count fails here
        self.spacing: TimestepSpacing = spacing
        self.eta = eta
        self.register_buffer(
            "latent_scale_value", torch.tensor(1.0 if latent_scale is None else latent_scale)
        )
        # True once latent_scale_value holds the model's scale (at once for a given latent_scale).
        self.register_buffer("latent_scale_set", torch.tensor(latent_scale is not None))
        self._register_load_state_dict_pre_hook(_mark_old_checkpoint_scale_set)
        betas = make_betas(schedule, num_train_steps, beta_start, beta_end)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas), persistent=False)
        self.setup_ema()

    @property
    def native_resolution(self) -> tuple[int, int]:
        """Stage 1's ``encoder_resolution`` as ``(H, W)``: the default of ``sample()``, evaluation, grids."""
        return (self.encoder_resolution, self.encoder_resolution)

    # ----------------------------------------------------------------- frozen stage 1
    def train(self, mode: bool = True) -> INFD:
        """The autoencoder stays in eval mode whatever Lightning asks of the rest."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [-1, 1] -> scaled latents, as the diffusion model sees them."""
        return self.autoencoder.encode(images) * self.latent_scale_value

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> the decoder's feature map φ (VQ with straight-through gradient + decoder)."""
        return self.autoencoder.decode(latents / self.latent_scale_value)

    def render(
        self,
        features: Tensor,
        resolution: Resolution,
        *,
        tile: int | None = 256,
        pad: int = 8,
        norm: NormMode = "global",
    ) -> Tensor:
        """φ -> images at ``resolution``, one sample at a time (peak memory ~ one image's tiles); ``norm``:
        GroupNorm statistics of a tiled render, whole-image (``"global"``), estimated from windows
        (``"sampled"``) or per tile (``"tile"``, the authors'), see :func:`.clif.render_field`."""
        check_norm_mode(norm)
        # norm is passed only when not the default, so stage-1 stand-ins whose render has no norm still work
        options: dict[str, Any] = {"tile": tile, "pad": pad} | ({"norm": norm} if norm != "global" else {})
        render = self.autoencoder.render
        return torch.cat([render(features[i : i + 1], resolution, **options) for i in range(len(features))])

    # ----------------------------------------------------------------- latent cache
    def _cache_key(self, dataset: FieldDataset) -> str:
        digest = hashlib.blake2b(digest_size=8)
        digest.update(repr((_CACHE_FORMAT, repr(dataset), len(dataset), self.encoder_resolution)).encode())
        for name, tensor in sorted(self.autoencoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def encode_dataset(self, dataset: FieldDataset) -> Tensor:
        """Raw (unscaled) pre-VQ latents ``[N, C, h, w]`` of every image of ``dataset``, on the CPU.

        The encoder input is ``dataset.render(i, encoder_resolution)``, exactly the ``cond`` that stage 1's
        ``MultiScalePatches`` trained the encoder on (the dataset's ``resize_method``/``crop`` apply).
        """
        chunks = []
        for start in range(0, len(dataset), self.encode_batch_size):
            stop = min(len(dataset), start + self.encode_batch_size)
            images = torch.stack([dataset.render(i, self.encoder_resolution) for i in range(start, stop)])
            chunks.append(self.autoencoder.encode(images.to(self.device)).float().cpu())
        return torch.cat(chunks)

    def _cached_latents(self, dataset: FieldDataset, root: Path) -> tuple[Tensor, str]:
        key = self._cache_key(dataset)
        path = root / f"infd_latents_{key}.pt"
        strategy = self.trainer.strategy
        if strategy.is_global_zero and not path.is_file():
            latents = self.encode_dataset(dataset)
            root.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"key": key, "dataset": repr(dataset), "latents": latents}, partial)
            os.replace(partial, path)  # atomic: a reader never sees half a file
        strategy.barrier("infd_latent_cache")
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("key") != key or len(stored["latents"]) != len(dataset):
            raise RuntimeError(f"latent cache {path} does not match this autoencoder and dataset; delete it")
        return stored["latents"], key

    def prepare_latents(self) -> None:
        """Fill the data module's :class:`CachedLatents` data views (once per key)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        views = [getattr(datamodule, name, None) for name in ("view", "val_view")]
        if datamodule is None or not isinstance(views[0], CachedLatents):
            raise ValueError(
                "INFD trains on cached stage-1 latents: configure the data module with "
                "`view: rezdiff.models.infd.CachedLatents` (a FieldDataModule over the image dataset)"
            )
        if getattr(datamodule, "hflip", 0.0) > 0:
            raise ValueError(
                "INFD trains on latents cached once per image, which a random flip cannot reach (the INFD "
                "paper's runs do not flip): set the data module's hflip: 0"
            )
        todo = [v for v in views if isinstance(v, CachedLatents)]
        if all(v.latents is not None for v in todo):
            return  # the autoencoder is frozen: a filled cache stays valid for the whole run
        root = Path(self.latent_cache_dir or Path(self.trainer.default_root_dir) / "latent_cache")
        latents, key = self._cached_latents(datamodule.dataset, root)
        for view in todo:
            view.fill(latents, key)

    def estimate_latent_scale(self, latents: Tensor) -> None:
        """Set ``latent_scale_value = 1 / std(latents)`` if no scale is set yet; a set scale is kept."""
        if bool(self.latent_scale_set):
            return
        self.latent_scale_value.fill_(1.0 / float(latents.std()))
        self.latent_scale_set.fill_(True)

    def on_fit_start(self) -> None:
        self.prepare_latents()
        if not bool(self.latent_scale_set):  # first fit only: later runs read the checkpoint's scale
            view = self.trainer.datamodule.view  # type: ignore[attr-defined]
            self.estimate_latent_scale(view.latents)

    def on_validation_start(self) -> None:
        self.prepare_latents()

    def on_test_start(self) -> None:
        self.prepare_latents()

    # ----------------------------------------------------------------- diffusion
    def loss(self, batch: FieldBatch, generator: torch.Generator) -> Tensor:
        z = batch.image
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"INFD expects batches of stage-1 latents {self.latent_shape}, got {tuple(z.shape[1:])}: "
                "configure the data module with `view: rezdiff.models.infd.CachedLatents`"
            )
        z = z * self.latent_scale_value
        t = sample_timesteps(z.shape[0], self.num_train_steps, generator=generator, device=z.device)
        noise = randn_like(z, generator)
        return F.mse_loss(self.network(q_sample(z, noise, self.alphas_cumprod[t]), t), noise)

    @torch.no_grad()
    def sample_latents(
        self,
        num: int,
        *,
        steps: int | None = None,
        generator: Generators = None,
        use_ema: bool = True,
        sampler: str = "ddim",
        eta: float | None = None,
        spacing: TimestepSpacing | None = None,
        guidance: list[Any] | None = None,
        guidance_scale: float = 1.0,
        guidance_normalize: bool = True,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """Scaled latents ``[num, C, h, w]`` by ``sampler`` (any of the ``"gaussian"`` process; DDIM by
        default, ``steps``, ``eta``, ``spacing``: default the model's, ``"trailing"`` = from ``T - 1``),
        DPS-guided if ``guidance`` (:class:`~rezdiff.models.infd.guidance.DPSGuidance` wraps the network and
        moves the state after each step, before ``callback``); ``generator`` may be one per latent."""
        from rezdiff.models.infd.guidance import DPSGuidance, conditions_loss

        entry = get_sampler(GAUSSIAN, sampler)
        network = self.sampling_network(use_ema)
        x_T = randn((num, *self.latent_shape), generator, self.device)
        count = steps or (self.num_train_steps if entry.all_steps else self.sample_steps)
        timesteps = timestep_subsequence(self.num_train_steps, count, spacing or self.spacing)
        settings = SamplerSettings(eta=self.eta if eta is None else eta, progress=progress)
        eps_fn = network
        if guidance:

            def render_box(features: Tensor, resolution: tuple[int, int], box: Any) -> Tensor:
                return self.autoencoder.render(features, resolution, box=box.as_tuple(), tile=None)

            loss_fn = conditions_loss(guidance, self.decode, render_box)
            guide = DPSGuidance(network, self.alphas_cumprod, loss_fn, guidance_scale, guidance_normalize)
            eps_fn, callback = guide.eps, chain_callbacks(guide.callback, callback)
        with self.eval_mode():
            return entry.fn(eps_fn, x_T, self.alphas_cumprod, timesteps, settings, generator, callback)

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
        sampler: str = "ddim",
        tile: int | None = 256,
        pad: int = 8,
        norm: NormMode = "global",
        eta: float | None = None,
        spacing: TimestepSpacing | None = None,
        guidance: list[Any] | None = None,
        guidance_scale: float = 1.0,
        guidance_normalize: bool = True,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """``num`` images at ``resolution`` (default ``encoder_resolution``), any size: latent ``sampler``
        (DDIM by default; ``steps``, ``eta``, ``spacing``) → VQ + decoder → render, tiled by ``tile`` px with
        ``pad`` px context (``tile=None``: whole) and GroupNorm statistics ``norm`` (``"global"``: of the
        whole image, the tiled render equals the whole one; ``"sampled"``: the whole image's, estimated from
        windows at about one tile's extra cost; ``"tile"``: of each padded tile, the authors' mode).
        ``guidance``: a list of :class:`rezdiff.models.infd.guidance.Condition` for DPS box guidance with step
        ``guidance_scale`` (see that module). ``seeds``: one per image; ``callback`` sees every latent
        step."""
        height, width = resolution_or(self.encoder_resolution, resolution)
        check_norm_mode(norm)  # before the (long) latent sampling
        self.check_sampler(sampler)
        latents = self.sample_latents(
            num,
            steps=steps,
            generator=resolve_generators(num, generator, seeds),
            use_ema=use_ema,
            sampler=sampler,
            eta=eta,
            spacing=spacing,
            guidance=guidance,
            guidance_scale=guidance_scale,
            guidance_normalize=guidance_normalize,
            progress=progress,
            callback=callback,
        )
        with self.eval_mode():
            images = self.render(self.decode(latents), (height, width), tile=tile, pad=pad, norm=norm)
        return images.clamp(-1, 1)

    def predict_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        """As many samples as the batch holds, at ``encoder_resolution`` (batches hold latents)."""
        generator = step_generator(self._seed(), 3, batch_idx, self.global_rank, device=self.device)
        return self.sample(batch.batch_size, self.encoder_resolution, generator=generator)
