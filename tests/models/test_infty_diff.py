"""∞-Diff family: it learns on pixel subsets and samples at 1x and 2x (its CLI round trip:
tests/test_contract.py); the diffusion autoencoder and its latent stage train and reload from their
checkpoints alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.data import FieldBatch, FullGrid, RandomPixels, Synthetic
from rezdiff.models import InftyDiff, InftyDiffLatent
from rezdiff.models.base import step_generator
from rezdiff.models.infty_diff import module
from rezdiff.models.optimization import class_spec
from tests.helpers import (
    REPO,
    TINY_INFTY_DIFF,
    loss_before_and_after,
    move_live_weights,
    record_calls,
    to_recorder,
)

TINY_CONFIG = REPO / "tests" / "configs" / "tiny_infty_diff.yaml"
TINY_LATENT_CONFIG = REPO / "tests" / "configs" / "tiny_infty_diff_latent.yaml"
TINY = TINY_INFTY_DIFF
pytestmark = pytest.mark.usefixtures("single_thread")


def pixel_batch(num: int, fraction: float = 0.25, resolution: int = 16) -> FieldBatch:
    dataset, view = Synthetic(num_images=num, resolution=resolution), RandomPixels(resolution, fraction)
    return FieldBatch.collate([view(dataset, i, torch.Generator().manual_seed(i)) for i in range(num)])


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = InftyDiff(**TINY, optimizer=class_spec("torch.optim.AdamW", lr=3e-3), ema={"decay": 0.0})
    before, after = loss_before_and_after(model, pixel_batch(16), 40)
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("fraction", [1 / 4, 1 / 8, 1 / 16])
def test_subsampling_rates_train(fraction: float) -> None:
    """The paper's rates: the loss is read at exactly the batch's pixels and every parameter gets a
    gradient, also in the autoencoder (whose encoder draws its own subset of the same size)."""
    model = InftyDiff(**TINY, latent_dim=8, ema={"decay": 0.0})
    batch = pixel_batch(4, fraction)
    assert batch.index.shape == (4, int(256 * fraction))
    loss = model.loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.network.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_sampling_at_one_and_two_times_the_training_resolution() -> None:
    model = InftyDiff(**TINY)
    for resolution, shape in ((None, (2, 3, 16, 16)), (32, (2, 3, 32, 32)), ((16, 32), (2, 3, 16, 32))):
        images = model.sample(2, resolution, generator=torch.Generator().manual_seed(0))
        assert images.shape == shape and torch.isfinite(images).all() and images.abs().max() <= 1
    first = model.sample(1, 16, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=5)
    again = model.sample(1, 16, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=5)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    mollified = model.sample(1, 16, generator=torch.Generator().manual_seed(1), deblur=False, eta=1.0)
    assert mollified.shape == (1, 3, 16, 16) and model.training


def test_sampling_below_the_training_resolution_starts_from_the_folded_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At R = R0 / 2 the sampler starts from the point values of the same noise field (the folded operator),
    the blur is half a pixel wide and the kernels shrink to 3."""
    model = InftyDiff(**TINY)
    starts = []
    initial_state = module.mollified_initial_state

    def spy(shape, mollifier, factor, generator=None, device=None, dtype=torch.float32):  # type: ignore[no-untyped-def]
        before = generator.get_state()
        x_T = initial_state(shape, mollifier, factor, generator, device, dtype)
        starts.append((mollifier, factor, x_T, before))
        return x_T

    monkeypatch.setattr(module, "mollified_initial_state", spy)
    images = model.sample(2, 8, steps=2, generator=torch.Generator().manual_seed(3))
    assert images.shape == (2, 3, 8, 8) and torch.isfinite(images).all()
    ((mollifier, factor, x_T, before),) = starts
    assert factor == 0.5 and mollifier.std == 0.5
    replay = torch.Generator()
    replay.set_state(before)
    white = torch.randn(x_T.shape, generator=replay)
    torch.testing.assert_close(x_T, mollifier.noise(white, 0.5))
    assert model.network.denoiser.kernel_size_for(factor) == 3


