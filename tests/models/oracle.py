"""The exact ε-predictor for Gaussian data, in DDPM's pixel space and in each DVDP stage's space.

Data ``x_0 ~ N(mu, Sigma)`` (dense, on a tiny ``C x H x W`` grid). Stage ``k`` of DVDP sees
``y = D^k x_0`` (``D = 2P``, orthonormal rows) and ``x_t = A_t y + sigma_t eps`` with ``A_t =
sum_m lambda_{k+m, t} Pi_m`` (``Pi_m`` the orthogonal projectors onto the pyramid components at the
stage's resolution) and white ``eps``; DDPM is the case ``K = 0``, ``A_t = sqrt(alpha_bar_t) I``. Then
``x_t ~ N(A mu_y, A Sigma_y A + sigma^2 I)`` and the optimal ε-predictor is the conditional mean

    E[eps | x_t] = sigma (A Sigma_y A + sigma^2 I)^{-1} (x_t - A mu_y),

with per-dimension minimum squared error ``tr(I - sigma^2 (A Sigma_y A + sigma^2 I)^{-1}) / d``.

Everything here is built from the definitions in ``models/dvdp/README.md`` with dense matrices and the
schedule formulas written out again, not from ``rezdiff.core``: a bug in the library's operators,
schedules or forward process makes the module disagree with this oracle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def pool_matrix(n: int) -> Tensor:
    """``P``: 2x2 average pooling of one ``n x n`` channel as a dense ``[(n/2)^2, n^2]`` matrix."""
    m = n // 2
    out = torch.zeros(m * m, n * n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            out[(i // 2) * m + j // 2, i * n + j] = 0.25
    return out


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II basis of length ``n`` (row ``u`` is the ``u``-th cosine)."""
    i = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * math.sqrt(2 / n)
    basis[0] /= math.sqrt(2)
    return basis


def gaussian_law(channels: int = 2, size: int = 8) -> tuple[Tensor, Tensor]:
    """A non-trivial data law on ``C x size x size`` images (flattened channel-major, as ``reshape``):
    per-DCT-mode variances falling with frequency (ratio 1:37 within a channel), correlated channels of
    different scales, a smooth non-zero mean; per-pixel std <= 0.14, so the samplers' final clamp to
    [-1, 1] acts on fewer than one pixel in 10^5."""
    dct = dct_matrix(size)
    basis = torch.kron(dct, dct).T  # columns: 2-D cosines
    u = torch.arange(size, dtype=torch.float64)
    spectrum = 0.02 + 0.03 / (1.0 + 0.5 * (u[:, None] ** 2 + u[None, :] ** 2)).reshape(-1)
    pixel_cov = basis @ torch.diag(spectrum) @ basis.T
    mix = torch.tensor([[1.0, 0.3], [0.3, 0.7]], dtype=torch.float64)[:channels, :channels]
    cov = torch.kron(mix, pixel_cov)
    ramp = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / size
    image = 0.2 * ramp[:, None] - 0.1 * ramp[None, :]
    mean = torch.stack([image + 0.1 * (c + 1) * (-1) ** c for c in range(channels)]).reshape(-1)
    return mean, cov


