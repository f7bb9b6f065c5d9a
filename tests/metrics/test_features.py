"""Feature extractors: the seeded random net, the Inception and TorchScript loaders, missing-file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from rezdiff.metrics import InceptionV3Features, RandomConvFeatures, TorchScriptFeatures, feature_extractor


def test_random_conv_is_fixed_by_its_seed_and_takes_any_size_and_grey() -> None:
    images = torch.rand(4, 3, 40, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a, b, other = RandomConvFeatures(0), RandomConvFeatures(0), RandomConvFeatures(1)
    assert a.num_features == 256 and a(images).shape == (4, 256)
    assert torch.equal(a(images), b(images))
    assert not torch.allclose(a(images), other(images))
    assert a.name != other.name
    grey = images[:, :1]
    assert torch.equal(a(grey), a(grey.expand(-1, 3, -1, -1)))
    a.train()
    assert not a.training and not any(p.requires_grad for p in a.parameters())


class FakeInception(nn.Module):
    """Stands in for inception-2015-12-05.pt: same call signature, checks it receives uint8 in [0, 255]."""

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        assert img.dtype == torch.uint8
        assert return_features
        pooled = img.float().mean(dim=(2, 3))
        return torch.cat([pooled, torch.zeros(img.shape[0], 2045)], dim=1)


def test_inception_wrapper_feeds_uint8_and_returns_2048_features(tmp_path: Path) -> None:
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(FakeInception()), str(path))
    net = feature_extractor("inception", str(path))
    assert isinstance(net, InceptionV3Features) and net.num_features == 2048
    images = torch.stack([torch.full((3, 8, 8), -1.0), torch.full((3, 8, 8), 1.0)])
    features = net(images)
    assert features.shape == (2, 2048)
    assert features[0, :3].tolist() == [0.0, 0.0, 0.0] and features[1, :3].tolist() == [255.0] * 3


def test_missing_inception_file_names_the_file_and_how_to_get_it(tmp_path: Path) -> None:
    for path in (None, str(tmp_path / "nowhere.pt")):
        with pytest.raises(FileNotFoundError) as info:
            feature_extractor("inception", path)
        text = str(info.value)
        assert "inception-2015-12-05.pt" in text and "https://" in text and "feature_path" in text
        assert "random_conv" in text


def test_torchscript_extractor_reads_its_feature_size(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())  # [N, 3, H, W] -> [N, 12]
    torch.jit.save(torch.jit.trace(pooled, torch.zeros(1, 3, 32, 32)), str(path))
    net = TorchScriptFeatures(str(path))
    assert net.num_features == 12 and net(torch.zeros(5, 1, 16, 16)).shape == (5, 12)
    with pytest.raises(FileNotFoundError, match="TorchScript"):
        TorchScriptFeatures(None)
