"""Logging: the default TensorBoard run has the learning rate and no placeholder metric; image grids reach
every logger with an image API and always a PNG in the run directory."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rezdiff.callbacks.images import log_images
from rezdiff.data.images import load_image


class FakeWandb(WandbLogger):
    def __init__(self) -> None:  # no wandb run: record the call instead
        self.calls: list[dict[str, Any]] = []

    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self.calls.append({"key": key, "images": images, "step": step})


class FakeMLflow(MLFlowLogger):
    def __init__(self) -> None:  # no mlflow server: a client that records log_image
        self.calls: list[tuple[Any, ...]] = []
        self.client = SimpleNamespace(log_image=lambda *args: self.calls.append(args))

    @property
    def experiment(self) -> Any:
        return self.client

    @property
    def run_id(self) -> str:
        return "run-1"


def test_log_images_reaches_every_logger_with_an_image_api(tmp_path: Path) -> None:
    """Catches: a logger type skipped, a grid outside [0, 1] or in CHW where HWC is expected, a wrong step."""
    tensorboard = TensorBoardLogger(save_dir=str(tmp_path / "tb"), name="", version="")
    wandb, mlflow = FakeWandb(), FakeMLflow()
    csv = CSVLogger(save_dir=str(tmp_path / "csv"))
    trainer = SimpleNamespace(loggers=[tensorboard, wandb, mlflow, csv], global_step=7)
    images = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    path = tmp_path / "run" / "samples" / "grid.png"
    log_images(trainer, "samples/res=4", images, path)  # type: ignore[arg-type]

    png = load_image(path)  # [C, H, W] in [-1, 1]
    assert png.shape[0] == 3
    [call] = wandb.calls
    assert call["key"] == "samples/res=4" and call["step"] == 7
    [pixels] = call["images"]
    assert pixels.dtype == np.uint8 and pixels.shape == (*png.shape[1:], 3)
    torch.testing.assert_close(
        torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1, png, atol=1 / 255 + 1e-6, rtol=0
    )
    [(run_id, image, name)] = mlflow.calls
    assert run_id == "run-1" and name == "samples/res=4/step=7.png" and np.array_equal(image, pixels)
    tensorboard.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert events.Tags()["images"] == ["samples/res=4"]
    assert events.Images("samples/res=4")[0].step == 7


def test_default_run_logs_the_learning_rate_and_no_hp_metric(tmp_path: Path, fit_tiny) -> None:
    """The default logger: TensorBoard in the run directory with an lr curve, without Lightning's -1
    ``hp_metric`` placeholder; sample grids are in it as images."""
    fit_tiny()
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    scalars = events.Tags()["scalars"]
    assert any(tag.startswith("lr-") for tag in scalars), scalars
    assert "hp_metric" not in scalars
    assert any(tag.startswith("samples/res=") for tag in events.Tags()["images"])
