"""`rezdiff.load`: a checkpoint alone rebuilds the model; bad files give errors that say why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.loading import CheckpointError

TINY = dict(
    image_size=16,
    unet=dict(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(), norm_num_groups=8),
    num_train_steps=50,
    sample_steps=2,
)


def save_like_lightning(model: rezdiff.DDPM, path: Path, **changes) -> Path:
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    checkpoint.update(changes)
    torch.save(checkpoint, path)
    return path


def test_round_trip_restores_weights_ema_and_arguments(tmp_path: Path) -> None:
    model = rezdiff.DDPM(**TINY, ema={"decay": 0.5})
    model.ema.update(model.network, 0)
    with torch.no_grad():
        next(model.network.parameters()).add_(1.0)
    loaded = rezdiff.load(save_like_lightning(model, tmp_path / "m.ckpt"))
    assert isinstance(loaded, rezdiff.DDPM) and not loaded.training
    assert loaded.hparams["unet"]["block_out_channels"] == (16, 32)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rezdiff.load(tmp_path / "absent.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is a text file"):
        rezdiff.load(tmp_path / "garbage.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a rezdiff checkpoint"):
        rezdiff.load(tmp_path / "foreign.ckpt")

    model = rezdiff.DDPM(**TINY)
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("ema.")}
    with pytest.raises(CheckpointError, match="missing weights"):
        rezdiff.load(save_like_lightning(model, tmp_path / "partial.ckpt", state_dict=partial))
    with pytest.raises(CheckpointError, match="cannot be imported"):
        rezdiff.load(
            save_like_lightning(
                model, tmp_path / "moved.ckpt", rezdiff={"class_path": "rezdiff.models.Gone", "version": "0"}
            )
        )


def test_checkpoint_cannot_carry_code(tmp_path: Path) -> None:
    """weights_only=True: a pickled object other than tensors and plain values is refused."""
    model = rezdiff.DDPM(**TINY)
    path = save_like_lightning(model, tmp_path / "evil.ckpt", extra=Path("/etc/passwd"))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        rezdiff.load(path)


def _saved_without(model: rezdiff.DiffusionModule, key: str, path: Path) -> Path:
    """``model`` saved as a checkpoint written before hyperparameter ``key`` existed."""
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    del checkpoint["hyper_parameters"][key]
    torch.save(checkpoint, path)
    return path


def test_checkpoints_from_before_an_option_rebuild_as_they_were_trained(tmp_path: Path) -> None:
    """A hyperparameter added later with a new default: an older checkpoint keeps the old behaviour."""
    from tests.helpers import TINY_INFTY_DIFF
    from tests.models.test_infd_autoencoder import TINY as TINY_AE

    old_ae = rezdiff.INFDAutoencoder(**{**TINY_AE, "feature_norm": True})
    loaded = rezdiff.load(_saved_without(old_ae, "feature_norm", tmp_path / "ae.ckpt"))
    assert loaded.hparams["feature_norm"] is True and loaded.decoder.out_norm

    settings = {**TINY_INFTY_DIFF, "latent_dim": 8}
    old = rezdiff.InftyDiff(**settings, latent_conditioning="embedding")
    loaded = rezdiff.load(_saved_without(old, "latent_conditioning", tmp_path / "infty.ckpt"))
    assert loaded.hparams["latent_conditioning"] == "embedding"
    # a checkpoint that records its choice keeps it: the fill-in never overrides a recorded value
    new = rezdiff.InftyDiff(**settings)
    checkpoint = {"state_dict": new.state_dict(), "hyper_parameters": dict(new.hparams)}
    new.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "new.ckpt")
    assert rezdiff.load(tmp_path / "new.ckpt").hparams["latent_conditioning"] == "scale"


# Bad files: one line naming the file and what is wrong with it (issue 17, item 12) ---------------------


def _one_line(path: Path) -> str:
    with pytest.raises(CheckpointError) as error:
        rezdiff.load(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_a_truncated_file_says_it_is_truncated(tmp_path: Path) -> None:
    """torch said "failed finding central directory" (or "[Errno 22] Invalid argument")."""
    whole = save_like_lightning(rezdiff.DDPM(**TINY), tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(whole[: len(whole) // 2])
    assert "is a truncated checkpoint" in _one_line(tmp_path / "cut.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert "is empty (0 bytes)" in _one_line(tmp_path / "empty.ckpt")


def test_a_text_file_says_it_is_text(tmp_path: Path) -> None:
    """torch said "pop from empty list" (or "101", the first byte of an 'e')."""
    (tmp_path / "config.ckpt").write_text("epoch: 3\nmodel: DDPM\n")
    assert "is a text file (it starts with 'epoch: 3')" in _one_line(tmp_path / "config.ckpt")
    (tmp_path / "bytes.ckpt").write_bytes(bytes(range(256)) * 4)
    assert "is not a checkpoint" in _one_line(tmp_path / "bytes.ckpt")


def test_a_foreign_class_is_refused_before_its_module_is_imported(tmp_path: Path) -> None:
    """The header's class path was imported first and checked after: any module named in a file ran."""
    import sys

    model = rezdiff.DDPM(**TINY)
    assert "this" not in sys.modules  # the Zen of Python: importing it prints, a harmless stand-in
    path = save_like_lightning(
        model, tmp_path / "foreign.ckpt", rezdiff={"class_path": "this.Zen", "version": "0"}
    )
    message = _one_line(path)
    assert "'this.Zen', which is not a rezdiff model" in message
    assert "this" not in sys.modules
    inside = save_like_lightning(
        model, tmp_path / "inside.ckpt", rezdiff={"class_path": "rezdiff.data.Synthetic", "version": "0"}
    )
    assert "is not a rezdiff DiffusionModule" in _one_line(inside)


