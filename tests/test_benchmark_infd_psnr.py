"""``benchmarks/infd_quickstart_psnr.py``: the untrained baseline is the seed-0 model, the reference is the
exact render at each resolution of the held-out images, and the JSON holds one row per run and resolution."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import yaml

from rezdiff.loading import build
from rezdiff.metrics.reconstruction import psnr
from tests.helpers import REPO, untrained_checkpoint
from tests.test_benchmarks import load_script

TINY_INFD = REPO / "tests" / "configs" / "tiny_infd.yaml"


def seed0_model() -> torch.nn.Module:
    spec = yaml.safe_load(TINY_INFD.read_text())["model"]
    torch.manual_seed(0)
    return build(spec["class_path"], spec["init_args"]).eval()


def test_untrained_is_the_seed_0_model_and_the_reference_the_exact_render(single_thread: None) -> None:
    script = load_script("infd_quickstart_psnr")
    datamodule = script.build_datamodule(TINY_INFD)
    train, val = datamodule.split()
    held_out = val[:2]
    assert held_out and not set(held_out) & set(train)
    model = seed0_model()
    torch.manual_seed(1234)  # the global RNG is elsewhere: the baseline must seed itself
    rows = script.measure(model, datamodule, [16, 32], num=2)
    assert [row["resolution"] for row in rows] == [16, 32]
    dataset = datamodule.dataset
    inputs = torch.stack([dataset.render(i, 16) for i in held_out])
    for row in rows:
        reference = torch.stack([dataset.render(i, row["resolution"]) for i in held_out])
        with torch.no_grad():
            expected = psnr(model.reconstruct(inputs, row["resolution"]), reference)
        assert math.isclose(row["trained_db"], expected, rel_tol=1e-6), (row, expected)
        assert row["untrained_db"] == row["trained_db"], row  # the "trained" model is the seed-0 one
    with torch.no_grad():
        model.renderer.last_layer.mul_(0.5)  # the last conv weight
    changed = script.measure(model, datamodule, [16, 32], num=2)
    for before, after in zip(rows, changed, strict=True):
        assert after["untrained_db"] == before["untrained_db"]
        assert after["trained_db"] != before["trained_db"]


def test_main_writes_a_row_per_checkpoint_and_resolution(tmp_path: Path, single_thread: None) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(TINY_INFD, run / "config.yaml")  # the data the run was trained with, read from the run
    torch.manual_seed(0)
    ckpt = untrained_checkpoint(TINY_INFD, run / "checkpoints" / "last.ckpt")
    script = load_script("infd_quickstart_psnr")
    argv = ["--ckpt", str(ckpt), str(ckpt), "--label", "a", "b", "--run-date", "2026-01-01", "2026-01-02"]
    script.main(
        [*argv, "--resolutions", "16", "32", "--num", "2", "--out", str(tmp_path), "--name", "r.json"]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmark"] == "quickstart_infd_psnr"
    assert report["device"]["type"] == "cpu" and report["date"] and report["versions"]["torch"]
    held_out = script.build_datamodule(TINY_INFD).split()[1][:2]
    assert [r["label"] for r in report["settings"]["runs"]] == ["a", "b"]
    for entry in report["settings"]["runs"]:
        assert entry["config"] == str(run / "config.yaml") and entry["held_out"] == held_out
    keys = ["label", "run_date", "resolution", "trained_db", "untrained_db"]
    assert [list(row) for row in report["rows"]] == [keys] * 4
    assert [(r["label"], r["run_date"], r["resolution"]) for r in report["rows"]] == [
        ("a", "2026-01-01", 16),
        ("a", "2026-01-01", 32),
        ("b", "2026-01-02", 16),
        ("b", "2026-01-02", 32),
    ]
    for row in report["rows"]:
        assert row["trained_db"] == row["untrained_db"] and math.isfinite(row["trained_db"])
