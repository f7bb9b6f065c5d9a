"""DVDP: it learns and samples from low-resolution noise at several resolutions (its CLI round trip:
tests/test_contract.py)."""

from __future__ import annotations

import pytest
import torch

from rezdiff.data import FieldBatch
from rezdiff.models import DVDP
from rezdiff.models.optimization import class_spec
from tests.helpers import (
    TINY_UNET,
    WildEps,
    loss_before_and_after,
    move_live_weights,
    record_noise_devices,
    synthetic_batch,
    to_recorder,
)

TINY = {**TINY_UNET, "turning_points": (50,)}


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    before, after = loss_before_and_after(
        DVDP(**TINY, optimizer=class_spec("torch.optim.AdamW", lr=2e-3), ema={"decay": 0.0}),
        synthetic_batch(16),
        30,
    )
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("process", ["dvdp", "subspace"])
def test_sample_shapes_at_two_resolutions(process: str) -> None:
    model = DVDP(**{**TINY, "turning_points": (30, 60)}, process=process)
    for resolution, shape in ((None, (2, 3, 16, 16)), (32, (2, 3, 32, 32))):
        images = model.sample(2, resolution, generator=torch.Generator().manual_seed(0))
        assert images.shape == shape and images.abs().max() <= 1
    first = model.sample(1, 16, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=5)
    again = model.sample(1, 16, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=5)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert model.training


def test_clear_errors_for_bad_sizes() -> None:
    model = DVDP(**{**TINY, "turning_points": (30, 60)})
    with pytest.raises(ValueError, match="divisible by 2\\^2"):
        model.sample(1, 18)
    with pytest.raises(ValueError, match="divisible by 2"):
        model.sample(1, 12)  # 12 / 4 = 3 is too small for the two-level U-Net
    with pytest.raises(ValueError, match="Markov|lambda_end"):
        DVDP(**TINY, lambda_end=0.99)


def test_loss_names_the_channel_mismatch() -> None:
    """The error names both channel counts (the data's is axis 1 of [B, C, H, W], not axis 2)."""
    model = DVDP(**TINY)
    with pytest.raises(ValueError, match=r"^DVDP was built for 3 channels, the data has 1$"):
        model.loss(FieldBatch(image=torch.zeros(2, 1, 16, 16)), torch.Generator().manual_seed(0))
    # the size check reads both axes of the data: a width that does not halve is named with it
    with pytest.raises(ValueError, match=r"divisible by 2\^1 = 2, got 16x15$"):
        model.loss(FieldBatch(image=torch.zeros(2, 3, 16, 15)), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"must be divisible by 2; got 8x3$"):  # the lowest stage's U-Net
        model.loss(FieldBatch(image=torch.zeros(2, 3, 16, 6)), torch.Generator().manual_seed(0))


def test_per_batch_stage_sampling_draws_one_stage() -> None:
    model = DVDP(**TINY, stage_sampling="per_batch", ema={"decay": 0.0})
    seen = set()
    calls = []
    forward = model.network.forward
    model.network.forward = lambda x, t: calls.append((x.shape[-1], t)) or forward(x, t)  # type: ignore[method-assign]
    for seed in range(6):
        calls.clear()
        model.loss(synthetic_batch(4), torch.Generator().manual_seed(seed))
        [(size, t)] = calls  # one network call per step
        stages = model.schedule.stage_of(t)
        assert stages.unique().numel() == 1 and size == 16 >> int(stages[0])
        seen.add(int(stages[0]))
    assert seen == {0, 1}


