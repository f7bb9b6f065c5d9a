"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import lightning.pytorch
import torch

import rezdiff
from rezdiff.cli import main
from rezdiff.data import FieldBatch, FullGrid, Synthetic
from rezdiff.metrics import multiscale_swd
from rezdiff.models import DiffusionModule

REPO = Path(__file__).resolve().parents[1]


def checkout_env() -> dict[str, str]:
    """This process's environment with the checkout's ``src`` and root first on ``PYTHONPATH``: a subprocess
    imports this checkout's rezdiff (and ``tests``), installed or not, from any working directory."""
    paths = [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


CONFIGS = REPO / "configs"
TINY_DDPM = REPO / "tests" / "configs" / "tiny_ddpm.yaml"
TINY_DVDP = REPO / "tests" / "configs" / "tiny_dvdp.yaml"

# The smallest U-Net settings the DDPM and DVDP tests share (16x16, two levels).
TINY_UNET = dict(
    image_size=16,
    unet=dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(1,),
        attention_head_dim=16,
        norm_num_groups=8,
        dropout=0.0,
    ),
    num_train_steps=100,
    sample_steps=4,
)


# The smallest ∞-Diff settings the model and inverse tests share (16², one sparse block, 8² inner grid).
TINY_INFTY_DIFF = dict(
    train_resolution=16,
    sparse_width=16,
    sparse_blocks=1,
    kernel_size=3,
    inner_resolution=8,
    inner_channels=16,
    inner_multipliers=(1, 2),
    inner_layers_per_block=1,
    inner_attention_resolutions=(4,),
    attention_head_dim=8,
    norm_num_groups=8,
    dropout=0.0,
    num_train_steps=100,
    sample_steps=4,
)


def synthetic_batch(num: int, resolution: int = 16) -> FieldBatch:
    """``num`` built-in synthetic images at ``resolution``, as one FullGrid batch."""
    dataset, view = Synthetic(num_images=num, resolution=resolution), FullGrid(resolution)
    return FieldBatch.collate([view(dataset, i) for i in range(num)])


