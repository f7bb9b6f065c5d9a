"""INFD stage 1: parameter counts vs the paper, training (both optimisers), CLI fit + load, errors."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import rezdiff
from rezdiff.data import FieldBatch, FieldDataModule, Synthetic
from rezdiff.metrics.reconstruction import psnr
from rezdiff.models import INFDAutoencoder, NonFiniteLossError
from rezdiff.models.infd import MultiScalePatches
from rezdiff.models.infd.autoencoder import adaptive_weight, build_for_counting
from rezdiff.models.optimization import class_spec
from tests.helpers import REPO, quiet_trainer

TINY_INFD = REPO / "tests" / "configs" / "tiny_infd.yaml"
TINY = dict(
    encoder_resolution=16,
    base_channels=16,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    norm_num_groups=8,
    num_codes=64,
    renderer_channels=16,
    renderer_groups=8,
    perceptual="lap_l1",
    disc_channels=8,
    disc_layers=2,
    generator_optimizer=class_spec("torch.optim.Adam", lr=2e-3),
    discriminator_optimizer=class_spec("torch.optim.Adam", lr=2e-3),
)


def _count(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_paper_sized_parameter_counts_match_table_1() -> None:
    model = build_for_counting()
    rgb_conv = (128 * 3 * 9 + 3) / 1e6  # LDM's decoder ends with it; INFD's does not
    assert abs(_count(model.decoder) + rgb_conv + _count(model.quantizer) - 33.0) < 0.1
    assert abs(_count(model.decoder) + _count(model.renderer) - 35.7) < 0.1
    assert model.latent_size == 64 and model.decoder.out_channels == 128
    assert model.renderer.receptive_radius == 6


def _data() -> FieldDataModule:
    view = MultiScalePatches(patch=16, min_scale=16, max_scale=48, encoder_resolution=16)
    return FieldDataModule(Synthetic(num_images=6, resolution=48), view, batch_size=6, val_fraction=0.0)


def test_training_lowers_the_loss_and_steps_both_optimisers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = INFDAutoencoder(**TINY)
    view = MultiScalePatches(patch=16, min_scale=16, max_scale=48, encoder_resolution=16)
    dataset = Synthetic(num_images=6, resolution=48)
    fixed = FieldBatch.collate([view(dataset, i, torch.Generator().manual_seed(i)) for i in range(6)])
    with torch.no_grad():
        before = model.eval().loss(fixed).item()
    disc_before = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = pl.Trainer(
        max_steps=2 * 25,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model.train(), datamodule=_data())
    assert trainer.global_step == 50  # two optimiser steps per iteration
    with torch.no_grad():
        after = model.eval().loss(fixed).item()
    # phi is the raw decoder activation (the authors' layout): 0.682 -> 0.498 here (x0.73; x < 0.7 with the
    # earlier SiLU(GroupNorm(h)) layout); a broken optimiser step stays near x1.0
    assert after < 0.8 * before, (before, after)
    moved = [
        not torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters(), strict=True)
    ]
    assert all(moved)
    metrics = trainer.callback_metrics
    assert {"train/l1", "train/perceptual", "train/vq", "train/g", "train/d", "train/d_weight"} <= set(
        metrics
    )


def test_adaptive_weight_and_psnr() -> None:
    layer = torch.randn(3, 4, requires_grad=True)
    rec, gan = 3.0 * layer.sum(), -0.5 * layer.sum()
    expected = 3.0 * 12**0.5 / (0.5 * 12**0.5 + 1e-4)
    assert abs(float(adaptive_weight(rec, gan, layer)) - expected) < 1e-5
    assert float(adaptive_weight(rec, 1e-9 * layer.sum(), layer, max_weight=100.0)) == 100.0
    target = torch.zeros(1, 3, 4, 4)
    assert abs(float(psnr(target + 0.2, target)) - 10 * torch.log10(torch.tensor(4 / 0.04))) < 1e-4


def test_interface_shapes_and_errors() -> None:
    model = INFDAutoencoder(**TINY).eval()
    images = torch.rand(2, 3, 24, 24) * 2 - 1  # not at the encoder resolution: resized
    z = model.encode(images)
    assert z.shape == (2, 3, 4, 4)
    phi = model.decode(z)
    assert phi.shape == (2, 16, 16, 16)
    assert model.render(phi, (20, 30), tile=8).shape == (2, 3, 20, 30)
    assert model.render(phi, 12, box=(-1.0, -1.0, 0.0, 0.0)).shape == (2, 3, 12, 12)
    assert model.reconstruct(images, 64).shape == (2, 3, 64, 64)
    with pytest.raises(NotImplementedError, match="stage 2"):
        model.sample(1, 32)
    with pytest.raises(ValueError, match="MultiScalePatches"):
        model.loss(FieldBatch(image=torch.zeros(1, 3, 16, 16)))
    with pytest.raises(ValueError, match="vgg_weights"):
        INFDAutoencoder(**{**TINY, "perceptual": "lpips_vgg"})
    # A checkpoint trained with LPIPS loads and renders without the VGG file; fit without it stops at once.
    needs_vgg = INFDAutoencoder(
        **{**TINY, "perceptual": "lpips_vgg", "vgg_weights": "/nonexistent/vgg16.pth"}
    )
    assert needs_vgg.reconstruct(images, 32).shape == (2, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="lap_l1"):
        needs_vgg.setup("fit")


def test_non_finite_loss_stops_training(tmp_path: Path) -> None:
    view = MultiScalePatches(patch=16, min_scale=16, max_scale=16, encoder_resolution=16)

    class Broken(Synthetic):
        def render(self, index: int, resolution) -> torch.Tensor:  # type: ignore[override]
            return super().render(index, resolution) * float("nan")

    data = FieldDataModule(Broken(num_images=4, resolution=16), view, batch_size=2, val_fraction=0.0)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    with pytest.raises(NonFiniteLossError, match="iteration 0"):
        trainer.fit(INFDAutoencoder(**TINY), datamodule=data)


def test_fit_through_the_cli_then_load_and_reconstruct(fit_tiny, tmp_path: Path) -> None:
    root = tmp_path / "run"
    fit_tiny(config=TINY_INFD, root=root)
    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    assert isinstance(model, INFDAutoencoder) and not model.training
    images = Synthetic(num_images=2, resolution=16)
    batch = torch.stack([images[i] for i in range(2)])
    out = model.reconstruct(batch, 64)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    assert sorted(p.name for p in (root / "reconstructions").iterdir())  # validation saved reconstructions
    state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(state["optimizer_states"]) == 2


class _GanLog(pl.Callback):
    """Per training iteration: the logged critic loss and whether the generator's GAN term was on."""

    def __init__(self) -> None:
        self.d: list[float] = []
        self.g_on: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.d.append(float(trainer.callback_metrics["train/d"]))
        self.g_on.append("train/g" in trainer.callback_metrics)


