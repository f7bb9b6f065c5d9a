"""One generation and feature pipeline that serves every metric: generated images, reference images,
their features and their crops, computed once per resolution, only when a metric asks for them, sharded
over DDP ranks and gathered back in global order; reference features are cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rezdiff.data.datasets import FieldDataset, stable_seed
from rezdiff.data.images import save_image
from rezdiff.evaluation.sharding import Gather, identity, label, local_positions, ordered, shard
from rezdiff.metrics.features import FeatureName, feature_extractor
from rezdiff.metrics.fid import random_crops

Reference = Literal["all", "train", "val"]
FeatureKind = Literal["full", "crop"]


def default_stats_dir() -> Path:
    """``$REZDIFF_STATS_DIR``, else ``~/.cache/rezdiff/stats``."""
    return Path(os.environ.get("REZDIFF_STATS_DIR") or Path.home() / ".cache" / "rezdiff" / "stats")


@dataclass(frozen=True)
class Settings:
    """What the pipeline needs to know (see :class:`rezdiff.evaluation.Evaluate` for each meaning).
    ``sample`` holds the keyword arguments of every ``model.sample`` call (``steps``, ``use_ema``, sampler
    settings), the harness adding only the count, the resolution and the noise."""

    num_samples: int = 256
    batch_size: int = 64
    seed: int = 0
    sample: dict[str, Any] = field(default_factory=dict)
    feature: FeatureName = "random_conv"
    feature_path: str | None = None
    feature_seed: int = 0
    reference: Reference = "all"
    num_reference: int | None = None
    patch_size: int = 32
    crops_per_image: int = 1
    stats_dir: Path = field(default_factory=default_stats_dir)

    def __post_init__(self) -> None:
        if self.crops_per_image < 1:
            raise ValueError(f"evaluate.crops_per_image must be >= 1, got {self.crops_per_image}")


def upsample(images: Tensor, resolution: tuple[int, int]) -> Tensor:
    """``images`` resized bicubically (``align_corners=False``) to ``resolution``, clamped to [-1, 1] as
    images are: the "generate at a lower resolution, then upsample" baseline."""
    resized = F.interpolate(images, size=resolution, mode="bicubic", align_corners=False)
    return resized.clamp(-1.0, 1.0)


class Pipeline:
    """Images and features for the metrics; counts reference-feature cache hits and misses."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._extractor: nn.Module | None = None
        if settings.feature != "random_conv":  # a missing weights file fails here, before any work
            self._extractor = feature_extractor(
                settings.feature, settings.feature_path, settings.feature_seed
            )
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def extractor(self) -> nn.Module:
        """The feature extractor (built on first use: the weights-free one costs nothing until then)."""
        if self._extractor is None:
            s = self.settings
            self._extractor = feature_extractor(s.feature, s.feature_path, s.feature_seed)
        return self._extractor

    # ------------------------------------------------------------------ generated images
    def generate_batch(
        self, model: nn.Module, positions: Sequence[int], resolution: tuple[int, int]
    ) -> Tensor:
        """Generated images number ``positions`` (consecutive global indices) at ``resolution``, CPU float32.

        The one place evaluation calls ``model.sample``: image ``k`` draws all its noise from its own seed
        ``stable_seed(seed, H, W, k)`` (the families' per-image ``seeds=``), so the images, hence the figures,
        depend on neither ``batch_size`` nor the number of ranks (up to the rounding of batched kernels).
        """
        seeds = [stable_seed(self.settings.seed, *resolution, k) for k in positions]
        images = model.sample(len(positions), resolution, **self.settings.sample, seeds=seeds)
        return images.detach().float().cpu()

    def generate(
        self, model: nn.Module, resolution: tuple[int, int], rank: int = 0, world: int = 1, channels: int = 3
    ) -> Tensor:
        """This rank's share of the ``num_samples`` generated images, chunk by chunk."""
        chunks = shard(self.settings.num_samples, self.settings.batch_size, rank, world)
        images = [self.generate_batch(model, range(start, start + n), resolution) for start, n in chunks]
        return torch.cat(images) if images else torch.empty(0, channels, *resolution)

    # ------------------------------------------------------------------ reference images
    def reference_indices(
        self, dataset: FieldDataset, split: tuple[list[int], list[int]] | None
    ) -> list[int]:
        """The reference images: the chosen split, then the first ``num_reference`` of a seeded shuffle."""
        s = self.settings
        if s.reference == "all" or split is None:
            indices = list(range(len(dataset)))
        else:
            indices = list(split[0] if s.reference == "train" else split[1])
        if s.num_reference is not None and s.num_reference < len(indices):
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(s.seed)).tolist()
            indices = sorted(indices[i] for i in order[: s.num_reference])
        if len(indices) < 2:
            raise ValueError(f"the {s.reference!r} reference split has {len(indices)} image(s); need >= 2")
        return indices

    def render(
        self,
        dataset: FieldDataset,
        indices: Sequence[int],
        resolution: tuple[int, int],
        rank: int,
        world: int,
    ) -> Tensor:
        """This rank's share of ``dataset[indices]`` rendered at ``resolution``, in chunk order."""
        positions = local_positions(len(indices), self.settings.batch_size, rank, world)
        images = [dataset.render(indices[i], resolution) for i in positions]
        return torch.stack(images) if images else torch.empty(0, dataset.channels, *resolution)

    # ------------------------------------------------------------------ crops and features
    def crops(
        self, images: Tensor, positions: Sequence[int], resolution: tuple[int, int], tag: int
    ) -> Tensor:
        """``crops_per_image`` ``patch_size``² crops per image (image by image, ``[N * k, C, P, P]``), placed
        by a generator keyed by the image's global position (and ``tag``: 0 reference, 1 generated), so
        crops depend on neither the batch size nor the ranks."""
        patch, count = self.settings.patch_size, self.settings.crops_per_image
        if images.shape[0] == 0:
            return images[..., :patch, :patch]
        keys = (self.settings.seed, tag, *resolution, patch)
        generators = [torch.Generator().manual_seed(stable_seed(*keys, p)) for p in positions]
        pairs = zip(images, generators, strict=True)
        return torch.cat([random_crops(im[None].expand(count, -1, -1, -1), patch, g) for im, g in pairs])

    def crop_positions(self, positions: Sequence[int] | Tensor) -> Tensor:
        """The global order of the crops of images at ``positions``: crop ``j`` of image ``p`` is
        ``p * crops_per_image + j``."""
        count = self.settings.crops_per_image
        images = torch.as_tensor(positions, dtype=torch.long).reshape(-1, 1)
        return (images * count + torch.arange(count)).reshape(-1)

    def features(self, images: Tensor, device: torch.device) -> Tensor:
        """Features ``[N, D]`` (CPU float32) of ``images``, ``batch_size`` at a time on ``device``."""
        if images.shape[0] == 0:  # a rank with no share still takes part in the gathers
            return torch.empty(0, self.extractor.num_features)
        extractor, step = self.extractor.to(device), self.settings.batch_size
        parts = [extractor(images[i : i + step].to(device)).cpu() for i in range(0, len(images), step)]
        return torch.cat(parts).float()

    def cache_key(
        self, dataset: FieldDataset, indices: Sequence[int], resolution: tuple[int, int], kind: FeatureKind
    ) -> dict[str, Any]:
        """What identifies a set of reference features: data, images, resolution, crop, extractor, count."""
        return {
            "version": 1,
            "dataset": repr(dataset),
            "indices": hashlib.sha1(json.dumps(list(map(int, indices))).encode()).hexdigest(),
            "num_images": len(indices),
            "resolution": list(resolution),
            "kind": kind if kind == "full" else self._crop_kind(),
            "crop_seed": None if kind == "full" else self.settings.seed,
            "feature": self.extractor.name,
        }

    def _crop_kind(self) -> str:
        """``crop<P>``, or ``crop<P>x<k>`` with ``k`` crops per image (one crop keeps the old cache keys)."""
        s = self.settings
        return f"crop{s.patch_size}" + (f"x{s.crops_per_image}" if s.crops_per_image > 1 else "")

    def cache_file(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.settings.stats_dir / f"{key['kind']}_{label(tuple(key['resolution']))}_{digest}.pt"

    def reference_features(
        self,
        dataset: FieldDataset,
        indices: Sequence[int],
        resolution: tuple[int, int],
        kind: FeatureKind,
        *,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        gather: Gather = identity,
    ) -> Tensor:
        """Features of the reference images (whole, or one seeded crop each), from the cache when present."""
        key = self.cache_key(dataset, indices, resolution, kind)
        path = self.cache_file(key)
        stored = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
        found = stored.get("key") == key
        # every rank must take the same branch (the miss branch gathers): use the cache only if all found it
        if bool(gather(torch.tensor([int(found)])).all()):
            self.cache_hits += 1
            return stored["features"]
        self.cache_misses += 1
        images = self.render(dataset, indices, resolution, rank, world)
        positions = local_positions(len(indices), self.settings.batch_size, rank, world)
        order = torch.tensor(positions, dtype=torch.long)
        if kind == "crop":
            images = self.crops(images, positions, resolution, tag=0)
            order = self.crop_positions(positions)
        features = ordered(self.features(images, torch.device(device)), order, gather)
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"key": key, "features": features}, temporary)
            os.replace(temporary, path)
        return features

    # ------------------------------------------------------------------ what metrics receive
    def reconstruction_batches(
        self,
        model: nn.Module,
        dataset: FieldDataset,
        indices: Sequence[int],
        resolution: tuple[int, int],
        *,
        rank: int = 0,
        world: int = 1,
        double: bool = False,
    ) -> Iterator[ReconstructionBatch]:
        """This rank's reference images, a chunk at a time, with ``model.reconstruct`` at ``resolution``
        (and at twice it when ``double``)."""
        device = next(model.parameters()).device
        for start, count in shard(len(indices), self.settings.batch_size, rank, world):
            real = torch.stack([dataset.render(indices[i], resolution) for i in range(start, start + count)])
            recon = model.reconstruct(real.to(device), resolution).float().cpu()
            high = None
            if double:
                high = (
                    model.reconstruct(real.to(device), (2 * resolution[0], 2 * resolution[1])).float().cpu()
                )
            yield ReconstructionBatch(real, recon, high)


