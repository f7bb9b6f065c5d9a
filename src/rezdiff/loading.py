"""``rezdiff.load``: rebuild any family from a checkpoint file alone, and the checks that turn a bad file
into one line naming the file and what is wrong with it (shared with the CLI's ``--ckpt_path``)."""

from __future__ import annotations

import inspect
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rezdiff.classpaths import ClassPathError, import_attribute
from rezdiff.models.base import DiffusionModule


class CheckpointError(ValueError):
    """A checkpoint that cannot be turned back into a rezdiff model; the message says why."""


ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of the zip archive ``torch.save`` writes."""

PICKLE_MAGIC = b"\x80"
"""The first byte of a pickle (protocol 2 or later): ``torch.save``'s legacy, non-zip format."""


def import_rezdiff_class(class_path: Any, what: str, base: type = DiffusionModule) -> type:
    """The class ``class_path`` names, a subclass of ``base``. A checkpoint's text never makes us import
    arbitrary code (:mod:`rezdiff.classpaths`): only modules inside the ``rezdiff`` package are imported; a
    class of any other module is taken only if that module is already imported (the user's own code, e.g. a
    custom stage 1, trusted by importing it). ``what`` says where the name came from."""
    foreign = f"{what} names class {class_path!r}, which is not a rezdiff model"
    try:
        cls = import_attribute(class_path, trusted=("rezdiff",))
    except ClassPathError as error:
        if error.reason == "malformed":
            raise CheckpointError(foreign) from None
        if error.reason == "not_imported":
            raise CheckpointError(
                f"{foreign} (a class of your own code is used only when its module is imported first: "
                f"import {error.module})"
            ) from None
        unimportable = f"{what} names class {class_path!r}, which cannot be imported"
        raise CheckpointError(unimportable) from error.__cause__
    if not (isinstance(cls, type) and issubclass(cls, base)):
        kind = "rezdiff DiffusionModule" if base is DiffusionModule else f"{base.__module__}.{base.__name__}"
        own = class_path.startswith("rezdiff.")
        raise CheckpointError(f"{what} names {class_path!r}, which is not a {kind}" if own else foreign)
    return cls


def build(class_path: str, init_args: dict[str, Any]) -> Any:
    """``class_path(**init_args)``, recording its own hyperparameters even when called while LightningCLI
    builds an outer module (the CLI's context would otherwise hand the outer module's hyperparameters to
    every ``save_hyperparameters()`` call): how a family builds the frozen stage it wraps. ``init_args`` are
    recorded ones: a hyperparameter they lack takes the class's ``recorded_defaults`` value, if any."""
    from rezdiff.models.hparams_context import own_hyperparameters

    cls = import_rezdiff_class(class_path, "the recorded configuration", base=torch.nn.Module)
    upgrade = getattr(cls, "upgrade_hyperparameters", None)
    if upgrade is not None:
        init_args = upgrade(init_args, f"the recorded configuration of {cls.__name__}")
    init_args = {**getattr(cls, "recorded_defaults", {}), **init_args}
    with own_hyperparameters():
        return cls(**init_args)


def _describe_unreadable(path: Path) -> str | None:
    """What ``path`` is when it cannot be a torch checkpoint (empty, text, truncated archive, another
    format); None when it looks like one (torch's own error then tells the rest)."""
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty (0 bytes), not a checkpoint; was its save interrupted?"
    with path.open("rb") as file:
        head = file.read(4096)
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return (
                f"{path} is a truncated checkpoint ({size} bytes; the end of its zip archive is missing): "
                "its save or copy was interrupted, use an intact copy"
            )
        return None
    if head.startswith(PICKLE_MAGIC):
        return None
    if b"\0" not in head:
        try:
            first = head.decode("utf-8").strip().splitlines()[0][:40]
        except (UnicodeDecodeError, IndexError):
            first = None
        if first is not None:
            return (
                f"{path} is a text file (it starts with {first!r}), not a checkpoint written by rezdiff fit"
            )
    return f"{path} is not a checkpoint: neither torch's zip archive nor its legacy format ({size} bytes)"