def test_latent_conditioning_option_and_checkpoint_mismatch() -> None:
    """``latent_conditioning`` reaches the network and the hyperparameters; weights of the other form are
    refused with the fix named."""
    authors = InftyDiff(**TINY, latent_dim=8)
    embedded = InftyDiff(**TINY, latent_dim=8, latent_conditioning="embedding")
    assert authors.hparams.latent_conditioning == "scale" and authors.network.denoiser.unet.latent_dim == 8
    assert embedded.hparams.latent_conditioning == "embedding"
    assert embedded.network.denoiser.latent_embedding is not None
    with pytest.raises(ValueError, match="latent_conditioning='embedding'"):
        authors.load_state_dict(embedded.state_dict())
    with pytest.raises(ValueError, match="latent_conditioning='scale'"):
        embedded.load_state_dict(authors.state_dict())
    with pytest.raises(ValueError, match="latent_conditioning"):
        InftyDiff(**TINY, latent_dim=8, latent_conditioning="sum")  # type: ignore[arg-type]


def test_kernel_scale_and_mollifier_follow_the_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """At R = 2 R0 the network gets kernel_scale 2 and every pixel; the blur is 2 pixels wide there."""
    model = InftyDiff(**TINY, ema={"decay": 0.0})
    seen = []
    forward = model.network.denoiser.forward

    def spy(x, index, resolution, t, z=None, kernel_scale=1.0):  # type: ignore[no-untyped-def]
        seen.append((tuple(resolution), index.shape[1], kernel_scale))
        return forward(x, index, resolution, t, z, kernel_scale=kernel_scale)

    monkeypatch.setattr(model.network.denoiser, "forward", spy)
    model.sample(1, 32, steps=2, use_ema=False)
    assert seen == [((32, 32), 1024, 2.0)] * 2
    mollifier, factor = model.process_at(64)
    assert factor == 4.0 and mollifier.std == 4.0


def test_autoencoder_trains_and_encodes_deterministically() -> None:
    torch.manual_seed(0)
    model = InftyDiff(
        **TINY, latent_dim=8, optimizer=class_spec("torch.optim.AdamW", lr=3e-3), ema={"decay": 0.0}
    )
    with pytest.raises(ValueError, match="pass z"):
        model.sample(2, 16)
    before, after = loss_before_and_after(model, pixel_batch(16), 30)
    assert after < 0.7 * before, (before, after)
    images = pixel_batch(3).image
    z = model.encode(images)
    torch.testing.assert_close(z, model.encode(images), rtol=0, atol=0)
    assert z.shape == (3, 8) and model.encode(torch.nn.functional.interpolate(images, 32)).shape == (3, 8)
    out = model.sample(3, 32, z=z, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 32, 32) and out.abs().max() <= 1
    # after training steps the sample grids show reconstructions of the last training images
    assert model.sample(20, 16, steps=2).shape == (20, 3, 16, 16)


def test_clear_errors() -> None:
    model = InftyDiff(**TINY)
    full = FieldBatch.collate([FullGrid(16)(Synthetic(num_images=2, resolution=16), i) for i in range(2)])
    with pytest.raises(ValueError, match="RandomPixels"):
        model.loss(full, torch.Generator())
    with pytest.raises(ValueError, match="train_resolution=16"):
        model.loss(pixel_batch(2, resolution=32), torch.Generator())
    with pytest.raises(ValueError, match="sampler"):
        model.sample(1, 16, sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sampler"):
        InftyDiff(**TINY, sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^this InftyDiff is unconditional \(latent_dim=None\); it takes no code z$"
    ):
        model.sample(1, 16, z=torch.zeros(1, 8))
    with pytest.raises(ValueError, match="encode\\(\\) needs"):
        model.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="z must be"):
        InftyDiff(**TINY, latent_dim=8).sample(1, 16, z=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="positive"):
        model.sample(1, 0)


