"""PSNR and SSIM of reconstructions against references, images in [-1, 1].

Both are computed per image on [0, 1]-mapped images (data range 1) and averaged, the convention of
autoencoder papers. PSNR is torchmetrics'. SSIM is written here because torchmetrics' version averages over
reflect-padded borders, which neither Wang et al.'s reference code nor scikit-image does: ours uses the
Gaussian window (11 taps, σ = 1.5, only windows lying inside the image) and equals
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`` averaged over channels (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio


def _unit(images: Tensor) -> Tensor:
    return ((images.float() + 1) / 2).clamp(0, 1)


def _check(reconstruction: Tensor, reference: Tensor) -> None:
    if reconstruction.shape != reference.shape or reconstruction.ndim != 4:
        raise ValueError(
            f"reconstruction and reference must be [B, C, H, W] of one shape, got "
            f"{tuple(reconstruction.shape)} and {tuple(reference.shape)}"
        )


def psnr(reconstruction: Tensor, reference: Tensor) -> float:
    """Mean over images of 10·log10(1 / MSE) on [0, 1] images (dB)."""
    _check(reconstruction, reference)
    value = peak_signal_noise_ratio(
        _unit(reconstruction), _unit(reference), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return float(value.mean())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(reconstruction: Tensor, reference: Tensor, k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean SSIM over images and channels (Gaussian window 11, σ 1.5, data range 1, float64)."""
    _check(reconstruction, reference)
    if min(reference.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11, got {tuple(reference.shape[-2:])}")
    x, y = _unit(reconstruction).double(), _unit(reference).double()
    b, c, h, w = x.shape
    window = _gaussian_window().to(x.device)[None, None]
    stack = torch.cat([x, y, x * x, y * y, x * y]).reshape(5 * b * c, 1, h, w)
    mx, my, xx, yy, xy = F.conv2d(stack, window).reshape(5, b, c, h - 10, w - 10)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = k1**2, k2**2
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())
