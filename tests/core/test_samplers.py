"""The sampler contract and registry (issue 16, item 1): one signature, one registry, per-step callbacks.

A toy sampler defined here is registered and used through ``rezdiff.load(ckpt).sample(sampler="toy")``
on a tiny DDPM checkpoint, exactly (its output is recomputed by hand from the loaded network).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

import rezdiff
from rezdiff.core.gaussian import predict_x0, randn
from rezdiff.core.loops import ddim_sample
from rezdiff.core.samplers import (
    GAUSSIAN,
    VP,
    get_sampler,
    register_sampler,
    sampler_names,
    unregister_sampler,
)
from rezdiff.core.sampling import (
    Callback,
    EpsFn,
    Generators,
    SamplerSettings,
    StepInfo,
    chain_callbacks,
    seed_generators,
)
from rezdiff.core.schedules import alphas_cumprod, linear_betas
from rezdiff.models import DDPM, DVDP, INFD, InftyDiff, MultilevelSDE
from rezdiff.models.infty_diff import InftyDiffLatent
from tests.helpers import TINY_UNET

pytestmark = pytest.mark.usefixtures("single_thread")


def toy(
    eps_fn: EpsFn,
    x_T: Tensor,
    schedule: Tensor,
    timesteps: Tensor | Sequence[int],
    settings: SamplerSettings,
    generator: Generators,
    callback: Callback | None,
) -> Tensor:
    """One jump from the first timestep straight to the predicted x_0 (a one-step "sampler")."""
    t = int(timesteps[0])
    eps = eps_fn(x_T, torch.full((x_T.shape[0],), t, dtype=torch.long))
    x0 = predict_x0(x_T, eps, schedule[t])
    if callback is not None:
        replaced = callback(StepInfo(0, t, None, x_T, x0, eps))
        x0 = x0 if replaced is None else replaced
    return x0


@pytest.fixture
def registered_toy() -> Iterator[None]:
    register_sampler(GAUSSIAN, "toy", toy)
    yield
    unregister_sampler(GAUSSIAN, "toy")


def test_a_registered_sampler_is_usable_through_load_and_sample(registered_toy: None, tmp_path: Path) -> None:
    model = DDPM(**TINY_UNET, ema={"decay": 0.0})
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "tiny.ckpt")
    loaded = rezdiff.load(tmp_path / "tiny.ckpt")
    assert "toy" in loaded.supported_samplers()

    samples = loaded.sample(2, sampler="toy", seeds=[5, 6])
    x_T = torch.cat([torch.randn(1, 3, 16, 16, generator=g) for g in seed_generators([5, 6])])
    t = TINY_UNET["num_train_steps"] - 1  # "trailing": the first timestep is T - 1
    with torch.no_grad():
        eps = loaded.network(x_T, torch.full((2,), t))
    expected = predict_x0(x_T, eps, loaded.alphas_cumprod[t]).clamp(-1, 1)
    torch.testing.assert_close(samples, expected, rtol=0, atol=0)
    # a family's default sampler may be a registered name too
    assert DDPM(**TINY_UNET, sampler="toy").sampler == "toy"


def test_every_family_declares_its_process_and_unknown_names_list_the_choices() -> None:
    assert {DDPM.sampler_process, InftyDiff.sampler_process, InftyDiffLatent.sampler_process} == {GAUSSIAN}
    assert INFD.sampler_process == GAUSSIAN and MultilevelSDE.sampler_process == VP
    assert DVDP.supported_samplers() == ("ddim", "ddpm")
    assert sampler_names(VP) == ("ode_euler", "ode_heun", "sde")
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm'; expected one of \['ddim', 'ddpm'\]"):
        DDPM(**TINY_UNET, sampler="dpm")
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        get_sampler(VP, "ddim")
    with pytest.raises(ValueError, match="already registered"):
        register_sampler(GAUSSIAN, "ddim", toy)
    with pytest.raises(ValueError, match="unknown sampler process"):
        sampler_names("edm")


def test_register_sampler_records_all_steps_and_unregister_names_what_is_missing() -> None:
    """``all_steps`` decides what ``steps=None`` means (every training step or the model's
    ``sample_steps``), so a registration must keep the flag it is given, False unless asked."""
    register_sampler(GAUSSIAN, "toy", toy)
    register_sampler(GAUSSIAN, "toy_all", toy, all_steps=True)
    try:
        assert get_sampler(GAUSSIAN, "toy").all_steps is False
        assert get_sampler(GAUSSIAN, "toy_all").all_steps is True
    finally:
        unregister_sampler(GAUSSIAN, "toy")
        unregister_sampler(GAUSSIAN, "toy_all")
    with pytest.raises(ValueError, match=r"^no sampler 'toy' is registered for 'gaussian'$"):
        unregister_sampler(GAUSSIAN, "toy")


def _oracle_eps(ab: Tensor) -> EpsFn:
    def eps_fn(x: Tensor, t: Tensor) -> Tensor:  # E[eps | x_t] for N(0.3, 1) data
        a = ab[t].to(x.dtype).reshape(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * 0.3)

    return eps_fn


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_callback_sees_every_step_and_can_replace_the_state(name: str) -> None:
    ab = alphas_cumprod(linear_betas(50))
    timesteps = [49, 30, 10, 0]
    x_T = randn((3, 2, 4, 4), torch.Generator().manual_seed(0))
    settings = SamplerSettings(eta=0.5)
    run = get_sampler(GAUSSIAN, name).fn
    seen: list[StepInfo] = []
    plain = run(_oracle_eps(ab), x_T, ab, timesteps, settings, torch.Generator().manual_seed(1), seen.append)
    assert [(s.index, s.t, s.t_next) for s in seen] == [(0, 49, 30), (1, 30, 10), (2, 10, 0), (3, 0, None)]
    assert torch.equal(seen[0].x_t, x_T) and torch.equal(seen[-1].x, plain)
    assert all(torch.equal(a.x, b.x_t) for a, b in zip(seen, seen[1:], strict=False))

    def shift(info: StepInfo) -> Tensor | None:  # guidance-like: move the state after step 1 only
        return info.x + 1.0 if info.index == 1 else None

    later: list[StepInfo] = []
    moved = run(
        _oracle_eps(ab),
        x_T,
        ab,
        timesteps,
        settings,
        torch.Generator().manual_seed(1),
        chain_callbacks(shift, later.append),
    )
    assert torch.equal(later[1].x, seen[1].x + 1.0) and torch.equal(later[2].x_t, seen[1].x + 1.0)
    assert not torch.equal(moved, plain)


def test_a_list_of_generators_draws_row_k_from_generator_k() -> None:
    rows = randn((3, 2, 5), seed_generators([7, 8, 9]))
    for k, seed in enumerate([7, 8, 9]):
        assert torch.equal(rows[k], torch.randn(2, 5, generator=torch.Generator().manual_seed(seed)))
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn((3, 4), seed_generators([0, 1]))
    # the DDIM loop's per-step noise comes from the same per-row generators
    ab = alphas_cumprod(linear_betas(20))
    x_T = torch.zeros(2, 1, 3, 3)
    both = ddim_sample(_oracle_eps(ab), x_T, ab, [19, 9], eta=1.0, generator=seed_generators([1, 2]))
    one = ddim_sample(_oracle_eps(ab), x_T[1:], ab, [19, 9], eta=1.0, generator=seed_generators([2]))
    assert torch.equal(both[1:], one)


def test_registered_samplers_forward_every_setting_to_their_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each registry entry calls its loop with the schedule, the timesteps and every knob of
    ``SamplerSettings`` it uses (non-default values here, so a dropped or swapped one shows), the generator
    and the callback; the VP entries pass the grid as float64 and their ODE/SDE flag and solver."""
    import rezdiff.core.samplers as samplers

    calls: dict[str, tuple[tuple, dict]] = {}
    for loop in ("ddim_sample", "ddpm_sample", "vp_integrate", "dvdp_sample"):
        monkeypatch.setattr(
            samplers,
            loop,
            lambda *args, _loop=loop, **kwargs: calls.update({_loop: (args, kwargs)}) or args[1],
        )

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        return x

    def operator(z: Tensor) -> Tensor:
        return 2 * z

    def callback(info: StepInfo) -> None:
        return None

    x_T = torch.zeros(1, 2)
    generator = torch.Generator()
    settings = SamplerSettings(
        eta=0.5,
        clip_x0=2.0,
        eps_after_clip="from_x0",
        noise_operator=operator,
        variance="large",
        final_alpha_bar=0.9,
        progress=True,
    )
    acp = alphas_cumprod(linear_betas(10))
    common = {"generator": generator, "progress": True, "callback": callback}

    get_sampler(GAUSSIAN, "ddim").fn(eps_fn, x_T, acp, [9, 4], settings, generator, callback)
    expected = dict(
        eta=0.5, clip_x0=2.0, eps_after_clip="from_x0", noise_operator=operator, final_alpha_bar=0.9
    )
    assert calls["ddim_sample"] == ((eps_fn, x_T, acp, [9, 4]), {**expected, **common})

    get_sampler(GAUSSIAN, "ddpm").fn(eps_fn, x_T, acp, [9, 4], settings, generator, callback)
    expected = dict(variance="large", clip_x0=2.0, noise_operator=operator, timesteps=[9, 4])
    assert calls["ddpm_sample"] == ((eps_fn, x_T, acp), {**expected, **common})

    vp_schedule = samplers.VPSchedule(beta_min=0.2, beta_max=7.0)
    for name, ode, solver in (
        ("sde", False, "euler"),
        ("ode_euler", True, "euler"),
        ("ode_heun", True, "heun"),
    ):
        get_sampler(VP, name).fn(eps_fn, x_T, vp_schedule, [0.75, 0.5], settings, generator, callback)
        (fn, x, grid), kwargs = calls.pop("vp_integrate")
        assert (fn, x) == (eps_fn, x_T) and grid.dtype == torch.float64 and grid.tolist() == [0.75, 0.5]
        expected = dict(beta_min=0.2, beta_max=7.0, noise_operator=operator, ode=ode, solver=solver)
        assert kwargs == {**expected, **common}, name
        kind = "ODE" if ode else "SDE"
        assert get_sampler(VP, name).fn.__doc__.startswith(f"The reverse VP {kind} by {solver} ("), name

    for name in ("ddim", "ddpm"):
        dvdp_schedule = object()
        get_sampler(samplers.DVDP, name).fn(
            eps_fn, x_T, dvdp_schedule, torch.tensor([9, 4]), settings, generator, callback
        )
        (fn, x, schedule, timesteps), kwargs = calls.pop("dvdp_sample")
        assert (fn, x, schedule) == (eps_fn, x_T, dvdp_schedule)
        assert timesteps == [9, 4] and all(type(t) is int for t in timesteps)
        assert kwargs == {"sampler": name, "eta": 0.5, "clip_x0": 2.0, **common}, name
        assert get_sampler(samplers.DVDP, name).fn.__doc__.startswith(f"DVDP's {name} reverse process ("), (
            name
        )


