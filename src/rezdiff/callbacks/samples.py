"""Sample grids at several resolutions during training."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from rezdiff.callbacks.images import log_images


class SampleGrid(pl.Callback):
    """Every ``every_n_epochs`` validation epochs (and once when training ends) draw ``num`` samples at
    each of ``resolutions`` and save ``samples/epoch=E-step=S-res=R.png`` in the run directory.

    Samples come from a private ``torch.Generator`` seeded with ``seed``, so the grids of successive
    epochs show the same noise and training randomness is untouched. Every rank computes the samples
    (no rank waits on another); rank 0 writes them and shows them in every logger that can show images
    (:func:`rezdiff.callbacks.images.log_images`).
    """

    def __init__(
        self,
        resolutions: list[int] | None = None,
        num: int = 16,
        every_n_epochs: int = 1,
        seed: int = 0,
        steps: int | None = None,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.resolutions = resolutions
        self.num = num
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.steps = steps
        self._last_step: int | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_step != trainer.global_step:
            self._draw(trainer, pl_module)

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        resolutions = self.resolutions or [None]
        out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        for resolution in resolutions:
            generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            images = pl_module.sample(self.num, resolution, steps=self.steps, generator=generator)
            if not trainer.is_global_zero:
                continue
            size = images.shape[-1]
            name = f"epoch={trainer.current_epoch}-step={trainer.global_step}-res={size}"
            log_images(trainer, f"samples/res={size}", images, out_dir / f"{name}.png")
