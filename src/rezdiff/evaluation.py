"""The evaluation harness: score any model at several resolutions with FID, KID, patch FID, SWD, PSNR/SSIM
and scale consistency, sharded over DDP ranks, with reference features cached on disk.

It relies only on the family contract: ``model.sample(num, resolution, steps=, seeds=, use_ema=)`` for the
generative metrics (``fid``, ``kid``, ``pfid``, ``swd``) and, for models that have it,
``model.reconstruct(images, resolution)`` for the reconstruction metrics (``psnr``, ``ssim``,
``scale_consistency``: reconstruct at 2R, box-downsample, compare with the reconstruction at R).

:class:`Evaluate` holds the settings. ``rezdiff test`` builds it from the config's top-level ``evaluate:``
section and runs it as a callback after the test-loss epoch; in a notebook call
``Evaluate(resolutions=[32, 64]).run(model, dataset)``. Results are keyed ``<metric>@<resolution>``
(``fid@64``, ``kid@64``, ``kid_std@64``, ``pfid32@128``, ``swd@64``, ``psnr@256``, ``scale_psnr@256``...).

Reproducibility: generated image ``k`` draws all its noise from its own seed, ``stable_seed(seed, H, W, k)``
(the families' per-image ``seeds=``); images come in chunks of ``batch_size`` dealt round-robin to ranks, so
the images (hence the figures) depend on neither the number of ranks nor ``batch_size``, up to the rounding
of batched network kernels. Reference features are cached under ``stats_dir`` by a key made of the
dataset, the reference indices, the resolution, the crop, the feature extractor and the number of images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from rezdiff.data.coords import Resolution, as_hw
from rezdiff.data.datasets import FieldDataset, stable_seed
from rezdiff.data.images import save_image
from rezdiff.metrics.features import FeatureName, feature_extractor
from rezdiff.metrics.fid import fid_from_features, kid_from_features, random_crops
from rezdiff.metrics.reconstruction import psnr, ssim
from rezdiff.metrics.scale_consistency import consistency_errors
from rezdiff.metrics.swd import multiscale_swd

MetricName = Literal["fid", "kid", "pfid", "swd", "psnr", "ssim", "scale_consistency"]
Reference = Literal["all", "train", "val"]
SAMPLE_METRICS = ("fid", "kid", "pfid", "swd")
RECONSTRUCTION_METRICS = ("psnr", "ssim", "scale_consistency")
Gather = Callable[[Tensor], Tensor]


def default_stats_dir() -> Path:
    """``$REZDIFF_STATS_DIR``, else ``~/.cache/rezdiff/stats``."""
    return Path(os.environ.get("REZDIFF_STATS_DIR") or Path.home() / ".cache" / "rezdiff" / "stats")


def shard(num: int, chunk: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """``(start, count)`` chunks of ``range(num)`` of size ``chunk``; rank r gets chunks r, r + W, ..."""
    if chunk < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad sharding: chunk={chunk}, rank={rank}, world={world}")
    starts = range(0, num, chunk)
    return [(start, min(chunk, num - start)) for k, start in enumerate(starts) if k % world == rank]


def label(resolution: tuple[int, int]) -> str:
    height, width = resolution
    return str(height) if height == width else f"{height}x{width}"


def _identity(tensor: Tensor) -> Tensor:
    return tensor


def _ordered(local: Tensor, positions: Tensor, gather: Gather) -> Tensor:
    """Gather every rank's rows and put them in global order (``positions``: each local row's index)."""
    every, order = gather(local), gather(positions.reshape(-1).long())
    return every[order.argsort()]


def gather_rows(tensor: Tensor, strategy: Any) -> Tensor:
    """Concatenate ``tensor [n_r, ...]`` of every rank in rank order (sizes may differ between ranks)."""
    if strategy is None or strategy.world_size == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=strategy.root_device)
    sizes = strategy.all_gather(size).reshape(-1).tolist()
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    every = strategy.all_gather(padded.to(strategy.root_device)).cpu()
    return torch.cat([every[r, :n] for r, n in enumerate(sizes)])


class Evaluate(pl.Callback):
    """Evaluation settings, and the callback that ``rezdiff test`` runs after the test loss.

    ``resolutions``: where to evaluate (default: the model's ``image_size``). ``metrics``: any of fid, kid,
    pfid (one random ``patch_size``² crop per image, no resize; INFD's "P/R" is ``pfid<P>@<R>``), swd
    (multi-scale SWD on at most ``swd_max_images``), psnr, ssim, scale_consistency (the last three need
    ``model.reconstruct``); by default (None) psnr and ssim for models with ``reconstruct``, fid, kid and
    swd otherwise, and ``[]`` turns the evaluation off. ``num_samples`` images are generated per
    resolution (``steps`` sampler steps, the model's default when None) and compared with
    ``num_reference`` images of the ``reference`` split (all of it when None) rendered at that resolution.
    ``feature``: ``random_conv`` (weights-free; FIDs comparable within rezdiff only), ``inception``
    (needs ``feature_path`` = inception-2015-12-05.pt) or ``torchscript``. Results go to
    ``<run dir>/<output>`` and the loggers (``eval/<key>``); the first ``save_grid`` generated images of
    each resolution to ``<run dir>/samples/eval_<R>.png``.
    """

    def __init__(
        self,
        resolutions: list[int] | None = None,
        metrics: Sequence[MetricName] | None = None,
        num_samples: int = 256,
        batch_size: int = 64,
        steps: int | None = None,
        use_ema: bool = True,
        seed: int = 0,
        feature: FeatureName = "random_conv",
        feature_path: str | None = None,
        feature_seed: int = 0,
        reference: Reference = "all",
        num_reference: int | None = None,
        patch_size: int = 32,
        swd_max_images: int = 512,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        stats_dir: str | None = None,
        output: str = "metrics.json",
        save_grid: int = 16,
    ) -> None:
        super().__init__()
        unknown = set(metrics or ()) - set(SAMPLE_METRICS) - set(RECONSTRUCTION_METRICS)
        if unknown:
            raise ValueError(
                f"unknown metrics {sorted(unknown)}; choose from {SAMPLE_METRICS + RECONSTRUCTION_METRICS}"
            )
        if num_samples < 2 or batch_size < 1:
            raise ValueError("num_samples must be >= 2 and batch_size >= 1")
        self.resolutions = resolutions
        self.metrics = None if metrics is None else list(metrics)
        self._active: list[str] = []
        self._data_size: tuple[int, int] | None = None  # size of the test batches: the default resolution
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.steps = steps
        self.use_ema = use_ema
        self.seed = seed
        self.feature = feature
        self.feature_path = feature_path
        self.feature_seed = feature_seed
        self.reference = reference
        self.num_reference = num_reference
        self.patch_size = patch_size
        self.swd_max_images = swd_max_images
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.stats_dir = Path(stats_dir) if stats_dir else default_stats_dir()
        self.output = output
        self.save_grid = save_grid
        self.grid_dir: Path | None = None
        self._extractor: nn.Module | None = None
        if feature != "random_conv":  # a missing weights file fails here, before any work
            self._extractor = feature_extractor(feature, feature_path, feature_seed)
        self.results: dict[str, float] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    # ------------------------------------------------------------------ settings helpers
    @property
    def extractor(self) -> nn.Module:
        if self._extractor is None:
            self._extractor = feature_extractor(self.feature, self.feature_path, self.feature_seed)
        return self._extractor

    def metrics_for(self, model: nn.Module | None) -> list[str]:
        """The configured metrics; by default psnr and ssim for autoencoders (models with ``reconstruct``),
        fid, kid and swd for everything else."""
        if self.metrics is not None:
            return list(self.metrics)
        if model is not None and callable(getattr(model, "reconstruct", None)):
            return ["psnr", "ssim"]
        return ["fid", "kid", "swd"]

    def model_resolutions(self, model: nn.Module) -> list[tuple[int, int]]:
        if self.resolutions:
            return [as_hw(r) for r in self.resolutions]
        hparams = getattr(model, "hparams", {})
        size = getattr(model, "image_size", None) or hparams.get("image_size") or self._data_size
        if size is None:
            raise ValueError(
                "set evaluate.resolutions: this model has no image_size to evaluate at by default"
            )
        return [as_hw(size)]

    def reference_indices(
        self, dataset: FieldDataset, split: tuple[list[int], list[int]] | None
    ) -> list[int]:
        """The reference images: the chosen split, then the first ``num_reference`` of a seeded shuffle."""
        if self.reference == "all" or split is None:
            indices = list(range(len(dataset)))
        else:
            indices = list(split[0] if self.reference == "train" else split[1])
        if self.num_reference is not None and self.num_reference < len(indices):
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(self.seed)).tolist()
            indices = sorted(indices[i] for i in order[: self.num_reference])
        if len(indices) < 2:
            raise ValueError(f"the {self.reference!r} reference split has {len(indices)} image(s); need >= 2")
        return indices

    # ------------------------------------------------------------------ images and features
    def _features(self, images: Tensor, device: torch.device) -> Tensor:
        if images.shape[0] == 0:  # a rank with no share still takes part in the gathers
            return torch.empty(0, self.extractor.num_features)
        extractor = self.extractor.to(device)
        parts = [
            extractor(images[i : i + self.batch_size].to(device)).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(parts).float()

    def render(
        self,
        dataset: FieldDataset,
        indices: Sequence[int],
        resolution: tuple[int, int],
        rank: int,
        world: int,
    ) -> Tensor:
        """This rank's share of ``dataset[indices]`` rendered at ``resolution``, in chunk order."""
        images = [
            dataset.render(indices[i], resolution)
            for start, count in shard(len(indices), self.batch_size, rank, world)
            for i in range(start, start + count)
        ]
        return torch.stack(images) if images else torch.empty(0, dataset.channels, *resolution)

    def local_indices(self, num: int, rank: int, world: int) -> list[int]:
        """Global positions (in ``range(num)``) of this rank's items, in the order it holds them."""
        return [
            i
            for start, count in shard(num, self.batch_size, rank, world)
            for i in range(start, start + count)
        ]

    def crops(
        self, images: Tensor, positions: Sequence[int], resolution: tuple[int, int], tag: int
    ) -> Tensor:
        """One ``patch_size``² crop per image, placed by a generator keyed by the image's global position, so
        crops do not depend on batch size or the number of ranks."""
        if images.shape[0] == 0:
            return images[..., : self.patch_size, : self.patch_size]
        keys = (self.seed, tag, *resolution, self.patch_size)
        generators = [torch.Generator().manual_seed(stable_seed(*keys, p)) for p in positions]
        return torch.cat(
            [random_crops(im[None], self.patch_size, g) for im, g in zip(images, generators, strict=True)]
        )

    def _cache_file(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.stats_dir / f"{key['kind']}_{label(tuple(key['resolution']))}_{digest}.pt"

    def cache_key(
        self, dataset: FieldDataset, indices: Sequence[int], resolution: tuple[int, int], kind: str
    ) -> dict[str, Any]:
        """What identifies a set of reference features: data, images, resolution, crop, extractor, count."""
        return {
            "version": 1,
            "dataset": repr(dataset),
            "indices": hashlib.sha1(json.dumps(list(map(int, indices))).encode()).hexdigest(),
            "num_images": len(indices),
            "resolution": list(resolution),
            "kind": kind if kind == "full" else f"crop{self.patch_size}",
            "crop_seed": None if kind == "full" else self.seed,
            "feature": self.extractor.name,
        }

    def reference_features(
        self,
        dataset: FieldDataset,
        indices: Sequence[int],
        resolution: tuple[int, int],
        kind: Literal["full", "crop"],
        *,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        gather: Gather = _identity,
    ) -> Tensor:
        """Features of the reference images (whole, or one seeded crop each), from the cache when present."""
        key = self.cache_key(dataset, indices, resolution, kind)
        path = self._cache_file(key)
        stored = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
        found = stored.get("key") == key
        # every rank must take the same branch (the miss branch gathers): use the cache only if all found it
        if bool(gather(torch.tensor([int(found)])).all()):
            self.cache_hits += 1
            return stored["features"]
        self.cache_misses += 1
        images = self.render(dataset, indices, resolution, rank, world)
        positions = self.local_indices(len(indices), rank, world)
        if kind == "crop":
            images = self.crops(images, positions, resolution, tag=0)
        features = _ordered(self._features(images, torch.device(device)), torch.tensor(positions), gather)
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"key": key, "features": features}, temporary)
            os.replace(temporary, path)
        return features

    def generate(
        self, model: nn.Module, resolution: tuple[int, int], rank: int = 0, world: int = 1, channels: int = 3
    ) -> Tensor:
        """This rank's share of the ``num_samples`` generated images (CPU float32), chunk by chunk, image
        ``k`` from its own seed (module docstring)."""
        images = []
        for start, count in shard(self.num_samples, self.batch_size, rank, world):
            seeds = [stable_seed(self.seed, *resolution, k) for k in range(start, start + count)]
            batch = model.sample(count, resolution, steps=self.steps, seeds=seeds, use_ema=self.use_ema)
            images.append(batch.detach().float().cpu())
        return torch.cat(images) if images else torch.empty(0, channels, *resolution)

    # ------------------------------------------------------------------ the evaluation
    def stats(
        self,
        dataset: FieldDataset,
        resolutions: Sequence[Resolution],
        split: tuple[list[int], list[int]] | None = None,
        *,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        gather: Gather = _identity,
        model: nn.Module | None = None,
    ) -> list[Path]:
        """Compute (or find) the cached reference features every configured metric needs; return the files."""
        indices = self.reference_indices(dataset, split)
        metrics = set(self.metrics_for(model))
        kinds = [k for k, m in (("full", ("fid", "kid")), ("crop", ("pfid",))) if set(m) & metrics]
        files = []
        for resolution in map(as_hw, resolutions):
            for kind in kinds:
                self.reference_features(
                    dataset, indices, resolution, kind, device=device, rank=rank, world=world, gather=gather
                )
                files.append(self._cache_file(self.cache_key(dataset, indices, resolution, kind)))
        return files

    @torch.no_grad()
    def run(
        self,
        model: nn.Module,
        dataset: FieldDataset,
        split: tuple[list[int], list[int]] | None = None,
        *,
        rank: int = 0,
        world: int = 1,
        gather: Gather = _identity,
    ) -> dict[str, float]:
        """Every configured metric at every resolution, ``{"fid@32": ..., "swd@64": ...}``, on every rank."""
        device = next(model.parameters()).device
        self._active = self.metrics_for(model)
        sample_metrics = [m for m in self._active if m in SAMPLE_METRICS]
        recon_metrics = [m for m in self._active if m in RECONSTRUCTION_METRICS]
        if recon_metrics and not callable(getattr(model, "reconstruct", None)):
            raise ValueError(
                f"{type(model).__name__} has no reconstruct(images, resolution): drop {recon_metrics} from "
                "evaluate.metrics (they score autoencoders)"
            )
        indices = self.reference_indices(dataset, split)
        results: dict[str, float] = {}
        was_training = model.training
        model.eval()
        try:
            for resolution in self.model_resolutions(model):
                tag = label(resolution)
                if sample_metrics:
                    results |= self._generative(
                        model, dataset, indices, resolution, tag, rank, world, gather, device
                    )
                if recon_metrics:
                    results |= self._reconstruction(
                        model, dataset, indices, resolution, tag, rank, world, gather
                    )
        finally:
            model.train(was_training)
        self.results = results
        return results

    def _generative(
        self,
        model: nn.Module,
        dataset: FieldDataset,
        indices: list[int],
        resolution: tuple[int, int],
        tag: str,
        rank: int,
        world: int,
        gather: Gather,
        device: torch.device,
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        fake = self.generate(model, resolution, rank, world, dataset.channels)
        if self.grid_dir is not None and self.save_grid > 0 and rank == 0:
            save_image(fake[: self.save_grid], self.grid_dir / f"eval_{tag}.png")
        common = dict(device=device, rank=rank, world=world, gather=gather)
        if "fid" in self._active or "kid" in self._active:
            real_features = self.reference_features(dataset, indices, resolution, "full", **common)
            positions = torch.tensor(self.local_indices(self.num_samples, rank, world), dtype=torch.long)
            fake_features = _ordered(self._features(fake, device), positions, gather)
            if "fid" in self._active:
                out[f"fid@{tag}"] = fid_from_features(real_features, fake_features)
            if "kid" in self._active:
                generator = torch.Generator().manual_seed(self.seed)
                mean, std = kid_from_features(
                    real_features, fake_features, self.kid_subsets, self.kid_subset_size, generator
                )
                out[f"kid@{tag}"], out[f"kid_std@{tag}"] = mean, std
        if "pfid" in self._active:
            real_features = self.reference_features(dataset, indices, resolution, "crop", **common)
            positions = torch.tensor(self.local_indices(self.num_samples, rank, world), dtype=torch.long)
            crops = self.crops(fake, positions.tolist(), resolution, tag=1)
            fake_features = _ordered(self._features(crops, device), positions, gather)
            out[f"pfid{self.patch_size}@{tag}"] = fid_from_features(real_features, fake_features)
        if "swd" in self._active:
            count = min(self.swd_max_images, self.num_samples, len(indices))
            positions = torch.tensor(self.local_indices(self.num_samples, rank, world), dtype=torch.long)
            keep = positions < count
            fake_swd = _ordered(fake[keep], positions[keep], gather)
            real_swd = torch.stack([dataset.render(i, resolution) for i in indices[:count]])
            swd = multiscale_swd(
                real_swd,
                fake_swd,
                min_resolution=min(16, *resolution),
                generator=torch.Generator().manual_seed(self.seed),
            )
            out[f"swd@{tag}"] = swd["swd_mean"]
        return out

    def _reconstruction(
        self,
        model: nn.Module,
        dataset: FieldDataset,
        indices: list[int],
        resolution: tuple[int, int],
        tag: str,
        rank: int,
        world: int,
        gather: Gather,
    ) -> dict[str, float]:
        device = next(model.parameters()).device
        reference = self.render(dataset, indices, resolution, rank, world)
        per_image: dict[str, list[Tensor]] = {}
        for start in range(0, len(reference), self.batch_size):
            real = reference[start : start + self.batch_size]
            recon = model.reconstruct(real.to(device), resolution).float().cpu()
            if "psnr" in self._active:
                per_image.setdefault("psnr", []).append(
                    torch.tensor([psnr(r[None], x[None]) for r, x in zip(recon, real, strict=True)])
                )
            if "ssim" in self._active:
                per_image.setdefault("ssim", []).append(
                    torch.tensor([ssim(r[None], x[None]) for r, x in zip(recon, real, strict=True)])
                )
            if "scale_consistency" in self._active:
                high = (
                    model.reconstruct(real.to(device), (2 * resolution[0], 2 * resolution[1])).float().cpu()
                )
                errors = consistency_errors(high, recon)
                per_image.setdefault("scale_psnr", []).append(errors["psnr"].float())
                per_image.setdefault("scale_l1", []).append(errors["l1"].float())
        out = {}
        for name, parts in per_image.items():
            local = torch.cat(parts) if parts else torch.empty(0)
            out[f"{name}@{tag}"] = float(gather(local.double()).mean())
        return out

    # ------------------------------------------------------------------ the callback
    def on_test_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        image = getattr(batch, "image", None)
        if self._data_size is None and isinstance(image, Tensor):
            self._data_size = (int(image.shape[-2]), int(image.shape[-1]))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "dataset"):
            raise ValueError("Evaluate needs a FieldDataModule (its dataset is the reference set)")
        split = datamodule.split() if hasattr(datamodule, "split") else None
        strategy = trainer.strategy
        self.grid_dir = Path(trainer.default_root_dir) / "samples"
        results = self.run(
            pl_module,
            datamodule.dataset,
            split,
            rank=trainer.global_rank,
            world=trainer.world_size,
            gather=lambda tensor: gather_rows(tensor, strategy),
        )
        self.seconds = time.perf_counter() - start
        for key, value in results.items():
            pl_module.log(f"eval/{key}", value, rank_zero_only=True, batch_size=1)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = dict(self.results)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("test/"):
                metrics[key] = float(value)
        cls = type(pl_module)
        report = {
            "model": f"{cls.__module__}.{cls.__qualname__}",
            "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "resolutions": [label(r) for r in self.model_resolutions(pl_module)],
            "settings": self.settings(),
            "metrics": metrics,
            "eval_seconds": getattr(self, "seconds", None),
            "world_size": trainer.world_size,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = Path(trainer.default_root_dir) / self.output
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")

    def settings(self) -> dict[str, Any]:
        names = (
            "metrics",
            "num_samples",
            "batch_size",
            "steps",
            "use_ema",
            "seed",
            "feature",
            "feature_seed",
        )
        names += (
            "reference",
            "num_reference",
            "patch_size",
            "swd_max_images",
            "kid_subsets",
            "kid_subset_size",
        )
        settings = {name: getattr(self, name) for name in names}
        return settings | {"metrics": self._active or self.metrics, "feature_name": self.extractor.name}
