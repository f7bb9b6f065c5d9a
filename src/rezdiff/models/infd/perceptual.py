"""Perceptual losses without torchvision and without downloads.

- :class:`VGG16Features`: VGG16's convolutional part with torchvision's module indices, so that a
  torchvision ``vgg16`` state_dict (``features.N.weight``/``bias``; the classifier is ignored) loads as is
  from a local file the user names.
- :class:`LPIPS`: the LPIPS distance of Zhang et al. (2018) with the VGG backbone: inputs in ``[-1, 1]``
  are shifted/scaled to ImageNet statistics, features taken at relu1_2, relu2_2, relu3_3, relu4_3 and
  relu5_3, unit-normalised along channels, squared differences weighted per channel by the learned
  linear layers (the small file ``vgg.pth`` that ships inside torchmetrics), averaged over space and summed
  over layers. Frozen.
- :class:`LaplacianL1`: a weight-free alternative, the Laplacian-pyramid L1 distance (Lap1 of Bojanowski
  et al. 2018, "Optimizing the latent space of generative networks"): L1 on every band of a Laplacian
  pyramid, per-band means weighted equally, which stresses edges and fine detail more than plain L1.

Every distance maps ``(x, y)`` of shape ``[B, C, H, W]`` to ``[B]``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rezdiff.core.laplacian import laplacian_pyramid as core_laplacian_pyramid

# torchvision's vgg16 ``features``: widths of the 3x3 convs, "M" for 2x2 max pooling (the last pool,
# index 30, is not needed by LPIPS and left out).
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # ImageNet mean and std, expressed for inputs in [-1, 1]
_LPIPS_SCALE = (0.458, 0.448, 0.450)

VGG_HINT = (
    "LPIPS-VGG needs ImageNet VGG16 weights in torchvision's format, read from a local file (nothing is "
    "downloaded): save them once where torchvision is available, e.g. "
    "`torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), 'vgg16.pth')`, copy the "
    "file here and pass its path (--model.init_args.vgg_weights /path/vgg16.pth); or choose a weight-free "
    "perceptual loss (--model.init_args.perceptual lap_l1 or none)."
)


class VGG16Features(nn.Module):
    """VGG16's ``features`` up to relu5_3, same indices as torchvision; ``forward`` returns the taps."""

    def __init__(self, taps: tuple[int, ...] = LPIPS_TAPS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(width, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                width = int(item)
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
                if index == self.taps[-1]:
                    break
        return outputs

    def load_torchvision(self, path: str | os.PathLike[str]) -> None:
        """Load ``features.*`` from a torchvision-format VGG16 state_dict file (other keys are ignored)."""
        state = _load_state(path, "VGG16")
        features = {k: v for k, v in state.items() if k.startswith("features.")}
        expected = {k for k in self.state_dict()}
        missing = sorted(expected - set(features))
        if missing:
            raise ValueError(
                f"{path} is not a torchvision VGG16 state_dict: missing {missing[:4]}... ({VGG_HINT})"
            )
        self.load_state_dict({k: features[k] for k in expected})


def _load_state(path: str | os.PathLike[str], what: str) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file {str(path)!r} does not exist. {VGG_HINT}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict ({what})")
    return state


def torchmetrics_lpips_weights() -> Path | None:
    """Path of the LPIPS-VGG linear-layer weights that ship inside the torchmetrics wheel, if present."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "functional" / "image" / "lpips_models" / "vgg.pth"
    return path if path.is_file() else None


def _unit_normalise(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / (x.square().sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS-VGG distance ``(x, y) -> [B]`` for images in ``[-1, 1]`` (frozen, eval mode).

    ``vgg_weights``: torchvision VGG16 state_dict file (required); ``lin_weights``: LPIPS linear layers
    (``lin{k}.model.1.weight`` of shape ``[1, C_k, 1, 1]``), default the copy inside torchmetrics.
    """

    def __init__(
        self, vgg_weights: str | os.PathLike[str], lin_weights: str | os.PathLike[str] | None = None
    ):
        super().__init__()
        self.vgg = VGG16Features()
        self.vgg.load_torchvision(vgg_weights)
        if lin_weights is None:
            lin_weights = torchmetrics_lpips_weights()
            if lin_weights is None:
                raise FileNotFoundError(
                    "the LPIPS linear weights (vgg.pth) were not found inside torchmetrics; pass their path "
                    "as lin_weights (the file is part of the `lpips` and `torchmetrics` wheels)"
                )
        lin = _load_state(lin_weights, "LPIPS linear-layer")
        widths = (64, 128, 256, 512, 512)
        weights = []
        for k, width in enumerate(widths):
            value = lin.get(f"lin{k}.model.1.weight")
            if value is None or tuple(value.shape) != (1, width, 1, 1):
                raise ValueError(f"{lin_weights} lacks lin{k}.model.1.weight of shape (1, {width}, 1, 1)")
            weights.append(value.float())
        self.lins = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in weights)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # always frozen

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        both = self.vgg((torch.cat((x, y)) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for features, weight in zip(both, self.lins, strict=True):
            fx, fy = _unit_normalise(features).chunk(2)
            total = total + F.conv2d((fx - fy).square(), weight.to(fx.dtype)).mean((1, 2, 3))
        return total


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Lap1's pyramid: bands ``L_0 .. L_{n-1}`` and the low-pass residual (last), ``n <= levels - 1``, with
    bilinear ``up`` (:func:`rezdiff.core.laplacian.laplacian_pyramid`); it stops before a side would drop
    below 4, and the upsampled bands sum back to ``x`` exactly."""
    num_levels, side = 1, min(x.shape[-2:])
    while num_levels < levels and side >= 8:
        num_levels, side = num_levels + 1, (side + 1) // 2
    return core_laplacian_pyramid(x, num_levels, upsample="bilinear")


class LaplacianL1(nn.Module):
    """Laplacian-pyramid L1 distance ``(x, y) -> [B]``: the mean over bands of each band's mean absolute
    difference (equal weight per band, i.e. Lap1's ``2^{2j}``-weighted sums of absolute differences)."""

    def __init__(self, levels: int = 5) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        bands = laplacian_pyramid(x - y, self.levels)  # the pyramid is linear
        return torch.stack([band.abs().mean((1, 2, 3)) for band in bands]).mean(0)
