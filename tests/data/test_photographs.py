"""The built-in real-photograph dataset: its fixed regions, its train/held-out split and its exact area
rendering from the full-resolution source pixels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rezdiff.data import FieldDataModule, FullGrid, Photographs
from rezdiff.data.photographs import (
    REGION_SIZE,
    REGIONS,
    SOURCES,
    area_weights,
    data_folder,
    load_source,
    region_indices,
)
from rezdiff.models import DDPM
from tests.helpers import TINY_UNET, quiet_trainer


def _source_image(index: int, split: str = "all") -> torch.Tensor:
    """Region ``index`` of ``split`` read straight from the file: the oracle for a native-size render."""
    region = Photographs(split).regions[index]
    with Image.open(data_folder() / region.source.file) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    crop = pixels[region.top : region.top + REGION_SIZE, region.left : region.left + REGION_SIZE]
    return torch.from_numpy(crop / 127.5 - 1.0).permute(2, 0, 1).float()


def test_regions_are_the_documented_grid() -> None:
    """35 regions: the counts per photograph that the docstring and the README state."""
    counts = Counter(region.source.name for region in REGIONS)
    assert counts == {
        "astronaut": 4,
        "chelsea": 1,
        "coffee": 2,
        "rocket": 2,
        "hubble_deep_field": 9,
        "immunohistochemistry": 4,
        "retina": 13,
    }
    assert len({region.name for region in REGIONS}) == len(REGIONS)


def test_regions_lie_inside_their_photographs_and_do_not_overlap() -> None:
    for source in SOURCES:
        height, width = load_source(source).shape[:2]
        assert (height, width) == source.size
        covered = np.zeros((height, width), dtype=int)
        for region in (r for r in REGIONS if r.source == source):
            assert region.top >= 0 and region.top + REGION_SIZE <= height, region.name
            assert region.left >= 0 and region.left + REGION_SIZE <= width, region.name
            covered[region.top : region.top + REGION_SIZE, region.left : region.left + REGION_SIZE] += 1
        assert covered.max() == 1, source.name


def test_retina_regions_are_inside_the_fundus() -> None:
    """The retina's black surround is left out: no kept region has a dark (background) corner."""
    dataset = Photographs("all")
    for index, region in enumerate(dataset.regions):
        if region.source.name == "retina":
            corners = dataset.source_pixels(index)[[0, 0, -1, -1], [0, -1, 0, -1]].sum(-1)
            assert corners.min() > 60, region.name


def test_split_is_disjoint_covers_every_region_and_has_the_documented_sizes() -> None:
    train, held_out, every = (region_indices(s) for s in ("train", "held_out", "all"))
    assert (len(train), len(held_out), len(every)) == (27, 8, 35)
    assert not set(train) & set(held_out)
    assert sorted(train + held_out) == every == list(range(len(REGIONS)))
    assert held_out == [3, 7, 11, 15, 19, 23, 27, 31]
    names = {s: set(Photographs(s).relative_paths()) for s in ("train", "held_out")}
    assert not names["train"] & names["held_out"]
    # The datasets of the two splits are the regions of the two index lists, in the same order.
    assert Photographs("held_out").relative_paths() == [REGIONS[i].name for i in held_out]


def test_native_render_is_the_source_pixels_exactly() -> None:
    dataset = Photographs("all")
    for index in (0, 4, 12, len(dataset) - 1):
        assert torch.equal(dataset.render(index, REGION_SIZE), _source_image(index))
        assert torch.equal(dataset[index], _source_image(index))
    assert dataset.native_size(0) == (REGION_SIZE, REGION_SIZE)


@pytest.mark.parametrize("resolution", [128, 64, 32])
def test_box_averaging_a_2x_render_gives_the_1x_render(resolution: int) -> None:
    """Area rendering is consistent across scales: a 2x render carries the detail that averages to 1x."""
    dataset = Photographs("held_out")
    for index in (0, 5):
        fine = dataset.render(index, 2 * resolution)
        coarse = dataset.render(index, resolution)
        torch.testing.assert_close(F.avg_pool2d(fine[None], 2)[0], coarse, rtol=0, atol=1e-6)
        assert (fine - F.interpolate(coarse[None], scale_factor=2)[0]).abs().max() > 0.05  # true detail


def test_non_integral_sizes_are_the_exact_area_average() -> None:
    """48 does not divide 256: every output cell is the overlap-weighted mean of the source cells."""
    weights = area_weights(REGION_SIZE, 48)
    assert np.allclose(weights.sum(1), 1.0) and np.allclose(weights.sum(0), 48 / REGION_SIZE)
    source = _source_image(2).double()
    # A dense reference: replicate every source pixel 3x3 (48 * 16 = 768 = 3 * 256), then box-average.
    dense = source.repeat_interleave(3, dim=1).repeat_interleave(3, dim=2)
    reference = F.avg_pool2d(dense[None], 16)[0].float()
    torch.testing.assert_close(Photographs("all").render(2, 48), reference, rtol=0, atol=1e-6)
    rendered = Photographs("all").render(2, (48, 64))
    assert rendered.shape == (3, 48, 64)
    reference = F.avg_pool2d(dense[None], (16, 12))[0].float()
    torch.testing.assert_close(rendered, reference, rtol=0, atol=1e-6)


def test_renders_are_deterministic_float32_in_range_and_grey_is_luma() -> None:
    dataset = Photographs("train")
    first = dataset.render(3, 64)
    assert first.dtype == torch.float32 and first.shape == (3, 64, 64)
    assert torch.equal(first, Photographs("train").render(3, 64))
    for index in range(len(dataset)):
        image = dataset.render(index, 32)
        assert image.min() >= -1.0 and image.max() <= 1.0
    grey = Photographs("train", channels=1).render(3, 64)
    weights = torch.tensor((0.299, 0.587, 0.114)).view(3, 1, 1)
    torch.testing.assert_close(grey, (first * weights).sum(0, keepdim=True), rtol=0, atol=1e-6)


def test_user_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="split must be 'train', 'held_out' or 'all'"):
        Photographs("test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 256"):
        Photographs().render(0, 512)
    with pytest.raises(ValueError, match="channels must be 1"):
        Photographs(channels=4)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        Photographs("held_out").render(8, 32)


def test_a_tiny_ddpm_trains_on_the_photographs(tmp_path) -> None:
    """The dataset drops into FieldDataModule like Synthetic: a DDPM fits two steps on 16x16 renders."""
    torch.manual_seed(0)
    model = DDPM(**TINY_UNET)
    datamodule = FieldDataModule(
        Photographs("train"), FullGrid(16), batch_size=4, val_fraction=0.1, hflip=0.5
    )
    trainer = quiet_trainer(tmp_path, max_steps=2, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 2
    assert len(datamodule.split()[0]) + len(datamodule.split()[1]) == 27
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.image.shape == (4, 3, 16, 16)
