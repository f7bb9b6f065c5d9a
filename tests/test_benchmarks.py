"""The benchmark harness runs and records what a result needs (device, versions, settings, figures)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, TINY_DDPM, untrained_checkpoint


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


def test_batch_invariance_benchmark_records_both_ways(tmp_path: Path) -> None:
    ckpt = untrained_checkpoint(TINY_DDPM, tmp_path / "ddpm.ckpt")
    args = ["--ckpt", str(ckpt), "--num", "3", "--steps", "2", "--device", "cpu"]
    report = load_script("batch_invariance").main([*args, "--out", str(tmp_path)])
    assert json.loads((tmp_path / "batch_invariance_cpu.json").read_text()) == report
    [row] = report["rows"]
    assert row["class"] == "DDPM" and row["num"] == 3 and row["batch_invariant_repeats_bit_for_bit"]
    assert 0 <= row["max_abs_difference"] < 0.1 and row["alone_s_per_image"] > 0 and row["cost_ratio"] > 0


def test_depthwise_benchmark_records_both_ways_side_by_side(tmp_path: Path) -> None:
    args = ["--sizes", "12:5", "12:13", "--model-resolutions", "16", "--repeats", "1", "--device", "cpu"]
    report = load_script("depthwise_cpu").main([*args, "--out", str(tmp_path)])
    assert json.loads((tmp_path / "depthwise_cpu.json").read_text()) == report
    assert [(r["resolution"], r["kernel"]) for r in report["rows"]] == [(12, 5), (12, 13)]
    for row in report["rows"]:
        assert row["one_conv2d_ms"] > 0 and row["blocked_ms"] > 0 and row["ideal_speedup"] > 0
        assert row["max_abs_difference"] < 1e-4 * row["output_std"]
    [step] = report["infty_diff_quickstart_steps"]
    assert step["resolution"] == 16 and step["blocked_s_per_step"] > 0 and step["one_conv2d_s_per_step"] > 0


def test_dvdp_benchmarks_record_complete_results(tmp_path: Path) -> None:
    tiny = ["--resolution", "16", "--width", "16", "32", "--attention", "--steps", "1", "--warmup", "0"]
    report = load_script("dvdp_speedup").main(
        [*tiny, "--levels", "0", "1", "--sample-steps", "2", "--sample-batch", "2", "--out", str(tmp_path)]
    )
    assert json.loads((tmp_path / "dvdp_speedup_16_cpu.json").read_text()) == report
    assert report["versions"]["torch"] and [row["K"] for row in report["rows"]] == [0, 1]
    assert report["rows"][1]["train_speedup"] > 0 and report["paper"]["table1_256"]["train_speedup"] == 2.2
    sweep = load_script("dvdp_turning_points").main(
        ["--turning-points", "500", "--steps", "1", "--batch", "2", "--resolution", "16", "--num-eval", "4"]
        + ["--sample-steps", "2", "--out", str(tmp_path)]
    )
    assert [(row["T1"], row["process"]) for row in sweep["rows"]] == [(500, "dvdp"), (500, "subspace")]


def test_peak_memory_counts_live_storages_once() -> None:
    import torch

    PeakMemory = load_script("common").PeakMemory
    x = torch.zeros(1000, 250)  # 1 MB, made outside: not counted
    with PeakMemory() as tracker:
        y = x + 1
        z = y * 2  # 2 MB alive
        del y
        view = z.view(-1)  # a view shares z's storage
        z.add_(1)  # in place: no new storage
        w = z * 3  # y was freed: still 2 MB
    assert tracker.peak == 2 * x.nbytes and view.numel() == w.numel()


def test_cpu_clock_times_the_process_not_the_wall(monkeypatch) -> None:
    """``--clock cpu`` reads CPU seconds: a sleep costs nothing on it and its full length on the wall clock
    (a benchmark on a loaded shared CPU then measures its own work); refused on a GPU."""
    common = load_script("common")
    parser = argparse.ArgumentParser()
    common.add_device_options(parser)
    seconds = {}
    for clock in ("wall", "cpu"):
        device = common.select_device(parser.parse_args(["--device", "cpu", "--clock", clock]))
        seconds[clock] = common.timed(lambda _: time.sleep(0.05), 2, device)
        assert common.device_info(device)["clock"] == clock
    assert seconds["wall"] >= 0.05 and seconds["cpu"] < 0.01, seconds
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="--clock cpu times CPU work only"):
        common.select_device(parser.parse_args(["--clock", "cpu"]))
    common.select_device(parser.parse_args(["--device", "cpu"]))  # back to the wall clock
