"""The exact noise predictor of Gaussian data under the multilevel family's VP SDE with a trace-class prior.

Written from the paper / ``models/multilevel/README.md`` formulas with dense float64 matrices and no
``rezdiff.core`` import, so a bug in the library's operators, schedule, samplers or resizing makes the
module disagree with it.

**Grids.** A grid holds the values of a function on the unit square at the pixel centres
``s_i = (i + 1/2) / n``. A covariance ``C`` with eigenvalues ``lambda_k`` on a fixed basis ``e_k`` has the
grid matrix ``C_n[i, j] = sum_k lambda_k e_k(s_i) conj(e_k(s_j))`` over the grid's wave numbers (Fourier
``k = -n/2 .. n/2 - 1`` per axis for ``"periodic"``, the Nyquist mode being the single real mode
``(-1)^(i - j)``; unit-RMS cosines ``u = 0 .. n - 1`` for ``"reflect"``), and its symmetric square root is
the same sum with ``sigma_k = sqrt(lambda_k)`` divided by ``sqrt(n^2)`` (the per-pixel variance is
``sum_k lambda_k`` on every grid: one random function, more of its modes on a finer grid).

**Process.** ``x_t = m(t) x_0 + s(t) C^{1/2} xi``, ``m = exp(-t^2 (b1 - b0) / 4 - t b0 / 2)``,
``s^2 = 1 - m^2``; the network predicts ``C^{1/2} xi``. For data ``N(mu, Sigma)`` on the grid and
``K = m^2 Sigma + s^2 C``, the optimal predictor is the conditional mean ``s C K^{-1} (x_t - m mu)``. Either
``Sigma`` (a coarse level's data have no Nyquist content) or ``C`` (the finite-rank FNO priors) may be
singular, so both are diagonalised in the basis of ``P = Sigma + C``: with ``P^{-1/2} Sigma P^{-1/2} =
U diag(p) U^T`` (on the range of ``P``) and ``B = P^{1/2} U``, ``Sigma = B diag(p) B^T`` and ``C = B diag(q)
B^T``, ``q = 1 - p``. The predictor is ``B diag(s q / (m^2 p + s^2 q)) B^+ (x_t - m mu)`` and its error
covariance ``V = B diag(r) B^T``, ``r = m^2 p q / (m^2 p + s^2 q)``. Only the diagonal depends on ``t``.

**Priors** are given by their spectrum on the basis (``sigma_k``, the existing closed forms) or, for the
priors that are defined as the law of an operator applied to white noise, by that operator ``Q_n`` on each
grid (:class:`PriorOperator`, ``C_n = Q_n Q_n^T``): rezdiff's ``FNOPrior`` (the FNO convolution with
Hermitian weights of its docstring), the authors' ``FNOprior`` (their ``SpectralConv2d``, rewritten from
their ``fno.py``) and their ``CombinedConv`` (the sum of the parts' operators on one draw, ``priors.py``).

**Samplers** (README): ``t`` on ``linspace(1, t_min, steps + 1)``, ``x_T ~ N(0, C)``; with
``h = t - t'``, ``beta = b0 + t (b1 - b0)``: Euler-Maruyama ``x' = x + h beta (x / 2 - eps / s) +
sqrt(beta h) C^{1/2} z``; probability-flow drift ``f = -beta / 2 (x - eps / s)``, Euler ``x' = x - h f``,
Heun ``x' = x - h (f(x, t) + f(x - h f(x, t), t')) / 2``; then Tweedie ``x_0 = (x - s eps) / m`` at
``t_min``. Each step is affine in the state plus Gaussian noise, so the output law is Gaussian and is carried
exactly by :func:`sampler_law` (the module's final clamp to [-1, 1] is left out: the laws used here put
fewer than one pixel in 10^5 outside).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tests.models.oracle import whitened_statistics

Spectrum = Callable[[Tensor, Tensor], Tensor]  # (k_row, k_col) wave numbers -> eigenvalue, float64
Function = Callable[[Tensor, Tensor], Tensor]  # (s_row, s_col) points in [0, 1] -> values, float64


def points(n: int) -> Tensor:
    """Pixel centres ``(i + 1/2) / n`` of an ``n``-point axis."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def wave_numbers(n: int, boundary: str) -> Tensor:
    """Wave numbers an ``n``-point axis holds: ``-n/2 .. n/2 - 1`` (periodic), ``0 .. n - 1`` (reflect)."""
    if boundary == "periodic":
        return torch.tensor([k if 2 * k < n else k - n for k in range(n)], dtype=torch.float64)
    return torch.arange(n, dtype=torch.float64)


