"""Checkpoints that are never left half-written, readable as the user's umask says, and a clear message when
one cannot be written."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

FULL_DISK_BYTES = 64 * 2**20
"""Free space under which a failed write is reported as a full disk (the partial file is still there)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount); the file at its path is untouched."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failure(path: Path, error: BaseException, free: int | None) -> str:
    previous = "the previous checkpoint there is intact" if path.exists() else "nothing was written there"
    if getattr(error, "errno", None) == errno.ENOSPC or (free is not None and free < FULL_DISK_BYTES):
        free_text = "" if free is None else f" ({free / 2**20:.0f} MiB free)"
        return f"no space left on device while saving {path}{free_text}; {previous}. Free space and resume"
    return f"could not write the checkpoint {path} ({type(error).__name__}: {error}); {previous}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the checkpoint's own folder, fsync, then ``os.replace`` it.

    Lightning's default writes through an fsspec transaction whose temporary file lives in the
    system temp folder; committing it is a copy when that is another filesystem, so a kill during the
    copy can leave a truncated ``last.ckpt``. A rename within one folder is atomic: a reader sees either
    the previous checkpoint or the new one. The file gets the mode any file the user writes gets (``0666``
    less the umask; ``mkstemp`` alone would make it ``0600``, unreadable to colleagues on a shared cluster).
    A failed write (e.g. a full disk; torch reports it as ``RuntimeError: unexpected pos``) removes the
    partial file and raises :class:`CheckpointWriteError` saying what happened.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(handle, 0o666 & ~_umask())
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, path)
        except (OSError, RuntimeError) as error:
            try:
                free: int | None = shutil.disk_usage(path.parent).free  # before the partial file goes
            except OSError:
                free = None
            Path(temp_name).unlink(missing_ok=True)
            raise CheckpointWriteError(_write_failure(path, error, free)) from error
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


def stale_temporaries(folder: Path) -> list[Path]:
    """The partial checkpoints :class:`AtomicCheckpointIO` leaves in ``folder`` when a process is killed
    mid-save (``.<name>.ckpt.<random>.tmp``)."""
    return sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []


class AtomicCheckpoints(pl.Callback):
    """Install :class:`AtomicCheckpointIO` on the trainer's strategy unless a custom IO is configured, turn
    off ``save_last`` under ``fast_dev_run`` (Lightning 2.6 still writes ``last.ckpt`` at the end of a dry
    run, over a real run's), and at the start of ``fit`` remove the partial checkpoints an earlier killed
    run left in this run's checkpoint folders (each as large as a checkpoint)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.fast_dev_run:  # a dry run writes no checkpoint; Lightning's on_train_end forgets that
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_last = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folders = {Path(c.dirpath) for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)}
        for folder in sorted(folders):
            for stale in stale_temporaries(folder):
                stale.unlink(missing_ok=True)
                rank_zero_info(f"rezdiff: removed {stale.name}, a partial checkpoint of an interrupted save")


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` alone, written every ``every_n_epochs`` (default 1), ``every_n_train_steps`` or
    ``train_time_interval``: the CLI's default checkpoint (a config's own ``ModelCheckpoint`` adds top-k
    files next to it).

    Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last.ckpt`` at epoch ends only
    after a top-k file was written at that step, i.e. never before the end of training; here the periodic
    trigger itself counts as that save. The version counter is off: the run's checkpoint is always
    ``last.ckpt``, and a resumed run whose callback state is not in the checkpoint (another folder, an older
    rezdiff) overwrites it instead of leaving it beside a ``last-v1.ckpt``. The arguments are spelled out
    so that a config (read through the signature) cannot turn this into a top-k callback."""

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        train_time_interval: timedelta | None = None,
        save_weights_only: bool = False,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            save_weights_only=save_weights_only,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            train_time_interval=train_time_interval,
            enable_version_counter=False,
        )

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        # No top-k file: mark this step as saved, so that Lightning writes last.ckpt next (its epoch-end
        # hooks test exactly this mark; its step and validation hooks write it anyway).
        self._last_global_step_saved = trainer.global_step
