"""Linear operators on fields: orthonormal 2-D DCT, ∞-Diff's Gaussian mollifier, trace-class covariances.

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

(Over ~400 lines on purpose: every operator below rests on the conventions above, which are stated once
here; split across files, a reader of one covariance would lose the scaling rules it depends on.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rezdiff.core.gaussian import randn
from rezdiff.core.sampling import Generators

Boundary = Literal["periodic", "reflect"]
ZeroMode = Literal["drop", "lowest"]
LaplacianKind = Literal["five_point", "spectral"]

__all__ = [
    "AuthorsFNOPrior",
    "Boundary",
    "CombinedCovariance",
    "Covariance",
    "FNOPrior",
    "GaussianMollifier",
    "InverseLaplacian",
    "LaplacianKind",
    "Matern",
    "SumCovariance",
    "WhiteNoise",
    "ZeroMode",
    "dct2",
    "idct2",
    "laplacian_eigenvalues",
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


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")


def _check_positive(name: str, value: float) -> None:
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


def _multiply(x: Tensor, multiplier: Tensor, boundary: Boundary) -> Tensor:
    """``F* diag(multiplier) F x`` over the last two dims, ``F`` the unitary DFT or DCT-II.

    ``multiplier`` is ``[H, W]`` in the basis layout; periodic multipliers must be even (``m_k = m_-k``),
    which keeps real inputs real and lets the real FFT do half the work.
    """
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


def _wave_numbers(n: int, boundary: Boundary) -> Tensor:
    """Integer wave numbers of an ``n``-point grid in the basis layout (float64)."""
    if boundary == "periodic":
        return torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    return torch.arange(n, dtype=torch.float64)


def laplacian_eigenvalues(
    height: int, width: int, boundary: Boundary = "periodic", laplacian: LaplacianKind = "five_point"
) -> Tensor:
    """Eigenvalues of ``-Δ`` on the unit square for the grid's modes, ``[H, W]`` float64.

    ``"five_point"``: the 5-point stencil with spacings ``1/H``, ``1/W``, periodic
    ``4n^2 sin^2(pi k / n)`` per axis, or with half-sample reflecting boundaries (Neumann)
    ``4n^2 sin^2(pi u / 2n)``. ``"spectral"``: the exact ``(2 pi k)^2`` resp. ``(pi u)^2``, identical at
    every resolution (the 5-point values approach them for ``|k| << n``).
    """
    _check_choice("boundary", boundary, ("periodic", "reflect"))
    _check_choice("laplacian", laplacian, ("five_point", "spectral"))
    if height < 1 or width < 1:
        raise ValueError(f"grid size must be positive, got {height}x{width}")
    period = 1.0 if boundary == "periodic" else 2.0

    def axis(n: int) -> Tensor:
        k = _wave_numbers(n, boundary)
        if laplacian == "spectral":
            return (2 * math.pi * k / period) ** 2
        return (2 * n * torch.sin(math.pi * k / (period * n))) ** 2

    return axis(height)[:, None] + axis(width)[None, :]


# --------------------------------------------------------------------------------------------------------
# ∞-Diff: the Gaussian mollifier
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianMollifier:
    """∞-Diff's mollifier ``T``: an untruncated Gaussian blur of ``std`` pixels with reflecting boundaries.

    A DCT-II multiplier (the DCT diagonalises convolution with half-sample-symmetric extension), so ``T`` is
    self-adjoint, exact at any size and as cheap as two FFTs; it matches
    ``scipy.ndimage.gaussian_filter(x, std, mode="reflect")`` up to that filter's truncation and aliasing.
    Blurred unit white noise has per-pixel variance ``≈ 1 / (4 pi std^2)`` away from the edges.
    """

    std: float = 1.0
    wiener_inverse_snr: float = 0.05

    def __post_init__(self) -> None:
        if not self.std >= 0:
            raise ValueError(f"std must be >= 0, got {self.std}")
        if not self.wiener_inverse_snr >= 0:
            raise ValueError(f"wiener_inverse_snr must be >= 0, got {self.wiener_inverse_snr}")

    def multiplier(self, height: int, width: int) -> Tensor:
        """DCT-II multiplier ``exp(-pi^2 std^2 (u^2/H^2 + v^2/W^2) / 2)``, ``[H, W]`` float64."""
        u = torch.arange(height, dtype=torch.float64) / height
        v = torch.arange(width, dtype=torch.float64) / width
        return torch.exp(-0.5 * (math.pi * self.std) ** 2 * (u[:, None] ** 2 + v[None, :] ** 2))

    def __call__(self, x: Tensor) -> Tensor:
        """``T x`` over the last two dims, in ``x``'s dtype (computed in fp32/fp64, autocast off)."""
        return _multiply(x, self.multiplier(*x.shape[-2:]), "reflect")

    def deblur(self, x: Tensor) -> Tensor:
        """Wiener inverse of ``T``: multiplier ``m / (m^2 + eps^2)``, ``eps = wiener_inverse_snr``.

        As in the paper (§3.2) and the authors' code, ``eps`` is the inverse SNR and enters squared: the
        plain inverse ``1 / m`` amplifies rounding errors by up to ``exp(pi^2 std^2)``.
        """
        m = self.multiplier(*x.shape[-2:])
        return _multiply(x, m / (m**2 + self.wiener_inverse_snr**2), "reflect")

    def scaled(self, factor: float) -> GaussianMollifier:
        """The same physical blur on a grid ``factor`` times finer: ``std * R / R0`` for ``factor = R / R0``.

        The noise of the same random field on that grid is :meth:`noise_multiplier` ``(H, W, factor)``: for
        ``factor >= 1`` it is ``T'(factor * eps)`` (∞-Diff's sampling at other resolutions), which keeps the
        per-pixel variance ``1 / (4 pi std^2)``; below 1 that alone would lose the variance beyond the
        coarse grid's band, and the spectrum is folded instead (:meth:`folded_multiplier`).
        """
        _check_positive("factor", factor)
        return dataclasses.replace(self, std=self.std * factor)

    def folded_multiplier(self, height: int, width: int) -> Tensor:
        """DCT-II multiplier ``sqrt(sum over aliases of m^2)``: the continuum's ``T eps`` at pixel centres.

        ``T`` applied to white noise on the continuum is a field with a cosine mode for *every* integer wave
        number; read at the pixel centres of an ``n``-point grid, the mode ``u' = 2kn +- u`` equals
        ``+-`` the grid's mode ``u`` (and ``u' = (2k+1)n`` vanishes there). So the point values have, per
        grid mode, the variance summed over its aliases (weight 2 for the aliases of the constant mode, whose
        continuum modes have twice its mean square on the grid). With this multiplier in place of
        :meth:`multiplier`, blurred white noise is that point-sample law exactly; they differ only by the
        spectrum beyond the grid's band, negligible once ``std >= 1`` pixel (``m^2 <= exp(-pi^2)`` there).
        Separable: ``[H, W]`` float64. ``std = 0`` (no blur) has no point values and raises.
        """
        if self.std <= 0:
            raise ValueError("folded_multiplier needs std > 0: white noise (std=0) has no point values")

        def axis(n: int) -> Tensor:
            u = torch.arange(n, dtype=torch.float64)
            # Aliases of k > k_max lie beyond |u'| = (2 k_max + 1) n, where m^2 < exp(-50): dropped.
            k_max = math.ceil((math.sqrt(50.0) / (math.pi * self.std) + 1) / 2)
            k = torch.arange(1, k_max + 1, dtype=torch.float64)[:, None]

            def power(w: Tensor) -> Tensor:
                return torch.exp(-((math.pi * self.std * w / n) ** 2))

            folded = power(u) + (power(2 * k * n - u) + power(2 * k * n + u)).sum(0)
            folded[0] = power(u[:1]) + 2 * power(2 * k[:, 0] * n).sum()  # 2kn - 0 and 2kn + 0: one mode
            return folded.sqrt()

        return axis(height)[:, None] * axis(width)[None, :]

    def noise_multiplier(self, height: int, width: int, factor: float = 1.0) -> Tensor:
        """DCT-II multiplier of the mollified noise ``z -> T'(f z)`` on a grid ``f = factor`` times finer
        than training (``self`` is that grid's mollifier), so that the output is the same random field at
        every ``f``: ``f m`` for ``f >= 1`` (the band-limited field, as in training), ``f`` times
        :meth:`folded_multiplier` for ``f < 1`` (its exact point values: the per-pixel variance stays
        ``1 / (4 pi std_0^2)`` instead of dropping, by 46% at 0.25x). With ``std = 0`` the field is white
        noise, and ``f z`` is its average over a pixel. ``[H, W]`` float64."""
        _check_positive("factor", factor)
        if factor >= 1 or self.std == 0:
            return factor * self.multiplier(height, width)
        return factor * self.folded_multiplier(height, width)

    def noise(self, z: Tensor, factor: float = 1.0) -> Tensor:
        """``z`` white on the grid -> the mollified noise of :meth:`noise_multiplier` (dtype kept)."""
        return _multiply(z, self.noise_multiplier(*z.shape[-2:], factor), "reflect")


