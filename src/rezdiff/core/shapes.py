"""Image sizes: a resolution is an ``int`` side (square) or ``(height, width)``, normalised by
:func:`as_hw`. A leaf module (torch only), so that ``core`` and ``data`` share one spelling without
``core`` importing ``rezdiff.data`` (whose package imports Lightning)."""

from __future__ import annotations

from collections.abc import Sequence

Resolution = int | tuple[int, int]

__all__ = ["Resolution", "as_hw"]


def as_hw(resolution: Resolution | Sequence[int], name: str = "resolution") -> tuple[int, int]:
    """``64`` -> ``(64, 64)``; ``(48, 64)`` stays ``(H, W)``. Rejects non-positive sizes, naming ``name``."""
    if isinstance(resolution, int):
        hw = (resolution, resolution)
    else:
        hw = tuple(int(v) for v in resolution)
        if len(hw) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {resolution!r}")
    if min(hw) <= 0:
        raise ValueError(f"{name} must be positive, got {resolution!r}")
    return hw  # type: ignore[return-value]
