"""MultilevelSDE: it learns, samples at several resolutions with each sampler, trains coarse-to-fine by a
schedule that survives resume (tests/test_contract.py), runs from the CLI, and fails clearly on
misconfiguration."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.callbacks import ResolutionSchedule
from rezdiff.cli import main
from rezdiff.data import FieldBatch, Levels, RandomPixels, Synthetic, fourier_resize
from rezdiff.models import MultilevelSDE
from rezdiff.models.multilevel import build_covariance, covariance_spec
from rezdiff.models.multilevel.priors import (
    AuthorsFNOPrior,
    CombinedCovariance,
    InverseLaplacian,
    Matern,
    WhiteNoise,
)
from rezdiff.models.optimization import class_spec
from tests.helpers import REPO, loss_before_and_after, synthetic_batch

TINY_MULTILEVEL = REPO / "tests" / "configs" / "tiny_multilevel.yaml"
TINY = dict(channels=3, modes=6, width=16, n_layers=2, projection=32, time_embedding=32, sample_steps=4)


def scalars(root: Path, tag: str) -> list[float]:
    """Values of one logged scalar, in step order, from the newest TensorBoard file of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    newest = max(root.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    events = EventAccumulator(str(newest))
    events.Reload()
    return [event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


@pytest.mark.parametrize("network", ["fno", "unet"])
def test_training_lowers_the_loss(network: str) -> None:
    torch.manual_seed(0)
    unet = dict(unet=dict(block_out_channels=(16, 32), norm_num_groups=8)) if network == "unet" else {}
    model = MultilevelSDE(
        **TINY,
        **unet,
        network=network,
        optimizer=class_spec("torch.optim.AdamW", lr=3e-3),
        ema={"decay": 0.0},
    )
    before, after = loss_before_and_after(model, synthetic_batch(8, 32), 40)
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("sampler", ["sde", "ode_euler", "ode_heun"])
def test_samples_at_several_resolutions(sampler: str) -> None:
    model = MultilevelSDE(**TINY, prior=InverseLaplacian(scale=2.0), sampler=sampler)
    for resolution in (16, 32, (24, 48)):
        images = model.sample(2, resolution, generator=torch.Generator().manual_seed(0))
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        assert images.shape == (2, 3, height, width) and images.abs().max() <= 1
        assert images.std() > 0.05  # not a constant image
    first = model.sample(1, 16, steps=3, generator=torch.Generator().manual_seed(1))
    again = model.sample(1, 16, steps=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert model.training


def test_samplers_differ_and_heun_calls_the_network_twice_per_step() -> None:
    model = MultilevelSDE(**TINY, ema={"decay": 0.0}, denoise_final=False)
    calls = []
    forward = model.network.forward
    model.network.forward = lambda x, t: calls.append(x.shape[-1]) or forward(x, t)  # type: ignore[method-assign]
    out = {}
    for sampler in ("sde", "ode_euler", "ode_heun"):
        calls.clear()
        out[sampler] = model.sample(
            1, 32, steps=5, sampler=sampler, generator=torch.Generator().manual_seed(0)
        )
        assert calls == [32] * (10 if sampler == "ode_heun" else 5)
    assert (out["sde"] - out["ode_euler"]).abs().max() > 1e-3
    assert (out["ode_heun"] - out["ode_euler"]).abs().max() > 1e-4


def test_train_resolution_downsamples_the_batch() -> None:
    model = MultilevelSDE(**TINY, ema={"decay": 0.0})
    sizes = []
    forward = model.network.forward
    model.network.forward = lambda x, t: sizes.append(x.shape[-1]) or forward(x, t)  # type: ignore[method-assign]
    batch = synthetic_batch(2, 32)
    model.loss(batch, torch.Generator().manual_seed(0))
    model.train_resolution = 16
    model.loss(batch, torch.Generator().manual_seed(0))
    model.loss(batch, torch.Generator().manual_seed(0), resolution=32)
    assert sizes == [32, 16, 32]
    model.train_resolution = 64
    with pytest.raises(ValueError, match="finest resolution"):
        model.loss(batch, torch.Generator().manual_seed(0))


def test_train_resolution_resizes_only_a_batch_of_another_size_and_refuses_non_square_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A square batch already at ``train_resolution`` is used as it is (no resize); a non-square batch is
    refused when it must be resized (its height is the level, its width is not)."""
    import rezdiff.models.multilevel.module as multilevel_module

    resized: list[int] = []
    real = multilevel_module.fourier_resize
    monkeypatch.setattr(
        multilevel_module,
        "fourier_resize",
        lambda x, size, boundary: resized.append(size) or real(x, size, boundary),
    )
    model = MultilevelSDE(**TINY, ema={"decay": 0.0})
    model.train_resolution = 16  # as ResolutionSchedule sets it
    model.loss(synthetic_batch(2, 16), torch.Generator().manual_seed(0))
    model.loss(synthetic_batch(2, 32), torch.Generator().manual_seed(0))
    assert resized == [16]  # the 32² batch only
    for height, width in ((16, 8), (8, 32)):  # larger than the level; smaller than it but not square
        batch = FieldBatch(image=torch.zeros(2, 3, height, width))
        with pytest.raises(ValueError, match=rf"cannot train at 16x16 on \({height}, {width}\) data"):
            model.loss(batch, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("height, width", [(16, 15), (15, 16)])
def test_loss_refuses_an_odd_grid_in_either_dimension(height: int, width: int) -> None:
    """With no level to resize to, the batch's own grid goes to the FNO: an odd height or width (even a
    non-square one whose other side is even) is the one-line even-size error, not a silent run."""
    model = MultilevelSDE(**TINY, ema={"decay": 0.0})
    batch = FieldBatch(image=torch.zeros(2, 3, height, width))
    with pytest.raises(ValueError, match=rf"the FNO needs even grid sizes, got {height}x{width}"):
        model.loss(batch, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("boundary", ["periodic", "reflect"])
def test_coarse_levels_are_resized_in_the_prior_basis(boundary: str) -> None:
    """With a tiny beta the forward marginal is x_0 to 1e-6, so the network's input is the coarse data:
    it must be ``fourier_resize`` with the prior's boundary (reflect was once silently periodic)."""
    model = MultilevelSDE(
        **TINY, prior=Matern(boundary=boundary), beta_min=1e-12, beta_max=1e-12, ema={"decay": 0.0}
    )
    inputs = []
    forward = model.network.forward
    model.network.forward = lambda x, t: inputs.append(x) or forward(x, t)  # type: ignore[method-assign]
    batch = synthetic_batch(2, 32)
    model.train_resolution = 16
    model.loss(batch, torch.Generator().manual_seed(0))
    expected = fourier_resize(batch.image, 16, boundary)
    other = fourier_resize(batch.image, 16, "periodic" if boundary == "reflect" else "reflect")
    assert model.boundary == boundary
    torch.testing.assert_close(inputs[0], expected, atol=1e-5, rtol=0)
    assert float((inputs[0] - other).abs().max()) > 0.05


def test_levels_boundary_must_match_the_prior(fit_tiny) -> None:
    model = MultilevelSDE(**TINY, prior=Matern(boundary="reflect"))
    model.check_levels(Levels([16, 32], boundary="reflect"))
    with pytest.raises(ValueError, match=r"Levels\(boundary='periodic'\) disagrees with the prior's"):
        model.check_levels(Levels([16, 32]))
    # through the CLI: the same check as one line
    with pytest.raises(
        SystemExit, match=r"^rezdiff fit: error: Levels\(boundary='reflect'\) disagrees.*periodic"
    ):
        fit_tiny("--data.init_args.view.init_args.boundary", "reflect", config=TINY_MULTILEVEL)


def test_the_schedule_is_a_function_of_the_counter() -> None:
    schedule = ResolutionSchedule([[0, 32], [50, 64]])
    assert [schedule.resolution_at(epoch, 0) for epoch in (0, 49, 50, 1000)] == [32, 32, 64, 64]
    by_step = ResolutionSchedule([[0, 16], [10, 32], [20, 64]], unit="step")
    assert [by_step.resolution_at(99, step) for step in (0, 9, 10, 19, 20)] == [16, 16, 32, 32, 64]
    with pytest.raises(ValueError, match="start at 0"):
        ResolutionSchedule([[5, 32]])
    with pytest.raises(ValueError, match="increase strictly"):
        ResolutionSchedule([[0, 32], [0, 64]])


def test_clear_errors_for_bad_sizes_samplers_and_schedules(fit_tiny) -> None:
    model = MultilevelSDE(**TINY)
    with pytest.raises(ValueError, match="even grid sizes.*neuraloperator"):
        model.sample(1, 33)
    with pytest.raises(ValueError, match="even grid sizes"):
        MultilevelSDE(**TINY, image_size=31)
    dataset = Synthetic(num_images=2, resolution=16)
    points = FieldBatch.collate([RandomPixels(16, 0.5)(dataset, i) for i in range(2)])
    with pytest.raises(ValueError, match="view: Levels"):
        model.loss(points, torch.Generator())
    with pytest.raises(ValueError, match="3 channels"):
        model.loss(FieldBatch(image=torch.zeros(2, 1, 16, 16)), torch.Generator())
    with pytest.raises(ValueError, match="unknown sampler"):
        MultilevelSDE(**TINY, sampler="ddim")  # type: ignore[arg-type]
    full_grid = [
        "--data.init_args.view",
        '{"class_path": "rezdiff.data.FullGrid", "init_args": {"resolution": 32}}',
    ]
    with pytest.raises(SystemExit, match="^rezdiff fit: error: .*view to be rezdiff.data.Levels"):
        fit_tiny(*full_grid, config=TINY_MULTILEVEL)
    with pytest.raises(SystemExit, match=r"^rezdiff fit: error: .*resolutions \[64\] are not levels"):
        fit_tiny(
            "--trainer.callbacks+=ResolutionSchedule",
            "--trainer.callbacks.milestones",
            "[[0, 64]]",
            config=TINY_MULTILEVEL,
        )


def test_priors_round_trip_through_plain_specs() -> None:
    for prior in (Matern(tau=100.0), InverseLaplacian(power=0.6) + WhiteNoise(scale=0.01)):
        spec = covariance_spec(prior)
        assert build_covariance(spec) == prior
        assert (
            build_covariance(
                {"class_path": spec["class_path"].rpartition(".")[2], "init_args": spec["init_args"]}
            )
            == prior
        )
        model = MultilevelSDE(**TINY, prior=spec)
        assert model.prior == prior and model.hparams["prior"] == spec
    with pytest.raises(ValueError, match="not a rezdiff.models.multilevel.priors.Covariance"):
        build_covariance({"class_path": "torch.nn.Linear"})


def test_a_prior_spec_never_imports_a_module_outside_rezdiff() -> None:
    """A checkpoint's prior spec names a class; only rezdiff's modules, or one already imported, may be
    imported for it (the rule of ``rezdiff.classpaths``): importing ``this`` would run its code."""
    sys.modules.pop("this", None)
    with pytest.raises(ValueError, match=r"^prior class_path 'this.Prior': import this first"):
        build_covariance({"class_path": "this.Prior", "init_args": {}})
    assert "this" not in sys.modules
    with pytest.raises(ValueError, match=r"'rezdiff.core.nothing.Prior' cannot be imported"):
        build_covariance({"class_path": "rezdiff.core.nothing.Prior"})
    own = {"class_path": f"{__name__}.ScaledWhite", "init_args": {"scale": 0.5}}
    assert build_covariance(own) == ScaledWhite(scale=0.5)  # the user's module is imported: allowed


@dataclasses.dataclass(frozen=True)
class ScaledWhite(WhiteNoise):
    """A user's own prior, defined in an imported module."""


def test_cli_fit_with_levels_then_load_and_sample(tmp_path: Path, fit_tiny) -> None:
    root = tmp_path / "run"
    fit_tiny(root=root, config=TINY_MULTILEVEL)
    assert scalars(root, "train/resolution") == [16.0, 32.0]  # epoch 0 at 16², epoch 1 at 32²
    assert len(scalars(root, "val/loss_16")) == 2 and len(scalars(root, "val/loss_32")) == 2
    assert scalars(root, "val/loss") == scalars(root, "val/loss_32")
    assert {p.name.rsplit("=", 1)[1] for p in (root / "samples").glob("*.png")} == {"32.png", "64.png"}
    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    assert isinstance(model, MultilevelSDE) and model.prior == InverseLaplacian(scale=2.0)
    for sampler in ("sde", "ode_heun"):
        assert model.sample(2, 64, steps=3, sampler=sampler).shape == (2, 1, 64, 64)
    written = main(
        ["sample", "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), "--resolution", "[32,128]"]
        + ["--num", "2", "--steps", "2", "--out", str(tmp_path / "samples")]
    )
    assert sorted(p.name for p in written if p.name.startswith("grid")) == [
        "grid_128x128.png",
        "grid_32x32.png",
    ]


@pytest.mark.parametrize("config", ["multilevel_mnist_like", "multilevel_warmstart"])
def test_paper_configs_train_on_an_image_folder(config: str, tmp_path: Path) -> None:
    """The paper-scale configs run as written on a folder of digit PNGs (a few steps, small batch, no grids);
    the warm-start one crosses its 32² → 64² milestone."""
    from sklearn.datasets import load_digits

    from rezdiff.data.images import resize, save_image

    folder = tmp_path / "digits"
    digits = torch.from_numpy(load_digits().images[:24]).float() / 8.0 - 1.0
    for i, digit in enumerate(resize(digits[:, None], 28, "bicubic").clamp(-1, 1)):
        save_image(digit, folder / f"{i:03d}.png")
    schedule = '[{"class_path": "rezdiff.callbacks.ResolutionSchedule", "init_args": {"milestones": [[0, 32], [2, 64]], "unit": "step"}}]'  # noqa: E501
    callbacks = schedule if config == "multilevel_warmstart" else "[]"
    root = tmp_path / "run"
    main(
        ["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), "--trainer.default_root_dir", str(root)]
        + ["--data.init_args.dataset.init_args.root", str(folder), "--data.init_args.batch_size", "4"]
        + [
            "--data.init_args.num_workers",
            "0",
            "--trainer.max_steps",
            "4",
            "--trainer.limit_val_batches",
            "1",
        ]
        + ["--trainer.callbacks", callbacks, "--trainer.enable_progress_bar", "false"]
    )
    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    assert model.hparams["modes"] == 14 and model.hparams["width"] == 32
    if config == "multilevel_warmstart":  # the authors' CombinedConv(k1=10, k2=10, scale=10, scale2=0.5)
        assert model.prior == CombinedCovariance(
            (
                InverseLaplacian(scale=20 / 64, zero_mode="drop", laplacian="spectral"),
                AuthorsFNOPrior(10, 10, scale=1 / 64),
            )
        )
    else:
        assert model.prior == Matern(tau=8.0, laplacian="spectral")
    if config == "multilevel_warmstart":
        assert scalars(root, "train/resolution") == [
            48.0
        ]  # the epoch mean of two steps at 32² and two at 64²
    assert torch.isfinite(model.sample(1, 56, steps=2)).all()
