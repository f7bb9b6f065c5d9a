"""The DDPM baseline: it learns, samples at several resolutions, and uses its EMA weights."""

from __future__ import annotations

import pytest
import torch

from rezdiff.data import FieldBatch
from rezdiff.models import DDPM
from rezdiff.models.optimization import class_spec
from tests.helpers import (
    TINY_UNET,
    WildEps,
    loss_before_and_after,
    move_live_weights,
    record_calls,
    record_noise_devices,
    synthetic_batch,
)

TINY = TINY_UNET


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    before, after = loss_before_and_after(
        DDPM(**TINY, optimizer=class_spec("torch.optim.AdamW", lr=2e-3), ema={"decay": 0.0}),
        synthetic_batch(16),
        40,
    )
    assert after < 0.5 * before, (before, after)


def test_sample_shapes_range_and_determinism() -> None:
    model = DDPM(**TINY)
    for resolution, shape in ((None, (2, 3, 16, 16)), (32, (2, 3, 32, 32)), ((16, 32), (2, 3, 16, 32))):
        images = model.sample(2, resolution, generator=torch.Generator().manual_seed(0))
        assert images.shape == shape and images.abs().max() <= 1
    first = model.sample(2, 16, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=5)
    again = model.sample(2, 16, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=5)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert model.training, "sample() must restore the training mode"


def test_sample_uses_ema_weights_by_default() -> None:
    model = DDPM(**TINY, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)  # the raw weights move, the EMA copy does not
    ema = model.sample(1, 16, generator=torch.Generator().manual_seed(0))
    raw = model.sample(1, 16, generator=torch.Generator().manual_seed(0), use_ema=False)
    assert not torch.allclose(ema, raw)
    model.ema.copy_to(model.network)
    torch.testing.assert_close(
        model.sample(1, 16, generator=torch.Generator().manual_seed(0), use_ema=False), ema
    )


def test_clear_errors_for_bad_sizes_and_channels() -> None:
    model = DDPM(**TINY)
    with pytest.raises(ValueError, match="divisible by 2"):
        model.sample(1, 15)
    with pytest.raises(ValueError, match="divisible by 2"):
        DDPM(**{**TINY, "image_size": 15})
    grey = FieldBatch(image=torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="^DDPM was built for 3 channels, the data has 1$"):
        model.loss(grey, torch.Generator())


@pytest.mark.parametrize(
    ("settings", "call", "expected"),
    [
        # model settings: DDIM, eta, clip, eps after clip, spacing, sample_steps
        (
            dict(sampler="ddim", eta=0.5, clip_denoised=True, eps_after_clip="from_x0", spacing="leading"),
            dict(),
            dict(sampler="ddim", steps=7, eta=0.5, clip=1.0, eps_after_clip="from_x0", spacing="leading"),
        ),
        # every per-call override wins over the model's settings
        (
            dict(sampler="ddpm", eta=0.5, clip_denoised=False, eps_after_clip="from_x0", spacing="leading"),
            dict(sampler="ddim", steps=4, eta=0.0, spacing="linspace", eps_after_clip="network"),
            dict(sampler="ddim", steps=4, eta=0.0, clip=None, eps_after_clip="network", spacing="linspace"),
        ),
        # ancestral sampling over a strided subsequence, and over every step when steps is None
        (
            dict(sampler="ddpm", clip_denoised=True, spacing="leading"),
            dict(steps=5),
            dict(sampler="ddpm", steps=5, clip=1.0, spacing="leading"),
        ),
        (dict(sampler="ddpm", clip_denoised=False), dict(), dict(sampler="ddpm", steps=None, clip=None)),
    ],
)
def test_sample_is_the_core_sampler_with_the_models_settings(settings, call, expected) -> None:
    """DDPM.sample == core.ddim_sample / ddpm_sample run with the documented arguments, then clamped."""
    from rezdiff.core.gaussian import randn
    from rezdiff.core.loops import ddim_sample, ddpm_sample
    from rezdiff.core.schedules import timestep_subsequence

    model = DDPM(**{**TINY, "sample_steps": 7, **settings})
    model.network, model.ema = WildEps(), None
    images = model.sample(2, 16, generator=torch.Generator().manual_seed(3), **call)

    generator = torch.Generator().manual_seed(3)
    x_T = randn((2, 3, 16, 16), generator)
    steps, acp = expected["steps"], model.alphas_cumprod
    timesteps = (
        None if steps is None else timestep_subsequence(100, steps, expected.get("spacing", "trailing"))
    )
    if expected["sampler"] == "ddim":
        raw = ddim_sample(
            WildEps(), x_T, acp, timesteps, eta=expected["eta"], generator=generator,
            clip_x0=expected["clip"], eps_after_clip=expected["eps_after_clip"],
        )  # fmt: skip
    else:
        raw = ddpm_sample(
            WildEps(), x_T, acp, generator=generator, clip_x0=expected["clip"], timesteps=timesteps
        )
    torch.testing.assert_close(images, raw.clamp(-1, 1), rtol=0, atol=1e-6)
    if expected["clip"] is None:
        assert raw.abs().max() > 1.5  # the final clamp is observable


