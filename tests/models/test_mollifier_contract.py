"""∞-Diff's mollifier and mollified-process helpers by formula: each multiplier against its closed form in
float64 (``scipy``'s DCT for the applied operators), the branches of the noise multiplier at their exact
bounds, the defaults and refusals word for word, the dtype and device rules (recorded calls, as a GPU run
would break on them), and ``mollified_sample`` as the registered Gaussian sampler with the settings it
documents. ``tests/core/test_mollified.py`` holds the laws (marginals, posteriors, exact denoisers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn
from torch import Tensor

from rezdiff.core import alphas_cumprod, cosine_betas
from rezdiff.core.gaussian import randn
from rezdiff.core.samplers import GAUSSIAN, get_sampler
from rezdiff.core.sampling import SamplerSettings, StepInfo
from rezdiff.models.infty_diff import mollified
from rezdiff.models.infty_diff.mollified import (
    gaussian_data_eps,
    mollified_initial_state,
    mollified_sample,
    resolution_factor,
)
from rezdiff.models.infty_diff.mollifier import GaussianMollifier
from tests.helpers import bound_arguments, gen, record_calls, to_recorder

AB = alphas_cumprod(cosine_betas(100))


def gaussian_multiplier(std: float, height: int, width: int) -> np.ndarray:
    """``exp(-pi^2 std^2 (u^2 / H^2 + v^2 / W^2) / 2)`` entry by entry."""
    return np.array(
        [
            [
                math.exp(-0.5 * (math.pi * std) ** 2 * ((u / height) ** 2 + (v / width) ** 2))
                for v in range(width)
            ]
            for u in range(height)
        ]
    )


def folded(std: float, n: int) -> np.ndarray:
    """``sqrt(sum over aliases u' of m(u')^2)``, aliases ``2kn +- u`` summed far past any truncation (for
    ``u = 0`` both signs give the same mode: the constant mode's aliases count twice)."""
    power = lambda w: math.exp(-((math.pi * std * w / n) ** 2))  # noqa: E731
    rows = []
    for u in range(n):
        total = power(u) + sum(power(2 * k * n - u) + power(2 * k * n + u) for k in range(1, 400))
        rows.append(math.sqrt(total))
    return np.array(rows)


def by_dct(x: Tensor, multiplier: np.ndarray) -> Tensor:
    """``idct(multiplier * dct(x))`` with scipy (an independent transform)."""
    y = idctn(multiplier * dctn(x.numpy(), axes=(-2, -1), norm="ortho"), axes=(-2, -1), norm="ortho")
    return torch.from_numpy(y)


def test_multiplier_is_the_gaussian_in_float64() -> None:
    got = GaussianMollifier(1.3).multiplier(5, 7)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), gaussian_multiplier(1.3, 5, 7), rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    "std, height, width", [(0.05, 6, 4), (0.1, 6, 4), (0.3, 6, 4), (1.0, 6, 4), (2.0, 6, 4), (3.0, 64, 48)]
)
def test_folded_multiplier_sums_every_alias_that_counts(std: float, height: int, width: int) -> None:
    """Small blurs need many aliases; a blur wider than sqrt(50) / pi pixels still keeps the first one."""
    got = GaussianMollifier(std).folded_multiplier(height, width)
    assert got.dtype == torch.float64
    expected = np.outer(folded(std, height), folded(std, width))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=0)


def test_deblur_is_the_wiener_filter_with_the_inverse_snr_squared() -> None:
    x = torch.randn(2, 6, 5, generator=gen(0), dtype=torch.float64)
    for snr in (0.05, 0.2, 0.0):
        mollifier = GaussianMollifier(1.5, snr)
        m = gaussian_multiplier(1.5, 6, 5)
        torch.testing.assert_close(
            mollifier.deblur(x), by_dct(x, m / (m**2 + snr**2)), rtol=1e-10, atol=1e-12
        )
        torch.testing.assert_close(mollifier(x), by_dct(x, m), rtol=1e-10, atol=1e-12)
    assert GaussianMollifier() == GaussianMollifier(1.0, 0.05)  # ∞-Diff's defaults


@pytest.mark.parametrize("factor", [1.0, 1.5, 2.0])
def test_noise_multiplier_at_and_above_one_is_factor_times_the_gaussian(factor: float) -> None:
    """From ``f = 1`` on (the bound included) the noise is ``T'(f z)``, never the folded field."""
    mollifier = GaussianMollifier(1.0).scaled(factor)
    got = mollifier.noise_multiplier(8, 6, factor)
    np.testing.assert_allclose(got.numpy(), factor * gaussian_multiplier(factor, 8, 6), rtol=1e-14, atol=0)
    assert torch.equal(mollifier.noise_multiplier(8, 6), mollifier.multiplier(8, 6))  # f = 1 by default


