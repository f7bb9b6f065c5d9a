"""FieldDataModule: deterministic split, fixed validation examples, workers, batches of FieldBatch."""

import lightning.pytorch as pl
import pytest
import torch

from rezdiff.data.batch import FieldBatch
from rezdiff.data.datamodule import FieldDataModule, SampledDataset
from rezdiff.data.synthetic import Synthetic
from rezdiff.data.views import FullGrid, RandomPixels
from tests.helpers import quiet_trainer


def _module(**overrides):
    options = {
        "dataset": Synthetic(num_images=20, resolution=16),
        "view": RandomPixels(16, 0.25),
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
    alone = SampledDataset(module.dataset, [val[3]], module.view, seed=5)[0]
    assert torch.equal(alone.index, first[0].index[3])


def test_training_batches_are_random_and_stacked():
    module = _module(view=RandomPixels(16, 0.5), val_view=FullGrid(16), val_batch_size=2)
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
    trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=0)
    module = _module(val_fraction=val_fraction)
    trainer.fit(model, datamodule=module)
    assert trainer.global_step == 2 * (len(module.split()[0]) // 4)
    if val_fraction:
        assert len(model.val_sums) == 4 and model.val_sums[:2] == model.val_sums[2:]
    else:
        assert model.val_sums == []


def _folder(tmp_path, names):
    from rezdiff.data.images import save_image

    for name in names:
        save_image(torch.zeros(3, 4, 4), tmp_path / "images" / name)
    return tmp_path / "images"


def test_split_file_fixes_the_split_by_relative_paths(tmp_path):
    import gzip

    from rezdiff.data.datasets import ImageFolder

    root = _folder(tmp_path, ["a.png", "b.png", "sub/c.png", "d.png", "unlisted.png"])
    dataset = ImageFolder(str(root))
    assert dataset.relative_paths() == ["a.png", "b.png", "d.png", "sub/c.png", "unlisted.png"]
    text = "# provenance\n[train]\nd.png\na.png\n\n[val]\nsub/c.png\n[train]\nb.png\n"
    plain = tmp_path / "split.txt"
    plain.write_text(text)
    packed = tmp_path / "split.txt.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for split_file in (plain, packed):
        module = FieldDataModule(dataset, FullGrid(4), val_fraction=0.5, split_file=str(split_file))
        assert module.split() == ([0, 1, 2], [3])  # listed images only; val_fraction is not used
        assert module.val_dataset().indices == [3]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[train]\na.png\nmissing.png\n", r"1 of the 2 images listed .* \(first: 'missing.png'\); point"),
        ("[test]\na.png\n", r"unknown split \[test\]"),
        ("a.png\n", "before any"),
        ("[train]\na.png\n[val]\na.png\n", "listed twice"),
        ("# nothing\n", "lists no images"),
    ],
)
def test_split_file_errors_are_one_line(tmp_path, text, match):
    from rezdiff.data.datasets import ImageFolder

    split_file = tmp_path / "split.txt"
    split_file.write_text(text)
    module = FieldDataModule(
        ImageFolder(str(_folder(tmp_path, ["a.png"]))), FullGrid(4), split_file=str(split_file)
    )
    with pytest.raises(ValueError, match=match) as error:
        module.split()
    assert "\n" not in str(error.value)


def test_split_file_needs_named_images():
    with pytest.raises(ValueError, match="relative_paths"):
        _module(split_file="unused.txt").split()
    with pytest.raises(FileNotFoundError, match="split file"):
        FieldDataModule(_folder_free_dataset(), FullGrid(4), split_file="/no/such/split.txt").split()


def _folder_free_dataset():
    class Named(Synthetic):
        def relative_paths(self):
            return [f"{i:05d}.png" for i in range(len(self))]

    return Named(num_images=3, resolution=4)


def test_ffhq_configs_use_the_ldm_split_file():
    import yaml

    from rezdiff.data.datasets import read_split_file
    from tests.helpers import REPO

    for name in ("infd_ffhq.yaml", "infd_ffhq_latent.yaml"):
        data = yaml.safe_load((REPO / "configs" / name).read_text())["data"]["init_args"]
        assert data["split_file"] == "configs/splits/ffhq_ldm.txt.gz", name
    splits = read_split_file(REPO / "configs" / "splits" / "ffhq_ldm.txt.gz")
    assert (len(splits["train"]), len(splits["val"])) == (60000, 10000)
    assert sorted(splits["train"] + splits["val"]) == [f"{i:05d}.png" for i in range(70000)]
    # the LDM list is a fixed random partition, not 00000-59999 / 60000-69999
    assert {"00000.png", "00007.png", "00014.png"} <= set(splits["val"]) and "00001.png" in splits["train"]


def test_hflip_draws_training_examples_from_the_mirror_image():
    """hflip=1 mirrors every training example (through rendering views too: the pixels RandomPixels picks
    are those of the mirror image), hflip=0.5 about half of them, validation never; out of range is an
    error naming the option."""
    dataset = Synthetic(num_images=8, resolution=16, seed=3)
    assert not torch.equal(dataset[0], dataset[0].flip(-1))
    for view in (FullGrid(16), RandomPixels(16, fraction=0.25)):
        module = FieldDataModule(dataset, view, batch_size=4, val_fraction=0.25, hflip=1.0)
        train = module.train_dataset()
        for position, index in enumerate(train.indices):
            torch.testing.assert_close(train[position].image, dataset.render(index, 16).flip(-1))
        val = module.val_dataset()
        torch.testing.assert_close(val[0].image, dataset.render(val.indices[0], 16))
    half = FieldDataModule(dataset, FullGrid(16), val_fraction=0.0, hflip=0.5).train_dataset()
    torch.manual_seed(0)
    flips = [torch.equal(half[0].image, dataset[half.indices[0]].flip(-1)) for _ in range(200)]
    assert abs(sum(flips) - 100) < 29  # 4 standard deviations of Binomial(200, 1/2)
    with pytest.raises(ValueError, match=r"hflip is a probability in \[0, 1\], got 1.5"):
        FieldDataModule(dataset, FullGrid(16), hflip=1.5)
