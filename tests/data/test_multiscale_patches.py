"""MultiScalePatches: whole-image crop coordinates, scales, p_max, small images, balance, determinism."""

from __future__ import annotations

import torch

from rezdiff.data import FieldBatch, FieldDataModule, Synthetic, coords
from rezdiff.data.datasets import FieldDataset
from rezdiff.data.images import resize
from rezdiff.models.infd import MultiScalePatches


class Sizes(FieldDataset):
    """Random images of given native sizes, rendered by bicubic resizing (cheap)."""

    channels = 3

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(index)
        return torch.rand(3, self.sizes[index], self.sizes[index], generator=generator) * 2 - 1

    def native_size(self, index: int) -> tuple[int, int]:
        return self.sizes[index], self.sizes[index]


def _scale(example: FieldBatch) -> int:
    return round(2 / float(example.cell[0, 0]))


def test_crop_coordinates_are_whole_image_pixel_centres() -> None:
    dataset = Synthetic(num_images=3, resolution=64)
    view = MultiScalePatches(patch=16, min_scale=16, max_scale=64, encoder_resolution=32)
    for seed in range(4):
        example = view(dataset, 1, torch.Generator().manual_seed(seed))
        scale = _scale(example)
        assert 16 <= scale <= 64 and example.image.shape == (3, 16, 16)
        top, left = divmod(int(coords.coord_to_index(example.coords[0], scale)), scale)
        centres = coords.pixel_centers(scale)[top : top + 16, left : left + 16].reshape(-1, 2)
        torch.testing.assert_close(example.coords, centres, rtol=0, atol=1e-6)
        torch.testing.assert_close(example.cell, torch.full((256, 2), 2 / scale))
        full = dataset.render(1, scale)
        torch.testing.assert_close(example.image, full[:, top : top + 16, left : left + 16])
        torch.testing.assert_close(example.cond, dataset.render(1, 32))


def test_scales_stay_in_range_and_p_max_is_honoured() -> None:
    dataset = Sizes([40])
    view = MultiScalePatches(patch=8, min_scale=10, max_scale=30, encoder_resolution=8, p_max=0.5)
    assert view.scale_range(40) == (10, 30)
    generator = torch.Generator().manual_seed(0)
    scales = [_scale(view(dataset, 0, generator)) for _ in range(600)]
    assert min(scales) >= 10 and max(scales) <= 30 and len(set(scales)) > 15
    top_share = scales.count(30) / len(scales)
    expected = 0.5 + 0.5 / 21
    assert abs(top_share - expected) < 4 * (expected * (1 - expected) / 600) ** 0.5, top_share


def test_small_images_supply_the_whole_image_at_the_patch_size() -> None:
    dataset = Sizes([5, 12, 100])
    view = MultiScalePatches(patch=8, min_scale=8, max_scale=64, encoder_resolution=8)
    example = view(dataset, 0, torch.Generator().manual_seed(0))
    assert _scale(example) == 8 and example.image.shape == (3, 8, 8)
    torch.testing.assert_close(example.coords, coords.pixel_centers(8).reshape(-1, 2))
    torch.testing.assert_close(example.image, resize(dataset[0], 8, "bicubic"))
    assert view.scale_range(12) == (8, 12) and view.scale_range(100) == (8, 64)
    batch = FieldBatch.collate([view(dataset, i) for i in range(3)])  # fixed shapes batch
    assert (
        batch.image.shape == (3, 3, 8, 8)
        and batch.coords.shape == (3, 64, 2)
        and batch.cond.shape == (3, 3, 8, 8)
    )


def test_deterministic_with_a_generator() -> None:
    dataset = Sizes([30, 50])
    view = MultiScalePatches(patch=8, min_scale=8, max_scale=50, encoder_resolution=8, p_max=0.3)
    first = view(dataset, 1, torch.Generator().manual_seed(7))
    again = view(dataset, 1, torch.Generator().manual_seed(7))
    for name in ("image", "coords", "cell", "cond"):
        assert torch.equal(getattr(first, name), getattr(again, name))


def test_balanced_mixing_draws_the_high_resolution_subset_half_the_time() -> None:
    dataset = Sizes([8] * 18 + [32, 32])  # 10% high resolution
    view = MultiScalePatches(
        patch=8, min_scale=8, max_scale=32, encoder_resolution=8, high_res_min_size=24, high_res_prob=0.5
    )
    assert view.high_res_pool(dataset) == [18, 19]
    torch.manual_seed(0)
    draws = 400
    high = sum(_scale(view(dataset, i % 18)) > 8 for i in range(draws))
    # Replaced draws land in the subset; a high-resolution image still draws r = 8 with probability 1/25.
    expected = 0.5 * (24 / 25)
    assert abs(high / draws - expected) < 4 * (expected * (1 - expected) / draws) ** 0.5, high / draws
    fixed = [_scale(view(dataset, 0, torch.Generator().manual_seed(s))) for s in range(20)]
    assert fixed == [8] * 20  # validation draws (with a generator) are never replaced


def test_datamodule_batches() -> None:
    view = MultiScalePatches(patch=8, min_scale=8, max_scale=32, encoder_resolution=16)
    data = FieldDataModule(Synthetic(num_images=6, resolution=32), view, batch_size=3, val_fraction=0.34)
    batch = next(iter(data.train_dataloader()))
    assert batch.image.shape == (3, 3, 8, 8) and batch.cond.shape == (3, 3, 16, 16)
    assert batch.coords.shape == (3, 64, 2) and batch.cell.shape == (3, 64, 2)


def test_balanced_draws_stay_in_the_training_split() -> None:
    dataset = Sizes([8] * 16 + [32] * 4)  # images 16..19 are high resolution
    view = MultiScalePatches(
        patch=8,
        min_scale=8,
        max_scale=32,
        encoder_resolution=8,
        p_max=1.0,
        high_res_min_size=24,
        high_res_prob=1.0,
    )
    data = FieldDataModule(dataset, view, batch_size=1, val_fraction=0.25)
    train, val = data.split()
    train_high = [i for i in train if i >= 16]
    assert 0 < len(train_high) < 4, "the split should put some high-resolution images in validation"
    served = data.train_dataloader().dataset.view
    assert served.high_res_pool(dataset) == train_high and view.high_res_pool(dataset) == [16, 17, 18, 19]
    torch.manual_seed(0)
    assert all(_scale(served(dataset, 0)) == 32 for _ in range(20))  # always replaced, drawn at 32
    assert data.val_dataloader().dataset.view.high_res_pool(dataset) == [i for i in val if i >= 16]
