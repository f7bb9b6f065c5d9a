"""rezdiff: a PyTorch Lightning model zoo of resolution-agnostic diffusion models.

The names below are imported on first use, so that ``import rezdiff.core`` (pure diffusion maths) and
``rezdiff --help`` do not pay for Lightning, diffusers and every family.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rezdiff import moved as _moved

__version__ = "0.1.0"

_moved.install()  # old module paths of moved code (one release)

# public name -> the module that defines it
_EXPORTS = {
    "CheckpointError": "rezdiff.loading",
    "load": "rezdiff.loading",
    "DDPM": "rezdiff.models",
    "DVDP": "rezdiff.models",
    "DiffusionModule": "rezdiff.models",
    "MultilevelSDE": "rezdiff.models",
    "INFD": "rezdiff.models.infd",
    "INFDAutoencoder": "rezdiff.models.infd",
    "InftyDiff": "rezdiff.models.infty_diff",
    "InftyDiffLatent": "rezdiff.models.infty_diff",
    "Evaluate": "rezdiff.evaluation",
    "FieldDataModule": "rezdiff.data.datamodule",
}

__all__ = [
    "DDPM",
    "DVDP",
    "CheckpointError",
    "DiffusionModule",
    "Evaluate",
    "FieldDataModule",
    "INFD",
    "INFDAutoencoder",
    "InftyDiff",
    "InftyDiffLatent",
    "MultilevelSDE",
    "__version__",
    "load",
]

if TYPE_CHECKING:
    from rezdiff.data.datamodule import FieldDataModule
    from rezdiff.evaluation import Evaluate
    from rezdiff.loading import CheckpointError, load
    from rezdiff.models import DDPM, DVDP, DiffusionModule, MultilevelSDE
    from rezdiff.models.infd import INFD, INFDAutoencoder
    from rezdiff.models.infty_diff import InftyDiff, InftyDiffLatent


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rezdiff' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
