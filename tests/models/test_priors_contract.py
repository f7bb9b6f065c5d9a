"""The multilevel priors' contract beyond their spectra (``tests/core/test_operators.py`` and
``test_oracle_multilevel_priors.py`` hold the laws): every refusal word for word, the smallest legal
grid of the inverse Laplacian, composites that hold their parts as a tuple (hashable, as a frozen
dataclass should be), and draws made where the caller asks."""

from __future__ import annotations

import math

import pytest
import torch

from rezdiff.core.gaussian import randn
from rezdiff.models.multilevel import priors
from rezdiff.models.multilevel.priors import InverseLaplacian, Matern, SumCovariance
from tests.helpers import bound_arguments, record_calls


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: InverseLaplacian(boundary="zero"),
            r"^unknown boundary 'zero'; expected one of \('periodic', 'reflect'\)$",
        ),
        (
            lambda: InverseLaplacian(zero_mode="mean"),
            r"^unknown zero_mode 'mean'; expected one of \('drop', 'lowest'\)$",
        ),
        (
            lambda: InverseLaplacian(laplacian="nine"),
            r"^unknown laplacian 'nine'; expected one of \('five_point', 'spectral'\)$",
        ),
        (lambda: InverseLaplacian(power=0.0), r"^power must be > 0, got 0\.0$"),
        (
            lambda: Matern(laplacian="nine"),
            r"^unknown laplacian 'nine'; expected one of \('five_point', 'spectral'\)$",
        ),
        (lambda: Matern(tau=0.0), r"^tau must be > 0, got 0\.0$"),
        (lambda: Matern(power=-1.0), r"^power must be > 0, got -1\.0$"),
        (lambda: SumCovariance(()), r"^SumCovariance needs at least one covariance$"),
        (
            lambda: Matern() + Matern(boundary="reflect"),
            r"^cannot combine covariances with boundaries \['periodic', 'reflect'\] in a SumCovariance: "
            r"their eigenbases \(Fourier vs cosine\) differ; build every part with the same boundary$",
        ),
    ],
)
def test_refusals_name_the_argument_and_the_choices(build, message) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_the_inverse_laplacian_needs_two_pixels_and_no_more() -> None:
    with pytest.raises(ValueError, match=r"^the inverse Laplacian needs a grid with at least two pixels$"):
        InverseLaplacian().sqrt_spectrum(1, 1)
    for height, width in ((1, 2), (2, 1)):
        # two periodic modes: the constant one takes the other's eigenvalue (2 pi)^2, so sigma is flat
        expected = torch.full((height, width), (2 * math.pi) ** (-2 * 0.55), dtype=torch.float64)
        torch.testing.assert_close(InverseLaplacian().sqrt_spectrum(height, width), expected)
    sigma = InverseLaplacian().sqrt_spectrum(1, 3)
    assert sigma.shape == (1, 3) and bool(torch.isfinite(sigma).all())


def test_a_composite_holds_its_parts_as_a_tuple() -> None:
    parts = [Matern(), InverseLaplacian()]
    combined = SumCovariance(parts)  # type: ignore[arg-type]
    assert combined.parts == tuple(parts) and isinstance(combined.parts, tuple)
    assert hash(combined) == hash(SumCovariance(tuple(parts)))
    assert combined == Matern() + InverseLaplacian()


def test_a_draw_is_made_on_the_device_and_in_the_dtype_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = record_calls(monkeypatch, priors, "randn")
    generator = torch.Generator().manual_seed(0)
    sample = Matern().sample((2, 1, 4, 4), generator, "cpu", torch.float64)
    called = bound_arguments(randn, draws[0])
    assert (called["generator"], called["device"], called["dtype"]) == (generator, "cpu", torch.float64)
    assert sample.dtype == torch.float64 and Matern().sample((1, 4, 4)).dtype == torch.float32
    white = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(sample, Matern().sqrt(white))  # C^{1/2} of the draw asked for