def test_disc_start_counts_iterations_not_global_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = INFDAutoencoder(**{**TINY, "disc_start": 2})
    disc_before = [p.detach().clone() for p in model.discriminator.parameters()]
    log = _GanLog()
    first_on = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            now = pl_module.discriminator.parameters()
            moved = any(not torch.equal(a, b) for a, b in zip(disc_before, now, strict=True))
            first_on.append(moved)

    trainer = pl.Trainer(
        max_steps=2 * 4,  # 4 iterations, global steps 0..7
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[log, Watch()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model.train(), datamodule=_data())
    assert model.iteration == 4 and trainer.global_step == 8
    # iterations 0 and 1 (global steps 0-3): no adversarial term, the critic does not move
    assert log.d[:2] == [0.0, 0.0] and log.g_on[:2] == [False, False] and first_on[:2] == [False, False]
    # iterations 2 and 3 (global steps 4-7): both GAN terms on
    assert all(d > 0 for d in log.d[2:]) and log.g_on[2:] == [True, True] and first_on[2:] == [True, True]
    with pytest.raises(ValueError, match="disc_start"):
        INFDAutoencoder(**{**TINY, "disc_start": -1})


def test_quickstart_config_turns_the_gan_on_for_part_of_the_run() -> None:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "quickstart" / "infd.yaml").read_text())
    data = config["data"]["init_args"]
    train_images = round(data["dataset"]["init_args"]["num_images"] * (1 - data["val_fraction"]))
    iterations = config["trainer"]["max_epochs"] * (train_images // data["batch_size"])
    disc_start = config["model"]["init_args"]["disc_start"]
    assert iterations == 600
    assert disc_start <= iterations // 2, (disc_start, iterations)  # the critic acts for >= half the run


def test_feature_map_is_the_raw_decoder_activation_as_the_authors_give_pre_end() -> None:
    torch.manual_seed(0)
    model = INFDAutoencoder(**TINY).eval()
    assert not any(k.startswith("decoder.decoder.conv_norm_out") for k in model.state_dict())  # no norm_out
    captured: list[torch.Tensor] = []
    last_up = model.decoder.decoder.up_blocks[-1]
    handle = last_up.register_forward_hook(lambda module, args, out: captured.append(out))
    z = model.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    phi = model.decode(z)
    handle.remove()
    assert torch.equal(phi, captured[-1])
    assert phi.min() < -0.05  # not a SiLU output (bounded below by -0.279, rarely this low for raw h)
    # the option: SiLU(GroupNorm(h)), with the norm's parameters in the state_dict
    normed = INFDAutoencoder(**{**TINY, "feature_norm": True}).eval()
    normed.load_state_dict(model.state_dict(), strict=False)
    captured.clear()
    last_up = normed.decoder.decoder.up_blocks[-1]
    handle = last_up.register_forward_hook(lambda module, args, out: captured.append(out))
    phi_normed = normed.decode(z)
    handle.remove()
    norm = normed.decoder.decoder.conv_norm_out
    assert "decoder.decoder.conv_norm_out.weight" in normed.state_dict()
    torch.testing.assert_close(phi_normed, torch.nn.functional.silu(norm(captured[-1])))


def test_weights_of_the_earlier_normed_layout_are_named_not_mixed_up() -> None:
    from rezdiff.models.infd.latent import build_autoencoder

    old = INFDAutoencoder(**{**TINY, "feature_norm": True})
    with pytest.raises(ValueError, match="feature_norm=True"):
        INFDAutoencoder(**TINY).load_state_dict(old.state_dict())
    # a stage-2 record written before feature_norm existed rebuilds the normed layout
    args = {k: v for k, v in old.hparams.items() if k != "feature_norm"}
    rebuilt = build_autoencoder({"class_path": "rezdiff.models.INFDAutoencoder", "init_args": args})
    assert rebuilt.decoder.out_norm
    rebuilt.load_state_dict({k: v for k, v in old.state_dict().items() if not k.startswith("discriminator")})