def test_sample_records_no_graph_and_restores_grad_mode() -> None:
    model = DDPM(**TINY)
    images = model.sample(1, 16, steps=2, generator=torch.Generator().manual_seed(0), use_ema=False)
    assert not images.requires_grad and torch.is_grad_enabled()


def test_sample_draws_its_noise_on_the_models_device_and_is_silent_by_default(monkeypatch, capsys) -> None:
    """The starting noise goes to ``self.device`` (a CUDA model samples on CUDA); no progress bar unasked."""
    import rezdiff.models.ddpm.module as ddpm_module

    devices = record_noise_devices(monkeypatch, ddpm_module)
    model = DDPM(**TINY)
    model.sample(1, 16, steps=1, generator=torch.Generator().manual_seed(0))
    assert devices == [model.device] and capsys.readouterr().err == ""
    model.sample(1, 16, steps=1, generator=torch.Generator().manual_seed(0), progress=True)
    assert "DDIM" in capsys.readouterr().err
    model.sample(1, 16, steps=1, generator=torch.Generator().manual_seed(0), sampler="ddpm", progress=True)
    assert "DDPM" in capsys.readouterr().err


def test_seeds_give_each_image_its_own_generator() -> None:
    """``seeds=[s_k]`` is one generator per image: image k equals the image drawn with seed s_k alone, and
    the same as passing those generators; a wrong count is named."""
    model = DDPM(**TINY)
    by_seed = model.sample(2, 16, seeds=[5, 6])
    generators = model.sample(2, 16, generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
    torch.testing.assert_close(by_seed, generators, rtol=0, atol=0)
    torch.testing.assert_close(by_seed[1:], model.sample(1, 16, seeds=[6]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="got 3 seeds for 2 samples"):
        model.sample(2, 16, seeds=[1, 2, 3])


def test_loss_draws_everything_from_its_generator_for_the_datas_device(monkeypatch) -> None:
    """A seeded loss is the same whatever the global RNG holds (t and the noise both come from the
    generator), and the timesteps are asked for on the data's device (recorded: on a CPU-only machine a
    draw left on the generator's device passes every numerical test)."""
    from rezdiff.models.ddpm import module

    model = DDPM(**TINY)
    batch = synthetic_batch(2, 16)
    losses = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        losses.append(float(model.loss(batch, torch.Generator().manual_seed(3))))
    assert losses[0] == losses[1]
    calls = record_calls(monkeypatch, module, "sample_timesteps")
    model.loss(batch, torch.Generator().manual_seed(3))
    assert [kwargs.get("device") for _, kwargs in calls] == [torch.device("cpu")]


def test_sample_calls_back_at_every_step() -> None:
    model = DDPM(**TINY)
    seen: list[int] = []
    model.sample(1, 16, steps=3, callback=lambda info: seen.append(info.index))
    assert seen == [0, 1, 2]
