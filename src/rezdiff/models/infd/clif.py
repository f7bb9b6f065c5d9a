"""Neural-field renderers that turn INFD's feature map ``phi`` into pixels at any resolution, and tiling.

Every query point (``(x, y)`` in ``[-1, 1]``, the convention of :mod:`rezdiff.data.coords`) reads the
*nearest* feature vector of ``phi`` (the one whose cell contains it), its offset from that feature cell's
centre scaled to ``[-1, 1]`` (multiplied by ``phi``'s width/height) and its own cell size scaled the same
way (2 when the output has ``phi``'s size, 1 at twice that, ...): ``C + 4`` query channels
(:func:`query_features`). :class:`CLIF` processes the *grid* of queries with convolutions (INFD);
:class:`LIIFRenderer` maps each query independently with an MLP (the LIIF-style ablation of INFD's
Appendix A). :func:`render_field` renders a whole image or a box of it, tiled when it is large.

Queries follow :mod:`rezdiff.data.coords`, the one coordinate convention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rezdiff.data import coords as C

Box = tuple[float, float, float, float]
NormMode = Literal["global", "tile", "sampled"]
NORM_MODES: tuple[str, ...] = get_args(NormMode)
#: What a renderer's GroupNorm ``k`` normalises its input ``h`` with: ``stats[k]`` of a list (layers past
#: its end use their own statistics), ``stats(k, h)`` of a function, or ``h``'s own statistics (None).
Stats = list[Tensor] | Callable[[int, Tensor], Tensor] | None
#: ``norm="sampled"``: the statistics come from a ``SAMPLED_GRID x SAMPLED_GRID`` grid of windows spread
#: over the output, each ``tile // SAMPLED_GRID`` pixels wide (at least ``2 * receptive_radius + 8``),
#: rendered together in one pass: one tile's pixels for tiles of 160 and more (CLIF's radius 6).
SAMPLED_GRID = 8


def check_norm_mode(norm: str) -> None:
    """A ValueError naming the valid tiled-render statistics modes unless ``norm`` is one."""
    if norm not in NORM_MODES:
        raise ValueError(
            f"norm must be 'global' (exact whole-image statistics), 'sampled' (whole-image statistics "
            f"estimated from windows spread over the output, one extra small pass) or 'tile' (each "
            f"tile's own, the authors'), got {norm!r}"
        )


# ------------------------------------------------------------------------------------------ queries
def grid_queries(
    resolution: C.Resolution,
    rows: tuple[int, int] | None = None,
    cols: tuple[int, int] | None = None,
    box: Box | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Pixel centres ``[h, w, 2]`` and cell size ``[2]`` of rows ``[r0, r1)`` x cols ``[c0, c1)`` of an
    ``H x W`` grid laid over ``box = (x0, y0, x1, y1)`` (default: the whole domain ``(-1, -1, 1, 1)``)."""
    height, width = C.as_hw(resolution)
    r0, r1 = rows if rows is not None else (0, height)
    c0, c1 = cols if cols is not None else (0, width)
    flat = torch.arange(r0, r1, device=device).view(-1, 1) * width + torch.arange(c0, c1, device=device)
    points = C.index_to_coord(flat, (height, width), dtype=torch.float64)
    cell = C.cell_size((height, width), device=device, dtype=torch.float64)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box}")
        low = torch.tensor((x0, y0), device=device, dtype=torch.float64)
        extent = torch.tensor((x1 - x0, y1 - y0), device=device, dtype=torch.float64)
        points = low + (points + 1) / 2 * extent
        cell = cell * extent / 2
    return points.float(), cell.float()


def query_features(phi: Tensor, coords: Tensor, cell: Tensor) -> Tensor:
    """The renderer input for a grid of queries.

    ``phi [B, C, h, w]``, ``coords [B, H, W, 2]`` (whole-image frame), ``cell [B, H, W, 2]`` or ``[B, 2]``
    -> ``[B, C + 4, H, W]``: nearest feature, relative offset ``(q - centre) * (w, h)`` in ``[-1, 1]``
    and scaled cell ``cell * (w, h)``.
    """
    batch, channels, h, w = phi.shape
    out_h, out_w = coords.shape[1:3]
    points = coords.reshape(batch, -1, 2)
    index = C.coord_to_index(points, (h, w))
    features = C.gather_pixels(phi, index)  # [B, N, C]
    centres = C.index_to_coord(index, (h, w), dtype=points.dtype)
    scale = torch.tensor((w, h), device=phi.device, dtype=points.dtype)
    rel = (points - centres) * scale
    if cell.dim() == 2:
        cell = cell.view(batch, 1, 2).expand(-1, points.shape[1], -1)
    rel_cell = cell.reshape(batch, -1, 2).to(points.dtype) * scale
    query = torch.cat((features, rel.to(phi.dtype), rel_cell.to(phi.dtype)), dim=-1)
    return query.transpose(1, 2).reshape(batch, channels + 4, out_h, out_w).contiguous()


