"""Optimisers, learning-rate schedule and EMA as injected model arguments (issue 17, item 2).

One source of truth: the model's ``optimizer`` (INFD stage 1: ``generator_optimizer`` and
``discriminator_optimizer``), ``lr_scheduler`` and ``ema`` arguments; Lightning's top-level ``--optimizer``
and ``--lr_scheduler`` are refused. Defaults equal the family values the constructors had before (table
below, copied from the former ``lr``/``adam_betas``/``weight_decay``/``warmup_steps``/``ema_*`` defaults);
checkpoints written with those former arguments still load.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import rezdiff
from rezdiff.cli import main
from rezdiff.loading import build
from rezdiff.models import (
    DDPM,
    DVDP,
    INFD,
    EMASettings,
    INFDAutoencoder,
    InftyDiff,
    InftyDiffLatent,
    LinearWarmup,
    MultilevelSDE,
)
from rezdiff.models.optimization import class_spec, recordable, resolve_factory
from tests.helpers import TINY_DDPM, TINY_UNET

# (class, optimiser arguments, optimiser class, lr, betas, weight decay, EMA (decay, every, warm-up) or None)
# as the constructors defaulted before the injected optimiser; warm-up steps were 0 (no schedule) everywhere.
FORMER_DEFAULTS = [
    (DDPM, ("optimizer",), torch.optim.AdamW, 2e-4, (0.9, 0.999), 0.0, (0.9999, 1, True)),
    (DVDP, ("optimizer",), torch.optim.AdamW, 2e-4, (0.9, 0.999), 0.0, (0.9999, 1, True)),
    (MultilevelSDE, ("optimizer",), torch.optim.AdamW, 1e-3, (0.9, 0.999), 0.0, (0.999, 1, True)),
    (InftyDiff, ("optimizer",), torch.optim.AdamW, 5e-5, (0.9, 0.99), 0.0, (0.995, 10, False)),
    (InftyDiffLatent, ("optimizer",), torch.optim.AdamW, 1e-4, (0.9, 0.999), 0.01, (0.9999, 1, False)),
    (INFD, ("optimizer",), torch.optim.AdamW, 9.6e-5, (0.9, 0.999), 0.01, (0.9999, 1, False)),
    (
        INFDAutoencoder,
        ("generator_optimizer", "discriminator_optimizer"),
        torch.optim.Adam,
        3.6e-5,
        (0.5, 0.9),
        0.0,
        None,
    ),
]


@pytest.mark.parametrize("row", FORMER_DEFAULTS, ids=lambda row: row[0].__name__)
def test_each_family_defaults_to_its_former_optimiser_schedule_and_ema(row: tuple[Any, ...]) -> None:
    cls, names, optimizer_class, lr, betas, weight_decay, ema = row
    assert cls.optimizer_arguments == names
    parameters = inspect.signature(cls.__init__).parameters
    for name in names:
        factory = resolve_factory(parameters[name].default, name, torch.optim.Optimizer)
        optimizer = factory([torch.nn.Parameter(torch.zeros(1))])
        assert type(optimizer) is optimizer_class
        assert optimizer.defaults["lr"] == lr and tuple(optimizer.defaults["betas"]) == betas
        assert optimizer.defaults["weight_decay"] == weight_decay
    if ema is None:
        assert "ema" not in parameters and "lr_scheduler" not in parameters
    else:
        assert parameters["lr_scheduler"].default is None  # no warm-up
        assert parameters["ema"].default == EMASettings(*ema)


def test_a_built_model_trains_with_its_ema_settings_and_default_optimiser() -> None:
    model = DDPM(**TINY_UNET)
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["lr"] == 2e-4
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.network.parameters()}
    assert (model.ema.decay, model.ema.update_every, model.ema.warmup) == (0.9999, 1, True)
    model = DDPM(**TINY_UNET, ema={"decay": 0.5, "update_every": 3})  # the settings not given: DDPM's
    assert (model.ema.decay, model.ema.update_every, model.ema.warmup) == (0.5, 3, True)
    assert model.hparams["ema"] == {"decay": 0.5, "update_every": 3, "warmup": True}
    assert DDPM(**TINY_UNET, ema={"decay": 0.0}).ema is None


def test_linear_warmup_is_the_former_warmup_factor() -> None:
    """The former LambdaLR factor ``min(1, (step + 1) / warmup_steps)``, step counted from 0."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.8)
    scheduler = LinearWarmup(optimizer, steps=4)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8], rel=0, abs=1e-15)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        LinearWarmup(optimizer, steps=0)


