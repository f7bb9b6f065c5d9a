"""``FieldDataModule``: one dataset, one data view, a deterministic train/validation split."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from rezdiff.data import coords
from rezdiff.data.batch import FieldBatch
from rezdiff.data.datasets import FieldDataset, read_split_file, stable_seed
from rezdiff.data.views import FieldView


def _check_hflip(hflip: float) -> None:
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip} (0.5: the papers' random flip)")


class Mirrored:
    """``dataset`` seen in a mirror: every image and every rendering flipped left to right (the field
    ``f(-x, y)``), so a view that renders or crops it draws from the mirror image."""

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
    """The examples that the data view ``view`` makes from ``dataset[indices]``, each from the mirror image
    with probability ``hflip``.

    With ``seed=None`` the view (and the mirror draw) use the global torch RNG (training: a fresh example
    each epoch); with a seed, example ``k`` always uses a generator seeded from ``(seed, indices[k])``, so it
    is the same in every epoch, worker and rank (validation).
    """

    def __init__(
        self,
        dataset: FieldDataset,
        indices: Sequence[int],
        view: FieldView,
        seed: int | None = None,
        hflip: float = 0.0,
    ) -> None:
        _check_hflip(hflip)
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.view = view.restricted_to(self.indices)
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
        return self.view(dataset, index, generator)


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


RENAMED_KEYS = {"sampler": "view", "val_sampler": "val_view"}
"""The data module's arguments that were renamed (old: new); the old ones are accepted until the next
release (``sampler`` also named the diffusion sampler of the ``model:`` section)."""


def _warn_renamed_attribute(name: str) -> None:
    """The DeprecationWarning of reading a renamed attribute (``datamodule.sampler``) from code."""
    warnings.warn(
        f"FieldDataModule.{name} is renamed FieldDataModule.{RENAMED_KEYS[name]}; the old name will be "
        "removed in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


def _renamed_views(
    given: dict[str, FieldView | None], old: dict[str, FieldView | None]
) -> dict[str, FieldView | None]:
    """The data views by their new names (:data:`RENAMED_KEYS`), taking an old key's value with one
    FutureWarning (shown by default: whoever runs an old config must see it) for all the old keys used;
    an old key given with its new one is a ValueError."""
    used = [name for name, value in old.items() if value is not None]
    for name in used:
        if given[RENAMED_KEYS[name]] is not None:
            raise ValueError(
                f"data.init_args.{name} and data.init_args.{RENAMED_KEYS[name]} are both set, but {name} is "
                f"the old name of {RENAMED_KEYS[name]}; keep only data.init_args.{RENAMED_KEYS[name]}"
            )
    if used:
        olds = " and ".join(f"data.init_args.{name}" for name in used)
        news = " and ".join(f"data.init_args.{RENAMED_KEYS[name]}" for name in used)
        verb, noun = ("are", "keys") if len(used) > 1 else ("is", "key")
        rank_zero_warn(
            f"{olds} {verb} renamed {news}; the old {noun} will be removed in the next release",
            category=FutureWarning,
        )
    return {new: given[new] if given[new] is not None else old[name] for name, new in RENAMED_KEYS.items()}


class FieldDataModule(pl.LightningDataModule):
    """Train/validation loaders of :class:`FieldBatch` examples for every model family.

    ``view`` is the data view (:mod:`rezdiff.data.views`: ``FullGrid``, ``RandomPixels``, ``Levels``,
    ``MultiScalePatches``, ...) that turns an image into a training example.
    The split is a permutation seeded by ``seed`` (``val_fraction`` of the images, at least one when
    ``val_fraction > 0`` and there are two or more). The training order is shuffled by ``(seed, epoch)``
    (:class:`EpochShuffle`); training examples are random (global RNG, seeded per worker by torch);
    validation examples are fixed by ``(seed, index)``. ``val_view`` and ``val_batch_size`` default to
    the training ones. Test and predict use the validation split.
    ``split_file`` replaces the random split (and ``val_fraction``) by fixed lists of images
    (:func:`rezdiff.data.datasets.read_split_file`: relative paths per split, matched against the dataset's
    ``relative_paths()``, e.g. :class:`~rezdiff.data.ImageFolder`); images the file does not list are used
    by neither split, and a listed image missing from the dataset is an error.
    ``hflip`` is the probability that a training example is drawn from the image's mirror image (the
    papers' random horizontal flip; validation, test and predict never flip).
    ``sampler`` and ``val_sampler`` are the old names of ``view`` and ``val_view`` (deprecated, with a
    FutureWarning; removed in the next release). ``view`` is optional in the signature only so that a
    config with the old key still parses; one of the two is required.
    Hyperparameters are not saved here: the CLI records the whole config.
    """

    def __init__(
        self,
        dataset: FieldDataset,
        view: FieldView | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        val_view: FieldView | None = None,
        val_batch_size: int | None = None,
        split_file: str | None = None,
        hflip: float = 0.0,
        *,
        sampler: FieldView | None = None,
        val_sampler: FieldView | None = None,
    ) -> None:
        super().__init__()
        views = _renamed_views(
            {"view": view, "val_view": val_view}, {"sampler": sampler, "val_sampler": val_sampler}
        )
        view, val_view = views["view"], views["val_view"]
        if view is None:
            raise ValueError(
                "FieldDataModule needs a data view: set data.init_args.view, e.g. "
                "{class_path: rezdiff.data.FullGrid, init_args: {resolution: 32}}"
            )
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
        self.view = view
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.val_view = val_view if val_view is not None else view
        self.val_batch_size = val_batch_size if val_batch_size is not None else batch_size
        self.split_file = split_file
        self.hflip = hflip
        self._split: tuple[list[int], list[int]] | None = None

    @property
    def sampler(self) -> FieldView:
        """Deprecated: the old name of :attr:`view` (removed in the next release)."""
        _warn_renamed_attribute("sampler")
        return self.view

    @property
    def val_sampler(self) -> FieldView:
        """Deprecated: the old name of :attr:`val_view` (removed in the next release)."""
        _warn_renamed_attribute("val_sampler")
        return self.val_view

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
        return SampledDataset(self.dataset, self.split()[0], self.view, seed=None, hflip=self.hflip)

    def val_dataset(self) -> SampledDataset:
        return SampledDataset(self.dataset, self.split()[1], self.val_view, seed=self.seed)

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
