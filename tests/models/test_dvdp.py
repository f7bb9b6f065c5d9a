"""DVDP: it learns and samples from low-resolution noise at several resolutions (its CLI round trip:
tests/test_contract.py)."""

from __future__ import annotations

import pytest
import torch

from rezdiff.models import DVDP
from tests.helpers import TINY_UNET, loss_before_and_after, synthetic_batch

TINY = {**TINY_UNET, "turning_points": (50,)}


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    before, after = loss_before_and_after(DVDP(**TINY, lr=2e-3, ema_decay=0.0), synthetic_batch(16), 30)
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


def test_per_batch_stage_sampling_draws_one_stage() -> None:
    model = DVDP(**TINY, stage_sampling="per_batch", ema_decay=0.0)
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
