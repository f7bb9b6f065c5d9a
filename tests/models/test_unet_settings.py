"""The ``unet`` group (issue 18, item 5): DDPM, DVDP, the multilevel SDE's U-Net option and INFD's latent
model take their network as one :class:`~rezdiff.nn.unet.UNetSettings`; the former flat arguments keep
working for one release (constructor, config, command line, checkpoints) with one FutureWarning, and both
forms at once is an error."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import rezdiff
from rezdiff.cli import main
from rezdiff.models import DDPM, DVDP, INFD, DiffusionModule, MultilevelSDE
from rezdiff.nn.unet import UNET_SETTINGS, UNet, UNetSettings
from tests.helpers import REPO, TINY_DDPM

FLAT = dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    attention_levels=(1,),
    attention_head_dim=16,
    dropout=0.0,
    norm_num_groups=8,
)
QUICK = ["--trainer.callbacks=[]", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]


def _tiny_autoencoder_config() -> dict[str, Any]:
    """Untrained tiny INFD stage 1 (tests/configs/tiny_infd.yaml's model), built without a file."""
    args = yaml.safe_load((REPO / "tests" / "configs" / "tiny_infd.yaml").read_text())["model"]["init_args"]
    return {"class_path": "rezdiff.models.infd.autoencoder.INFDAutoencoder", "init_args": args}


FAMILIES: dict[str, tuple[Callable[..., DiffusionModule], int]] = {  # builder, channels its U-Net sees
    "ddpm": (lambda **kw: DDPM(image_size=16, num_train_steps=20, sample_steps=4, **kw), 3),
    "dvdp": (
        lambda **kw: DVDP(image_size=16, num_train_steps=20, sample_steps=4, turning_points=(10,), **kw),
        3,
    ),
    "multilevel": (lambda **kw: MultilevelSDE(image_size=16, network="unet", **kw), 1),
    "infd": (
        lambda **kw: INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), sample_steps=4, **kw),
        None,
    ),
}


def _quiet_flat(build: Callable[..., DiffusionModule], **kwargs: Any) -> DiffusionModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return build(**kwargs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_grouped_form_builds_the_network_the_flat_form_built(family: str) -> None:
    """Same parameters, keys and (same seed) values as the flat arguments and as UNet(**flat) itself."""
    build, channels = FAMILIES[family]
    torch.manual_seed(0)
    grouped = build(unet=UNetSettings(**FLAT))
    torch.manual_seed(0)
    flat = _quiet_flat(build, **FLAT)
    channels = channels or grouped.latent_shape[0]
    torch.manual_seed(0)
    reference = UNet(channels, channels, **FLAT)  # what the families built from their flat arguments
    for model in (grouped, flat):
        state = model.network.state_dict()
        assert list(state) == list(reference.state_dict())
        assert sum(p.numel() for p in model.network.parameters()) == sum(
            p.numel() for p in reference.parameters()
        )
    for key, value in grouped.network.state_dict().items():
        torch.testing.assert_close(value, flat.network.state_dict()[key], rtol=0, atol=0)
    assert grouped.hparams["unet"] == flat.hparams["unet"] == UNetSettings(**FLAT).as_dict()
    assert not set(UNET_SETTINGS) & set(flat.hparams)  # the flat names are recorded nowhere


def test_a_partial_group_keeps_the_family_defaults() -> None:
    from rezdiff.models.ddpm.module import DEFAULT_UNET

    model = DDPM(image_size=32, unet={"dropout": 0.2})
    assert model.unet_settings == UNetSettings(**{**DEFAULT_UNET.as_dict(), "dropout": 0.2})
    assert MultilevelSDE(image_size=16).hparams["unet"]["norm_num_groups"] == 16  # its own default


def test_flat_arguments_warn_once_naming_the_new_keys() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = DDPM(
            image_size=16, block_out_channels=(16, 32), attention_levels=(), norm_num_groups=8, dropout=0.0
        )
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(future) == 1
    message = str(future[0].message)
    assert "model.init_args.unet.block_out_channels" in message and "model.init_args.unet.dropout" in message
    assert model.hparams["unet"]["block_out_channels"] == (16, 32) and model.unet_settings.dropout == 0.0


def test_flat_and_grouped_together_is_one_line_naming_both() -> None:
    with pytest.raises(ValueError, match="got unet and the former flat argument") as error:
        DDPM(image_size=16, unet=FLAT, block_out_channels=(8, 16))
    assert "\n" not in str(error.value) and "model.init_args.unet.block_out_channels" in str(error.value)
    with pytest.raises(ValueError, match="unet has no setting base_channels"):
        DDPM(unet={"base_channels": 64})


def _flat_hparams(model: DiffusionModule) -> dict[str, Any]:
    """``model``'s hyperparameters as a checkpoint written before the ``unet`` group records them."""
    hparams = dict(model.hparams)
    return {**{k: v for k, v in hparams.items() if k != "unet"}, **hparams["unet"]}


def test_an_old_flat_checkpoint_loads_and_samples_identically(tmp_path: Path) -> None:
    model = DDPM(image_size=16, num_train_steps=20, sample_steps=3, unet=FLAT, ema={"decay": 0.5}).eval()
    with torch.no_grad():
        next(model.network.parameters()).add_(0.1)
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": _flat_hparams(model)}
    model.on_save_checkpoint(checkpoint)
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = rezdiff.load(path)  # weights_only=True: the record is plain data
    future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert len(future) == 1 and str(path) in future[0] and "flat U-Net arguments, as unet" in future[0]
    assert loaded.hparams["unet"] == model.hparams["unet"]
    torch.testing.assert_close(loaded.sample(2, seeds=[1, 2]), model.sample(2, seeds=[1, 2]), rtol=0, atol=0)
    both = {**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], "unet": FLAT}}
    torch.save(both, tmp_path / "both.ckpt")
    with pytest.raises(ValueError, match="records both unet and the former flat"):
        rezdiff.load(tmp_path / "both.ckpt")


