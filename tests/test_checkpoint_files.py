"""Checkpoint files as a user on a shared machine expects: the umask's mode, no partial files left behind by
a killed save, and one line saying what went wrong when the disk is full (issue 17, items 6, 7, 9)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

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
