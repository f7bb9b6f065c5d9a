"""Evaluation metrics as objects, and the registry that ``evaluate.metrics`` names them from.

A metric is a class with a ``name`` (its entry in ``evaluate.metrics``), the inputs it ``needs``, and
``reset``/``update``/``compute`` (torchmetrics' pattern). The harness builds one object per selected name
(keyword arguments from ``evaluate.metric_options[name]``), and at each resolution calls ``reset``, then
``update`` with what the metric needs, then ``compute(gather)``, whose keys become ``<key>@<resolution>``
in ``metrics.json``. Needs:

- a :class:`SampleMetric` needs any of ``generated`` (generated images), ``reference`` (reference images),
  ``features`` (features of both, reference ones cached), ``crops`` (features of one ``patch_size``² crop
  of each); its ``update`` receives one :class:`~rezdiff.evaluation.pipeline.SampleSet` per resolution;
- a :class:`ReconstructionMetric` needs ``reconstruction`` (and ``reconstruction_2x``); its ``update``
  receives a :class:`~rezdiff.evaluation.pipeline.ReconstructionBatch` per chunk of this rank's
  reference images, and ``compute`` gathers over ranks.

Adding a metric is one class and one ``register_metric(MyMetric)`` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from rezdiff.evaluation.pipeline import ReconstructionBatch, SampleSet
from rezdiff.evaluation.sharding import Gather
from rezdiff.metrics.fid import fid_from_features, kid_from_features
from rezdiff.metrics.reconstruction import psnr, ssim
from rezdiff.metrics.scale_consistency import consistency_errors
from rezdiff.metrics.swd import multiscale_swd

SAMPLE_NEEDS = frozenset({"generated", "reference", "features", "crops"})
RECONSTRUCTION_NEEDS = frozenset({"reconstruction", "reconstruction_2x"})


class Metric(ABC):
    """One metric: ``name`` in configs, ``needs`` (see the module docstring), per-resolution state."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]

    @abstractmethod
    def reset(self) -> None:
        """Forget the previous resolution."""

    @abstractmethod
    def compute(self, gather: Gather) -> dict[str, float]:
        """The figures of this resolution (keys without ``@R``); ``gather`` joins every rank's rows."""

    def options(self) -> dict[str, Any]:
        """The metric's own settings, recorded in ``metrics.json``."""
        return {}


class SampleMetric(Metric):
    """A metric of generated images against reference images."""

    @abstractmethod
    def update(self, samples: SampleSet) -> None:
        """Read what the metric needs from this resolution's samples (called once per resolution)."""


class ReconstructionMetric(Metric):
    """A metric of ``model.reconstruct`` on the reference images (autoencoders)."""

    @abstractmethod
    def update(self, batch: ReconstructionBatch) -> None:
        """Take one chunk of this rank's reference images and their reconstructions."""


