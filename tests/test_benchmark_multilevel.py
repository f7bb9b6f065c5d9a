"""The multilevel warm-start benchmark: its curves, branches, switch rules, ratio definition and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_benchmarks import load_script

TINY = ["--coarse", "8", "--fine", "16", "--steps", "4", "--eval-every", "2", "--width", "8", "--modes", "4"]
CPU = torch.device("cpu")
SMALL_DATA = ["--images", "8", "--val-images", "4", "--val-repeats", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def bench() -> Any:
    return load_script("multilevel_warmstart")


def test_multilevel_warmstart_records_complete_results(tmp_path: Path, bench: Any) -> None:
    report = bench.main(
        [*TINY, *SMALL_DATA, "--coarse-fraction", "0.5", "--switch", "keep", "reset"]
        + ["--sample-resolutions", "16", "32", "--sample-steps", "2", "--sample-batch", "2"]
        + ["--out", str(tmp_path)]
    )
    written = tmp_path / "multilevel_warmstart_16_cpu_combined_seed0.json"
    assert json.loads(written.read_text()) == report
    assert report["settings"]["prior"] == "combined" and report["complete"]
    assert report["versions"]["torch"] and report["device"]["type"] == "cpu"
    assert [row["step"] for row in report["fine_only"]["curve"]] == [2, 4]
    assert report["target_val_loss"] == bench.smoothed(report["fine_only"]["curve"])[-1]
    keep, reset = report["branches"]
    assert (keep["switch"], reset["switch"]) == ("keep", "reset")
    for branch in (keep, reset):  # both continue the one coarse trajectory from its step 2
        assert branch["curve"][0] == report["coarse_only"]["curve"][0]
        assert branch["curve"][0]["resolution"] == 8 and branch["curve"][1]["resolution"] == 16
        assert branch["ideal_ratio"] == pytest.approx(1 - 0.5 * (1 - branch["step_cost_ratio"]))
        assert len(branch["equivalent_steps"]) == len(branch["curve"])
    # different optimiser state after the switch gives different fine-phase losses
    assert keep["curve"][1]["val_loss"] != reset["curve"][1]["val_loss"]
    assert report["time_ratio"] == keep["time_ratio"]
    assert [row["resolution"] for row in report["sampling"]] == [16, 32]


def test_branch_keeps_or_resets_the_optimiser(bench: Any) -> None:
    options = bench.parse([*TINY, *SMALL_DATA])
    images = torch.randn(6, 1, 16, 16).clamp(-1, 1)
    trainer = bench.Trainer(bench.build(options, torch.device("cpu")), images[:4], images[4:], options, CPU)
    trainer.advance(2, 8)
    kept, reset = trainer.branch("keep"), trainer.branch("reset")
    state = trainer.optimizer.state_dict()["state"]
    assert kept.optimizer.state_dict()["state"].keys() == state.keys() and state
    assert torch.equal(kept.optimizer.state_dict()["state"][0]["exp_avg"], state[0]["exp_avg"])
    assert reset.optimizer.state_dict()["state"] == {}
    kept.advance(2, 16)  # the branch trains its own copy: the trunk's weights stay
    trunk = dict(trainer.model.named_parameters())
    assert any(not torch.equal(p, trunk[n]) for n, p in kept.model.named_parameters())
    assert trainer.step == 2 and kept.step == 4 and len(trainer.curve) == 1


def test_switch_warmup_ramps_the_learning_rate(bench: Any) -> None:
    options = bench.parse([*TINY, *SMALL_DATA, "--lr", "0.01", "--switch-warmup", "4"])
    trainer = bench.Trainer(
        bench.build(options, torch.device("cpu")), torch.zeros(2, 1, 16, 16), None, options, CPU
    )
    trainer.step = 6
    assert trainer.learning_rate(6) == 0.01  # the trunk: no warm-up
    branch = trainer.branch("reset")
    assert [branch.learning_rate(i) for i in range(6, 11)] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01, 0.01]
    )


def test_isotonic_fit_and_time_to_target(bench: Any) -> None:
    assert bench.isotonic_decreasing([3.0, 1.0, 2.0, 0.0]) == [3.0, 1.5, 1.5, 0.0]
    assert bench.isotonic_decreasing([1.0, 2.0, 3.0]) == [2.0, 2.0, 2.0]
    assert bench.isotonic_decreasing([4.0, 2.0, 1.0]) == [4.0, 2.0, 1.0]
    curve = [{"t": t, "val_loss": v} for t, v in [(10, 4.0), (20, 2.0), (30, 3.0), (40, 1.0)]]
    # smoothed: 4, 2.5, 2.5, 1; the raw dip to 2.0 at t=20 does not count as reaching 2.0
    assert bench.time_to(curve, 2.0, "t") == pytest.approx(30 + 10 * (2.5 - 2.0) / (2.5 - 1.0))
    assert bench.time_to(curve, 3.25, "t") == pytest.approx(15.0)
    assert bench.time_to(curve, 5.0, "t") == 10 and bench.time_to(curve, 0.5, "t") is None


def test_score_of_a_branch_matching_fine_only_step_for_step(bench: Any) -> None:
    """A branch whose coarse steps are worth fine ones reaches the target at its ideal ratio."""
    losses = [4.0, 3.0, 2.0, 1.0]
    fine = [
        {"step": 10 * (i + 1), "train_cpu_seconds": 10.0 * (i + 1), "val_loss": v}
        for i, v in enumerate(losses)
    ]
    seconds = [2.0, 4.0, 14.0, 24.0]  # two coarse evaluations at 0.2 s/step, then fine ones at 1 s/step
    warm = [{**row, "train_cpu_seconds": s} for row, s in zip(fine, seconds, strict=True)]
    branch = {"coarse_fraction": 0.5, "coarse_steps": 20, "curve": warm}
    scored = bench.score(branch, fine, "train_cpu_seconds")
    assert scored["target_val_loss"] == 1.0 and scored["time_ratio"] == pytest.approx(24 / 40)
    assert scored["step_cost_ratio"] == pytest.approx(0.2) and scored["ideal_ratio"] == pytest.approx(0.6)
    assert scored["equivalent_steps"] == pytest.approx([10, 20, 30, 40])
    assert scored["own_step_cost_ratio"] == pytest.approx(0.2) and scored["fine_step_ratio"] == pytest.approx(
        0.6
    )
    # the branch in another process whose clock runs 2x slower: the time ratio doubles, the step ratio holds
    slow = {**branch, "curve": [{**row, "train_cpu_seconds": 2 * row["train_cpu_seconds"]} for row in warm]}
    scored = bench.score(slow, fine, "train_cpu_seconds")
    assert scored["time_ratio"] == pytest.approx(1.2) and scored["step_cost_ratio"] == pytest.approx(0.4)
    assert scored["own_step_cost_ratio"] == pytest.approx(0.2) and scored["fine_step_ratio"] == pytest.approx(
        0.6
    )
    before_switch = {**branch, "curve": warm[:2]}  # no fine evaluation yet: no own cost, no step ratio
    scored = bench.score(before_switch, fine, "train_cpu_seconds")
    assert scored["own_step_cost_ratio"] is None and scored["fine_step_ratio"] is None


def test_summary_takes_the_median_over_seeds(tmp_path: Path, bench: Any) -> None:
    paths = []
    for seed, ratio in [(0, 0.6), (1, 0.5), (2, 0.9)]:
        branch = {"coarse_fraction": 0.5, "switch": "keep", "switch_warmup": 0, "time_ratio": ratio}
        branch.update(ideal_ratio=0.6, step_cost_ratio=0.2, fine_only_seconds=10.0)
        branch.update(coarse_to_fine_seconds=10 * ratio, target_val_loss=0.02)
        curve = [
            {"step": 2, "train_seconds": 1.0, "val_loss": 0.5},
            {"step": 4, "train_seconds": 2.0, "val_loss": 0.4},
        ]
        branch["curve"] = curve
        settings = {"seed": seed, "steps": 4, "fine": 16, "prior": "combined"}
        result = {"settings": settings, "device": {"type": "cpu"}, "branches": [branch]}
        result.update(fine_only={"curve": curve}, target_val_loss=0.4)
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(result))
    coarse = [
        {"step": 2, "train_seconds": 0.2, "val_loss": 0.45},
        {"step": 4, "train_seconds": 0.4, "val_loss": 0.4},
    ]
    alone = tmp_path / "seed0_coarse_only.json"  # a --coarse-only run of seed 0: joins seed 0's curves
    alone.write_text(json.dumps({"settings": {"seed": 0}, "coarse_only": {"curve": coarse}}))
    plot = tmp_path / "curves.png"
    report = bench.main(
        ["--summarize", *map(str, paths), str(alone), "--out", str(tmp_path), "--plot", str(plot)]
    )
    assert plot.stat().st_size > 0
    [summary] = report["summaries"]
    spread = summary["time_ratio_spread"]
    assert spread["median"] == 0.6 and (spread["min"], spread["max"]) == (0.5, 0.9)
    assert summary["fine_step_ratio"]["values"] == [None, None, None]  # files written before it existed
    assert summary["settings"]["seed"] == [0, 1, 2] and summary["time_ratio"] == 0.6
    assert summary["label"] == (
        "coarse fraction 0.5, switch keep; median of seeds 0, 1, 2 (ratio 0.50-0.90); ideal bound 0.60"
    )
    [coarse_row] = summary["coarse_only"]  # 0.45 is fine-only's loss half-way from step 2 to step 4
    assert coarse_row["seed"] == 0 and coarse_row["equivalent_steps"] == pytest.approx([3.0, 4.0])
    written = json.loads((tmp_path / "multilevel_warmstart_16_cpu_combined_f0.5_keep.json").read_text())
    assert written == summary
    with pytest.raises(ValueError, match="one file per seed"):
        bench.main(["--summarize", str(paths[0]), str(paths[0]), "--out", str(tmp_path)])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--coarse-fraction", "0.3"], "multiple of --eval-every"),
        (["--coarse-fraction", "1.0"], r"must lie in \(0, 1\)"),
        (["--coarse", "16"], "must be smaller than --fine"),
        (["--steps", "5"], "--steps 5 must be a multiple"),
    ],
)
def test_unrunnable_schedules_are_one_line_errors(bench: Any, args: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bench.parse([*TINY, *args])


def test_fine_only_curve_is_reused_only_with_the_same_settings(tmp_path: Path, bench: Any) -> None:
    first = bench.main(
        [*TINY, *SMALL_DATA, "--coarse-fraction", "--sample-resolutions", "--out", str(tmp_path)]
    )
    path = tmp_path / "multilevel_warmstart_16_cpu_combined_seed0.json"
    again = bench.main(
        [*TINY, *SMALL_DATA, "--fine-only-from", str(path), "--sample-resolutions"]
        + ["--out", str(tmp_path), "--name", "again.json"]
    )
    assert again["fine_only"] == first["fine_only"] and len(again["branches"]) == 1
    with pytest.raises(ValueError, match="other seed"):
        bench.main([*TINY, *SMALL_DATA, "--seed", "1", "--fine-only-from", str(path), "--out", str(tmp_path)])


def test_coarse_level_trains_every_spectral_weight(bench: Any) -> None:
    """Mode truncation: the benchmark's FNO (modes 14) keeps wave numbers -14..13 x 0..13, all present on
    the 32² grid, so the coarse phase trains every spectral weight the 64² phase uses."""
    options = bench.parse(["--device", "cpu"])
    model = bench.build(options, torch.device("cpu"))
    model.train_resolution = 32
    model.loss(bench.FieldBatch(image=torch.zeros(2, 1, 64, 64)), torch.Generator().manual_seed(0)).backward()
    spectral = [p for n, p in model.network.named_parameters() if "convs" in n and "weight" in n]
    assert spectral and all(bool((p.grad != 0).all()) for p in spectral)


def test_report_table_names_the_schedule_and_seeds() -> None:
    """A summary's label (schedule, seeds, ratio range) reaches the README table's setting column."""
    result = {
        "settings": {"coarse": 32, "fine": 64, "steps": 240, "prior": "combined"},
        "label": "coarse fraction 0.5, switch keep; median of seeds 0, 1, 2 (ratio 0.55-0.70)",
        "device": {"type": "cpu", "cpu": "x", "threads": 1, "clock": "cpu"},
        "date": "2026-12-07T13:00:00+00:00",
        "coarse_to_fine_seconds": 120.0,
        "fine_only_seconds": 200.0,
        "time_ratio": 0.6,
    }
    table = load_script("report").multilevel_warmstart([result])
    assert "240 steps, combined prior; coarse fraction 0.5, switch keep; median of seeds 0, 1, 2" in table


def test_coarse_only_repeats_the_coarse_trajectory_of_a_full_run(tmp_path: Path, bench: Any) -> None:
    """``--coarse-only`` trains the same coarse steps (seeded by step) as a full run's coarse trajectory."""
    full = bench.main(
        [*TINY, *SMALL_DATA, "--coarse-fraction", "0.5", "--sample-resolutions", "--out", str(tmp_path)]
    )
    alone = bench.main([*TINY, *SMALL_DATA, "--coarse-only", "4", "--out", str(tmp_path)])
    assert (tmp_path / "multilevel_warmstart_16_cpu_combined_seed0_coarse_only.json").is_file()
    assert "fine_only" not in alone and alone["complete"]
    assert [row["step"] for row in alone["coarse_only"]["curve"]] == [2, 4]
    losses = [row["val_loss"] for row in alone["coarse_only"]["curve"]]
    assert losses[0] == full["coarse_only"]["curve"][0]["val_loss"]
    with pytest.raises(ValueError, match="--coarse-only 3 must be a multiple"):
        bench.parse([*TINY, "--coarse-only", "3"])