def test_a_python_optimiser_is_recorded_as_plain_data_and_keeps_the_family_values() -> None:
    """A class or ``functools.partial`` is recorded as a ``{class_path, init_args}`` spec (checkpoints are
    read with ``weights_only=True``); arguments not given keep the family's when the class is the family's."""
    model = DDPM(**TINY_UNET, optimizer=functools.partial(torch.optim.AdamW, lr=0.5))
    assert model.hparams["optimizer"] == class_spec(
        "torch.optim.AdamW", lr=0.5, betas=[0.9, 0.999], weight_decay=0.0
    )
    assert model.configure_optimizers().defaults["weight_decay"] == 0.0  # AdamW's own default: 0.01
    model = DDPM(
        **TINY_UNET, optimizer=torch.optim.SGD, lr_scheduler=functools.partial(LinearWarmup, steps=3)
    )
    assert model.hparams["optimizer"] == class_spec("torch.optim.SGD")
    assert model.hparams["lr_scheduler"] == class_spec("rezdiff.models.LinearWarmup", steps=3)
    with pytest.raises(ValueError, match="cannot be recorded in a checkpoint"):
        DDPM(**TINY_UNET, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    with pytest.raises(ValueError, match="optimizer cannot be built: .*learning rate"):
        DDPM(**TINY_UNET, optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": -1.0}})
    with pytest.raises(ValueError, match="is not a torch.optim.Optimizer"):
        DDPM(**TINY_UNET, optimizer={"class_path": "torch.nn.Linear"})
    with pytest.raises(ValueError, match="ema has no setting rate"):
        DDPM(**TINY_UNET, ema={"rate": 0.9})


def _fit(root: Path, *extra: str) -> Any:
    return main(
        ["fit", "-c", str(TINY_DDPM), "--trainer.default_root_dir", str(root), "--trainer.callbacks=[]"]
        + ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=0"]
        + ["--trainer.logger=false", *extra]
    )


@pytest.mark.usefixtures("single_thread")
def test_the_model_optimizer_and_schedule_from_the_command_line_reach_the_trainer(tmp_path: Path) -> None:
    """``--model.init_args.optimizer``/``lr_scheduler`` are what trains: class, lr, the family's weight decay
    kept, and after two steps of a 4-step warm-up the rate is 0.5 * 3/4."""
    cli = _fit(
        tmp_path / "run",
        "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0.5",
        "--model.init_args.optimizer.init_args.momentum=0.9",
        "--model.init_args.lr_scheduler=rezdiff.models.LinearWarmup",
        "--model.init_args.lr_scheduler.init_args.steps=4",
    )
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer) is torch.optim.SGD and cli.trainer.global_step == 2
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.375, rel=0, abs=1e-12) and group["momentum"] == 0.9
    assert group["weight_decay"] == 0.0
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler) is LinearWarmup
    recorded = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert recorded["hyper_parameters"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert recorded["hyper_parameters"]["optimizer"]["init_args"]["lr"] == 0.5


def test_the_cli_path_needs_no_private_lightning_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rezdiff does not pin Lightning: in a release without its private ``_given_hyperparameters`` the CLI's
    injected optimiser (a callable the model cannot record) is still accepted under rezdiff's own flag, and
    recorded as the config's spec; outside a CLI an unrecordable callable is still refused."""
    monkeypatch.setattr("rezdiff.models.hparams_context._lightning_given", lambda: None)
    _fit(tmp_path / "run", "--model.init_args.optimizer.init_args.lr=0.25")
    recorded = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert recorded["hyper_parameters"]["optimizer"]["init_args"]["lr"] == 0.25
    with pytest.raises(ValueError, match="cannot be recorded in a checkpoint"):
        DDPM(**TINY_UNET, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--optimizer=SGD", "--optimizer.lr=0.5"], "--model.init_args.optimizer"),
        (["--lr_scheduler=StepLR", "--lr_scheduler.step_size=1"], "--model.init_args.lr_scheduler"),
    ],
)
def test_top_level_optimizer_and_scheduler_are_refused_naming_the_model_argument(
    tmp_path: Path, extra: list[str], named: str
) -> None:
    """Lightning's ``--optimizer SGD`` silently replaced the model's AdamW while the model's ``lr`` stayed in
    the config, meaningless."""
    with pytest.raises(SystemExit) as stop:
        _fit(tmp_path / "run", *extra)
    message = str(stop.value.code)
    assert message.startswith("rezdiff fit: error: --") and "\n" not in message, message
    assert "at the top level is refused" in message and named in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_top_level_refusal_names_both_optimisers_of_the_infd_autoencoder(tmp_path: Path) -> None:
    config = Path(TINY_DDPM).parent / "tiny_infd.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", str(config), "--trainer.default_root_dir", str(tmp_path), "--optimizer=SGD"])
    message = str(stop.value.code)
    assert "--model.init_args.generator_optimizer / --model.init_args.discriminator_optimizer" in message


FORMER_DDPM = dict(
    lr=3e-3, adam_betas=(0.8, 0.99), weight_decay=0.02, warmup_steps=7, ema_decay=0.5, ema_update_every=2
)


