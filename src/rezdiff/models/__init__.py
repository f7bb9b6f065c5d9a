"""The model families; each subclasses :class:`DiffusionModule`."""

from rezdiff.models.base import DiffusionModule, NonFiniteLossError
from rezdiff.models.ddpm import DDPM
from rezdiff.models.dvdp import DVDP

__all__ = ["DDPM", "DVDP", "DiffusionModule", "NonFiniteLossError"]