# --------------------------------------------------------------------------------------------------------
# Covariance operators (multilevel diffusion)
# --------------------------------------------------------------------------------------------------------


class Covariance(ABC):
    """A covariance operator ``C`` diagonal in the Fourier (periodic) or cosine (reflect) basis.

    Subclasses give :meth:`sqrt_spectrum`; everything else follows. Instances are immutable and callable
    (``C(x) = C^{1/2} x``), so they can be passed as ``noise_operator`` to :mod:`rezdiff.core.gaussian`.
    """

    boundary: Boundary

    def __post_init__(self) -> None:
        _check_choice("boundary", self.boundary, ("periodic", "reflect"))

    @abstractmethod
    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        """Eigenvalues ``sigma_k`` of ``C^{1/2}`` on the grid's modes: ``[H, W]`` float64, basis layout."""

    def root_multiplier(self, height: int, width: int) -> Tensor:
        """The multiplier of the square root this prior is built from, ``[H, W]`` in the basis layout.

        For self-adjoint roots it is :meth:`sqrt_spectrum`; a prior built from a normal but not
        self-adjoint operator (:class:`AuthorsFNOPrior`) returns its complex multiplier, whose modulus is
        ``sigma``. :class:`CombinedCovariance` adds these, as the authors' ``CombinedConv`` adds operators.
        """
        return self.sqrt_spectrum(height, width)

    def spectrum(self, height: int, width: int) -> Tensor:
        """Eigenvalues ``lambda_k = sigma_k^2`` of ``C`` on the grid's modes, ``[H, W]`` float64."""
        return self.sqrt_spectrum(height, width) ** 2

    def pixel_variance(self, height: int, width: int) -> float:
        """Per-pixel variance ``sum_k lambda_k`` of a sample on an ``H x W`` grid (pixel mean if reflect)."""
        return float(self.spectrum(height, width).sum())

    def sqrt(self, x: Tensor) -> Tensor:
        """Apply ``C^{1/2}`` (as a grid matrix: ``sqrt(HW) F* diag(sigma) F``) over the last two dims."""
        h, w = x.shape[-2:]
        return _multiply(x, math.sqrt(h * w) * self.sqrt_spectrum(h, w), self.boundary)

    def apply(self, x: Tensor) -> Tensor:
        """Apply ``C`` (the covariance matrix of the grid values, ``HW F* diag(lambda) F``)."""
        h, w = x.shape[-2:]
        return _multiply(x, h * w * self.spectrum(h, w), self.boundary)

    def sample(
        self,
        shape: Sequence[int],
        generator: Generators = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """A draw of ``shape = (..., H, W)``: ``C^{1/2} xi``, ``xi`` from :func:`.gaussian.randn` (one
        generator per row draws each row's ``xi`` from its own)."""
        return self.sqrt(randn(tuple(shape), generator, device, dtype))

    def __call__(self, x: Tensor) -> Tensor:
        return self.sqrt(x)

    def __add__(self, other: object) -> SumCovariance:
        if not isinstance(other, Covariance):
            return NotImplemented
        parts = [p for c in (self, other) for p in (c.parts if isinstance(c, SumCovariance) else (c,))]
        return SumCovariance(tuple(parts))


@dataclass(frozen=True)
class WhiteNoise(Covariance):
    """``C = scale^2 I`` on functions: every mode gets ``lambda_k = scale^2`` (the ill-posed baseline).

    Not trace class: the per-pixel variance ``scale^2 H W`` grows without bound, while averages over a fixed
    region keep their variance ``scale^2 / area`` at every resolution. The naive "unit variance per pixel" of
    an ``H0 x W0`` grid is ``WhiteNoise(scale=1 / sqrt(H0 W0))`` (then ``sqrt`` is the identity there).
    """

    scale: float = 1.0
    boundary: Boundary = "periodic"

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        return torch.full((height, width), float(self.scale), dtype=torch.float64)


@dataclass(frozen=True)
class InverseLaplacian(Covariance):
    """``C^{1/2} = scale (-Δ_h)^(-power)``: trace class in 2-D iff ``power > 1/2`` (``lambda ~ |k|^-4power``).

    ``-Δ_h`` has a zero mode (the constant). The paper gives it no noise (``zero_mode="drop"``); then the
    image mean is never noised, the prior is degenerate and the reverse process cannot create a mean the
    data has. rezdiff's default ``"lowest"`` gives the constant mode the eigenvalue of the lowest non-zero
    mode, so ``C`` is positive definite, still trace class, and the mean diffuses like the largest
    structures do. ``laplacian`` defaults to the exact ``"spectral"`` ``-Δ`` (the same law at every
    resolution); ``"five_point"`` is the paper's stencil (see the module notes for its error).
    """

    power: float = 0.55
    scale: float = 1.0
    zero_mode: ZeroMode = "lowest"
    laplacian: LaplacianKind = "spectral"
    boundary: Boundary = "periodic"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("zero_mode", self.zero_mode, ("drop", "lowest"))
        _check_choice("laplacian", self.laplacian, ("five_point", "spectral"))
        _check_positive("power", self.power)

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        if height * width < 2:
            raise ValueError("the inverse Laplacian needs a grid with at least two pixels")
        lam = laplacian_eigenvalues(height, width, self.boundary, self.laplacian)
        lam[0, 0] = lam.flatten()[1:].min()  # index (0, 0) is the constant mode in both layouts
        sigma = self.scale * lam ** (-self.power)
        if self.zero_mode == "drop":
            sigma[0, 0] = 0.0
        return sigma


@dataclass(frozen=True)
class Matern(Covariance):
    """Bessel/Matérn ``C^{1/2} = scale (tau I - Δ_h)^(-power)``: full rank; trace class iff ``power > 1/2``.

    The paper uses ``tau = 8`` or ``100`` with ``power = 0.55``; ``tau`` sets the correlation length
    ``~ 1 / sqrt(tau)`` of the unit square. ``laplacian`` defaults to the exact ``"spectral"`` ``-Δ``
    (the same law at every resolution); ``"five_point"`` is the paper's stencil.
    """

    tau: float = 8.0
    power: float = 0.55
    scale: float = 1.0
    laplacian: LaplacianKind = "spectral"
    boundary: Boundary = "periodic"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("laplacian", self.laplacian, ("five_point", "spectral"))
        _check_positive("tau", self.tau)  # tau = 0 is the inverse Laplacian
        _check_positive("power", self.power)

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        lam = laplacian_eigenvalues(height, width, self.boundary, self.laplacian)
        return self.scale * (self.tau + lam) ** (-self.power)


@dataclass(frozen=True)
class FNOPrior(Covariance):
    """A fixed random spectral multiplier on the modes ``|k1|, |k2| <= modes`` (reflect: ``0 .. modes``).

    The law of a random FNO spectral convolution ``K`` applied to white noise: ``K xi`` has covariance
    ``K K*``, whose square root multiplies mode ``k`` by ``|R_k|``, with ``R_k`` the complex weight (real
    and imaginary parts uniform in ``[0, 1)`` as in FNO's initialisation, ``|R_k| = |R_-k|`` so samples are
    real). The table depends on ``seed`` only and is normalised to ``trace C = scale^2``. Finite rank: the
    same eigenvalues at every grid that resolves the modes (``n > 2 modes`` periodic, ``n > modes`` reflect);
    coarser grids keep the modes they resolve (never an even grid's Nyquist mode). This is rezdiff's
    symmetric variant; the authors' ``FNOprior`` (other weight law, half-spectrum mode set, no
    normalisation) is :class:`AuthorsFNOPrior`.
    """

    modes: int = 14
    seed: int = 0
    scale: float = 1.0
    boundary: Boundary = "periodic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modes < 0:
            raise ValueError(f"modes must be >= 0, got {self.modes}")

    def table(self) -> Tensor:
        """``sigma`` on the wave numbers ``-modes..modes`` (periodic) or ``0..modes`` (reflect), float64."""
        m = self.modes
        size = 2 * m + 1 if self.boundary == "periodic" else m + 1
        generator = torch.Generator().manual_seed(self.seed)
        weights = torch.rand(2, size, size, generator=generator, dtype=torch.float64)
        table = torch.hypot(weights[0], weights[1])
        if self.boundary == "periodic":  # mode -k takes the draw of mode k
            k = torch.arange(-m, m + 1)
            canonical = (k[:, None] > 0) | ((k[:, None] == 0) & (k[None, :] >= 0))
            table = torch.where(canonical, table, table.flip(0, 1))
        return self.scale * table / table.square().sum().sqrt()

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        table = self.table()
        offset = self.modes if self.boundary == "periodic" else 0

        def axis(n: int) -> tuple[Tensor, Tensor]:
            k = _wave_numbers(n, self.boundary)
            keep = k.abs() <= self.modes
            if self.boundary == "periodic":
                keep &= k.abs() < n / 2  # an even grid's Nyquist mode cannot hold a complex pair
            return (k.long() + offset).clamp(0, table.shape[0] - 1), keep

        (i, keep_i), (j, keep_j) = axis(height), axis(width)
        return table[i[:, None], j[None, :]] * (keep_i[:, None] & keep_j[None, :])


@dataclass(frozen=True)
class AuthorsFNOPrior(Covariance):
    """The authors' FNO prior: ``C^{1/2} = scale K``, ``K`` one fixed random 1-channel FNO spectral
    convolution as their ``SpectralConv2d(1, 1, modes1, modes2, rand=False)`` builds it (periodic only).

    ``K`` multiplies the real FFT's half spectrum ``k1 in [-modes1, modes1)``, ``k2 in [0, modes2)`` by
    complex weights ``W`` with real parts uniform in ``[0.2, 1)`` and imaginary parts in ``[0, 0.8)``
    (their ``0.2 + 0.8 torch.rand(cfloat)``; ``weights1`` for ``k1 >= 0``, ``weights2`` for ``k1 < 0``)
    and zeroes every other mode. On a real field that makes mode ``k`` (``k2 > 0``) times ``W_k``, its
    mirror ``-k`` times ``conj W_k``, and, because the inverse real FFT keeps the Hermitian part of the
    ``k2 = 0`` column, ``(k1, 0)`` times ``(W_(k1,0) + conj W_(-k1,0)) / 2``. ``K`` is normal, so ``K xi``
    has the law of ``|K| xi``: ``sigma_k = scale |m_k|``; :meth:`root_multiplier` is ``scale m``.

    Differences from the authors' code: the weights come from a generator seeded with ``seed`` (theirs
    from the global RNG); ``scale`` is in rezdiff's value convention (``sqrt = sqrt(HW) F* diag(sigma) F``,
    so ``scale = s / n`` reproduces their ``s K`` on an ``n x n`` grid, and their noise on other grids
    is not the same random function); a grid keeps only the modes it holds in full (``|k| < n / 2``), so
    coarse grids hold the band-limited projection of the same function and an even grid drops its Nyquist
    row/column (theirs aliases, or fails for ``n < modes1``).
    """

    modes1: int = 32
    modes2: int = 16
    seed: int = 0
    scale: float = 1.0
    boundary: Boundary = "periodic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.boundary != "periodic":
            raise ValueError(
                f"AuthorsFNOPrior is an FFT convolution: boundary must be 'periodic', got {self.boundary!r}; "
                "use FNOPrior(boundary='reflect') for cosine modes"
            )
        if self.modes1 < 1 or self.modes2 < 1:
            raise ValueError(f"modes1 and modes2 must be >= 1, got {self.modes1}, {self.modes2}")

    def weights(self) -> Tensor:
        """The authors' ``(weights1, weights2)`` as one ``[2, modes1, modes2]`` complex128 tensor."""
        generator = torch.Generator().manual_seed(self.seed)
        u = torch.rand(2, 2, self.modes1, self.modes2, generator=generator, dtype=torch.float64)
        return torch.complex(0.2 + 0.8 * u[:, 0], 0.8 * u[:, 1])

    def root_multiplier(self, height: int, width: int) -> Tensor:
        weights1, weights2 = self.weights()
        table = torch.cat([weights2, weights1])  # row r holds wave number k1 = r - modes1
        m1, m2 = self.modes1, self.modes2
        k1 = _wave_numbers(height, "periodic").long()[:, None].expand(height, width)
        k2 = _wave_numbers(width, "periodic").long()[None, :].expand(height, width)

        def half(a: Tensor, b: Tensor) -> Tensor:
            """``W`` at wave numbers ``(a, b)`` of the half spectrum, 0 outside the mode set."""
            inside = (a >= -m1) & (a < m1) & (b >= 0) & (b < m2)
            value = table[(a + m1).clamp(0, 2 * m1 - 1), b.clamp(0, m2 - 1)]
            return torch.where(inside, value, torch.zeros_like(value))

        multiplier = torch.where(
            k2 > 0,
            half(k1, k2),
            torch.where(k2 < 0, half(-k1, -k2).conj(), (half(k1, k2) + half(-k1, k2).conj()) / 2),
        )
        held = (2 * k1.abs() < height) & (2 * k2.abs() < width)  # no even grid's Nyquist mode
        return self.scale * multiplier * held

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        return self.root_multiplier(height, width).abs()


@dataclass(frozen=True)
class _CompositeCovariance(Covariance):
    """Covariances built from ``parts`` on one eigenbasis (the parts' common boundary)."""

    parts: tuple[Covariance, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        kind = type(self).__name__
        if not self.parts:
            raise ValueError(f"{kind} needs at least one covariance")
        boundaries = sorted({p.boundary for p in self.parts})
        if len(boundaries) > 1:
            raise ValueError(
                f"cannot combine covariances with boundaries {boundaries} in a {kind}: their eigenbases "
                "(Fourier vs cosine) differ; build every part with the same boundary"
            )

    @property
    def boundary(self) -> Boundary:  # type: ignore[override]
        return self.parts[0].boundary


@dataclass(frozen=True)
class SumCovariance(_CompositeCovariance):
    """``C = C_1 + ... + C_n`` (same eigenbasis, so ``sigma = sqrt(sum sigma_i^2)``); build it with ``+``.

    The noise is the sum of independent draws of the parts. The authors' ``CombinedConv`` instead adds
    the square roots applied to one draw: that is :class:`CombinedCovariance`.
    """

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        return sum(p.spectrum(height, width) for p in self.parts).sqrt()


@dataclass(frozen=True)
class CombinedCovariance(_CompositeCovariance):
    """``C^{1/2} = C_1^{1/2} + ... + C_n^{1/2}`` applied to one white draw: the authors' ``CombinedConv``.

    Their warm-start prior is ``CombinedConv(k1=10, k2=10, scale=10, scale2=0.5)``, i.e.
    ``10 (-Δ_h)^-0.55 + 0.5 K`` (constant mode of the Laplacian part dropped, ``K`` an
    :class:`AuthorsFNOPrior`). The roots share an eigenbasis, so ``sigma = |sum m_i|`` with ``m_i`` each
    part's :meth:`~Covariance.root_multiplier` (complex for :class:`AuthorsFNOPrior`). ``C`` is not the sum
    of the parts' covariances (that is :class:`SumCovariance`): it has the cross terms
    ``2 Re(m_i conj m_j)``.
    """

    def root_multiplier(self, height: int, width: int) -> Tensor:
        return sum(p.root_multiplier(height, width) for p in self.parts)

    def sqrt_spectrum(self, height: int, width: int) -> Tensor:
        return self.root_multiplier(height, width).abs()
