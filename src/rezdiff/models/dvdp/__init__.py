"""DVDP: dimensionality-varying diffusion (Zhang et al. 2023); see README.md in this folder."""

from rezdiff.models.dvdp.module import DVDP

__all__ = ["DVDP"]
