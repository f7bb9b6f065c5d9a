"""The trace-class noise covariances ``C`` of the multilevel score SDE (the family's ``prior``).

Each is diagonal in the Fourier (``boundary="periodic"``) or cosine (``"reflect"``) basis of
:mod:`rezdiff.core.operators`, whose notes state the conventions these rest on: grids hold function values,
a covariance's eigenvalues live on integer wave numbers independent of the grid, so ``sample`` is the
band-limited projection of *the same* random function at every resolution (per-pixel variance
``sum_k lambda_k``); ``sqrt = sqrt(HW) F* diag(sigma) F`` is the ``noise_operator`` of
:mod:`rezdiff.core.gaussian`; the exact versus the paper's 5-point Laplacian. Configs name a prior by
``class_path: rezdiff.models.multilevel.priors.<Class>`` (the old ``rezdiff.core.operators.<Class>`` still
reads for one release).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rezdiff.core.gaussian import randn
from rezdiff.core.operators import (
    Boundary,
    LaplacianKind,
    check_choice,
    check_positive,
    laplacian_eigenvalues,
    spectral_multiply,
    wave_numbers,
)
from rezdiff.core.sampling import Generators

ZeroMode = Literal["drop", "lowest"]

__all__ = [
    "AuthorsFNOPrior",
    "CombinedCovariance",
    "Covariance",
    "FNOPrior",
    "InverseLaplacian",
    "Matern",
    "SumCovariance",
    "WhiteNoise",
    "ZeroMode",
]


class Covariance(ABC):
    """A covariance operator ``C`` diagonal in the Fourier (periodic) or cosine (reflect) basis.

    Subclasses give :meth:`sqrt_spectrum`; everything else follows. Instances are immutable and callable
    (``C(x) = C^{1/2} x``), so they can be passed as ``noise_operator`` to :mod:`rezdiff.core.gaussian`.
    """

    boundary: Boundary

    def __post_init__(self) -> None:
        check_choice("boundary", self.boundary, ("periodic", "reflect"))

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
        return spectral_multiply(x, math.sqrt(h * w) * self.sqrt_spectrum(h, w), self.boundary)

    def apply(self, x: Tensor) -> Tensor:
        """Apply ``C`` (the covariance matrix of the grid values, ``HW F* diag(lambda) F``)."""
        h, w = x.shape[-2:]
        return spectral_multiply(x, h * w * self.spectrum(h, w), self.boundary)

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
        check_choice("zero_mode", self.zero_mode, ("drop", "lowest"))
        check_choice("laplacian", self.laplacian, ("five_point", "spectral"))
        check_positive("power", self.power)

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
        check_choice("laplacian", self.laplacian, ("five_point", "spectral"))
        check_positive("tau", self.tau)  # tau = 0 is the inverse Laplacian
        check_positive("power", self.power)

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
            k = wave_numbers(n, self.boundary)
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
        k1 = wave_numbers(height, "periodic").long()[:, None].expand(height, width)
        k2 = wave_numbers(width, "periodic").long()[None, :].expand(height, width)

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
