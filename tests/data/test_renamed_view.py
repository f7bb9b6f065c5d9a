"""Issue 18, item 4: the data module's ``sampler`` is now ``view`` (the diffusion sampler keeps the name).

The old key still works for one release with one FutureWarning and gives the same data module; an old key
with its new one is a one-line error; old configs, runs and checkpoints still parse, fit and resume; the
old import paths and attributes read through with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import rezdiff
from rezdiff.cli import main
from rezdiff.data import FieldDataModule, FieldView, FullGrid, RandomPixels, Synthetic
from tests.helpers import TINY_DDPM

RENAMED = (
    "data.init_args.sampler is renamed data.init_args.view; the old key will be removed in the next release"
)
FAST = [
    "--trainer.callbacks=[]",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
]


def _dataset() -> Synthetic:
    return Synthetic(num_images=8, resolution=16)


def _renamed_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in record
        if issubclass(w.category, FutureWarning) and "renamed" in str(w.message)
    ]


def _old_config(tmp_path: Path) -> Path:
    """``tests/configs/tiny_ddpm.yaml`` as a config written before the rename (``sampler:`` under data)."""
    spec = yaml.safe_load(TINY_DDPM.read_text())
    spec["data"]["init_args"]["sampler"] = spec["data"]["init_args"].pop("view")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_view_is_the_argument_and_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        view, val_view = RandomPixels(16, 0.5), FullGrid(16)
        module = FieldDataModule(_dataset(), view=view, val_view=val_view, batch_size=2)
    assert module.view is view and module.val_view is val_view


def test_the_old_keys_give_the_same_module_with_one_warning() -> None:
    view, val_view = RandomPixels(16, 0.5), FullGrid(16)
    with pytest.warns(FutureWarning) as record:
        old = FieldDataModule(_dataset(), sampler=view, batch_size=2, val_fraction=0.25)
    assert _renamed_warnings(record) == [RENAMED]
    assert old.view is view and old.val_view is view
    new = FieldDataModule(_dataset(), view=view, batch_size=2, val_fraction=0.25)
    for mine, theirs in ((old.val_dataset(), new.val_dataset()), (old.train_dataset(), new.train_dataset())):
        assert mine.indices == theirs.indices and type(mine.view) is type(theirs.view)
    assert torch.equal(old.val_dataset()[0].index, new.val_dataset()[0].index)  # seeded: the same pixels
    # both old keys: still ONE warning, naming both
    with pytest.warns(FutureWarning) as record:
        both = FieldDataModule(_dataset(), sampler=view, val_sampler=val_view)
    assert _renamed_warnings(record) == [
        "data.init_args.sampler and data.init_args.val_sampler are renamed data.init_args.view and "
        "data.init_args.val_view; the old keys will be removed in the next release"
    ]
    assert both.view is view and both.val_view is val_view


@pytest.mark.parametrize(("new", "old"), [("view", "sampler"), ("val_view", "val_sampler")])
def test_an_old_key_with_its_new_one_is_a_one_line_error(new: str, old: str) -> None:
    views = {"view": FullGrid(16), new: FullGrid(16), old: FullGrid(16)}
    with pytest.raises(
        ValueError, match=rf"^data.init_args.{old} and data.init_args.{new} are both set"
    ) as error:
        FieldDataModule(_dataset(), **views)
    assert "\n" not in str(error.value) and f"keep only data.init_args.{new}" in str(error.value)


def test_no_view_at_all_is_a_one_line_error() -> None:
    with pytest.raises(
        ValueError, match=r"^FieldDataModule needs a data view: set data.init_args.view"
    ) as error:
        FieldDataModule(_dataset())
    assert "\n" not in str(error.value)


def test_old_attributes_and_import_paths_read_through_with_a_deprecation_warning() -> None:
    module = FieldDataModule(_dataset(), FullGrid(16), val_view=FullGrid(8))
    with pytest.warns(DeprecationWarning, match="FieldDataModule.sampler is renamed FieldDataModule.view"):
        assert module.sampler is module.view
    with pytest.warns(DeprecationWarning, match="FieldDataModule.val_sampler is renamed"):
        assert module.val_sampler is module.val_view
    with pytest.warns(
        DeprecationWarning, match="rezdiff.data.FieldSampler is renamed rezdiff.data.FieldView"
    ):
        from rezdiff.data import FieldSampler
    assert FieldSampler is FieldView
    sys.modules.pop("rezdiff.data.samplers", None)
    with pytest.warns(DeprecationWarning, match="rezdiff.data.samplers is renamed rezdiff.data.views"):
        samplers = importlib.import_module("rezdiff.data.samplers")
    assert samplers.FullGrid is FullGrid and samplers.FieldSampler is FieldView


def test_an_old_config_parses_prints_and_fits_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _old_config(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(old), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["sampler"]["class_path"] == "rezdiff.data.FullGrid"
    with pytest.warns(FutureWarning) as record:
        cli = main(["fit", "--config", str(old), "--trainer.default_root_dir", str(tmp_path / "run"), *FAST])
    assert _renamed_warnings(record) == [RENAMED]
    assert isinstance(cli.datamodule.view, FullGrid) and cli.datamodule.view.resolution == (16, 16)
    assert cli.trainer.global_step == 1
    # both keys in one config: the CLI's one-line error
    both = [
        "--data.init_args.view",
        '{"class_path": "rezdiff.data.FullGrid", "init_args": {"resolution": 16}}',
    ]
    with pytest.raises(
        SystemExit, match=r"^rezdiff fit: error: .*data.init_args.sampler and data.init_args.view"
    ):
        main(
            ["fit", "--config", str(old), "--trainer.default_root_dir", str(tmp_path / "both"), *FAST, *both]
        )


def test_a_run_written_before_the_rename_resumes_and_loads(tmp_path: Path) -> None:
    """A run directory from before the rename: its ``config.yaml`` names the data view ``sampler`` (and
    ``val_sampler: null``) and its checkpoint records no data-module hyperparameters (Lightning's
    ``datamodule_hyper_parameters`` would need ``save_hyperparameters``). ``--ckpt_path`` resumes it, and
    ``rezdiff.load`` reads its model."""
    run = tmp_path / "run"
    with pytest.warns(FutureWarning):
        main(["fit", "--config", str(_old_config(tmp_path)), "--trainer.default_root_dir", str(run), *FAST])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    data = saved["data"]["init_args"]
    del data["view"], data["val_view"]  # what the old code wrote: sampler and val_sampler only
    assert data["sampler"]["class_path"] == "rezdiff.data.FullGrid" and data["val_sampler"] is None
    old_config = tmp_path / "old_run_config.yaml"
    old_config.write_text(yaml.safe_dump(saved))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert "datamodule_hyper_parameters" not in torch.load(ckpt, weights_only=True)
    with pytest.warns(FutureWarning) as record:
        cli = main(["fit", "--config", str(old_config), "--ckpt_path", str(ckpt), "--trainer.max_epochs=2"])
    assert _renamed_warnings(record) == [RENAMED]
    assert cli.trainer.global_step == 2  # resumed after the first epoch's step
    assert type(rezdiff.load(ckpt)).__name__ == "DDPM"


def test_datamodule_hyperparameters_with_the_old_key_load(tmp_path: Path) -> None:
    """A checkpoint whose ``datamodule_hyper_parameters`` hold ``sampler`` (a data module saved through
    Lightning's ``save_hyperparameters``) rebuilds through ``FieldDataModule.load_from_checkpoint``."""
    path = tmp_path / "datamodule.ckpt"
    hparams = {"dataset": _dataset(), "sampler": FullGrid(16), "batch_size": 4}
    torch.save({"datamodule_hyper_parameters": hparams, "pytorch-lightning_version": "2.6.6"}, path)
    with pytest.warns(FutureWarning) as record:
        module = FieldDataModule.load_from_checkpoint(path, weights_only=False)
    assert _renamed_warnings(record) == [RENAMED]
    assert isinstance(module.view, FullGrid) and module.view.resolution == (16, 16) and module.batch_size == 4