def base_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """``alpha_bar_t`` of the linear schedule (DDPM), float64."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def dvdp_lambdas(
    alpha_bar: Tensor, turning_points: tuple[int, ...], lambda_end: float, process: str = "dvdp"
) -> Tensor:
    """``lambda[i, t]``, written out from the README: ``sqrt(alpha_bar_t)`` for the retained component and
    (``"dvdp"``) ``sqrt(alpha_bar_t) g_i(t)``, ``log g_i = min(t + 1, T_{i+1}) / T_{i+1} * log(lambda_end /
    sqrt(alpha_bar_{T_{i+1} - 1}))`` for component ``i < K`` (index ``t`` is paper time ``t + 1``)."""
    root = alpha_bar.sqrt()
    lam = root.repeat(len(turning_points) + 1, 1)
    if process == "dvdp":
        paper_time = torch.arange(1, alpha_bar.numel() + 1, dtype=torch.float64)
        for i, turn in enumerate(turning_points):
            gain = math.log(lambda_end / float(root[turn - 1]))
            lam[i] = root * torch.exp(paper_time.clamp(max=turn) / turn * gain)
    return lam


class GaussianOracle(nn.Module):
    """A drop-in "network" ``forward(x, t)`` returning ``E[eps | x_t]`` for the law ``N(mean, cov)``.

    ``turning_points=()`` is DDPM. Every call is logged in ``calls`` as ``(t, resolution)``; ``offset`` and
    ``scale`` make it wrong in a known way: it returns ``scale * E[eps | x_t] + offset``.
    """

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor,
        channels: int,
        size: int,
        turning_points: tuple[int, ...] = (),
        lambda_end: float = 1e-2,
        process: str = "dvdp",
        num_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.channels, self.size, self.turning_points = channels, size, tuple(turning_points)
        self.alpha_bar = base_schedule(num_steps)
        self.lam = dvdp_lambdas(self.alpha_bar, self.turning_points, lambda_end, process)
        self.sigma = (1 - self.alpha_bar).sqrt()
        self.offset, self.scale = 0.0, 1.0
        self.calls: list[tuple[Tensor, int]] = []
        self._gains: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        eye = torch.eye(channels, dtype=torch.float64)
        down = torch.eye(channels * size * size, dtype=torch.float64)
        self.stage_mean, self.stage_cov, self.projectors = [], [], []
        n = size
        for k in range(len(self.turning_points) + 1):
            self.stage_mean.append(down @ mean)
            self.stage_cov.append(down @ cov @ down.T)
            self.projectors.append(self._projectors(n, len(self.turning_points) - k, eye))
            if k < len(self.turning_points):
                down = 2 * torch.kron(eye, pool_matrix(n)) @ down
                n //= 2

    @staticmethod
    def _projectors(n: int, levels: int, eye: Tensor) -> list[Tensor]:
        """``Pi_0 .. Pi_L`` at resolution ``n``: ``N^m P^m - N^{m+1} P^{m+1}``, ``N^L P^L``; ``N = 4 P^T``."""
        smooth = [torch.eye(eye.shape[0] * n * n, dtype=torch.float64)]  # N^m P^m
        pools, size = torch.eye(eye.shape[0] * n * n, dtype=torch.float64), n
        for _ in range(levels):
            pools = torch.kron(eye, pool_matrix(size)) @ pools  # P^m
            size //= 2
            smooth.append(pools.T @ pools * 4 ** len(smooth))  # N^m = 4^m (P^m)^T
        return [smooth[m] - smooth[m + 1] for m in range(levels)] + [smooth[levels]]

    def stage_of(self, t: int) -> int:
        return sum(t >= turn for turn in self.turning_points)

    def operator(self, t: int) -> tuple[Tensor, float, int]:
        """``(A_t, sigma_t, k)`` of index ``t``."""
        k = self.stage_of(t)
        lam = self.lam[k:, t]
        a = sum(float(lam[m]) * p for m, p in enumerate(self.projectors[k]))
        return a, float(self.sigma[t]), k

    def gain(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(M, b, V)``: ``E[eps | x] = M (x - b)`` and the error covariance ``V = I - sigma M``."""
        if t not in self._gains:
            self._gains[t] = self._gain(t)
        return self._gains[t]

    def _gain(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        a, sigma, k = self.operator(t)
        cov = a @ self.stage_cov[k] @ a + sigma**2 * torch.eye(a.shape[0], dtype=torch.float64)
        m = sigma * torch.linalg.inv(cov)
        return m, a @ self.stage_mean[k], torch.eye(a.shape[0], dtype=torch.float64) - sigma * m

    def min_error(self, t: int) -> tuple[float, float]:
        """Per-dimension minimum squared error ``tr V / d`` and ``tr V^2 / d^2`` (for its MC variance)."""
        v = self.gain(t)[2]
        d = v.shape[0]
        return float(torch.trace(v)) / d, float((v * v).sum()) / d**2

    def check_size(self, height: int, width: int) -> None:
        """The modules ask their network this; the oracle takes any size."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        self.calls.append((t.detach().cpu().clone(), x.shape[-1]))
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        out = torch.empty_like(flat)
        for value in t.unique().tolist():
            rows = (t == value).nonzero().squeeze(1)
            m, b, _ = self.gain(int(value))
            if m.shape[0] != flat.shape[1]:
                raise ValueError(f"t={value} belongs to a {m.shape[0]}-dim stage, got {flat.shape[1]} dims")
            out[rows] = (flat[rows] - b) @ m
        return (self.scale * out + self.offset).to(x.dtype).reshape(x.shape)


def whitened_statistics(samples: Tensor, mean: Tensor, cov: Tensor) -> dict[str, float]:
    """How far ``samples`` ``[N, d]`` are from ``N(mean, cov)`` in the law's eigenbasis, in units of the
    Monte-Carlo standard error: the largest |z| of a mode mean, the largest relative error of a mode
    variance (and their average), and the largest correlation between two modes."""
    evals, evecs = torch.linalg.eigh(cov)
    z = (samples.to(torch.float64) - mean) @ evecs / evals.sqrt()
    n = z.shape[0]
    z_mean = z.mean(0)
    centred = z - z_mean
    c = centred.T @ centred / (n - 1)
    var = c.diagonal()
    corr = c / (var[:, None] * var[None, :]).sqrt()
    off = corr - torch.diag(corr.diagonal())
    return {
        "mean_z": float(z_mean.abs().max() * math.sqrt(n)),
        "var_rel_max": float((var - 1).abs().max()),
        "var_rel_avg": float(var.mean() - 1),
        "corr_max": float(off.abs().max()),
        "n": n,
    }


def trailing_timesteps(num_steps: int, steps: int | None, turning_points: tuple[int, ...] = ()) -> list[int]:
    """Descending indices ``round(T - i T / n) - 1`` (trailing spacing: starts at ``T - 1``; every index
    when ``steps`` is None) plus every turning index ``T_k - 1``, as the DVDP README specifies."""
    if steps is None:
        ts = set(range(num_steps))
    else:
        ts = {round(num_steps - i * num_steps / steps) - 1 for i in range(steps)}
    return sorted(ts | {turn - 1 for turn in turning_points}, reverse=True)


def sampler_law(
    oracle: GaussianOracle, timesteps: list[int], sampler: str, eta: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance of what the discrete sampler returns when its network is ``oracle``.

    Every step is affine in the state plus Gaussian noise, so the law stays Gaussian and is carried by
    dense matrices from ``x_T ~ N(0, I)`` at the lowest stage. The steps are written from the README
    (Eqs. 10, 11) and DDIM's Eq. 12, per component ``Pi_m`` of the stage: predicted data
    ``x0 = A^-1 (x - sigma eps)``; ancestral ``x' = sum_m Pi_m (lambda'_m q_m^2 / sigma^2 x0 + r_m
    sigma'^2 / sigma^2 x) + sqrt(post_m) Pi_m z``; DDIM ``x' = sum_m Pi_m (lambda'_m x0 + sqrt(sigma'^2 -
    s_m^2) eps) + s_m Pi_m z`` with ``s_m = eta sqrt(post_m)``; at a turning index ``x = D^T x + sigma (I -
    N P) z``. DDPM is the case without turning points.
    """
    levels = len(oracle.turning_points)
    dim = oracle.channels * (oracle.size >> levels) ** 2
    mean = torch.zeros(dim, dtype=torch.float64)
    cov = torch.eye(dim, dtype=torch.float64)
    for i, t in enumerate(timesteps):
        a, sigma, k = oracle.operator(t)
        gain, offset, _ = oracle.gain(t)
        eye = torch.eye(a.shape[0], dtype=torch.float64)
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        lam = oracle.lam[k:, t]
        lam_prev = oracle.lam[k:, t_prev] if t_prev >= 0 else torch.ones_like(lam)
        sigma_prev = float(oracle.sigma[t_prev]) if t_prev >= 0 else 0.0
        a_inv = torch.linalg.inv(a)
        # eps = E x + e, x0 = X x + c
        e_lin, e_off = gain, -gain @ offset
        x_lin, x_off = a_inv @ (eye - sigma * e_lin), -sigma * a_inv @ e_off
        lin = torch.zeros_like(eye)
        off = torch.zeros(a.shape[0], dtype=torch.float64)
        noise = torch.zeros_like(eye)
        for m, proj in enumerate(oracle.projectors[k]):
            ratio = float(lam[m] / lam_prev[m])
            q2 = max(sigma**2 - ratio**2 * sigma_prev**2, 0.0)
            post = sigma_prev**2 * q2 / sigma**2
            if sampler == "ddpm":
                cx0, cx = float(lam_prev[m]) * q2 / sigma**2, ratio * sigma_prev**2 / sigma**2
                lin += proj @ (cx0 * x_lin + cx * eye)
                off += proj @ (cx0 * x_off)
                noise += math.sqrt(post) * proj
            else:
                std = eta * math.sqrt(post)
                direction = math.sqrt(max(sigma_prev**2 - std**2, 0.0))
                lin += proj @ (float(lam_prev[m]) * x_lin + direction * e_lin)
                off += proj @ (float(lam_prev[m]) * x_off + direction * e_off)
                noise += std * proj
        mean = lin @ mean + off
        cov = lin @ cov @ lin.T + noise @ noise.T
        if t_prev >= 0 and oracle.stage_of(t_prev) == k - 1:
            n = oracle.size >> (k - 1)
            pool = torch.kron(torch.eye(oracle.channels, dtype=torch.float64), pool_matrix(n))
            up = (2 * pool).T
            complement = torch.eye(pool.shape[1], dtype=torch.float64) - 4 * pool.T @ pool
            mean = up @ mean
            cov = up @ cov @ up.T + sigma_prev**2 * complement
    return mean, cov