@dataclass(frozen=True)
class ReconstructionBatch:
    """Reference images ``real`` of one chunk, their reconstruction at the same resolution and, for metrics
    that need ``reconstruction_2x``, at twice it (``None`` otherwise); CPU float32, this rank's share."""

    real: Tensor
    reconstruction: Tensor
    reconstruction_2x: Tensor | None


class SampleSet:
    """What a generative metric reads at one resolution, each item computed on first access and shared by
    every metric: the generated images, the reference images, their features and crop features.

    Every property that gathers must be read on every rank in the same order (metrics do the same work on
    every rank, so they do).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        model: nn.Module,
        dataset: FieldDataset,
        indices: Sequence[int],
        resolution: tuple[int, int],
        *,
        rank: int = 0,
        world: int = 1,
        gather: Gather = identity,
        grid: Path | None = None,
        grid_size: int = 0,
        source: tuple[int, int] | None = None,
        source_images: Tensor | None = None,
    ) -> None:
        self.pipeline, self.model, self.dataset = pipeline, model, dataset
        self.source, self.source_images = source, source_images
        self.indices, self.resolution = list(indices), resolution
        self.rank, self.world, self.gather = rank, world, gather
        self.grid, self.grid_size = grid, grid_size
        self.device = next(model.parameters()).device
        settings = pipeline.settings
        self.seed, self.num_samples, self.patch_size = (
            settings.seed,
            settings.num_samples,
            settings.patch_size,
        )
        self.num_reference = len(self.indices)
        self.positions = torch.tensor(
            local_positions(self.num_samples, settings.batch_size, rank, world), dtype=torch.long
        )

    @cached_property
    def generated(self) -> Tensor:
        """This rank's share of the generated images (global positions: :attr:`positions`); with a
        ``source`` resolution, the images generated there (``source_images`` when given: this rank's share,
        generated earlier) upsampled bicubically to :attr:`resolution`."""
        images = self.source_images
        if images is None:
            size = self.resolution if self.source is None else self.source
            images = self.pipeline.generate(self.model, size, self.rank, self.world, self.dataset.channels)
        if self.source is not None:
            images = upsample(images, self.resolution)
        if self.grid is not None and self.grid_size > 0 and self.rank == 0:
            save_image(images[: self.grid_size], self.grid)
        return images

    def generated_images(self, count: int) -> Tensor:
        """The first ``count`` generated images, gathered from every rank."""
        keep = self.positions < count
        return ordered(self.generated[keep], self.positions[keep], self.gather)

    def reference_images(self, count: int) -> Tensor:
        """The first ``count`` reference images (rendered on every rank)."""
        return torch.stack([self.dataset.render(i, self.resolution) for i in self.indices[:count]])

    @cached_property
    def generated_features(self) -> Tensor:
        """Features of every generated image, in global order."""
        return ordered(self.pipeline.features(self.generated, self.device), self.positions, self.gather)

    @cached_property
    def reference_features(self) -> Tensor:
        """Features of every reference image (cached on disk)."""
        return self._reference("full")

    @cached_property
    def generated_crop_features(self) -> Tensor:
        """Features of the seeded ``patch_size``² crops (``crops_per_image`` each) of every generated image,
        in global crop order."""
        crops = self.pipeline.crops(self.generated, self.positions.tolist(), self.resolution, tag=1)
        order = self.pipeline.crop_positions(self.positions)
        return ordered(self.pipeline.features(crops, self.device), order, self.gather)

    @cached_property
    def reference_crop_features(self) -> Tensor:
        """Features of one seeded ``patch_size``² crop of every reference image (cached on disk)."""
        return self._reference("crop")

    def _reference(self, kind: FeatureKind) -> Tensor:
        return self.pipeline.reference_features(
            self.dataset,
            self.indices,
            self.resolution,
            kind,
            device=self.device,
            rank=self.rank,
            world=self.world,
            gather=self.gather,
        )
