"""The model families; each subclasses :class:`DiffusionModule`."""

from rezdiff.models.base import DiffusionModule, NonFiniteLossError
from rezdiff.models.ddpm import DDPM
from rezdiff.models.dvdp import DVDP
from rezdiff.models.infd import INFD, INFDAutoencoder
from rezdiff.models.infty_diff import InftyDiff, InftyDiffLatent
from rezdiff.models.multilevel import MultilevelSDE
from rezdiff.models.optimization import EMASettings, LinearWarmup
from rezdiff.nn.unet import UNetSettings

__all__ = [
    "DDPM",
    "DVDP",
    "INFD",
    "DiffusionModule",
    "EMASettings",
    "INFDAutoencoder",
    "InftyDiff",
    "InftyDiffLatent",
    "LinearWarmup",
    "MultilevelSDE",
    "NonFiniteLossError",
    "UNetSettings",
]
