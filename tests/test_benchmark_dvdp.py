"""benchmarks/dvdp_speedup.py times DVDP's training steps at the stage mix training has.

A DVDP step costs what its stages cost; the old benchmark timed the first 20 keys of
``step_generator(0, i)``, which put 3 of 20 ``per_batch`` steps at full resolution instead of 6, and
reported speed-ups above the ideal pixel-cost bound. These tests count what the network actually saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_benchmarks import load_script

TINY = ["--resolution", "16", "--width", "16", "32", "--attention", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def table1_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("dvdp_speedup")
    report = load_script("dvdp_speedup").main(
        [*TINY, "--levels", "0", "--table1", "--per-batch", "--batch", "4", "--steps", "20"]
        + ["--sample-steps", "2", "--sample-batch", "2", "--out", str(out)]
    )
    return {str(row["stage_sampling"]): row for row in report["rows"]}


@pytest.mark.parametrize("mode", ["per_example", "per_batch"])
def test_timed_steps_visit_the_stages_in_the_expected_proportions(table1_rows: dict, mode: str) -> None:
    # {300, 600} of T = 1000: stages 0, 1, 2 hold 30 %, 30 %, 40 % of the timesteps; 20 steps of batch 4
    row = table1_rows[mode]
    assert row["turning_points"] == [300, 600]
    assert row["train_examples_per_stage"] == [24, 24, 32]
    assert row["expected_stage_mix"] == [0.3, 0.3, 0.4]
    # pixels per example: 0.3 + 0.3 / 4 + 0.4 / 16 = 0.4 of DDPM's
    assert row["ideal_train_speedup"] == pytest.approx(2.5, rel=1e-12)
    assert row["ideal_train_speedup_flops"] == pytest.approx(2.5, rel=0.05)  # + time embedding, attention


def test_sampling_bound_counts_every_network_call(table1_rows: dict) -> None:
    # DDPM: 2 DDIM calls at 16². DVDP: trailing [999, 499] plus the turning indices 599 and 299, i.e.
    # one call at 4² (stage 2), two at 8² (stage 1) and one at 16²: 1/16 + 2/4 + 1 = 1.5625 images' pixels.
    assert table1_rows["None"]["sample_network_calls"] == 2
    row = table1_rows["per_example"]
    assert row["sample_network_calls"] == 4
    assert row["ideal_sample_speedup"] == pytest.approx(2 / 1.5625, rel=1e-12)


def test_stratified_keys_follow_the_mix_for_any_batch() -> None:
    script = load_script("dvdp_speedup")
    import torch

    from rezdiff.models import DVDP
    from tests.helpers import TINY_UNET

    model = DVDP(**{**TINY_UNET, "num_train_steps": 1000}, turning_points=(250, 500, 750))
    keys = script.stratified_keys(model, 6, 10, torch.device("cpu"))
    counts = [script.drawn_stages(model, 6, key, torch.device("cpu")) for key in keys]
    assert [sum(c[k] for c in counts) for k in range(4)] == [15, 15, 15, 15]
    assert all(max(c) - min(c) <= 1 for c in counts)  # every step is itself as close to the mix as it can be
    assert len(set(keys)) == len(keys)


def test_results_record_the_ideal_bound_beside_every_ratio() -> None:
    import json

    from tests.helpers import REPO

    for path in Path(REPO / "benchmarks" / "results").glob("dvdp_speedup_*.json"):
        for row in json.loads(path.read_text())["rows"]:
            for what in ("train", "sample"):
                assert row[f"ideal_{what}_speedup"] > 0 and row[f"ideal_{what}_speedup_flops"] > 0, path
            if row["K"]:
                total = sum(row["train_examples_per_stage"])
                mix = [n / total for n in row["train_examples_per_stage"]]
                assert mix == pytest.approx(row["expected_stage_mix"], abs=1e-12), path