def test_latent_stage_trains_from_a_stage1_checkpoint_and_loads_alone(tmp_path: Path, fit_tiny) -> None:
    fit_tiny("--model.init_args.latent_dim", "8", config=TINY_CONFIG, root=tmp_path / "stage1")
    stage1 = tmp_path / "stage1" / "checkpoints" / "last.ckpt"
    fit_tiny(
        "--model.init_args.stage1_ckpt", str(stage1), config=TINY_LATENT_CONFIG, root=tmp_path / "stage2"
    )
    assert any((tmp_path / "stage2" / "samples").glob("*res=32.png"))
    ckpt = tmp_path / "stage2" / "checkpoints" / "last.ckpt"
    reference = rezdiff.load(stage1)
    stage1.unlink()  # the latent checkpoint carries stage 1 itself
    model = rezdiff.load(ckpt)
    assert isinstance(model, InftyDiffLatent) and int(model.latent_count) == 2 * 32  # train split + flips
    assert not any(p.requires_grad for p in model.stage1.parameters())
    torch.testing.assert_close(  # stage 1 inside is stage 1's EMA
        dict(model.stage1.network.named_parameters())["denoiser.linear_out.weight"],
        dict(reference.ema.module.named_parameters())["denoiser.linear_out.weight"],
    )
    images = model.sample(2, 32, steps=2, latent_steps=3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    # statistics standardise the codes; the latent loss falls on standardised codes
    codes = model.standardize(model.encode(pixel_batch(32).image))
    assert codes.mean(0).abs().mean() < 0.5 and 0.5 < float(codes.std(0).mean()) < 1.5
    torch.manual_seed(0)
    fresh = InftyDiffLatent(
        str(ckpt),
        stage1=model.hparams["stage1"],
        hidden_dim=32,
        num_layers=3,
        optimizer=class_spec("torch.optim.AdamW", lr=2e-3),
        ema={"decay": 0.0},
    )
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(("network", "ema"))}
    fresh.load_state_dict(kept, strict=False)
    before, after = loss_before_and_after(fresh, pixel_batch(16), 40)
    assert after < 0.8 * before, (before, after)


def test_latent_stage_rejects_an_unconditional_stage1(tmp_path: Path, fit_tiny) -> None:
    fit_tiny("--trainer.max_epochs", "1", config=TINY_CONFIG)
    with pytest.raises(ValueError, match="diffusion autoencoder"):
        InftyDiffLatent(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))