def _flat_config(tmp_path: Path) -> Path:
    """tests/configs/tiny_ddpm.yaml as it was written before the group: the U-Net settings flat."""
    config = yaml.safe_load(TINY_DDPM.read_text())
    args = config["model"]["init_args"]
    args.update(args.pop("unet"))
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(config: Path, root: Path, *extra: str) -> Any:
    return main(
        ["fit", "-c", str(config), "--trainer.default_root_dir", str(root), "--trainer.max_epochs=1"]
        + QUICK
        + list(extra)
    )


@pytest.mark.usefixtures("single_thread")
def test_a_flat_config_and_override_train_with_one_warning(tmp_path: Path) -> None:
    expected = yaml.safe_load(TINY_DDPM.read_text())["model"]["init_args"]["unet"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = _fit(_flat_config(tmp_path), tmp_path / "run", "--model.init_args.dropout=0.0")
    future = [
        str(w.message) for w in caught if issubclass(w.category, FutureWarning) and "unet" in str(w.message)
    ]
    assert len(future) == 1 and "model.init_args.unet.layers_per_block" in future[0]
    assert cli.model.hparams["unet"] == UNetSettings(**expected).as_dict()
    assert not set(UNET_SETTINGS) & set(cli.model.hparams)
    record = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert record["unet"]["block_out_channels"] == (16, 32) and "block_out_channels" not in record
    # both forms on the command line: one line naming the key
    with pytest.raises(SystemExit) as stop:
        _fit(_flat_config(tmp_path), tmp_path / "both", "--model.init_args.unet.block_out_channels=[8, 16]")
    assert "\n" not in str(stop.value.code) and "give only unet" in str(stop.value.code)


@pytest.mark.usefixtures("single_thread")
@pytest.mark.usefixtures("single_thread")
def test_a_flat_runs_own_config_yaml_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """A run started from a flat config writes the flat keys and a default-filled ``unet`` into its
    config.yaml; resuming with that file and --ckpt_path compares the flat values (folded into ``unet``, as
    the checkpoint records them) with the checkpoint, not the default ``unet``."""
    with pytest.warns(FutureWarning):
        _fit(_flat_config(tmp_path), tmp_path / "run")
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["init_args"]
    assert written["block_out_channels"] == [16, 32] and "unet" in written  # what makes the case
    with pytest.warns(FutureWarning):
        cli = _fit(
            tmp_path / "run" / "config.yaml",
            tmp_path / "resumed",
            "--ckpt_path",
            str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
            "--trainer.max_epochs=2",
        )
    assert cli.model.hparams["unet"]["block_out_channels"] == (16, 32)
    with pytest.raises(SystemExit, match=r"block_out_channels .* cannot change"):
        _fit(
            tmp_path / "run" / "config.yaml",
            tmp_path / "changed",
            "--ckpt_path",
            str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
            "--model.init_args.block_out_channels=[16,16]",
        )


def test_an_old_flat_checkpoint_resumes_with_the_new_and_the_old_config(tmp_path: Path) -> None:
    _fit(TINY_DDPM, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = {
        **{k: v for k, v in checkpoint["hyper_parameters"].items() if k != "unet"},
        **checkpoint["hyper_parameters"]["unet"],
    }
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    for config in (TINY_DDPM, _flat_config(tmp_path)):
        with pytest.warns(FutureWarning, match="flat U-Net arguments, as unet"):
            cli = _fit(config, tmp_path / f"resumed_{config.stem}", "--ckpt_path", str(old))
        assert cli.model.hparams["unet"]["block_out_channels"] == (16, 32)
