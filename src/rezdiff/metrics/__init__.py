"""Evaluation metrics for generated images ([-1, 1] tensors, [B, C, H, W])."""

from rezdiff.metrics.features import (
    InceptionV3Features,
    RandomConvFeatures,
    TorchScriptFeatures,
    feature_extractor,
)
from rezdiff.metrics.fid import (
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    kid_from_features,
    random_crops,
    torchmetrics_fid,
)
from rezdiff.metrics.reconstruction import psnr, ssim
from rezdiff.metrics.scale_consistency import (
    ScaleConsistency,
    box_downsample,
    render_scale_consistency,
    scale_consistency,
)
from rezdiff.metrics.swd import MultiScaleSWD, laplacian_pyramid, multiscale_swd, sliced_wasserstein

__all__ = [
    "InceptionV3Features",
    "MultiScaleSWD",
    "RandomConvFeatures",
    "TorchScriptFeatures",
    "feature_extractor",
    "fid_from_features",
    "frechet_distance",
    "gaussian_stats",
    "kid_from_features",
    "psnr",
    "random_crops",
    "ssim",
    "torchmetrics_fid",
    "ScaleConsistency",
    "box_downsample",
    "laplacian_pyramid",
    "multiscale_swd",
    "render_scale_consistency",
    "scale_consistency",
    "sliced_wasserstein",
]