def test_quasi_monte_carlo_pixels_are_stratified_and_train() -> None:
    """RandomPixels(points="sobol") (Table 2 ablation): distinct sorted pixels, exactly 4 in every 4x4 block
    of a 32x32 grid at 1/4 (uniform draws are not), any count on other grids, and the model trains on them."""
    dataset = Synthetic(num_images=4, resolution=32)
    blocks = {}
    for points in ("uniform", "sobol"):
        index = RandomPixels(32, 0.25, points=points)(dataset, 0, torch.Generator().manual_seed(3)).index
        assert index.unique().numel() == 256 and torch.equal(index.sort().values, index)
        blocks[points] = torch.bincount((index // 32 // 4) * 8 + index % 32 // 4, minlength=64)
    assert bool((blocks["sobol"] == 4).all()) and not bool((blocks["uniform"] == 4).all())
    odd = RandomPixels((30, 20), 0.3, points="sobol")(Synthetic(num_images=1, resolution=30), 0)
    assert odd.index.unique().numel() == 180
    with pytest.raises(ValueError, match="sobol"):
        RandomPixels(16, 0.25, points="halton")  # type: ignore[arg-type]
    view = RandomPixels(16, 0.25, points="sobol")
    batch = FieldBatch.collate([view(Synthetic(num_images=4, resolution=16), i) for i in range(4)])
    assert torch.isfinite(InftyDiff(**TINY).loss(batch, torch.Generator().manual_seed(0)))


def test_autoencoder_encode_preview_codes_and_load_state_dict_by_their_contract() -> None:
    """What the sample() and checkpoint paths of a diffusion autoencoder lean on, exactly: encode() reads
    the EMA encoder by default and names a wrong input, a sample without z uses the codes of the last
    training images cycled to the batch, and load_state_dict keeps strict and assign."""
    torch.manual_seed(0)
    model = InftyDiff(**TINY, latent_dim=8, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)  # the raw weights move, the EMA copy does not
    images = pixel_batch(3).image
    ema, raw = model.encode(images, use_ema=True), model.encode(images, use_ema=False)
    assert not torch.allclose(ema, raw)
    torch.testing.assert_close(model.encode(images), ema, rtol=0, atol=0)
    with pytest.raises(ValueError) as wrong:
        model.encode(torch.zeros(1, 1, 16, 16))  # four dimensions, one channel
    assert str(wrong.value) == "images must be [B, 3, H, W], got (1, 1, 16, 16)"
    with pytest.raises(ValueError) as unconditional:
        InftyDiff(**TINY).encode(images)
    assert str(unconditional.value) == (
        "encode() needs a diffusion autoencoder: build InftyDiff with latent_dim set"
    )
    with pytest.raises(ValueError) as no_preview:
        model.sample(2, 16)
    assert str(no_preview.value) == (
        "this InftyDiff is a diffusion autoencoder: pass z (codes from model.encode(images)), or sample "
        "unconditionally through a second stage (rezdiff.models.InftyDiffLatent)"
    )
    # two preview images cycled to five samples: codes 0, 1, 0, 1, 0 of the encoder sample() uses
    model._preview = images[:2]
    for use_ema in (True, False):
        codes = model.encode(images[:2], use_ema=use_ema)[[0, 1, 0, 1, 0]]
        torch.testing.assert_close(model._preview_codes(5, use_ema), codes, rtol=0, atol=1e-6)
        options = {"steps": 2, "use_ema": use_ema}
        torch.testing.assert_close(
            model.sample(5, 16, generator=torch.Generator().manual_seed(1), **options),
            model.sample(5, 16, generator=torch.Generator().manual_seed(1), z=codes, **options),
        )
    # load_state_dict: strict by default, strict=False and assign=True passed on
    state = model.state_dict()
    key = "network.denoiser.linear_in.weight"
    partial = {k: v for k, v in state.items() if k != key}
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(partial)
    assert model.load_state_dict(partial, strict=False).missing_keys == [key]
    fresh = {k: v.clone() for k, v in state.items()}
    model.load_state_dict(fresh, assign=True)
    assert model.state_dict()[key].data_ptr() == fresh[key].data_ptr()  # the given tensor, not a copy
    model.load_state_dict(state)
    assert model.state_dict()[key].data_ptr() == fresh[key].data_ptr() != state[key].data_ptr()


def test_encoder_pixels_are_drawn_from_the_loss_generator_on_its_device() -> None:
    """The autoencoder's loss reads the encoder's own random pixels: drawn from the loss's generator (so
    a seeded loss is reproducible whatever the global RNG does), on the generator's device, then moved to
    the data's. A meta default device stands in for a GPU: a draw that ignores the generator's device
    lands there and cannot be read back."""
    g = torch.Generator().manual_seed(3)
    expected = torch.rand((2, 16), generator=g).argsort(dim=1)[:, :5].sort(dim=1).values
    with torch.device("meta"):
        index = module._random_pixels(2, 16, 5, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(index, expected)
    assert module._random_pixels(2, 16, 5, g, torch.device("meta")).device.type == "meta"
    every = module._all_pixels(2, 3, 4, torch.device("meta"))  # every flat index, made on the given device
    assert every.device.type == "meta" and every.shape == (2, 12)
    assert torch.equal(module._all_pixels(2, 3, 4, torch.device("cpu")), torch.arange(12).expand(2, -1))
    model = InftyDiff(**TINY, latent_dim=8)
    batch = pixel_batch(2)
    losses = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        losses.append(model.loss(batch, torch.Generator().manual_seed(5)))
    assert losses[0] == losses[1]
    full = FieldBatch.collate([FullGrid(16)(Synthetic(num_images=2, resolution=16), i) for i in range(2)])
    with pytest.raises(ValueError) as error:
        model.loss(full, torch.Generator())
    assert str(error.value) == (
        "InftyDiff needs batch fields ['index'], which this data view does not provide; configure the data "
        "module with `view: RandomPixels` (e.g. --data.init_args.view.class_path rezdiff.data.RandomPixels)"
    )


def test_loss_draws_its_timesteps_for_the_datas_device_and_names_a_channel_mismatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU the timesteps index the schedule on the data's device: the loss must ask for that device
    (on this CPU-only machine a draw left on the generator's device would pass every numerical test)."""
    calls = record_calls(monkeypatch, module, "sample_timesteps")
    model = InftyDiff(**TINY)
    model.loss(pixel_batch(2), torch.Generator().manual_seed(0))
    assert [kwargs.get("device") for _, kwargs in calls] == [torch.device("cpu")]
    grey = pixel_batch(2)
    grey.image = grey.image[:, :1]
    with pytest.raises(ValueError) as error:
        model.loss(grey, torch.Generator())
    assert str(error.value) == "InftyDiff was built for 3 channels, the data has 1"


def test_encode_and_the_autoencoder_loss_place_their_pixels_on_the_models_device_and_scale_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU the images, the pixel indices of encode() and the encoder's own pixels in the loss must be
    on the model's (data's) device: the calls are recorded, since on a CPU-only machine a slip passes every
    numerical test. And encode() at 2x the training grid scales the encoder's kernels by 2."""
    model = InftyDiff(**TINY, latent_dim=8)
    devices: dict[str, list[object]] = {"all": [], "random": [], "images": []}
    scales: list[object] = []
    real_all, real_random = module._all_pixels, module._random_pixels

    def all_pixels(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        devices["all"].append(device)
        return real_all(batch, height, width, device)

    def random_pixels(batch: int, total: int, count: int, generator, device) -> torch.Tensor:
        devices["random"].append(device)
        return real_random(batch, total, count, generator, device)

    Images = to_recorder(devices["images"])

    encoder_class = type(model.network.encoder)
    real_forward = encoder_class.forward

    def forward(self, *args, **kwargs) -> torch.Tensor:
        scales.append(kwargs.get("kernel_scale"))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(module, "_all_pixels", all_pixels)
    monkeypatch.setattr(module, "_random_pixels", random_pixels)
    monkeypatch.setattr(encoder_class, "forward", forward)
    images = pixel_batch(2).image
    model.encode(images.as_subclass(Images))
    model.encode(torch.nn.functional.interpolate(images, 32))
    model.loss(pixel_batch(2), torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    assert devices == {"all": [cpu, cpu], "random": [cpu], "images": [(cpu,)]}
    assert scales[:2] == [1.0, 2.0]


def test_encode_known_is_the_code_of_the_pixels_known_in_every_channel() -> None:
    """What inpainting conditions on: a shared mask encodes the batch once with its known pixels; masks
    with different counts encode image by image; a pixel is known only where every channel of the mask is
    set; EMA weights unless asked otherwise; an image with no known pixel is named."""
    torch.manual_seed(0)
    model = InftyDiff(**TINY, latent_dim=8, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)
    images = pixel_batch(3).image
    shared = torch.zeros(1, 1, 16, 16)
    shared[..., 2:9, 3:12] = 1
    known = shared.flatten(1)[0].nonzero().view(1, -1).expand(3, -1)
    for use_ema in (True, False):
        torch.testing.assert_close(
            model.encode_known(images, shared, use_ema=use_ema),
            model.encode(images, index=known, use_ema=use_ema),
            rtol=0,
            atol=0,
        )
    torch.testing.assert_close(model.encode_known(images, shared), model.encode(images, index=known))
    pair = model.encode(images[:2], index=known[:2])  # a batch size other than the channel count
    torch.testing.assert_close(model.encode_known(images[:2], shared), pair, rtol=0, atol=0)
    one = model.encode(images[:1], index=known[:1])  # a single image
    torch.testing.assert_close(model.encode_known(images[:1], shared), one, rtol=0, atol=0)
    masks = torch.zeros(4, 3, 16, 16)  # four images: not the channel count
    masks[0, :, :4] = 1  # 64 pixels
    masks[1, :, 5:7] = 1  # 32 pixels
    masks[2, :, :, 0:4] = 1  # 64 pixels, but channel 1 of one row of them is unset
    masks[2, 1, 0, 0:4] = 0
    masks[3, :, 9:10] = 1  # 16 pixels
    four = pixel_batch(4).image
    for use_ema in (False, True):
        expected = []
        for i in range(4):
            index = masks[i].all(dim=0).flatten().nonzero().view(1, -1)
            expected.append(model.encode(four[i : i + 1], index=index, use_ema=use_ema))
        torch.testing.assert_close(model.encode_known(four, masks, use_ema=use_ema), torch.cat(expected))
    torch.testing.assert_close(model.encode_known(four, masks), torch.cat(expected))  # EMA by default
    masks = masks[:3]
    masks[1] = 0
    with pytest.raises(ValueError) as error:
        model.encode_known(images, masks)
    assert str(error.value) == "every image needs at least one known pixel to be encoded"


def test_an_autoencoders_prediction_reconstructs_the_batch_with_the_predict_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``predict_step`` of a diffusion autoencoder samples at the batch's own resolution (32 here, twice the
    training grid) with the batch's EMA codes and the per-batch predict generator (keys seed, 3, batch
    index, rank; on the model's device, recorded), so a prediction is reproducible; an unconditional model
    samples as every family does."""
    torch.manual_seed(0)
    model = InftyDiff(**TINY, latent_dim=8, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)  # EMA and raw weights differ: the EMA encoder codes
    batch = FieldBatch.collate([FullGrid(32)(Synthetic(num_images=3, resolution=32), i) for i in range(3)])
    z = model.encode(batch.image, use_ema=True)
    expected = model.sample(3, (32, 32), generator=step_generator(0, 3, 4, 0), z=z)
    calls = record_calls(monkeypatch, module, "step_generator")
    torch.testing.assert_close(model.predict_step(batch, 4), expected, rtol=0, atol=0)
    assert [kwargs.get("device") for _, kwargs in calls] == [torch.device("cpu")]
    plain = InftyDiff(**TINY)
    expected = plain.sample(3, (32, 32), generator=step_generator(0, 3, 4, 0))
    torch.testing.assert_close(plain.predict_step(batch, 4), expected)


def test_denoiser_reads_ema_weights_checks_its_code_and_indexes_on_the_states_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``denoiser()`` (the ε-network that sample() and inpainting integrate) uses the EMA weights unless
    told otherwise, refuses a code of the wrong size when built, and indexes every pixel on the state's
    device (recorded: on a CPU-only machine a slip passes every numerical test)."""
    torch.manual_seed(0)
    model = InftyDiff(**TINY, latent_dim=8, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)
    x, t, z = torch.randn(2, 3, 16, 16), torch.tensor([3, 700]), torch.randn(2, 8)
    default, ema, raw = (
        model.denoiser(16, z=z, **k)(x, t) for k in ({}, {"use_ema": True}, {"use_ema": False})
    )
    assert torch.equal(default, ema) and not torch.allclose(ema, raw)
    with pytest.raises(ValueError) as error:
        model.denoiser(16, z=torch.zeros(2, 5))
    assert str(error.value) == "z must be [B, 8], got (2, 5)"
    calls = record_calls(monkeypatch, module, "_all_pixels")
    model.denoiser(16, z=z)(x, t)
    assert [args[3] for args, _ in calls] == [torch.device("cpu")]  # (batch, height, width, device)


class _Stop(Exception):
    """Raised by a recording stand-in once it has what it needs, to skip the reverse process."""


def test_sample_hands_the_models_settings_and_its_overrides_to_the_mollified_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``sample()`` passes to :func:`mollified_sample`: the model's clipping, ε-after-clip rule, η and
    sampler unless overridden; ``sample_steps`` timesteps for DDIM and every training step for the ancestral
    sampler unless ``steps``; the callback; codes on the model's device. Codes that are not ``[num,
    latent_dim]`` are named before anything is drawn."""
    calls: list[dict[str, object]] = []

    def recording(eps_fn, x_T, alphas_cumprod, timesteps, mollifier, factor, **kwargs):
        calls.append({"timesteps": list(timesteps), **kwargs})
        raise _Stop

    monkeypatch.setattr(module, "mollified_sample", recording)

    def settings(model: InftyDiff, **options) -> dict[str, object]:
        with pytest.raises(_Stop):
            model.sample(2, 16, **options)
        return calls.pop()

    model = InftyDiff(**TINY)
    default = settings(model)
    assert (default["clip_x0"], default["eps_after_clip"], default["eta"], default["sampler"]) == (
        1.0,
        "from_x0",
        0.0,
        "ddim",
    )
    assert len(default["timesteps"]) == model.sample_steps == 4  # TINY_INFTY_DIFF sets 4
    assert len(settings(model, sampler="ddpm")["timesteps"]) == model.num_train_steps == 100
    callback = lambda info: None  # noqa: E731
    given = settings(model, sampler="ddpm", steps=7, eta=0.4, eps_after_clip="network", callback=callback)
    assert (len(given["timesteps"]), given["eta"], given["eps_after_clip"], given["sampler"]) == (
        7,
        0.4,
        "network",
        "ddpm",
    )
    assert given["callback"] is callback
    plain = InftyDiff(**TINY, clip_denoised=False, eps_after_clip="network", eta=0.3, sampler="ddpm")
    assert [settings(plain)[k] for k in ("clip_x0", "eps_after_clip", "eta", "sampler")] == [
        None,
        "network",
        0.3,
        "ddpm",
    ]
    # codes: checked against the batch and the latent size, then moved to the model's device
    coded = InftyDiff(**TINY, latent_dim=8)
    moved: list[tuple[object, ...]] = []

    Codes = to_recorder(moved)

    settings(coded, z=torch.zeros(2, 8).as_subclass(Codes))
    assert moved == [(torch.device("cpu"),)]
    for z, message in (
        (torch.zeros(3, 8), "got 3 codes for 2 samples"),
        (torch.zeros(8), "z must be [B, 8], got (8,)"),
    ):
        with pytest.raises(ValueError) as error:
            coded.sample(2, 16, z=z)
        assert str(error.value) == message
