"""INFD: image neural-field diffusion (stage 1: the neural-field autoencoder; stage 2: latent diffusion)."""

from rezdiff.models.infd.autoencoder import INFDAutoencoder
from rezdiff.models.infd.latent import INFD, CachedLatents

__all__ = ["INFD", "CachedLatents", "INFDAutoencoder"]
