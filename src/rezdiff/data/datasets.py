"""Datasets of images (fields on ``[-1, 1]^2``): folders on disk and bundled data (the procedural set is in
:mod:`rezdiff.data.synthetic`, the photograph regions in :mod:`rezdiff.data.photographs`).

Every dataset returns ``[C, H, W]`` float tensors in ``[-1, 1]`` at the image's native size from
``dataset[i]`` and can ``render(i, resolution)`` the same image at any size; data views
(:mod:`rezdiff.data.views`) call ``render`` to turn an image into a training example.

(Over ~400 lines: ``ImageFolder`` alone is about 200 of them, because the ways a folder of user files can
be wrong (corrupt, empty or non-image files, bad options) are checked there by its verification pass, each
with a one-line message; the base class and ``Bundled`` share its resize and crop options.)
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from rezdiff.data import coords
from rezdiff.data.images import (
    Channels,
    ResizeMethod,
    UnreadableImageError,
    decode_image,
    from_array,
    image_size,
    load_image,
    resize,
)

logger = logging.getLogger(__name__)

Crop = Literal["none", "center"]

ROOT_HINT = "set --data.init_args.dataset.init_args.root to a folder of images"

#: ``ImageFolder(verify=None)`` decodes every image at setup for folders of at most this many images; larger
#: folders are verified only when asked. Measured under load on two shared cores: 300 ``Synthetic`` 256x256
#: PNGs took 0.5 s of CPU time (3.6 s wall), so the limit costs about half a minute of CPU for such images.
VERIFY_AUTO_LIMIT = 20_000
#: How many bad files the verification error names before "and K more".
_LISTED_BAD_FILES = 10


def stable_seed(*parts: int) -> int:
    """A 63-bit seed from integers, identical in every process and Python run (unlike ``hash``)."""
    digest = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def center_crop_to_aspect(image: Tensor, resolution: coords.Resolution) -> Tensor:
    """The largest centred crop of ``image [..., H, W]`` with the aspect ratio of ``resolution``."""
    height, width = image.shape[-2:]
    target_h, target_w = coords.as_hw(resolution)
    if height * target_w > width * target_h:  # too tall
        new_h, new_w = max(1, round(width * target_h / target_w)), width
    else:
        new_h, new_w = height, max(1, round(height * target_w / target_h))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return image[..., top : top + new_h, left : left + new_w]


class FieldDataset(Dataset[Tensor], ABC):
    """Base class: images as fields on ``[-1, 1]^2`` that can be rendered at any resolution.

    Subclasses set ``channels`` and implement ``__len__`` and ``__getitem__`` (native size). ``render``
    resizes the native image (``resize_method``; with ``crop="center"`` after a centred crop to the target
    aspect ratio, otherwise stretching); datasets that can render exactly override it.
    """

    channels: int
    resize_method: ResizeMethod = "bicubic"
    crop: Crop = "none"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Tensor: ...

    def native_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of image ``index`` at its native size."""
        height, width = self[index].shape[-2:]
        return int(height), int(width)

    def render(self, index: int, resolution: coords.Resolution) -> Tensor:
        """Image ``index`` as ``[C, H, W]`` at ``resolution`` (int or ``(H, W)``)."""
        image = self[index]
        if self.crop == "center":
            image = center_crop_to_aspect(image, resolution)
        else:
            self._warn_if_stretched(index, tuple(image.shape[-2:]), resolution)
        return resize(image, resolution, self.resize_method)

    def _warn_if_stretched(self, index: int, size: tuple[int, ...], resolution: coords.Resolution) -> None:
        """Log one warning per dataset (and per DataLoader worker process) when ``crop="none"`` is about to
        stretch an image whose aspect ratio differs from the target's by more than 1 %."""
        if getattr(self, "_stretch_warned", False):
            return
        height, width = size
        target_h, target_w = coords.as_hw(resolution)
        if abs(height * target_w - width * target_h) <= 0.01 * height * target_w:
            return
        self._stretch_warned = True
        logger.warning(
            "%s: crop='none' stretches image %d (%dx%d) to %dx%d, distorting its aspect ratio; set "
            "crop: center on the dataset to crop it instead",
            type(self).__name__,
            index,
            height,
            width,
            target_h,
            target_w,
        )

    def _check_index(self, index: int) -> int:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {length}")
        return index % length


def _check_options(channels: int, resize_method: str, crop: str) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if resize_method not in ("area", "bicubic", "lanczos"):
        raise ValueError(f"resize_method must be 'area', 'bicubic' or 'lanczos', got {resize_method!r}")
    if crop not in ("none", "center"):
        raise ValueError(f"crop must be 'none' or 'center', got {crop!r}")


# --------------------------------------------------------------------------------------------- ImageFolder


