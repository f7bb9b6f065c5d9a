"""The multilevel resolution schedule: which level a training step runs at."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl

from rezdiff.data.views import Levels


class ResolutionSchedule(pl.Callback):
    """Set ``pl_module.train_resolution`` before every training batch from ``milestones``.

    ``milestones`` is a list of ``(start, resolution)`` pairs, ``start`` counted in epochs or optimiser
    steps (``unit``); the first must start at 0, e.g. ``[[0, 32], [50, 64]]``: epochs 0-49 at 32², then
    64². The resolution is a pure function of ``trainer.current_epoch`` / ``trainer.global_step``, so a run
    resumed from a checkpoint, every DDP rank and every DataLoader worker agree on it without any saved
    state. Needs the data module's view to be :class:`rezdiff.data.Levels` with every scheduled
    resolution among its levels (checked when training starts). Logs ``train/resolution``.
    """

    def __init__(self, milestones: Sequence[Sequence[int]], unit: Literal["epoch", "step"] = "epoch") -> None:
        super().__init__()
        pairs = [(int(start), int(resolution)) for start, resolution in milestones]
        if not pairs or pairs[0][0] != 0:
            raise ValueError(f"milestones must start at 0, e.g. [[0, 32], [50, 64]]; got {milestones!r}")
        starts = [start for start, _ in pairs]
        if any(a >= b for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(f"milestone starts must increase strictly, got {starts}")
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
        self.milestones = pairs
        self.unit = unit

    def resolution_at(self, epoch: int, step: int) -> int:
        """The training resolution at ``epoch`` / optimiser ``step``."""
        counter = epoch if self.unit == "epoch" else step
        return self.milestones[bisect_right([s for s, _ in self.milestones], counter) - 1][1]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        view = getattr(getattr(trainer, "datamodule", None), "view", None)
        if not isinstance(view, Levels):
            raise ValueError(
                "ResolutionSchedule needs the data module's view to be rezdiff.data.Levels, got "
                f"{view!r}; set --data.init_args.view.class_path rezdiff.data.Levels"
            )
        missing = sorted({r for _, r in self.milestones} - set(view.resolutions))
        if missing:
            raise ValueError(
                f"ResolutionSchedule resolutions {missing} are not levels of {view!r}; add them to its "
                "resolutions"
            )
        if not hasattr(pl_module, "train_resolution"):
            raise ValueError(f"{type(pl_module).__name__} has no train_resolution; use a multilevel model")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        resolution = self.resolution_at(trainer.current_epoch, trainer.global_step)
        pl_module.train_resolution = resolution
        pl_module.log("train/resolution", float(resolution), on_step=False, on_epoch=True, batch_size=1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.train_resolution = None

    def __repr__(self) -> str:
        return f"ResolutionSchedule(milestones={[list(m) for m in self.milestones]}, unit={self.unit!r})"
