"""Convolution over a subset of the pixels of a known grid: ∞-Diff's sparse integral operator (paper Eq. 16).

A batch holds ``N`` points per example, each a distinct pixel of an ``H x W`` grid (flat row-major
``index [B, N]``). The convolution at point ``n`` is the Monte-Carlo estimate of ``∫ κ(c - y) v(y) dy``
over the ``K x K`` window around it::

    out_n = (K² / count_n) · Σ_k W[k] ⊙ x[neighbour(n, k)]

where the sum runs over the neighbours that are present (sampled and inside the image) and ``count_n`` is
their number, the point itself included. Out-of-image neighbours are absent, as in the authors' code (zero
padding plus count normalisation). No TorchSparse, no hash table: the points lie on a known grid, so the
neighbour table comes from scattering point ids into a padded index grid (:func:`build_neighbours`).

Interchangeable backends compute the same numbers:

* ``"gather"``: a loop over the ``K²`` offsets that never materialises the ``[B, N, K², C]`` gather. Its
  backward (a custom autograd Function) uses the symmetry of the neighbour relation — ``m`` is the
  neighbour of ``n`` at offset ``d`` exactly when ``n`` is the neighbour of ``m`` at ``-d`` — so the input
  gradient is the same gather with the flipped kernel applied to ``G · K²/count`` (no atomics, no
  scatter), and the same gathered rows give the weight gradient: K² gathers forward, K² backward.
* ``"triton"`` (CUDA, optional): the same loop and backward fused into Triton kernels, one program per tile
  of points x channels (:mod:`.sparse_triton`); the regular (non-depthwise) weight runs the
  ``"gather"`` loop. Checked against ``"gather"`` and ``"dense"`` in Triton's interpreter on CPU.
* ``"dense"``: scatter the points onto a zero canvas ``[B, C, H, W]``, run ``conv2d``, read the points back.

``"auto"`` picks by density ``N / (H W)`` and device (:func:`choose_backend`, thresholds measured by
``benchmarks/sparse_conv.py``); on CUDA with Triton installed, the gather loop runs as ``"triton"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rezdiff.data.coords import Resolution, as_hw, gather_pixels, scatter_pixels

Backend = Literal["auto", "gather", "dense", "triton"]

# Largest density N / (H W) at which "auto" picks the gather loop (it is a speed rule; see below for memory).
# CPU: measured with benchmarks/sparse_conv.py (results/sparse_conv_cpu.json, 64 channels, 7x7, batch 4, one
# thread, a shared 2-core machine): the loop beats the dense path by 2.3-7.3x at 1/16 and 1/8 at 64², 128²
# and 256² and loses from 1/2 up. At 1/4 it won by 1.2-1.5x in the committed run but lost at 256² (0.75x) in
# an earlier one, so the threshold stays at 1/8. CUDA: not measured (no GPU was available).
# Unfused, the loop makes 2·K² gathers of [N, C] rows (memory-bound, ~3 kernel launches per offset) while
# cuDNN's depthwise conv2d reads the canvas once per tile, so the loop is kept to 1/16 until a GPU run of the
# benchmark says otherwise; the fused "triton" kernel that "auto" runs there has not been timed on a GPU yet.
# Memory differs too: the dense path keeps [B, C, H, W] canvases for backward, so the memory savings of
# subsampling (paper Table 5) need backend="gather" (or "triton").
GATHER_MAX_DENSITY = {"cpu": 1 / 8, "cuda": 1 / 16}

# oneDNN's depthwise conv2d on the CPU (torch 2.13) runs kernels up to 9x9 at ~10 GMAC/s and falls ~12x lower
# from 11x11 up; a kernel resized for sampling at 2x-8x (13-57 taps wide) is on the slow side. On the CPU
# the dense path splits a kernel wider than CPU_DEPTHWISE_MAX into blocks of at most CPU_DEPTHWISE_BLOCK taps
# a side, each a depthwise convolution of the padded canvas shifted by its offset; their sum is the same
# convolution, summed in another order (benchmarks/depthwise_cpu.py, results/depthwise_cpu.json). CUDA keeps
# one conv2d (cuDNN's depthwise kernels are not known to have this cliff; not measured).
CPU_DEPTHWISE_MAX = 9
CPU_DEPTHWISE_BLOCK = 7


@dataclass
class Neighbours:
    """Who is next to whom, for ``B`` examples of ``N`` distinct pixels of an ``H x W`` grid.

    ``counts [B, N]``: number of present neighbours in the ``K x K`` window (the point itself included).
    ``table [B, N, K*K]`` (built on first use, :attr:`table`): the id within its own example of the
    neighbour at each offset (row-major over the window, offset ``k = (u, v)`` is pixel
    ``(row + u - K//2, col + v - K//2)``), or the sentinel ``N`` ("absent", reads a zero row).
    """

    index: Tensor
    resolution: tuple[int, int]
    kernel_size: int
    counts: Tensor
    _table: Tensor | None = field(default=None, repr=False)

    @property
    def num_points(self) -> int:
        return self.index.shape[1]

    @property
    def density(self) -> float:
        return self.num_points / (self.resolution[0] * self.resolution[1])

    @property
    def table(self) -> Tensor:
        if self._table is None:
            self._table = _neighbour_table(self.index, self.resolution, self.kernel_size)
        return self._table


def _check_index(index: Tensor, height: int, width: int) -> None:
    if index.ndim != 2 or index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index must be an integer tensor [B, N], got {index.dtype} {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= height * width):
        raise ValueError(f"index holds values outside the {height}x{width} grid")


def _id_grid(index: Tensor, height: int, width: int, pad: int) -> Tensor:
    """``[B, (H + 2p) * (W + 2p)]`` grid of point ids (sentinel ``N`` where none is); checks duplicates."""
    batch, num = index.shape
    rows, cols = index // width + pad, index % width + pad
    padded = rows * (width + 2 * pad) + cols
    grid = index.new_full((batch, (height + 2 * pad) * (width + 2 * pad)), num)
    ids = torch.arange(num, device=index.device, dtype=index.dtype).expand(batch, num)
    grid.scatter_(1, padded, ids)
    if not torch.equal(grid.gather(1, padded), ids):
        raise ValueError("index holds the same pixel twice in one example; points must be distinct pixels")
    return grid


def _neighbour_table(index: Tensor, resolution: tuple[int, int], kernel_size: int) -> Tensor:
    height, width = resolution
    pad = kernel_size // 2
    index = index.long()
    grid = _id_grid(index, height, width, pad)
    padded_width = width + 2 * pad
    centre = (index // width + pad) * padded_width + index % width + pad  # [B, N]
    columns = []
    for u in range(kernel_size):  # one gather per offset: no [B, N, K*K] int64 temporaries beyond the table
        for v in range(kernel_size):
            columns.append(grid.gather(1, centre + (u - pad) * padded_width + (v - pad)))
    return torch.stack(columns, dim=-1)


def _window_counts(index: Tensor, resolution: tuple[int, int], kernel_size: int) -> Tensor:
    """Present pixels in each point's ``K x K`` window, from an integral image of the mask (O(H W))."""
    height, width = resolution
    batch = index.shape[0]
    pad = kernel_size // 2
    mask = torch.zeros(batch, height * width, dtype=torch.int32, device=index.device)
    mask.scatter_(1, index.long(), 1)
    mask = F.pad(mask.view(batch, height, width), (pad + 1, pad, pad + 1, pad))  # leading zero row/col
    integral = mask.cumsum(1).cumsum(2)  # integral[i, j] = sum of mask[:i, :j] (padded frame)
    rows, cols = (index // width).long(), (index % width).long()
    flat = integral.view(batch, -1)
    stride = width + 2 * pad + 1

    def at(r: Tensor, c: Tensor) -> Tensor:
        return flat.gather(1, r * stride + c)

    top, bottom, left, right = rows, rows + kernel_size, cols, cols + kernel_size
    return at(bottom, right) - at(top, right) - at(bottom, left) + at(top, left)


def build_neighbours(index: Tensor, resolution: Resolution, kernel_size: int) -> Neighbours:
    """Neighbour structure of ``index [B, N]`` (distinct flat pixel indices per example) on ``resolution``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    height, width = as_hw(resolution)
    _check_index(index, height, width)
    index = index.long()
    _id_grid(index, height, width, 0)  # duplicate check (the table itself is built on first use)
    counts = _window_counts(index, (height, width), kernel_size)
    return Neighbours(index=index, resolution=(height, width), kernel_size=kernel_size, counts=counts)


def choose_backend(density: float, device: torch.device | str) -> Literal["gather", "dense", "triton"]:
    """What ``"auto"`` runs: the gather loop at densities up to :data:`GATHER_MAX_DENSITY`, else dense.

    On CUDA the gather loop is the fused Triton kernel when Triton is installed (CPU never picks it).
    """
    kind = torch.device(device).type
    if density > GATHER_MAX_DENSITY.get(kind, GATHER_MAX_DENSITY["cuda"]):
        return "dense"
    if kind == "cuda":
        from rezdiff.models.infty_diff.sparse_triton import (
            triton_available,
        )  # imports without triton, then says False

        if triton_available(device):
            return "triton"
    return "gather"


def _offset_rows(x_pad: Tensor, table: Tensor, k: int, base: Tensor) -> Tensor:
    """Rows ``x[b, table[b, n, k]]`` as ``[B*N, C]`` from the zero-row-padded ``x_pad [B*(N+1), C]``."""
    return x_pad.index_select(0, (table[:, :, k] + base).reshape(-1))


def _pad_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x [B, N, C]`` -> ``[B*(N+1), C]`` with a zero row after every example, and each example's offset."""
    batch, num, channels = x.shape
    x_pad = torch.cat((x, x.new_zeros(batch, 1, channels)), dim=1).reshape(batch * (num + 1), channels)
    base = torch.arange(batch, device=x.device).view(batch, 1) * (num + 1)
    return x_pad, base


class _GatherConv(torch.autograd.Function):
    """``out = factor · Σ_k W_k x[table[:, :, k]]`` with the symmetric-neighbour backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, table: Tensor, factor: Tensor) -> Tensor:
        # weight: [C, K2] (depthwise) or [C_out, C_in, K2]
        batch, num, _ = x.shape
        depthwise = weight.ndim == 2
        out_channels = weight.shape[0]
        x_pad, base = _pad_rows(x)
        out = x.new_zeros(batch * num, out_channels)
        for k in range(weight.shape[-1]):
            rows = _offset_rows(x_pad, table, k, base)
            if depthwise:
                out.addcmul_(rows, weight[:, k])
            else:
                out.addmm_(rows, weight[:, :, k].t())
        ctx.save_for_backward(x, weight, table, factor)
        return out.view(batch, num, out_channels).mul_(factor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight, table, factor = ctx.saved_tensors
        batch, num, in_channels = x.shape
        depthwise = weight.ndim == 2
        taps = weight.shape[-1]
        scaled = grad * factor  # G · K²/count
        # Symmetry: n's offset-k neighbour is m exactly when m's offset-(-k) neighbour is n. So one gather of
        # `scaled` at the flipped offset serves both gradients:
        #   dL/dx_m  = Σ_k W_k · scaled[nbr(m, -k)]
        #   dL/dW_k  = Σ_n scaled[n] ⊙ x[nbr(n, k)] = Σ_m x[m] ⊙ scaled[nbr(m, -k)]
        g_pad, base = _pad_rows(scaled)
        flat_x = x.reshape(batch * num, in_channels)
        grad_x = x.new_zeros(batch * num, in_channels) if ctx.needs_input_grad[0] else None
        columns = []
        for k in range(taps):
            rows = _offset_rows(g_pad, table, taps - 1 - k, base)
            if grad_x is not None:
                if depthwise:
                    grad_x.addcmul_(rows, weight[:, k])
                else:
                    grad_x.addmm_(rows, weight[:, :, k])
            if ctx.needs_input_grad[1]:
                columns.append((rows * flat_x).sum(0) if depthwise else torch.mm(rows.t(), flat_x))
        grad_w = torch.stack(columns, dim=-1) if columns else None
        return (None if grad_x is None else grad_x.view(batch, num, in_channels)), grad_w, None, None


def _check_conv_inputs(x: Tensor, weight: Tensor, neighbours: Neighbours) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must be [B, N, C], got shape {tuple(x.shape)}")
    if tuple(x.shape[:2]) != tuple(neighbours.index.shape):
        raise ValueError(
            f"x is {tuple(x.shape[:2])} points, the neighbours are for {tuple(neighbours.index.shape)}"
        )
    if weight.ndim not in (3, 4) or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must be [C, K, K] or [C_out, C_in, K, K], got {tuple(weight.shape)}")
    if weight.shape[-1] != neighbours.kernel_size:
        raise ValueError(
            f"weight is {weight.shape[-1]}x{weight.shape[-1]} but the neighbours were built for "
            f"kernel_size={neighbours.kernel_size}"
        )
    in_channels = weight.shape[0] if weight.ndim == 3 else weight.shape[1]
    if x.shape[2] != in_channels:
        raise ValueError(f"x has {x.shape[2]} channels, the weight expects {in_channels}")


def sparse_depthwise_conv(
    x: Tensor, weight: Tensor, neighbours: Neighbours, backend: Backend = "auto"
) -> Tensor:
    """``x [B, N, C]`` -> ``[B, N, C_out]``: ``(K²/count) Σ_k W[k] ⊙ x[neighbour k]`` (see module docstring).

    ``weight [C, K, K]`` is depthwise (the paper's operator); ``[C_out, C_in, K, K]`` is the regular
    convolution of the Table 2 ablation. ``backend="triton"`` raises a ``RuntimeError`` (saying what to do)
    without Triton or on a CPU tensor outside Triton's interpreter.
    """
    _check_conv_inputs(x, weight, neighbours)
    if backend == "auto":
        backend = choose_backend(neighbours.density, x.device)
    kernel_size = neighbours.kernel_size
    weight = weight.to(x.dtype)
    factor = (kernel_size**2 / neighbours.counts.to(x.dtype)).unsqueeze(-1)  # [B, N, 1]
    if backend == "triton":
        from rezdiff.models.infty_diff.sparse_triton import TritonGatherConv, check_available

        check_available(x.device)
        if weight.ndim == 3:  # the kernel is depthwise; the regular convolution runs the PyTorch loop
            return TritonGatherConv.apply(x, weight.flatten(-2), neighbours.table, factor)
        backend = "gather"
    if backend == "gather":
        return _GatherConv.apply(x, weight.flatten(-2), neighbours.table, factor)
    if backend == "dense":
        canvas = scatter_pixels(x, neighbours.index, neighbours.resolution)
        if weight.ndim == 3:
            out = depthwise_conv2d(canvas, weight.unsqueeze(1))
        else:
            out = F.conv2d(canvas, weight, padding=kernel_size // 2)
        return gather_pixels(out, neighbours.index) * factor
    raise ValueError(f"backend must be 'auto', 'gather', 'dense' or 'triton', got {backend!r}")


def depthwise_conv2d(x: Tensor, weight: Tensor, block: int | None = None) -> Tensor:
    """``x [B, C, H, W]`` convolved channel by channel with ``weight [C, 1, K, K]`` (K odd), zero-padded to
    the same size. ``block`` splits the kernel into blocks of at most that many taps a side (None: on the CPU
    :data:`CPU_DEPTHWISE_BLOCK` for kernels wider than :data:`CPU_DEPTHWISE_MAX`, else one conv2d)."""
    size, channels = weight.shape[-1], x.shape[1]
    if block is None:
        block = CPU_DEPTHWISE_BLOCK if x.device.type == "cpu" and size > CPU_DEPTHWISE_MAX else size
    if block >= size:
        return F.conv2d(x, weight, padding=size // 2, groups=channels)
    height, width = x.shape[-2:]
    padded = F.pad(x, (size // 2,) * 4)
    out = None
    for top in range(0, size, block):
        rows = min(block, size - top)
        for left in range(0, size, block):
            cols = min(block, size - left)
            window = padded[..., top : top + height + rows - 1, left : left + width + cols - 1]
            part = F.conv2d(window, weight[..., top : top + rows, left : left + cols], groups=channels)
            out = part if out is None else out + part
    return out


def resized_kernel_size(kernel_size: int, scale: float) -> int:
    """The odd size nearest to ``kernel_size · scale``, at least 3; exact at scale 1.

    The authors' expression ``2 * round((K · scale - 1) / 2) + 1`` with Python's ``round`` (half to even), so
    a tie between two odd sizes goes to the one that is 1 mod 4: 7 -> 13 at 2x, 29 at 4x, 57 at 8x; 5 -> 21
    at 4x.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if scale == 1:
        return kernel_size
    size = 2 * round((kernel_size * scale - 1) / 2) + 1
    return max(size, 3)


def resize_kernel(weight: Tensor, size: int) -> Tensor:
    """Bilinearly resample ``weight [..., K, K]`` to ``[..., size, size]`` over the same window.

    Taps sit at the pixel centres of the window (``align_corners=False``, the project's convention). The
    result is multiplied by ``(K/size)²`` so that it represents the same integral operator: with the
    ``size²/count`` Monte-Carlo factor the output keeps its scale (a box kernel stays an exact average),
    which is the authors' normalisation by ``count/K²`` with the *original* ``K``.
    """
    kernel_size = weight.shape[-1]
    if size == kernel_size:
        return weight
    lead = weight.shape[:-2]
    flat = weight.reshape(-1, 1, kernel_size, kernel_size)
    resized = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return resized.reshape(*lead, size, size) * (kernel_size / size) ** 2


class SparseDepthwiseConv(nn.Module):
    """Learnable sparse convolution (no bias, as the authors): ``forward(x [B, N, C], neighbours, scale)``.

    ``scale = R / R0`` resizes the kernel for a sampling resolution ``R`` other than the training one
    ``R0``: the neighbours must then be built for :meth:`kernel_size_for` ``(scale)``.
    """

    def __init__(
        self, channels: int, kernel_size: int = 7, depthwise: bool = True, backend: Backend = "auto"
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.channels, self.kernel_size, self.depthwise, self.backend = (
            channels,
            kernel_size,
            depthwise,
            backend,
        )
        shape = (
            (channels, kernel_size, kernel_size)
            if depthwise
            else (channels, channels, kernel_size, kernel_size)
        )
        self.weight = nn.Parameter(torch.empty(shape))
        fan_in = kernel_size**2 * (1 if depthwise else channels)  # as nn.Conv2d's default initialisation
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def kernel_size_for(self, scale: float = 1.0) -> int:
        return resized_kernel_size(self.kernel_size, scale)

    def forward(
        self, x: Tensor, neighbours: Neighbours, scale: float = 1.0, backend: Backend | None = None
    ) -> Tensor:
        weight = resize_kernel(self.weight, self.kernel_size_for(scale))
        return sparse_depthwise_conv(x, weight, neighbours, backend or self.backend)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, depthwise={self.depthwise}, "
            f"backend={self.backend!r}"
        )
