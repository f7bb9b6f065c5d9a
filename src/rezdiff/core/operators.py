"""Spectral operators on fields: the orthonormal 2-D DCT, Fourier/cosine multipliers, Laplacian eigenvalues.

The shared layer of two families' operators, which follow the conventions below: the trace-class
covariances of the multilevel SDE (:mod:`rezdiff.models.multilevel.priors`) and ∞-Diff's Gaussian
mollifier (:mod:`rezdiff.models.infty_diff.mollifier`).

Conventions (every operator here):

* **Grids hold function values.** An array ``[..., H, W]`` holds the values of a function on the unit
  square at the pixel centres ``((i + 1/2) / H, (j + 1/2) / W)`` (DESIGN.md's coordinates, mapped to
  ``[0, 1]``). Resolution is the number of pixels on that fixed domain, never the domain's size.
* **Bases.** ``boundary="periodic"``: Fourier modes ``exp(2 pi i (k1 s1 + k2 s2))`` with integer wave
  numbers ``k`` in :func:`torch.fft.fftfreq` order. ``boundary="reflect"``: cosine modes ``c_u(s1) c_v(s2)``
  with ``c_0 = 1``, ``c_u = sqrt(2) cos(pi u s)``, i.e. the DCT-II basis (its sample points are exactly the
  pixel centres), indices ``u, v = 0 .. n - 1``. Every mode has unit RMS and its wave number does not depend
  on the grid, so a grid holds the modes of a fixed basis, more of them as it gets finer.
* **Covariances.** ``C`` has eigenvalues ``lambda_k`` on these modes; a sample is ``sum_k sqrt(lambda_k)
  xi_k e_k`` (``xi_k`` iid standard normal) restricted to the grid's modes: the band-limited projection of
  *the same* random function at every resolution. Its per-pixel variance is ``sum_k lambda_k`` (at every
  pixel for periodic noise, which is stationary; on average over the pixels for reflect). With ``F`` the
  unitary DFT/DCT, the grid operators are ``sqrt = sqrt(HW) F* diag(sigma) F``, the symmetric square root
  of ``apply = HW F* diag(lambda) F``, the covariance matrix of the grid values; so ``sqrt(randn)`` is a
  sample and ``sqrt`` is the ``noise_operator`` that :mod:`rezdiff.core.gaussian` expects. (Applying
  ``sigma`` to unitary coefficients without the ``sqrt(HW)`` would give the per-pixel variance
  ``sum lambda / HW``: a law that changes with the resolution.)
* **Laplacian.** ``laplacian="spectral"`` (the default) uses the exact ``-Δ``, whose eigenvalue of a
  mode is the same on every grid, so coarse and fine laws agree exactly on the coarse band. The paper's
  5-point ``-Δ_h`` (``laplacian="five_point"``) is consistent only for ``|k| << n``: its eigenvalue
  ``4 n^2 sin^2(pi k / n)`` falls to ``(4/pi^2)`` of ``(2 pi k)^2`` at the Nyquist, so near a coarse
  grid's Nyquist the ``(-Δ_h)^-0.55`` noise of ``Matern(8)`` has 2.25x (32^2) / 2.07x (16^2) the variance
  of the same mode on a 128^2 grid, and the coarse band's total variance is 8.6 % / 10.7 % too high.
* **Operators on functions** (the mollifier) are ``F* diag(m) F``: a smooth image is mapped to the same
  smooth image at every resolution (with ``std`` in pixels scaled along: :meth:`GaussianMollifier.scaled`).
* **Grid sizes.** Any ``H, W >= 1`` for the transforms and the mollifier. Periodic covariances are exact
  for odd sizes too (odd grids simply have no Nyquist mode). On an even periodic grid the Nyquist row and
  column are single real modes; they keep the eigenvalue the formula gives them (for the 5-point Laplacian,
  exactly its matrix spectrum), so laws agree across resolutions on the modes strictly inside a coarse
  grid's band (with the spectral Laplacian; see above for the 5-point one).
* **Precision.** Everything runs in float32, or float64 for float64 inputs, with autocast disabled, and is
  cast back to the input's dtype (FFTs in half precision are inaccurate or unsupported). Spectra and
  multipliers are float64 tensors on the CPU.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Literal

import torch
from torch import Tensor

Boundary = Literal["periodic", "reflect"]
LaplacianKind = Literal["five_point", "spectral"]

__all__ = [
    "Boundary",
    "LaplacianKind",
    "check_choice",
    "check_positive",
    "dct2",
    "idct2",
    "laplacian_eigenvalues",
    "spectral_multiply",
    "wave_numbers",
]

# --------------------------------------------------------------------------------------------------------
# Helpers and the orthonormal DCT
# --------------------------------------------------------------------------------------------------------


def _compute_dtype(x: Tensor) -> torch.dtype:
    if not x.is_floating_point():
        raise TypeError(f"expected a real floating-point tensor, got {x.dtype}")
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _autocast_off(x: Tensor) -> contextlib.AbstractContextManager:
    device = x.device.type
    if torch.amp.is_autocast_available(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def _check_grid(x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"expected a tensor [..., H, W], got shape {tuple(x.shape)}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """A ValueError naming ``name`` and the accepted ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")