def loss_before_and_after(model: DiffusionModule, batch: FieldBatch, steps: int) -> tuple[float, float]:
    """The loss on a fixed draw of (t, noise), before and after ``steps`` optimiser steps on ``batch``."""
    optimizer = model.configure_optimizers()
    with torch.no_grad():
        before = model.loss(batch, torch.Generator().manual_seed(123)).item()
    for step in range(steps):
        loss = model.loss(batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model.loss(batch, torch.Generator().manual_seed(123)).item()
    return before, after


def random_index(batch: int, height: int, width: int, num: int, seed: int = 0) -> torch.Tensor:
    """``[batch, num]`` distinct random pixel ids of a ``height x width`` grid, one draw per example."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(height * width, generator=generator)[:num] for _ in range(batch)])


def quickstart_swd(config: str, root: Path, **sample_options: Any) -> dict[int, tuple[float, float]]:
    """Train ``configs/quickstart/<config>.yaml`` into ``root``; return, at 32 and 64, the multi-scale SWD
    of 64 samples to 64 held-out images for the trained model and for the same model untrained."""
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart" / f"{config}.yaml"),
            "--trainer.default_root_dir",
            str(root),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    trained = rezdiff.load(root / "checkpoints" / "last.ckpt")
    untrained = type(trained)(**{k: v for k, v in trained.hparams.items() if not k.startswith("_")}).eval()
    dataset = cli.datamodule.dataset
    held_out = cli.datamodule.split()[1][:64]
    figures = {}
    for resolution in (32, 64):
        real = torch.stack([dataset.render(i, resolution) for i in held_out])
        pair = []
        for model in (trained, untrained):
            fake = model.sample(
                len(real), resolution, generator=torch.Generator().manual_seed(1), **sample_options
            )
            pair.append(multiscale_swd(real, fake, generator=torch.Generator().manual_seed(0))["swd_mean"])
        figures[resolution] = (pair[0], pair[1])
        print(f"{config} at {resolution}: SWD trained {pair[0]:.1f}, untrained {pair[1]:.1f}")
    return figures


def record_noise_devices(monkeypatch: Any, module: Any) -> list[Any]:
    """Replace ``module.randn`` by one that records the device of every draw (a CUDA model must draw its
    noise on CUDA; on a CPU-only machine only the argument shows it); returns the growing list."""
    devices: list[Any] = []
    real = module.randn

    def recording_randn(shape: Any, generator: Any = None, device: Any = None, dtype: Any = torch.float32):
        devices.append(device)
        return real(shape, generator, device, dtype)

    monkeypatch.setattr(module, "randn", recording_randn)
    return devices


class WildEps(torch.nn.Module):
    """A fixed ε-predictor whose x̂₀ leaves [-1, 1], so clipping and the final clamp both matter."""

    def check_size(self, height: int, width: int) -> None:
        """Any size suits it (the U-Net's check is not under test here)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -2.5 * x + 0.01 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def untrained_checkpoint(config: Path, path: Path) -> Path:
    """Write the untrained model of a tiny config as a ``rezdiff fit`` checkpoint would hold it (class,
    hyperparameters, weights): for CLI tests that need a checkpoint file but no training."""
    import lightning
    import yaml

    from rezdiff.loading import build

    spec = yaml.safe_load(Path(config).read_text())["model"]
    model = build(spec["class_path"], spec.get("init_args", {}))
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        # LightningCLI's `--ckpt_path` reads the class of a subclass-mode model from `_class_path`
        "hyper_parameters": {"_class_path": spec["class_path"], **model.hparams},
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


class SeedAudit(lightning.pytorch.Callback):
    """Appends ``<rank> <seed> <options as JSON>`` for every image a predict batch generates to
    ``<path>-rank<R>.txt``: what each DDP rank sampled, including seeds whose file another rank overwrote."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        import json

        with open(f"{self.path}-rank{trainer.global_rank}.txt", "a") as file:
            for seed in batch.seeds:
                file.write(f"{trainer.global_rank} {seed} {json.dumps(batch.options, sort_keys=True)}\n")


def quiet_trainer(root: Path | None = None, **options: Any) -> lightning.pytorch.Trainer:
    """A CPU ``Trainer`` that logs, checkpoints and prints nothing (writing under ``root`` if given);
    ``options`` are the test's own (``max_steps``, callbacks, ...)."""
    if root is not None:
        options["default_root_dir"] = root
    return lightning.pytorch.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def to_recorder(moved: list[tuple[Any, ...]], keep: bool = False) -> type[torch.Tensor]:
    """A tensor subclass whose ``.to(...)`` appends its arguments to ``moved`` and returns a plain tensor
    (``keep``: a recorded one, so that the moves of what is computed from it are recorded too): shows where
    code moves a tensor (on a CPU-only machine a wrong device passes every numerical test).
    Use as ``tensor.as_subclass(to_recorder(moved))``."""

    class Recorded(torch.Tensor):
        def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            moved.append(args)
            out = super().to(*args, **kwargs)
            return out if keep else torch.Tensor(out)

    return Recorded


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def bound_arguments(fn: Any, call: tuple[tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    """A recorded call's ``(args, kwargs)`` (:func:`record_calls`) by parameter name, however it was
    spelt (positionally or by keyword)."""
    args, kwargs = call
    return dict(inspect.signature(fn).bind(*args, **kwargs).arguments)


def move_live_weights(network: torch.nn.Module) -> None:
    """Add ``0.1 N(0, 1)`` (global RNG) to every weight of ``network`` in place, so that the live weights
    differ from the EMA copy a model makes when it is built (for tests of which weights a path reads)."""
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.1 * torch.randn_like(p))


def record_calls(monkeypatch: Any, owner: Any, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Wrap ``owner.name`` so that each call's ``(args, kwargs)`` is appended to the returned list (a
    device argument shows where a GPU run would draw or move; on a CPU-only machine nothing else does)."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = getattr(owner, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls
