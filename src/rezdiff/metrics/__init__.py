"""Evaluation metrics for generated images ([-1, 1] tensors, [B, C, H, W])."""

from rezdiff.metrics.swd import MultiScaleSWD, laplacian_pyramid, multiscale_swd, sliced_wasserstein

__all__ = ["MultiScaleSWD", "laplacian_pyramid", "multiscale_swd", "sliced_wasserstein"]