# ------------------------------------------------------------------------------------------ norms
def group_moments(x: Tensor, groups: int) -> Tensor:
    """Per (sample, group) ``[count, sum, sum of squares]`` of ``x [B, C, H, W]``, float64 ``[B, G, 3]``.

    Detached: tiled rendering is for inference, and its gradients treat global statistics as constants."""
    grouped = x.detach().double().reshape(x.shape[0], groups, -1)
    count = torch.full_like(grouped[..., 0], grouped.shape[-1])
    return torch.stack((count, grouped.sum(-1), grouped.square().sum(-1)), dim=-1)


def moments_to_stats(moments: Tensor) -> Tensor:
    """``[B, G, 3]`` moments -> ``[B, G, 2]`` (mean, biased variance), as GroupNorm computes them."""
    count, total, squares = moments.unbind(-1)
    mean = total / count
    return torch.stack((mean, (squares / count - mean.square()).clamp(min=0)), dim=-1)


def layer_stats(stats: Stats, k: int, h: Tensor) -> Tensor | None:
    """The ``(mean, var)`` statistics ``[B, G, 2]`` GroupNorm ``k`` uses for its input ``h`` (see
    :data:`Stats`), None for ``h``'s own."""
    if callable(stats):
        return stats(k, h)
    return stats[k] if stats is not None and k < len(stats) else None


def group_norm(x: Tensor, norm: nn.GroupNorm, stats: Tensor | None) -> Tensor:
    """``norm(x)``, or the same affine normalisation with given ``(mean, var)`` statistics ``[B, G, 2]``,
    applied as one per-channel ``scale * x + shift`` (a single output allocation: tiled rendering's peak
    memory is a few activations of one tile)."""
    if stats is None:
        return norm(x)
    per_group = x.shape[1] // norm.num_groups
    mean, var = (stats[..., i].to(x.dtype).repeat_interleave(per_group, dim=1) for i in (0, 1))
    scale = torch.rsqrt(var + norm.eps)  # [B, C]
    shift = -mean * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    return torch.addcmul(shift[..., None, None], x, scale[..., None, None])


# ------------------------------------------------------------------------------------------ renderers
class Renderer(nn.Module):
    """Common interface: ``forward(phi, coords, cell)`` and ``run(query, stats, stop)`` on query grids.

    ``num_norms`` GroupNorm layers in order, normalised as ``stats`` says (:data:`Stats`); ``run(...,
    stop=k)`` returns the input of norm ``k`` (used to gather whole-image statistics tile by tile);
    ``receptive_radius`` in output pixels.
    """

    feature_channels: int
    num_norms: int = 0
    groups: int = 1
    receptive_radius: int = 0

    def run(self, query: Tensor, stats: Stats = None, stop: int | None = None) -> Tensor:
        raise NotImplementedError

    @property
    def last_layer(self) -> Tensor:
        """The weight of the output layer (INFD's adaptive GAN weight differentiates w.r.t. it)."""
        raise NotImplementedError

    def forward(self, phi: Tensor, coords: Tensor, cell: Tensor) -> Tensor:
        """``phi [B, C, h, w]``, query grid ``coords [B, H, W, 2]``, ``cell`` -> RGB ``[B, 3, H, W]``."""
        if phi.shape[1] != self.feature_channels:
            raise ValueError(f"renderer expects {self.feature_channels} feature channels, got {phi.shape[1]}")
        return self.run(query_features(phi, coords, cell))


class _ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)


