"""Linear operators on fields: the orthonormal DCT, ∞-Diff's mollifier and the trace-class covariances.

References are independent of the code under test: scipy's DCT and Gaussian filter, closed-form
eigenvalues, explicit 5-point stencil matrices with their matrix functions computed by ``eigh``, and
Monte-Carlo estimates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from rezdiff.core.gaussian import q_sample, vp_reverse_step
from rezdiff.core.operators import dct2, dct_pixel_variance, idct2, laplacian_eigenvalues
from rezdiff.models.infty_diff.mollifier import GaussianMollifier
from rezdiff.models.multilevel.priors import (
    AuthorsFNOPrior,
    CombinedCovariance,
    FNOPrior,
    InverseLaplacian,
    Matern,
    SumCovariance,
    WhiteNoise,
)
from tests.helpers import gen

if TYPE_CHECKING:  # annotations only
    from rezdiff.models.multilevel.priors import Covariance

F64 = torch.float64


def operator_matrix(fn, height: int, width: int) -> torch.Tensor:
    """The matrix of a linear map on ``H x W`` images (column ``j`` = image of basis vector ``j``)."""
    d = height * width
    basis = torch.eye(d, dtype=F64).reshape(d, height, width)
    return fn(basis).reshape(d, d).T


def second_difference(n: int, boundary: str) -> torch.Tensor:
    """``-d^2/ds^2`` on ``n`` cell centres of ``[0, 1]`` (spacing ``1/n``): periodic or reflecting ghosts."""
    eye = torch.eye(n, dtype=F64)
    if boundary == "periodic":
        d = 2 * eye - eye.roll(1, 0) - eye.roll(-1, 0)
    else:
        d = (
            2 * eye
            - torch.diag(torch.ones(n - 1, dtype=F64), 1)
            - torch.diag(torch.ones(n - 1, dtype=F64), -1)
        )
        d[0, 0] -= 1.0  # each ghost cell mirrors its boundary cell (both ends of a 1-cell grid)
        d[-1, -1] -= 1.0
    return n**2 * d


def stencil_laplacian(height: int, width: int, boundary: str) -> torch.Tensor:
    """The 5-point ``-Δ_h`` as an explicit ``HW x HW`` matrix (row-major pixels)."""
    eye_h, eye_w = torch.eye(height, dtype=F64), torch.eye(width, dtype=F64)
    return torch.kron(second_difference(height, boundary), eye_w) + torch.kron(
        eye_h, second_difference(width, boundary)
    )


def coefficients(x: torch.Tensor, boundary: str) -> torch.Tensor:
    """Coefficients in the unit-RMS basis (the module's convention), computed independently of it."""
    height, width = x.shape[-2:]
    if boundary == "periodic":
        return torch.fft.fft2(x, norm="forward")
    return torch.from_numpy(scipy.fft.dctn(x.numpy(), norm="ortho", axes=(-2, -1))) / math.sqrt(
        height * width
    )


# --------------------------------------------------------------------------------------------------------
# DCT
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 7, 10), (8, 8), (4, 1, 5), (9, 1), (1, 1), (5, 6, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dct2_and_idct2_match_scipy(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.randn(shape, generator=gen(), dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    expected = scipy.fft.dctn(x.numpy(), norm="ortho", axes=(-2, -1))
    assert dct2(x).dtype == dtype
    torch.testing.assert_close(dct2(x), torch.from_numpy(expected), **tol)
    expected_inv = scipy.fft.idctn(x.numpy(), norm="ortho", axes=(-2, -1))
    torch.testing.assert_close(idct2(x), torch.from_numpy(expected_inv), **tol)
    torch.testing.assert_close(idct2(dct2(x)), x, **tol)


def test_dct2_gradient_and_input_checks() -> None:
    x = torch.randn(2, 5, 6, generator=gen(1), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(dct2, (x,))
    assert torch.autograd.gradcheck(idct2, (x,))
    xb = torch.randn(3, 8, 8, generator=gen(2)).to(torch.bfloat16)
    assert dct2(xb).dtype == torch.bfloat16
    torch.testing.assert_close(dct2(xb), dct2(xb.float()).to(torch.bfloat16))
    with pytest.raises(TypeError, match="floating"):
        dct2(torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W\]"):
        dct2(torch.ones(4))


def test_dct_pixel_variance_is_the_diagonal_of_the_dense_covariance() -> None:
    """diag(L L^T) of L = idct2(m * dct2(.)) on a non-square grid, L built column by column."""
    multiplier = torch.rand(5, 7, generator=gen(3), dtype=F64) + 0.1
    eye = torch.eye(35, dtype=F64).reshape(35, 5, 7)
    columns = idct2(multiplier * dct2(eye)).reshape(35, 35)  # row p: L applied to pixel p's indicator
    expected = (columns.T @ columns).diagonal().reshape(5, 7)
    torch.testing.assert_close(dct_pixel_variance(multiplier), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------------
# Gaussian mollifier
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("std", [1.0, 2.0])
def test_mollifier_matches_scipy_gaussian_filter(std: float) -> None:
    x = torch.rand(2, 3, 20, 33, generator=gen(), dtype=F64) * 2 - 1
    expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, std, std), mode="reflect")
    assert float((GaussianMollifier(std)(x) - torch.from_numpy(expected)).abs().max()) < 5e-3
    # the same in float32, and the DCT-domain form exp(-(u^2 + v^2) / (2 s^2)), s = N / (pi std)
    y = GaussianMollifier(std)(x.float())
    assert y.dtype == torch.float32 and float((y.double() - torch.from_numpy(expected)).abs().max()) < 5e-3
    n = 24
    s = n / (math.pi * std)
    u = torch.arange(n, dtype=F64)
    torch.testing.assert_close(
        GaussianMollifier(std).multiplier(n, n), torch.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * s**2))
    )


def test_mollifier_is_self_adjoint_and_a_semigroup() -> None:
    t = GaussianMollifier(1.3)
    m = operator_matrix(t, 6, 9)
    torch.testing.assert_close(m, m.T)
    assert float(torch.linalg.eigvalsh(m).min()) > 0
    # Gaussians compose: T_s T_s = T_{s sqrt 2}
    torch.testing.assert_close(m @ m, operator_matrix(GaussianMollifier(1.3 * math.sqrt(2)), 6, 9))


def test_deblur_inverts_blur_on_a_smooth_image() -> None:
    h, w = 64, 48
    i = (torch.arange(h, dtype=F64)[:, None] + 0.5) / h
    j = (torch.arange(w, dtype=F64)[None, :] + 0.5) / w
    smooth = 0.6 * torch.cos(math.pi * 2 * i) * torch.cos(math.pi * j) + 0.3 * torch.exp(
        -((i - 0.4) ** 2 + (j - 0.6) ** 2) / 0.05
    )
    t = GaussianMollifier(1.0)
    assert float((t(smooth) - smooth).abs().max()) > 1e-3  # the blur does something
    assert float((t.deblur(t(smooth)) - smooth).abs().max()) < 3e-3
    # the Wiener inverse cannot recover the fine detail the blur removed
    noise = torch.randn(h, w, generator=gen(), dtype=F64)
    assert float((t.deblur(t(noise)) - noise).square().mean()) > 0.1


def test_mollifier_precision_under_bf16_autocast() -> None:
    t = GaussianMollifier(1.0)
    x = torch.randn(2, 3, 16, 20, generator=gen(), dtype=torch.float32)
    reference = t(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = t(x)
        yb = t(x.to(torch.bfloat16))
        d = t.deblur(x)
    assert y.dtype == torch.float32 and d.dtype == torch.float32
    torch.testing.assert_close(y, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(d, t.deblur(x), atol=1e-6, rtol=1e-6)
    # bf16 in, bf16 out, but computed in fp32: exactly the fp32 result of the bf16 input, rounded once
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb, t(x.to(torch.bfloat16).float()).to(torch.bfloat16), atol=0, rtol=0)


@pytest.mark.parametrize("std", [1.0, 2.0])
def test_blurred_white_noise_variance(std: float) -> None:
    """Interior variance of ``T eps`` is ``sum_q T[p, q]^2 = 1 / (4 pi std^2)``; ∞-Diff's rule for another
    resolution (std and noise both times ``R / R0``) keeps it, and even keeps the law on the coarse modes."""
    t = GaussianMollifier(std)
    h, w = 40, 48
    delta = torch.zeros(h, w, dtype=F64)
    delta[h // 2, w // 2] = 1.0
    exact = float(t(delta).square().sum())
    assert exact == pytest.approx(1 / (4 * math.pi * std**2), rel=1e-3)
    samples = t(torch.randn(2000, 32, 32, generator=gen(), dtype=F64))
    interior = samples[:, 10:22, 10:22].var(dim=0).mean()
    assert float(interior) == pytest.approx(1 / (4 * math.pi * std**2), rel=0.03)
    # twice the resolution: std * 2 and noise * 2
    fine = torch.zeros(2 * h, 2 * w, dtype=F64)
    fine[h, w] = 2.0
    assert float(t.scaled(2.0)(fine).square().sum()) == pytest.approx(exact, rel=1e-4)
    torch.testing.assert_close(t.scaled(2.0).multiplier(2 * h, 2 * w)[:h, :w], t.multiplier(h, w))


# --------------------------------------------------------------------------------------------------------
# Covariances: spectra and exact identities
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("boundary", ["periodic", "reflect"])
@pytest.mark.parametrize("size", [(6, 8), (5, 7), (1, 4)])
def test_laplacian_eigenvalues_closed_form_and_stencil(boundary: str, size: tuple[int, int]) -> None:
    h, w = size
    got = laplacian_eigenvalues(h, w, boundary, "five_point")
    spectral = laplacian_eigenvalues(h, w, boundary, "spectral")
    # the default is the exact -Δ, as in the priors
    torch.testing.assert_close(laplacian_eigenvalues(h, w, boundary), spectral, atol=0.0, rtol=0.0)
    for a in range(h):
        for b in range(w):
            if boundary == "periodic":
                k1 = a if a < (h + 1) // 2 else a - h  # fftfreq order
                k2 = b if b < (w + 1) // 2 else b - w
                five = 4 * h**2 * math.sin(math.pi * k1 / h) ** 2 + 4 * w**2 * math.sin(math.pi * k2 / w) ** 2
                exact = 4 * math.pi**2 * (k1**2 + k2**2)
            else:
                five = (
                    4 * h**2 * math.sin(math.pi * a / (2 * h)) ** 2
                    + 4 * w**2 * math.sin(math.pi * b / (2 * w)) ** 2
                )
                exact = math.pi**2 * (a**2 + b**2)
            assert float(got[a, b]) == pytest.approx(five, abs=1e-9)
            assert float(spectral[a, b]) == pytest.approx(exact, abs=1e-9)
    # and they are the matrix eigenvalues of the explicit 5-point stencil
    stencil = torch.linalg.eigvalsh(stencil_laplacian(h, w, boundary))
    torch.testing.assert_close(stencil, got.flatten().sort().values, atol=1e-9, rtol=1e-9)


def _matrix_power(lap: torch.Tensor, shift: float, power: float, zero_mode: str | None) -> torch.Tensor:
    """``(shift + lap)^(-power)`` by eigendecomposition, with the inverse Laplacian's zero-mode rule."""
    mu, vec = torch.linalg.eigh(lap + shift * torch.eye(lap.shape[0], dtype=F64))
    f = mu.clamp(min=1e-300) ** (-power)
    if zero_mode is not None:  # eigh sorts: mu[0] = 0 is the constant mode
        assert abs(float(mu[0])) < 1e-8 and float(mu[1]) > 1e-3
        f[0] = mu[1] ** (-power) if zero_mode == "lowest" else 0.0
    return vec @ torch.diag(f) @ vec.T


@pytest.mark.parametrize("boundary", ["periodic", "reflect"])
@pytest.mark.parametrize("size", [(6, 8), (5, 7), (4, 3)])
def test_sqrt_is_the_matrix_function_of_the_5_point_stencil(boundary: str, size: tuple[int, int]) -> None:
    """Even and odd sizes: ``C^{1/2} / sqrt(HW)`` equals the matrix power of the explicit stencil."""
    h, w = size
    lap = stencil_laplacian(h, w, boundary)
    cases = [
        (
            InverseLaplacian(0.55, 1.7, "lowest", "five_point", boundary=boundary),
            _matrix_power(lap, 0.0, 0.55, "lowest") * 1.7,
        ),
        (
            InverseLaplacian(0.8, zero_mode="drop", laplacian="five_point", boundary=boundary),
            _matrix_power(lap, 0.0, 0.8, "drop"),
        ),
        (Matern(8.0, 0.55, laplacian="five_point", boundary=boundary), _matrix_power(lap, 8.0, 0.55, None)),
        (
            Matern(100.0, 0.7, 0.5, "five_point", boundary=boundary),
            0.5 * _matrix_power(lap, 100.0, 0.7, None),
        ),
        (WhiteNoise(0.3, boundary=boundary), 0.3 * torch.eye(h * w, dtype=F64)),
    ]
    for cov, expected in cases:
        got = operator_matrix(cov.sqrt, h, w) / math.sqrt(h * w)
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9, msg=repr(cov))


def test_zero_mode_and_spectrum_closed_forms() -> None:
    lam = laplacian_eigenvalues(16, 12, laplacian="five_point")
    lowest = InverseLaplacian(0.55, 2.0, laplacian="five_point").sqrt_spectrum(16, 12)
    drop = InverseLaplacian(0.55, 2.0, zero_mode="drop", laplacian="five_point").sqrt_spectrum(16, 12)
    torch.testing.assert_close(lowest.flatten()[1:], 2.0 * lam.flatten()[1:] ** -0.55)
    assert float(drop[0, 0]) == 0.0 and float(lowest[0, 0]) == pytest.approx(float(lowest.max()))
    assert float(lowest[0, 0]) == pytest.approx(2.0 * (4 * 12**2 * math.sin(math.pi / 12) ** 2) ** -0.55)
    for boundary, first in [("periodic", 4 * math.pi**2), ("reflect", math.pi**2)]:
        s = InverseLaplacian(laplacian="spectral", boundary=boundary).sqrt_spectrum(8, 8)
        assert float(s[0, 0]) == pytest.approx(first**-0.55)
    torch.testing.assert_close(Matern(8.0, laplacian="five_point").spectrum(16, 12), (8.0 + lam) ** -1.1)
    exact = laplacian_eigenvalues(16, 12, laplacian="spectral")
    torch.testing.assert_close(Matern(8.0).spectrum(16, 12), (8.0 + exact) ** -1.1)  # the default
    torch.testing.assert_close(WhiteNoise(0.5).spectrum(3, 5), torch.full((3, 5), 0.25, dtype=F64))


COVARIANCES = [
    WhiteNoise(0.7),
    InverseLaplacian(),
    InverseLaplacian(laplacian="five_point"),
    InverseLaplacian(zero_mode="drop", laplacian="spectral"),
    Matern(100.0),
    FNOPrior(2, seed=3),
    InverseLaplacian(power=0.6) + FNOPrior(2),
    InverseLaplacian(boundary="reflect"),
    Matern(boundary="reflect", laplacian="spectral"),
    FNOPrior(3, boundary="reflect"),
    AuthorsFNOPrior(2, 2, seed=1),
    CombinedCovariance((InverseLaplacian(zero_mode="drop"), AuthorsFNOPrior(2, 2, scale=0.3))),
]


@pytest.mark.parametrize("cov", COVARIANCES, ids=repr)
@pytest.mark.parametrize("size", [(6, 8), (5, 7)])
def test_sqrt_squared_is_apply_self_adjoint_and_psd(cov: Covariance, size: tuple[int, int]) -> None:
    h, w = size
    x = torch.randn(2, 3, h, w, generator=gen(), dtype=F64)
    torch.testing.assert_close(cov.sqrt(cov.sqrt(x)), cov.apply(x))
    torch.testing.assert_close(cov(x), cov.sqrt(x))
    root = operator_matrix(cov.sqrt, h, w)
    full = operator_matrix(cov.apply, h, w)
    torch.testing.assert_close(root, root.T)
    torch.testing.assert_close(full, full.T)
    assert float(torch.linalg.eigvalsh(root).min()) > -1e-9
    # the grid covariance's eigenvalues are HW times the spectrum, its diagonal the per-pixel variance
    # (the same at every pixel for periodic noise, which is stationary; on average for reflect)
    torch.testing.assert_close(
        torch.linalg.eigvalsh(full), (h * w * cov.spectrum(h, w)).flatten().sort().values
    )
    variance = torch.tensor(cov.pixel_variance(h, w), dtype=F64)
    torch.testing.assert_close(full.diagonal().mean(), variance)
    if cov.boundary == "periodic":
        torch.testing.assert_close(full.diagonal(), variance.expand(h * w))


@pytest.mark.parametrize(
    "cov", [InverseLaplacian(power=0.3), Matern(boundary="reflect"), FNOPrior(2)], ids=repr
)
def test_sample_covariance_matches_spectrum(cov: Covariance) -> None:
    """Monte Carlo: ``sample``'s covariance is ``apply``'s matrix, its mode variances ``spectrum``."""
    n, (h, w) = 20000, (6, 8)
    x = cov.sample((n, h, w), generator=gen(), dtype=F64)
    empirical = x.reshape(n, -1).T @ x.reshape(n, -1) / n
    exact = operator_matrix(cov.apply, h, w)
    assert float((empirical - exact).abs().max()) < 0.05 * float(exact.diagonal().max())
    modes = coefficients(x, cov.boundary).abs().square().mean(dim=0)
    lam = cov.spectrum(h, w)
    torch.testing.assert_close(modes, lam, atol=1e-12, rtol=0.08)


# --------------------------------------------------------------------------------------------------------
# Trace class and resolution consistency
# --------------------------------------------------------------------------------------------------------


def _local_average_variance(cov: Covariance, n: int) -> float:
    """Exact variance of a sample's mean over the physical quadrant ``[0, 1/2]^2`` of an ``n x n`` grid."""
    v = torch.zeros(n, n, dtype=F64)
    v[: n // 2, : n // 2] = 1.0 / (n // 2) ** 2
    return float((v * cov.apply(v)).sum())


@pytest.mark.parametrize(
    "cov",
    [
        InverseLaplacian(),
        Matern(8.0),
        Matern(100.0),
        InverseLaplacian(laplacian="spectral", boundary="reflect"),
    ],
    ids=repr,
)
def test_trace_class_pixel_variance_converges(cov: Covariance) -> None:
    """Per-pixel variance ``sum lambda_k`` (exact, from the spectrum) increases with ``n`` by increments
    that shrink geometrically, at the rate ``2^(2 - 4 power)`` of the tail ``sum_{|k| > n/2} |k|^(-4 power)``:
    a convergent series. Local averages over a fixed region converge too, to a non-zero limit."""
    sizes = (32, 64, 128, 256)
    var = [cov.pixel_variance(n, n) for n in sizes]
    steps = np.diff(var)
    assert (steps > 0).all()
    ratios = steps[1:] / steps[:-1]
    assert np.allclose(ratios, 2 ** (2 - 4 * cov.power), atol=0.03), ratios
    local = [_local_average_variance(cov, n) for n in sizes]
    assert local[-1] > 0.01 and abs(local[-1] - local[-2]) < 0.01 * local[-1]


def test_white_noise_is_not_trace_class() -> None:
    """White noise under the function-value convention.

    The per-pixel variance of the naive discretisation is 1 by construction, so "divergence" must be read
    at fixed *physical* scales. ``WhiteNoise()`` (``C = I`` on functions, ``lambda_k = 1`` on every mode) is
    the same random object at every resolution: averages over a fixed region have variance ``1 / area``
    at every ``n``, but the per-pixel variance, the trace ``sum_k lambda_k = n^2``, grows without bound: it
    is not a function. The naive "unit variance per pixel at every ``n``" is ``WhiteNoise(1/n)``: a
    different law at each resolution, whose local averages vanish like ``1 / n^2``. Trace-class noise has
    both a finite per-pixel variance and non-vanishing local averages.
    """
    sizes = (32, 64, 128, 256)
    white = WhiteNoise()
    for n in sizes:
        assert white.pixel_variance(n, n) == pytest.approx(n * n)
        assert _local_average_variance(white, n) == pytest.approx(4.0)  # 1 / area of [0, 1/2]^2
        naive = WhiteNoise(1.0 / n)
        assert naive.pixel_variance(n, n) == pytest.approx(1.0)
        assert _local_average_variance(naive, n) == pytest.approx(4.0 / n**2)
        torch.testing.assert_close(naive(torch.ones(n, n, dtype=F64)), torch.ones(n, n, dtype=F64))
    trace_class = [InverseLaplacian().pixel_variance(n, n) for n in sizes]
    assert max(trace_class) < 0.5


LAW_CASES = [
    InverseLaplacian(laplacian="spectral"),
    Matern(100.0, laplacian="spectral"),
    Matern(),
    Matern(boundary="reflect"),
    FNOPrior(6, seed=1),
    InverseLaplacian(laplacian="spectral") + FNOPrior(4),
    InverseLaplacian(laplacian="spectral", boundary="reflect"),
    FNOPrior(6, boundary="reflect"),
    CombinedCovariance((InverseLaplacian(scale=10.0, zero_mode="drop"), AuthorsFNOPrior(10, 10, scale=0.5))),
]


def _coarse_band(n: int, boundary: str) -> torch.Tensor:
    """Wave numbers of the modes of an ``n``-grid that a real grid holds as full modes (no even Nyquist)."""
    if boundary == "periodic":
        return torch.arange(-((n - 1) // 2), (n - 1) // 2 + 1)
    return torch.arange(n)


def _on_band(spectrum: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Entries of a spectrum at the wave numbers ``band`` (negative ones wrap, as in fftfreq order)."""
    return spectrum[band[:, None], band[None, :]]


@pytest.mark.parametrize("cov", LAW_CASES, ids=repr)
def test_law_consistency_exact(cov: Covariance) -> None:
    """Fourier-truncating a 128^2 sample to the modes of a 32^2 grid has the law of a 32^2 sample: both are
    centred Gaussians diagonal in the same basis, so the spectra must agree on the coarse band."""
    band = _coarse_band(32, cov.boundary)
    torch.testing.assert_close(_on_band(cov.spectrum(128, 128), band), _on_band(cov.spectrum(32, 32), band))


@pytest.mark.parametrize("boundary", ["periodic", "reflect"])
def test_five_point_law_consistency_improves_with_resolution(boundary: str) -> None:
    """With the paper's 5-point stencil the low modes of an ``n`` and a ``4n`` grid differ by the stencil's
    O((k/n)^2) error (a few % at n = 32 for |k| <= 4), shrinking about 4x per doubling of ``n``."""
    low = _coarse_band(9, boundary)
    cov = InverseLaplacian(laplacian="five_point", boundary=boundary)
    errors = [
        float((_on_band(cov.spectrum(4 * n, 4 * n), low) / _on_band(cov.spectrum(n, n), low) - 1).abs().max())
        for n in (32, 64, 128)
    ]
    assert 0.01 < errors[0] < 0.08 and errors[1] < errors[0] / 3.5 and errors[2] < errors[1] / 3.5, errors


def _up_to_nyquist(n: int, boundary: str) -> torch.Tensor:
    """Every wave number of an ``n``-grid, the even periodic grid's Nyquist ``-n/2`` included."""
    if boundary == "periodic":
        return torch.arange(-(n // 2), (n - 1) // 2 + 1)
    return torch.arange(n)


def _coarse_to_fine_ratios(cov: Covariance, n: int, band: torch.Tensor, fine: int = 128) -> torch.Tensor:
    """Variance of each mode of ``band`` on the ``n``-grid over its variance on the ``fine`` grid."""
    return _on_band(cov.spectrum(n, n), band) / _on_band(cov.spectrum(fine, fine), band)


@pytest.mark.parametrize("boundary", ["periodic", "reflect"])
@pytest.mark.parametrize("kind", [Matern, InverseLaplacian])
def test_default_priors_are_law_consistent_up_to_the_coarse_nyquist(boundary: str, kind: type) -> None:
    """Every mode a 16², 32² or 64² grid holds, Nyquist included, has the variance it has on 128² with
    the default (spectral) Laplacian; the paper's 5-point stencil misses by > 2x near the coarse Nyquist."""
    for n in (16, 32, 64):
        band = _up_to_nyquist(n, boundary)
        default = _coarse_to_fine_ratios(kind(boundary=boundary), n, band)
        assert float((default - 1).abs().max()) < 1e-9
        five_point = _coarse_to_fine_ratios(kind(laplacian="five_point", boundary=boundary), n, band)
        assert float(five_point.max()) > 2.0 and float(five_point.min()) >= 1.0 - 1e-12


def test_five_point_matern_error_as_documented() -> None:
    """The figures in ``core/operators.py`` and the multilevel README: ``Matern(8)`` with the 5-point
    stencil, coarse grid against 128², over the modes strictly inside the coarse band."""
    cov = Matern(8.0, laplacian="five_point")
    fine = cov.spectrum(128, 128)
    expected = {16: (2.074, 0.107), 32: (2.252, 0.086), 64: (2.033, 0.058)}
    for n, (worst, excess) in expected.items():
        band = _coarse_band(n, "periodic")
        assert float(_coarse_to_fine_ratios(cov, n, band).max()) == pytest.approx(worst, abs=1e-3)
        total = _on_band(cov.spectrum(n, n), band).sum() / _on_band(fine, band).sum()
        assert float(total) - 1 == pytest.approx(excess, abs=1e-3)


@pytest.mark.parametrize("cov", [LAW_CASES[0], LAW_CASES[4], LAW_CASES[6]], ids=repr)
def test_law_consistency_monte_carlo(cov: Covariance) -> None:
    """Low-mode coefficients of 128^2 and 32^2 samples have the variances of the (same) 32^2 spectrum."""
    band = _coarse_band(7, cov.boundary)
    expected = _on_band(cov.spectrum(32, 32), band)
    for n, num in [(128, 300), (32, 1500)]:
        x = cov.sample((num, n, n), generator=gen(n), dtype=F64)
        got = _on_band(coefficients(x, cov.boundary).abs().square().mean(dim=0), band)
        keep = expected > 0
        ratio = got[keep] / expected[keep]
        assert float((ratio - 1).abs().max()) < 0.35 and float(ratio.mean()) == pytest.approx(1.0, abs=0.06)


def test_fno_prior_is_fixed_finite_rank_and_resolution_independent() -> None:
    m = 5
    prior = FNOPrior(m, seed=7, scale=0.8)
    torch.testing.assert_close(prior.table(), FNOPrior(m, seed=7, scale=0.8).table())
    assert not torch.allclose(prior.table(), FNOPrior(m, seed=8, scale=0.8).table())
    band = torch.arange(-m, m + 1)
    reference = _on_band(prior.sqrt_spectrum(12, 12), band)
    for h, w in [(12, 12), (11, 17), (32, 64), (33, 33)]:
        s = prior.sqrt_spectrum(h, w)
        torch.testing.assert_close(s[band[:, None], band[None, :]], reference)
        assert int((s > 0).sum()) == (2 * m + 1) ** 2  # finite rank, nothing outside the modes
        assert prior.pixel_variance(h, w) == pytest.approx(0.64)  # trace C = scale^2
    torch.testing.assert_close(reference, reference.flip(0, 1))  # sigma_k = sigma_-k: real samples
    rank = torch.linalg.matrix_rank(operator_matrix(FNOPrior(2).apply, 12, 12), rtol=1e-9)
    assert int(rank) == 25
    # a grid whose Nyquist mode would be mode m drops it (and stays self-adjoint): 10 = 2m
    assert int((prior.sqrt_spectrum(10, 10) > 0).sum()) == (2 * m - 1) ** 2
    root = operator_matrix(FNOPrior(2, seed=4).sqrt, 4, 6)
    torch.testing.assert_close(root, root.T)
    reflect = FNOPrior(m, boundary="reflect").sqrt_spectrum(16, 20)
    assert int((reflect > 0).sum()) == (m + 1) ** 2 and float(reflect[: m + 1, : m + 1].min()) > 0


def test_sum_covariance() -> None:
    a, b, c = InverseLaplacian(power=0.6), Matern(100.0), FNOPrior(3)
    total = a + b + c
    assert isinstance(total, SumCovariance) and total.parts == (a, b, c)
    torch.testing.assert_close(
        total.spectrum(10, 9), a.spectrum(10, 9) + b.spectrum(10, 9) + c.spectrum(10, 9)
    )
    x = torch.randn(2, 10, 9, generator=gen(), dtype=F64)
    torch.testing.assert_close(total.apply(x), a.apply(x) + b.apply(x) + c.apply(x))
    assert not torch.allclose(total.sqrt(x), a.sqrt(x) + b.sqrt(x) + c.sqrt(x))  # roots do not add
    assert total.boundary == "periodic" and (a + b).parts == (a, b)
    with pytest.raises(ValueError, match="boundaries"):
        a + InverseLaplacian(boundary="reflect")
    with pytest.raises(TypeError):
        a + 1.0  # type: ignore[operator]


def _authors_spectral_conv(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The authors' ``SpectralConv2d(1, 1, m1, m2).forward`` on ``[B, H, W]``, rewritten from their code."""
    w1, w2 = weights
    m1, m2 = w1.shape
    x_ft = torch.fft.rfft2(x)
    out = torch.zeros_like(x_ft)
    out[:, :m1, :m2] = x_ft[:, :m1, :m2] * w1
    out[:, -m1:, :m2] = x_ft[:, -m1:, :m2] * w2
    return torch.fft.irfft2(out, s=x.shape[-2:])


def _authors_inverse_laplacian(x: torch.Tensor, power: float = 0.55) -> torch.Tensor:
    """The authors' ``compConv(x, 1 / x**power)`` on a square ``[B, n, n]``: the 5-point stencil's
    symbol by FFT, its modulus to ``-power``, the constant mode (``inf``) set to 0."""
    n = x.shape[-1]
    kernel = torch.zeros(n, n, dtype=x.dtype)
    kernel[0, 0] = 4.0 * n**2
    kernel[1, 0] = kernel[-1, 0] = kernel[0, 1] = kernel[0, -1] = -float(n**2)
    lam = torch.fft.rfft2(kernel).abs() ** -power
    lam[torch.isinf(lam)] = 0.0
    return torch.fft.irfft2(torch.fft.rfft2(x) * lam, s=(n, n))


def test_authors_fno_prior_and_combined_prior_match_the_authors_operators() -> None:
    """Dense oracle: the authors' ``CombinedConv`` ``Q = s L^-0.55 + s2 K`` and ``FNOprior`` ``K`` on a
    10² grid (which holds their whole mode set), as explicit matrices. rezdiff's value convention needs
    ``scale = s / n`` to reproduce them, and then ``apply`` is ``Q Q^T`` exactly."""
    n, m1, m2, seed = 10, 4, 3, 5
    fno = AuthorsFNOPrior(m1, m2, seed=seed, scale=0.5 / n)
    weights = fno.weights()
    assert float(weights.real.min()) >= 0.2 and float(weights.imag.max()) < 0.8
    authors_fno = operator_matrix(lambda v: _authors_spectral_conv(v, weights), n, n)
    lap = operator_matrix(_authors_inverse_laplacian, n, n)
    combined = CombinedCovariance(
        (InverseLaplacian(scale=10.0 / n, zero_mode="drop", laplacian="five_point"), fno)
    )
    authors_q = 10.0 * lap + 0.5 * authors_fno
    torch.testing.assert_close(operator_matrix(combined.apply, n, n), authors_q @ authors_q.T)
    torch.testing.assert_close(operator_matrix(fno.apply, n, n), 0.25 * authors_fno @ authors_fno.T)
    # a sum of covariances (independent draws) is a different law: no cross terms
    summed = combined.parts[0] + combined.parts[1]
    assert not torch.allclose(operator_matrix(summed.apply, n, n), authors_q @ authors_q.T)
    # the mode set: k1 in [-m1, m1), k2 in [0, m2) and mirrors, nothing else
    held = fno.sqrt_spectrum(n, n) > 0
    k = torch.fft.fftfreq(n, 1.0 / n).long()
    k1, k2 = k[:, None], k[None, :]

    def in_half(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a >= -m1) & (a < m1) & (b >= 0) & (b < m2)

    mirrored = in_half(k1, k2) | in_half(-k1, -k2)
    assert torch.equal(held, mirrored) and int(held.sum()) == 2 * m1 * m2 + 2 * m1 * (m2 - 1) + 1


def test_authors_fno_prior_coarse_grids_hold_the_same_function() -> None:
    prior = AuthorsFNOPrior(6, 4, seed=2)
    for n in (8, 12):  # coarser than the mode set: the modes the grid holds in full, nothing aliased
        band = _coarse_band(n, "periodic")
        torch.testing.assert_close(
            _on_band(prior.sqrt_spectrum(n, n), band), _on_band(prior.sqrt_spectrum(64, 64), band)
        )
        assert float(prior.sqrt_spectrum(n, n)[n // 2].abs().max()) == 0.0  # the even grid's Nyquist row
    with pytest.raises(ValueError, match="periodic"):
        AuthorsFNOPrior(boundary="reflect")
    with pytest.raises(ValueError, match="modes1 and modes2"):
        AuthorsFNOPrior(0, 3)
    with pytest.raises(ValueError, match="CombinedCovariance"):
        CombinedCovariance((Matern(), Matern(boundary="reflect")))


# --------------------------------------------------------------------------------------------------------
# Use as noise operators; precision; validation
# --------------------------------------------------------------------------------------------------------


def test_covariance_as_noise_operator() -> None:
    cov = InverseLaplacian(scale=3.0)
    x0 = torch.rand(2, 3, 16, 16, generator=gen(), dtype=F64) * 2 - 1
    eps = torch.randn(2, 3, 16, 16, generator=gen(1), dtype=F64)
    ab = torch.tensor([0.3, 0.9], dtype=F64)
    expected = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * cov.sqrt(eps)
    torch.testing.assert_close(q_sample(x0, eps, ab, noise_operator=cov), expected)
    step = vp_reverse_step(x0, eps, 0.5, 0.4, eps, noise_operator=cov)
    assert step.shape == x0.shape and torch.isfinite(step).all()
    a = cov.sample((2, 3, 16, 16), generator=gen(5))
    torch.testing.assert_close(a, cov.sample((2, 3, 16, 16), generator=gen(5)))
    torch.testing.assert_close(a, cov.sqrt(torch.randn(2, 3, 16, 16, generator=gen(5))))
    assert a.dtype == torch.float32 and a.device.type == "cpu"


def test_covariance_precision_under_bf16_autocast() -> None:
    cov = Matern(boundary="reflect") + FNOPrior(3, boundary="reflect")
    x = torch.randn(2, 12, 10, generator=gen())
    reference = cov(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, yb = cov(x), cov.apply(x.to(torch.bfloat16))
    assert y.dtype == torch.float32 and yb.dtype == torch.bfloat16
    torch.testing.assert_close(y, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(yb, cov.apply(x.to(torch.bfloat16).float()).to(torch.bfloat16), atol=0, rtol=0)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="std"):
        GaussianMollifier(-1.0)
    with pytest.raises(ValueError, match="factor"):
        GaussianMollifier().scaled(0.0)
    with pytest.raises(ValueError, match="boundary"):
        InverseLaplacian(boundary="zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero_mode"):
        InverseLaplacian(zero_mode="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="laplacian"):
        Matern(laplacian="nine_point")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="power"):
        InverseLaplacian(power=0.0)
    with pytest.raises(ValueError, match="tau"):
        Matern(tau=0.0)
    with pytest.raises(ValueError, match="modes"):
        FNOPrior(-1)
    with pytest.raises(ValueError, match="two pixels"):
        InverseLaplacian().sqrt_spectrum(1, 1)
    with pytest.raises(ValueError, match="at least one"):
        SumCovariance(())
