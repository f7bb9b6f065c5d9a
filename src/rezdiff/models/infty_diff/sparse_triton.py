"""Optional Triton fast path for the ``"gather"`` backend of the sparse convolution (:mod:`.sparse`).

What: for ``N`` points per example, a neighbour table ``[B, N, K²]`` (sentinel ``N`` = absent) and a per-point
factor ``K²/count``, one Triton program per tile of points x channels computes the depthwise operator::

    out[b, n, c] = factor[b, n] · Σ_k W[c, k] · x[b, table[b, n, k], c]

with the ``K²`` loop fused in registers and fp32 accumulation (fp64 inputs accumulate in fp64). The backward
reuses the same kernel for the input gradient, with the flipped kernel applied to ``grad · factor`` (the
symmetric-neighbour identity of :class:`.sparse._GatherConv`, no atomics), and a second kernel
for the weight gradient.

Why: the PyTorch twin launches about three kernels and writes a ``[B·N, C]`` temporary per offset, so on a
GPU it is bound by memory traffic and launch overhead; here the ``K²`` partial sums stay in registers and the
output (and each gradient) is written once, in one launch. The tile sizes below are untuned guesses: the
kernels have been checked in the interpreter and compiled ahead of time, not yet run or timed on a GPU.

Only depthwise weights ``[C, K²]`` go through Triton; the regular convolution of the Table 2 ablation stays
on the PyTorch twin (:func:`.sparse.sparse_depthwise_conv` routes it). Triton is optional: this
module imports without it, and :mod:`.sparse` imports this module only when a ``"triton"`` backend
is asked for or ``"auto"`` runs on CUDA. Triton decides between compiling and interpreting when a kernel is
decorated, that is when this module is first imported: with ``TRITON_INTERPRET=1`` set before then, the
kernels run on CPU tensors in Triton's interpreter, which is how the tests check them without a GPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

try:  # optional dependency
    import triton
    import triton.language as tl

    TRITON_IMPORT_ERROR: ImportError | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    TRITON_IMPORT_ERROR = error

INSTALL_HINT = "pip install -c constraints.txt triton"

# Tile shape: BLOCK_C channels (a power of two, at most 64) x BLOCK_N points, about 2048 elements per tile.
_MAX_BLOCK_C = 64
_TILE_ELEMENTS = 2048
# The weight-gradient grid is (splits of the points, channel tiles, K²); the number of splits is chosen so
# that the grid holds about this many programs (enough to fill a GPU, few partial sums to add up).
_WEIGHT_GRAD_PROGRAMS = 2048


if triton is not None:

    @triton.jit
    def _gather_conv_kernel(
        x_ptr,
        w_ptr,
        table_ptr,
        factor_ptr,
        out_ptr,
        total,
        num,
        channels,
        taps,
        HAS_FACTOR: tl.constexpr,
        FP64: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``out[r] = factor[r] · Σ_k w[k] ⊙ x[first(r) + table[r, k]]`` for a tile of rows ``r`` x channels.

        ``x``, ``out``: ``[B·N, C]``; ``w``: ``[K², C]``; ``table``: ``[B·N, K²]``; ``factor``: ``[B·N]``.
        """
        rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        row_ok = rows < total
        col_ok = cols < channels
        first = (rows // num) * num  # row of this example's point 0
        if FP64:
            acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float64)
        else:
            acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
        for k in range(0, taps):
            nbr = tl.load(table_ptr + rows * taps + k, mask=row_ok, other=num)
            present = nbr < num  # the sentinel (and rows past the end) read zeros
            src = first + nbr
            values = tl.load(
                x_ptr + src[:, None] * channels + cols[None, :],
                mask=present[:, None] & col_ok[None, :],
                other=0.0,
            )
            tap = tl.load(w_ptr + k * channels + cols, mask=col_ok, other=0.0)
            acc += values.to(acc.dtype) * tap.to(acc.dtype)[None, :]
        if HAS_FACTOR:
            scale = tl.load(factor_ptr + rows, mask=row_ok, other=0.0)
            acc = acc * scale.to(acc.dtype)[:, None]
        tl.store(
            out_ptr + rows[:, None] * channels + cols[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None] & col_ok[None, :],
        )

    @triton.jit
    def _weight_grad_kernel(
        x_ptr,
        g_ptr,
        table_ptr,
        partial_ptr,
        total,
        num,
        channels,
        taps,
        FP64: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``partial[s, k, c] = Σ_r g[r, c] · x[first(r) + table[r, k], c]`` over the rows of split ``s``.

        Program ``(s, j, k)`` walks row tiles ``s, s + S, s + 2S, ...`` for channel tile ``j`` and tap ``k``.
        """
        split = tl.program_id(0)
        splits = tl.num_programs(0)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        k = tl.program_id(2)
        col_ok = cols < channels
        if FP64:  # noqa: SIM108 - a statically resolved branch, kept as the forward kernel's
            acc = tl.zeros([BLOCK_C], dtype=tl.float64)
        else:
            acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for start in range(split * BLOCK_N, total, splits * BLOCK_N):
            rows = (start + tl.arange(0, BLOCK_N)).to(tl.int64)
            row_ok = rows < total
            nbr = tl.load(table_ptr + rows * taps + k, mask=row_ok, other=num)
            present = nbr < num
            src = (rows // num) * num + nbr
            values = tl.load(
                x_ptr + src[:, None] * channels + cols[None, :],
                mask=present[:, None] & col_ok[None, :],
                other=0.0,
            )
            grads = tl.load(
                g_ptr + rows[:, None] * channels + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc += tl.sum(values.to(acc.dtype) * grads.to(acc.dtype), axis=0)
        tl.store(partial_ptr + (split * taps + k) * channels + cols, acc, mask=col_ok)


def interpreting() -> bool:
    """Whether the kernels were decorated in Triton's interpreter mode (``TRITON_INTERPRET=1`` at import)."""
    return triton is not None and type(_gather_conv_kernel).__name__ == "InterpretedFunction"


def triton_available(device: torch.device | str) -> bool:
    """Whether the kernels can run on tensors of ``device``: CUDA with Triton, or Triton's interpreter."""
    if triton is None:
        return False
    if interpreting():
        return True  # the interpreter runs programs on host copies of any tensor
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def check_available(device: torch.device | str) -> None:
    """Raise a ``RuntimeError`` that says what to do when :func:`triton_available` is false."""
    if triton is None:
        raise RuntimeError(
            f"the 'triton' sparse convolution backend needs the triton package ({TRITON_IMPORT_ERROR}); "
            f"install it with `{INSTALL_HINT}`, or use backend='gather'"
        )
    if not triton_available(device):
        raise RuntimeError(
            "the 'triton' sparse convolution backend runs on CUDA tensors, got a "
            f"{torch.device(device).type} tensor; use backend='gather' (or 'auto') here. Triton's "
            "interpreter (TRITON_INTERPRET=1 set before rezdiff.models.infty_diff.sparse_triton is first "
            "imported) runs it on CPU, slowly, for tests."
        )


def _on_device(tensor: Tensor) -> contextlib.AbstractContextManager[Any]:
    """Make ``tensor``'s GPU the current one for a launch (Triton launches on the current device)."""
    return torch.cuda.device(tensor.device) if tensor.device.type == "cuda" else contextlib.nullcontext()


def _blocks(channels: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_C)`` for ``channels``: powers of two, about :data:`_TILE_ELEMENTS` per tile."""
    block_c = min(triton.next_power_of_2(max(channels, 1)), _MAX_BLOCK_C)
    return _TILE_ELEMENTS // block_c, block_c


def _gather(x: Tensor, weight_t: Tensor, table: Tensor, factor: Tensor | None) -> Tensor:
    """``[B, N, C]`` result of the fused loop; ``weight_t [K², C]``, ``factor [B, N, 1]`` or ``None``."""
    batch, num, channels = x.shape
    taps = weight_t.shape[0]
    out = torch.empty_like(x)
    total = batch * num
    if out.numel() == 0:
        return out
    block_n, block_c = _blocks(channels)
    grid = (triton.cdiv(total, block_n), triton.cdiv(channels, block_c))
    with _on_device(x):
        _gather_conv_kernel[grid](
            x,
            weight_t,
            table,
            x if factor is None else factor,
            out,
            total,
            num,
            channels,
            taps,
            HAS_FACTOR=factor is not None,
            FP64=x.dtype == torch.float64,
            BLOCK_N=block_n,
            BLOCK_C=block_c,
        )
    return out


def _weight_grad(x: Tensor, scaled: Tensor, table: Tensor) -> Tensor:
    """``[C, K²]`` gradient ``Σ_n scaled[n] ⊙ x[table[n, k]]``: per-split partial sums, then one torch sum.

    A second Triton kernel rather than the twin's K² PyTorch gathers: those would bring back the per-offset
    ``[B·N, C]`` temporaries the forward avoids. Partial sums over a fixed split of the points (instead of
    atomics) keep it simple and deterministic; the ``[S, K², C]`` partials are small.
    """
    batch, num, channels = x.shape
    taps = table.shape[-1]
    total = batch * num
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    if total == 0 or channels == 0:
        return x.new_zeros(channels, taps, dtype=accumulate)
    block_n, block_c = _blocks(channels)
    channel_tiles = triton.cdiv(channels, block_c)
    splits = max(1, min(triton.cdiv(total, block_n), _WEIGHT_GRAD_PROGRAMS // (channel_tiles * taps)))
    partial = torch.empty(splits, taps, channels, device=x.device, dtype=accumulate)
    with _on_device(x):
        _weight_grad_kernel[(splits, channel_tiles, taps)](
            x,
            scaled,
            table,
            partial,
            total,
            num,
            channels,
            taps,
            FP64=accumulate == torch.float64,
            BLOCK_N=block_n,
            BLOCK_C=block_c,
        )
    return partial.sum(0).t()


class TritonGatherConv(torch.autograd.Function):
    """Triton twin of :class:`.sparse._GatherConv` (same arguments, same numbers), depthwise only.

    ``forward(x [B, N, C], weight [C, K²], table [B, N, K²], factor [B, N, 1]) -> [B, N, C]`` in ``x``'s
    dtype; the weight and factor are read in their own dtypes, and sums are accumulated in fp32 (fp64 for
    fp64 inputs), where the twin accumulates in ``x``'s dtype.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, table: Tensor, factor: Tensor) -> Tensor:
        if weight.ndim != 2:
            raise ValueError(
                f"the Triton kernel is depthwise: weight must be [C, K²], got {tuple(weight.shape)}"
            )
        x, table, factor = x.contiguous(), table.contiguous(), factor.contiguous()
        out = _gather(x, weight.t().contiguous(), table, factor)
        ctx.save_for_backward(x, weight, table, factor)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight, table, factor = ctx.saved_tensors
        scaled = (grad * factor).to(x.dtype).contiguous()  # G · K²/count, as the twin
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # dL/dx_m = Σ_k W_k · scaled[nbr(m, K²-1-k)] = Σ_j W_{K²-1-j} · scaled[nbr(m, j)]: the forward
            # loop with the taps of the kernel reversed and no factor.
            grad_x = _gather(scaled, weight.flip(-1).t().contiguous(), table, None)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, scaled, table).to(weight.dtype)
        return grad_x, grad_w, None, None
