"""Old import paths of modules and names that moved (issue 18: family-private code lives in its family's
folder), kept for one release: each reads through to the new place with one FutureWarning naming it."""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

_NOTE = "the old path will be removed in the next release"


def alias_module(old: str, new: str) -> None:
    """Make the module being imported as ``old`` the module ``new`` (same objects, private names too) and
    warn once: later imports of ``old`` find ``new`` in ``sys.modules`` and stay silent."""
    warnings.warn(f"{old} moved to {new}; {_NOTE}", FutureWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)


def moved_attribute(module: str, name: str, moved: dict[str, str]) -> Any:
    """``module.name`` for a name listed in ``moved`` (name -> its new module), with a FutureWarning; the
    AttributeError of a plain missing name otherwise (a module's ``__getattr__`` calls this). The value is
    then kept in ``module``, so the warning comes once per process (``from package import name`` looks a
    name up twice)."""
    if name not in moved:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} moved to {moved[name]}.{name}; {_NOTE}", FutureWarning, stacklevel=3)
    value = getattr(importlib.import_module(moved[name]), name)
    setattr(sys.modules[module], name, value)
    return value
