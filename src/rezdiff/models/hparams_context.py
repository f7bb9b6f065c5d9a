"""What a module's ``save_hyperparameters()`` records while LightningCLI builds it: the one place that
touches Lightning's private context variable for it.

LightningCLI hands the model it builds the parsed config through
``lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters`` (private, and free to move in a
Lightning release: rezdiff does not pin Lightning). rezdiff needs two things of that mechanism: to know that
a CLI records the optimiser specs itself (they reach the model as callables it cannot record), and to build
a frozen inner stage that records its own arguments rather than the outer module's. Without the variable
both still work under ``rezdiff``'s own CLI, which says it is building through :func:`cli_building`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_REZDIFF_CLI: ContextVar[bool] = ContextVar("rezdiff_cli_building", default=False)


def _lightning_given() -> ContextVar[Any] | None:
    """Lightning's context variable, or None in a Lightning that no longer has it."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:
        return None
    return _given_hyperparameters if isinstance(_given_hyperparameters, ContextVar) else None


def building_under_cli() -> bool:
    """True while a LightningCLI (rezdiff's, or any other that Lightning's context reveals) builds modules:
    it records their config itself."""
    given = _lightning_given()
    return _REZDIFF_CLI.get() or (given is not None and given.get() is not None)


@contextmanager
def cli_building() -> Iterator[None]:
    """Mark the modules built inside as built by rezdiff's CLI."""
    token = _REZDIFF_CLI.set(True)
    try:
        yield
    finally:
        _REZDIFF_CLI.reset(token)


@contextmanager
def own_hyperparameters() -> Iterator[None]:
    """Modules built inside record their own arguments, even while a CLI builds an outer module (whose
    context would otherwise hand its hyperparameters to every ``save_hyperparameters()`` call)."""
    given = _lightning_given()
    tokens = (_REZDIFF_CLI.set(False), given.set(None) if given is not None else None)
    try:
        yield
    finally:
        if given is not None:
            given.reset(tokens[1])
        _REZDIFF_CLI.reset(tokens[0])
