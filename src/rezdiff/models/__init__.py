"""The model families; each subclasses :class:`DiffusionModule`."""

from rezdiff.models.base import DiffusionModule, NonFiniteLossError
from rezdiff.models.ddpm import DDPM
from rezdiff.models.dvdp import DVDP
from rezdiff.models.multilevel import MultilevelSDE

__all__ = ["DDPM", "DVDP", "DiffusionModule", "MultilevelSDE", "NonFiniteLossError"]
