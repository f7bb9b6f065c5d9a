"""The time-conditioned FNO: resolution consistent, conditioned per sample, clear errors, lazy import."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import Tensor

from rezdiff.data import fourier_resize
from rezdiff.models.multilevel.fno import FNO


def band_limited(n: int, batch: int = 2) -> Tensor:
    """Two channels of a function with wave numbers up to 5, sampled at the pixel centres of n x n."""
    s = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    x, y = torch.meshgrid(s, s, indexing="ij")
    first = torch.sin(2 * math.pi * (3 * x + 0.1)) * torch.cos(2 * math.pi * 5 * y - 1)
    second = 0.5 * torch.cos(2 * math.pi * (2 * x - y)) + 0.3
    return torch.stack([first, second]).expand(batch, 2, n, n)


def random_fno(**options: object) -> FNO:
    torch.manual_seed(0)
    net = FNO(in_channels=2, **options)
    torch.nn.init.normal_(net.time_mlp[-1].weight, std=0.2)  # make the time conditioning non-trivial
    return net.eval()


@pytest.mark.parametrize("positional", ["periodic", "none"])
def test_a_random_fno_gives_the_same_function_at_32_64_128(positional: str) -> None:
    net = random_fno(positional=positional)
    t = torch.tensor([50.0, 800.0])
    with torch.no_grad():
        out = {n: net(band_limited(n), t) for n in (32, 64, 128)}
    scale = out[32].norm()
    assert scale > 0.1 * math.sqrt(out[32].numel())  # a non-trivial output
    for n in (64, 128):
        assert (fourier_resize(out[n], 32) - out[32]).norm() < 1e-3 * scale


def test_pixel_index_positions_would_break_consistency() -> None:
    """The authors' linspace(0, 1, n) grid is not at the pixel centres; even our linear pixel-centre
    coordinates (not band-limited) are 30x less consistent than the periodic features."""
    t = torch.tensor([50.0, 800.0])
    errors = {}
    for positional in ("periodic", "linear"):
        net = random_fno(positional=positional)
        with torch.no_grad():
            coarse, fine = net(band_limited(32), t), net(band_limited(128), t)
        errors[positional] = float((fourier_resize(fine, 32) - coarse).norm() / coarse.norm())
    assert errors["periodic"] * 10 < errors["linear"] < 0.05, errors


def test_time_conditioning_is_per_sample() -> None:
    net = random_fno()
    x = band_limited(32)
    with torch.no_grad():
        both = net(x, torch.tensor([10.0, 900.0]))
        first = net(x[:1], torch.tensor([10.0]))
        second = net(x[1:], torch.tensor([900.0]))
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)
    assert (both[0] - both[1]).abs().max() > 1e-2


def test_paper_defaults_and_mode_count() -> None:
    net = FNO(in_channels=1)
    conv = net.blocks.convs[0]
    assert net.width == 32 and net.n_layers == 4 and list(conv.n_modes) == [28, 14]  # k1 -14..13, k2 0..13
    assert net.projection.fcs[0].out_channels == 128
    assert not any(key.startswith("_") for key in net.state_dict())  # no neuraloperator metadata


def test_odd_sizes_and_wrong_channels_are_rejected_with_the_reason() -> None:
    net = FNO(in_channels=1, width=8, modes=4, projection=8)
    with pytest.raises(ValueError, match="even grid sizes.*neuraloperator 2.0.0"):
        net(torch.zeros(1, 1, 31, 32), torch.zeros(1))
    with pytest.raises(ValueError, match="takes 1 channels"):
        net(torch.zeros(1, 3, 32, 32), torch.zeros(1))
    with pytest.raises(ValueError, match="positional"):
        FNO(positional="grid")  # type: ignore[arg-type]


@pytest.mark.heavy
def test_importing_rezdiff_does_not_import_neuralop() -> None:
    code = "import sys, rezdiff, rezdiff.nn, rezdiff.models; print('neuralop' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
