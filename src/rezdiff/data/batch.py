"""``FieldBatch``: what every data view returns and every model consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class FieldBatch:
    """A training example (one item) or a batch of them (leading batch dimension).

    ``image`` is always there: the full image or patch ground truth in ``[-1, 1]``, ``[B, C, H, W]``.
    The rest is set by the data views that provide it (``None`` otherwise):

    - ``coords [B, N, 2]``: supervised points in the convention of :mod:`rezdiff.data.coords`,
      expressed in the frame of the *whole* image (a patch's points need not span ``[-1, 1]``).
    - ``index [B, N]``: flat row-major indices of those points in ``image``'s grid.
    - ``cell [B, N, 2]``: the cell size ``(2/W, 2/H)`` of each point in the whole-image frame.
    - ``cond [B, ...]``: a conditioning input (e.g. INFD's fixed-size encoder input).
    - ``level [B]``: the resolution level of a multilevel example.
    """

    image: Tensor
    coords: Tensor | None = None
    index: Tensor | None = None
    cell: Tensor | None = None
    cond: Tensor | None = None
    level: Tensor | None = None

    def require(self, *names: str, view: str, model: str) -> None:
        """Raise a ``ValueError`` naming the data view to configure if a field the model needs is missing."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"{model} needs batch fields {missing}, which this data view does not provide; "
                f"configure the data module with `view: {view}` "
                f"(e.g. --data.init_args.view.class_path rezdiff.data.{view})"
            )

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    def values(self) -> Tensor:
        """Ground-truth values at the supervised points, ``[B, N, C]`` (needs ``index``)."""
        from rezdiff.data.coords import gather_pixels

        if self.index is None:
            raise ValueError("values() needs `index`; use a data view that selects points (RandomPixels)")
        return gather_pixels(self.image, self.index)

    @staticmethod
    def collate(items: Sequence[FieldBatch]) -> FieldBatch:
        """Stack single examples into a batch; a field is kept only if every item has it."""
        if not items:
            raise ValueError("cannot collate an empty list of examples")
        stacked: dict[str, Tensor | None] = {}
        for field in fields(FieldBatch):
            values = [getattr(item, field.name) for item in items]
            if all(v is None for v in values):
                stacked[field.name] = None
            elif any(v is None for v in values):
                raise ValueError(f"field {field.name!r} is set on some examples and missing on others")
            else:
                try:
                    stacked[field.name] = torch.stack(values)  # type: ignore[arg-type]
                except RuntimeError as error:
                    shapes = sorted({tuple(v.shape) for v in values})  # type: ignore[union-attr]
                    raise ValueError(
                        f"cannot batch field {field.name!r} with shapes {shapes}: "
                        "the data view must give every "
                        "example the same size (e.g. FullGrid(resolution=...))"
                    ) from error
        return FieldBatch(**stacked)  # type: ignore[arg-type]
