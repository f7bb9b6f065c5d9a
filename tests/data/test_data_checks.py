"""Where model and data meet: a data view a model cannot train on as asked is an error (or, for the
resolution-agnostic multilevel SDE, one warning) at setup, before the first batch."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest

from rezdiff.cli import main
from rezdiff.data import FieldDataModule, FullGrid, Levels, RandomPixels, Synthetic
from rezdiff.models import DDPM, DVDP, MultilevelSDE
from rezdiff.models.infd import MultiScalePatches
from tests.helpers import TINY_DDPM, TINY_UNET, quiet_trainer


def _fit(model: pl.LightningModule, view, tmp_path: Path, **data) -> pl.Trainer:
    datamodule = FieldDataModule(Synthetic(num_images=8, resolution=16), view, batch_size=4, **data)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(model, datamodule=datamodule)
    return trainer


@pytest.mark.parametrize("family", [DDPM, DVDP])
def test_whole_image_families_refuse_random_pixels_at_setup(tmp_path, family) -> None:
    """RandomPixels used to train DDPM/DVDP on the whole grid, ignoring the pixel subset, without a word."""
    model = family(**TINY_UNET, **({"turning_points": (50,)} if family is DVDP else {}))
    with pytest.raises(ValueError, match=r"view is RandomPixels .*class_path rezdiff.data.FullGrid"):
        _fit(model, RandomPixels(16, 0.25), tmp_path)
    assert model.global_step == 0
    with pytest.raises(ValueError, match="val_view is RandomPixels"):
        _fit(model, FullGrid(16), tmp_path, val_view=RandomPixels(16, 0.5))
    with pytest.raises(ValueError, match="MultiScalePatches .random crops"):
        model.check_data(MultiScalePatches(patch=8, min_scale=8, max_scale=16), "view", "test")


@pytest.mark.parametrize("family", [DDPM, DVDP])
def test_whole_image_families_refuse_another_training_size(tmp_path, family) -> None:
    """A FullGrid at 32 used to train a model with image_size=16 at 32x32 silently."""
    model = family(**TINY_UNET, **({"turning_points": (50,)} if family is DVDP else {}))
    with pytest.raises(ValueError, match=r"image_size=16, but the data's view renders 32x32"):
        _fit(model, FullGrid(32), tmp_path)
    with pytest.raises(ValueError, match="renders 16x32"):
        model.check_data(FullGrid((16, 32)), "view", "fit")
    model.check_data(FullGrid(16), "view", "fit")
    model.check_data(FullGrid(32), "val_view", "fit")  # validation at another size: a chosen measurement
    model.check_data(FullGrid(32), "view", "test")  # testing a trained model at another size


def test_multilevel_warns_once_about_another_training_size(caplog) -> None:
    """The FNO and the prior act on functions, so training at another size works; image_size is only
    the default sampling grid: one warning line, no error."""
    model = MultilevelSDE(channels=3, image_size=32, modes=6, width=16, n_layers=2, projection=32)
    with caplog.at_level(logging.WARNING, logger="rezdiff.models.multilevel.module"):
        model.check_data(Levels([16, 32]), "view", "fit")
        model.check_data(FullGrid(32), "view", "fit")
        model.check_data(FullGrid(64), "val_view", "fit")
        assert not caplog.records
        model.check_data(Levels([32, 64]), "view", "fit")
    [record] = caplog.records
    assert "image_size=32 but the data's view renders 64x64" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_the_cli_reports_the_mismatch_in_one_line(tmp_path, capsys) -> None:
    root = tmp_path / "run"
    override = ["--data.init_args.view.init_args.resolution", "32"]
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root), *override])
    message = str(stop.value.code)
    assert message.startswith("rezdiff fit: error: DDPM has image_size=16, but the data's view renders")
    assert "\n" not in message
