"""Classes named by text (a checkpoint's header or hyperparameters, an optimiser spec): the one rule for
what such a name may import. A module of a trusted package is imported; any other module only when it is
already imported (the user's own code, trusted by importing it), so a file's text never makes rezdiff
import arbitrary code. Callers word the errors for their context."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Literal

Reason = Literal["malformed", "not_imported", "unimportable"]


class ClassPathError(ValueError):
    """Why a class path cannot be followed (``reason``), and the module it names (``module``)."""

    def __init__(self, class_path: Any, reason: Reason, module: str = "") -> None:
        super().__init__(f"{class_path!r}: {reason}")
        self.class_path, self.reason, self.module = class_path, reason, module


def import_attribute(class_path: Any, trusted: tuple[str, ...]) -> Any:
    """What ``package.module.Name`` names, under the rule of this module: ``trusted`` lists the top-level
    packages whose modules may be imported (e.g. ``("rezdiff",)``). The caller checks that it is a class of
    the kind it expects. A ClassPathError otherwise."""
    if not isinstance(class_path, str) or "." not in class_path:
        raise ClassPathError(class_path, "malformed")
    module_name, _, name = class_path.rpartition(".")
    if module_name.split(".")[0] not in trusted and module_name not in sys.modules:
        raise ClassPathError(class_path, "not_imported", module_name)
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ClassPathError(class_path, "unimportable", module_name) from error
