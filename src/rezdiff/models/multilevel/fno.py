"""A time-conditioned Fourier neural operator: neuraloperator's FNO with per-sample FiLM conditioning.

Why a wrapper: neuraloperator 2.0 has no per-sample time input (its AdaIN norm shares one embedding across
the batch), so this module runs the FNO's own lifting, Fourier blocks and projection and modulates the
hidden field after every block by ``h * (1 + scale(t)) + shift(t)``, computed from a sinusoidal embedding
of ``t`` (diffusers' ``get_timestep_embedding``) by a small MLP whose last layer starts at zero (the block
starts unconditioned and learns its conditioning).

Resolution convention: inputs hold function values on the unit square at the pixel centres of
:mod:`rezdiff.data.coords`. The spectral convolutions use neuraloperator's ``fft_norm="forward"``
(coefficients of the function, not of the grid), every other layer acts pixel by pixel, and the positional
features are ``sin``/``cos`` of ``2 pi x`` and ``2 pi y`` at the pixel centres (band-limited, so their
Fourier coefficients are exact at every resolution): the same weights give the same function at 32², 64²
and 128² on band-limited inputs (tested). neuraloperator is imported lazily (``import neuralop`` pulls in
wandb and takes about 1.5 s).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from rezdiff.data.coords import as_hw, pixel_centers

Positional = Literal["periodic", "linear", "none"]

NEURALOP_ODD_SIZE_BUG = (
    "neuraloperator 2.0.0's spectral convolution applies fftshift where ifftshift is needed, which is only "
    "the same permutation on even sizes, so odd grids give wrong outputs"
)


def check_even(height: int, width: int) -> None:
    """Raise a ValueError for odd grid sizes (neuraloperator 2.0.0 bug)."""
    if height % 2 or width % 2:
        raise ValueError(
            f"the FNO needs even grid sizes, got {height}x{width}: {NEURALOP_ODD_SIZE_BUG}. "
            "Use an even resolution."
        )


class FNO(nn.Module):
    """``forward(x [B, C, H, W], t [B]) -> [B, out_channels, H, W]`` for any even ``H, W``.

    The paper's score network (Li et al.'s FNO2d): a linear lifting to ``width`` channels, ``n_layers``
    Fourier layers (spectral convolution on ``modes`` wave numbers per axis plus a pointwise linear skip,
    GELU between layers), projection through ``projection`` hidden channels. ``modes`` counts wave numbers
    as Li et al. do (``k1`` in ``-m..m-1``, ``k2`` in ``0..m-1`` for the real FFT); neuraloperator 2.0 counts
    both signs, so ``modes=14`` becomes its ``n_modes=(28, 26)``. ``t`` is a float per sample on the scale
    of a diffusion timestep (``0 .. 1000``); ``time_embedding`` is the width of its sinusoidal embedding.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        width: int = 32,
        modes: int | tuple[int, int] = 14,
        n_layers: int = 4,
        projection: int = 128,
        positional: Positional = "periodic",
        time_embedding: int = 128,
    ) -> None:
        super().__init__()
        from neuralop.models import FNO as NeuralopFNO  # lazy: importing neuralop is slow (wandb)

        modes_h, modes_w = as_hw(modes, "modes")
        if min(modes_h, modes_w) < 1 or width < 1 or n_layers < 1 or projection < 1:
            raise ValueError("modes, width, n_layers and projection must all be >= 1")
        if positional not in ("periodic", "linear", "none"):
            raise ValueError(f"unknown positional {positional!r}; choose 'periodic', 'linear' or 'none'")
        if time_embedding < 2 or time_embedding % 2:
            raise ValueError(f"time_embedding must be even and >= 2, got {time_embedding}")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.positional = positional
        self.time_embedding = time_embedding
        extra = {"periodic": 4, "linear": 2, "none": 0}[positional]
        fno = NeuralopFNO(
            n_modes=(2 * modes_h, 2 * modes_w - 2),
            in_channels=in_channels + extra,
            out_channels=self.out_channels,
            hidden_channels=width,
            n_layers=n_layers,
            lifting_channel_ratio=0,  # a single linear lifting, as in Li et al.
            projection_channel_ratio=projection / width,
            positional_embedding=None,  # ours sits at the pixel centres (see the module docstring)
            use_channel_mlp=False,
            fno_skip="linear",
        )
        # Keep its parts, not the FNO itself: neuraloperator's BaseModel.state_dict adds a `_metadata` entry
        # of Python objects (e.g. F.gelu) to the whole checkpoint, which `weights_only` loading refuses.
        self.lifting, self.blocks, self.projection = fno.lifting, fno.fno_blocks, fno.projection
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embedding, 4 * width), nn.SiLU(), nn.Linear(4 * width, 2 * width * n_layers)
        )
        nn.init.zeros_(self.time_mlp[-1].weight)
        nn.init.zeros_(self.time_mlp[-1].bias)
        self.width = width
        self.n_layers = n_layers

    def _features(self, x: Tensor) -> Tensor:
        if self.positional == "none":
            return x
        centres = pixel_centers(tuple(x.shape[-2:]), device=x.device, dtype=x.dtype)  # (x, y) in [-1, 1]
        centres = centres.permute(2, 0, 1).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        if self.positional == "linear":
            return torch.cat([x, centres], dim=1)
        angle = math.pi * (centres + 1)  # 2 pi s for s = (c + 1) / 2 in [0, 1]
        return torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        from diffusers.models.embeddings import get_timestep_embedding

        check_even(x.shape[-2], x.shape[-1])
        if x.shape[1] != self.in_channels:
            raise ValueError(f"this FNO takes {self.in_channels} channels, got {x.shape[1]}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        embedding = get_timestep_embedding(t.float(), self.time_embedding, flip_sin_to_cos=True)
        film = self.time_mlp(embedding.to(x.dtype)).view(x.shape[0], self.n_layers, 2, self.width, 1, 1)
        h = self.lifting(self._features(x))
        for index in range(self.n_layers):
            h = self.blocks(h, index)
            h = h * (1 + film[:, index, 0]) + film[:, index, 1]
        return self.projection(h)