def test_a_stopped_runs_log_rebuilds_its_curves(tmp_path: Path, bench: Any, capsys: Any) -> None:
    """``--from-log`` reads back what a run printed: its curves to the printed precision, scored alike."""
    args = [*TINY, *SMALL_DATA, "--coarse-fraction", "0.5", "--sample-resolutions", "--clock", "cpu"]
    run = bench.main([*args, "--out", str(tmp_path)])
    log = tmp_path / "run.log"
    log.write_text(capsys.readouterr().out)
    rebuilt = bench.main([*args, "--from-log", str(log), "--out", str(tmp_path), "--name", "rebuilt.json"])
    assert rebuilt["from_log"] == "run.log" and not rebuilt["complete"]
    [branch], [original] = rebuilt["branches"], run["branches"]
    for mine, theirs in [
        (rebuilt["fine_only"]["curve"], run["fine_only"]["curve"]),
        (branch["curve"], original["curve"]),
    ]:
        assert [(r["step"], r["resolution"]) for r in mine] == [(r["step"], r["resolution"]) for r in theirs]
        assert [r["val_loss"] for r in mine] == pytest.approx([r["val_loss"] for r in theirs], abs=5e-6)
        assert [r["train_cpu_seconds"] for r in mine] == pytest.approx(
            [r["train_cpu_seconds"] for r in theirs], abs=0.05
        )
    assert branch["coarse_fraction"] == 0.5 and branch["switch"] == "keep"
    with pytest.raises(ValueError, match="pass --clock cpu"):
        bench.main([*TINY, *SMALL_DATA, "--from-log", str(log), "--out", str(tmp_path)])
