"""PatchGAN discriminator (Isola et al. 2017), the layout LDM's and INFD's autoencoders train against."""

from __future__ import annotations

from torch import Tensor, nn


class PatchGAN(nn.Module):
    """``x [B, C, H, W] -> logits [B, 1, H', W']``, one real/fake score per overlapping patch.

    ``4x4`` stride-2 conv + LeakyReLU(0.2); ``num_layers - 1`` more stride-2 ``conv, BatchNorm, LeakyReLU``
    doubling the width (capped at 8x ``base_channels``); one stride-1 ``conv, BatchNorm, LeakyReLU``; a
    stride-1 conv to one channel. Weights drawn from N(0, 0.02) and BatchNorm scales from N(1, 0.02), as in
    pix2pix. With ``num_layers = 3`` the receptive field is 70x70 pixels.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = base_channels
        for n in range(1, num_layers + 1):
            out = base_channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
