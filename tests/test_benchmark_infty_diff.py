"""benchmarks/infty_diff_subsampling.py runs at tiny sizes and records a complete result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.test_benchmarks import load_script

TINY = ["--sparse-width", "8", "--inner-channels", "8", "--norm-groups", "4", "--head-dim", "8"]


@pytest.mark.usefixtures("single_thread")
def test_infty_diff_subsampling_records_every_rate_beside_the_paper(tmp_path: Path) -> None:
    script = load_script("infty_diff_subsampling")
    args = [
        "--device",
        "cpu",
        "--resolutions",
        "16",
        "--inner",
        "8",
        "--rates",
        "1",
        "2",
        "4",
        "--batch",
        "2",
    ]
    reports = script.main([*args, *TINY, "--steps", "1", "--warmup", "0", "--out", str(tmp_path)])
    report = reports[16]
    assert json.loads((tmp_path / "infty_diff_subsampling_16_cpu.json").read_text()) == report
    assert report["device"]["type"] == "cpu" and report["versions"]["torch"] and report["date"]
    assert "live tensor bytes" in report["memory_method"]
    assert report["model_arguments"]["8"]["inner_resolution"] == 8 and report["parameters"]["8"] > 0
    assert report["paper"]["table5_memory_reduction_fixed_batch"]["256/128"]["16"] == 2.01
    assert report["paper"]["table4_speedup_fixed_memory"]["256/64"]["16"] == 4.57

    rows = report["rows"]
    assert [(row["inner"], row["rate"]) for row in rows] == [(8, 1), (8, 2), (8, 4)]
    assert [row["points_per_example"] for row in rows] == [256, 128, 64]
    for row in rows:
        assert row["s_per_step"] > 0 and row["speedup"] > 0 and row["fixed_memory_speedup"] > 0
        assert row["peak_bytes"] > row["static_bytes"] > 0 and row["memory_reduction"] > 0
        # the fixed-memory batch is the largest that fits the rate-1 budget: one more does not
        assert 0 < row["fixed_memory_peak_bytes"] <= row["fixed_memory_budget_bytes"] == rows[0]["peak_bytes"]
        probes = {(rate, batch): peak for rate, batch, peak in report["memory_probes"]["8"]}
        assert probes[row["rate"], row["fixed_memory_batch"] + 1] > row["fixed_memory_budget_bytes"]
    # fewer points, less memory: the full grid is the largest at a fixed batch
    assert (
        rows[0]["memory_reduction"] == 1.0 and rows[2]["memory_reduction"] > rows[1]["memory_reduction"] > 1
    )
    assert rows[0]["fixed_memory_batch"] == 2 and rows[2]["fixed_memory_batch"] > 2


def test_infty_diff_figures_repeat_the_committed_result_and_the_readme_quotes_them() -> None:
    """``benchmarks/infty_diff_figures.py``: the noise variances and the leading start equal the committed
    result (recomputed here at the same sizes; the 256² parameter counts are left to the script), and the
    README quotes the committed figures."""
    script = load_script("infty_diff_figures")
    committed = json.loads((REPO / "benchmarks" / "results" / "infty_diff_figures_cpu.json").read_text())
    figures = {(row["figure"], row.get("f")): row["value"] for row in committed["rows"]}
    rows = script.noise_variances() + script.leading_start()
    for row in rows:
        assert row["value"] == pytest.approx(figures[(row["figure"], row.get("f"))], rel=1e-9), row
    readme = (REPO / "src" / "rezdiff" / "models" / "infty_diff" / "README.md").read_text()
    authors = [r["value"] for r in rows if "authors' rule" in r["figure"]]
    assert "| " + " | ".join(f"{v:.4f}" for v in authors) + " |" in readme
    starts = ", ".join(f"{r['value']:.3f}" for r in rows if "leading" in r["figure"])
    assert f"√ᾱ = {starts} at the first step" in readme
    scale = figures[("infty_diff_ffhq256.yaml parameters: denoiser, latent_conditioning scale", None)]
    assert f"{scale:,}" in readme
