"""Non-finite losses and checkpoints that are never half-written (resume and DDP for every family:
tests/test_contract.py)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import rezdiff
from rezdiff.callbacks.checkpoint import AtomicCheckpointIO
from rezdiff.models import NonFiniteLossError


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_non_finite_loss_stops_with_step_and_batch_and_keeps_checkpoint(
    tmp_path: Path, fit_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_tiny("--trainer.max_epochs", "1")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = _digest(last)
    steps_per_epoch = torch.load(last, weights_only=True)["global_step"]

    original = rezdiff.DDPM.loss

    def poisoned(self, batch, generator):
        loss = original(self, batch, generator)
        return loss * float("nan") if self.global_step == steps_per_epoch + 1 else loss

    monkeypatch.setattr(rezdiff.DDPM, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=rf"global step {steps_per_epoch + 1}, epoch 1, batch 1"):
        fit_tiny("--trainer.max_epochs", "2", "--ckpt_path", str(last))
    assert _digest(last) == before
    rezdiff.load(last)


def test_interrupted_save_leaves_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.arange(10)}, path)
    before = _digest(path)

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"weights": torch.arange(20)}, path)
    assert _digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "temporary file left behind"


@pytest.mark.heavy
def test_killed_writer_never_corrupts_checkpoint(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites a large checkpoint in a loop; the file always loads."""
    path = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import torch
        from rezdiff.callbacks.checkpoint import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        step = 0
        while True:
            io.save_checkpoint({{"step": step, "w": torch.full((4_000_000,), float(step))}}, {str(path)!r})
            step += 1
            print(step, flush=True)
    """)
    for delay in (0.05, 0.13, 0.31):
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            process.stdout.readline()  # at least one complete save happened
            time.sleep(delay)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        state = torch.load(path, weights_only=True)
        assert torch.all(state["w"] == float(state["step"]))
