"""Exact references for INFD: the closed-form ε-predictor of Gaussian latents under INFD's own schedule,
a linear stand-in for the frozen stage 1, and stage 1's objective terms written out by hand.

Stage 2 (``INFD``) diffuses ``s z`` (``s`` = the latent scale) with linear betas 0.0015 -> 0.0195 over
T = 1000 (the authors' ``cfgs/models/dm.yaml``; ADM's ``get_named_beta_schedule`` with scale 1000/T = 1).
For raw latents ``z ~ N(mu, Sigma)`` the diffused state is ``N(s mu, s^2 Sigma)``, whose optimal
ε-predictor is :class:`tests.models.oracle.GaussianOracle` with that schedule (DDPM's case ``K = 0``).
The schedule is written out again here (``oracle.base_schedule``), not read from ``rezdiff.core``.

Stage 1's terms (Appendix H.2 of the paper; ``models/infd.py`` and ``models/vqgan/quantizer.py`` of
yinboc/infd) are written from their formulas with brute-force nearest codes and plain autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.models.oracle import GaussianOracle, base_schedule

INFD_BETAS = (0.0015, 0.0195)  # linear, T = 1000 (authors' dm.yaml)


def infd_oracle(mean: Tensor, cov: Tensor, scale: float, channels: int = 2, size: int = 8) -> GaussianOracle:
    """``E[eps | x_t]`` for the scaled latents ``s z``, ``z ~ N(mean, cov)``, under INFD's schedule."""
    oracle = GaussianOracle(scale * mean, scale**2 * cov, channels, size)
    oracle.alpha_bar = base_schedule(1000, *INFD_BETAS)
    oracle.lam = oracle.alpha_bar.sqrt()[None]
    oracle.sigma = (1 - oracle.alpha_bar).sqrt()
    oracle._gains.clear()
    return oracle


class LinearStage1(nn.Module):
    """A stand-in for the frozen stage 1 inside ``INFD``: ``decode`` is the identity on latents (it logs
    what it is given) and ``render`` repeats each latent pixel over a ``k x k`` block (``k = R / h``), so
    ``INFD.sample(n, R)`` is exactly the sampled latents, unscaled, upsampled by repetition."""

    def __init__(self, encoder_resolution: int, latent_channels: int, latent_size: int) -> None:
        super().__init__()
        self.encoder_resolution = encoder_resolution
        self.latent_channels = latent_channels
        self.latent_size = latent_size
        self.decoded: list[Tensor] = []

    def decode(self, z: Tensor) -> Tensor:
        self.decoded.append(z.detach().clone())
        return z

    def render(self, features: Tensor, resolution: tuple[int, int], **options: object) -> Tensor:
        height, width = resolution
        return features.repeat_interleave(height // features.shape[-2], -2).repeat_interleave(
            width // features.shape[-1], -1
        )


def nearest_codes(z: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook row for every vector of ``z [B, D, h, w]`` by brute force (cdist)."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    return torch.cdist(flat.double(), codebook.double()).argmin(1).view(z.shape[0], *z.shape[2:])


def vq_loss_by_hand(z: Tensor, codebook: Tensor, beta: float) -> Tensor:
    """van den Oord et al.'s ``||sg[z] - e||^2 + beta ||z - sg[e]||^2`` (element means), ``e`` the nearest
    codes: the codebook term moves the codes with weight 1, the commitment term the encoder with ``beta``."""
    e = codebook[nearest_codes(z, codebook)].permute(0, 3, 1, 2)
    return ((e - z.detach()) ** 2).mean() + beta * ((z - e.detach()) ** 2).mean()


def hinge_by_hand(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The authors' hinge critic loss: ``(mean relu(1 - D(real)) + mean relu(1 + D(fake))) / 2``."""
    return (torch.clamp(1 - logits_real, min=0).mean() + torch.clamp(1 + logits_fake, min=0).mean()) / 2


def clif_by_hand(renderer: nn.Module, query: Tensor) -> Tensor:
    """CLIF as the README describes it, from the module's weights: 3x3 conv; residual blocks
    ``x + conv(SiLU(GN(conv(SiLU(GN(x))))))``; GN, SiLU, 3x3 conv to RGB."""

    def conv(layer: nn.Conv2d, x: Tensor) -> Tensor:
        return F.conv2d(x, layer.weight, layer.bias, padding=1)

    def norm_act(layer: nn.GroupNorm, x: Tensor) -> Tensor:
        return F.silu(F.group_norm(x, layer.num_groups, layer.weight, layer.bias, layer.eps))

    h = conv(renderer.head, query)
    for block in renderer.blocks:
        h = h + conv(block.conv2, norm_act(block.norm2, conv(block.conv1, norm_act(block.norm1, h))))
    return conv(renderer.conv_out, norm_act(renderer.norm_out, h))


def clif_query_by_hand(phi: Tensor, points: Tensor, cell: Tensor) -> Tensor:
    """CLIF's input at query ``points [H, W, 2]`` ((x, y) in [-1, 1]) with cell ``[2]``, by brute force:
    the feature of the cell containing the point (column = number of cell borders ``2m/w - 1``, m = 1..w-1,
    at or left of x: a point on a border belongs to the cell after it), the offset from that cell's centre
    ``((2j + 1)/w - 1, (2i + 1)/h - 1)`` times ``(w, h)``, and the cell size times ``(w, h)``."""
    batch, channels, h, w = phi.shape
    xs = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
    ys = (2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1
    flat = points.reshape(-1, 2).double()
    col = (flat[:, :1] >= (2 * torch.arange(1, w, dtype=torch.float64) / w - 1)[None]).sum(1)
    row = (flat[:, 1:] >= (2 * torch.arange(1, h, dtype=torch.float64) / h - 1)[None]).sum(1)
    features = phi[:, :, row, col]  # [B, C, N]
    rel = torch.stack(((flat[:, 0] - xs[col]) * w, (flat[:, 1] - ys[row]) * h))
    rel_cell = (cell.double() * torch.tensor((w, h), dtype=torch.float64))[:, None].expand(2, flat.shape[0])
    extra = torch.cat((rel, rel_cell)).to(phi.dtype)[None].expand(batch, -1, -1)
    return torch.cat((features, extra), 1).reshape(batch, channels + 4, *points.shape[:2])
