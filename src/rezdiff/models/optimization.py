"""How a model's optimisers, learning-rate schedule and EMA are configured: one source of truth per run.

A family's constructor takes the optimiser as an injected factory (Lightning's ``OptimizerCallable``, the
dependency-injection pattern of Lightning's CLI documentation), the schedule as an ``LRSchedulerCallable``
and the EMA as one :class:`EMASettings` group. In a config::

    model:
      init_args:
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 2.0e-4, betas: [0.9, 0.999]}}
        lr_scheduler: {class_path: rezdiff.models.LinearWarmup, init_args: {steps: 5000}}
        ema: {decay: 0.9999, update_every: 1, warmup: false}

A factory is given either as such a ``{class_path, init_args}`` spec (a family's default, a checkpoint's
record) or as a callable (what the CLI builds from the spec, a class, ``functools.partial(cls, ...)``). The
checkpoint always records the spec, so hyperparameters stay plain data for ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rezdiff.classpaths import ClassPathError, import_attribute

__all__ = [
    "EMASettings",
    "LinearWarmup",
    "class_spec",
    "resolve_factory",
    "recordable",
]

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]


@dataclass(frozen=True)
class EMASettings:
    """The exponential moving average of the network's weights (:class:`rezdiff.core.ema.EMA`), one group
    for every family: ``decay`` (0 turns the EMA off), an update every ``update_every`` optimiser steps,
    and ``warmup`` (decay ``min(decay, (1 + n) / (10 + n))`` for the n-th update)."""

    decay: float = 0.9999
    update_every: int = 1
    warmup: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"ema.decay must be in [0, 1), got {self.decay} (0 disables the EMA)")
        if self.update_every < 1:
            raise ValueError(f"ema.update_every must be >= 1, got {self.update_every}")

    @classmethod
    def of(cls, value: EMASettings | Mapping[str, Any]) -> EMASettings:
        """``value`` as settings: the dataclass itself, or the plain dict a config or checkpoint holds."""
        if isinstance(value, EMASettings):
            return value
        value = _as_mapping(value)
        if not isinstance(value, Mapping):
            raise ValueError(f"ema must be {{decay, update_every, warmup}}, got {value!r}")
        unknown = sorted(set(value) - {"decay", "update_every", "warmup"})
        if unknown:
            raise ValueError(f"ema has no setting {', '.join(unknown)}; it takes decay, update_every, warmup")
        return cls(**value)

    def as_dict(self) -> dict[str, Any]:
        """The plain dict a checkpoint records."""
        return asdict(self)


class LinearWarmup(LRScheduler):
    """Linear learning-rate warm-up over ``steps`` optimiser steps: the rate of step k (from 0) is
    ``lr * min(1, (k + 1) / steps)``, then constant. Every rezdiff scheduler steps once per optimiser step."""

    def __init__(self, optimizer: Optimizer, steps: int, last_epoch: int = -1) -> None:
        if steps < 1:
            raise ValueError(f"LinearWarmup steps must be >= 1, got {steps} (no warm-up: lr_scheduler null)")
        self.steps = int(steps)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        factor = min(1.0, (self.last_epoch + 1) / self.steps)
        return [base * factor for base in self.base_lrs]


def class_spec(class_path: str, **init_args: Any) -> dict[str, Any]:
    """``{"class_path": class_path, "init_args": init_args}``: how a family writes its default factory."""
    return {"class_path": class_path, "init_args": init_args}


def _import_class(class_path: Any, name: str) -> type:
    """The class a spec names. Modules of torch and rezdiff are imported; any other module only if it is
    already imported (:mod:`rezdiff.classpaths`: a checkpoint's text never makes us import arbitrary code)."""
    try:
        cls = import_attribute(class_path, trusted=("torch", "rezdiff"))
    except ClassPathError as error:
        if error.reason == "malformed":
            raise ValueError(
                f"{name}.class_path must name a class (e.g. torch.optim.AdamW), got {class_path!r}"
            ) from None
        if error.reason == "not_imported":
            raise ValueError(
                f"{name}.class_path {class_path!r}: import {error.module} first to use a class of it"
            ) from None
        raise ValueError(f"{name}.class_path {class_path!r} cannot be imported") from error.__cause__
    if not isinstance(cls, type):
        raise ValueError(f"{name}.class_path {class_path!r} is not a class")
    return cls


def _class_path(cls: type) -> str:
    """The shortest public path of ``cls`` (``torch.optim.AdamW`` rather than ``torch.optim.adamw.AdamW``),
    as the CLI writes it."""
    for public in ("torch.optim", "torch.optim.lr_scheduler", "rezdiff.models"):
        module = sys.modules.get(public)
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return f"{public}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _as_mapping(value: Any) -> Any:
    """``value`` as a dict when it is a jsonargparse ``Namespace`` (a recorded spec nested in a ``dict``
    argument, e.g. a wrapped stage's configuration, comes back from the CLI's parser as one)."""
    if not isinstance(value, Mapping) and callable(getattr(value, "as_dict", None)):
        return value.as_dict()
    return value


def _spec_init_args(init_args: Mapping[str, Any]) -> dict[str, Any]:
    """``init_args`` without the argument the factory is called with (an optimiser's ``params``, a
    scheduler's ``optimizer``), which a parser may have filled in as None."""
    init_args = copy.deepcopy(dict(init_args or {}))
    for call_time in ("params", "optimizer"):
        if init_args.get(call_time, 0) is None:
            del init_args[call_time]
    return init_args


def recordable(value: Any) -> dict[str, Any] | None:
    """The plain ``{class_path, init_args}`` spec of a factory: a spec (copied), a class, or a
    ``functools.partial`` of a class with keyword arguments only; None for anything else (a lambda)."""
    value = _as_mapping(value)
    if isinstance(value, Mapping):
        class_path = value.get("class_path")
        return {
            "class_path": class_path,
            "init_args": _spec_init_args(value.get("init_args") or {}),
        }
    if isinstance(value, type):
        return class_spec(_class_path(value))
    if isinstance(value, functools.partial) and isinstance(value.func, type) and not value.args:
        return class_spec(_class_path(value.func), **copy.deepcopy(value.keywords))
    return None


def resolve_factory(value: Any, name: str, base: type) -> Callable[..., Any]:
    """The callable behind ``value`` (a spec or a callable), named ``name`` in errors; a spec must name a
    subclass of ``base`` and its ``init_args`` must be arguments of that class."""
    value = _as_mapping(value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"class_path", "init_args"})
        if unknown:
            raise ValueError(f"{name} takes class_path and init_args, not {', '.join(unknown)}")
        cls = _import_class(value.get("class_path"), name)
        if not issubclass(cls, base):
            raise ValueError(f"{name}.class_path {value['class_path']!r} is not a {_class_path(base)}")
        return functools.partial(cls, **_spec_init_args(value.get("init_args") or {}))
    if not callable(value):
        raise ValueError(f"{name} must be a {{class_path, init_args}} spec or a callable, got {value!r}")
    return value


def probe(optimizer: OptimizerFactory, lr_scheduler: SchedulerFactory | None, name: str) -> None:
    """Build ``optimizer`` (and ``lr_scheduler`` on it) once on a one-element parameter, so a bad setting
    (an unknown argument, a negative learning rate) fails when the model is built, naming ``name``."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    try:
        built = optimizer([parameter])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} cannot be built: {error}") from error
    if not isinstance(built, Optimizer):
        raise ValueError(f"{name} built a {type(built).__name__}, not a torch.optim.Optimizer")
    if lr_scheduler is not None:
        try:
            lr_scheduler(built)
        except (TypeError, ValueError) as error:
            raise ValueError(f"lr_scheduler cannot be built: {error}") from error
