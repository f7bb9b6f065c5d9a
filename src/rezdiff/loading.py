"""``rezdiff.load``: rebuild any family from a checkpoint file alone."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from rezdiff.models.base import DiffusionModule


class CheckpointError(ValueError):
    """A checkpoint that cannot be turned back into a rezdiff model; the message says why."""


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(
            f"the checkpoint names class {class_path!r}, which cannot be imported"
        ) from error


def build(class_path: str, init_args: dict[str, Any]) -> Any:
    """``class_path(**init_args)``, recording its own hyperparameters even when called while LightningCLI
    builds an outer module (the CLI's context would otherwise hand the outer module's hyperparameters to
    every ``save_hyperparameters()`` call): how a family builds the frozen stage it wraps. ``init_args`` are
    recorded ones: a hyperparameter they lack takes the class's ``recorded_defaults`` value, if any."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    cls = _import_class(class_path)
    init_args = {**getattr(cls, "recorded_defaults", {}), **init_args}
    token = _given_hyperparameters.set(None)
    try:
        return cls(**init_args)
    finally:
        _given_hyperparameters.reset(token)


def _read(path: Path, map_location: str | torch.device) -> Any:
    """The checkpoint dict of a ``.ckpt`` file, or of a ``rezdiff export --format safetensors`` folder."""
    if path.is_dir() or path.suffix == ".safetensors":
        from rezdiff.export import read_safetensors

        try:
            return read_safetensors(path if path.is_dir() else path.parent)
        except ValueError as error:
            raise CheckpointError(str(error)) from error
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error


def load(
    path: str | Path, *, map_location: str | torch.device = "cpu", strict: bool = True
) -> DiffusionModule:
    """Load a model saved by ``rezdiff fit`` (any family) in eval mode, EMA weights included; ``path`` may
    also be a folder (or its ``model.safetensors``) written by ``rezdiff export --format safetensors``.

    The file is read with ``weights_only=True``: a checkpoint can hold tensors and plain values only,
    never code. The class to build and its arguments are the ones recorded at training time.
    """
    path = Path(path)
    checkpoint = _read(path, map_location)
    info = checkpoint.get("rezdiff") if isinstance(checkpoint, dict) else None
    if not info:
        raise CheckpointError(
            f"{path} is not a rezdiff checkpoint (no 'rezdiff' entry naming the model class)"
        )
    cls = _import_class(info["class_path"])
    if not (isinstance(cls, type) and issubclass(cls, DiffusionModule)):
        raise CheckpointError(f"{info['class_path']} in {path} is not a rezdiff DiffusionModule")
    # LightningCLI adds private entries such as `_class_path` and `_instantiator`; they are not arguments.
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    model = build(info["class_path"], hparams)
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path} does not match {info['class_path']}: missing weights {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected weights {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    return model.to(map_location).eval()
