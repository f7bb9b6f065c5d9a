"""``FieldDataModule``: one dataset, one sampler, a deterministic train/validation split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset, read_split_file, stable_seed
from rezdiff.data.samplers import FieldSampler


def _check_hflip(hflip: float) -> None:
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip} (0.5: the papers' random flip)")


class Mirrored:
    """``dataset`` seen in a mirror: every image and every rendering flipped left to right (the field
    ``f(-x, y)``), so a sampler that renders or crops it draws from the mirror image."""

    def __init__(self, dataset: FieldDataset) -> None:
        self.dataset = dataset

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        return self.dataset[index].flip(-1)

    def render(self, index: int, resolution: coords.Resolution) -> Tensor:
        return self.dataset.render(index, resolution).flip(-1)


class SampledDataset(Dataset[FieldBatch]):
    """The examples that ``sampler`` makes from ``dataset[indices]``, each from the mirror image with
    probability ``hflip``.

    With ``seed=None`` the sampler (and the mirror draw) use the global torch RNG (training: a fresh example
    each epoch); with a seed, example ``k`` always uses a generator seeded from ``(seed, indices[k])``, so it
    is the same in every epoch, worker and rank (validation).
    """

    def __init__(
        self,
        dataset: FieldDataset,
        indices: Sequence[int],
        sampler: FieldSampler,
        seed: int | None = None,
        hflip: float = 0.0,
    ) -> None:
        _check_hflip(hflip)
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.sampler = sampler.restricted_to(self.indices)
        self.seed = seed
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> FieldBatch:
        index = self.indices[position]
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, index))
        dataset: Any = self.dataset
        if self.hflip > 0 and float(torch.rand((), generator=generator)) < self.hflip:
            dataset = Mirrored(self.dataset)
        return self.sampler(dataset, index, generator)


class EpochShuffle(RandomSampler):
    """A shuffle whose order is a function of ``(seed, epoch)`` only, so a resumed run sees the same order.

    Lightning calls ``set_epoch`` at the start of every epoch; under DDP it replaces any ``RandomSampler``
    by a ``DistributedSampler``, which is seeded by epoch in the same way.
    """

    def __init__(self, data_source: Sequence[object], seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # type: ignore[override]
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class FieldDataModule(pl.LightningDataModule):
    """Train/validation loaders of :class:`FieldBatch` examples for every model family.

    The split is a permutation seeded by ``seed`` (``val_fraction`` of the images, at least one when
    ``val_fraction > 0`` and there are two or more). The training order is shuffled by ``(seed, epoch)``
    (:class:`EpochShuffle`); training examples are random (global RNG, seeded per worker by torch);
    validation examples are fixed by ``(seed, index)``. ``val_sampler`` and ``val_batch_size`` default to
    the training ones. Test and predict use the validation split.
    ``split_file`` replaces the random split (and ``val_fraction``) by fixed lists of images
    (:func:`rezdiff.data.datasets.read_split_file`: relative paths per split, matched against the dataset's
    ``relative_paths()``, e.g. :class:`~rezdiff.data.ImageFolder`); images the file does not list are used
    by neither split, and a listed image missing from the dataset is an error.
    ``hflip`` is the probability that a training example is drawn from the image's mirror image (the
    papers' random horizontal flip; validation, test and predict never flip).
    Hyperparameters are not saved here: the CLI records the whole config.
    """

    def __init__(
        self,
        dataset: FieldDataset,
        sampler: FieldSampler,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        val_sampler: FieldSampler | None = None,
        val_batch_size: int | None = None,
        split_file: str | None = None,
        hflip: float = 0.0,
    ) -> None:
        super().__init__()
        _check_hflip(hflip)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if val_batch_size is not None and val_batch_size < 1:
            raise ValueError(f"val_batch_size must be >= 1 or None, got {val_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.val_sampler = val_sampler if val_sampler is not None else sampler
        self.val_batch_size = val_batch_size if val_batch_size is not None else batch_size
        self.split_file = split_file
        self.hflip = hflip
        self._split: tuple[list[int], list[int]] | None = None

    @property
    def channels(self) -> int:
        return self.dataset.channels

    def split(self) -> tuple[list[int], list[int]]:
        """``(train_indices, val_indices)``, each sorted and disjoint; together every index of the dataset,
        unless ``split_file`` lists only some of its images."""
        if self._split is None and self.split_file is not None:
            self._split = self._listed_split(self.split_file)
        if self._split is None:
            length = len(self.dataset)
            num_val = 0
            if self.val_fraction > 0 and length >= 2:
                num_val = min(length - 1, max(1, int(length * self.val_fraction)))
            order = torch.randperm(length, generator=torch.Generator().manual_seed(self.seed)).tolist()
            self._split = (sorted(order[num_val:]), sorted(order[:num_val]))
        return self._split

    def _listed_split(self, split_file: str) -> tuple[list[int], list[int]]:
        relative_paths = getattr(self.dataset, "relative_paths", None)
        if relative_paths is None:
            raise ValueError(
                f"split_file needs a dataset with relative_paths() (e.g. ImageFolder), got "
                f"{type(self.dataset).__name__}; remove split_file to split by val_fraction"
            )
        position = {path: index for index, path in enumerate(relative_paths())}
        listed = read_split_file(split_file)
        missing = [path for paths in listed.values() for path in paths if path not in position]
        if missing:
            total = sum(len(paths) for paths in listed.values())
            root = getattr(self.dataset, "root", "the dataset")
            raise ValueError(
                f"{len(missing)} of the {total} images listed in {split_file} are not in {str(root)!r} "
                f"(first: {missing[0]!r}); point the dataset's root at the folder holding them by these names"
            )
        train, val = (sorted(position[path] for path in listed[name]) for name in ("train", "val"))
        return train, val

    def setup(self, stage: str | None = None) -> None:
        self.split()

    def train_dataset(self) -> SampledDataset:
        return SampledDataset(self.dataset, self.split()[0], self.sampler, seed=None, hflip=self.hflip)

    def val_dataset(self) -> SampledDataset:
        return SampledDataset(self.dataset, self.split()[1], self.val_sampler, seed=self.seed)

    def _loader(self, dataset: SampledDataset, batch_size: int, train: bool) -> DataLoader[FieldBatch]:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffle(dataset, self.seed) if train else None,
            drop_last=train and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=FieldBatch.collate,
        )

    def train_dataloader(self) -> DataLoader[FieldBatch]:
        return self._loader(self.train_dataset(), self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader[FieldBatch] | list[DataLoader[FieldBatch]]:
        dataset = self.val_dataset()
        if len(dataset) == 0:
            return []
        return self._loader(dataset, self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader[FieldBatch] | list[DataLoader[FieldBatch]]:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader[FieldBatch] | list[DataLoader[FieldBatch]]:
        return self.val_dataloader()
