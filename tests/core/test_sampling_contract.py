"""The sampler contract's helpers (``rezdiff.core.sampling``) one by one: generator resolution and its
refusals, timestep validation at its exact bounds, callbacks (replacement, chaining, order), the progress bar
and the settings' documented defaults."""

from __future__ import annotations

import pytest
import torch

from rezdiff.core.sampling import (
    SamplerSettings,
    StepInfo,
    VPSchedule,
    after_step,
    chain_callbacks,
    check_timesteps,
    progress_bar,
    resolve_generators,
    seed_generators,
)


def test_seed_generators_are_cpu_generators_seeded_one_by_one() -> None:
    gens = seed_generators([3, torch.tensor(4), 3])
    assert len(gens) == 3 and all(g.device.type == "cpu" for g in gens)
    draws = [torch.rand(4, generator=g) for g in gens]
    assert torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(draws[1], torch.rand(4, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])


def test_resolve_generators_passes_a_generator_on_and_turns_seeds_into_one_per_row() -> None:
    one = torch.Generator()
    assert resolve_generators(3, one, None) is one and resolve_generators(3, None, None) is None
    rows = [torch.Generator(), torch.Generator()]
    assert resolve_generators(2, rows, None) is rows
    made = resolve_generators(2, None, (5, 6))
    assert isinstance(made, list) and len(made) == 2
    assert torch.equal(
        torch.rand(3, generator=made[1]), torch.rand(3, generator=torch.Generator().manual_seed(6))
    )


@pytest.mark.parametrize(
    "num, generator, seeds, message",
    [
        (3, [torch.Generator()] * 2, None, r"^got 2 generators for 3 samples; pass one per sample$"),
        (
            2,
            torch.Generator(),
            [1, 2],
            r"^pass either generator= or seeds= \(one seed per image\), not both$",
        ),
        (2, None, [1, 2, 3], r"^got 3 seeds for 2 samples; pass one seed per sample$"),
        (2, None, iter([1]), r"^got 1 seeds for 2 samples"),
    ],
)
def test_resolve_generators_refusals_name_the_counts(num, generator, seeds, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_generators(num, generator, seeds)


def test_check_timesteps_accepts_the_bounds_and_returns_ints() -> None:
    assert check_timesteps([9, 5, 0], 10) == [9, 5, 0]
    out = check_timesteps(torch.tensor([3, 1]), 4)
    assert out == [3, 1] and all(type(t) is int for t in out)
    assert check_timesteps((0,), 1) == [0]


@pytest.mark.parametrize(
    "timesteps, message",
    [
        ([], r"^timesteps is empty$"),
        ([5, 5, 1], r"^timesteps must be strictly decreasing, got \[5, 5, 1\]$"),
        ([1, 5], r"^timesteps must be strictly decreasing, got \[1, 5\]$"),
        ([10, 5, 3], r"^timesteps must lie in \[0, 9\], got 10 \.\. 3$"),
        ([4, 2, -1], r"^timesteps must lie in \[0, 9\], got 4 \.\. -1$"),
    ],
)
def test_check_timesteps_refusals(timesteps, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_timesteps(timesteps, 10)


def _info(x: torch.Tensor) -> StepInfo:
    return StepInfo(index=2, t=7, t_next=3, x_t=x - 1, x=x, eps=x * 0)


def test_after_step_takes_the_callbacks_tensor_or_keeps_the_step() -> None:
    x = torch.ones(2)
    assert after_step(None, _info(x)) is x
    assert after_step(lambda info: None, _info(x)) is x
    replaced = torch.zeros(2)
    assert after_step(lambda info: replaced, _info(x)) is replaced


def test_chain_callbacks_runs_in_order_each_seeing_the_last_state() -> None:
    assert chain_callbacks() is None and chain_callbacks(None, None) is None
    only = lambda info: None  # noqa: E731
    assert chain_callbacks(None, only) is only
    seen: list[tuple[str, float, int]] = []

    def record(tag: str, shift: float | None):
        def callback(info: StepInfo) -> torch.Tensor | None:
            seen.append((tag, float(info.x[0]), info.index))
            return None if shift is None else info.x + shift

        return callback

    chained = chain_callbacks(record("a", 1.0), None, record("b", None), record("c", 10.0))
    assert chained is not None
    out = chained(_info(torch.zeros(1)))
    assert seen == [("a", 0.0, 2), ("b", 1.0, 2), ("c", 1.0, 2)]
    assert float(out[0]) == 11.0


def test_progress_bar_wraps_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    items = [3, 2, 1]
    assert progress_bar(items, False, "never shown") is items
    assert list(progress_bar(items, True, "DDIM")) == items
    err = capsys.readouterr().err
    assert "DDIM" in err and "3/3" in err


def test_settings_defaults_are_the_documented_ones() -> None:
    """Deterministic DDIM, no clipping, diffusers' DDIM direction, no operator, "fixed small" posterior
    variance, DDIM's last jump to the data, no bar; the VP SDE's beta from 0.1 to 20 (Song et al. 2021)."""
    settings = SamplerSettings()
    assert (settings.eta, settings.clip_x0, settings.eps_after_clip, settings.noise_operator) == (
        0.0,
        None,
        "network",
        None,
    )
    assert (settings.variance, settings.final_alpha_bar, settings.progress) == ("small", 1.0, False)
    assert (VPSchedule().beta_min, VPSchedule().beta_max) == (0.1, 20.0)