def test_weights_of_other_settings_name_the_weight(tmp_path: Path) -> None:
    """load_state_dict raised "size mismatch for ..." for every tensor, hundreds of lines."""
    model = rezdiff.DDPM(**TINY)
    hparams = {**dict(model.hparams), "unet": {**model.hparams["unet"], "block_out_channels": (16, 48)}}
    message = _one_line(save_like_lightning(model, tmp_path / "edited.ckpt", hyper_parameters=hparams))
    assert re.search(
        r"weight network\.\S+ has shape \[32[],].* in the file but \[48[],].* in the DDPM", message
    )
    assert "the recorded hyperparameters do not match the weights" in message


def test_ddpm_weights_under_a_dvdp_header_say_so(tmp_path: Path) -> None:
    """DVDP's constructor raised "turning points must lie in [1, 99]" (or a TypeError) on DDPM settings."""
    from tests.helpers import TINY_UNET

    ddpm = rezdiff.DDPM(**TINY)
    header = {"class_path": "rezdiff.models.dvdp.module.DVDP", "version": "0"}
    # as LightningCLI records them: the configured class is in the hyperparameters
    hparams = {"_class_path": "rezdiff.models.DDPM", **dict(ddpm.hparams)}
    cli_made = save_like_lightning(ddpm, tmp_path / "cli.ckpt", rezdiff=header, hyper_parameters=hparams)
    assert "its header names DVDP but its hyperparameters (and weights) were recorded for DDPM" in (
        _one_line(cli_made)
    )
    # as rezdiff.load/build record them: DDPM-only arguments give the class away
    plain = save_like_lightning(ddpm, tmp_path / "plain.ckpt", rezdiff=header)
    assert "its header names DVDP, which takes no argument eps_after_clip" in _one_line(plain)
    # DDPM settings DVDP takes but cannot build from: the constructor's reason, with the file
    dvdp_args = {k: v for k, v in TINY_UNET.items() if k != "sample_steps"} | {"num_train_steps": 20}
    odd = save_like_lightning(ddpm, tmp_path / "odd.ckpt", rezdiff=header, hyper_parameters=dvdp_args)
    assert "its recorded hyperparameters do not build a DVDP (" in _one_line(odd)