def _former_checkpoint(model: Any, path: Path, former: dict[str, Any]) -> Path:
    """A checkpoint as the code before the injected optimiser wrote it: its hyperparameters hold the former
    arguments instead of ``optimizer``/``lr_scheduler``/``ema``."""
    hparams = {k: v for k, v in model.hparams.items() if k not in ("optimizer", "lr_scheduler", "ema")}
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": {**hparams, **former}}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_with_the_former_optimiser_arguments_loads_and_samples(tmp_path: Path) -> None:
    model = DDPM(**TINY_UNET, ema={"decay": 0.5, "update_every": 2, "warmup": False})
    model.ema.update(model.network, 0)
    path = _former_checkpoint(model, tmp_path / "old.ckpt", {**FORMER_DDPM, "ema_warmup": False})
    with pytest.warns(
        FutureWarning, match="ema_decay, ema_update_every, ema_warmup, lr, warmup_steps"
    ) as caught:
        loaded = rezdiff.load(path)
    assert len([w for w in caught if issubclass(w.category, FutureWarning)]) == 1
    assert "\n" not in str(caught[0].message)
    assert loaded.hparams["optimizer"] == class_spec(
        "torch.optim.AdamW", lr=3e-3, betas=[0.8, 0.99], weight_decay=0.02
    )
    assert loaded.hparams["lr_scheduler"] == class_spec("rezdiff.models.LinearWarmup", steps=7)
    assert loaded.hparams["ema"] == {"decay": 0.5, "update_every": 2, "warmup": False}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    images = loaded.sample(2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    configured = loaded.configure_optimizers()
    assert configured["optimizer"].defaults["betas"] == (0.8, 0.99)
    assert configured["lr_scheduler"]["scheduler"].steps == 7
    # no warm-up recorded as 0 steps: no schedule
    path = _former_checkpoint(model, tmp_path / "flat.ckpt", {**FORMER_DDPM, "warmup_steps": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert rezdiff.load(path).hparams["lr_scheduler"] is None


# A stage 1 small enough to build in milliseconds.
TINY_INFD_AUTOENCODER = dict(
    encoder_resolution=16,
    base_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    norm_num_groups=8,
    num_codes=16,
    renderer_channels=8,
    renderer_groups=8,
    perceptual="lap_l1",
    disc_channels=8,
    disc_layers=1,
)


def test_a_former_infd_autoencoder_record_gives_both_optimisers_its_settings() -> None:
    """Stage 1 had ``lr`` and ``adam_betas`` for both Adam optimisers; stage 2 records stage 1's arguments
    and rebuilds it through ``rezdiff.loading.build``."""
    with pytest.warns(FutureWarning, match="adam_betas, lr"):
        former = {**TINY_INFD_AUTOENCODER, "lr": 2e-3, "adam_betas": [0.4, 0.8]}
        stage1 = build("rezdiff.models.INFDAutoencoder", former)
    opt_g, opt_d = stage1.configure_optimizers()
    for optimizer in (opt_g, opt_d):
        assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 2e-3
        assert optimizer.defaults["betas"] == (0.4, 0.8) and optimizer.defaults["weight_decay"] == 0.0


def test_infd_autoencoder_takes_one_optimiser_per_player() -> None:
    """The generator's and the critic's optimisers are independent arguments over their own parameters."""
    model = INFDAutoencoder(
        **TINY_INFD_AUTOENCODER,
        generator_optimizer=class_spec("torch.optim.SGD", lr=0.1),
        discriminator_optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.2}},
    )
    opt_g, opt_d = model.configure_optimizers()
    assert type(opt_g) is torch.optim.SGD and opt_g.defaults["lr"] == 0.1
    assert type(opt_d) is torch.optim.Adam and opt_d.defaults["lr"] == 0.2
    assert opt_d.defaults["betas"] == (0.5, 0.9)  # the family's Adam: betas kept
    critic = {id(p) for p in model.discriminator.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == critic
    assert not {id(p) for p in opt_g.param_groups[0]["params"]} & critic


def test_a_spec_parsed_back_by_the_cli_inside_a_wrapped_stage_record_is_read() -> None:
    """A resumed stage-2 run re-parses its recorded stage-1 configuration (a ``dict`` argument):
    jsonargparse hands the nested optimiser spec back as a ``Namespace`` with the call-time ``params``
    filled in as None."""
    from jsonargparse import Namespace

    parsed = Namespace(class_path="torch.optim.AdamW", init_args=Namespace(params=None, lr=0.1))
    assert recordable(parsed) == class_spec("torch.optim.AdamW", lr=0.1)
    model = DDPM(**TINY_UNET, optimizer=parsed, ema=Namespace(decay=0.5, update_every=2, warmup=False))
    assert model.configure_optimizers().defaults["lr"] == 0.1
    assert model.hparams["ema"] == {"decay": 0.5, "update_every": 2, "warmup": False}
