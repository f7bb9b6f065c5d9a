"""A fully convolutional time-conditioned U-Net: diffusers' ``UNet2DModel`` behind a plain signature.

diffusers' U-Net is reused as it is (ADM-style residual blocks, attention through
``scaled_dot_product_attention``); this wrapper only turns a short, typed description (widths, blocks,
which levels attend) into its block lists, so that configs stay readable and the DDPM baseline, DVDP,
the multilevel SDE's U-Net option and INFD's latent model can share one definition. Those families take the
description as one :class:`UNetSettings` group (``unet:`` in a config) rather than as flat arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetSettings:
    """What :class:`UNet` is built from apart from its input and output channels: one typed group that the
    families share (``unet: {block_out_channels: [...], ...}`` in a config), recorded in checkpoints as a
    plain dict. ``block_out_channels`` are the widths of the levels (each halving the resolution), with
    ``layers_per_block`` residual blocks per level; ``attention_levels`` are the indices of the levels with
    self-attention (heads of ``attention_head_dim`` channels); ``dropout`` in the residual blocks;
    ``norm_num_groups`` GroupNorm groups (dividing every width)."""

    block_out_channels: tuple[int, ...] = (64, 128, 256, 256)
    layers_per_block: int = 2
    attention_levels: tuple[int, ...] = ()
    attention_head_dim: int = 32
    dropout: float = 0.0
    norm_num_groups: int = 32

    def __post_init__(self) -> None:
        # a config hands lists; tuples keep two equal settings equal and the record plain
        object.__setattr__(self, "block_out_channels", tuple(int(w) for w in self.block_out_channels))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ValueError(
                f"unet.block_out_channels must be one or more positive widths, got {self.block_out_channels}"
            )
        for name in ("layers_per_block", "attention_head_dim", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"unet.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"unet.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def of(cls, value: UNetSettings | Mapping[str, Any]) -> UNetSettings:
        """``value`` as settings: the dataclass itself, or the plain dict a config or checkpoint holds."""
        if isinstance(value, UNetSettings):
            return value
        if not isinstance(value, Mapping) and callable(getattr(value, "as_dict", None)):
            value = value.as_dict()  # a jsonargparse Namespace
        if not isinstance(value, Mapping):
            raise ValueError(f"unet must be a dict of {', '.join(UNET_SETTINGS)}, got {value!r}")
        unknown = sorted(set(value) - set(UNET_SETTINGS))
        if unknown:
            raise ValueError(f"unet has no setting {', '.join(unknown)}; it takes {', '.join(UNET_SETTINGS)}")
        return cls(**value)

    def as_dict(self) -> dict[str, Any]:
        """The plain dict a checkpoint records (and :class:`UNet` takes as keyword arguments)."""
        return asdict(self)


UNET_SETTINGS: tuple[str, ...] = tuple(field.name for field in fields(UNetSettings))
"""The names of :class:`UNetSettings`' fields (which were flat constructor arguments of the families)."""


def former_unet_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The former flat U-Net arguments given in ``values`` (keyword arguments, recorded hyperparameters or a
    parsed config), by the names of :data:`UNET_SETTINGS`; None counts as not given."""
    return {key: values[key] for key in UNET_SETTINGS if values.get(key) is not None}


DDPM_UNET = UNetSettings(
    block_out_channels=(64, 128, 256, 256),
    layers_per_block=2,
    attention_levels=(2,),
    attention_head_dim=32,
    dropout=0.1,
    norm_num_groups=32,
)
"""The default U-Net of the DDPM baseline and of DVDP (the DVDP paper compares the two on one network; the
paper configs set their own)."""


class UNet(nn.Module):
    """``forward(x [B, C, H, W], t [B]) -> [B, out_channels, H, W]``.

    H and W must be divisible by ``downsample_factor`` (2 ** (levels - 1)). A family builds it with
    ``UNet(channels, channels, **settings.as_dict())`` from its :class:`UNetSettings`.
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
