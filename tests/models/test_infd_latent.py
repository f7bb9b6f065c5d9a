"""INFD stage 2: latent diffusion on a tiny trained stage 1, any-resolution sampling, cache, checkpoints."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.cli import main
from rezdiff.data import FieldBatch, FieldDataModule, FullGrid, Synthetic
from rezdiff.metrics import render_scale_consistency
from rezdiff.models import INFD
from rezdiff.models.infd import CachedLatents
from rezdiff.models.optimization import class_spec
from tests.helpers import REPO, loss_before_and_after, quiet_trainer

TINY_STAGE1 = REPO / "tests" / "configs" / "tiny_infd.yaml"
TINY_STAGE2 = REPO / "tests" / "configs" / "tiny_infd_latent.yaml"
# The U-Net part of tests/configs/tiny_infd_latent.yaml (4x4 latents of a 16x16 encoder input).
TINY = dict(
    unet=dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(1,),
        attention_head_dim=16,
        norm_num_groups=8,
    ),
    num_train_steps=100,
    sample_steps=4,
)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 checkpoint trained for a few iterations with tests/configs/tiny_infd.yaml."""
    root = tmp_path_factory.mktemp("infd_stage1")
    main(["fit", "--config", str(TINY_STAGE1), "--trainer.default_root_dir", str(root)])
    return root / "checkpoints" / "last.ckpt"


def _dataset() -> Synthetic:
    return Synthetic(num_images=12, resolution=48)  # the data of both tiny configs


def test_stage2_loss_falls_on_cached_latents(stage1: Path) -> None:
    torch.manual_seed(0)
    model = INFD(str(stage1), **TINY, optimizer=class_spec("torch.optim.AdamW", lr=3e-3), ema={"decay": 0.0})
    latents = model.encode_dataset(_dataset())
    assert latents.shape == (12, *model.latent_shape) and torch.isfinite(latents).all()
    batch = FieldBatch(image=latents[:8])
    before, after = loss_before_and_after(model, batch, 15)
    assert after < 0.7 * before, (before, after)
    # the frozen autoencoder gets no gradient and no optimiser slot
    assert all(p.grad is None for p in model.autoencoder.parameters())
    optimised = {id(p) for group in model.configure_optimizers().param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in model.autoencoder.parameters()}


def test_samples_at_1x_and_4x_any_shape_and_tiled_equals_whole(stage1: Path) -> None:
    model = INFD(str(stage1), **TINY).eval()
    for resolution, shape in ((None, (2, 3, 16, 16)), (64, (2, 3, 64, 64)), ((24, 40), (2, 3, 24, 40))):
        images = model.sample(2, resolution, steps=3, generator=torch.Generator().manual_seed(0))
        assert images.shape == shape and torch.isfinite(images).all() and images.abs().max() <= 1
    # 64x64 in four 32-px tiles (8 px context, global GroupNorm statistics) == one whole render
    tiled = model.sample(2, 64, steps=3, tile=32, pad=8, generator=torch.Generator().manual_seed(1))
    whole = model.sample(2, 64, steps=3, tile=None, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(tiled, whole, rtol=0, atol=2e-5)
    assert not torch.equal(tiled, model.sample(2, 64, steps=3, generator=torch.Generator().manual_seed(2)))


def test_wrong_data_view_is_named() -> None:
    model = INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **TINY)
    images = FieldBatch.collate([FullGrid(16)(_dataset(), i) for i in range(2)])
    with pytest.raises(ValueError, match="CachedLatents"):
        model.loss(images, torch.Generator().manual_seed(0))
    with pytest.raises(FileNotFoundError, match="stage-1 checkpoint"):
        INFD(str(REPO / "no_such.ckpt"), **TINY)
    with pytest.raises(RuntimeError, match="filled by rezdiff.models.INFD"):
        CachedLatents()(_dataset(), 0)
    # a random flip cannot reach latents cached once per image: an error, not a silent no-op
    flipping = FieldDataModule(_dataset(), CachedLatents(), hflip=0.5)
    trainer = type("Trainer", (), {"datamodule": flipping, "default_root_dir": "unused"})()
    with pytest.raises(ValueError, match="set the data module's hflip: 0"):
        INFD.prepare_latents(type("Stub", (), {"trainer": trainer})())  # type: ignore[arg-type]


