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
``K = m^2 Sigma + s^2 C``, the optimal predictor is the conditional mean ``s C K^{-1} (x_t - m mu)``; with
``C = L L`` (``L`` the symmetric root) and ``L^{-1} Sigma L^{-1} = U diag(a) U^T`` it is
``s L U diag(1 / (m^2 a + s^2)) U^T L^{-1} (x_t - m mu)``, and its error covariance is
``V = B diag(r) B^T``, ``B = L U``, ``r = m^2 a / (m^2 a + s^2)``. Only the diagonal depends on ``t``.

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


def inverse_laplacian_root(power: float = 0.55, scale: float = 1.0, boundary: str = "periodic") -> Spectrum:
    """``sigma_k = scale |2 pi k|^(-2 power)`` with the constant mode given the lowest non-zero eigenvalue of
    ``-Δ`` (``(2 pi)^2``, reflect ``pi^2``): the README's inverse Laplacian, ``zero_mode="lowest"``."""
    lowest = (2 * math.pi) ** 2 if boundary == "periodic" else math.pi**2

    def sigma(k_row: Tensor, k_col: Tensor) -> Tensor:
        eigen = laplacian(k_row, k_col, boundary)
        return scale * torch.where(eigen == 0, lowest, eigen) ** (-power)

    return sigma


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
    """Everything the oracle needs on one grid: the law, ``L = C^{1/2}``, and the joint eigenbasis."""

    mean: Tensor
    cov: Tensor
    root: Tensor
    a: Tensor  # eigenvalues of L^-1 Sigma L^-1
    whiten: Tensor  # L^-1 U
    colour: Tensor  # B = L U
    gram: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.gram = self.colour.T @ self.colour


class MultilevelOracle(nn.Module):
    """A drop-in network ``forward(x, 1000 t)`` returning ``E[C^{1/2} xi | x_t]`` for Gaussian data.

    ``law`` gives the data law on any grid; :meth:`set_law` overrides one grid's law (the loss at a
    coarse level sees the *resized* data). The prior is ``sqrt_spectrum`` on ``boundary``'s basis. Every
    call is logged in ``calls`` as ``(t [B], n)``; ``offset`` and ``scale`` make it wrong in a known way.
    """

    def __init__(
        self,
        law: FunctionLaw,
        sqrt_spectrum: Spectrum,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.law, self.sqrt_spectrum = law, sqrt_spectrum
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

    def grid(self, n: int) -> GridModel:
        if n not in self._grids:
            mean, cov = self._laws.get(n) or self.law.on_grid(n)
            pixel_root = prior_root(self.sqrt_spectrum, n, self.law.boundary)
            root = torch.kron(torch.eye(self.channels, dtype=torch.float64), pixel_root)
            root_inv = torch.linalg.inv(root)
            a, u = torch.linalg.eigh(root_inv @ cov @ root_inv)
            self._grids[n] = GridModel(mean, cov, root, a.clamp(min=0), root_inv @ u, root @ u)
        return self._grids[n]

    def prior_cov(self, n: int) -> Tensor:
        root = self.grid(n).root
        return root @ root

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return vp_coefficients(t, self.beta_min, self.beta_max)

    def gain(self, n: int, t: float) -> tuple[Tensor, Tensor]:
        """``(G, b)``: the predictor at time ``t`` is ``G (x - b)``, dense ``[d, d]``."""
        g = self.grid(n)
        m, s, _ = self.coefficients(torch.tensor(t))
        return (g.colour * (s / (m**2 * g.a + s**2))) @ g.whiten.T, m * g.mean

    def min_error(self, n: int, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per-dimension minimum squared error ``tr V / d`` and ``tr V^2 / d^2`` at times ``t [B]``."""
        g = self.grid(n)
        m, s, _ = self.coefficients(t)
        r = (m[:, None] ** 2 * g.a) / (m[:, None] ** 2 * g.a + s[:, None] ** 2)
        d = g.a.numel()
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
        out = (white * (s[:, None] / (m[:, None] ** 2 * g.a + s[:, None] ** 2))) @ g.colour.T
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
    """:func:`sampler_law_dense` in the joint eigenbasis: with ``x = B y`` (``B = L U``) the prior is
    ``y ~ N(0, I)``, the sampler's noise ``C^{1/2} z`` is white in ``y`` and the predictor is diagonal,
    ``g (y - m nu)`` with ``g = s / (m^2 a + s^2)``, ``nu = (L^-1 U)^T mu``; so every mode is a scalar
    recursion. Exact for any dense data covariance, and cheap enough for 1000 steps."""
    grid = oracle.grid(n)
    nu = grid.whiten.T @ grid.mean
    mean, var = torch.zeros_like(nu), torch.ones_like(nu)
    times = time_grid(steps, t_min)

    def scalars(t: float) -> tuple[Tensor, float, float, float]:
        m, s, beta = oracle.coefficients(torch.tensor(t))
        return s / (m**2 * grid.a + s**2), float(m), float(s), float(beta)

    def drift(t: float) -> tuple[Tensor, Tensor]:
        """Probability-flow drift ``F y + c`` per mode."""
        g, m, s, beta = scalars(t)
        return -0.5 * beta + 0.5 * beta / s * g, -0.5 * beta / s * g * m * nu

    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        h = t - t_next
        noise = 0.0
        if sampler == "sde":
            g, m, s, beta = scalars(t)
            lin = 1 + 0.5 * beta * h - beta * h / s * g
            off, noise = beta * h / s * g * m * nu, beta * h
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
    ``x_{t_min}`` from the forward marginal, ``N(mu, m^2 Sigma K^-1 Sigma)``, ``K = m^2 Sigma + s^2 C``.
    It differs from the data law by the posterior covariance at ``t_min``."""
    grid = oracle.grid(n)
    m, s, _ = oracle.coefficients(torch.tensor(t_min))
    k = m**2 * grid.cov + s**2 * oracle.prior_cov(n)
    return grid.mean, m**2 * grid.cov @ torch.linalg.solve(k, grid.cov)
