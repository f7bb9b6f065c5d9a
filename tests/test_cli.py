"""The `rezdiff` command: help, config validation, LightningCLI behaviour, run directories, sampling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rezdiff.cli import main
from rezdiff.data.images import load_image
from tests.helpers import REPO, TINY_DDPM


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    text = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "sample"):
        assert f"\n  {command} " in text


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rezdiff", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "sample" in result.stdout


def test_print_config_stacks_files_and_dotted_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "second.yaml"
    second.write_text("model:\n  init_args:\n    lr: 0.123\n")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "-c",
                str(TINY_DDPM),
                "-c",
                str(second),
                "--model.init_args.sample_steps",
                "7",
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["lr"] == 0.123
    assert config["model"]["init_args"]["sample_steps"] == 7
    assert config["model"]["class_path"] == "rezdiff.models.DDPM"


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.init_args.no_such_key", "1"], "no_such_key"),
        (["--model.init_args.lr", "fast"], "lr"),
        (["--model.init_args.schedule", "quadratic"], "schedule"),
    ],
)
def test_bad_config_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: list[str], message: str
) -> None:
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root), *override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not root.exists()


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (["--data.init_args.batch_size", "0"], "FieldDataModule: batch_size must be >= 1, got 0"),
        (
            ["--data.init_args.val_fraction", "1.5"],
            "FieldDataModule: val_fraction must be in [0, 1), got 1.5",
        ),
        (["--model.init_args.ema_decay", "1.5"], "DDPM: ema_decay must be in [0, 1), got 1.5"),
    ],
)
def test_a_constructor_check_is_one_line_naming_the_class(
    tmp_path: Path, override: list[str], line: str
) -> None:
    """Checks in constructors surfaced inside jsonargparse's 80-100-line "Does not validate against any
    of the Union subtypes" traceback; the user now reads the check's own message and the class it is of."""
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "fit",
                "--config",
                str(TINY_DDPM),
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
                *override,
            ]
        )
    message = str(stop.value.code)
    assert message.startswith(f"rezdiff fit: error: {line}") and "\n" not in message, message


def test_missing_dataset_folder_says_how_to_point_at_data(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "ddpm_ffhq256.yaml"),
                "--data.init_args.dataset.init_args.root",
                str(tmp_path / "nowhere"),
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
            ]
        )
    text = str(exit_info.value.code)
    assert "nowhere" in text and "--data.init_args.dataset.init_args.root" in text


def test_fit_writes_run_directory_then_sample_and_load(tmp_path: Path, fit_tiny) -> None:
    fit_tiny()
    root = tmp_path / "run"
    assert (root / "config.yaml").is_file()
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert list(root.glob("events.out.tfevents.*")), "TensorBoard logs missing"
    grids = sorted(p.name for p in (root / "samples").glob("*.png"))
    assert any("res=16" in name for name in grids) and any("res=32" in name for name in grids)

    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "rezdiff.models.DDPM"

    out = tmp_path / "samples"
    written = main(
        [
            "sample",
            "--ckpt",
            str(root / "checkpoints" / "last.ckpt"),
            "--resolution",
            "16",
            "32",
            "--num",
            "3",
            "--steps",
            "2",
            "--seed",
            "5",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert sorted(p.relative_to(out).as_posix() for p in written) == sorted(
        [f"16x16/sample_{i:05d}.png" for i in range(3)]
        + [f"32x32/sample_{i:05d}.png" for i in range(3)]
        + ["grid_16x16.png", "grid_32x32.png"]
    )
    assert all(p.is_file() for p in written)

    import rezdiff
    from rezdiff.data.images import load_image

    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    again = model.sample(3, 32, steps=2, generator=torch.Generator().manual_seed(5))
    first_png = load_image(out / "32x32" / "sample_00000.png")
    assert (again[0] - first_png).abs().max() <= 2 / 255 + 1e-6  # the PNG is the same sample, quantised


def test_validate_and_test_report_losses(tmp_path: Path, fit_tiny) -> None:
    fit_tiny("--trainer.max_epochs", "1")
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    for command, key in (("validate", "val/loss"), ("test", "test/loss")):
        cli = main(
            [
                command,
                "--config",
                str(TINY_DDPM),
                "--trainer.default_root_dir",
                str(tmp_path / command),
                "--ckpt_path",
                ckpt,
                "--evaluate.metrics=[]",  # the loss only; the evaluation has its own tests
            ]
        )
        metrics = cli.trainer.callback_metrics
        assert key in metrics and torch.isfinite(metrics[key])


def test_predict_writes_images_at_the_model_resolution(tmp_path: Path, fit_tiny) -> None:
    fit_tiny("--trainer.max_epochs", "1")
    main(
        [
            "predict",
            "--config",
            str(TINY_DDPM),
            "--trainer.default_root_dir",
            str(tmp_path / "predict"),
            "--ckpt_path",
            str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
            "--model.init_args.sample_steps",
            "2",
            "--predictions.seeds",
            "0-3",
        ]
    )
    written = sorted((tmp_path / "predict" / "predictions" / "16x16").glob("*.png"))
    assert [p.name for p in written] == [f"seed{s:06d}.png" for s in range(4)]
    assert load_image(written[0]).shape == (3, 16, 16)


def test_sample_grid_callback_leaves_training_randomness_untouched(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from rezdiff.callbacks import SampleGrid
    from rezdiff.models import DDPM

    model = DDPM(
        image_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(),
        norm_num_groups=8,
        num_train_steps=50,
        sample_steps=2,
        eta=1.0,
    )
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, accelerator="cpu")
    trainer.strategy.connect(model)
    callback = SampleGrid(resolutions=[16, 32], num=2, seed=3)
    state = torch.get_rng_state()
    callback.on_train_end(trainer, model)
    assert torch.equal(state, torch.get_rng_state())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "epoch=0-step=0-res=16.png",
        "epoch=0-step=0-res=32.png",
    ]
