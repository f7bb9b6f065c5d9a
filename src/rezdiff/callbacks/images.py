"""Image grids to the run directory and to every configured logger that can show images."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import Tensor

from rezdiff.data.images import make_grid, save_image


def log_images(trainer: pl.Trainer, tag: str, images: Tensor, path: Path) -> None:
    """Save ``images`` ([N, C, H, W] in [-1, 1]) as one grid PNG at ``path`` and show it under ``tag`` at
    the current step in TensorBoard, Weights & Biases and MLflow loggers. Any other logger (CSV) has
    the PNG in the run directory. Call on the global-zero rank only."""
    images = images.detach().float().cpu().clamp(-1, 1)
    save_image(images, path)
    grid = (make_grid(images) + 1) / 2  # [C, H, W] in [0, 1]
    step = trainer.global_step
    pixels = None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, step)
            continue
        if pixels is None:
            pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            if pixels.shape[-1] == 1:  # grey: [H, W]
                pixels = pixels[..., 0]
        if isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[pixels], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, pixels, f"{tag}/step={step}.png")
