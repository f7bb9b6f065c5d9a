"""∞-Diff's multi-scale network (paper Fig. 4, §4.2–4.3, Appendix A) and its diffusion-autoencoder encoder.

Plain ``nn.Module``s that know nothing about diffusion: values at ``N`` points of an ``H x W`` pixel grid
in, values at the same points out. The top level works on the raw points with sparse residual blocks
(depthwise sparse 7x7 convolution + MLP, modulated LayerNorm); the points are then interpolated onto a
fixed inner grid (k-NN, k = 3) where a dense ADM-style U-Net (diffusers blocks, scale-shift time
conditioning, attention through ``scaled_dot_product_attention``) aggregates global context, read back at
the points bilinearly, and refined by up-blocks that fuse the down-blocks' skips. The neighbour structure is
built once per forward pass and shared by every sparse block; ``kernel_scale = R / R0`` resizes the sparse
kernels for sampling at a resolution ``R`` other than the training one ``R0`` (the inner grid stays fixed).

(Over ~400 lines: the denoiser and the encoder share their sparse ends (``_SparseEnds``), and the U-Net
between them is the paper's Fig. 4 in one place.)
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from torch import Tensor, nn

from rezdiff.data.coords import Resolution, as_hw, index_to_coord
from rezdiff.models.infty_diff.interpolate import grid_to_points, points_to_grid
from rezdiff.models.infty_diff.sparse import (
    Backend,
    Neighbours,
    SparseDepthwiseConv,
    build_neighbours,
    resized_kernel_size,
)

__all__ = ["InftyDiffEncoder", "InftyDiffNet", "InnerUNet", "LatentConditioning", "SparseResBlock"]

# How the code z enters the inner U-Net (the sparse blocks always scale by (1 + mlp(z))): "scale" is the
# authors' (every U-Net resnet scales its time-modulated hidden state), "embedding" adds Linear(z) to the
# time embedding (rezdiff's first form, diffusers' class-embedding route).
LatentConditioning = Literal["scale", "embedding"]


class SparseResBlock(nn.Module):
    """``x + conv(mod(norm(x)))`` then ``x + mlp(mod(norm(x)))`` on points ``[B, N, width]``.

    ``mod`` is the time modulation ``(1 + scale) h + shift`` and then the latent modulation ``(1 + s_z) h``,
    each present only when its dimension is given (the encoder's blocks have neither). ``skip=True`` adds
    the up-block's fusion ``Linear(2 width -> width)`` of ``[x, skip]`` in front.
    """

    def __init__(
        self,
        width: int,
        kernel_size: int = 7,
        mlp_ratio: int = 2,
        time_dim: int | None = None,
        latent_dim: int | None = None,
        depthwise: bool = True,
        backend: Backend = "auto",
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.fuse = nn.Linear(2 * width, width) if skip else None
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.conv = SparseDepthwiseConv(width, kernel_size, depthwise=depthwise, backend=backend)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )
        self.time = nn.ModuleList()
        self.latent = nn.ModuleList()
        for _ in range(2):
            if time_dim is not None:
                self.time.append(nn.Sequential(nn.GELU(), nn.Linear(time_dim, 2 * width)))
            if latent_dim is not None:
                self.latent.append(
                    nn.Sequential(nn.Linear(latent_dim, width), nn.GELU(), nn.Linear(width, width))
                )

    def _modulate(self, h: Tensor, which: int, emb: Tensor | None, z: Tensor | None) -> Tensor:
        h = (self.norm1, self.norm2)[which](h)
        if len(self.time):
            scale, shift = self.time[which](emb).unsqueeze(1).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        if len(self.latent):
            h = h * (1 + self.latent[which](z).unsqueeze(1))
        return h

    def forward(
        self,
        x: Tensor,
        neighbours: Neighbours,
        emb: Tensor | None = None,
        z: Tensor | None = None,
        skip: Tensor | None = None,
        scale: float = 1.0,
    ) -> Tensor:
        if self.fuse is not None:
            x = self.fuse(torch.cat((x, skip), dim=-1))
        x = x + self.conv(self._modulate(x, 0, emb, z), neighbours, scale)
        return x + self.mlp(self._modulate(x, 1, emb, z))


class _LatentScaledTimeProjection(nn.Module):
    """A U-Net resnet's time projection that also applies the authors' latent scale ``(1 + mlp(z))``.

    diffusers' ``ResnetBlock2D`` (``scale_shift``) computes ``norm(h) (1 + s) + b`` from ``[s, b] =
    proj(act(temb))``; the authors' ConvBlock then multiplies by ``1 + mlp(z)``. With this module in place of
    ``proj`` (and the resnet's own activation of ``temb`` switched off), ``temb = [emb, z]`` and it returns
    ``[(1 + s)(1 + g) - 1, b (1 + g)]``, so the resnet computes ``(norm(h) (1 + s) + b)(1 + g)`` exactly.
    ``mlp`` = Linear(latent_dim, C) -> GELU -> Linear(C, C), the authors' ``z_mlp``.
    """

    def __init__(self, proj: nn.Linear, act: nn.Module, time_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.proj, self.act, self.time_dim = proj, act, time_dim
        width = proj.out_features // 2
        self.latent = nn.Sequential(nn.Linear(latent_dim, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, packed: Tensor) -> Tensor:
        emb, z = packed[:, : self.time_dim], packed[:, self.time_dim :]
        scale, shift = self.proj(self.act(emb)).chunk(2, dim=1)
        gain = 1 + self.latent(z)
        return torch.cat(((1 + scale) * gain - 1, shift * gain), dim=1)


class InnerUNet(nn.Module):
    """ADM-style U-Net on the fixed inner grid, from diffusers' blocks: ``[B, C, r, r] -> [B, C, r, r]``.

    Built here rather than through ``UNet2DModel`` because ∞-Diff needs what that class does not expose:
    an external time embedding (shared with the sparse blocks), dropout only at resolutions
    ``<= dropout_resolution`` (paper App. A), and the down path + middle alone for the encoder
    (``decoder=False``; :meth:`encode`). ``latent_dim`` gives every resnet the authors' latent scale
    (:class:`_LatentScaledTimeProjection`); ``z`` is then required by :meth:`forward`.
    """

    def __init__(
        self,
        channels: int,
        resolution: int,
        multipliers: tuple[int, ...],
        layers_per_block: int,
        attention_resolutions: tuple[int, ...],
        dropout: float,
        time_dim: int | None,
        dropout_resolution: int = 16,
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        decoder: bool = True,
        latent_dim: int | None = None,
    ) -> None:
        super().__init__()
        if latent_dim is not None and time_dim is None:
            raise ValueError("InnerUNet: latent_dim needs time_dim (z scales the time-modulated resnets)")
        levels = len(multipliers)
        if resolution % 2 ** (levels - 1):
            raise ValueError(
                f"inner_resolution {resolution} must be divisible by 2**{levels - 1} ({levels} U-Net levels)"
            )
        widths = [channels * m for m in multipliers]
        if any(width % norm_num_groups for width in widths):
            raise ValueError(f"U-Net widths {widths} must be divisible by norm_num_groups={norm_num_groups}")
        sizes = [resolution // 2**level for level in range(levels)]
        attends = [size in attention_resolutions for size in sizes]
        drops = [dropout if size <= dropout_resolution else 0.0 for size in sizes]
        shift = "scale_shift" if time_dim is not None else "default"
        common = dict(
            temb_channels=time_dim,
            resnet_eps=1e-5,
            resnet_act_fn="silu",
            resnet_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            resnet_time_scale_shift=shift,
        )
        self.conv_in = nn.Conv2d(channels, widths[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        for level in range(levels):
            self.down_blocks.append(
                get_down_block(
                    "AttnDownBlock2D" if attends[level] else "DownBlock2D",
                    num_layers=layers_per_block,
                    in_channels=widths[max(level - 1, 0)],
                    out_channels=widths[level],
                    add_downsample=level < levels - 1,
                    downsample_padding=1,
                    dropout=drops[level],
                    **common,
                )
            )
        self.mid_block = UNetMidBlock2D(
            in_channels=widths[-1],
            temb_channels=time_dim,
            dropout=drops[-1],
            resnet_eps=1e-5,
            resnet_act_fn="silu",
            resnet_time_scale_shift=shift,
            resnet_groups=norm_num_groups,
            attn_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
        )
        self.up_blocks = nn.ModuleList()
        if decoder:
            for level in reversed(range(levels)):
                self.up_blocks.append(
                    get_up_block(
                        "AttnUpBlock2D" if attends[level] else "UpBlock2D",
                        num_layers=layers_per_block + 1,
                        in_channels=widths[max(level - 1, 0)],
                        out_channels=widths[level],
                        prev_output_channel=widths[min(level + 1, levels - 1)],
                        add_upsample=level > 0,
                        dropout=drops[level],
                        **common,
                    )
                )
            self.norm_out = nn.GroupNorm(norm_num_groups, widths[0], eps=1e-5)
            self.conv_out = nn.Conv2d(widths[0], channels, kernel_size=3, padding=1)
        self.out_channels = widths[-1]
        self.latent_dim = latent_dim
        if latent_dim is not None:
            for resnet in self.resnets():
                resnet.time_emb_proj = _LatentScaledTimeProjection(
                    resnet.time_emb_proj, resnet.nonlinearity, time_dim, latent_dim
                )
                resnet.skip_time_act = True  # the projection activates the time part itself, not z

    def resnets(self) -> list[nn.Module]:
        """Every resnet of the down path, the middle and the up path (the modules z scales)."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [resnet for block in blocks for resnet in block.resnets]

    def _temb(self, emb: Tensor | None, z: Tensor | None) -> Tensor | None:
        if self.latent_dim is None:
            if z is not None:
                raise ValueError("InnerUNet: z was given but the U-Net was built with latent_dim=None")
            return emb
        if z is None:
            raise ValueError("InnerUNet: this U-Net is scaled by a latent z [B, latent_dim]: pass z")
        return torch.cat((emb, z.to(emb.dtype)), dim=-1)

    def encode(
        self, x: Tensor, emb: Tensor | None, z: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Down path and middle: the bottleneck ``[B, C·m_last, r', r']`` and the skips for the up path."""
        emb = self._temb(emb, z)
        h = self.conv_in(x)
        skips: tuple[Tensor, ...] = (h,)
        for block in self.down_blocks:
            h, residuals = block(hidden_states=h, temb=emb)
            skips += residuals
        return self.mid_block(h, emb), skips

    def forward(self, x: Tensor, emb: Tensor | None, z: Tensor | None = None) -> Tensor:
        h, skips = self.encode(x, emb, z)
        emb = self._temb(emb, z)
        for block in self.up_blocks:
            count = len(block.resnets)
            h, skips = block(h, skips[-count:], emb), skips[:-count]
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))


def _check_points(x: Tensor, index: Tensor, resolution: Resolution, channels: int) -> tuple[int, int]:
    height, width = as_hw(resolution)
    if x.ndim != 3 or x.shape[-1] != channels:
        raise ValueError(f"x must be [B, N, {channels}], got {tuple(x.shape)}")
    if tuple(index.shape) != tuple(x.shape[:2]):
        raise ValueError(f"index must be [B, N] = {tuple(x.shape[:2])}, got {tuple(index.shape)}")
    return height, width


class _SparseEnds(nn.Module):
    """What the network and the encoder share: the sparse down path and the step onto the inner grid."""

    def _setup(
        self,
        channels: int,
        sparse_width: int,
        sparse_blocks: int,
        kernel_size: int,
        mlp_ratio: int,
        inner_resolution: int,
        inner_channels: int,
        knn: int,
        depthwise: bool,
        backend: Backend,
        time_dim: int | None,
        latent_dim: int | None,
    ) -> None:
        self.channels, self.kernel_size, self.knn = channels, kernel_size, knn
        self.inner_resolution = inner_resolution
        self.linear_in = nn.Linear(channels, sparse_width)
        self.down = nn.ModuleList(
            SparseResBlock(sparse_width, kernel_size, mlp_ratio, time_dim, latent_dim, depthwise, backend)
            for _ in range(sparse_blocks)
        )
        self.to_inner = nn.Linear(sparse_width, inner_channels)

    def kernel_size_for(self, kernel_scale: float = 1.0) -> int:
        """Size of the resized sparse kernels at ``kernel_scale`` (what the neighbour table is built for)."""
        return resized_kernel_size(self.kernel_size, kernel_scale)

    def _down(
        self,
        x: Tensor,
        index: Tensor,
        resolution: Resolution,
        emb: Tensor | None,
        z: Tensor | None,
        kernel_scale: float,
    ) -> tuple[Tensor, list[Tensor], Tensor, Neighbours, Tensor]:
        height, width = _check_points(x, index, resolution, self.channels)
        neighbours = build_neighbours(index, (height, width), self.kernel_size_for(kernel_scale))
        h = self.linear_in(x)
        skips = []
        for block in self.down:
            h = block(h, neighbours, emb, z, scale=kernel_scale)
            skips.append(h)
        coords = index_to_coord(index, (height, width), dtype=torch.promote_types(x.dtype, torch.float32))
        size = (self.inner_resolution, self.inner_resolution)
        grid = points_to_grid(
            self.to_inner(h), coords, size, self.knn, resolution=(height, width), index=index
        )
        return h, skips, grid, neighbours, coords


class InftyDiffNet(_SparseEnds):
    """``forward(x [B, N, C], index [B, N], resolution, t [B], z=None, kernel_scale=1.0) -> [B, N, C]``.

    Defaults are the paper's 256² configuration (paper Appendix A and the authors'
    ``configs/ffhq_256_config.py``; the inner U-Net's layout differs from theirs, see the README's
    deviations). ``latent_dim`` adds the diffusion autoencoder's conditioning on ``z [B, latent_dim]`` (then
    required): every sparse block scales its two modulated LayerNorms by ``1 + mlp(z)``, and
    ``latent_conditioning`` says how z enters the inner U-Net:
    ``"scale"`` (default, the authors' code for the paper's runs) scales every resnet's time-modulated
    hidden state by ``1 + mlp(z)`` as well; ``"embedding"`` adds ``Linear(z)`` to the U-Net's time embedding
    (rezdiff's earlier form). ``depthwise=False`` is the regular sparse convolution of the Table 2 ablation.
    ``backend`` picks the sparse convolution's implementation.
    """

    def __init__(
        self,
        channels: int = 3,
        sparse_width: int = 64,
        sparse_blocks: int = 3,
        kernel_size: int = 7,
        mlp_ratio: int = 2,
        inner_resolution: int = 128,
        inner_channels: int = 128,
        inner_multipliers: tuple[int, ...] = (1, 2, 4, 8, 8),
        inner_layers_per_block: int = 2,
        inner_attention_resolutions: tuple[int, ...] = (16, 8),
        dropout: float = 0.1,
        latent_dim: int | None = None,
        depthwise: bool = True,
        backend: Backend = "auto",
        knn: int = 3,
        dropout_resolution: int = 16,
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        latent_conditioning: LatentConditioning = "scale",
    ) -> None:
        super().__init__()
        if latent_conditioning not in ("scale", "embedding"):
            raise ValueError(
                f"unknown latent_conditioning {latent_conditioning!r}; expected 'scale' (the authors') or "
                "'embedding'"
            )
        time_dim = 4 * inner_channels
        self._setup(
            channels, sparse_width, sparse_blocks, kernel_size, mlp_ratio, inner_resolution, inner_channels,
            knn, depthwise, backend, time_dim, latent_dim,
        )  # fmt: skip
        self.latent_dim, self.latent_conditioning = latent_dim, latent_conditioning
        self.time_proj = Timesteps(inner_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(inner_channels, time_dim)
        embedded = latent_dim is not None and latent_conditioning == "embedding"
        self.latent_embedding = nn.Linear(latent_dim, time_dim) if embedded else None
        self.unet = InnerUNet(
            inner_channels,
            inner_resolution,
            tuple(inner_multipliers),
            inner_layers_per_block,
            tuple(inner_attention_resolutions),
            dropout,
            time_dim,
            dropout_resolution=dropout_resolution,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            latent_dim=latent_dim if latent_conditioning == "scale" else None,
        )
        self.from_inner = nn.Linear(inner_channels, sparse_width)
        self.up = nn.ModuleList(
            SparseResBlock(
                sparse_width, kernel_size, mlp_ratio, time_dim, latent_dim, depthwise, backend, skip=True
            )
            for _ in range(sparse_blocks)
        )
        self.linear_out = nn.Linear(sparse_width, channels)

    def embed_time(self, t: Tensor | float, batch: int) -> Tensor:
        """``t`` (scalar or ``[B]``, float or int) -> sinusoidal features -> MLP -> ``[B, 4 C_inner]``."""
        t = torch.as_tensor(t, device=self.linear_in.weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or [B] = [{batch}], got shape {tuple(t.shape)}")
        return self.time_embedding(self.time_proj(t).to(self.linear_in.weight.dtype))

    def forward(
        self,
        x: Tensor,
        index: Tensor,
        resolution: Resolution,
        t: Tensor,
        z: Tensor | None = None,
        kernel_scale: float = 1.0,
    ) -> Tensor:
        if (z is None) != (self.latent_dim is None):
            raise ValueError(
                "this network is conditioned on a latent z [B, latent_dim]: pass z"
                if z is None
                else "z was given but the network was built with latent_dim=None"
            )
        if z is not None and tuple(z.shape) != (x.shape[0], self.latent_dim):
            raise ValueError(f"z must be [B, {self.latent_dim}], got {tuple(z.shape)}")
        emb = self.embed_time(torch.as_tensor(t, device=x.device), x.shape[0])
        h, skips, grid, neighbours, coords = self._down(x, index, resolution, emb, z, kernel_scale)
        if self.latent_embedding is not None:
            inner = self.unet(grid, emb + self.latent_embedding(z))
        else:
            inner = self.unet(grid, emb, z if self.unet.latent_dim is not None else None)
        h = self.from_inner(grid_to_points(inner, coords))
        for block in self.up:
            h = block(h, neighbours, emb, z, skip=skips.pop(), scale=kernel_scale)
        return self.linear_out(h)


class InftyDiffEncoder(_SparseEnds):
    """``forward(x [B, N, C], index [B, N], resolution, kernel_scale=1.0) -> z [B, latent_dim]``.

    The diffusion-autoencoder encoder (paper §5, "the downsampling part of our architecture"): the sparse
    blocks without modulation, k-NN onto the inner grid, the U-Net's down path and middle, GroupNorm + SiLU,
    a global mean and a Linear. Invariant to the order of the points.
    """

    def __init__(
        self,
        channels: int = 3,
        sparse_width: int = 64,
        sparse_blocks: int = 3,
        kernel_size: int = 7,
        mlp_ratio: int = 2,
        inner_resolution: int = 128,
        inner_channels: int = 128,
        inner_multipliers: tuple[int, ...] = (1, 2, 4, 8, 8),
        inner_layers_per_block: int = 2,
        inner_attention_resolutions: tuple[int, ...] = (16, 8),
        dropout: float = 0.1,
        latent_dim: int = 1024,
        depthwise: bool = True,
        backend: Backend = "auto",
        knn: int = 3,
        dropout_resolution: int = 16,
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        self._setup(
            channels, sparse_width, sparse_blocks, kernel_size, mlp_ratio, inner_resolution, inner_channels,
            knn, depthwise, backend, None, None,
        )  # fmt: skip
        self.latent_dim = latent_dim
        self.unet = InnerUNet(
            inner_channels,
            inner_resolution,
            tuple(inner_multipliers),
            inner_layers_per_block,
            tuple(inner_attention_resolutions),
            dropout,
            None,
            dropout_resolution=dropout_resolution,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            decoder=False,
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, self.unet.out_channels, eps=1e-5)
        self.linear_out = nn.Linear(self.unet.out_channels, latent_dim)

    def forward(self, x: Tensor, index: Tensor, resolution: Resolution, kernel_scale: float = 1.0) -> Tensor:
        _, _, grid, _, _ = self._down(x, index, resolution, None, None, kernel_scale)
        h, _ = self.unet.encode(grid, None)
        return self.linear_out(torch.nn.functional.silu(self.norm_out(h)).mean(dim=(2, 3)))
