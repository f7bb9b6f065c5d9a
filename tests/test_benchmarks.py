"""The benchmark harness runs and records what a result needs (device, versions, settings, figures)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.helpers import REPO, TINY_DDPM


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_throughput_writes_a_complete_result(tmp_path: Path) -> None:
    report = load_script("train_throughput").main(
        [
            "--config",
            str(TINY_DDPM),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ]
    )
    [written] = tmp_path.glob("train_throughput_*_cpu.json")
    assert json.loads(written.read_text()) == report
    assert report["device"]["type"] == "cpu" and report["versions"]["torch"]
    [row] = report["rows"]
    assert row["precision"] == "32" and row["images_per_second"] > 0 and row["train_flops_per_step"] > 0
