"""PSNR and SSIM against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rezdiff.metrics import psnr, ssim


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_skimage(channels: int) -> None:
    g = torch.Generator().manual_seed(channels)
    reference = torch.rand(3, channels, 32, 40, generator=g, dtype=torch.float64) * 2 - 1
    noisy = (reference + 0.15 * torch.randn(reference.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    unit = lambda x: (x.numpy() + 1) / 2
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    expected_ssim = np.mean(
        [
            structural_similarity(unit(r), unit(n), channel_axis=0, **options)
            for r, n in zip(reference, noisy, strict=True)
        ]
    )
    expected_psnr = np.mean(
        [
            peak_signal_noise_ratio(unit(r), unit(n), data_range=1.0)
            for r, n in zip(reference, noisy, strict=True)
        ]
    )
    assert ssim(noisy, reference) == pytest.approx(expected_ssim, abs=1e-6)
    assert psnr(noisy, reference) == pytest.approx(expected_psnr, rel=1e-5)
    assert ssim(reference, reference) == pytest.approx(1.0)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
