"""Every family's sampling from noise starts at ``T - 1``, where pure noise is the law of ``x_t`` (issue 14,
item 3), checked with a spy on the network and with an exact oracle.

The oracle: for data ``x_0 ~ N(MEAN, STD^2)`` per coordinate the optimal noise predictor is closed-form, and
with it every DDIM step (eta = 0) maps the centred state ``u = x_t - sqrt(ab_t) MEAN`` linearly,
``u' = g_t u``. The sampler starts from pure noise ``x_T``, i.e. from ``u = x_T - sqrt(ab_first) MEAN``, so
each sample is exactly ``MEAN (1 - G sqrt(ab_first)) + G x_T`` with ``G`` the product of the gains, whatever
the discretisation error of the steps (it only changes ``G``); the tests regenerate ``x_T`` from the seed and
check every value. At ``T - 1`` ``sqrt(ab)`` is ~0 and the samples' mean is the data's; "leading" spacing (the
old default) starts where ``sqrt(ab)`` is not small and shifts every sample towards 0.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from rezdiff.core.gaussian import expand_like
from rezdiff.core.schedules import timestep_subsequence
from rezdiff.models import DDPM, DVDP, INFD, InftyDiff, InftyDiffLatent, MultilevelSDE
from rezdiff.models.infty_diff.mollified import gaussian_data_eps, mollified_initial_state
from tests.helpers import TINY_INFTY_DIFF, TINY_UNET

pytestmark = pytest.mark.usefixtures("single_thread")

T = 1000
MEAN, STD = 0.5, 1.0


def gain_and_mean(
    alphas_cumprod: Tensor, timesteps: list[int], eta: float = 0.0, factor: float = 1.0
) -> tuple[float, float]:
    """``(G, mean)``: DDIM's gain on the centred state and the mean of its samples from noise of mean 0 with
    the exact predictor of ``N(MEAN, STD^2)`` data (noise std ``factor``, ∞-Diff's ``f``), last jump to 1."""
    gain = 1.0
    for i, t in enumerate(timesteps):
        ab = float(alphas_cumprod[t])
        ab_prev = float(alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        variance = ab * STD**2 + (1 - ab) * factor**2
        sigma2 = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        direction = math.sqrt(max(1 - ab_prev - sigma2, 0.0))
        # x0_hat = MEAN + sqrt(ab) STD^2 u / v; eps_hat = sqrt(1 - ab) f^2 u / v (in units of the noise)
        gain *= (math.sqrt(ab_prev * ab) * STD**2 + direction * math.sqrt(1 - ab) * factor**2) / variance
    return gain, MEAN * (1 - gain * math.sqrt(float(alphas_cumprod[timesteps[0]])))


def oracle(alphas_cumprod: Tensor, calls: list[int]) -> Any:
    """The exact ``E[eps | x_t]`` for ``N(MEAN, STD^2)`` data; records each call's timestep."""

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        calls.append(int(t[0]))
        ab = alphas_cumprod.to(x.device)[t].to(torch.float64)
        gain = (1 - ab).sqrt() / (ab * STD**2 + 1 - ab)  # E[eps | x_t] = gain (x_t - sqrt(ab) MEAN)
        return expand_like(gain, x) * (x - expand_like(ab.sqrt(), x) * MEAN)

    return eps_fn


def check(
    samples: Tensor,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: list[int],
    calls: list[int],
    clamp: bool = False,
    **kw: float,
) -> float:
    """The samples are exactly ``mean + G x_T`` (clamped to [-1, 1] where the family clamps), with the
    oracle's closed-form ``(G, mean)``; the first network call is at the first timestep. Returns ``mean``."""
    assert calls[0] == timesteps[0]
    gain, mean = gain_and_mean(alphas_cumprod, timesteps, **kw)
    expected = mean + gain * x_T.double()
    expected = expected.clamp(-1, 1) if clamp else expected
    # float32 steps; x0 = (x - sqrt(1 - ab) eps) / sqrt(ab) amplifies rounding near T - 1
    torch.testing.assert_close(samples.double(), expected, rtol=0, atol=1e-3)
    return mean


def test_ddpm_ddim_starts_at_t_minus_1_and_reproduces_the_data_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    model = DDPM(**{**TINY_UNET, "num_train_steps": T}, schedule="cosine", clip_denoised=False)
    assert model.spacing == "trailing"
    for spacing, steps in ((None, 10), ("leading", 10), (None, 25)):
        calls: list[int] = []
        eps_fn = oracle(model.alphas_cumprod, calls)
        monkeypatch.setattr(model, "sampling_network", lambda use_ema=True, fn=eps_fn: fn)
        samples = model.sample(8, steps=steps, spacing=spacing, generator=torch.Generator().manual_seed(0))
        x_T = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # sample()'s first draw
        ts = timestep_subsequence(T, steps, spacing or "trailing").tolist()
        mean = check(samples, x_T, model.alphas_cumprod, ts, calls, clamp=True)
        if spacing is None:
            assert calls[0] == T - 1 and abs(mean - MEAN) < 1e-3
        else:  # the old default starts at 900 (sqrt(ab) = 0.154) from the same pure noise
            assert calls[0] == 900 and MEAN - mean > 0.05


def test_ddpm_ancestral_sampler_starts_at_t_minus_1(monkeypatch: pytest.MonkeyPatch) -> None:
    model = DDPM(**{**TINY_UNET, "num_train_steps": T}, schedule="cosine")
    for steps in (None, 10):
        calls: list[int] = []
        eps_fn = oracle(model.alphas_cumprod, calls)
        monkeypatch.setattr(model, "sampling_network", lambda use_ema=True, fn=eps_fn: fn)
        model.sample(1, sampler="ddpm", steps=steps, generator=torch.Generator().manual_seed(0))
        assert calls[0] == T - 1 and len(calls) == (steps or T)


@pytest.mark.parametrize("resolution", [16, 32])  # 1x and 2x: the noise is T'(f eps) with f = 1, 2
def test_infty_diff_starts_at_t_minus_1_at_1x_and_2x(
    monkeypatch: pytest.MonkeyPatch, resolution: int
) -> None:
    model = InftyDiff(**{**TINY_INFTY_DIFF, "num_train_steps": T}, clip_denoised=False)
    mollifier, factor = model.process_at(resolution)
    mean_image = torch.full((1, 3, resolution, resolution), MEAN)
    shape = (8, 3, resolution, resolution)
    x_T = mollified_initial_state(shape, mollifier, factor, torch.Generator().manual_seed(0))  # T'(f eps)
    for spacing in (None, "leading"):
        calls: list[int] = []

        def denoiser(res: Any, *, z: Tensor | None = None, use_ema: bool = True, calls: list = calls) -> Any:
            def eps_fn(x: Tensor, t: Tensor) -> Tensor:
                calls.append(int(t[0]))
                ab = model.alphas_cumprod[t]
                return gaussian_data_eps(x, ab, mollifier, mean_image, STD, factor)

            return eps_fn

        monkeypatch.setattr(model, "denoiser", denoiser)
        samples = model.sample(
            8, resolution, steps=10, spacing=spacing, deblur=False, generator=torch.Generator().manual_seed(0)
        )
        ts = timestep_subsequence(T, 10, spacing or "trailing").tolist()
        # T'-space: samples = T'(y_0), y_0 = mean + G f eps pixel-wise, and T' keeps constant images
        mean = check(samples, x_T, model.alphas_cumprod, ts, calls, clamp=True, factor=factor)
        if spacing is None:
            assert calls[0] == T - 1 and abs(mean - MEAN) < 1e-3
        else:
            assert calls[0] == 900 and MEAN - mean > 0.03


def _latent_stage1() -> dict[str, Any]:
    args = {**TINY_INFTY_DIFF, "latent_dim": 8}
    return {"class_path": "rezdiff.models.InftyDiff", "init_args": args}


def test_infty_diff_latent_stage_starts_at_t_minus_1(monkeypatch: pytest.MonkeyPatch) -> None:
    model = InftyDiffLatent("unused.ckpt", stage1=_latent_stage1(), hidden_dim=16, num_layers=2)
    assert model.spacing == "trailing"
    for spacing in (None, "leading"):
        calls: list[int] = []
        eps_fn = oracle(model.alphas_cumprod, calls)
        monkeypatch.setattr(model, "sampling_network", lambda use_ema=True, fn=eps_fn: fn)
        # 2 steps: "leading" starts at 500, where the constant-beta schedule keeps sqrt(ab) = 0.134
        codes = model.sample_latents(16, steps=2, spacing=spacing, generator=torch.Generator().manual_seed(0))
        z_T = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
        ts = timestep_subsequence(T, 2, spacing or "trailing").tolist()
        mean = check(codes, z_T, model.alphas_cumprod, ts, calls)  # identity statistics: codes as sampled
        if spacing is None:  # beta = 0.008 leaves sqrt(ab) = 0.018 even at T - 1
            assert calls[0] == T - 1 and abs(mean - MEAN) < 2e-3
        else:
            assert calls[0] == 500 and MEAN - mean > 0.01


def test_infd_latent_stage_starts_at_t_minus_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.models.test_infd_latent import TINY, _tiny_autoencoder_config

    model = INFD(
        "unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **{**TINY, "num_train_steps": T}
    )
    assert model.spacing == "trailing"
    for spacing in (None, "leading"):
        calls: list[int] = []
        eps_fn = oracle(model.alphas_cumprod, calls)
        monkeypatch.setattr(model, "sampling_network", lambda use_ema=True, fn=eps_fn: fn)
        # eta = 0 keeps the map deterministic (the start does not depend on eta); "leading" starts at 500
        latents = model.sample_latents(
            4, steps=2, eta=0.0, spacing=spacing, generator=torch.Generator().manual_seed(0)
        )
        x_T = torch.randn(4, *model.latent_shape, generator=torch.Generator().manual_seed(0))
        ts = timestep_subsequence(T, 2, spacing or "trailing").tolist()
        mean = check(latents, x_T, model.alphas_cumprod, ts, calls)
        if spacing is None:
            assert calls[0] == T - 1 and abs(mean - MEAN) < 1e-3
        else:
            assert calls[0] == 500 and MEAN - mean > 0.02


def test_spacing_is_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="timestep spacing"):
        DDPM(**TINY_UNET, spacing="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timestep spacing"):
        InftyDiff(**TINY_INFTY_DIFF, spacing="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps_after_clip"):
        DDPM(**TINY_UNET, eps_after_clip="clipped")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps_after_clip"):
        InftyDiff(**TINY_INFTY_DIFF, eps_after_clip="clipped")  # type: ignore[arg-type]


def test_eps_after_clip_defaults_and_overrides_reach_the_ddim_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDPM and ∞-Diff re-derive eps from the clipped x0 by default (the authors' / OpenAI's way, item 13);
    ``sample(eps_after_clip=...)`` and ``spacing`` override the model's settings."""
    import rezdiff.core.samplers as samplers_module

    seen: list[tuple[str, list[int]]] = []

    def spy(
        eps_fn: Any, x_T: Tensor, alphas_cumprod: Tensor, timesteps: Tensor, *a: Any, **kw: Any
    ) -> Tensor:
        seen.append((kw["eps_after_clip"], timesteps.tolist()))
        return x_T

    monkeypatch.setattr(samplers_module, "ddim_sample", spy)  # the one DDIM loop both families reach
    for model in (DDPM(**TINY_UNET), InftyDiff(**TINY_INFTY_DIFF)):
        assert model.eps_after_clip == "from_x0"
        model.sample(1, steps=4)
        model.sample(1, steps=4, eps_after_clip="network", spacing="leading")
    trailing, leading = [99, 74, 49, 24], [75, 50, 25, 0]  # T = 100
    assert seen == [("from_x0", trailing), ("network", leading)] * 2


def _first_calls(
    monkeypatch: pytest.MonkeyPatch, model: Any, attribute: str = "sampling_network"
) -> list[Any]:
    """Replace the model's network by a spy that records each call's timestep and returns zeros."""
    calls: list[Any] = []

    def eps_fn(x: Tensor, t: Tensor, *rest: Any) -> Tensor:
        calls.append(t[0].item())
        return torch.zeros_like(x)

    if attribute == "eps":
        monkeypatch.setattr(model, "eps", eps_fn)
    elif attribute == "denoiser":
        monkeypatch.setattr(model, "denoiser", lambda res, *, z=None, use_ema=True: eps_fn)
    else:
        monkeypatch.setattr(model, "sampling_network", lambda use_ema=True: eps_fn)
    return calls


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_dvdp_starts_at_t_minus_1_and_spacing_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    """Issue 16, item 6: DVDP's strided grid is ``spacing``'s (default ``"trailing"``), plus every turning
    index; from noise it starts at ``T - 1`` whatever the sampler."""
    model = DVDP(**TINY_UNET, turning_points=(50,), sampler=sampler)  # T = 100
    assert model.spacing == "trailing"
    calls = _first_calls(monkeypatch, model)
    model.sample(1, steps=4, generator=torch.Generator().manual_seed(0))
    assert calls == [99, 74, 49, 24]  # trailing; 49 = T_1 - 1, the turning index, is on this grid
    calls.clear()
    model.sample(1, steps=4, spacing="leading", generator=torch.Generator().manual_seed(0))
    assert calls == [75, 50, 49, 25, 0]  # the turning index is added to any grid
    calls.clear()
    model.sample(1, steps=None if sampler == "ddpm" else 100, generator=torch.Generator().manual_seed(0))
    assert calls == list(range(99, -1, -1))
    with pytest.raises(ValueError, match="timestep spacing"):
        DVDP(**TINY_UNET, turning_points=(50,), spacing="uniform")  # type: ignore[arg-type]


@pytest.mark.parametrize("sampler", ["sde", "ode_euler", "ode_heun"])
def test_multilevel_starts_at_the_last_training_time(monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    """Training draws ``t ~ U(train_t_min, 1)``; every sampler's first network call is at ``t = 1``."""
    model = MultilevelSDE(channels=3, modes=6, width=16, n_layers=2, projection=32, time_embedding=32)
    calls = _first_calls(monkeypatch, model, "eps")
    model.sample(1, 16, steps=4, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert calls[0] == 1.0 and calls[1] < 1.0


def test_infty_diff_ancestral_sampler_starts_at_t_minus_1(monkeypatch: pytest.MonkeyPatch) -> None:
    model = InftyDiff(**TINY_INFTY_DIFF)  # T = 100
    calls = _first_calls(monkeypatch, model, "denoiser")
    model.sample(1, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert calls == list(range(99, -1, -1))
    calls.clear()
    model.sample(1, sampler="ddpm", steps=4, generator=torch.Generator().manual_seed(0))
    assert calls == [99, 74, 49, 24]
