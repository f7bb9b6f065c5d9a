"""Cost vs output resolution benchmark: the smoke run records every family; the fits are exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.test_benchmarks import load_script


def test_fit_exponent_recovers_a_power_law() -> None:
    cost = load_script("cost_vs_resolution")
    pixels = [1024, 4096, 16384]
    assert math.isclose(cost.fit_exponent(pixels, [3e-4 * p**1.5 for p in pixels]), 1.5, rel_tol=1e-9)
    assert math.isclose(cost.fit_exponent(pixels, [7.0, 7.0, 7.0]), 0.0, abs_tol=1e-12)
    assert cost.fit_exponent([1024], [1.0]) is None


def test_largest_within_budget_inverts_the_memory_power_law() -> None:
    cost = load_script("cost_vs_resolution")
    # 64 MiB at 64² growing linearly in pixels: 16 GiB = 256x, so 256 * 64² pixels = 1024²
    assert cost.largest_within(64 * 64, 64.0, 1.0, 16.0) == 1024
    # quadratic growth: 256x the memory is 16x the pixels = 256²
    assert cost.largest_within(64 * 64, 64.0, 2.0, 16.0) == 256
    assert cost.largest_within(64 * 64, 64.0, None, 16.0) is None


def test_smoke_run_records_every_family(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cost = load_script("cost_vs_resolution")
    report = cost.main(["--smoke", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "cost_vs_resolution_cpu_smoke.json").read_text())
    assert written["families"] == json.loads(json.dumps(report["families"]))
    assert [f["family"] for f in written["families"]] == list(cost.FAMILIES)
    for family in written["families"]:
        assert [p["multiple"] for p in family["points"]] == [1, 2]
        assert [p["resolution"] for p in family["points"]] == [
            family["native_resolution"] * m for m in (1, 2)
        ]
        for point in family["points"]:
            figures = [point["seconds_per_step"], point["peak_mib"]]
            assert all(math.isfinite(v) and v > 0 for v in figures), family["family"]
            assert (
                point["seconds_per_image_default_steps_extrapolated"]
                == point["seconds_per_step"] * family["default_steps"]
            )
        assert math.isfinite(family["time_exponent"]) and math.isfinite(family["memory_exponent"])
        # a 4x-pixel output holds more live tensors: the memory exponent is positive
        assert family["memory_exponent"] > 0, family["family"]


def test_point_over_budget_is_skipped(tmp_path: Path) -> None:
    cost = load_script("cost_vs_resolution")
    args = [
        "--smoke",
        "--families",
        "ddpm",
        "--point-budget-s",
        "1e-9",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    [family] = cost.main(args)["families"]
    assert "seconds_per_step" in family["points"][0]
    assert family["points"][1]["skipped"] == "over budget"


def test_repeated_multiples_are_refused() -> None:
    cost = load_script("cost_vs_resolution")
    with pytest.raises(SystemExit):
        cost.parse(["--multiples", "1", "1"])