def test_factory_made_samplers_are_built_at_each_lookup_with_their_all_steps() -> None:
    """The VP and DVDP entries build their function when :func:`get_sampler` looks them up, not once at
    import: mutmut switches a factory's mutant on only when the factory is called, so a closure built at
    import would leave every mutant of ``_vp``/``_dvdp`` unreachable (benchmarks/mutation.py)."""
    import rezdiff.core.samplers as samplers

    for process, name, all_steps in (
        (VP, "sde", False),
        (VP, "ode_euler", False),
        (VP, "ode_heun", False),
        (samplers.DVDP, "ddim", False),
        (samplers.DVDP, "ddpm", True),
    ):
        first, second = get_sampler(process, name), get_sampler(process, name)
        assert first.fn is not second.fn, (process, name)
        assert first.all_steps is second.all_steps is all_steps, (process, name)
    # a plain registered function is handed back as registered
    assert get_sampler(GAUSSIAN, "ddim").fn is samplers.ddim and get_sampler(GAUSSIAN, "ddpm").all_steps
    # replace=True and unregister_sampler treat a built entry like any other
    original = samplers._REGISTRY[VP]["sde"]
    try:
        register_sampler(VP, "sde", toy, replace=True)
        assert get_sampler(VP, "sde").fn is toy
        unregister_sampler(VP, "sde")
        assert "sde" not in sampler_names(VP)
    finally:
        samplers._REGISTRY[VP]["sde"] = original
