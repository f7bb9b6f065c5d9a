"""∞-Diff's Gaussian mollifier ``T`` and its Wiener inverse, a DCT-II multiplier on the grid.

Used by the mollified process (:mod:`.mollified`), the model and the inverse problems of this family only.
Grids hold function values on the unit square in the cosine (DCT-II) basis, as stated once in
:mod:`rezdiff.core.operators`; precision: float32 or float64, autocast off, cast back to the input's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rezdiff.core.operators import check_positive, spectral_multiply

__all__ = ["GaussianMollifier"]


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
        return spectral_multiply(x, self.multiplier(*x.shape[-2:]), "reflect")

    def deblur(self, x: Tensor) -> Tensor:
        """Wiener inverse of ``T``: multiplier ``m / (m^2 + eps^2)``, ``eps = wiener_inverse_snr``.

        As in the paper (§3.2) and the authors' code, ``eps`` is the inverse SNR and enters squared: the
        plain inverse ``1 / m`` amplifies rounding errors by up to ``exp(pi^2 std^2)``.
        """
        m = self.multiplier(*x.shape[-2:])
        return spectral_multiply(x, m / (m**2 + self.wiener_inverse_snr**2), "reflect")

    def scaled(self, factor: float) -> GaussianMollifier:
        """The same physical blur on a grid ``factor`` times finer: ``std * R / R0`` for ``factor = R / R0``.

        The noise of the same random field on that grid is :meth:`noise_multiplier` ``(H, W, factor)``: for
        ``factor >= 1`` it is ``T'(factor * eps)`` (∞-Diff's sampling at other resolutions), which keeps the
        per-pixel variance ``1 / (4 pi std^2)``; below 1 that alone would lose the variance beyond the
        coarse grid's band, and the spectrum is folded instead (:meth:`folded_multiplier`).
        """
        check_positive("factor", factor)
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
        check_positive("factor", factor)
        if factor >= 1 or self.std == 0:
            return factor * self.multiplier(height, width)
        return factor * self.folded_multiplier(height, width)

    def noise(self, z: Tensor, factor: float = 1.0) -> Tensor:
        """``z`` white on the grid -> the mollified noise of :meth:`noise_multiplier` (dtype kept)."""
        return spectral_multiply(z, self.noise_multiplier(*z.shape[-2:], factor), "reflect")