def _tiny_autoencoder_config() -> dict:
    """Untrained tiny stage 1 (the model part of tests/configs/tiny_infd.yaml), built without a file."""
    import yaml

    args = yaml.safe_load(TINY_STAGE1.read_text())["model"]["init_args"]
    return {"class_path": "rezdiff.models.infd.autoencoder.INFDAutoencoder", "init_args": args}


def test_cli_fit_caches_latents_and_checkpoint_outlives_stage1_file(stage1: Path, tmp_path: Path) -> None:
    moved = tmp_path / "stage1.ckpt"
    shutil.copy(stage1, moved)
    root = tmp_path / "run"
    args = ["fit", "--config", str(TINY_STAGE2), "--trainer.default_root_dir", str(root)]
    cli = main([*args, "--model.init_args.autoencoder_ckpt", str(moved)])
    [cache] = (root / "latent_cache").glob("infd_latents_*.pt")
    stored = torch.load(cache, weights_only=True)
    dataset = cli.datamodule.dataset
    direct = cli.model.encode_dataset(dataset)
    torch.testing.assert_close(stored["latents"], direct)
    assert any("res=64" in p.name for p in (root / "samples").glob("*.png"))
    # a second run reuses the cache file instead of encoding again
    stamp = cache.stat().st_mtime_ns
    main([*args, "--model.init_args.autoencoder_ckpt", str(moved), "--trainer.max_steps", "1"])
    assert cache.stat().st_mtime_ns == stamp and len(list((root / "latent_cache").iterdir())) == 1
    # the stage-2 checkpoint rebuilds with rezdiff.load alone, after the stage-1 file is gone
    moved.unlink()
    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    assert (
        isinstance(model, INFD) and model.hparams["autoencoder_config"]["init_args"]["perceptual"] == "none"
    )
    torch.testing.assert_close(model.encode_dataset(dataset), direct)
    images = model.sample(2, 64, steps=3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    written = main(
        ["sample", "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), "--resolution", "[16,32]"]
        + ["--num", "1", "--steps", "2", "--out", str(tmp_path / "samples")]
    )
    assert sorted(p.name for p in written if p.name.startswith("grid")) == [
        "grid_16x16.png",
        "grid_32x32.png",
    ]


def test_scale_consistency_of_trained_stage1_beats_untrained(stage1: Path) -> None:
    """Paper §5.7 on the tiny stage 1: render at 2R and box-downsample vs render at R (R = 16, 32)."""
    trained = rezdiff.load(stage1)
    untrained = type(trained)(**{k: v for k, v in trained.hparams.items() if not k.startswith("_")}).eval()
    dataset = _dataset()
    images = torch.stack([dataset.render(i, 16) for i in range(8)])
    for resolution in (16, 32):
        figures = {}
        for name, model in (("trained", trained), ("untrained", untrained)):
            with torch.no_grad():
                features = model.decode(model.encode(images))
            figures[name] = render_scale_consistency(model, features, resolution, tile=None)
            assert all(torch.isfinite(torch.tensor(v)) for v in figures[name].values())
        assert figures["trained"]["psnr"] > figures["untrained"]["psnr"] + 1.0, figures
        assert figures["trained"]["l1"] < figures["untrained"]["l1"], figures


def test_estimated_latent_scale_is_fixed_at_the_first_fit(stage1: Path, tmp_path: Path) -> None:
    """latent_scale=None: 1/std of the first fit's latents, then never re-estimated (validate on other
    data, rezdiff.load, --ckpt_path resume): the scale and the seeded samples stay the same."""
    torch.manual_seed(0)
    model = INFD(str(stage1), **{**TINY, "latent_scale": None, "ema": {"decay": 0.0}})
    assert not bool(model.latent_scale_set)
    data = FieldDataModule(_dataset(), CachedLatents(), batch_size=4, val_fraction=0.25)
    trainer = quiet_trainer(tmp_path / "fit", max_steps=2)
    trainer.fit(model, datamodule=data)
    scale = float(model.latent_scale_value)
    assert bool(model.latent_scale_set)
    assert abs(scale * float(model.encode_dataset(_dataset()).std()) - 1) < 1e-5
    ckpt = tmp_path / "stage2.ckpt"
    trainer.save_checkpoint(ckpt)
    model.eval()

    def samples(m: INFD) -> torch.Tensor:
        return m.sample(2, 32, steps=3, generator=torch.Generator().manual_seed(0))

    before = samples(model)

    def other() -> FieldDataModule:  # different images: a re-estimate would give another scale
        dataset = Synthetic(num_images=8, resolution=48, seed=7)
        return FieldDataModule(dataset, CachedLatents(), batch_size=4, val_fraction=0.5)

    assert abs(float(INFD(str(stage1), **TINY).encode_dataset(other().dataset).std()) * scale - 1) > 1e-3
    quiet_trainer(tmp_path / "val").validate(model, datamodule=other())
    assert float(model.latent_scale_value) == scale
    torch.testing.assert_close(samples(model), before, rtol=0, atol=0)
    loaded = rezdiff.load(ckpt)
    assert bool(loaded.latent_scale_set) and float(loaded.latent_scale_value) == scale
    quiet_trainer(tmp_path / "val2").validate(loaded, datamodule=other())
    assert float(loaded.latent_scale_value) == scale
    torch.testing.assert_close(samples(loaded.eval()), before, rtol=0, atol=0)
    # resume on other data: the checkpoint's scale, not a new estimate
    resumed = INFD(str(stage1), **{**TINY, "latent_scale": None, "ema": {"decay": 0.0}})
    quiet_trainer(tmp_path / "resume", max_steps=3).fit(resumed, datamodule=other(), ckpt_path=str(ckpt))
    assert float(resumed.latent_scale_value) == scale
    # a checkpoint written before the flag existed holds a fitted scale: it loads as set
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    del state["latent_scale_set"]
    fresh = INFD(str(stage1), **{**TINY, "latent_scale": None, "ema": {"decay": 0.0}})
    fresh.load_state_dict(state)
    assert bool(fresh.latent_scale_set) and float(fresh.latent_scale_value) == scale


def test_tile_norm_reaches_sample_and_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rezdiff.models.infd.clif import render_field

    torch.manual_seed(0)
    model = INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **TINY).eval()

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    whole = model.sample(1, 64, steps=2, tile=None, generator=seeded())
    exact = model.sample(1, 64, steps=2, tile=32, pad=8, norm="global", generator=seeded())
    per_tile = model.sample(1, 64, steps=2, tile=32, pad=8, norm="tile", generator=seeded())
    torch.testing.assert_close(exact, whole, rtol=0, atol=2e-5)
    assert (per_tile - whole).abs().max() > 1e-3  # per-tile statistics: another image (seams)
    with torch.no_grad():
        features = model.decode(model.sample_latents(1, steps=2, generator=seeded()))
        expected = render_field(model.autoencoder.renderer, features, 64, tile=32, pad=8, norm="tile")
    torch.testing.assert_close(per_tile, expected.clamp(-1, 1))
    with pytest.raises(ValueError, match="'global' .* or 'tile'"):
        model.sample(1, 64, norm="tiles")  # type: ignore[arg-type]
    # rezdiff sample --tile/--pad/--norm reach INFD.sample (--tile null: one whole render)
    calls: list[dict] = []
    original = model.sample

    @functools.wraps(original)  # keeps the signature that rezdiff sample inspects
    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(kwargs)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "sample", recording)
    monkeypatch.setattr("rezdiff.loading.load", lambda *a, **k: model)
    base = ["sample", "--ckpt_path", "x.ckpt", "--resolution", "32", "--num", "1", "--steps", "2"]
    main([*base, "--out", str(tmp_path / "a"), "--tile", "16", "--pad", "7", "--norm", "tile"])
    main([*base, "--out", str(tmp_path / "b"), "--tile", "null"])
    calls = [call for call in calls if call["steps"] == 2]  # not the memory probes' one-step calls
    assert (calls[0]["tile"], calls[0]["pad"], calls[0]["norm"]) == (16, 7, "tile")
    assert calls[1]["tile"] is None and "norm" not in calls[1]
    # a render estimated beyond free memory is refused, with tiling suggested
    monkeypatch.setattr("rezdiff.sample.free_memory", lambda device: 1000)
    with pytest.raises(SystemExit, match=r"or render in smaller tiles \(--tile N\), or pass --force"):
        main([*base, "--out", str(tmp_path / "c")])