class ImageFolder(FieldDataset):
    """Every image under ``root`` (recursively, sorted by relative path), each at its own size.

    Hidden files and folders (names starting with ``.``) are ignored. ``max_images`` keeps the first images
    in sorted order. ``verify`` decodes every image once here, with a progress bar, so that a corrupt file
    (truncated, empty, not an image, a broken zlib stream behind valid CRCs) stops setup rather than a
    training run: ``None`` (default) verifies folders of up to :data:`VERIFY_AUTO_LIMIT` images.
    ``on_error="raise"`` reports every bad file found by the verification in one ``ValueError`` (and, without
    it, an unreadable image when it is read); ``on_error="skip"`` always verifies (so indices are stable and
    DataLoader workers agree), leaves the bad files out and logs one warning.
    """

    def __init__(
        self,
        root: str,
        channels: Channels = 3,
        extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
        on_error: Literal["raise", "skip"] = "raise",
        max_images: int | None = None,
        resize_method: ResizeMethod = "bicubic",
        crop: Crop = "none",
        verify: bool | None = None,
    ) -> None:
        _check_options(channels, resize_method, crop)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if on_error == "skip" and verify is False:
            raise ValueError(
                "on_error='skip' decodes every image at setup to leave the bad ones out; remove "
                "verify: false or set on_error: raise"
            )
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        self.root = Path(root).expanduser()
        self.channels = channels
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.on_error = on_error
        self.resize_method = resize_method
        self.crop = crop

        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise FileNotFoundError(f"image folder {str(self.root)!r} {what}; {ROOT_HINT}")
        paths = self._scan()
        if not paths:
            raise FileNotFoundError(
                f"no images with extensions {list(self.extensions)} under {str(self.root)!r}; {ROOT_HINT}"
            )
        self.skipped: list[tuple[Path, str]] = []
        kept = paths[:max_images] if max_images is not None else paths
        if on_error == "skip":
            paths = self._drop_unreadable(paths, max_images)
        elif verify or (verify is None and len(kept) <= VERIFY_AUTO_LIMIT):
            self._check_readable(kept)
        self.paths: list[Path] = paths[:max_images] if max_images is not None else paths

    def relative_paths(self) -> list[str]:
        """Each image's path relative to ``root`` (POSIX separators), in index order: the names a split file
        (:func:`read_split_file`) lists."""
        return [path.relative_to(self.root).as_posix() for path in self.paths]

    def _scan(self) -> list[Path]:
        """Every image under ``root``, following symbolic links to folders but reading each real folder
        once: a link loop (``a/b -> a``) would otherwise never end, and a link back to a parent would
        repeat its images once per level of the walk."""
        found: list[tuple[str, Path]] = []
        seen: set[tuple[int, int]] = set()
        repeated: list[str] = []
        for directory, subdirs, files in os.walk(self.root, followlinks=True):
            status = os.stat(directory)
            if (status.st_dev, status.st_ino) in seen:
                subdirs[:] = []
                repeated.append(Path(directory).relative_to(self.root).as_posix())
                continue
            seen.add((status.st_dev, status.st_ino))
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in files:
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in self.extensions:
                    path = Path(directory, name)
                    found.append((path.relative_to(self.root).as_posix(), path))
        if repeated:
            logger.warning(
                "ImageFolder: %d linked folder(s) under %s lead to folders already read and were skipped "
                "(symbolic-link loop or second link), e.g. %s",
                len(repeated),
                self.root,
                repeated[0],
            )
        return [path for _, path in sorted(found)]

    def _verify(self, paths: list[Path], wanted: int | None = None) -> list[Path]:
        """Decode ``paths`` fully (threads, progress bar), record the bad ones in ``self.skipped`` and return
        the good ones; stops once ``wanted`` good images are found."""
        from tqdm.auto import tqdm

        def check(path: Path) -> str | None:
            try:
                decode_image(path)
            except (UnreadableImageError, OSError) as error:
                return getattr(error, "reason", str(error))
            return None

        kept: list[Path] = []
        chunk = 256  # verify in chunks so max_images stops early on huge folders
        show = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
        bar = tqdm(
            total=len(paths),
            desc=f"verifying {self.root.name or self.root}",
            unit="img",
            disable=None if show else True,
        )
        with bar, ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(paths), chunk):
                batch = paths[start : start + chunk]
                for path, reason in zip(batch, pool.map(check, batch), strict=True):
                    if reason is None:
                        kept.append(path)
                    else:
                        self.skipped.append((path, reason))
                bar.update(len(batch))
                if wanted is not None and len(kept) >= wanted:
                    break
        return kept

    def _check_readable(self, paths: list[Path]) -> None:
        """Raise one ``ValueError`` naming every image of ``paths`` that does not decode."""
        self._verify(paths)
        if not self.skipped:
            return
        listed = "; ".join(
            f"{path.relative_to(self.root).as_posix()} ({reason})"
            for path, reason in self.skipped[:_LISTED_BAD_FILES]
        )
        more = len(self.skipped) - _LISTED_BAD_FILES
        raise ValueError(
            f"{len(self.skipped)} of {len(paths)} images under {str(self.root)!r} cannot be decoded: {listed}"
            + (f"; and {more} more" if more > 0 else "")
            + "; replace or remove them, or set on_error: skip to leave them out"
        )

    def _drop_unreadable(self, paths: list[Path], max_images: int | None) -> list[Path]:
        kept = self._verify(paths, max_images)
        if self.skipped:
            first, reason = self.skipped[0]
            logger.warning(
                "skipped %d unreadable images under %s, e.g. %s (%s)",
                len(self.skipped),
                self.root,
                first,
                reason,
            )
        if not kept:
            raise FileNotFoundError(f"no readable images under {str(self.root)!r}; {ROOT_HINT}")
        return kept

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return load_image(self.paths[self._check_index(index)], self.channels)

    def native_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` read from the file header, without decoding the image."""
        return image_size(self.paths[self._check_index(index)])

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, images={len(self)}, channels={self.channels})"


# ------------------------------------------------------------------------------------------------- Bundled

BundledName = Literal[
    "lfw",
    "digits",
    "sample_images",
    "photos",
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
]

# The colour photographs among scikit-image's bundled images (mixed resolutions).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "hubble_deep_field")


def _skimage(name: str) -> Callable[[], list[np.ndarray]]:
    def load() -> list[np.ndarray]:
        import skimage.data

        return [getattr(skimage.data, name)()]

    return load


def _lfw() -> list[np.ndarray]:
    import skimage.data

    return list(skimage.data.lfw_subset()[:100])  # the first 100 are the faces, the rest non-faces


def _digits() -> list[np.ndarray]:
    from sklearn.datasets import load_digits

    return list(load_digits().images / 16.0)  # pixel values 0..16


def _sample_images() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def _photos() -> list[np.ndarray]:
    return [image for name in PHOTOS for image in _skimage(name)()]


_BUNDLED_LOADERS: dict[str, Callable[[], list[np.ndarray]]] = {
    "lfw": _lfw,
    "digits": _digits,
    "sample_images": _sample_images,
    "photos": _photos,
}


class Bundled(FieldDataset):
    """Images shipped inside installed wheels (scikit-image, scikit-learn); nothing is downloaded.

    ``"lfw"``: 100 grey 25x25 faces; ``"digits"``: 1797 grey 8x8 digits; ``"sample_images"``: scikit-learn's
    two 427x640 photos; ``"photos"``: scikit-image's seven colour photos (mixed sizes); any other name is
    that single scikit-image image. Grey images are replicated to 3 channels (or colour reduced to luma) as
    ``channels`` asks. Loaded on first use and kept in memory (not pickled: workers load their own copy).
    """

    def __init__(
        self,
        name: BundledName,
        channels: Channels = 3,
        resize_method: ResizeMethod = "bicubic",
        crop: Crop = "none",
    ) -> None:
        _check_options(channels, resize_method, crop)
        if name not in BundledName.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"unknown bundled dataset {name!r}; choose one of {list(BundledName.__args__)}")  # type: ignore[attr-defined]
        self.name = name
        self.channels = channels
        self.resize_method = resize_method
        self.crop = crop
        self._images: list[Tensor] | None = None

    @property
    def images(self) -> list[Tensor]:
        if self._images is None:
            load = _BUNDLED_LOADERS.get(self.name) or _skimage(self.name)
            self._images = [from_array(np.asarray(array), self.channels) for array in load()]
        return self._images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[self._check_index(index)].clone()  # callers may edit it; the cache stays intact

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __repr__(self) -> str:
        return f"Bundled(name={self.name!r}, channels={self.channels})"


SPLITS = ("train", "val")


def read_split_file(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """A split file's image lists, ``{"train": [...], "val": [...]}``, paths relative to a dataset's root.

    Format (plain text, or gzip-compressed when the name ends in ``.gz``): a line ``[train]`` or ``[val]``
    starts that split's section, every other non-empty line is one relative path (POSIX separators) of that
    split; lines starting with ``#`` are comments (e.g. where the list came from). A path may appear once.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"split file {str(file)!r} does not exist; set split_file to a list of images"
        )
    with (
        gzip.open(file, "rt", encoding="utf-8") if file.suffix == ".gz" else file.open(encoding="utf-8")
    ) as f:
        lines = f.read().splitlines()
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    current: str | None = None
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            if current not in splits:
                raise ValueError(f"{file}:{number}: unknown split [{current}]; use [train] or [val]")
            continue
        if current is None:
            raise ValueError(f"{file}:{number}: path {line!r} before any [train] or [val] header")
        if line in seen:
            raise ValueError(f"{file}:{number}: {line!r} is listed twice; each image belongs to one split")
        seen.add(line)
        splits[current].append(line)
    if not seen:
        raise ValueError(f"split file {str(file)!r} lists no images")
    return splits
