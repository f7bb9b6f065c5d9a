"""Feature extractors for FID/KID: images ``[B, C, H, W]`` in [-1, 1] in, features ``[B, D]`` (float32) out.

Three choices, named explicitly in configs (``feature: random_conv | inception | torchscript``):

* ``random_conv`` (:class:`RandomConvFeatures`): weights-free. A fixed four-layer ReLU conv net whose
  weights are drawn from ``torch.Generator().manual_seed(seed)`` (He-normal, zero bias); the features are the
  global means of its last two layers (128 + 128 = 256 values). It needs no download and runs on a CPU at
  any resolution, so it serves tests and CPU sweeps. **Its FIDs are only comparable with other FIDs computed
  by rezdiff with the same extractor name and seed, never with published FIDs.**
* ``inception`` (:class:`InceptionV3Features`): the TensorFlow FID Inception-v3 (2015-12-05 graph) as the
  TorchScript file ``inception-2015-12-05.pt`` published with NVIDIA's StyleGAN2-ADA metrics (the file
  clean-fid and StyleGAN3 use). It is called as ``model(uint8 images [N, 3, H, W], return_features=True)``
  and returns the 2048 pool features; it resizes to 299 internally. rezdiff never downloads it: point
  ``feature_path`` at a local copy.
* ``torchscript`` (:class:`TorchScriptFeatures`): any TorchScript module mapping float images in [-1, 1]
  ``[N, 3, H, W]`` to ``[N, D]``.

Grey images are repeated to three channels for every extractor. Extractors are frozen ``nn.Module``\\ s with
``num_features`` and ``name`` attributes (torchmetrics' FID reads ``num_features``; the stats cache key uses
``name``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

FeatureName = Literal["random_conv", "inception", "torchscript"]

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)


def _three_channels(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 1 or 3, H, W], got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class _Frozen(nn.Module):
    """Eval mode forever, no gradients: a metric network never trains."""

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class RandomConvFeatures(_Frozen):
    """The weights-free extractor (see the module docstring): seeded random conv net, 256 features."""

    widths = (32, 64, 128, 128)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.name = f"random_conv-v1-seed{seed}"
        generator = torch.Generator().manual_seed(seed)
        layers = []
        channels = 3
        for width in self.widths:
            conv = nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=generator) * (2.0 / (9 * channels)) ** 0.5
                )
                conv.bias.zero_()
            layers.append(conv)
            channels = width
        self.layers = nn.ModuleList(layers)
        self.num_features = self.widths[-2] + self.widths[-1]
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = _three_channels(images).float()
        pooled = []
        for i, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if i >= len(self.layers) - 2:
                pooled.append(x.mean(dim=(-2, -1)))
        return torch.cat(pooled, dim=1)


def _require_file(path: str | Path | None, what: str, how: str) -> Path:
    if path is None or not Path(path).is_file():
        where = "no path was given" if path is None else f"{path} does not exist"
        raise FileNotFoundError(f"{what}: {where}. {how}")
    return Path(path)


class InceptionV3Features(_Frozen):
    """FID Inception-v3 from NVIDIA's TorchScript file ``inception-2015-12-05.pt`` (2048 features)."""

    def __init__(self, path: str | Path | None) -> None:
        super().__init__()
        file = _require_file(
            path,
            f"the Inception-v3 FID weights ({INCEPTION_FILE}) are needed for feature='inception'",
            f"Download {INCEPTION_URL} once on a machine with internet access and set "
            "--evaluate.feature_path to the local file (rezdiff never downloads), or use "
            "feature: random_conv (weights-free; FIDs comparable within rezdiff only).",
        )
        self.model = torch.jit.load(str(file), map_location="cpu").eval()
        self.name = f"inception-2015-12-05:{file.stat().st_size}"
        self.num_features = 2048
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        uint8 = ((_three_channels(images).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.model(uint8, return_features=True).float()


class TorchScriptFeatures(_Frozen):
    """Any TorchScript feature network: float images in [-1, 1] ``[N, 3, H, W]`` -> ``[N, D]``."""

    def __init__(self, path: str | Path | None) -> None:
        super().__init__()
        file = _require_file(
            path,
            "feature='torchscript' needs a TorchScript file",
            "Set --evaluate.feature_path to a file written by torch.jit.save.",
        )
        self.model = torch.jit.load(str(file), map_location="cpu").eval()
        self.name = f"torchscript:{file.name}:{file.stat().st_size}"
        probe = self.model(torch.zeros(1, 3, 32, 32))
        self.num_features = int(probe.shape[-1])
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.model(_three_channels(images).float()).float()


def feature_extractor(name: FeatureName = "random_conv", path: str | None = None, seed: int = 0) -> nn.Module:
    """The extractor called ``name`` (``path`` for the file-based ones, ``seed`` for ``random_conv``)."""
    if name == "random_conv":
        return RandomConvFeatures(seed)
    if name == "inception":
        return InceptionV3Features(path)
    if name == "torchscript":
        return TorchScriptFeatures(path)
    raise ValueError(f"unknown feature extractor {name!r}; choose random_conv, inception or torchscript")
