"""``rezdiff sample`` solves the families' inverse problems from files: ∞-Diff inpainting and
super-resolution, INFD box guidance (tests/models/test_infd_latent.py), with clear errors."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.cli import main
from rezdiff.data import Synthetic
from rezdiff.data.images import load_image, save_image
from rezdiff.memory import estimate_memory, peak_bytes
from tests.helpers import REPO, TINY_DDPM, checkout_env, untrained_checkpoint

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
    common = [
        "sample",
        "--ckpt_path",
        str(autoencoder),
        "--inpaint",
        f"[{inputs[0]},{inputs[1]}]",
        "--steps",
        "4",
    ]
    guided = main([*common, "--hole", "[-0.5,-0.5,0.5,0.5]", "--out", str(tmp_path / "guided")])
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
        [*common, "--hole", "[-0.5,-0.5,0.5,0.5]", "--guidance_scale", "0", "--out", str(tmp_path / "free")]
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
    resized = main(
        [*common, "--hole", "[-0.5,-0.5,0.5,0.5]", "--resolution", "24", "--out", str(tmp_path / "r")]
    )
    assert load_image(resized[0]).shape == (3, 24, 24)


def test_super_resolve_from_files_and_errors(autoencoder: Path, tmp_path: Path) -> None:
    [low] = _images(tmp_path, num=1, resolution=8)
    written = main(
        ["sample", "--ckpt_path", str(autoencoder), "--super_resolve", str(low), "--resolution", "[16,24x32]"]
        + ["--steps", "3", "--out", str(tmp_path / "sr")]
    )
    assert sorted(p.relative_to(tmp_path / "sr").as_posix() for p in written) == [
        "16x16/photo0.png",
        "24x32/photo0.png",
        "grid_16x16.png",
        "grid_24x32.png",
    ]
    assert load_image(written[2]).shape == (3, 24, 32)
    with pytest.raises(SystemExit, match="--inpaint needs --mask IMAGE or --hole"):
        main(["sample", "--ckpt_path", str(autoencoder), "--inpaint", str(low)])
    with pytest.raises(SystemExit, match="--super_resolve needs --resolution"):
        main(["sample", "--ckpt_path", str(autoencoder), "--super_resolve", str(low)])
    with pytest.raises(SystemExit, match="does not support --guide"):
        main(["sample", "--ckpt_path", str(autoencoder), "--guide", "box=0,0,1,1,loss=color,mean=1,1,1"])


def test_inverse_problems_name_the_model_they_need(
    tmp_path: Path, fit_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_tiny("--trainer.max_epochs", "1")  # a DDPM
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    [image] = _images(tmp_path, num=1)
    # --spacing reaches the model's sampler (and is left to the model's setting without it)
    seen = []
    original = rezdiff.models.DDPM.sample

    @functools.wraps(original)  # rezdiff sample reads the family's options from this signature
    def spy(self, *args, spacing=None, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(spacing)
        return original(self, *args, spacing=spacing, **kwargs)

    monkeypatch.setattr(rezdiff.models.DDPM, "sample", spy)
    for extra in (["--spacing", "leading"], []):
        main(
            [
                "sample",
                "--ckpt_path",
                ckpt,
                "--num",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "s"),
                *extra,
            ]
        )
    assert seen == ["leading", None]
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="need an ∞-Diff checkpoint, got DDPM"):
        main(["sample", "--ckpt_path", ckpt, "--inpaint", str(image), "--hole", "[0,0,1,1]"])
    assert isinstance(rezdiff.load(ckpt), rezdiff.models.DDPM)
    fit_tiny(
        "--trainer.max_epochs", "1", "--trainer.callbacks", "[]", config=TINY_CONFIG, root=tmp_path / "u"
    )
    unconditional = str(tmp_path / "u" / "checkpoints" / "last.ckpt")  # an ∞-Diff without an encoder
    with pytest.raises(SystemExit, match="needs an InftyDiff diffusion autoencoder"):
        main(["sample", "--ckpt_path", unconditional, "--super_resolve", str(image), "--resolution", "32"])


# ------------------------------------------------------------------------------ guards and messages
@pytest.fixture(scope="module")
def ddpm_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny DDPM (16², a U-Net with two levels: sizes must be even)."""
    return untrained_checkpoint(TINY_DDPM, tmp_path_factory.mktemp("ddpm") / "ddpm.ckpt")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--num", "0"], "--num: must be a positive integer (>= 1), got 0"),
        (["--batch_size", "0"], "--batch_size: must be a positive integer (>= 1), got 0"),
        (["--steps", "0"], "--steps: must be a positive integer (>= 1), got 0"),
        (["--resolution", "-8"], "--resolution: sizes must be positive integers (>= 1), got '-8'"),
        (["--resolution", "[16,16x0]"], "--resolution: sizes must be positive integers (>= 1), got '16x0'"),
        (["--num", "many"], "--num: expected int, got many"),
        (
            ["--resolution", "17"],
            "DDPM: this U-Net halves the resolution 1 times, so height and width must be",
        ),
        (
            ["--spacing", "sideways"],
            "--spacing: expected one of leading, trailing, linspace or null, got sideways",
        ),
        (["--eta", ".nan"], "--eta: must be a finite number, got nan"),
        (["--eta", "fast"], "--eta: expected float or null, got fast"),
        (
            ["--tile", "8"],
            "unrecognized arguments: --tile 8 (DDPM accepts the sampler settings --sampler --eta",
        ),
        (["--ckpt_path", "missing.ckpt"], "--ckpt_path"),
        (["--inpaint", "a.png", "--guide", "box=0,0,1,1,loss=color,mean=1,1,1"], "--inpaint and --guide are"),
        (["--no_such_option", "1"], "unrecognized arguments: --no_such_option 1"),
    ],
    ids=[
        "num",
        "batch_size",
        "steps",
        "negative",
        "zero",
        "not-int",
        "odd",
        "choice",
        "nan",
        "not-float",
        "other-family",
        "ckpt",
        "exclusive",
        "unknown",
    ],  # fmt: skip
)
def test_user_errors_are_one_line_naming_the_option(
    ddpm_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    args = ["sample", "--ckpt_path", str(ddpm_ckpt), "--num", "1", "--steps", "1", "--out", str(tmp_path)]
    args += extra
    if extra[0] == "--ckpt_path":
        args = ["sample", "--ckpt_path", str(tmp_path / "missing.ckpt")]
        expected = f"--ckpt_path: no checkpoint at {tmp_path / 'missing.ckpt'}"
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rezdiff sample: error: ") and expected in lines[0], lines
    assert not list(tmp_path.glob("*/*.png")), "nothing is written after an error"


def test_no_traceback_from_the_console(ddpm_ckpt: Path, tmp_path: Path) -> None:
    """The console command (not only ``main``) ends a user error with one line and exit status 2; an old
    spelling adds one warning line."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rezdiff",
            "sample",
            "--ckpt_path",
            str(ddpm_ckpt),
            "--resolution",
            "15",
            "--num",
            "1",
        ]
        + ["--steps", "1", "--out", str(tmp_path), "--batch-size", "1"],  # one old spelling
        capture_output=True,
        text=True,
        timeout=300,
        env=checkout_env(),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("rezdiff sample: error: DDPM: this U-Net"), lines
    # the old spelling's FutureWarning is one line (no code line after it), right before the error
    assert [line for line in lines if "FutureWarning" in line] == [lines[-2]], lines
    assert "--batch-size is now --batch_size" in lines[-2], lines


def test_help_lists_the_checkpoints_settings(ddpm_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    plain = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt_path", str(ddpm_ckpt), "--help"])
    family = capsys.readouterr().out
    assert "--eps_after_clip EPS_AFTER_CLIP" in family and "--eps_after_clip" not in plain
    assert "Literal['network', 'from_x0']" in family  # the choices: the Literal of DDPM.sample's signature
    assert "DDPM sampler settings" in family


def test_memory_estimate_matches_the_measured_peak(ddpm_ckpt: Path) -> None:
    """The probes (16², 32²) extrapolate to what a batch at 64² allocates, counted by the same tracker."""
    model = rezdiff.load(ddpm_ckpt)
    settings = {"sampler": "ddim"}
    for resolution, batch in ((64, 1), (48, 3)):
        estimate = estimate_memory(model, resolution, batch, settings)
        with peak_bytes(torch.device("cpu")) as peak:
            model.sample(batch, resolution, steps=1, generator=torch.Generator().manual_seed(0), **settings)
        assert estimate.bytes == pytest.approx(peak[0], rel=0.05), (resolution, batch)


def test_memory_guard_refuses_unless_forced(
    ddpm_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("rezdiff.sample.free_memory", lambda device: 1_000_000)  # 1 MB free
    args = ["sample", "--ckpt_path", str(ddpm_ckpt), "--num", "2", "--steps", "1", "--out", str(tmp_path)]
    refused = r"--resolution 64x64 with --batch_size 2: estimated \d+\.\d MB \(about .* per step\), but "
    with pytest.raises(SystemExit, match=refused + r"cpu has 1\.0 MB free") as info:
        main([*args, "--resolution", "[16,64]"])
    assert info.value.code == 2 and "pass --force" in str(info.value) and "--tile" not in str(info.value)
    capsys.readouterr()
    assert main([*args, "--resolution", "16", "--batch_size", "1"])  # 16² x 1 fits in 1 MB
    written = main([*args, "--resolution", "64", "--force"])
    assert load_image(written[0]).shape == (3, 64, 64)


def test_memory_guard_estimates_one_image_with_batch_invariant(
    ddpm_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--batch_invariant samples one image per call: the guard must weigh one image, not --batch_size."""
    model = rezdiff.load(ddpm_ckpt)
    one, four = (estimate_memory(model, 32, batch, {}).bytes for batch in (1, 4))
    monkeypatch.setattr("rezdiff.sample.free_memory", lambda device: (one + four) // 2)
    args = ["sample", "--ckpt_path", str(ddpm_ckpt), "--num", "4", "--batch_size", "4", "--steps", "1"]
    args += ["--resolution", "32", "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"--resolution 32x32 with --batch_size 4: estimated"):
        main(args)
    capsys.readouterr()
    assert len(main([*args, "--batch_invariant"])) == 4 + 1  # four images and their grid
    monkeypatch.setattr("rezdiff.sample.free_memory", lambda device: one // 2)
    one_at_a_time = r"--batch_invariant \(one image at a time\)"
    refused = rf"--resolution 32x32 with {one_at_a_time}: estimated .*; lower --resolution,"
    with pytest.raises(SystemExit, match=refused):
        main([*args, "--batch_invariant"])
