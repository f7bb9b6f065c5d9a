"""The multilevel warm-start benchmark runs and records both training curves and the sampling rows."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_benchmarks import load_script


def test_multilevel_warmstart_records_complete_results(tmp_path: Path) -> None:
    tiny = [
        "--coarse",
        "8",
        "--fine",
        "16",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--width",
        "8",
        "--modes",
        "4",
    ]
    report = load_script("multilevel_warmstart").main(
        [
            *tiny,
            "--images",
            "8",
            "--val-images",
            "4",
            "--val-repeats",
            "1",
            "--sample-resolutions",
            "16",
            "32",
        ]
        + ["--sample-steps", "2", "--sample-batch", "2", "--device", "cpu", "--out", str(tmp_path)]
    )
    assert json.loads((tmp_path / "multilevel_warmstart_16_cpu_combined.json").read_text()) == report
    assert report["settings"]["prior"] == "combined"
    assert report["versions"]["torch"] and report["device"]["type"] == "cpu"
    assert [row["step"] for row in report["fine_only"]["curve"]] == [2, 4]
    assert report["coarse_to_fine"]["curve"][0]["resolution"] == 8
    assert report["target_val_loss"] == report["fine_only"]["curve"][-1]["val_loss"]
    assert [row["resolution"] for row in report["sampling"]] == [16, 32]
    assert all(row["seconds_per_sample"] > 0 for row in report["sampling"])
