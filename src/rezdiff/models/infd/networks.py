"""The LDM VQ-f4 autoencoder parts that INFD builds on: encoder, vector quantiser, feature decoder.

Encoder and decoder are diffusers' ``Encoder``/``Decoder`` (``diffusers.models.autoencoders.vae``), which
have the LDM layout: ``conv_in``, levels of residual blocks with strided-conv downsampling (pad right/bottom
by one, as LDM) or nearest upsampling + conv, a middle block ``res, single-head self-attention, res``,
``GroupNorm, SiLU, conv_out``. Two places where INFD departs from diffusers' (and LDM's) VQ model, and why
they are written here rather than reused:

- INFD puts the vector quantiser at the *start of the decoder* (``decode(z)`` quantises), so the latent
  diffusion of stage 2 is trained on the raw pre-VQ encoder output;
- the decoder ends *before its output head*: as the authors' LDM decoder with ``give_pre_end=True``, the
  output GroupNorm, SiLU and RGB convolution are removed and ``phi`` is the raw 128-channel activation ``h``
  of the last up block (4x the latent size) that the neural-field renderer reads. ``out_norm=True`` keeps
  the GroupNorm + SiLU (``phi = SiLU(GroupNorm(h))``, rezdiff's earlier layout).

The quantiser is our own, though diffusers' ``VectorQuantizer(legacy=False)`` gives the same codes, loss and
gradients (tested; its default ``legacy=True`` is taming's loss with ``beta`` on the codebook term): ours
searches the 8192 codes in chunks instead of one ``[N, 8192]`` distance table, returns the codes as
``[B, h, w]`` and looks them up on their own (stage 2 decodes codes it did not encode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import Decoder, Encoder
from torch import Tensor, nn


def _widths(base_channels: int, channel_mult: tuple[int, ...], norm_num_groups: int) -> tuple[int, ...]:
    widths = tuple(base_channels * m for m in channel_mult)
    if not widths or any(w % norm_num_groups for w in widths):
        raise ValueError(f"every level width {widths} must be divisible by norm_num_groups={norm_num_groups}")
    return widths


class LatentEncoder(nn.Module):
    """``x [B, 3, S, S] -> z [B, latent_channels, S/f, S/f]`` with ``f = 2 ** (len(channel_mult) - 1)``.

    LDM's encoder followed by its 1x1 ``quant_conv``; ``z`` is the *pre-quantisation* latent.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        widths = _widths(base_channels, tuple(channel_mult), norm_num_groups)
        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=("DownEncoderBlock2D",) * len(widths),
            block_out_channels=widths,
            layers_per_block=num_res_blocks,
            norm_num_groups=norm_num_groups,
            act_fn="silu",
            double_z=False,  # a VQ model, not a KL one
        )
        self.quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.downsample_factor = 2 ** (len(widths) - 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        if size[0] % self.downsample_factor or size[1] % self.downsample_factor:
            raise ValueError(f"encoder input {tuple(size)} must be divisible by {self.downsample_factor}")
        return self.quant_conv(self.encoder(x))


class FeatureDecoder(nn.Module):
    """``z_q [B, latent_channels, h, w] -> phi [B, base_channels, f*h, f*w]``: LDM's ``post_quant_conv`` and
    decoder stopped before its output head (INFD's ``give_pre_end=True``), so the output is a feature map.

    ``out_norm=False`` (default, the authors'): no ``conv_norm_out`` submodule, ``phi`` = the last up block's
    output, so the authors' decoder weights map one to one onto this module's. ``out_norm=True``: the
    decoder's output GroupNorm and SiLU are kept and ``phi = SiLU(GroupNorm(h))``.
    """

    def __init__(
        self,
        latent_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
        out_norm: bool = False,
    ) -> None:
        super().__init__()
        widths = _widths(base_channels, tuple(channel_mult), norm_num_groups)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=3,
            up_block_types=("UpDecoderBlock2D",) * len(widths),
            block_out_channels=widths,
            layers_per_block=num_res_blocks,
            norm_num_groups=norm_num_groups,
            act_fn="silu",
        )
        self.decoder.conv_out = nn.Identity()  # INFD: no RGB layer; the renderer reads the features
        if not out_norm:  # give_pre_end: no output norm or activation either (and no norm parameters)
            self.decoder.conv_norm_out = nn.Identity()
            self.decoder.conv_act = nn.Identity()
        self.out_norm = out_norm
        self.out_channels = widths[0]
        self.upsample_factor = 2 ** (len(widths) - 1)

    def forward(self, z_q: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z_q))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with a straight-through gradient (van den Oord et al. 2017).

    ``forward(z [B, D, h, w]) -> (z_q, loss, codes)``: ``z_q`` has the values of the nearest codes and the
    gradient of the identity w.r.t. ``z``; ``loss = ||sg[z] - e||^2 + beta ||z - sg[e]||^2`` (means over
    elements: codebook term + commitment term); ``codes [B, h, w]`` the chosen indices.

    Codebook initialisation is LDM's: uniform in ``[-1/num_codes, 1/num_codes]``. Dead codes are not
    restarted (neither LDM nor INFD do; a restart would have to be synchronised across DDP ranks);
    :func:`perplexity` of the chosen codes is logged instead so that collapse is visible.
    """

    def __init__(self, num_codes: int = 8192, dim: int = 3, beta: float = 0.25) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes and dim must be >= 1, got {num_codes}, {dim}")
        self.num_codes = num_codes
        self.dim = dim
        self.beta = beta
        self.codebook = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)

    def nearest(self, z: Tensor) -> Tensor:
        """Index of the nearest code (Euclidean) for every vector of ``z [B, D, h, w]`` -> ``[B, h, w]``."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        weight = self.codebook.weight.float()
        # ||z||^2 does not change the argmin; chunks keep the [N, num_codes] table small.
        codes = [(weight.square().sum(1) - 2 * chunk @ weight.t()).argmin(1) for chunk in flat.split(65536)]
        return torch.cat(codes).view(z.shape[0], *z.shape[2:])

    def lookup(self, codes: Tensor) -> Tensor:
        """Codes ``[B, h, w]`` -> code vectors ``[B, D, h, w]``."""
        return self.codebook(codes).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        codes = self.nearest(z)
        e = self.lookup(codes).to(z.dtype)
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()  # straight-through estimator
        return z_q, loss, codes


def perplexity(codes: Tensor, num_codes: int) -> Tensor:
    """``exp`` of the entropy of the code histogram: the effective number of codes in use."""
    counts = torch.bincount(codes.flatten(), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