def _torch_reason(error: BaseException) -> str:
    """The line of a (multi-line) torch loading error that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    wanted = [line for line in lines if "Unsupported global" in line or "WeightsUnpickler error" in line]
    return (wanted or lines or [type(error).__name__])[0]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict of a rezdiff run (or of a ``rezdiff export --format safetensors`` folder), read
    with ``weights_only=True`` (tensors and plain values only, never code); a file that is not one raises a
    one-line :class:`CheckpointError` saying what the file is and what is wrong (``FileNotFoundError`` when
    there is none)."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":  # a `rezdiff export --format safetensors` folder
        from rezdiff.export import read_safetensors

        try:
            checkpoint: Any = read_safetensors(path if path.is_dir() else path.parent)
        except ValueError as error:
            raise CheckpointError(str(error)) from error
        return _checked_contents(path, checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    problem = _describe_unreadable(path)
    if problem is not None:
        raise CheckpointError(problem)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {_torch_reason(error)}") from error
    return _checked_contents(path, checkpoint)


def _checked_contents(path: Path, checkpoint: Any) -> dict[str, Any]:
    """``checkpoint`` if it has a rezdiff checkpoint's entries, else a one-line error naming ``path``."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("rezdiff"), Mapping):
        raise CheckpointError(
            f"{path} is not a rezdiff checkpoint (no 'rezdiff' entry naming the model class)"
        )
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is a rezdiff checkpoint without weights (no 'state_dict' entry)")
    return checkpoint


def checkpoint_class(path: str | Path, checkpoint: Mapping[str, Any]) -> type[DiffusionModule]:
    """The rezdiff class a checkpoint's header names (``checkpoint["rezdiff"]["class_path"]``), checked to be
    a :class:`DiffusionModule` of the ``rezdiff`` package before its module is imported."""
    return import_rezdiff_class(checkpoint["rezdiff"].get("class_path"), f"the header of {path}")


def recorded_hyperparameters(path: str | Path, checkpoint: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The constructor arguments recorded in ``checkpoint`` for ``cls``, with the class's
    ``recorded_defaults`` for any it lacks; raises when they were recorded for another class."""
    raw = dict(checkpoint.get("hyper_parameters") or {})
    recorded_class = raw.get("_class_path")  # LightningCLI records the configured class here
    if recorded_class is not None and recorded_class != f"{cls.__module__}.{cls.__qualname__}":
        other = import_rezdiff_class(recorded_class, f"the hyperparameters of {path}")
        if other is not cls:
            raise CheckpointError(
                f"{path} is inconsistent: its header names {cls.__name__} but its hyperparameters (and "
                f"weights) were recorded for {other.__name__}"
            )
    # LightningCLI adds private entries such as `_class_path` and `_instantiator`; they are not arguments.
    hparams = {k: v for k, v in raw.items() if not k.startswith("_")}
    if issubclass(cls, DiffusionModule):  # optimiser settings of older checkpoints in today's form
        hparams = cls.upgrade_hyperparameters(hparams, str(path))
    parameters = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        foreign = sorted(set(hparams) - set(parameters))
        if foreign:
            raise CheckpointError(
                f"{path} is inconsistent: its header names {cls.__name__}, which takes no argument "
                f"{', '.join(foreign)} recorded in its hyperparameters (weights of another model class?)"
            )
    return {**getattr(cls, "recorded_defaults", {}), **hparams}


def check_weight_shapes(
    path: str | Path, model: torch.nn.Module, weights: Mapping[str, torch.Tensor | torch.Size]
) -> None:
    """Raise one line naming the first weight whose shape in the file (a tensor, or its shape) differs from
    the one ``model`` (built from the file's hyperparameters) has: the recorded settings do not match the
    weights, which torch reports as a raw ``size mismatch`` for every tensor."""
    own = model.state_dict()
    for name, value in weights.items():
        shape = value.shape if isinstance(value, torch.Tensor) else value
        mine = own.get(name)
        if mine is None or not isinstance(shape, torch.Size) or torch.nn.parameter.is_lazy(mine):
            continue
        if tuple(shape) != tuple(mine.shape):
            raise CheckpointError(
                f"{path}: weight {name} has shape {list(shape)} in the file but {list(mine.shape)} "
                f"in the {type(model).__name__} its hyperparameters build: the recorded hyperparameters "
                "do not match the weights"
            )


def load(
    path: str | Path, *, map_location: str | torch.device = "cpu", strict: bool = True
) -> DiffusionModule:
    """Load a model saved by ``rezdiff fit`` (any family) in eval mode, EMA weights included; ``path`` may
    also be a folder (or its ``model.safetensors``) written by ``rezdiff export --format safetensors``.

    The file is read with ``weights_only=True``: a checkpoint can hold tensors and plain values only,
    never code. The class to build and its arguments are the ones recorded at training time; the class is
    checked to be a rezdiff model before its module is imported.
    """
    checkpoint = read_checkpoint(path, map_location)
    cls = checkpoint_class(path, checkpoint)
    hparams = recorded_hyperparameters(path, checkpoint, cls)
    try:
        model = build(f"{cls.__module__}.{cls.__qualname__}", hparams)
    except (ValueError, TypeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(
            f"{path}: its recorded hyperparameters do not build a {cls.__name__} ({error})"
        ) from error
    check_weight_shapes(path, model, checkpoint["state_dict"])
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path} does not match {cls.__name__}: missing weights {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected weights {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    return model.to(map_location).eval()