def axis_basis(n: int, boundary: str) -> Tensor:
    """``[n, n]`` complex: column ``k`` is basis function ``k`` at the pixel centres (unit RMS there)."""
    s, k = points(n)[:, None], wave_numbers(n, boundary)[None, :]
    if boundary == "periodic":
        return torch.exp(2j * math.pi * k * s)
    cosines = math.sqrt(2) * torch.cos(math.pi * k * s)
    cosines[:, 0] = 1.0
    return cosines.to(torch.complex128)


def kernel_matrix(spectrum: Spectrum, n: int, boundary: str) -> Tensor:
    """``sum_k spectrum(k) e_k(s_i) conj e_k(s_j)`` on the ``n x n`` grid (row-major), ``[n^2, n^2]`` real."""
    e = axis_basis(n, boundary)
    basis = torch.kron(e, e)  # column (k_row, k_col), row (i, j): e_{k_row}(s_i) e_{k_col}(s_j)
    k = wave_numbers(n, boundary)
    values = spectrum(k[:, None].expand(n, n), k[None, :].expand(n, n)).reshape(-1).to(torch.complex128)
    return ((basis * values) @ basis.conj().T).real


def prior_root(sqrt_spectrum: Spectrum, n: int, boundary: str) -> Tensor:
    """The grid matrix of ``C^{1/2}`` (symmetric): the kernel of ``sigma`` over ``sqrt(n^2)``."""
    return kernel_matrix(sqrt_spectrum, n, boundary) / n


def laplacian(k_row: Tensor, k_col: Tensor, boundary: str) -> Tensor:
    """Eigenvalue of the exact ``-Δ`` on the unit square: ``(2 pi k)^2`` (periodic), ``(pi u)^2`` (reflect)"""
    period = 1.0 if boundary == "periodic" else 2.0
    return (2 * math.pi / period) ** 2 * (k_row**2 + k_col**2)


def matern_root(
    tau: float = 8.0, power: float = 0.55, scale: float = 1.0, boundary: str = "periodic"
) -> Spectrum:
    """``sigma_k = scale (tau + |2 pi k|^2)^(-power)`` (the README's Matérn with the exact ``-Δ``)."""

    def sigma(k_row: Tensor, k_col: Tensor) -> Tensor:
        return scale * (tau + laplacian(k_row, k_col, boundary)) ** (-power)

    return sigma


def inverse_laplacian_root(
    power: float = 0.55, scale: float = 1.0, boundary: str = "periodic", drop_constant: bool = False
) -> Spectrum:
    """``sigma_k = scale |2 pi k|^(-2 power)`` with the constant mode given the lowest non-zero eigenvalue of
    ``-Δ`` (``(2 pi)^2``, reflect ``pi^2``): the README's inverse Laplacian, ``zero_mode="lowest"``; with
    ``drop_constant`` the constant mode gets no noise (the paper's, ``zero_mode="drop"``)."""
    lowest = (2 * math.pi) ** 2 if boundary == "periodic" else math.pi**2

    def sigma(k_row: Tensor, k_col: Tensor) -> Tensor:
        eigen = laplacian(k_row, k_col, boundary)
        value = scale * torch.where(eigen == 0, lowest, eigen) ** (-power)
        return torch.where(eigen == 0, 0.0, value) if drop_constant else value

    return sigma


@dataclass(frozen=True)
class PriorOperator:
    """A prior defined as the law of ``Q_n xi`` (``xi`` white on the grid): ``root(n)`` is the ``[n^2, n^2]``
    grid matrix of ``Q_n`` (not necessarily symmetric), so ``C_n = Q_n Q_n^T``."""

    root: Callable[[int], Tensor]

    def cov(self, n: int) -> Tensor:
        q = self.root(n)
        return q @ q.T

    def symmetric_root(self, n: int) -> Tensor:
        """``C_n^{1/2}``, the symmetric positive semi-definite root: ``U S U^T`` from ``Q_n = U S V^T``."""
        u, singular, _ = torch.linalg.svd(self.root(n))
        return (u * singular) @ u.T


def operator_matrix(fn: Callable[[Tensor], Tensor], n: int) -> Tensor:
    """``[n^2, n^2]`` matrix of a linear map of ``[B, n, n]`` images (column ``j``: image of pixel ``j``)."""
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    return fn(basis).reshape(n * n, n * n).T


