"""``rezdiff predict``: generate images for a list of seeds, one file per image, on any number of ranks.

The ``predictions:`` settings of a config (``--predictions.seeds 0-49999 --predictions.resolution 256
--predictions.sample_options '{sampler: ddim, eta: 0.5}'``) build a :class:`PredictionWriter`: its
:meth:`~PredictionWriter.dataloader` yields :class:`~rezdiff.models.base.SeedBatch` es, which the model's
``predict_step`` samples, and the writer saves ``<run>/predictions/<H>x<W>/seed000123.png`` (and
``.npz`` with ``npz: true``). Under DDP, Lightning gives each rank every world-size-th seed without padding
(``UnrepeatedDistributedSamplerWrapper`` for prediction), so no seed is generated twice or skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from rezdiff.data.coords import as_hw
from rezdiff.data.images import save_image
from rezdiff.models.base import SeedBatch

__all__ = ["PredictionWriter", "parse_seeds"]


def parse_seeds(text: str, name: str = "seeds") -> list[int]:
    """``"0-63"`` -> 0, 1, ..., 63; ranges and single seeds join with commas (``"0-9,100,200-209"``);
    errors name the option as ``name``."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise ValueError(
                f"{name} must be non-negative integers or ranges such as 0-63, joined by commas; got {text!r}"
            ) from None
        if high < low:
            raise ValueError(f"{name}: range {part!r} ends before it starts; write LOW-HIGH")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name}: {text!r} names some seed twice; each seed is one image")
    return seeds


class _Seeds(Dataset[int]):
    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> int:
        return self.seeds[index]


def _collate(
    seeds: list[int], resolution: tuple[int, int] | None, options: dict[str, Any], batch_invariant: bool
) -> SeedBatch:
    return SeedBatch(list(seeds), resolution, dict(options), batch_invariant)


class PredictionWriter(BasePredictionWriter):
    """The ``predictions:`` settings and the files of ``rezdiff predict``.

    ``seeds``: which images, e.g. ``"0-49999"`` (image k draws its noise from its seed, so a seed names
    the same image whatever the number of ranks; see ``DiffusionModule.sample_seeds``); ``resolution``: the
    size, the model's own when None; ``batch_size``: images per ``sample()`` call; ``batch_invariant``:
    sample each image in a batch of its own, so it is bit-identical whatever ``batch_size`` or the number
    of ranks, at the cost of batching; ``npz``: also write ``seed######.npz`` holding the float image in
    [-1, 1] (``image``, ``[C, H, W]``) and its ``seed``; ``sample_options``: keyword arguments of the
    family's ``sample()`` (its sampler settings: ``steps``, ``sampler``, ``eta``, ``spacing``, ``tile``,
    ...), unset ones being the checkpoint's; ``out``: the folder, ``<run>/predictions`` by default.
    """

    def __init__(
        self,
        seeds: str = "0-15",
        resolution: int | tuple[int, int] | None = None,
        batch_size: int = 16,
        batch_invariant: bool = False,
        npz: bool = False,
        sample_options: dict[str, Any] | None = None,
        out: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        if batch_size < 1:
            raise ValueError(f"predictions.batch_size must be a positive integer (>= 1), got {batch_size}")
        self.seeds = parse_seeds(seeds, "predictions.seeds")
        self.resolution = None if resolution is None else as_hw(resolution)
        self.batch_size = batch_size
        self.batch_invariant = batch_invariant
        self.npz = npz
        self.sample_options = dict(sample_options or {})
        self.out = out
        self.written: list[Path] = []

    def check(self, model: Any) -> None:
        """Raise a ValueError naming any ``sample_options`` key that ``model.sample`` does not accept."""
        from rezdiff.sample import sampler_options

        accepted = {"steps", "use_ema", *sampler_options(type(model))}
        unknown = sorted(set(self.sample_options) - accepted)
        if unknown:
            raise ValueError(
                f"predictions.sample_options {unknown} are not settings of {type(model).__name__}.sample; "
                f"it accepts {sorted(accepted)}"
            )
        steps = self.sample_options.get("steps")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(
                f"predictions.sample_options.steps must be a positive integer (>= 1), got {steps!r}"
            )

    def dataloader(self) -> DataLoader[SeedBatch]:
        """Batches of ``batch_size`` seeds in order; Lightning shards them across ranks."""
        collate = functools.partial(
            _collate,
            resolution=self.resolution,
            options=self.sample_options,
            batch_invariant=self.batch_invariant,
        )
        return DataLoader(_Seeds(self.seeds), batch_size=self.batch_size, shuffle=False, collate_fn=collate)

    def folder(self, trainer: pl.Trainer, height: int, width: int) -> Path:
        root = (
            Path(self.out) if self.out else Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        )
        return root / f"{height}x{width}"

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images = prediction.detach().float().cpu()
        folder = self.folder(trainer, images.shape[-2], images.shape[-1])
        for image, seed in zip(images, batch.seeds, strict=True):
            path = folder / f"seed{seed:06d}.png"
            save_image(image, path)
            self.written.append(path)
            if self.npz:
                np.savez(folder / f"seed{seed:06d}.npz", image=image.numpy(), seed=np.int64(seed))
                self.written.append(folder / f"seed{seed:06d}.npz")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            where = self.written[0].parent if self.written else "(nothing on rank 0)"
            print(
                f"predict: {len(self.seeds)} seeds over {trainer.world_size} rank(s), rank 0 wrote to {where}"
            )