@pytest.mark.parametrize(
    ("settings", "call", "expected"),
    [
        (
            dict(sampler="ddim", eta=0.5, clip_denoised=True),
            dict(),
            dict(sampler="ddim", steps=7, eta=0.5, clip=1.0),
        ),
        (
            dict(sampler="ddpm", eta=0.5, clip_denoised=False),
            dict(sampler="ddim", steps=4, eta=0.0),
            dict(sampler="ddim", steps=4, eta=0.0, clip=None),
        ),
        (
            dict(sampler="ddpm", clip_denoised=True),
            dict(steps=5),
            dict(sampler="ddpm", steps=5, eta=0.5, clip=1.0),
        ),
        (
            dict(sampler="ddpm", clip_denoised=False, eta=0.0),
            dict(),
            dict(sampler="ddpm", steps=None, eta=0.0, clip=None),
        ),
    ],
)
def test_sample_is_the_core_sampler_with_the_models_settings(settings, call, expected) -> None:
    """DVDP.sample == core.pyramid.dvdp_sample run with the documented arguments from 4² noise, clamped."""
    from rezdiff.core.gaussian import randn
    from rezdiff.core.pyramid import dvdp_sample, sampling_timesteps

    model = DVDP(**{**TINY, "turning_points": (30, 60), "sample_steps": 7, "eta": 0.5, **settings})
    model.network, model.ema = WildEps(), None
    images = model.sample(2, 16, generator=torch.Generator().manual_seed(3), **call)

    generator = torch.Generator().manual_seed(3)
    x_T = randn((2, 3, 4, 4), generator)
    timesteps = sampling_timesteps(model.schedule, expected["steps"])
    raw = dvdp_sample(
        WildEps(), x_T, model.schedule, timesteps, sampler=expected["sampler"], eta=expected["eta"],
        clip_x0=expected["clip"], generator=generator,
    )  # fmt: skip
    assert raw.shape == images.shape
    torch.testing.assert_close(images, raw.clamp(-1, 1), rtol=0, atol=1e-6)
    if expected["clip"] is None:
        assert raw.abs().max() > 1.5  # the final clamp is observable


def test_sample_records_no_graph_and_restores_grad_mode() -> None:
    model = DVDP(**TINY)
    images = model.sample(1, 16, steps=2, generator=torch.Generator().manual_seed(0), use_ema=False)
    assert not images.requires_grad and torch.is_grad_enabled()


def _reference_loss(
    model: DVDP, x0: torch.Tensor, seed: int, per_batch: bool
) -> tuple[torch.Tensor, set[int]]:
    """Eq. 12 written out example by example with the module's draws (timesteps, then noise per stage)."""
    from rezdiff.core.gaussian import randn, sample_timesteps
    from rezdiff.core.pyramid import marginal

    generator = torch.Generator().manual_seed(seed)
    t = sample_timesteps(x0.shape[0], model.num_train_steps, generator=generator)
    if per_batch:
        start, stop = model.schedule.stage_bounds(int(model.schedule.stage_of(t[0])))
        t = torch.randint(start, stop, t.shape, generator=generator)
    stages = model.schedule.stage_of(t)
    per_example = torch.zeros(x0.shape[0])
    for k in range(model.levels + 1):
        index = [i for i in range(x0.shape[0]) if stages[i] == k]
        if not index:
            continue
        noise = randn((len(index), 3, x0.shape[-2] >> k, x0.shape[-1] >> k), generator)
        for row, i in enumerate(index):
            x_t = marginal(x0[i : i + 1], noise[row : row + 1], model.schedule, t[i : i + 1])
            error = model.network(x_t, t[i : i + 1]) - noise[row : row + 1]
            per_example[i] = error.square().mean()
    return per_example.mean(), {int(k) for k in stages}


@pytest.mark.parametrize("per_batch", [False, True])
def test_loss_is_eq_12_written_out_per_example(per_batch: bool) -> None:
    """Exact reference: each example's mean squared error at its own stage's resolution, then the batch mean.

    The seed is chosen so a stage is missing from the batch (the loop must skip it and go on) and, per batch,
    the drawn stage is not the first one and is the first example's, not the second's.
    """
    model = DVDP(
        **{**TINY, "turning_points": (30, 60)}, stage_sampling="per_batch" if per_batch else "per_example"
    )
    model.network = WildEps()
    x0 = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # t's stages are 2, 1, 1, 2: per example all of them; per batch t[0]'s, stage 2 (t[1]'s would differ)
    seed = 3
    expected, stages = _reference_loss(model, x0, seed, per_batch)
    assert 0 not in stages and len(stages) < 3
    loss = model.loss(FieldBatch(image=x0), torch.Generator().manual_seed(seed))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)


