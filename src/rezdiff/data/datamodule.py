"""``FieldDataModule``: one dataset, one sampler, a deterministic train/validation split."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset, read_split_file, stable_seed
from rezdiff.data.samplers import FieldSampler


class SampledDataset(Dataset[FieldBatch]):
    """The examples that ``sampler`` makes from ``dataset[indices]``.

    With ``seed=None`` the sampler draws from the global torch RNG (training: a fresh example each epoch);
    with a seed, example ``k`` always uses a generator seeded from ``(seed, indices[k])``, so it is the
    same in every epoch, worker and rank (validation).
    """

    def __init__(
        self, dataset: FieldDataset, indices: Sequence[int], sampler: FieldSampler, seed: int | None = None
    ) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.sampler = sampler.restricted_to(self.indices)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> FieldBatch:
        index = self.indices[position]
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, index))
        return self.sampler(self.dataset, index, generator)


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
    ) -> None:
        super().__init__()
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
        return SampledDataset(self.dataset, self.split()[0], self.sampler, seed=None)

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
