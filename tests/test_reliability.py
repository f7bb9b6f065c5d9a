"""Resume, DDP, non-finite losses and checkpoints that are never half-written."""

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
from tests.helpers import REPO, TINY_DDPM, TINY_DVDP

FAMILIES = pytest.mark.parametrize("config", [TINY_DDPM, TINY_DVDP], ids=["ddpm", "dvdp"])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@FAMILIES
def test_resume_continues_the_same_run(tmp_path: Path, fit_tiny, config: Path) -> None:
    full = fit_tiny("--trainer.max_epochs", "2", root=tmp_path / "full", config=config)
    fit_tiny("--trainer.max_epochs", "1", root=tmp_path / "part", config=config)
    first_half = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = fit_tiny(
        "--trainer.max_epochs",
        "2",
        "--ckpt_path",
        str(tmp_path / "part" / "checkpoints" / "last.ckpt"),
        root=tmp_path / "part",
        config=config,
    )

    assert first_half["global_step"] > 0
    assert resumed.trainer.global_step == full.trainer.global_step == 2 * first_half["global_step"]
    expected = full.trainer.lightning_module.state_dict()
    got = resumed.trainer.lightning_module.state_dict()
    assert expected.keys() == got.keys() and any(k.startswith("ema.") for k in got)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    full_opt = full.trainer.optimizers[0].state_dict()["state"]
    resumed_opt = resumed.trainer.optimizers[0].state_dict()["state"]
    for index in full_opt:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(resumed_opt[index][name], full_opt[index][name], rtol=0, atol=1e-6)


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


@FAMILIES
def test_ddp_on_cpu_with_two_processes(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rezdiff",
            "fit",
            "--config",
            str(config),
            "--trainer.default_root_dir",
            str(root),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_epochs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = rezdiff.load(root / "checkpoints" / "last.ckpt")
    assert isinstance(model, rezdiff.DDPM if config == TINY_DDPM else rezdiff.DVDP)
    # Every rank samples, rank 0 alone writes: one grid per epoch and resolution, no duplicates.
    grids = sorted(p.name for p in (root / "samples").glob("*.png"))
    assert len(grids) == len(set(grids)) == 4, grids
    assert sum("epoch=1" in name for name in grids) == 2
