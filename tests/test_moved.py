"""Code that moved to its family's folder (issue 18) keeps its old import paths for one release: an old
module path is the new module, an old name the same object, each with one FutureWarning naming the new
place; checkpoints and configs that name an old class path still load and parse."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import rezdiff
from rezdiff.cli import _same_class, main
from rezdiff.models import MultilevelSDE
from rezdiff.models.multilevel.priors import CombinedCovariance, InverseLaplacian, Matern
from tests.helpers import REPO

INFTY_DIFF, INFD, MULTILEVEL = "rezdiff.models.infty_diff", "rezdiff.models.infd", "rezdiff.models.multilevel"

# old module path -> new module path
OLD_MODULES = {
    "rezdiff.core.mollified": f"{INFTY_DIFF}.mollified",
    "rezdiff.nn.sparse": f"{INFTY_DIFF}.sparse",
    "rezdiff.nn.sparse_triton": f"{INFTY_DIFF}.sparse_triton",
    "rezdiff.nn.interpolate": f"{INFTY_DIFF}.interpolate",
    "rezdiff.inverse.infty_diff": f"{INFTY_DIFF}.inverse",
    "rezdiff.nn.clif": f"{INFD}.clif",
    "rezdiff.nn.autoencoder": f"{INFD}.networks",
    "rezdiff.nn.discriminator": f"{INFD}.discriminator",
    "rezdiff.nn.perceptual": f"{INFD}.perceptual",
    "rezdiff.inverse.guidance": f"{INFD}.guidance",
    "rezdiff.nn.fno": f"{MULTILEVEL}.fno",
}

_PRIORS = ("AuthorsFNOPrior", "CombinedCovariance", "Covariance", "FNOPrior", "InverseLaplacian", "Matern")
_PRIORS += ("SumCovariance", "WhiteNoise", "ZeroMode")
# (old module, name, new module): every public name the old places exported before the move
OLD_NAMES = [
    *[("rezdiff.core.operators", name, f"{MULTILEVEL}.priors") for name in _PRIORS],
    *[("rezdiff.core", name, f"{MULTILEVEL}.priors") for name in _PRIORS if name != "AuthorsFNOPrior"],
    ("rezdiff.core.operators", "GaussianMollifier", f"{INFTY_DIFF}.mollifier"),
    ("rezdiff.core", "GaussianMollifier", f"{INFTY_DIFF}.mollifier"),
    *[("rezdiff.nn", name, f"{INFD}.clif") for name in ("CLIF", "LIIFRenderer", "render_field")],
    *[
        ("rezdiff.nn", name, f"{INFD}.networks")
        for name in ("FeatureDecoder", "LatentEncoder", "VectorQuantizer")
    ],
    ("rezdiff.nn", "PatchGAN", f"{INFD}.discriminator"),
    *[("rezdiff.nn", name, f"{INFD}.perceptual") for name in ("LPIPS", "LaplacianL1", "VGG16Features")],
    ("rezdiff.nn", "FNO", f"{MULTILEVEL}.fno"),
    *[("rezdiff.nn", name, f"{INFTY_DIFF}.interpolate") for name in ("grid_to_points", "points_to_grid")],
    *[
        ("rezdiff.nn", name, f"{INFTY_DIFF}.sparse")
        for name in ("Neighbours", "SparseDepthwiseConv", "build_neighbours", "sparse_depthwise_conv")
    ],
    *[("rezdiff.inverse", name, f"{INFTY_DIFF}.inverse") for name in ("inpaint", "super_resolve")],
    *[
        ("rezdiff.inverse", name, f"{INFD}.guidance")
        for name in ("Box", "ColorLoss", "Condition", "ReferenceLoss", "guided_sample")
    ],
    ("rezdiff.data", "MultiScalePatches", f"{INFD}.views"),
    ("rezdiff.data.views", "MultiScalePatches", f"{INFD}.views"),
]


def _future_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize(("old", "new"), OLD_MODULES.items())
def test_an_old_module_path_is_the_new_module_with_one_future_warning(
    old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = importlib.import_module(new)
    parent, _, child = old.rpartition(".")
    monkeypatch.delitem(sys.modules, old, raising=False)  # a fresh import, as in a new process
    monkeypatch.delitem(vars(importlib.import_module(parent)), child, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
        again = importlib.import_module(old)
        exec(f"from {parent} import {child} as third", namespace := {})
    assert module is moved and again is moved and namespace["third"] is moved
    assert _future_warnings(caught) == [
        f"{old} moved to {new}; the old path will be removed in the next release"
    ]


@pytest.mark.parametrize(("old", "name", "new"), OLD_NAMES, ids=lambda v: v if "." not in v else None)
def test_an_old_name_is_the_same_object_with_one_future_warning(
    old: str, name: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = getattr(importlib.import_module(new), name)
    monkeypatch.delitem(vars(importlib.import_module(old)), name, raising=False)  # kept by an earlier read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(f"from {old} import {name} as first", namespace := {})
        second = getattr(sys.modules[old], name)
    assert namespace["first"] is value and second is value
    assert _future_warnings(caught) == [
        f"{old}.{name} moved to {new}.{name}; the old path will be removed in the next release"
    ]


def test_a_name_that_never_existed_is_still_an_attribute_error() -> None:
    for module in ("rezdiff.nn", "rezdiff.core", "rezdiff.core.operators", "rezdiff.inverse", "rezdiff.data"):
        with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
            importlib.import_module(module).Nothing  # noqa: B018


def _renamed(node: Any, old: str, new: str) -> Any:
    """``node`` with every string's ``new`` prefix written as ``old`` (a tree of dicts, lists and tuples)."""
    if isinstance(node, str):
        return old + node[len(new) :] if node.startswith(new) else node
    if isinstance(node, dict):
        return {key: _renamed(value, old, new) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_renamed(value, old, new) for value in node)
    return node