def test_noise_multiplier_below_one_is_factor_times_the_folded_field() -> None:
    mollifier = GaussianMollifier(1.0).scaled(0.5)
    expected = 0.5 * np.outer(folded(0.5, 4), folded(0.5, 6))
    np.testing.assert_allclose(mollifier.noise_multiplier(4, 6, 0.5).numpy(), expected, rtol=1e-13, atol=0)
    z = torch.randn(3, 4, 6, generator=gen(1), dtype=torch.float64)  # any leading shape
    torch.testing.assert_close(mollifier.noise(z, 0.5), by_dct(z, expected), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        mollifier.noise(z), by_dct(z, gaussian_multiplier(0.5, 4, 6)), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: GaussianMollifier(-1.0), r"^std must be >= 0, got -1\.0$"),
        (lambda: GaussianMollifier(1.0, -0.1), r"^wiener_inverse_snr must be >= 0, got -0\.1$"),
        (lambda: GaussianMollifier(1.0).scaled(0.0), r"^factor must be > 0, got 0\.0$"),
        (lambda: GaussianMollifier(1.0).noise_multiplier(4, 4, -2.0), r"^factor must be > 0, got -2\.0$"),
        (
            lambda: GaussianMollifier(0.0).folded_multiplier(4, 4),
            r"^folded_multiplier needs std > 0: white noise \(std=0\) has no point values$",
        ),
        (lambda: resolution_factor(0, 8), r"^train_resolution must be positive, got 0$"),
        (lambda: resolution_factor(8, (0, 8)), r"^resolution must be positive, got \(0, 8\)$"),
    ],
)
def test_refusals_name_the_argument(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_no_blur_and_no_wiener_regularisation_are_accepted() -> None:
    x = torch.randn(1, 4, 4, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(GaussianMollifier(0.0)(x), x)
    sharp = GaussianMollifier(1.0, 0.0)
    torch.testing.assert_close(sharp.deblur(sharp(x)), x)  # the plain inverse 1 / m


def test_gaussian_data_eps_defaults_to_the_training_grid_and_keeps_the_states_dtype() -> None:
    mollifier = GaussianMollifier(1.0)
    x_t = torch.randn(2, 1, 4, 5, generator=gen(3))
    mean = torch.zeros(1, 1, 4, 5, dtype=torch.float64) + 0.1  # another dtype than the state's
    plain = gaussian_data_eps(x_t, AB[40], mollifier, mean, 0.3)
    torch.testing.assert_close(plain, gaussian_data_eps(x_t, AB[40], mollifier, mean, 0.3, 1.0))
    assert plain.dtype == torch.float32
    folded_gain = gaussian_data_eps(x_t, AB[40], mollifier.scaled(0.5), mean, 0.3, 0.5)
    assert folded_gain.dtype == torch.float32


@pytest.mark.parametrize("factor", [1.0, 1.5, 8.0])
def test_gaussian_data_eps_at_and_above_one_is_the_scalar_gain_even_where_the_blur_underflows(
    factor: float,
) -> None:
    """From f = 1 on the gain is one number per sample, so a wide blur (std 8: its top modes underflow to
    0 in float64) cannot turn the per-mode ratio 0 / 0 into NaN."""
    mollifier = GaussianMollifier(8.0)
    x_t = torch.randn(2, 1, 16, 16, generator=gen(10), dtype=torch.float64)
    ab, std = torch.tensor([0.5, 0.3], dtype=torch.float64), 0.5
    mean = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    got = gaussian_data_eps(x_t, ab, mollifier, mean, std, factor)
    gain = (1 - ab).sqrt() * factor**2 / (ab * std**2 + (1 - ab) * factor**2)
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got, gain.reshape(-1, 1, 1, 1) * x_t, rtol=1e-12, atol=0)


def test_gaussian_data_eps_below_one_conditions_each_mode_for_unit_data_std_too() -> None:
    """At ``f < 1`` the gain is per DCT mode for every data std but 0 (std = 1 included)."""
    ab, std, factor = float(AB[30]), 1.0, 0.5
    mollifier = GaussianMollifier(1.0).scaled(factor)
    x_t = torch.randn(2, 1, 4, 6, generator=gen(4), dtype=torch.float64)
    mean = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
    m2 = gaussian_multiplier(0.5, 4, 6) ** 2
    n2 = (factor * np.outer(folded(0.5, 4), folded(0.5, 6))) ** 2
    gain = math.sqrt(1 - ab) * n2 / (ab * m2 * std**2 + (1 - ab) * n2)
    expected = by_dct(x_t, gain)
    torch.testing.assert_close(gaussian_data_eps(x_t, AB[30], mollifier, mean, std, factor), expected)


def test_gaussian_data_eps_moves_its_tables_to_the_states_device(monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[tuple] = []
    Recorded = to_recorder(moved, keep=True)  # what is computed from a table is recorded too
    for name in ("multiplier", "noise_multiplier"):
        real = getattr(GaussianMollifier, name)
        monkeypatch.setattr(
            GaussianMollifier, name, lambda self, *a, _real=real: _real(self, *a).as_subclass(Recorded)
        )
    x_t = torch.randn(1, 1, 4, 6, generator=gen(5))
    ab = torch.tensor([0.4], dtype=torch.float64).as_subclass(Recorded)
    gaussian_data_eps(x_t, ab, GaussianMollifier(0.5), torch.zeros(1, 1, 4, 6), 0.3, 0.5)
    assert (None,) not in moved and moved.count((x_t.device,)) >= 3, moved  # both multipliers, alpha_bar


def test_initial_state_defaults_to_the_training_grid_and_draws_where_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mollifier = GaussianMollifier(1.0)
    state = mollified_initial_state((2, 1, 4, 4), mollifier, generator=gen(6), dtype=torch.float64)
    white = torch.randn(2, 1, 4, 4, generator=gen(6), dtype=torch.float64)
    torch.testing.assert_close(state, mollifier(white))
    assert mollified_initial_state((1, 1, 4, 4), mollifier).dtype == torch.float32
    draws = record_calls(monkeypatch, mollified, "randn")
    mollified_initial_state((1, 1, 4, 4), mollifier, 2.0, None, "cpu", torch.float64)
    called = bound_arguments(randn, draws[0])
    assert (called["device"], called["dtype"]) == ("cpu", torch.float64)


def test_mollified_sample_is_the_registered_sampler_with_the_mollified_noise() -> None:
    """Same draws, same result as the Gaussian registry's sampler given ``T(f z)`` as its noise operator and
    every setting passed on; the defaults are DDIM, eta 0, f = 1, no bar."""
    factor = 2.0
    mollifier = GaussianMollifier(1.0).scaled(factor)
    x_T = 2 * torch.randn(2, 1, 8, 8, generator=gen(7), dtype=torch.float64)
    eps_fn = lambda x, t: 0.5 * x - 0.01 * t.double().reshape(-1, 1, 1, 1)  # noqa: E731
    for sampler, eta in (("ddim", 0.7), ("ddpm", 0.0)):
        seen: list[StepInfo] = []
        ours = mollified_sample(
            eps_fn,
            x_T,
            AB,
            [90, 50, 10],
            mollifier,
            factor,
            sampler=sampler,
            eta=eta,
            generator=gen(8),
            clip_x0=0.3,
            eps_after_clip="from_x0",
            callback=seen.append,
        )
        settings = SamplerSettings(
            eta=eta, clip_x0=0.3, eps_after_clip="from_x0", noise_operator=lambda z: mollifier(factor * z)
        )
        ref = get_sampler(GAUSSIAN, sampler).fn(eps_fn, x_T, AB, [90, 50, 10], settings, gen(8), None)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        assert [s.t for s in seen] == [90, 50, 10]
    plain = mollified_sample(eps_fn, x_T[..., :4, :4], AB, [90, 10], GaussianMollifier(1.0))
    ddim = get_sampler(GAUSSIAN, "ddim").fn(
        eps_fn,
        x_T[..., :4, :4],
        AB,
        [90, 10],
        SamplerSettings(noise_operator=GaussianMollifier(1.0)),
        None,
        None,
    )
    torch.testing.assert_close(plain, ddim, rtol=0, atol=0)
    small, mollifier = x_T[..., :4, :4], GaussianMollifier(1.0)
    ancestral = mollified_sample(eps_fn, small, AB, [90, 10], mollifier, sampler="ddpm", generator=gen(9))
    unit = mollified_sample(eps_fn, small, AB, [90, 10], mollifier, 1.0, sampler="ddpm", generator=gen(9))
    torch.testing.assert_close(ancestral, unit, rtol=0, atol=0)  # f = 1 by default: the noise is T z


def test_mollified_sample_shows_a_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    x_T = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    mollified_sample(lambda x, t: x, x_T, AB, [50, 10], GaussianMollifier(1.0))
    assert capsys.readouterr().err == ""
    mollified_sample(lambda x, t: x, x_T, AB, [50, 10], GaussianMollifier(1.0), progress=True)
    assert "2/2" in capsys.readouterr().err