#: Metric classes by name; :func:`register_metric` adds to it.
METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Make ``cls`` selectable as ``evaluate.metrics: [<cls.name>]`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, SampleMetric | ReconstructionMetric)):
        raise ValueError(f"{cls!r} must subclass SampleMetric or ReconstructionMetric")
    allowed = SAMPLE_NEEDS if issubclass(cls, SampleMetric) else RECONSTRUCTION_NEEDS
    if not cls.needs or not cls.needs <= allowed:
        raise ValueError(
            f"{cls.__name__}.needs must be a non-empty subset of {sorted(allowed)}, got {cls.needs}"
        )
    if METRICS.get(cls.name, cls) is not cls:
        raise ValueError(
            f"metric name {cls.name!r} is taken by {METRICS[cls.name].__name__}; rename {cls.__name__}"
        )
    METRICS[cls.name] = cls
    return cls


class _Result(SampleMetric):
    """A sample metric whose figures come from one ``update`` per resolution."""

    def reset(self) -> None:
        self.result: dict[str, float] = {}

    def compute(self, gather: Gather) -> dict[str, float]:
        return dict(self.result)


class FID(_Result):
    """Fréchet distance between the features of generated and reference images."""

    name, needs = "fid", frozenset({"features"})

    def update(self, samples: SampleSet) -> None:
        self.result = {"fid": fid_from_features(samples.reference_features, samples.generated_features)}


class KID(_Result):
    """Kernel inception distance (mean and std over ``subsets`` random subsets of ``subset_size``)."""

    name, needs = "kid", frozenset({"features"})

    def __init__(self, subsets: int = 100, subset_size: int = 1000) -> None:
        if subsets < 1 or subset_size < 2:
            raise ValueError(f"kid needs subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
        self.subsets, self.subset_size = subsets, subset_size

    def options(self) -> dict[str, Any]:
        return {"subsets": self.subsets, "subset_size": self.subset_size}

    def update(self, samples: SampleSet) -> None:
        generator = torch.Generator().manual_seed(samples.seed)
        mean, std = kid_from_features(
            samples.reference_features, samples.generated_features, self.subsets, self.subset_size, generator
        )
        self.result = {"kid": mean, "kid_std": std}


class PatchFID(_Result):
    """FID of one random ``patch_size``² crop per image, no resize (INFD's "P/R" is ``pfid<P>@<R>``)."""

    name, needs = "pfid", frozenset({"crops"})

    def update(self, samples: SampleSet) -> None:
        value = fid_from_features(samples.reference_crop_features, samples.generated_crop_features)
        self.result = {f"pfid{samples.patch_size}": value}


class SWD(_Result):
    """Multi-scale sliced Wasserstein distance on at most ``max_images`` images of each set."""

    name, needs = "swd", frozenset({"generated", "reference"})

    def __init__(self, max_images: int = 512) -> None:
        if max_images < 2:
            raise ValueError(f"swd needs max_images >= 2, got {max_images}")
        self.max_images = max_images

    def options(self) -> dict[str, Any]:
        return {"max_images": self.max_images}

    def update(self, samples: SampleSet) -> None:
        count = min(self.max_images, samples.num_samples, samples.num_reference)
        fake, real = samples.generated_images(count), samples.reference_images(count)
        generator = torch.Generator().manual_seed(samples.seed)
        swd = multiscale_swd(real, fake, min_resolution=min(16, *samples.resolution), generator=generator)
        self.result = {"swd": swd["swd_mean"]}


class PerImageMean(ReconstructionMetric):
    """A reconstruction metric that averages per-image values over every rank's images."""

    keys: ClassVar[tuple[str, ...]]  # every key per_image returns (a rank without images still gathers)

    def reset(self) -> None:
        self.values: dict[str, list[Tensor]] = {}

    @abstractmethod
    def per_image(self, batch: ReconstructionBatch) -> dict[str, Tensor]:
        """Per-image values ``[B]`` of this chunk, by key."""

    def update(self, batch: ReconstructionBatch) -> None:
        for key, values in self.per_image(batch).items():
            self.values.setdefault(key, []).append(values.double())

    def compute(self, gather: Gather) -> dict[str, float]:
        keys = self.values or {key: [] for key in self.keys}
        out = {}
        for key, parts in keys.items():
            local = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
            out[key] = float(gather(local).mean())
        return out


class PSNR(PerImageMean):
    """Mean PSNR (dB, images mapped to [0, 1]) of reconstructions at the evaluation resolution."""

    name, needs, keys = "psnr", frozenset({"reconstruction"}), ("psnr",)

    def per_image(self, batch: ReconstructionBatch) -> dict[str, Tensor]:
        pairs = zip(batch.reconstruction, batch.real, strict=True)
        return {"psnr": torch.tensor([psnr(r[None], x[None]) for r, x in pairs])}


class SSIM(PerImageMean):
    """Mean SSIM of reconstructions at the evaluation resolution."""

    name, needs, keys = "ssim", frozenset({"reconstruction"}), ("ssim",)

    def per_image(self, batch: ReconstructionBatch) -> dict[str, Tensor]:
        pairs = zip(batch.reconstruction, batch.real, strict=True)
        return {"ssim": torch.tensor([ssim(r[None], x[None]) for r, x in pairs])}


class ScaleConsistency(PerImageMean):
    """Reconstruct at 2R, box-downsample, compare with the reconstruction at R: ``scale_psnr``,
    ``scale_l1``."""

    name = "scale_consistency"
    needs = frozenset({"reconstruction", "reconstruction_2x"})
    keys = ("scale_psnr", "scale_l1")

    def per_image(self, batch: ReconstructionBatch) -> dict[str, Tensor]:
        assert batch.reconstruction_2x is not None  # the harness renders it for metrics that need it
        errors = consistency_errors(batch.reconstruction_2x, batch.reconstruction)
        return {"scale_psnr": errors["psnr"].float(), "scale_l1": errors["l1"].float()}


for _builtin in (FID, KID, PatchFID, SWD, PSNR, SSIM, ScaleConsistency):
    register_metric(_builtin)