def psd_sqrt(cov: Tensor) -> Tensor:
    """The symmetric positive semi-definite square root of ``cov`` (eigenvalues below 0 by rounding: 0)."""
    evals, evecs = torch.linalg.eigh(cov)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def band_limited(build: Callable[[int], Tensor], fine: int) -> Callable[[int], Tensor]:
    """``Q_n`` of an operator on a fixed finite set of Fourier modes from ``build(n)``, its matrix on grids
    that hold every one of them (``n >= fine``). In the value convention ``Q_n = n M_n`` with ``M_n`` the
    grid's matrix of one multiplier ``M`` of the function's coefficients; a coarser grid holds ``M`` on the
    modes ``|k| < n / 2`` it holds in full, ``M_n = R_(fine -> n) M_fine R_(n -> fine)`` (band-limited
    interpolation, the multiplier, projection back), so ``Q_n = (n / fine) R Q_fine R'``."""

    def root(n: int) -> Tensor:
        if n >= fine:
            return build(n)
        down, up = resize_matrix(fine, n, "periodic"), resize_matrix(n, fine, "periodic")
        return n / fine * torch.kron(down, down) @ build(fine) @ torch.kron(up, up)

    return root


def fno_prior_root(modes: int, seed: int, scale: float) -> PriorOperator:
    """rezdiff's ``FNOPrior`` (periodic) as its docstring defines it: the law of a real FNO spectral
    convolution applied to white noise. Its complex weight on the wave number ``k``, ``|k1|, |k2| <= modes``,
    is ``R_k = U + i U'`` with ``(U, U')`` the draw ``torch.rand(2, 2 modes + 1, 2 modes + 1)`` of a generator
    seeded with ``seed`` at ``[k1 + modes, k2 + modes]`` for the canonical half (``k1 > 0`` or ``k1 = 0,
    k2 >= 0``) and ``R_-k = conj R_k`` for the rest (so the operator is real; the constant mode, its own
    mirror, gets ``|R_0|``), normalised to ``trace C = scale^2``. Value convention:
    ``Q_n = n F^-1 diag(rho R) F`` with the unnormalised FFT ``F``."""
    size = 2 * modes + 1
    draw = torch.rand(2, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    weights = torch.complex(draw[0], draw[1])
    table = torch.zeros(size, size, dtype=torch.complex128)  # [k1 + modes, k2 + modes]
    for k1 in range(-modes, modes + 1):
        for k2 in range(-modes, modes + 1):
            if k1 == 0 and k2 == 0:  # its own mirror: a real operator's weight there is real, |R_0|
                table[modes, modes] = weights[modes, modes].abs()
            elif k1 > 0 or (k1 == 0 and k2 >= 0):
                table[k1 + modes, k2 + modes] = weights[k1 + modes, k2 + modes]
            else:
                table[k1 + modes, k2 + modes] = weights[modes - k1, modes - k2].conj()
    table = scale * table / table.abs().square().sum().sqrt()

    def build(n: int) -> Tensor:
        k = torch.fft.fftfreq(n, 1.0 / n).round().long()
        inside = k.abs() <= modes
        rows, cols = (k.clamp(-modes, modes) + modes)[:, None], (k.clamp(-modes, modes) + modes)[None, :]
        multiplier = table[rows, cols] * (inside[:, None] & inside[None, :])
        return operator_matrix(lambda x: n * torch.fft.ifft2(torch.fft.fft2(x) * multiplier).real, n)

    return PriorOperator(band_limited(build, size))


def fno_prior_reflect_root(modes: int, seed: int, scale: float) -> Spectrum:
    """rezdiff's ``FNOPrior(boundary="reflect")``: ``sigma_u = |U + i U'|`` on the cosines ``u1, u2 <= modes``
    (draw ``torch.rand(2, modes + 1, modes + 1)`` seeded with ``seed``), normalised to ``trace C =
    scale^2``, 0 elsewhere."""
    size = modes + 1
    draw = torch.rand(2, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    table = torch.complex(draw[0], draw[1]).abs()
    table = scale * table / table.square().sum().sqrt()

    def sigma(k_row: Tensor, k_col: Tensor) -> Tensor:
        r, c = k_row.long(), k_col.long()
        inside = (r <= modes) & (c <= modes)
        return torch.where(inside, table[r.clamp(max=modes), c.clamp(max=modes)], 0.0)

    return sigma


def authors_fno_weights(modes1: int, modes2: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(weights1, weights2)`` of the authors' ``SpectralConv2d(1, 1, modes1, modes2, rand=False)``:
    ``0.2 + 0.8 torch.rand(cfloat)``, i.e. real parts in ``[0.2, 1)``, imaginary parts in ``[0, 0.8)``; the
    uniform draws come from ``torch.rand(2, 2, modes1, modes2)`` seeded with ``seed`` (rezdiff's documented
    seeding; theirs use the global RNG), ``[weights1 | weights2] x [real | imaginary]``."""
    u = torch.rand(2, 2, modes1, modes2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.complex(0.2 + 0.8 * u[0, 0], 0.8 * u[0, 1]), torch.complex(
        0.2 + 0.8 * u[1, 0], 0.8 * u[1, 1]
    )


def authors_fno_root(modes1: int, modes2: int, seed: int, scale: float) -> PriorOperator:
    """The authors' ``FNOprior`` (``priors.py``): their ``SpectralConv2d.forward`` (``fno.py``) rewritten,
    i.e. ``irfft2`` of ``rfft2(x)`` times ``weights1`` on rows ``:modes1`` and ``weights2`` on rows
    ``-modes1:`` of the first ``modes2`` columns, zero elsewhere. Value convention: ``Q_n = scale n K_n``
    (their noise ``s K xi`` on an ``n``-grid is rezdiff's with ``scale = s / n``)."""
    weights1, weights2 = authors_fno_weights(modes1, modes2, seed)

    def conv(x: Tensor) -> Tensor:
        x_ft = torch.fft.rfft2(x)
        out = torch.zeros_like(x_ft)
        out[:, :modes1, :modes2] = x_ft[:, :modes1, :modes2] * weights1
        out[:, -modes1:, :modes2] = x_ft[:, -modes1:, :modes2] * weights2
        return torch.fft.irfft2(out, s=x.shape[-2:])

    return PriorOperator(
        band_limited(lambda n: scale * n * operator_matrix(conv, n), 2 * max(modes1, modes2) + 1)
    )


def authors_inverse_laplacian_root(power: float = 0.55, scale: float = 1.0) -> PriorOperator:
    """The Laplacian part of the authors' ``CombinedConv.compConv`` (``priors.py``) rewritten: the periodic
    5-point stencil of spacing ``1/n`` as a kernel, its ``rfft2`` modulus to the power ``-power``, the
    constant mode (``inf``) set to 0, applied by ``rfft2``/``irfft2``. Value convention: ``scale n`` times
    it."""

    def conv(x: Tensor) -> Tensor:
        n = x.shape[-1]
        kernel = torch.zeros(n, n, dtype=torch.float64)
        kernel[0, 0] = 4.0 * n**2
        kernel[1, 0] = kernel[-1, 0] = kernel[0, 1] = kernel[0, -1] = -float(n**2)
        lam = torch.fft.rfft2(kernel).abs() ** -power
        lam[torch.isinf(lam)] = 0.0
        return torch.fft.irfft2(torch.fft.rfft2(x) * lam, s=(n, n))

    return PriorOperator(lambda n: scale * n * operator_matrix(conv, n))


def spectral_root(sqrt_spectrum: Spectrum, boundary: str = "periodic") -> PriorOperator:
    """A prior given by its spectrum as a :class:`PriorOperator` (symmetric ``Q_n``), to combine it."""
    return PriorOperator(lambda n: prior_root(sqrt_spectrum, n, boundary))


def combined_root(*parts: PriorOperator) -> PriorOperator:
    """The authors' ``CombinedConv``: the parts' operators added and applied to one draw, ``Q = sum Q_i``."""
    return PriorOperator(lambda n: sum(part.root(n) for part in parts))


def resize_matrix(n: int, size: int, boundary: str) -> Tensor:
    """Band-limited projection of ``n``-point values onto ``size`` points, ``[size, n]``, one axis.

    Periodic: keep ``|k| < min(n, size) / 2`` (the Nyquist mode has no consistent value), i.e.
    ``(1/n) sum_k cos(2 pi k (s'_a - s_b))``; reflect: the cosines ``u < min(n, size)``,
    ``(1/n) sum_u c_u(s'_a) c_u(s_b)``. Discrete orthonormality on pixel centres makes both exact
    projections.
    """
    fine, coarse = points(n), points(size)
    band = min(n, size)
    if boundary == "periodic":
        k = torch.arange(-(band // 2), band // 2 + 1, dtype=torch.float64)
        k = k[2 * k.abs() < band]
        return torch.cos(2 * math.pi * k * (coarse[:, None, None] - fine[None, :, None])).sum(-1) / n
    u = torch.arange(band, dtype=torch.float64)
    weights = torch.where(u == 0, 1.0, 2.0)
    cosines = torch.cos(math.pi * u * coarse[:, None, None]) * torch.cos(math.pi * u * fine[None, :, None])
    return (weights * cosines).sum(-1) / n


@dataclass
class FunctionLaw:
    """A Gaussian random function ``mu + sum_k sqrt(lambda_k) xi_k e_k + v zeta`` per channel, channels
    mixed by ``mix`` (``Cov = mix ⊗ pixel covariance``): stationary part diagonal in the prior's basis plus a
    rank-one non-stationary ``v``; ``mu``, ``v`` band-limited to ``|k| <= 1`` so every grid holds them."""

    boundary: str
    spectrum: Spectrum
    means: list[Function]
    extra: Function
    mix: Tensor

    def on_grid(self, n: int) -> tuple[Tensor, Tensor]:
        """``(mean [C n^2], cov [C n^2, C n^2])`` of the values on the ``n x n`` grid, channel-major."""
        s = points(n)
        rows, cols = s[:, None].expand(n, n), s[None, :].expand(n, n)
        mean = torch.cat([f(rows, cols).reshape(-1) for f in self.means])
        v = self.extra(rows, cols).reshape(-1)
        pixel = kernel_matrix(self.spectrum, n, self.boundary) + v[:, None] * v[None, :]
        return mean, torch.kron(self.mix, pixel)


def function_law(boundary: str = "periodic", channels: int = 2, structure: float = 1.0) -> FunctionLaw:
    """The data law of the tests: anisotropic spectrum ``0.0006 / (1 + 0.5 k_r^2 + 2 k_c^2)^1.5``, a smooth
    non-stationary rank-one part, correlated channels of different scales, non-zero smooth means; per-pixel
    std <= 0.1 and |mean| <= 0.4, so the module's clamp to [-1, 1] acts on fewer than one pixel in 10^5.
    ``structure`` multiplies the non-constant mean and the rank-one part (the only parts of the law that a
    shift of the grid changes); the loss tests, which do not clamp, use 5."""
    two_pi = 2 * math.pi

    def spectrum(k_row: Tensor, k_col: Tensor) -> Tensor:
        return 0.0006 / (1 + 0.5 * k_row**2 + 2 * k_col**2) ** 1.5

    if boundary == "periodic":
        wave = [lambda r, c: torch.cos(two_pi * c), lambda r, c: torch.sin(two_pi * r)]

        def extra(r: Tensor, c: Tensor) -> Tensor:
            return 0.03 * structure * torch.sin(two_pi * (r + c) + 0.3)
    else:
        wave = [lambda r, c: torch.cos(math.pi * c), lambda r, c: torch.cos(math.pi * r)]

        def extra(r: Tensor, c: Tensor) -> Tensor:
            return 0.03 * structure * (1 + torch.cos(math.pi * r)) * torch.cos(math.pi * c)

    def mean(channel: int) -> Function:
        offset = 0.1 * (channel + 1) * (-1) ** channel
        return lambda r, c: offset + structure * (0.12 * wave[0](r, c) - 0.08 * wave[1](r, c))

    mix = torch.tensor([[1.0, 0.3], [0.3, 0.7]], dtype=torch.float64)[:channels, :channels]
    return FunctionLaw(boundary, spectrum, [mean(c) for c in range(channels)], extra, mix)


def vp_coefficients(
    t: Tensor, beta_min: float = 0.1, beta_max: float = 20.0
) -> tuple[Tensor, Tensor, Tensor]:
    """``(m(t), s(t), beta(t))`` of the VP SDE, written from the README."""
    t = t.to(torch.float64)
    m = torch.exp(-0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min)
    return m, (1 - m**2).sqrt(), beta_min + t * (beta_max - beta_min)


@dataclass
class GridModel:
    """Everything the oracle needs on one grid: the data law, the prior ``C`` and their joint basis ``B``
    (``Sigma = B diag(p) B^T``, ``C = B diag(q) B^T``, on the range of ``Sigma + C``; ``x = B y``,
    ``y = B^+ x``)."""

    mean: Tensor
    cov: Tensor
    prior: Tensor
    p: Tensor  # data variance of each joint mode
    q: Tensor  # prior variance of each joint mode, 1 - p
    whiten: Tensor  # (B^+)^T, [d, r]
    colour: Tensor  # B, [d, r]
    gram: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.gram = self.colour.T @ self.colour

    def predictor(self, m: Tensor, s: Tensor) -> Tensor:
        """Per joint mode, the gain ``s q / (m^2 p + s^2 q)`` of the optimal predictor (``m``, ``s``: ``[B]``
        or scalars -> ``[B, r]`` or ``[r]``)."""
        m, s = torch.as_tensor(m)[..., None], torch.as_tensor(s)[..., None]
        return s * self.q / (m**2 * self.p + s**2 * self.q)

    def error(self, m: Tensor, s: Tensor) -> Tensor:
        """Per joint mode, the error variance ``m^2 p q / (m^2 p + s^2 q)`` (``V = B diag(error) B^T``)."""
        m, s = torch.as_tensor(m)[..., None], torch.as_tensor(s)[..., None]
        return m**2 * self.p * self.q / (m**2 * self.p + s**2 * self.q)


class MultilevelOracle(nn.Module):
    """A drop-in network ``forward(x, 1000 t)`` returning ``E[C^{1/2} xi | x_t]`` for Gaussian data.

    ``law`` gives the data law on any grid; :meth:`set_law` overrides one grid's law (the loss at a
    coarse level sees the *resized* data). The prior is ``prior``: a spectrum ``sigma_k`` on the basis of
    ``law.boundary`` or a :class:`PriorOperator`. Every call is logged in ``calls`` as ``(t [B], n)``;
    ``offset`` and ``scale`` make it wrong in a known way.
    """

    def __init__(
        self,
        law: FunctionLaw,
        prior: Spectrum | PriorOperator,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.law, self.prior = law, prior
        self.channels = law.mix.shape[0]
        self.beta_min, self.beta_max, self.time_scale = beta_min, beta_max, time_scale
        self.offset, self.scale = 0.0, 1.0
        self.calls: list[tuple[Tensor, int]] = []
        self._grids: dict[int, GridModel] = {}
        self._laws: dict[int, tuple[Tensor, Tensor]] = {}

    def set_law(self, n: int, mean: Tensor, cov: Tensor) -> None:
        """Use ``N(mean, cov)`` as the data law on the ``n x n`` grid."""
        self._laws[n] = (mean, cov)
        self._grids.pop(n, None)

    def pixel_prior(self, n: int) -> Tensor:
        """``C_n`` of one channel, ``[n^2, n^2]``."""
        if isinstance(self.prior, PriorOperator):
            return self.prior.cov(n)
        sigma = self.prior
        return kernel_matrix(lambda r, c: sigma(r, c) ** 2, n, self.law.boundary)

    def grid(self, n: int) -> GridModel:
        if n not in self._grids:
            mean, cov = self._laws.get(n) or self.law.on_grid(n)
            prior = torch.kron(torch.eye(self.channels, dtype=torch.float64), self.pixel_prior(n))
            evals, evecs = torch.linalg.eigh(cov + prior)
            keep = evals > 1e-12 * evals.max()  # the range of Sigma + C: every x the process can reach
            white = evecs[:, keep] / evals[keep].sqrt()  # P^(-1/2) on that range
            p, u = torch.linalg.eigh(white.T @ cov @ white)
            p = p.clamp(0, 1)
            colour = (evecs[:, keep] * evals[keep].sqrt()) @ u
            self._grids[n] = GridModel(mean, cov, prior, p, 1 - p, white @ u, colour)
        return self._grids[n]

    def prior_cov(self, n: int) -> Tensor:
        return self.grid(n).prior

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return vp_coefficients(t, self.beta_min, self.beta_max)

    def gain(self, n: int, t: float) -> tuple[Tensor, Tensor]:
        """``(G, b)``: the predictor at time ``t`` is ``G (x - b)``, dense ``[d, d]``."""
        g = self.grid(n)
        m, s, _ = self.coefficients(torch.tensor(t))
        return (g.colour * g.predictor(m, s)) @ g.whiten.T, m * g.mean

    def min_error(self, n: int, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per-dimension minimum squared error ``tr V / d`` and ``tr V^2 / d^2`` at times ``t [B]``."""
        g = self.grid(n)
        m, s, _ = self.coefficients(t)
        r = g.error(m, s)
        d = g.mean.numel()
        trace = r @ g.gram.diagonal()
        square = torch.einsum("bj,jl,bl->b", r, g.gram**2, r)
        return trace / d, square / d**2

    def check_size(self, height: int, width: int) -> None:
        """The module asks its network this; the oracle takes any square grid."""

    def forward(self, x: Tensor, t_net: Tensor) -> Tensor:
        if x.shape[-1] != x.shape[-2] or x.shape[1] != self.channels:
            raise ValueError(f"the oracle takes square {self.channels}-channel grids, got {tuple(x.shape)}")
        t = (t_net.detach().to(torch.float64).cpu() / self.time_scale).expand(x.shape[0])
        n = x.shape[-1]
        self.calls.append((t.clone(), n))
        g = self.grid(n)
        m, s, _ = self.coefficients(t)
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64).cpu()
        white = (flat - m[:, None] * g.mean) @ g.whiten
        out = (white * g.predictor(m, s)) @ g.colour.T
        return (self.scale * out + self.offset).to(x.dtype).to(x.device).reshape(x.shape)


def time_grid(steps: int, t_min: float) -> Tensor:
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)


def sampler_law_dense(
    oracle: MultilevelOracle, n: int, steps: int, sampler: str, t_min: float, denoise_final: bool = True
) -> tuple[Tensor, Tensor]:
    """Exact ``(mean, cov)`` of what ``sampler`` (``"sde"``, ``"ode_euler"``, ``"ode_heun"``) returns on the
    ``n x n`` grid with ``oracle`` as its network, carried as dense matrices step by step (formulas in the
    module docstring). :func:`sampler_law` is the same law, faster."""
    prior = oracle.prior_cov(n)
    d = prior.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    mean, cov = torch.zeros(d, dtype=torch.float64), prior.clone()
    times = time_grid(steps, t_min)

    def drift(t: float) -> tuple[Tensor, Tensor]:
        """``f(x) = F x + c`` of the probability-flow ODE at ``t``."""
        gain, b = oracle.gain(n, t)
        _, s, beta = oracle.coefficients(torch.tensor(t))
        return -0.5 * beta * eye + 0.5 * beta / s * gain, -0.5 * beta / s * gain @ b

    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        h = t - t_next
        if sampler == "sde":
            gain, b = oracle.gain(n, t)
            _, s, beta = oracle.coefficients(torch.tensor(t))
            lin = (1 + 0.5 * beta * h) * eye - beta * h / s * gain
            off = beta * h / s * gain @ b
            noise = beta * h * prior
        elif sampler == "ode_euler":
            f_lin, f_off = drift(t)
            lin, off, noise = eye - h * f_lin, -h * f_off, torch.zeros_like(eye)
        elif sampler == "ode_heun":
            f1, c1 = drift(t)
            f2, c2 = drift(t_next)
            lin = eye - 0.5 * h * (f1 + f2 @ (eye - h * f1))
            off = -0.5 * h * (c1 + f2 @ (-h * c1) + c2)
            noise = torch.zeros_like(eye)
        else:
            raise ValueError(f"unknown sampler {sampler!r}")
        mean = lin @ mean + off
        cov = lin @ cov @ lin.T + noise
    if denoise_final:
        gain, b = oracle.gain(n, t_min)
        m, s, _ = oracle.coefficients(torch.tensor(t_min))
        lin = (eye - s * gain) / m
        mean = lin @ mean + s * gain @ b / m
        cov = lin @ cov @ lin.T
    return mean, cov


def data_batch(law: tuple[Tensor, Tensor], num: int, channels: int, n: int, seed: int) -> Tensor:
    """``num`` exact draws of ``N(mean, cov)`` as ``[num, C, n, n]`` float32."""
    mean, cov = law
    generator = torch.Generator().manual_seed(seed)
    white = torch.randn(num, mean.numel(), generator=generator, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(cov)
    x0 = mean + (white * evals.clamp(min=0).sqrt()) @ evecs.T
    return x0.to(torch.float32).reshape(num, channels, n, n)


def sampler_law(
    oracle: MultilevelOracle, n: int, steps: int, sampler: str, t_min: float, denoise_final: bool = True
) -> tuple[Tensor, Tensor]:
    """:func:`sampler_law_dense` in the joint basis: with ``x = B y`` the prior is ``y ~ N(0, diag(q))``, the
    sampler's noise ``C^{1/2} z`` has covariance ``diag(q)`` in ``y`` and the predictor is diagonal,
    ``g (y - m nu)`` with ``g = s q / (m^2 p + s^2 q)``, ``nu = B^+ mu``; so every mode is a scalar
    recursion. Exact for any dense data covariance and prior, and cheap enough for 1000 steps."""
    grid = oracle.grid(n)
    nu = grid.whiten.T @ grid.mean
    mean, var = torch.zeros_like(nu), grid.q.clone()
    times = time_grid(steps, t_min)

    def scalars(t: float) -> tuple[Tensor, float, float, float]:
        m, s, beta = oracle.coefficients(torch.tensor(t))
        return grid.predictor(m, s), float(m), float(s), float(beta)

    def drift(t: float) -> tuple[Tensor, Tensor]:
        """Probability-flow drift ``F y + c`` per mode."""
        g, m, s, beta = scalars(t)
        return -0.5 * beta + 0.5 * beta / s * g, -0.5 * beta / s * g * m * nu

    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        h = t - t_next
        noise: Tensor | float = 0.0
        if sampler == "sde":
            g, m, s, beta = scalars(t)
            lin = 1 + 0.5 * beta * h - beta * h / s * g
            off, noise = beta * h / s * g * m * nu, beta * h * grid.q
        elif sampler == "ode_euler":
            f, c = drift(t)
            lin, off = 1 - h * f, -h * c
        elif sampler == "ode_heun":
            f1, c1 = drift(t)
            f2, c2 = drift(t_next)
            lin = 1 - 0.5 * h * (f1 + f2 * (1 - h * f1))
            off = -0.5 * h * (c1 - h * f2 * c1 + c2)
        else:
            raise ValueError(f"unknown sampler {sampler!r}")
        mean, var = lin * mean + off, lin**2 * var + noise
    if denoise_final:
        g, m, s, _ = scalars(t_min)
        mean, var = (mean - s * g * (mean - m * nu)) / m, ((1 - s * g) / m) ** 2 * var
    return grid.colour @ mean, (grid.colour * var) @ grid.colour.T


def tweedie_law(oracle: MultilevelOracle, n: int, t_min: float) -> tuple[Tensor, Tensor]:
    """The law the samplers converge to as the step size goes to 0: ``E[x_0 | x_{t_min}]`` with
    ``x_{t_min}`` from the forward marginal, ``N(mu, m^2 Sigma K^+ Sigma)``, ``K = m^2 Sigma + s^2 C``
    (``B diag(m^2 p^2 / (m^2 p + s^2 q)) B^T`` in the joint basis). It differs from the data law by the
    posterior covariance at ``t_min``."""
    grid = oracle.grid(n)
    m, s, _ = oracle.coefficients(torch.tensor(t_min))
    var = m**2 * grid.p**2 / (m**2 * grid.p + s**2 * grid.q)
    return grid.mean, (grid.colour * var) @ grid.colour.T


def assert_follows(samples: Tensor, mean: Tensor, cov: Tensor) -> dict[str, float]:
    """``samples [N, ...]`` are a draw of ``N(mean, cov)``: on the range of ``cov`` every whitened statistic
    within ~5 standard errors; outside it (a finite-rank prior's samples lie in its range) the samples'
    components are float32 rounding (grown up to ~150x by the reverse drift, which expands there), below
    1e-4 of the largest standard deviation."""
    flat = samples.reshape(samples.shape[0], -1).to(torch.float64)
    evals, evecs = torch.linalg.eigh(cov)
    held = evals > 1e-8 * evals.max()  # the laws here: >= 1e-4 in their range, <= 1e-10 (rounding) outside
    if not bool(held.all()):
        outside = (flat - mean) @ evecs[:, ~held]
        assert float(outside.abs().max()) < 1e-4 * float(evals.max().sqrt()), float(outside.abs().max())
    basis = evecs[:, held]
    stats = whitened_statistics(flat @ basis, mean @ basis, torch.diag(evals[held]))
    n, d = stats["n"], int(held.sum())
    assert stats["mean_z"] < 5.0, stats
    assert stats["var_rel_max"] < 5 * math.sqrt(2 / n), stats
    assert abs(stats["var_rel_avg"]) < 5 * math.sqrt(2 / n / d), stats
    assert stats["corr_max"] < (5.6 if d <= 128 else 6.0) / math.sqrt(n), stats
    return stats
