"""Checkpoint files as a user on a shared machine expects: the umask's mode, no partial files left behind by
a killed save, one line saying what went wrong when the disk is full (issue 17, items 6, 7, 9), and
``last.ckpt`` alone unless the config asks for more, never an orphan after a resume (item 8)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import pytest
import torch

from rezdiff.callbacks.checkpoint import AtomicCheckpointIO, CheckpointWriteError, stale_temporaries
from rezdiff.cli import main
from tests.helpers import TINY_DDPM


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == mode


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save on a full disk: it writes part of the file, then raises as PyTorch's writer does."""

    def failing_save(obj: Any, file: Any) -> None:
        file.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1000 vs 900")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 100, 0))


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    before = path.read_bytes()
    _fill_the_disk(monkeypatch)
    with pytest.raises(
        CheckpointWriteError, match=r"no space left on device while saving .*last\.ckpt \(0 MiB"
    ):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == before and stale_temporaries(tmp_path) == []
    message = str(pytest.raises(CheckpointWriteError, AtomicCheckpointIO().save_checkpoint, {}, path).value)
    assert "the previous checkpoint there is intact" in message
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    message = str(pytest.raises(CheckpointWriteError, AtomicCheckpointIO().save_checkpoint, {}, path).value)
    assert message.startswith("could not write the checkpoint") and "unexpected pos" in message


def test_fit_on_a_full_disk_ends_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill_the_disk(monkeypatch)
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(
            ["fit", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root)]
            + ["--trainer.max_epochs", "1", "--trainer.callbacks", "[]"]
        )
    message = str(stop.value.code)
    assert (
        message.startswith("rezdiff fit: error: no space left on device while saving") and "\n" not in message
    )


def test_fit_removes_partial_checkpoints_of_a_killed_save(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    stale = [folder / ".last.ckpt.k2j4x.tmp", folder / ".epoch=0-step=4.ckpt.a1b2.tmp"]
    kept = [folder / ".notes.tmp", folder / "keep.txt"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    assert stale_temporaries(folder) == sorted(stale)
    main(
        ["fit", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(tmp_path / "run")]
        + ["--trainer.max_epochs", "1", "--trainer.callbacks", "[]"]
    )
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert (folder / "last.ckpt").exists() and stale_temporaries(folder) == []


pytestmark = pytest.mark.usefixtures("single_thread")


def test_a_dry_run_writes_no_checkpoint(tmp_path: Path) -> None:
    """``fast_dev_run`` left a full last.ckpt, also over a real run's."""
    common = ["fit", "--config", str(TINY_DDPM), "--trainer.callbacks", "[]"]
    main([*common, "--trainer.default_root_dir", str(tmp_path / "dry"), "--trainer.fast_dev_run", "1"])
    assert not list((tmp_path / "dry").rglob("*.ckpt"))
    root = tmp_path / "run"
    main([*common, "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1"])
    before = (root / "checkpoints" / "last.ckpt").read_bytes()
    main([*common, "--trainer.default_root_dir", str(root), "--trainer.fast_dev_run", "1"])
    assert (root / "checkpoints" / "last.ckpt").read_bytes() == before


# Which files a run keeps (issue 17, item 8) ---------------------------------------------------------------


class LastCkptProbe(pl.Callback):
    """Records, at the start of every training epoch, the step stored in ``last.ckpt`` (None: no file)."""

    seen: ClassVar[list[int | None]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        step = torch.load(path, weights_only=True)["global_step"] if path.exists() else None
        LastCkptProbe.seen.append(step)


PROBE = {"class_path": "tests.test_checkpoint_files.LastCkptProbe"}
TWO_STEPS = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]  # 2 steps an epoch


def _fit(root: Path, epochs: int, callbacks: list[dict[str, Any]], *extra: str) -> list[str]:
    """Fit the tiny DDPM into ``root`` with ``callbacks``; the names in its checkpoint folder."""
    LastCkptProbe.seen.clear()
    main(
        ["fit", "--config", str(TINY_DDPM), "--trainer.default_root_dir", str(root)]
        + [
            f"--trainer.max_epochs={epochs}",
            f"--trainer.callbacks={json.dumps(callbacks)}",
            *TWO_STEPS,
            *extra,
        ]
    )
    return sorted(p.name for p in (root / "checkpoints").iterdir())


def _step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_a_run_keeps_last_ckpt_alone_written_every_epoch(tmp_path: Path) -> None:
    """Lightning's default also kept epoch=E-step=S.ckpt, a copy of last.ckpt; save_top_k=0 alone wrote
    last.ckpt only when training ended."""
    assert _fit(tmp_path / "run", 3, [PROBE]) == ["last.ckpt"]
    assert LastCkptProbe.seen == [None, 2, 4]
    assert _step(tmp_path / "run" / "checkpoints" / "last.ckpt") == 6


def test_last_ckpt_follows_the_configured_period(tmp_path: Path) -> None:
    every_two = {"class_path": "rezdiff.callbacks.LastCheckpoint", "init_args": {"every_n_epochs": 2}}
    assert _fit(tmp_path / "run", 4, [every_two, PROBE]) == ["last.ckpt"]
    assert LastCkptProbe.seen == [None, None, 4, 4]
    assert _step(tmp_path / "run" / "checkpoints" / "last.ckpt") == 8


def test_top_k_files_come_with_last_ckpt_when_the_config_asks(tmp_path: Path) -> None:
    """A config's own ModelCheckpoint replaced the default: no last.ckpt for rezdiff sample."""
    best = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"monitor": "val/loss", "save_top_k": 1, "filename": "best-{epoch}"},
    }
    names = _fit(tmp_path / "run", 2, [best])
    assert "last.ckpt" in names and len(names) == 2 and names[0].startswith("best-epoch=")


def test_a_resumed_run_leaves_no_orphan(tmp_path: Path) -> None:
    """Resuming a run made by an earlier rezdiff (callback state under another key) wrote last-v1.ckpt
    beside last.ckpt; resuming a default run kept its epoch file."""
    root = tmp_path / "run"
    assert _fit(root, 1, []) == ["last.ckpt"]
    assert _fit(root, 2, [], f"--ckpt_path={root / 'checkpoints' / 'last.ckpt'}") == ["last.ckpt"]
    assert _step(root / "checkpoints" / "last.ckpt") == 4

    old_default = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(tmp_path / "old" / "checkpoints"), "save_last": True},
    }
    assert _fit(tmp_path / "old", 1, [old_default]) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    ckpt = tmp_path / "old" / "checkpoints" / "last.ckpt"
    # the old run's epoch file is left as it was: only this run's files are rezdiff's to manage
    assert _fit(tmp_path / "old", 2, [], f"--ckpt_path={ckpt}") == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert _step(ckpt) == 4
