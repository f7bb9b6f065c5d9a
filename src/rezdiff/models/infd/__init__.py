"""INFD: image neural-field diffusion (stage 1: the neural-field autoencoder; stage 2: latent diffusion);
see README.md in this folder for its map of files."""

from rezdiff.models.infd.autoencoder import INFDAutoencoder
from rezdiff.models.infd.latent import INFD
from rezdiff.models.infd.views import CachedLatents, MultiScalePatches

__all__ = ["INFD", "CachedLatents", "INFDAutoencoder", "MultiScalePatches"]
