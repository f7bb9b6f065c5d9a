"""Perceptual losses: our VGG16 reads torchvision-format files; LPIPS follows its definition; Lap1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rezdiff.models.infd.perceptual import (
    LPIPS,
    LaplacianL1,
    VGG16Features,
    laplacian_pyramid,
    torchmetrics_lpips_weights,
)

# torchvision's vgg16.features: (index, in, out) of every conv; pools at 4, 9, 16, 23.
CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256)]
CONVS += [(17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random VGG16 weights in torchvision's key layout (classifier included, as a real file has)."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for index, cin, cout in CONVS:
        state[f"features.{index}.weight"] = (
            torch.randn(cout, cin, 3, 3, generator=generator) * (2 / (9 * cin)) ** 0.5
        )
        state[f"features.{index}.bias"] = torch.randn(cout, generator=generator) * 0.01
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path


def _explicit_taps(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """relu1_2 .. relu5_3 by an explicit conv stack read straight from the file's tensors."""
    taps, pools = [], {4, 9, 16, 23}
    for index, _, _ in CONVS:
        if index - 1 in pools:
            x = F.max_pool2d(x, 2)
        x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
        if index + 1 in (3, 8, 15, 22, 29):
            taps.append(x)
    return taps


def test_vgg_features_load_torchvision_keys(vgg_file: Path) -> None:
    model = VGG16Features()
    model.load_torchvision(vgg_file)
    x = torch.randn(1, 3, 32, 32)
    expected = _explicit_taps(torch.load(vgg_file, weights_only=True), x)
    got = model(x)
    assert [t.shape[1] for t in got] == [64, 128, 256, 512, 512]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_lpips_follows_its_definition(vgg_file: Path) -> None:
    lpips = LPIPS(vgg_file)
    assert not any(p.requires_grad for p in lpips.parameters())
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    distance = lpips(x, y)
    assert distance.shape == (2,) and (distance > 0).all()
    torch.testing.assert_close(lpips(y, x), distance)
    torch.testing.assert_close(lpips(x, x), torch.zeros(2))
    # Independent evaluation of the definition with the files' tensors.
    state = torch.load(vgg_file, weights_only=True)
    lin = torch.load(torchmetrics_lpips_weights(), weights_only=True, map_location="cpu")
    shift = torch.tensor((-0.030, -0.088, -0.188)).view(1, 3, 1, 1)
    scale = torch.tensor((0.458, 0.448, 0.450)).view(1, 3, 1, 1)
    fx, fy = _explicit_taps(state, (x - shift) / scale), _explicit_taps(state, (y - shift) / scale)
    expected = torch.zeros(2)
    for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        w = lin[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        expected += ((a - b) ** 2 * w).sum(1).mean((1, 2))
    torch.testing.assert_close(distance, expected, rtol=1e-4, atol=1e-6)


def test_missing_weights_fail_with_instructions(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vgg16"):
        LPIPS(tmp_path / "absent.pth")
    (tmp_path / "other.pth").write_bytes(b"")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        LPIPS(tmp_path / "other.pth")


def test_laplacian_pyramid_reconstructs_and_lap1_is_a_distance() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40, 36)
    bands = laplacian_pyramid(x, 4)
    assert len(bands) == 4 and bands[-1].shape[-2:] == (5, 5)
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        rebuilt = band + F.interpolate(rebuilt, size=band.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(rebuilt, x)
    lap = LaplacianL1(levels=4)
    y = torch.randn_like(x)
    torch.testing.assert_close(lap(x, x), torch.zeros(2))
    torch.testing.assert_close(lap(x, y), lap(y, x))
    # A constant offset lives only in the low-pass band: 1/levels of its absolute value.
    torch.testing.assert_close(lap(x + 0.4, x), torch.full((2,), 0.1))