def test_a_checkpoint_that_names_the_old_prior_paths_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rezdiff.core.operators as operators

    tiny = dict(channels=1, modes=4, width=8, n_layers=1, projection=8, time_embedding=8, sample_steps=2)
    prior = CombinedCovariance((InverseLaplacian(scale=2.0), Matern(tau=4.0)))
    model = MultilevelSDE(**tiny, image_size=8, prior=prior, ema={"decay": 0.0})
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    old = "rezdiff.core.operators."
    checkpoint["hyper_parameters"]["prior"] = _renamed(model.hparams["prior"], old, f"{MULTILEVEL}.priors.")
    assert checkpoint["hyper_parameters"]["prior"]["init_args"]["parts"][1]["class_path"] == f"{old}Matern"
    torch.save(checkpoint, tmp_path / "old.ckpt")
    names = ("CombinedCovariance", "InverseLaplacian", "Matern")
    for name in names:
        monkeypatch.delitem(vars(operators), name, raising=False)  # kept by an earlier read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = rezdiff.load(tmp_path / "old.ckpt")
    assert sorted(_future_warnings(caught)) == [
        f"{old}{name} moved to {MULTILEVEL}.priors.{name}; the old path will be removed in the next release"
        for name in names
    ]
    assert (
        loaded.prior == prior and loaded.hparams["prior"] == model.hparams["prior"]
    )  # saved again: new paths
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    # --ckpt_path compares a config's class path with the checkpoint's by the class they name
    assert _same_class(f"{MULTILEVEL}.priors.Matern", f"{old}Matern")


@pytest.mark.parametrize(
    ("config", "new", "old"),
    [
        ("tiny_infd.yaml", "rezdiff.models.infd.MultiScalePatches", "rezdiff.data.MultiScalePatches"),
        (
            "tiny_multilevel.yaml",
            f"{MULTILEVEL}.priors.InverseLaplacian",
            "rezdiff.core.operators.InverseLaplacian",
        ),
    ],
)
def test_a_config_that_names_an_old_class_path_still_parses(
    config: str, new: str, old: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "tests" / "configs" / config).read_text()
    assert new in text
    path = tmp_path / config
    path.write_text(text.replace(new, old))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(path), "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) and new.rpartition(".")[2] in printed
