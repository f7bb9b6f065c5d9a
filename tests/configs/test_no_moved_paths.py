"""No config or notebook names a class or module by its path from before issue 18 moved family-private code
into the family folders (those paths read through for one release only, with a FutureWarning), so the old
paths cannot creep back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.configs.test_no_old_data_keys import CONFIG_FILES
from tests.helpers import REPO

_PRIORS = (
    "AuthorsFNOPrior|CombinedCovariance|Covariance|FNOPrior|InverseLaplacian|Matern|SumCovariance|WhiteNoise"
)
OLD_PATH = re.compile(
    r"rezdiff\.(?:"
    r"core\.mollified\b"
    rf"|core\.operators\.(?:GaussianMollifier|{_PRIORS})\b"
    rf"|core\.(?:GaussianMollifier|{_PRIORS})\b"
    r"|nn\.(?:sparse|sparse_triton|interpolate|clif|autoencoder|discriminator|perceptual|fno)\b"
    r"|nn\.(?!UNet\b)[A-Za-z_]\w*"
    r"|inverse\b"
    r"|data\.(?:views\.)?MultiScalePatches\b"
    r")"
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
    ):
        assert old_paths(old), old
    for new in (
        "class_path: rezdiff.models.infd.MultiScalePatches",
        "class_path: rezdiff.models.multilevel.priors.Matern",
        "class_path: rezdiff.models.infd.CachedLatents",
        "rezdiff.nn.UNet",
        "rezdiff.data.FullGrid",
        "rezdiff.core.operators.dct2",
        "from rezdiff.models.infty_diff.inverse import inpaint",
    ):
        assert not old_paths(new), new


def test_the_files_are_found() -> None:
    assert len(FILES) > 20 and any(path.suffix == ".ipynb" for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_config_or_notebook_names_a_moved_path(path: Path) -> None:
    found = old_paths(path.read_text())
    assert not found, f"{path.relative_to(REPO)} names {found[0]}, an old path: write its family-folder path"
