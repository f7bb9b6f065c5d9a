"""How evaluation work is split over DDP ranks and put back together in one global order.

Items (generated images, reference images) are dealt in chunks of ``batch_size``, round-robin over ranks;
every per-item tensor is gathered back and sorted by the items' global positions, so no figure depends on
the number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

#: Concatenates a tensor's rows from every rank (rank order); the identity on one process.
Gather = Callable[[Tensor], Tensor]


def identity(tensor: Tensor) -> Tensor:
    """The gather of a single process."""
    return tensor


def shard(num: int, chunk: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """``(start, count)`` chunks of ``range(num)`` of size ``chunk``; rank r gets chunks r, r + W, ..."""
    if chunk < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad sharding: chunk={chunk}, rank={rank}, world={world}")
    starts = range(0, num, chunk)
    return [(start, min(chunk, num - start)) for k, start in enumerate(starts) if k % world == rank]


def local_positions(num: int, chunk: int, rank: int = 0, world: int = 1) -> list[int]:
    """Global positions (in ``range(num)``) of this rank's items, in the order it holds them."""
    return [i for start, count in shard(num, chunk, rank, world) for i in range(start, start + count)]


def label(resolution: tuple[int, int]) -> str:
    """``"64"`` for a square resolution, ``"64x128"`` otherwise: the ``@R`` of metric keys."""
    height, width = resolution
    return str(height) if height == width else f"{height}x{width}"


def ordered(local: Tensor, positions: Tensor, gather: Gather) -> Tensor:
    """Gather every rank's rows and put them in global order (``positions``: each local row's index)."""
    every, order = gather(local), gather(positions.reshape(-1).long())
    return every[order.argsort()]


def gather_rows(tensor: Tensor, strategy: Any) -> Tensor:
    """Concatenate ``tensor [n_r, ...]`` of every rank in rank order (sizes may differ between ranks)."""
    if strategy is None or strategy.world_size == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=strategy.root_device)
    sizes = strategy.all_gather(size).reshape(-1).tolist()
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    every = strategy.all_gather(padded.to(strategy.root_device)).cpu()
    return torch.cat([every[r, :n] for r, n in enumerate(sizes)])