def test_loss_is_eq_12_on_a_non_square_grid() -> None:
    """Each stage's noise has the stage's height and width (16 x 32 here), not a square of either."""
    model = DVDP(**{**TINY, "turning_points": (30, 60)})
    model.network = WildEps()
    x0 = torch.rand(4, 3, 16, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected, stages = _reference_loss(model, x0, 3, per_batch=False)
    assert len(stages) > 1
    loss = model.loss(FieldBatch(image=x0), torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)


def test_sample_draws_its_noise_on_the_models_device_and_is_silent_by_default(monkeypatch, capsys) -> None:
    """The starting noise goes to ``self.device`` (a CUDA model samples on CUDA); no progress bar unasked."""
    import rezdiff.models.dvdp.module as dvdp_module

    devices = record_noise_devices(monkeypatch, dvdp_module)
    model = DVDP(**TINY)
    model.sample(1, 16, steps=1, generator=torch.Generator().manual_seed(0))
    assert devices == [model.device] and capsys.readouterr().err == ""
    model.sample(1, 16, steps=1, generator=torch.Generator().manual_seed(0), progress=True)
    assert capsys.readouterr().err != ""


def test_sample_uses_ema_weights_by_default() -> None:
    model = DVDP(**TINY, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)  # the raw weights move, the EMA copy does not
    default = model.sample(1, 16, steps=2, generator=torch.Generator().manual_seed(0))
    ema = model.sample(1, 16, steps=2, generator=torch.Generator().manual_seed(0), use_ema=True)
    raw = model.sample(1, 16, steps=2, generator=torch.Generator().manual_seed(0), use_ema=False)
    torch.testing.assert_close(default, ema, rtol=0, atol=0)
    assert not torch.allclose(default, raw)


def test_loss_draws_timesteps_and_noise_on_the_datas_device_and_dtype(monkeypatch) -> None:
    """``t`` goes to the data's device and each stage's noise is drawn on it in the data's dtype (a CUDA
    batch trains on CUDA; on a CPU-only machine only the arguments show it)."""
    import rezdiff.models.dvdp.module as dvdp_module

    draws: list[tuple[object, object]] = []
    real_timesteps, real_randn = dvdp_module.sample_timesteps, dvdp_module.randn

    def recording_timesteps(*args, **kwargs):
        draws.append(("t", kwargs.get("device")))
        return real_timesteps(*args, **kwargs)

    def recording_randn(shape, generator=None, device=None, dtype=torch.float32):
        draws.append((device, dtype))
        return real_randn(shape, generator, device, dtype)

    monkeypatch.setattr(dvdp_module, "sample_timesteps", recording_timesteps)
    monkeypatch.setattr(dvdp_module, "randn", recording_randn)
    model = DVDP(**{**TINY, "turning_points": (30, 60)})
    model.network = WildEps()
    x0 = torch.zeros(4, 3, 16, 16, dtype=torch.float64)
    model.loss(FieldBatch(image=x0), torch.Generator().manual_seed(3))  # stages 2, 1, 1, 2
    assert draws == [("t", x0.device), (x0.device, torch.float64), (x0.device, torch.float64)]


def test_per_batch_stage_draw_uses_the_generators_device(monkeypatch) -> None:
    """The per-batch ``t`` is drawn where the generator lives (a CUDA generator cannot draw on the CPU)."""
    devices: list[object] = []
    real = torch.randint

    moved: list[tuple[object, ...]] = []

    Draw = to_recorder(moved)

    def recording_randint(*args, **kwargs):
        devices.append(kwargs.get("device"))
        return real(*args, **kwargs).as_subclass(Draw)

    model = DVDP(**{**TINY, "turning_points": (30, 60)}, stage_sampling="per_batch")
    model.network = WildEps()
    monkeypatch.setattr(torch, "randint", recording_randint)
    generator = torch.Generator().manual_seed(0)
    model.loss(FieldBatch(image=torch.zeros(2, 3, 16, 16)), generator)
    assert devices == [generator.device, generator.device]  # sample_timesteps' draw, then the stage's
    assert moved[-1] == (torch.device("cpu"),)  # the stage's draw, moved to the data's device


def test_sample_calls_back_at_every_step() -> None:
    """Three steps from T - 1 = 99 with the turning point at 50 inserted (the state doubles its size
    there): the callback sees each step, its time and the state's width."""
    model = DVDP(**TINY)
    seen: list[tuple[int, int, int]] = []
    model.sample(1, 16, steps=3, callback=lambda info: seen.append((info.index, info.t, info.x_t.shape[-1])))
    assert seen == [(0, 99, 8), (1, 66, 8), (2, 49, 16), (3, 32, 16)]