class CLIF(Renderer):
    """Convolutional Local Image Function (INFD §4.2): ``3x3 conv (C+4 -> hidden)``, ``num_res_blocks``
    residual blocks ``(GroupNorm, SiLU, 3x3 conv) x 2 + identity``, ``GroupNorm, SiLU, 3x3 conv -> RGB``,
    no output activation. Receptive radius ``2 + 2 * num_res_blocks`` pixels (6 for the paper's 2 blocks).
    """

    def __init__(
        self,
        feature_channels: int = 128,
        hidden_channels: int = 256,
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if hidden_channels % norm_num_groups:
            raise ValueError(f"hidden_channels {hidden_channels} not divisible by {norm_num_groups} groups")
        self.feature_channels = feature_channels
        self.groups = norm_num_groups
        self.head = nn.Conv2d(feature_channels + 4, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            _ResBlock(hidden_channels, norm_num_groups) for _ in range(num_res_blocks)
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, hidden_channels)
        self.conv_out = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        self.num_norms = 2 * num_res_blocks + 1
        self.receptive_radius = 2 + 2 * num_res_blocks

    @property
    def last_layer(self) -> Tensor:
        return self.conv_out.weight

    def run(self, query: Tensor, stats: Stats = None, stop: int | None = None) -> Tensor:
        def norm(k: int, layer: nn.GroupNorm, h: Tensor) -> Tensor:
            return F.silu(group_norm(h, layer, layer_stats(stats, k, h)))

        h = self.head(query)
        k = 0
        for block in self.blocks:
            skip = h
            if stop == k:
                return h
            h = block.conv1(norm(k, block.norm1, h))
            k += 1
            if stop == k:
                return h
            h = block.conv2(norm(k, block.norm2, h)) + skip
            k += 1
        if stop == k:
            return h
        return self.conv_out(norm(k, self.norm_out, h))


class LIIFRenderer(Renderer):
    """LIIF-style point-wise renderer (the ablation of INFD Appendix A): an MLP (ReLU, ``depth`` hidden
    layers of ``hidden_channels``) applied to each query independently (1x1 convolutions over the grid).
    Simplified LIIF: nearest feature only, no 3x3 feature unfolding and no local ensemble."""

    def __init__(
        self, feature_channels: int = 128, hidden_channels: int = 256, depth: int = 4, out_channels: int = 3
    ) -> None:
        super().__init__()
        self.feature_channels = feature_channels
        layers: list[nn.Module] = []
        width = feature_channels + 4
        for _ in range(depth):
            layers += [nn.Conv2d(width, hidden_channels, 1), nn.ReLU()]
            width = hidden_channels
        self.mlp = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(width, out_channels, 1)

    @property
    def last_layer(self) -> Tensor:
        return self.conv_out.weight

    def run(self, query: Tensor, stats: Stats = None, stop: int | None = None) -> Tensor:
        return self.conv_out(self.mlp(query))


# ------------------------------------------------------------------------------------------ rendering
def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


def _window_spans(size: int, count: int, outer: int, radius: int) -> tuple[list[tuple[int, int]], slice]:
    """Up to ``count`` windows of ``outer`` pixels along an axis of ``size`` (no more than fit side by
    side), centred in equal parts of it and shifted to lie inside it, and the slice of each window whose
    pixels see no zero padding within ``radius`` (all of it when one window spans the axis)."""
    if outer >= size or outer <= 2 * radius:
        return [(0, size)], slice(0, size)
    count = min(count, size // outer)
    starts = [min(max(round((i + 0.5) * size / count - outer / 2), 0), size - outer) for i in range(count)]
    return [(start, start + outer) for start in sorted(set(starts))], slice(radius, outer - radius)


def sampled_stats(
    renderer: Renderer,
    window_query: Callable[[tuple[int, int], tuple[int, int]], Tensor],
    resolution: tuple[int, int],
    tile: int,
    batch: int,
) -> list[Tensor]:
    """Whole-output GroupNorm statistics estimated from a grid of up to ``SAMPLED_GRID x SAMPLED_GRID``
    windows spread over the output (:data:`SAMPLED_GRID`), rendered as one batch in one pass.

    Each window's outer ``receptive_radius`` pixels only feed its centre (they see the window's zero
    padding), so the centres' activations are those of the whole render given the same statistics; norm
    ``k``'s statistics pool the centres of every window of an image, and the windows are normalised with
    them before layer ``k + 1``, as the whole render is. Returns ``[B, G, 2]`` per norm layer."""
    height, width = resolution
    radius = renderer.receptive_radius
    outer = max(tile // SAMPLED_GRID, 2 * radius + 8)
    rows, inner_rows = _window_spans(height, SAMPLED_GRID, outer, radius)
    cols, inner_cols = _window_spans(width, SAMPLED_GRID, outer, radius)
    windows = [(r, c) for r in rows for c in cols]
    queries: Tensor | None = None  # window-major: rows w * B .. w * B + B - 1 are window w
    for index, (r, c) in enumerate(windows):
        query = window_query(r, c)
        if queries is None:
            queries = query.new_empty(len(windows) * batch, *query.shape[1:])
        queries[index * batch : (index + 1) * batch] = query
    assert queries is not None
    gathered: list[Tensor] = []

    def pooled(k: int, h: Tensor) -> Tensor:
        # per window and channel, over the centre pixels (a strided view: no copy of h), then per group
        var, mean = torch.var_mean(h.detach()[..., inner_rows, inner_cols], dim=(-2, -1), correction=0)
        mean = mean.double().view(len(windows), batch, renderer.groups, -1)
        square = (var.double().view_as(mean) + mean.square()).mean((0, -1))
        mean = mean.mean((0, -1))  # every window and channel has the same number of centre pixels
        gathered.append(torch.stack((mean, (square - mean.square()).clamp(min=0)), dim=-1))
        return gathered[-1].repeat(len(windows), 1, 1)

    renderer.run(queries, pooled)
    return gathered


def render_field(
    renderer: Renderer,
    phi: Tensor,
    resolution: C.Resolution,
    *,
    box: Box | None = None,
    tile: int | None = 256,
    pad: int = 8,
    norm: NormMode = "global",
) -> Tensor:
    """Render ``phi [B, C, h, w]`` on the ``H x W`` pixel grid laid over ``box`` (default: the whole
    image) -> ``[B, 3, H, W]``.

    With ``tile`` set and an output larger than one tile, the grid is cut into ``tile x tile`` tiles, each
    rendered with ``pad`` extra pixels on every side (clipped at the output border, where the whole render
    zero-pads too) and its centre kept: peak memory is the output buffer plus one padded tile. Outside
    the GroupNorms the renderer only sees ``receptive_radius <= pad`` pixels, so the centres are exact.
    GroupNorm statistics: ``norm="global"`` computes them over the whole output, one pass over the tiles
    per norm layer (``num_norms + 1`` passes), so the tiled render equals the whole one to float precision;
    ``norm="sampled"`` estimates the same whole-output statistics from windows spread over it
    (:func:`sampled_stats`: one extra pass over about one tile's pixels, then one pass over the tiles;
    the error against ``"global"`` is measured in ``benchmarks/results/infd_tile_norm_cpu.json``);
    ``norm="tile"`` uses each padded tile's own statistics (one pass, what INFD's authors do; small seams).
    """
    height, width = C.as_hw(resolution)
    batch, device = phi.shape[0], phi.device

    def window_query(rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        points, cell = grid_queries((height, width), rows, cols, box, device=device)
        return query_features(
            phi, points.expand(batch, -1, -1, -1), cell.view(1, 2).expand(batch, 2).to(phi.dtype)
        )

    if phi.shape[1] != renderer.feature_channels:
        raise ValueError(f"renderer expects {renderer.feature_channels} feature channels, got {phi.shape[1]}")
    if tile is None or (height <= tile and width <= tile):
        return renderer.run(window_query((0, height), (0, width)))
    if tile < 1 or pad < renderer.receptive_radius:
        raise ValueError(
            f"tiled rendering needs tile >= 1 and pad >= the renderer's receptive radius "
            f"{renderer.receptive_radius}, got tile={tile}, pad={pad}"
        )
    tiles = []
    for r0, r1 in _spans(height, tile):
        for c0, c1 in _spans(width, tile):
            outer = (max(0, r0 - pad), min(height, r1 + pad)), (max(0, c0 - pad), min(width, c1 + pad))
            inner = (slice(r0 - outer[0][0], r1 - outer[0][0]), slice(c0 - outer[1][0], c1 - outer[1][0]))
            tiles.append(((r0, r1, c0, c1), outer, inner))

    check_norm_mode(norm)
    stats: list[Tensor] | None = None
    if norm == "sampled" and renderer.num_norms > 0:
        stats = sampled_stats(renderer, window_query, (height, width), tile, batch)
    elif norm == "global" and renderer.num_norms > 0:
        stats = []
        for k in range(renderer.num_norms):
            moments = None
            for _, outer, inner in tiles:
                h = renderer.run(window_query(*outer), stats, stop=k)[..., inner[0], inner[1]]
                tile_moments = group_moments(h, renderer.groups)
                moments = tile_moments if moments is None else moments + tile_moments
            stats.append(moments_to_stats(moments))

    out: Tensor | None = None
    for (r0, r1, c0, c1), outer, inner in tiles:
        rgb = renderer.run(window_query(*outer), stats)[..., inner[0], inner[1]]
        if out is None:
            out = rgb.new_empty(batch, rgb.shape[1], height, width)
        out[..., r0:r1, c0:c1] = rgb
    assert out is not None
    return out
