"""The exact mollified-noise predictor of ∞-Diff for Gaussian data, and the exact law of its samplers.

The process (``models/infty_diff/README.md``, paper Eq. 9) on a grid ``f = R / R0`` times finer than
training: ``x_t = sqrt(ab_t) T' x_0 + sqrt(1 - ab_t) N eps`` with ``T'`` the Gaussian blur of ``std * f``
pixels (DCT-II multiplier ``m = exp(-pi^2 (std f)^2 (u^2 + v^2) / (2 n^2))``) and ``N`` the noise
operator: ``N = f T'`` for ``f >= 1``; for ``f < 1`` the point values of the same field, i.e. (README) the
noise of a grid ``k`` times finer (``k`` odd, ``k f >= 1.5``) read at the pixels whose centres coincide. The
network predicts ``N eps``; samples start from ``x_T = N eps`` at ``T - 1`` and are Wiener-deblurred at the
end (multiplier ``m / (m^2 + snr^2)``).

Data ``x_0 ~ N(mu(z), Sigma)`` per resolution (``oracle.gaussian_law``: diagonal in the 2-D DCT per channel,
channels correlated; ``mu(z) = mu_0 + B z`` with ``B`` a few low cosines when a code ``z`` conditions the
model). Everything is then block-diagonal in the DCT basis: per mode ``k`` a ``C x C`` block, and

    E[N eps | x_t]_k = s r_k^2 (a^2 Sigma_k + s^2 r_k^2 I)^{-1} (x_k - a m_k mu_k),   r_k^2 = n_k^2 / m_k^2,

with ``a = sqrt(ab)``, ``s = sqrt(1 - ab)``, ``n_k^2`` the noise variance of mode ``k``. The per-mode form
keeps the algebra exact at 2x, where ``m_k`` falls to 1e-15 and dense inverses would be singular. The DCT is
a dense matrix, the noise below 1x is built densely from the finer grid, and the schedule is written out
from the paper: nothing here calls ``rezdiff.core``, so a bug in the library's operators, schedule or steps
makes the module disagree with this oracle.

For training (a random subset ``S`` of pixels per example, at 1x) the network sees ``x_t`` at ``S`` only, so
the optimum is the dense conditional mean ``E[(T eps)_S | (x_t)_S] = s Q_SS A_SS^{-1} (x_S - a (T mu)_S)``,
``Q = T^2``, ``A = ab T Sigma T + (1 - ab) Q``, with error covariance ``V = Q_SS - s^2 Q_SS A_SS^{-1} Q_SS``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tests.models.oracle import dct_matrix, gaussian_law


def cosine_alpha_bar(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """``ab_t`` of the cosine schedule (Nichol & Dhariwal): ``beta_i = min(1 - g((i+1)/T) / g(i/T),
    max_beta)``, ``g(u) = cos^2((u + s) / (1 + s) pi / 2)``, ``ab = cumprod(1 - beta)``; float64."""
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    g = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - g[1:] / g[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0)


def constant_alpha_bar(num_steps: int = 1000, beta: float = 0.008) -> Tensor:
    """``ab_t = (1 - beta)^(t + 1)`` (the latent stage's constant-beta schedule); float64."""
    return (1 - beta) ** torch.arange(1, num_steps + 1, dtype=torch.float64)


def dct2_matrix(n: int) -> Tensor:
    """Orthonormal 2-D DCT-II of a row-major flattened ``n x n`` image, ``[n^2, n^2]``."""
    d = dct_matrix(n)
    return torch.kron(d, d)


def blur_multiplier(n: int, std: float) -> Tensor:
    """``m_k`` of the Gaussian blur of ``std`` pixels on an ``n x n`` grid, flattened ``[n^2]``."""
    u = torch.arange(n, dtype=torch.float64)
    return torch.exp(-0.5 * (math.pi * std / n) ** 2 * (u[:, None] ** 2 + u[None, :] ** 2)).reshape(-1)


def noise_variance(n: int, train_n: int, std: float) -> Tensor:
    """``n_k^2``: variance of the mollified noise in DCT mode ``k`` on an ``n x n`` grid.

    ``f >= 1``: ``f^2 m_k^2`` (``N = T'(f .)``). ``f < 1``: the covariance ``f_k^2 T_k^2`` of a grid ``k``
    times finer (odd ``k``, ``f_k = k f >= 1.5``, where ``T_k(f_k .)`` is the band-limited field) restricted
    to the pixels ``k i + (k - 1) / 2``, whose centres are the coarse ones; its DCT must be diagonal.
    """
    f = n / train_n
    if f >= 1:
        return f**2 * blur_multiplier(n, std * f) ** 2
    k = 1
    while k * f < 1.5:
        k += 2
    fine, f_fine = k * n, k * f
    d_fine = dct2_matrix(fine)
    blur = d_fine.T @ torch.diag(blur_multiplier(fine, std * f_fine)) @ d_fine
    cov_fine = f_fine**2 * blur @ blur
    rows = torch.arange(n) * k + (k - 1) // 2
    keep = (rows[:, None] * fine + rows[None, :]).reshape(-1)
    d = dct2_matrix(n)
    cov = d @ cov_fine[keep][:, keep] @ d.T
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 1e-9 * cov.diagonal().max(), "restricted noise is not DCT-diagonal"
    return cov.diagonal().clone()


def cosine_image(n: int, u: int, v: int) -> Tensor:
    """``cos(pi u (y + 1) / 2) cos(pi v (x + 1) / 2)`` at the pixel centres of an ``n x n`` grid."""
    centres = (2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1
    return torch.cos(math.pi * u * (centres[:, None] + 1) / 2) * torch.cos(
        math.pi * v * (centres[None, :] + 1) / 2
    )


class ModeData:
    """Per-resolution constants in the DCT basis: ``m [K]``, ``r2 [K]``, ``nvar [K]``, the data mean
    ``mu [K, C]`` and blocks ``sigma [K, C, C]``, the code's map ``basis [D, K, C]`` (or None)."""

    def __init__(
        self, n: int, channels: int, train_n: int, std: float, code_modes: list[tuple[int, int, int]]
    ) -> None:
        self.n, self.factor = n, n / train_n
        self.dct = dct2_matrix(n)
        self.m = blur_multiplier(n, std * self.factor)
        self.nvar = noise_variance(n, train_n, std)
        self.r2 = self.nvar / self.m**2
        mean, cov = gaussian_law(channels, n)
        k = n * n
        rot = torch.kron(torch.eye(channels, dtype=torch.float64), self.dct)
        self.mu = (rot @ mean).reshape(channels, k).T.contiguous()
        full = (rot @ cov @ rot.T).reshape(channels, k, channels, k)
        idx = torch.arange(k)
        self.sigma = full[:, idx, :, idx].contiguous()  # [K, C, C]
        blocks = torch.zeros_like(full)
        blocks[:, idx, :, idx] = self.sigma
        assert (full - blocks).abs().max() < 1e-12, "data law is not block-diagonal in the DCT"
        self.pixel_mean, self.pixel_cov = mean, cov
        self.basis = None
        if code_modes:
            images = torch.zeros(len(code_modes), channels, k, dtype=torch.float64)
            for j, (c, u, v) in enumerate(code_modes):
                images[j, c] = 0.05 * cosine_image(n, u, v).reshape(-1)
            self.basis = (images @ self.dct.T).transpose(1, 2).contiguous()  # [D, K, C]

    def to_modes(self, images: Tensor) -> Tensor:
        """``[B, C, n, n]`` -> DCT coefficients ``[B, K, C]`` (float64)."""
        flat = images.to(torch.float64).flatten(2)
        return (flat @ self.dct.T).transpose(1, 2)

    def from_modes(self, modes: Tensor) -> Tensor:
        """Inverse of :meth:`to_modes`: ``[B, K, C]`` -> ``[B, C, n, n]``."""
        flat = modes.transpose(1, 2) @ self.dct
        return flat.reshape(modes.shape[0], modes.shape[2], self.n, self.n)

    def data_mean(self, z: Tensor | None, batch: int) -> Tensor:
        """``mu(z)`` in modes, ``[B, K, C]``."""
        mu = self.mu.expand(batch, -1, -1)
        if z is None or self.basis is None:
            return mu
        return mu + torch.einsum("bd,dkc->bkc", z.to(torch.float64), self.basis)


class MollifiedOracle(nn.Module):
    """A drop-in ∞-Diff denoiser ``forward(values [B, N, C], index [B, N], (H, W), t [B], z, kernel_scale)``
    returning the exact ``E[N eps | x_t]`` at the points (``[B, N, C]``), for the data law of
    :class:`ModeData` at the call's resolution. All pixels: the per-mode form at any ``f``; a subset
    (training, ``f = 1``): the dense conditional mean given the subset. ``code_modes`` (channel, u, v) make
    the data mean ``mu_0 + B z``; without them ``z`` is ignored. ``offset``/``scale`` make it wrong in a
    known way; ``calls`` logs ``(t, (H, W), kernel_scale, index)``.
    """

    def __init__(
        self,
        channels: int,
        train_resolution: int,
        std: float = 1.0,
        num_steps: int = 1000,
        code_modes: list[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.channels, self.train_resolution, self.std = channels, train_resolution, std
        self.code_modes = list(code_modes or [])
        self.alpha_bar = cosine_alpha_bar(num_steps)
        self.offset, self.scale = 0.0, 1.0
        self.calls: list[tuple[Tensor, tuple[int, int], float, Tensor]] = []
        self._modes: dict[int, ModeData] = {}
        self._dense: tuple[Tensor, Tensor, Tensor] | None = None
        self.last_subset_law: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def modes(self, n: int) -> ModeData:
        if n not in self._modes:
            self._modes[n] = ModeData(n, self.channels, self.train_resolution, self.std, self.code_modes)
        return self._modes[n]

    # ----------------------------------------------------------------- all pixels, per mode
    def gain(self, n: int, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(G [B, K, C, C], H [B, K, C, C])``: ``eps_hat = G (x - a m mu)``, ``E[T x0 | x] = m mu + H (x -
        a m mu)``; ``H = a Sigma (a^2 Sigma + s^2 r^2 I)^{-1}``."""
        data = self.modes(n)
        ab = self.alpha_bar[t][:, None, None, None]
        a, s = ab.sqrt(), (1 - ab).sqrt()
        eye = torch.eye(self.channels, dtype=torch.float64)
        r2 = data.r2[None, :, None, None]
        inv = torch.linalg.inv(ab * data.sigma + (1 - ab) * r2 * eye)
        return s * r2 * inv, a * data.sigma @ inv

    def _all_pixels(self, x: Tensor, t: Tensor, z: Tensor | None) -> Tensor:
        data = self.modes(x.shape[-1])
        modes = data.to_modes(x)
        ab = self.alpha_bar[t][:, None, None]
        residual = modes - ab.sqrt() * data.m[None, :, None] * data.data_mean(z, x.shape[0])
        out = torch.empty_like(residual)
        for value in t.unique().tolist():  # samplers call with one t: one gain per call
            rows = (t == value).nonzero().squeeze(1)
            g, _ = self.gain(x.shape[-1], torch.tensor([value]))
            out[rows] = torch.einsum("kij,bkj->bki", g[0], residual[rows])
        return data.from_modes(out)

    # ----------------------------------------------------------------- a subset of pixels (training)
    def dense(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(T mu, T Sigma T, Q = T^2)`` at the training resolution, dense, channel-major."""
        if self._dense is None:
            data = self.modes(self.train_resolution)
            blur = data.dct.T @ torch.diag(data.m) @ data.dct
            blur = torch.kron(torch.eye(self.channels, dtype=torch.float64), blur)
            self._dense = (blur @ data.pixel_mean, blur @ data.pixel_cov @ blur, blur @ blur)
        return self._dense

    def _dims(self, index: Tensor) -> Tensor:
        """Flat dense indices ``[B, N * C]`` of the values ``[B, N, C]`` flattened point-major."""
        n = self.train_resolution
        channel = torch.arange(self.channels) * n * n
        return (index[:, :, None].cpu() + channel).reshape(index.shape[0], -1)

    def subset_law(self, t: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(M, b, V, U)`` per example: ``E[(T eps)_S | x_S] = M (x_S - b)``, the error covariance ``V``
        and ``U = Q_SS - V``, the covariance of the prediction."""
        t_mu, p, q = self.dense()
        dims = self._dims(index)
        ab = self.alpha_bar[t.cpu()][:, None, None]
        q_ss = q[dims[:, :, None], dims[:, None, :]]
        a_ss = ab * p[dims[:, :, None], dims[:, None, :]] + (1 - ab) * q_ss
        solved = torch.linalg.solve(a_ss, q_ss)  # A^-1 Q (symmetric matrices)
        s = (1 - ab).sqrt()
        gain = s * solved.transpose(1, 2)
        v = q_ss - (1 - ab) * q_ss @ solved
        v = (v + v.transpose(1, 2)) / 2
        return gain, ab[:, :, 0].sqrt() * t_mu[dims], v, q_ss - v

    def _subset(self, values: Tensor, index: Tensor, t: Tensor) -> Tensor:
        self.last_subset_law = self.subset_law(t, index)
        gain, offset, _, _ = self.last_subset_law
        flat = values.detach().cpu().to(torch.float64).reshape(values.shape[0], -1)
        return (gain @ (flat - offset)[..., None])[..., 0].reshape(values.shape)

    # ----------------------------------------------------------------- the network's call
    def check_size(self, height: int, width: int) -> None:
        """The module may ask its network this; the oracle takes any square size."""

    def forward(
        self,
        values: Tensor,
        index: Tensor,
        resolution: tuple[int, int],
        t: Tensor,
        z: Tensor | None = None,
        kernel_scale: float = 1.0,
    ) -> Tensor:
        height, width = resolution
        if height != width:
            raise ValueError(f"the oracle takes square grids, got {resolution}")
        t = t.expand(values.shape[0]) if t.ndim == 0 else t
        self.calls.append((t.detach().cpu().clone(), (height, width), float(kernel_scale), index.cpu()))
        factor = height / self.train_resolution
        if abs(kernel_scale - factor) > 1e-9:
            raise ValueError(f"kernel_scale {kernel_scale} at {height}x{width}, expected f = {factor}")
        t = t.cpu()
        if index.shape[1] == height * width:
            canvas = torch.zeros(values.shape[0], self.channels, height * width, dtype=torch.float64)
            canvas.scatter_(
                2,
                index.cpu()[:, None, :].expand(-1, self.channels, -1),
                values.detach().cpu().transpose(1, 2).to(torch.float64),
            )
            out = self._all_pixels(canvas.reshape(-1, self.channels, height, width), t, z)
            out = torch.gather(out.flatten(2), 2, index.cpu()[:, None, :].expand(-1, self.channels, -1))
            out = out.transpose(1, 2)
        else:
            if factor != 1:
                raise ValueError("the subset oracle is for training, at the training resolution")
            out = self._subset(values, index, t)
        return (self.scale * out + self.offset).to(values.dtype).to(values.device)


def mode_law(
    alpha_bar: Tensor,
    timesteps: list[int],
    m: Tensor,
    nvar: Tensor,
    sigma: Tensor,
    sampler: str,
    eta: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Exact law of a sampler's final state per mode, ``(K [K, C, C], cov [K, C, C])``: mean ``K mu_k`` for
    data mean ``mu_k``, from ``x_T = N eps`` (mean 0, covariance ``n^2 I``). Per step, with ``x0 = m mu + H (x
    - a m mu)`` and ``eps = G (x - a m mu)`` (:meth:`MollifiedOracle.gain`): DDIM (Song et al. Eq. 12) ``x' =
    a' x0 + sqrt(1 - ab' - s_eta^2) eps + s_eta N z``, ``s_eta = eta sqrt((1 - ab') / (1 - ab) (1 - ab /
    ab'))``; ancestral (DDPM Eq. 7 for the jump) ``x' = a' beta / (1 - ab) x0 + sqrt(ab / ab') (1 - ab') /
    (1 - ab) x + sqrt((1 - ab') / (1 - ab) beta) N z``, ``beta = 1 - ab / ab'``; the last step goes to
    ``ab' = 1`` without noise. The plain (latent) process is ``m = n = 1``."""
    modes, channels = sigma.shape[:2]
    eye = torch.eye(channels, dtype=torch.float64).expand(modes, -1, -1)
    mm = m[:, None, None]
    r2 = (nvar / m**2)[:, None, None]
    sens = torch.zeros(modes, channels, channels, dtype=torch.float64)
    cov = nvar[:, None, None] * eye
    for i, t in enumerate(timesteps):
        ab = float(alpha_bar[t])
        ab_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        a, s, a_prev = math.sqrt(ab), math.sqrt(1 - ab), math.sqrt(ab_prev)
        inv = torch.linalg.inv(ab * sigma + (1 - ab) * r2 * eye)
        g, h = s * r2 * inv, a * sigma @ inv
        # x0 = H x + (m - a m H) mu, eps = G x - a m G mu
        x0_lin, x0_mu = h, mm * eye - a * mm * h
        e_lin, e_mu = g, -a * mm * g
        if sampler == "ddim":
            std = eta * math.sqrt(max((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev), 0.0))
            direction = math.sqrt(max(1 - ab_prev - std**2, 0.0))
            lin = a_prev * x0_lin + direction * e_lin
            mu = a_prev * x0_mu + direction * e_mu
            var = std**2
        elif sampler == "ddpm":
            beta = 1 - ab / ab_prev
            c0, c1 = a_prev * beta / (1 - ab), math.sqrt(ab / ab_prev) * (1 - ab_prev) / (1 - ab)
            lin = c0 * x0_lin + c1 * eye
            mu = c0 * x0_mu
            var = (1 - ab_prev) / (1 - ab) * beta if ab_prev < 1 else 0.0
        else:
            raise ValueError(sampler)
        sens = lin @ sens + mu
        cov = lin @ cov @ lin.transpose(1, 2) + var * nvar[:, None, None] * eye
    return sens, cov


def trailing(num_steps: int, steps: int) -> list[int]:
    """Trailing spacing, ``round(T - i T / n) - 1`` (starts at ``T - 1``)."""
    return [round(num_steps - i * num_steps / steps) - 1 for i in range(steps)]


class LatentOracle(nn.Module):
    """A drop-in latent network ``forward(z_t [B, D], t [B])`` returning ``E[eps | z_t]`` for standardised
    codes ``N(mean, cov)`` under ``z_t = sqrt(ab) z_0 + sqrt(1 - ab) eps`` (constant beta); ``offset`` makes
    it wrong in a known way; ``calls`` logs ``t``."""

    def __init__(self, mean: Tensor, cov: Tensor, num_steps: int = 1000, beta: float = 0.008) -> None:
        super().__init__()
        self.mean, self.cov = mean, cov
        self.alpha_bar = constant_alpha_bar(num_steps, beta)
        self.offset = 0.0
        self.calls: list[Tensor] = []

    def law(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(M [B, D, D], V [B, D, D])``: ``E[eps | z] = M (z - a mean)`` and the error covariance."""
        ab = self.alpha_bar[t][:, None, None]
        eye = torch.eye(self.mean.numel(), dtype=torch.float64)
        inv = torch.linalg.inv(ab * self.cov + (1 - ab) * eye)
        return (1 - ab).sqrt() * inv, eye - (1 - ab) * inv

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        self.calls.append(t.detach().cpu().clone())
        gain, _ = self.law(t.cpu())
        ab = self.alpha_bar[t.cpu()][:, None]
        residual = z.detach().cpu().to(torch.float64) - ab.sqrt() * self.mean
        return ((gain @ residual[..., None])[..., 0] + self.offset).to(z.dtype).to(z.device)
