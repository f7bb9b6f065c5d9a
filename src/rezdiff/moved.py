"""Old import paths of modules and names that moved (issue 18: family-private code lives in its family's
folder), kept for one release: each reads through to the new place with one FutureWarning naming it.

Old module paths have no files of their own (so that git sees each move as a rename): :func:`install`,
called by ``rezdiff/__init__``, puts a finder on ``sys.meta_path`` that answers an old path in
:data:`OLD_MODULES` with the new module itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

_NOTE = "the old path will be removed in the next release"

_INFTY_DIFF, _INFD = "rezdiff.models.infty_diff", "rezdiff.models.infd"
OLD_MODULES = {
    "rezdiff.core.mollified": f"{_INFTY_DIFF}.mollified",
    "rezdiff.nn.sparse": f"{_INFTY_DIFF}.sparse",
    "rezdiff.nn.sparse_triton": f"{_INFTY_DIFF}.sparse_triton",
    "rezdiff.nn.interpolate": f"{_INFTY_DIFF}.interpolate",
    "rezdiff.inverse.infty_diff": f"{_INFTY_DIFF}.inverse",
    "rezdiff.nn.clif": f"{_INFD}.clif",
    "rezdiff.nn.autoencoder": f"{_INFD}.networks",
    "rezdiff.nn.discriminator": f"{_INFD}.discriminator",
    "rezdiff.nn.perceptual": f"{_INFD}.perceptual",
    "rezdiff.inverse.guidance": f"{_INFD}.guidance",
    "rezdiff.nn.fno": "rezdiff.models.multilevel.fno",
}
"""Old module path -> the module it moved to."""


class _OldModulePaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the new module (same object, private names too), warning once: later
    imports find it in ``sys.modules``."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in OLD_MODULES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = OLD_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; {_NOTE}", FutureWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module is already imported."""


def install() -> None:
    """Put the old-module-path finder first on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(finder, _OldModulePaths) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldModulePaths())


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
