"""∞-Diff: infinite-resolution diffusion with subsampled mollified states (Bond-Taylor & Willcocks 2024);
see README.md in this folder."""

from rezdiff.models.infty_diff.latent import InftyDiffLatent, MLPSkipNet
from rezdiff.models.infty_diff.module import InftyDiff
from rezdiff.models.infty_diff.network import InftyDiffEncoder, InftyDiffNet

__all__ = ["InftyDiff", "InftyDiffEncoder", "InftyDiffLatent", "InftyDiffNet", "MLPSkipNet"]
