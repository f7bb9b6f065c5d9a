"""The paper's sanity problem: a Gaussian mixture in function space whose score is known in closed form.

``X_0 = C^{1/2} rho_J + C^{1/2} xi`` with ``J`` uniform over the components, ``rho_j`` ramps on the unit
square (``amplitude * (s - 1/2)`` along the columns, then the rows) and ``xi`` white noise, so
``X_0 | J = j ~ N(mu_j, C)`` with ``mu_j = C^{1/2} rho_j`` (``C^{1/2}`` as an operator on functions). Under
the VP SDE with noise ``C`` the marginal is ``sum_j w_j N(m mu_j, C)`` at every ``t`` (``m^2 + std^2 = 1``),
and the noise the network should predict is

    E[noise | x_t] = std * (x_t - m sum_j pi_j(x_t) mu_j),
    pi_j ∝ exp(m <C^{-1/2} x_t, rho_j> - m^2 |rho_j|^2 / 2)   (Cameron-Martin; L² products = pixel means),

finite and the same at every resolution (``C`` must be positive definite: Matérn, or the inverse
Laplacian with ``zero_mode="lowest"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rezdiff.core.gaussian import randn
from rezdiff.core.schedules import vp_marginal
from rezdiff.models.multilevel.priors import Covariance


@dataclass(frozen=True)
class RampMixture:
    """The closed-form sanity problem on one channel; see the module docstring."""

    prior: Covariance
    amplitude: float = 40.0
    beta_min: float = 0.1
    beta_max: float = 20.0

    def _sigma(self, height: int, width: int, power: float) -> Tensor:
        if self.prior.boundary != "periodic":
            raise ValueError("RampMixture uses the Fourier basis; build the prior with boundary='periodic'")
        sigma = self.prior.sqrt_spectrum(height, width)
        if not bool((sigma > 0).all()):
            raise ValueError("RampMixture needs a positive definite prior (every eigenvalue > 0)")
        return sigma**power

    def _function_operator(self, f: Tensor, power: float) -> Tensor:
        """``C^{power/2} f`` for a function ``f`` given by its grid values (multiplier ``sigma^power``)."""
        sigma = self._sigma(*f.shape[-2:], power).to(f.device)
        return torch.fft.ifft2(torch.fft.fft2(f.double()) * sigma).real.to(f.dtype)

    def ramps(self, height: int, width: int) -> Tensor:
        """``rho_j`` at the pixel centres, ``[2, H, W]``."""
        rows = (torch.arange(height, dtype=torch.float64) + 0.5) / height - 0.5
        cols = (torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5
        grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
        return self.amplitude * torch.stack([grid_cols, grid_rows])

    def means(self, height: int, width: int) -> Tensor:
        """``mu_j = C^{1/2} rho_j``, ``[2, H, W]`` float64."""
        return self._function_operator(self.ramps(height, width), 1.0)

    def sample(self, num: int, resolution: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` draws of ``X_0`` on a ``resolution²`` grid, ``[num, 1, R, R]`` float32."""
        component = torch.randint(0, 2, (num,), generator=generator)
        noise = self.prior.sample((num, 1, resolution, resolution), generator, dtype=torch.float64)
        return (self.means(resolution, resolution)[component].unsqueeze(1) + noise).float()

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The exact ``E[noise | x_t]`` for ``x_t [B, 1, H, W]`` at times ``t [B]``."""
        height, width = x_t.shape[-2:]
        mean, std = vp_marginal(t.double().cpu(), self.beta_min, self.beta_max)
        mean, std = mean.view(-1, 1, 1, 1), std.view(-1, 1, 1, 1)
        x = x_t.double().cpu()
        white = self._function_operator(x, -1.0)  # C^{-1/2} x_t
        ramps = self.ramps(height, width)
        products = torch.einsum("bchw,jhw->bj", white, ramps) / (height * width)
        norms = ramps.square().mean(dim=(1, 2))
        logits = mean.view(-1, 1) * products - 0.5 * mean.view(-1, 1) ** 2 * norms
        weights = torch.softmax(logits, dim=1)
        mixed_mean = torch.einsum("bj,jhw->bhw", weights, self.means(height, width)).unsqueeze(1)
        return (std * (x - mean * mixed_mean)).to(x_t.dtype).to(x_t.device)

    def noisy(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``x_t = m x_0 + std C^{1/2} xi`` (the forward marginal given ``x_0``)."""
        mean, std = vp_marginal(t.double(), self.beta_min, self.beta_max)
        noise = self.prior.sqrt(randn(tuple(x0.shape), generator, dtype=torch.float64))
        return (mean.view(-1, 1, 1, 1) * x0.double() + std.view(-1, 1, 1, 1) * noise).float()
