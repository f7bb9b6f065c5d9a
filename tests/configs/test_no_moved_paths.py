"""No config or notebook names a class or module by its path from before issue 18 moved family-private code
into the family folders (those paths read through for one release only, with a FutureWarning), so the old
paths cannot creep back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.configs.test_no_old_data_keys import CONFIG_FILES
from tests.helpers import REPO

_PRIORS = "|".join(
    ("AuthorsFNOPrior", "CombinedCovariance", "Covariance", "FNOPrior", "InverseLaplacian", "Matern")
    + ("SumCovariance", "WhiteNoise")
)
_NETWORKS = "|".join(  # the old names of rezdiff.nn that moved (UNet stays)
    ("FNO", "CLIF", "LIIFRenderer", "render_field", "FeatureDecoder", "LatentEncoder", "VectorQuantizer")
    + ("PatchGAN", "LPIPS", "LaplacianL1", "VGG16Features", "grid_to_points", "points_to_grid")
    + ("Neighbours", "SparseDepthwiseConv", "build_neighbours", "sparse_depthwise_conv")
)
_MODULES = "sparse|sparse_triton|interpolate|clif|autoencoder|discriminator|perceptual|fno"
OLD_PATH = re.compile(
    r"rezdiff\.(?:"
    r"core\.mollified\b"
    rf"|core\.(?:operators\.)?(?:GaussianMollifier|{_PRIORS})\b"
    rf"|nn\.(?:{_MODULES}|{_NETWORKS})\b"
    r"|inverse\b"
    r"|data\.(?:views\.)?MultiScalePatches\b"
    r")"
    # the same names in import statements, e.g. from rezdiff.core.operators import Matern
    r"|from rezdiff\.(?:core(?:\.operators)?|data(?:\.views)?) import [^\n]*?"
    rf"\b(?:GaussianMollifier|{_PRIORS}|MultiScalePatches)\b"
    rf"|from rezdiff\.nn import [^\n]*?\b(?:{_MODULES}|{_NETWORKS})\b"
)
FILES = [*CONFIG_FILES, *sorted((REPO / "notebooks").glob("*.ipynb"))]


def old_paths(text: str) -> list[str]:
    """The old import paths written in a file's text."""
    return [match.group(0) for match in OLD_PATH.finditer(text)]


def test_the_check_finds_every_old_path_and_spares_the_new_ones() -> None:
    for old in (
        "class_path: rezdiff.data.MultiScalePatches",
        "class_path: rezdiff.data.views.MultiScalePatches",
        "class_path: rezdiff.core.operators.Matern",
        "- class_path: rezdiff.core.operators.AuthorsFNOPrior",
        "--model.init_args.prior.class_path rezdiff.core.operators.InverseLaplacian",
        "rezdiff.core.GaussianMollifier",
        "from rezdiff.nn.fno import FNO",
        "rezdiff.nn.FNO",
        "from rezdiff.inverse import inpaint",
        "rezdiff.inverse.guidance.guided_sample",
        "import rezdiff.core.mollified",
        "from rezdiff.core.operators import Matern",
        "from rezdiff.core import dct2, GaussianMollifier",
        "from rezdiff.data import FullGrid, MultiScalePatches",
        "from rezdiff.nn import FNO",
    ):
        assert old_paths(old), old
    for new in (
        "class_path: rezdiff.models.infd.MultiScalePatches",
        "class_path: rezdiff.models.multilevel.priors.Matern",
        "class_path: rezdiff.models.infd.CachedLatents",
        "rezdiff.nn.UNet",
        "rezdiff.nn.unet.UNet",
        'from rezdiff.nn import UNet\\n",',
        "rezdiff.data.FullGrid",
        "rezdiff.core.operators.dct2",
        "from rezdiff.models.infty_diff.inverse import inpaint",
        "from rezdiff.core.operators import dct2",
        "from rezdiff.data import FullGrid, RandomPixels",
        "from rezdiff.nn import UNet",
    ):
        assert not old_paths(new), new


def test_the_files_are_found() -> None:
    assert len(FILES) > 20 and any(path.suffix == ".ipynb" for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_config_or_notebook_names_a_moved_path(path: Path) -> None:
    found = old_paths(path.read_text())
    assert not found, f"{path.relative_to(REPO)} names {found[0]}, an old path: write its family-folder path"