def check_positive(name: str, value: float) -> None:
    """A ValueError naming ``name`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _dct_scale(k: Tensor) -> Tensor:
    """Orthonormal scaling of the DCT-II computed as ``Re(exp(-i pi k / 2n) FFT(v)_k)``."""
    scale = torch.full_like(k, math.sqrt(2 / k.shape[0]))
    scale[0] = math.sqrt(1 / k.shape[0])
    return scale


def _dct_last(x: Tensor) -> Tensor:
    """Orthonormal DCT-II along the last dim with one FFT (Makhoul 1980: even samples, then odd reversed)."""
    n = x.shape[-1]
    index = torch.arange(n, device=x.device)
    order = torch.where(index < (n + 1) // 2, 2 * index, 2 * (n - 1 - index) + 1)
    k = index.to(x.dtype)
    twiddle = torch.polar(torch.ones_like(k), k * (-math.pi / (2 * n)))
    return (torch.fft.fft(x[..., order], dim=-1) * twiddle).real * _dct_scale(k)


def _idct_last(y: Tensor) -> Tensor:
    """Inverse of :func:`_dct_last` (orthonormal DCT-III): rebuild the FFT of the reordered signal."""
    n = y.shape[-1]
    index = torch.arange(n, device=y.device)
    k = index.to(y.dtype)
    z = y / _dct_scale(k)  # z_k = Re(exp(-i pi k / 2n) V_k); V's Hermitian symmetry gives Im(...) = -z_{n-k}
    z_rev = torch.cat([torch.zeros_like(z[..., :1]), z[..., 1:].flip(-1)], dim=-1)
    twiddle = torch.polar(torch.ones_like(k), k * (math.pi / (2 * n)))
    v = torch.fft.ifft(torch.complex(z, -z_rev) * twiddle, dim=-1).real
    order = torch.where(index % 2 == 0, index // 2, n - 1 - index // 2)
    return v[..., order]


def _dct2(x: Tensor) -> Tensor:
    return _dct_last(_dct_last(x).transpose(-1, -2)).transpose(-1, -2)


def _idct2(x: Tensor) -> Tensor:
    return _idct_last(_idct_last(x).transpose(-1, -2)).transpose(-1, -2)


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two dims: ``scipy.fft.dctn(x, norm="ortho", axes=(-2, -1))``."""
    _check_grid(x)
    with _autocast_off(x):
        return _dct2(x.to(_compute_dtype(x))).to(x.dtype)


def idct2(x: Tensor) -> Tensor:
    """Inverse of :func:`dct2`, the orthonormal 2-D DCT-III (= ``scipy.fft.idctn(..., norm="ortho")``)."""
    _check_grid(x)
    with _autocast_off(x):
        return _idct2(x.to(_compute_dtype(x))).to(x.dtype)


