"""FID, KID and patch FID on feature matrices, in float64.

The evaluation harness extracts features itself (so that they can be gathered across DDP ranks and the
reference ones cached on disk) and scores them here. KID uses torchmetrics' polynomial-kernel MMD
(``torchmetrics.image.kid.poly_mmd``) over random subsets drawn from an explicit generator. FID is the
Fréchet distance between Gaussians fitted to the features; :func:`torchmetrics_fid` gives torchmetrics'
streaming ``FrechetInceptionDistance`` with the same extractor, and the tests check both agree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of features ``[N, D]``, in float64 (N >= 2)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least two feature vectors [N, D], got shape {tuple(features.shape)}")
    x = features.double()
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½) in float64.

    tr (S1 S2)^½ is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^½ S2 S1^½ (same eigenvalues as S1 S2), which stays real and stable for rank-deficient covariances.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    values, vectors = torch.linalg.eigh(sigma1)
    root1 = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root
    return float(value.clamp_min(0))


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """FID between two feature matrices ``[N, D]`` and ``[M, D]``."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def kid_from_features(
    real: Tensor,
    fake: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (mean, std over ``subsets``) with the cubic polynomial kernel, as torchmetrics and the paper.

    ``subset_size`` is capped by the smaller set; subsets are drawn without replacement from ``generator``
    (seed 0 when None), so the value is reproducible.
    """
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError("KID needs at least two real and two generated images")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    real, fake = real.double(), fake.double()
    scores = []
    for _ in range(subsets):
        a = real[torch.randperm(real.shape[0], generator=gen)[:size].to(real.device)]
        b = fake[torch.randperm(fake.shape[0], generator=gen)[:size].to(fake.device)]
        scores.append(poly_mmd(a, b, degree=3, gamma=None, coef=1.0))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False)) if subsets > 1 else 0.0


def random_crops(images: Tensor, patch: int, generator: torch.Generator | None = None) -> Tensor:
    """One random ``patch`` × ``patch`` crop per image ``[B, C, H, W]`` (INFD's patch FID; no resizing)."""
    height, width = images.shape[-2:]
    if patch > min(height, width) or patch < 1:
        raise ValueError(f"cannot crop {patch}x{patch} patches from {height}x{width} images")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    tops = torch.randint(0, height - patch + 1, (images.shape[0],), generator=gen).tolist()
    lefts = torch.randint(0, width - patch + 1, (images.shape[0],), generator=gen).tolist()
    crops = [img[:, t : t + patch, s : s + patch] for img, t, s in zip(images, tops, lefts, strict=True)]
    return torch.stack(crops)


def torchmetrics_fid(extractor: nn.Module) -> FrechetInceptionDistance:
    """torchmetrics' streaming FID (float64 sums, DDP-synced) with a rezdiff feature extractor.

    ``update(images_in_[-1,1], real=...)`` then ``compute()``; nothing is downloaded because the extractor
    is a module (its ``num_features`` spares torchmetrics a probe at 299×299).
    """
    return FrechetInceptionDistance(feature=extractor, reset_real_features=False)
