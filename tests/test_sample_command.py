"""``rezdiff sample`` solves the families' inverse problems from files: ∞-Diff inpainting and
super-resolution, INFD box guidance (tests/models/test_infd_latent.py), with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.cli import main
from rezdiff.data import Synthetic
from rezdiff.data.images import load_image, save_image
from tests.helpers import REPO

TINY_CONFIG = REPO / "tests" / "configs" / "tiny_infty_diff.yaml"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ∞-Diff diffusion autoencoder trained for two epochs (checkpoint path)."""
    root = tmp_path_factory.mktemp("infty_diff_ae")
    main(
        ["fit", "--config", str(TINY_CONFIG), "--trainer.default_root_dir", str(root)]
        + ["--model.init_args.latent_dim", "8", "--trainer.callbacks", "[]"]
    )
    return root / "checkpoints" / "last.ckpt"


def _images(folder: Path, num: int = 2, resolution: int = 16) -> list[Path]:
    dataset = Synthetic(num_images=num, resolution=resolution, seed=7)
    paths = [folder / f"photo{i}.png" for i in range(num)]
    for i, path in enumerate(paths):
        save_image(dataset[i], path)
    return paths


def _known_error(out: Path, inputs: list[Path], mask: torch.Tensor) -> float:
    errors = [((load_image(out / "16x16" / p.name) - load_image(p)) * mask).square().sum() for p in inputs]
    return float(sum(errors) / (mask.sum() * 3 * len(inputs)))


def test_inpaint_from_files_follows_the_known_pixels(autoencoder: Path, tmp_path: Path) -> None:
    inputs = _images(tmp_path)
    # inpainting's own default spacing (linspace: 99, 66, 33, 0 of T = 100)
    common = ["sample", "--ckpt", str(autoencoder), "--inpaint", *map(str, inputs), "--steps", "4"]
    guided = main([*common, "--hole=-0.5,-0.5,0.5,0.5", "--out", str(tmp_path / "guided")])
    names = sorted(p.relative_to(tmp_path / "guided").as_posix() for p in guided)
    assert names == sorted(
        ["16x16/photo0.png", "16x16/photo1.png", "16x16/photo0_known.png", "16x16/photo1_known.png"]
        + ["grid_16x16.png"]
    )
    mask = torch.ones(16, 16)
    mask[4:12, 4:12] = 0  # pixel centres inside [-0.5, 0.5]^2
    known = load_image(tmp_path / "guided" / "16x16" / "photo0_known.png")
    torch.testing.assert_close(known, load_image(inputs[0]) * mask, atol=2 / 255, rtol=0)
    free = main(
        [*common, "--hole=-0.5,-0.5,0.5,0.5", "--guidance-scale", "0", "--out", str(tmp_path / "free")]
    )
    assert len(free) == len(guided)
    error_guided, error_free = (
        _known_error(tmp_path / "guided", inputs, mask),
        _known_error(tmp_path / "free", inputs, mask),
    )
    assert error_guided < 0.5 * error_free, (error_guided, error_free)
    # a mask image (white = known) is the same inpainting problem as the hole
    save_image(mask[None] * 2 - 1, tmp_path / "mask.png")
    same = main([*common, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "masked")])
    torch.testing.assert_close(load_image(same[0]), load_image(guided[0]))
    # at another resolution the images and mask are resized first
    resized = main([*common, "--hole=-0.5,-0.5,0.5,0.5", "--resolution", "24", "--out", str(tmp_path / "r")])
    assert load_image(resized[0]).shape == (3, 24, 24)


def test_super_resolve_from_files_and_errors(autoencoder: Path, tmp_path: Path) -> None:
    [low] = _images(tmp_path, num=1, resolution=8)
    written = main(
        ["sample", "--ckpt", str(autoencoder), "--super-resolve", str(low), "--resolution", "16", "24x32"]
        + ["--steps", "3", "--out", str(tmp_path / "sr")]
    )
    assert sorted(p.relative_to(tmp_path / "sr").as_posix() for p in written) == [
        "16x16/photo0.png",
        "24x32/photo0.png",
        "grid_16x16.png",
        "grid_24x32.png",
    ]
    assert load_image(written[2]).shape == (3, 24, 32)
    with pytest.raises(SystemExit):  # argparse: --inpaint needs a mask or hole
        main(["sample", "--ckpt", str(autoencoder), "--inpaint", str(low)])
    with pytest.raises(SystemExit):  # argparse: super-resolution needs the target size
        main(["sample", "--ckpt", str(autoencoder), "--super-resolve", str(low)])
    with pytest.raises(SystemExit, match="does not support --guide"):
        main(["sample", "--ckpt", str(autoencoder), "--guide", "box=0,0,1,1,loss=color,mean=1,1,1"])


def test_inverse_problems_name_the_model_they_need(
    tmp_path: Path, fit_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_tiny("--trainer.max_epochs", "1")  # a DDPM
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    [image] = _images(tmp_path, num=1)
    # --spacing reaches the model's sampler (and is left to the model's setting without it)
    seen = []
    original = rezdiff.models.DDPM.sample

    def spy(self, *args, spacing=None, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(spacing)
        return original(self, *args, spacing=spacing, **kwargs)

    monkeypatch.setattr(rezdiff.models.DDPM, "sample", spy)
    for extra in (["--spacing", "leading"], []):
        main(["sample", "--ckpt", ckpt, "--num", "1", "--steps", "2", "--out", str(tmp_path / "s"), *extra])
    assert seen == ["leading", None]
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="need an ∞-Diff checkpoint, got DDPM"):
        main(["sample", "--ckpt", ckpt, "--inpaint", str(image), "--hole", "0,0,1,1"])
    assert isinstance(rezdiff.load(ckpt), rezdiff.models.DDPM)
    fit_tiny(
        "--trainer.max_epochs", "1", "--trainer.callbacks", "[]", config=TINY_CONFIG, root=tmp_path / "u"
    )
    unconditional = str(tmp_path / "u" / "checkpoints" / "last.ckpt")  # an ∞-Diff without an encoder
    with pytest.raises(SystemExit, match="needs an InftyDiff diffusion autoencoder"):
        main(["sample", "--ckpt", unconditional, "--super-resolve", str(image), "--resolution", "32"])