def dct_pixel_variance(multiplier: Tensor) -> Tensor:
    """Exact per-pixel variance of ``idct2(multiplier * dct2(z))`` for white ``z``, ``[H, W]`` float64.

    ``diag(L L^T)`` for the DCT-diagonal ``L``: ``sum_{u,v} m_uv^2 psi_u(i)^2 psi_v(j)^2`` with the
    orthonormal DCT-II basis ``psi_u(i) = c_u(s_i) / sqrt(n)`` at the pixel centres ``s_i = (i + 1/2) / n``.
    """

    def squares(n: int) -> Tensor:  # psi_u(i)^2, [mode, pixel]
        u = torch.arange(n, dtype=torch.float64)[:, None]
        centres = (torch.arange(n, dtype=torch.float64)[None] + 0.5) / n
        weight = torch.where(u == 0, 1.0, 2.0).to(torch.float64) / n  # float64 before dividing by n
        return weight * torch.cos(math.pi * u * centres) ** 2

    rows, columns = squares(multiplier.shape[-2]), squares(multiplier.shape[-1])
    return rows.T @ multiplier.to(torch.float64) ** 2 @ columns


def spectral_multiply(x: Tensor, multiplier: Tensor, boundary: Boundary) -> Tensor:
    """``F* diag(multiplier) F x`` over the last two dims, ``F`` the unitary DFT or DCT-II.

    ``multiplier`` is ``[H, W]`` in the basis layout; periodic multipliers must be even (``m_k = m_-k``),
    which keeps real inputs real and lets the real FFT do half the work. Any other ``boundary`` is refused.
    """
    check_choice("boundary", boundary, ("periodic", "reflect"))
    _check_grid(x)
    dtype = _compute_dtype(x)
    with _autocast_off(x):
        y = x.to(dtype)
        m = multiplier.to(dtype).to(x.device)
        if boundary == "periodic":
            h, w = y.shape[-2:]
            coeffs = torch.fft.rfft2(y, norm="ortho") * m[:, : w // 2 + 1]
            y = torch.fft.irfft2(coeffs, s=(h, w), norm="ortho")
        else:
            y = _idct2(_dct2(y) * m)
    return y.to(x.dtype)


def wave_numbers(n: int, boundary: Boundary) -> Tensor:
    """Integer wave numbers of an ``n``-point grid in the basis layout (float64)."""
    if boundary == "periodic":
        return torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    return torch.arange(n, dtype=torch.float64)


def laplacian_eigenvalues(
    height: int, width: int, boundary: Boundary = "periodic", laplacian: LaplacianKind = "spectral"
) -> Tensor:
    """Eigenvalues of ``-Δ`` on the unit square for the grid's modes, ``[H, W]`` float64.

    ``laplacian`` defaults to ``"spectral"``, as the priors (``Matern``, ``InverseLaplacian``) do.

    ``"five_point"``: the 5-point stencil with spacings ``1/H``, ``1/W``, periodic
    ``4n^2 sin^2(pi k / n)`` per axis, or with half-sample reflecting boundaries (Neumann)
    ``4n^2 sin^2(pi u / 2n)``. ``"spectral"``: the exact ``(2 pi k)^2`` resp. ``(pi u)^2``, identical at
    every resolution (the 5-point values approach them for ``|k| << n``).
    """
    check_choice("boundary", boundary, ("periodic", "reflect"))
    check_choice("laplacian", laplacian, ("five_point", "spectral"))
    if height < 1 or width < 1:
        raise ValueError(f"grid size must be positive, got {height}x{width}")
    period = 1.0 if boundary == "periodic" else 2.0

    def axis(n: int) -> Tensor:
        k = wave_numbers(n, boundary)
        if laplacian == "spectral":
            return (2 * math.pi * k / period) ** 2
        return (2 * n * torch.sin(math.pi * k / (period * n))) ** 2

    return axis(height)[:, None] + axis(width)[None, :]


# Names that moved to their family's folder (issue 18): read through for one release with a FutureWarning.
_PRIORS = "AuthorsFNOPrior CombinedCovariance Covariance FNOPrior InverseLaplacian Matern SumCovariance"
MOVED = {
    "GaussianMollifier": "rezdiff.models.infty_diff.mollifier",
    **dict.fromkeys([*_PRIORS.split(), "WhiteNoise", "ZeroMode"], "rezdiff.models.multilevel.priors"),
}


def __getattr__(name: str) -> Any:
    """A name that moved out of this module (:data:`MOVED`), with one FutureWarning naming its new path."""
    from rezdiff.moved import moved_attribute

    return moved_attribute(__name__, name, MOVED)
