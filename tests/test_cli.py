"""The `rezdiff` command: help, config validation, LightningCLI behaviour, run directories, sampling."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rezdiff.cli import main
from rezdiff.data.images import load_image
from tests.helpers import REPO, TINY_DDPM, TINY_DVDP, untrained_checkpoint


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


def test_help_answers_without_importing_lightning() -> None:
    """``rezdiff --help`` must not pay for Lightning, diffusers and every family (it took seconds)."""
    code = (
        "import sys\n"
        "sys.argv = ['rezdiff', '--help']\n"
        "from rezdiff.commands import entry_point\n"
        "try:\n"
        "    entry_point()\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code == 0, exit_.code\n"
        "heavy = sorted(m for m in ('lightning', 'diffusers', 'torch') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: rezdiff <command>" in result.stdout


def test_print_config_stacks_files_and_dotted_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "second.yaml"
    second.write_text("model:\n  init_args:\n    optimizer:\n      init_args: {lr: 0.123}\n")
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
    optimizer = config["model"]["init_args"]["optimizer"]
    assert optimizer["init_args"]["lr"] == 0.123
    # the arguments not given keep DDPM's values (weight decay 0), not AdamW's own defaults (0.01)
    assert optimizer["init_args"]["weight_decay"] == 0.0 and optimizer["init_args"]["betas"] == [0.9, 0.999]
    assert config["model"]["init_args"]["sample_steps"] == 7
    assert config["model"]["class_path"] == "rezdiff.models.DDPM"


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.init_args.no_such_key", "1"], "no_such_key"),
        (["--model.init_args.optimizer.init_args.lr", "fast"], "lr"),
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
        (["--model.init_args.ema.decay", "1.5"], "ema.decay must be in [0, 1), got 1.5"),
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
            "--ckpt_path",
            str(root / "checkpoints" / "last.ckpt"),
            "--resolution",
            "[16,32]",
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
        unet=dict(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(), norm_num_groups=8),
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


# --ckpt_path: the checkpoint's class and hyperparameters, never silently (issue 17, item 1) -------------

QUICK = ["--trainer.callbacks=[]", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-epoch DDPM (weight decay 0.01, which the tiny config does not set) and DVDP checkpoints."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for name, config, extra in (
        ("ddpm", TINY_DDPM, ["--model.init_args.optimizer.init_args.weight_decay=0.01"]),
        ("dvdp", TINY_DVDP, []),
    ):
        root = folder / name
        main(
            ["fit", "-c", str(config), "--trainer.default_root_dir", str(root), "--trainer.max_epochs=1"]
            + QUICK
            + extra
        )
        paths[name] = root / "checkpoints" / "last.ckpt"
    torch.set_num_threads(threads)
    return paths


def _with_ckpt(command: str, ckpt: Path, root: Path, *extra: str, config: Path = TINY_DDPM) -> Any:
    args = [command, "-c", str(config), "--trainer.default_root_dir", str(root), "--ckpt_path", str(ckpt)]
    if command == "fit":
        args.append("--trainer.max_epochs=1")  # the checkpoint ends epoch 0: resuming trains nothing more
    if command == "test":
        args.append("--evaluate.metrics=[]")
    return main(args + QUICK + list(extra))


def _one_line_error(run: Any) -> str:
    with pytest.raises(SystemExit) as stop:
        run()
    message = str(stop.value.code)
    assert "\n" not in message, message
    return message


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_checkpoint_of_another_class_is_an_error_naming_both(
    tmp_path: Path, tiny_checkpoints: dict[str, Path], command: str
) -> None:
    """Lightning copied the checkpoint's class over the config's: a DDPM config trained a DVDP."""
    message = _one_line_error(lambda: _with_ckpt(command, tiny_checkpoints["dvdp"], tmp_path / "run"))
    assert message.startswith(
        f"rezdiff {command}: error: --ckpt_path {tiny_checkpoints['dvdp']} holds a DVDP"
    )
    assert "the config's model is DDPM" in message and "rezdiff.models.dvdp.module.DVDP" in message
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("command", ["fit", "validate", "predict"])
def test_sample_time_overrides_win_over_the_checkpoint(
    tmp_path: Path, tiny_checkpoints: dict[str, Path], command: str
) -> None:
    """Sampling settings given with --ckpt_path were silently replaced by the checkpoint's."""
    extra = [
        "--model.init_args.eta=0.7",
        "--model.init_args.sample_steps=3",
        "--model.init_args.sampler=ddpm",
    ]
    cli = _with_ckpt(command, tiny_checkpoints["ddpm"], tmp_path / "run", *extra)
    assert (cli.model.eta, cli.model.sample_steps, cli.model.sampler) == (0.7, 3, "ddpm")
    assert cli.model.hparams["eta"] == 0.7  # later checkpoints of a resumed run record the new setting
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["init_args"]
    assert (saved["eta"], saved["sample_steps"], saved["sampler"]) == (0.7, 3, "ddpm")
    # what the config does not set comes from the checkpoint
    recorded = cli.model.hparams["optimizer"]["init_args"]["weight_decay"]
    assert recorded == 0.01 and saved["optimizer"]["init_args"]["weight_decay"] == 0.01


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize(
    ("command", "override", "named"),
    [
        (
            "fit",
            ["--model.init_args.optimizer.init_args.lr=0.01"],
            "optimizer.init_args.lr (0.01 given, 0.001 in the checkpoint)",
        ),
        (
            "fit",
            ["--model.init_args.optimizer.init_args.weight_decay=0.0"],
            "optimizer.init_args.weight_decay (0.0 given, 0.01 in the checkpoint)",
        ),
        (
            "fit",
            ["--model.init_args.optimizer=torch.optim.SGD"],
            "optimizer.class_path ('torch.optim.SGD' given, 'torch.optim.AdamW' in the checkpoint)",
        ),
        ("fit", ["--model.init_args.ema.decay=0.5"], "ema.decay (0.5 given, 0.9 in the checkpoint)"),
        (
            "validate",
            ["--model.init_args.unet.block_out_channels=[16, 48]"],
            "unet.block_out_channels ([16, 48] given",
        ),
        (
            "predict",
            ["--model.init_args.num_train_steps=50"],
            "num_train_steps (50 given, 100 in the checkpoint)",
        ),
    ],
)
def test_overriding_a_fixed_hyperparameter_is_an_error_naming_it(
    tmp_path: Path, tiny_checkpoints: dict[str, Path], command: str, override: list[str], named: str
) -> None:
    """Lightning dropped these overrides silently (the checkpoint's value was used)."""
    message = _one_line_error(
        lambda: _with_ckpt(command, tiny_checkpoints["ddpm"], tmp_path / "run", *override)
    )
    assert message.startswith(f"rezdiff {command}: error: --ckpt_path") and named in message
    assert "cannot change" in message and "eta" in message  # and it says which settings can


