"""`rezdiff.load`: a checkpoint alone rebuilds the model; bad files give errors that say why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.loading import CheckpointError

TINY = dict(
    image_size=16,
    block_out_channels=(16, 32),
    layers_per_block=1,
    attention_levels=(),
    norm_num_groups=8,
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
    model = rezdiff.DDPM(**TINY, ema_decay=0.5)
    model.ema.update(model.network, 0)
    with torch.no_grad():
        next(model.network.parameters()).add_(1.0)
    loaded = rezdiff.load(save_like_lightning(model, tmp_path / "m.ckpt"))
    assert isinstance(loaded, rezdiff.DDPM) and not loaded.training
    assert loaded.hparams["block_out_channels"] == (16, 32)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rezdiff.load(tmp_path / "absent.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
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
