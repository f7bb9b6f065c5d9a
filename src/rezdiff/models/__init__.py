"""The model families; each subclasses :class:`DiffusionModule`."""

from rezdiff.models.base import DiffusionModule, NonFiniteLossError
from rezdiff.models.ddpm import DDPM

__all__ = ["DDPM", "DiffusionModule", "NonFiniteLossError"]
