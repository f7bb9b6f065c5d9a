"""``Photographs``: fixed square regions of scikit-image's colour photographs, rendered from the source.

Every region is a ``REGION_SIZE``-pixel square cut from a photograph that ships inside the scikit-image
wheel (read from its ``skimage/data`` folder by file path, so nothing is ever downloaded). A render at
``R x R`` is the exact area average of the source pixels over each of the ``R x R`` cells, so a 2x render
carries the source's detail rather than an upsampled 1x one, and box-averaging a 2R render gives the R one.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from rezdiff.data import coords
from rezdiff.data.datasets import FieldDataset, _check_options
from rezdiff.data.images import _LUMA, Channels

#: Side of every region in source pixels: a 32x32 render averages 8x8 source pixels per cell.
REGION_SIZE = 256
#: Region ``i`` (in the global order of :data:`REGIONS`) is held out when ``i % HELD_OUT_EVERY`` is
#: ``HELD_OUT_EVERY - 1``: a fixed quarter of the regions, spread over the photographs.
HELD_OUT_EVERY = 4

PhotographSplit = Literal["train", "held_out", "all"]


@dataclass(frozen=True)
class Source:
    """One photograph of the scikit-image wheel: its file, its ``(H, W)`` and whether only the inscribed
    disc holds the picture (the retina's fundus sits on a black background)."""

    name: str
    file: str
    size: tuple[int, int]
    disc: bool = False


#: The colour photographs of the scikit-image wheel that are public domain, CC0 or (immunohistochemistry)
#: of "no known copyright restrictions", per the docstrings of ``skimage/data/_fetchers.py``; grey
#: photographs are left out, so every region is a colour image. The stereo motorcycle pair (Middlebury, no
#: licence stated) is left out too.
SOURCES = (
    Source("astronaut", "astronaut.png", (512, 512)),
    Source("chelsea", "chelsea.png", (300, 451)),
    Source("coffee", "coffee.png", (400, 600)),
    Source("rocket", "rocket.jpg", (427, 640)),
    Source("hubble_deep_field", "hubble_deep_field.jpg", (872, 1000)),
    Source("immunohistochemistry", "ihc.png", (512, 512)),
    Source("retina", "retina.jpg", (1411, 1411), disc=True),
)


@dataclass(frozen=True)
class Region:
    """A ``REGION_SIZE``-square of ``source`` whose top-left source pixel is ``(top, left)``."""

    source: Source
    row: int
    column: int
    top: int
    left: int

    @property
    def name(self) -> str:
        """``"<photograph>/r<row>c<column>"``: the region's name in the grid of its photograph."""
        return f"{self.source.name}/r{self.row}c{self.column}"


def _grid(source: Source) -> list[Region]:
    """The non-overlapping ``REGION_SIZE`` grid of ``source``, centred (the margins split evenly, the
    extra pixel at the bottom/right), row-major; for a disc photograph only the cells whose four corners
    lie inside the inscribed circle."""
    height, width = source.size
    rows, columns = height // REGION_SIZE, width // REGION_SIZE
    top0, left0 = (height - rows * REGION_SIZE) // 2, (width - columns * REGION_SIZE) // 2
    regions = []
    for row in range(rows):
        for column in range(columns):
            top, left = top0 + row * REGION_SIZE, left0 + column * REGION_SIZE
            if source.disc:
                radius, cy, cx = min(height, width) / 2, height / 2, width / 2
                corners = [(top + dy, left + dx) for dy in (0, REGION_SIZE) for dx in (0, REGION_SIZE)]
                if any(math.hypot(y - cy, x - cx) > radius for y, x in corners):
                    continue
            regions.append(Region(source, row, column, top, left))
    return regions


#: Every region, photographs in :data:`SOURCES` order, each photograph's regions row-major: 35 in all
#: (astronaut 4, chelsea 1, coffee 2, rocket 2, hubble_deep_field 9, immunohistochemistry 4, retina 13).
REGIONS: tuple[Region, ...] = tuple(region for source in SOURCES for region in _grid(source))


def region_indices(split: PhotographSplit) -> list[int]:
    """Indices into :data:`REGIONS` of ``split``: ``"held_out"`` every ``HELD_OUT_EVERY``-th region
    (8 of 35), ``"train"`` the others (27), ``"all"`` all of them."""
    if split not in ("train", "held_out", "all"):
        raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}")
    if split == "all":
        return list(range(len(REGIONS)))
    held_out = split == "held_out"
    return [i for i in range(len(REGIONS)) if (i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out]


def data_folder() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image wheel (located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise ValueError("Photographs reads scikit-image's bundled photographs; pip install scikit-image")
    return Path(os.path.dirname(spec.origin)) / "data"


@functools.lru_cache(maxsize=len(SOURCES))
def load_source(source: Source) -> np.ndarray:
    """``source`` decoded as a read-only ``[H, W, 3]`` uint8 array (cached per process: 12 MB for all)."""
    from PIL import Image

    path = data_folder() / source.file
    if not path.is_file():
        raise ValueError(f"{path} is missing from the scikit-image wheel; reinstall scikit-image")
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    if array.shape[:2] != source.size:
        raise ValueError(
            f"{path} is {array.shape[0]}x{array.shape[1]}, not the {source.size[0]}x{source.size[1]} the "
            "regions of Photographs are cut from; install the scikit-image version whose photographs match"
        )
    array.flags.writeable = False
    return array


def area_weights(source: int, target: int) -> np.ndarray:
    """``[target, source]`` float64 matrix averaging ``source`` unit cells over ``target`` equal cells:
    entry ``(o, i)`` is the length of source cell ``i`` inside output cell ``o`` over that cell's length."""
    edges = np.arange(target + 1, dtype=np.float64) * (source / target)
    low, high = edges[:-1, None], edges[1:, None]
    cells = np.arange(source, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(high, cells + 1) - np.maximum(low, cells), 0.0, None)
    return overlap / (source / target)


class Photographs(FieldDataset):
    """Fixed ``REGION_SIZE``-square regions of scikit-image's colour photographs, rendered exactly.

    The regions (:data:`REGIONS`, 35) are the centred non-overlapping 256-pixel grids of seven colour
    photographs (:data:`SOURCES`); ``split`` keeps the 27 ``"train"`` regions, the 8 ``"held_out"``
    ones (every fourth region) or ``"all"``. ``render(i, (H, W))`` area-averages the region's source
    pixels over each output cell (exact for any ``H, W <= 256``; for integral factors the box filter), in
    float64, so the native 256x256 render is the source pixels themselves; non-square sizes stretch the
    square region as ``Synthetic``'s do. Above 256 there is no detail to render, so it is an error.
    """

    def __init__(self, split: PhotographSplit = "train", channels: Channels = 3) -> None:
        _check_options(channels, "area", "none")
        self.indices = region_indices(split)
        self.split = split
        self.channels = channels

    @property
    def regions(self) -> list[Region]:
        """This split's regions, in index order."""
        return [REGIONS[i] for i in self.indices]

    def relative_paths(self) -> list[str]:
        """Each region's name (``"astronaut/r0c1"``), in index order, for a ``split_file``."""
        return [region.name for region in self.regions]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Tensor:
        return self.render(index, REGION_SIZE)

    def native_size(self, index: int) -> tuple[int, int]:
        self._check_index(index)
        return REGION_SIZE, REGION_SIZE

    def source_pixels(self, index: int) -> np.ndarray:
        """The ``[REGION_SIZE, REGION_SIZE, 3]`` uint8 source pixels of region ``index``."""
        region = REGIONS[self.indices[self._check_index(index)]]
        pixels = load_source(region.source)[
            region.top : region.top + REGION_SIZE, region.left : region.left + REGION_SIZE
        ]
        if pixels.shape[:2] != (REGION_SIZE, REGION_SIZE):
            raise ValueError(f"region {region.name} at ({region.top}, {region.left}) leaves its photograph")
        return pixels

    def render(self, index: int, resolution: coords.Resolution) -> Tensor:
        height, width = coords.as_hw(resolution)
        if max(height, width) > REGION_SIZE:
            raise ValueError(
                f"Photographs renders at most {REGION_SIZE}x{REGION_SIZE} (its regions' source size), got "
                f"{height}x{width}; choose a resolution of at most {REGION_SIZE}"
            )
        values = torch.from_numpy(self.source_pixels(index).astype(np.float64) / 127.5 - 1.0)
        image = values.permute(2, 0, 1)  # [3, S, S]
        rows = torch.from_numpy(area_weights(REGION_SIZE, height))
        columns = torch.from_numpy(area_weights(REGION_SIZE, width))
        image = rows @ image @ columns.T
        if self.channels == 1:
            image = (image * torch.tensor(_LUMA, dtype=image.dtype).view(3, 1, 1)).sum(0, keepdim=True)
        return image.to(torch.float32).clamp_(-1.0, 1.0)

    def __repr__(self) -> str:
        return f"Photographs(split={self.split!r}, regions={len(self)}, channels={self.channels})"