@pytest.mark.usefixtures("single_thread")
def test_a_checkpoint_with_the_former_optimiser_arguments_resumes(
    tmp_path: Path, tiny_checkpoints: dict[str, Path]
) -> None:
    """A run checkpointed before the injected optimiser (``lr``, ``adam_betas``, ``weight_decay``,
    ``warmup_steps``, ``ema_*`` hyperparameters) resumes with today's config: the former values are read as
    ``optimizer``/``lr_scheduler``/``ema`` (one warning), so the unchanged config does not conflict."""
    checkpoint = torch.load(tiny_checkpoints["ddpm"], weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    optimizer, ema = hparams.pop("optimizer")["init_args"], hparams.pop("ema")
    hparams.pop("lr_scheduler")
    hparams.update(
        lr=optimizer["lr"],
        adam_betas=list(optimizer["betas"]),
        weight_decay=optimizer["weight_decay"],
        warmup_steps=0,
        ema_decay=ema["decay"],
        ema_update_every=ema["update_every"],
        ema_warmup=ema["warmup"],
    )
    former = tmp_path / "former.ckpt"
    torch.save(checkpoint, former)
    with pytest.warns(FutureWarning, match="the former optimiser and EMA arguments"):
        cli = _with_ckpt("fit", former, tmp_path / "run")
    assert cli.model.hparams["optimizer"]["init_args"]["weight_decay"] == 0.01
    assert cli.model.hparams["ema"]["decay"] == 0.9 and cli.model.hparams["lr_scheduler"] is None
    assert type(cli.trainer.optimizers[0]) is torch.optim.AdamW


def test_sample_time_settings_are_sampling_arguments_of_their_family() -> None:
    """Every listed name is a constructor argument of its class, and every family has a list."""
    import inspect

    from rezdiff.cli import SAMPLE_TIME_SETTINGS, sample_time_settings
    from rezdiff.models import DDPM, DVDP, MultilevelSDE
    from rezdiff.models.infd import INFD, INFDAutoencoder
    from rezdiff.models.infty_diff import InftyDiff, InftyDiffLatent

    families = {DDPM, DVDP, MultilevelSDE, InftyDiff, InftyDiffLatent, INFDAutoencoder, INFD}
    assert set(SAMPLE_TIME_SETTINGS) == families
    for cls, names in SAMPLE_TIME_SETTINGS.items():
        assert names and names <= set(inspect.signature(cls.__init__).parameters), cls
        assert not names & {"optimizer", "lr_scheduler", "ema", "num_train_steps", "image_size"}, cls
    assert sample_time_settings(type("MyDDPM", (DDPM,), {})) == SAMPLE_TIME_SETTINGS[DDPM]


@pytest.mark.usefixtures("single_thread")
def test_a_bad_checkpoint_file_is_one_line_naming_it(
    tmp_path: Path, tiny_checkpoints: dict[str, Path]
) -> None:
    """Lightning's torch.load of --ckpt_path raised torch's own errors (zip internals, "101"), with a
    traceback; weights that do not fit the recorded settings gave a "size mismatch" line per tensor."""
    good = tiny_checkpoints["ddpm"]
    cut, text, edited, foreign = (tmp_path / f"{n}.ckpt" for n in ("cut", "text", "edited", "foreign"))
    cut.write_bytes(good.read_bytes()[:100_000])
    text.write_text("model:\n  class_path: rezdiff.models.DDPM\n")
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["state_dict"]["network.net.conv_in.weight"] = torch.zeros(16, 3, 5, 5)
    torch.save(checkpoint, edited)
    checkpoint["rezdiff"]["class_path"] = "os.system"
    torch.save(checkpoint, foreign)
    expected = {
        cut: "is a truncated checkpoint",
        text: "is a text file (it starts with 'model:')",
        edited: "weight network.net.conv_in.weight has shape [16, 3, 5, 5] in the file but [16, 3, 3, 3]",
        foreign: "names class 'os.system', which is not a rezdiff model",
    }
    for path, words in expected.items():
        message = _one_line_error(lambda path=path: _with_ckpt("validate", path, tmp_path / "run"))
        assert message.startswith("rezdiff validate: error: ") and str(path) in message, message
        assert words in message, message


def test_sample_from_a_bad_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rezdiff sample --ckpt_path raised rezdiff.load's error with its traceback; now one error line naming
    the file, exit status 2."""
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch: 3\n")
    for path, words in ((text, "is a text file"), (tmp_path / "absent.ckpt", "no checkpoint at")):
        with pytest.raises(SystemExit) as stop:
            main(["sample", "--ckpt_path", str(path), "--out", str(tmp_path)])
        assert stop.value.code == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert message.startswith("rezdiff sample: error: ") and words in message and str(path) in message


# ---------------------------------------------------------- one flag dialect: sample, sweep, export, stats
@pytest.fixture(scope="module")
def ddpm_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny DDPM checkpoint (16²)."""
    return untrained_checkpoint(TINY_DDPM, tmp_path_factory.mktemp("ddpm") / "ddpm.ckpt")


def _printed(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, Any]:
    """The options ``rezdiff ARGS --print_config`` resolves, as a dict."""
    with pytest.raises(SystemExit) as stop:
        main([*args, "--print_config"])
    assert stop.value.code in (0, None), capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def test_sample_sweep_export_take_config_files_and_print_config(
    ddpm_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like fit: options from ``-c`` files, an option after a file overrides it and a file after an option
    overrides that, ``--print_config`` prints the result (argparse refused ``-c`` and ``--print_config``)."""
    file = tmp_path / "sample.yaml"
    file.write_text(
        f"ckpt_path: {ddpm_ckpt}\nnum: 3\nresolution: [16, 32]\neta: 0.5\nbatch_invariant: true\n"
    )
    config = _printed(capsys, ["sample", "-c", str(file), "--num", "2", "--eta", "0.25"])
    assert (config["num"], config["resolution"], config["eta"], config["batch_invariant"]) == (
        2,
        [16, 32],
        0.25,
        True,
    )
    assert (
        config["ckpt_path"] == str(ddpm_ckpt) and "spacing" in config
    )  # DDPM's settings: the file's checkpoint
    assert _printed(capsys, ["sample", "--num", "2", "-c", str(file)])["num"] == 3
    # and the file really drives a run
    written = main(
        [
            "sample",
            "-c",
            str(file),
            "--resolution",
            "16",
            "--num",
            "1",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert sorted(p.relative_to(tmp_path / "s").as_posix() for p in written) == [
        "16x16/sample_00000.png",
        "grid_16x16.png",
    ]
    capsys.readouterr()

    file = tmp_path / "sweep.yaml"
    file.write_text("file: configs/sweeps/families_quickstart.yaml\nrun: [0, 2]\nprint_commands: true\n")
    config = _printed(capsys, ["sweep", "-c", str(file), "--run", "1"])
    assert config == {
        "file": "configs/sweeps/families_quickstart.yaml", "out": None, "print_commands": True, "run": 1,
        "collect": False, "retry_failed": False, "python": None,
    }  # fmt: skip

    file = tmp_path / "export.yaml"
    file.write_text(f"ckpt_path: {ddpm_ckpt}\nout: {tmp_path / 'pipe'}\nformat: diffusers\n")
    config = _printed(capsys, ["export", "-c", str(file), "--format", "safetensors"])
    assert config == {
        "ckpt_path": str(ddpm_ckpt),
        "out": str(tmp_path / "pipe"),
        "format": "safetensors",
        "scheduler": None,
    }


def test_stats_takes_fits_options_without_lightnings_args_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rezdiff stats`` parses fit's options (a dotted key overrides the file); run from the console it
    warned that LightningCLI got both ``args`` and a command line."""
    args = ["stats", "-c", str(TINY_DDPM), "--evaluate.resolutions", "[8,12]"]
    monkeypatch.setattr(sys, "argv", ["rezdiff", *args, "--print_config"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = _printed(capsys, args)
    assert (
        config["evaluate"]["resolutions"] == [8, 12]
        and config["model"]["class_path"] == "rezdiff.models.DDPM"
    )
    assert not [w for w in caught if "args parameter" in str(w.message)], [str(w.message) for w in caught]


GUIDES = ["box=0,0,1,1,loss=color,mean=1,1,1", "box=-1,-1,0,0,loss=color,mean=1,1,1"]
OLD_SPELLINGS = [  # (command, old words, the same in the new spelling); CKPT is the checkpoint
    ("sample", ["--ckpt", "CKPT"], ["--ckpt_path", "CKPT"]),
    ("sample", ["--resolution", "16", "32"], ["--resolution", "[16,32]"]),
    ("sample", ["--batch-size", "2"], ["--batch_size", "2"]),
    ("sample", ["--batch-invariant"], ["--batch_invariant"]),
    ("sample", ["--no-ema"], ["--no_ema"]),
    ("sample", ["--eps-after-clip", "network"], ["--eps_after_clip", "network"]),
    ("sample", ["--super-resolve", "a.png", "b.png"], ["--super_resolve", "[a.png,b.png]"]),
    (
        "sample",
        ["--hole=-0.5,-0.5,0.5,0.5", "--inpaint", "a.png"],
        ["--hole", "[-0.5,-0.5,0.5,0.5]", "--inpaint", "a.png"],
    ),
    ("sample", ["--inpaint", "a.png", "--paste-known"], ["--inpaint", "a.png", "--paste_known"]),
    ("sample", ["--guide", GUIDES[0], "--guide", GUIDES[1]], ["--guide", json.dumps(GUIDES)]),
    ("sample", ["--guidance-scale", "20", "--guide-raw"], ["--guidance_scale", "20", "--guide_raw"]),
    ("sweep", ["--print-commands", "--retry-failed"], ["--print_commands", "--retry_failed"]),
    ("sweep", ["--run", "0", "2"], ["--run", "[0,2]"]),
    ("export", ["--ckpt", "CKPT"], ["--ckpt_path", "CKPT"]),
]  # fmt: skip
BASE = {"sample": ["--ckpt_path", "CKPT"], "sweep": ["s.yaml"], "export": ["--out", "pipe"]}


def _words(words: list[str], ckpt: Path) -> list[str]:
    return [str(ckpt) if word == "CKPT" else word for word in words]


@pytest.mark.parametrize(
    ("command", "old", "new"), OLD_SPELLINGS, ids=[" ".join(case[1][:2]) for case in OLD_SPELLINGS]
)
def test_an_old_spelling_warns_once_naming_the_new_and_means_the_same(
    ddpm_ckpt: Path, capsys: pytest.CaptureFixture[str], command: str, old: list[str], new: list[str]
) -> None:
    base = [] if "--ckpt" in old else BASE[command]
    expected = _printed(capsys, [command, *_words(base + new, ddpm_ckpt)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = _printed(capsys, [command, *_words(base + old, ddpm_ckpt)])
    assert config == expected
    [warning] = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert str(warning.message).startswith(f"rezdiff {command}: old spelling: ")
    assert all(word in str(warning.message) for word in new if word not in old), new  # the new spelling
    assert "\n" not in str(warning.message)


def test_an_old_spelling_still_runs(ddpm_ckpt: Path, tmp_path: Path) -> None:
    with pytest.warns(
        FutureWarning, match=r"--ckpt is now --ckpt_path; --resolution 16 16 is now --resolution \[16,16\]"
    ):
        written = main(
            ["sample", "--ckpt", str(ddpm_ckpt), "--resolution", "16", "16", "--num", "1", "--steps", "1"]
            + ["--batch-size", "1", "--no-ema", "--out", str(tmp_path)]
        )
    assert len(written) == 4  # 16x16 twice: one image and one grid each time


@pytest.mark.parametrize(
    ("command", "words", "named"),
    [
        ("sample", ["--ckpt", "CKPT", "--ckpt_path", "CKPT"], "--ckpt and --ckpt_path"),
        (
            "sample",
            ["--ckpt_path", "CKPT", "--batch-size", "2", "--batch_size", "3"],
            "--batch-size and --batch_size",
        ),
        (
            "sweep",
            ["s.yaml", "--print-commands", "--print_commands"],
            "--print-commands and --print_commands",
        ),
        ("export", ["--ckpt", "CKPT", "--ckpt_path", "CKPT", "--out", "x"], "--ckpt and --ckpt_path"),
    ],
    ids=["sample-ckpt", "sample-batch_size", "sweep", "export"],
)
def test_an_old_spelling_with_its_new_one_is_one_line_error(
    ddpm_ckpt: Path, capsys: pytest.CaptureFixture[str], command: str, words: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, *_words(words, ddpm_ckpt)])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rezdiff {command}: error: {named} are both given"), lines
    assert "keep only" in lines[0]


def test_fit_help_hides_the_refused_top_level_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    """Lightning's ``--optimizer``/``--lr_scheduler`` are refused (the model's arguments set the optimiser):
    ``rezdiff fit --help`` listed them with every torch optimiser; now it does not, and they are still refused
    with the line naming the model argument (tests/models/test_optimization.py)."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--trainer.max_epochs" in text and "--ckpt_path" in text
    for hidden in (
        "--optimizer",
        "--lr_scheduler",
        "Base class for all optimizers",
        "known subclasses: torch.optim",
    ):
        assert hidden not in text, hidden
