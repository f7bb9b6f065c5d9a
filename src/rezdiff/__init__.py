"""rezdiff: a PyTorch Lightning model zoo of resolution-agnostic diffusion models."""

__version__ = "0.1.0"

from rezdiff.data.datamodule import FieldDataModule  # noqa: E402
from rezdiff.evaluation import Evaluate  # noqa: E402
from rezdiff.loading import CheckpointError, load  # noqa: E402
from rezdiff.models import DDPM, DVDP, DiffusionModule, MultilevelSDE  # noqa: E402
from rezdiff.models.infd import INFD, INFDAutoencoder  # noqa: E402
from rezdiff.models.infty_diff import InftyDiff, InftyDiffLatent  # noqa: E402

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
