"""A fully convolutional time-conditioned U-Net: diffusers' ``UNet2DModel`` behind a plain signature.

diffusers' U-Net is reused as it is (ADM-style residual blocks, attention through
``scaled_dot_product_attention``); this wrapper only turns a short, typed description (widths, blocks,
which levels attend) into its block lists, so that configs stay readable and the DDPM baseline, DVDP
and INFD's latent model can share one definition.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn


class UNet(nn.Module):
    """``forward(x [B, C, H, W], t [B]) -> [B, out_channels, H, W]``.

    H and W must be divisible by ``downsample_factor`` (2 ** (levels - 1)).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 256, 256),
        layers_per_block: int = 2,
        attention_levels: tuple[int, ...] = (),
        attention_in_middle: bool = True,
        attention_head_dim: int = 32,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        levels = len(block_out_channels)
        bad = [level for level in attention_levels if not 0 <= level < levels]
        if bad:
            raise ValueError(f"attention_levels {bad} outside the {levels} levels of block_out_channels")
        if any(width % norm_num_groups for width in block_out_channels):
            raise ValueError(
                f"every width in block_out_channels {tuple(block_out_channels)} must be divisible by "
                f"norm_num_groups={norm_num_groups}"
            )
        attends = [level in attention_levels for level in range(levels)]
        self.downsample_factor = 2 ** (levels - 1)
        self.net = UNet2DModel(
            in_channels=in_channels,
            out_channels=out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attends),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
            add_attention=attention_in_middle,
            attention_head_dim=attention_head_dim,
            dropout=dropout,
            norm_num_groups=norm_num_groups,
        )

    def check_size(self, height: int, width: int) -> None:
        """Raise a ValueError unless the U-Net can process an ``height x width`` input."""
        factor = self.downsample_factor
        if height % factor or width % factor:
            raise ValueError(
                f"this U-Net halves the resolution {factor.bit_length() - 1} times, so height and width must "
                f"be divisible by {factor}; got {height}x{width}"
            )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.net(x, t.to(torch.float32)).sample
