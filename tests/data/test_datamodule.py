"""FieldDataModule: deterministic split, fixed validation examples, workers, batches of FieldBatch."""

import lightning.pytorch as pl
import pytest
import torch

from rezdiff.data.batch import FieldBatch
from rezdiff.data.datamodule import FieldDataModule, SampledDataset
from rezdiff.data.datasets import Synthetic
from rezdiff.data.samplers import FullGrid, RandomPixels


def _module(**overrides):
    options = {
        "dataset": Synthetic(num_images=20, resolution=16),
        "sampler": RandomPixels(16, 0.25),
        "batch_size": 4,
        "val_fraction": 0.25,
        "seed": 5,
    }
    options.update(overrides)
    return FieldDataModule(**options)


def test_split_is_deterministic_disjoint_and_complete():
    train, val = _module().split()
    assert len(val) == 5 and len(train) == 15
    assert sorted(train + val) == list(range(20))
    assert train == sorted(train) and val == sorted(val)
    assert _module().split() == (train, val)
    assert _module(seed=6).split()[1] != val
    # at least one validation image whenever validation is asked for and possible
    assert len(_module(dataset=Synthetic(num_images=2), val_fraction=0.01).split()[1]) == 1
    assert _module(dataset=Synthetic(num_images=1)).split() == ([0], [])


def test_validation_batches_identical_across_epochs_and_modules():
    def collect(module):
        module.setup("fit")
        return [batch for batch in module.val_dataloader()]

    module = _module()
    first, second, other = collect(module), collect(module), collect(_module())
    assert [b.batch_size for b in first] == [4, 1]
    for a, b, c in zip(first, second, other, strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.index, c.index)
        assert torch.equal(a.image, c.image) and torch.equal(a.coords, c.coords)
    # the example depends on (seed, image index) only, not on its position in a loader
    val = module.split()[1]
    alone = SampledDataset(module.dataset, [val[3]], module.sampler, seed=5)[0]
    assert torch.equal(alone.index, first[0].index[3])


def test_training_batches_are_random_and_stacked():
    module = _module(sampler=RandomPixels(16, 0.5), val_sampler=FullGrid(16), val_batch_size=2)
    module.setup("fit")
    loader = module.train_dataloader()
    assert loader.drop_last and len(loader) == 3  # 15 images, batches of 4
    epoch_one, epoch_two = list(loader), list(loader)
    batch = epoch_one[0]
    assert isinstance(batch, FieldBatch)
    assert batch.image.shape == (4, 3, 16, 16)
    assert (
        batch.index.shape == (4, 128)
        and batch.coords.shape == (4, 128, 2)
        and batch.cell.shape == (4, 128, 2)
    )
    assert not all(torch.equal(a.index, b.index) for a, b in zip(epoch_one, epoch_two, strict=True))
    val_batch = next(iter(module.val_dataloader()))
    assert val_batch.image.shape == (2, 3, 16, 16) and val_batch.index is None
    # a training split smaller than the batch size still yields a (short) batch
    small = _module(dataset=Synthetic(num_images=4, resolution=16), batch_size=8)
    small.setup("fit")
    assert [b.batch_size for b in small.train_dataloader()] == [3]


def test_no_validation_when_fraction_is_zero():
    module = _module(val_fraction=0.0)
    module.setup("fit")
    assert module.split()[1] == [] and module.val_dataloader() == []
    assert len(module.train_dataloader().dataset) == 20


def test_test_and_predict_use_the_validation_split():
    module = _module()
    module.setup("test")
    assert module.test_dataloader().dataset.indices == module.split()[1]
    assert module.predict_dataloader().dataset.indices == module.split()[1]


def test_workers_load_batches():
    module = _module(num_workers=2)
    module.setup("fit")
    loader = module.train_dataloader()
    assert loader.persistent_workers
    batch = next(iter(loader))
    assert isinstance(batch, FieldBatch) and batch.image.shape == (4, 3, 16, 16)
    val = next(iter(module.val_dataloader()))
    reference = next(iter(_module().val_dataloader()))
    assert torch.equal(val.index, reference.index)  # workers see the same validation examples


def test_invalid_arguments():
    for options in ({"batch_size": 0}, {"num_workers": -1}, {"val_fraction": 1.0}, {"val_fraction": -0.1}):
        with pytest.raises(ValueError):
            _module(**options)


class _TinyModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 1)
        self.val_sums = []

    def training_step(self, batch, batch_idx):
        return (self.net(batch.image) - batch.image).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.val_sums.append(batch.values().sum().item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_fits_with_a_lightning_trainer(val_fraction):
    model = _TinyModel()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module = _module(val_fraction=val_fraction)
    trainer.fit(model, datamodule=module)
    assert trainer.global_step == 2 * (len(module.split()[0]) // 4)
    if val_fraction:
        assert len(model.val_sums) == 4 and model.val_sums[:2] == model.val_sums[2:]
    else:
        assert model.val_sums == []
