"""The GPU acceptance script: its smoke run on the CPU, the runner's failure handling, its helpers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import acceptance_parts  # noqa: E402
import gpu_acceptance  # noqa: E402
import report  # noqa: E402
import train_throughput  # noqa: E402

STATUSES = {"ok", "failed", "skipped"}


def numbers(value: Any) -> list[float]:
    """Every float inside ``value`` (nested dicts and lists)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    return []


@pytest.mark.heavy
def test_smoke_runs_every_part_and_records_finite_figures(tmp_path: Path) -> None:
    """``--smoke`` on the CPU: every part runs at toy sizes, records a status, and the ok ones finite
    numbers; the JSON names the device and versions, and no sub-benchmark file lands beside it."""
    result = gpu_acceptance.main(["--smoke", "--out", str(tmp_path), "--device", "cpu", "--threads", "1"])
    written = json.loads((tmp_path / "gpu_acceptance_smoke.json").read_text())
    assert written["parts"].keys() == result["parts"].keys() == acceptance_parts.PARTS.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_acceptance_smoke.json"]
    assert written["device"]["type"] == "cpu" and written["versions"]["torch"] and written["smoke"]
    for name, part in written["parts"].items():
        assert part["status"] in STATUSES, name
        assert part["status"] == "ok", f"{name}: {part['error']}"
        assert numbers(part) and all(math.isfinite(x) for x in numbers(part)), name
    assert written["parts"]["gpu_tests"]["rows"], "the gpu-marked tests were not collected"
    outcomes = {r["outcome"] for r in written["parts"]["gpu_tests"]["rows"]}
    assert outcomes <= {"passed", "skipped"} and (torch.cuda.is_available() or outcomes == {"skipped"})
    assert [r["family"] for r in written["parts"]["paper_configs"]["rows"]] == list(
        acceptance_parts.PAPER_CONFIGS
    )
    assert all(r["loss_finite"] for r in written["parts"]["paper_configs"]["rows"])


def test_a_failing_or_overrunning_part_is_recorded_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part that raises, one that runs past its budget (stopped by the alarm) and one that skips are
    recorded with a one-line error; the parts after them still run."""
    ran: list[str] = []

    def ok(name: str):
        def part(ctx: acceptance_parts.Context) -> dict[str, Any]:
            ran.append(name)
            return {"rows": [{"value": 1.0}]}

        return part

    def broken(ctx: acceptance_parts.Context) -> dict[str, Any]:
        raise RuntimeError("planted failure\nsecond line")

    def slow(ctx: acceptance_parts.Context) -> dict[str, Any]:
        time.sleep(30)
        return {}

    def absent(ctx: acceptance_parts.Context) -> dict[str, Any]:
        raise acceptance_parts.Skipped("needs CUDA")

    parts = {"first": (ok("first"), 0.2), "broken": (broken, 0.2), "slow": (slow, 0.2)}
    parts |= {"absent": (absent, 0.2), "last": (ok("last"), 0.2)}
    monkeypatch.setattr(acceptance_parts, "PARTS", parts)
    start = time.monotonic()
    result = gpu_acceptance.main(["--smoke", "--out", str(tmp_path), "--device", "cpu", "--budget-s", "5"])
    assert time.monotonic() - start < 15
    statuses = {name: (part["status"], part["error"]) for name, part in result["parts"].items()}
    assert statuses == {
        "first": ("ok", None),
        "broken": ("failed", "RuntimeError: planted failure"),
        "slow": ("failed", "PartTimeout: ran past its budget of 1 s"),
        "absent": ("skipped", "needs CUDA"),
        "last": ("ok", None),
    }
    assert ran == ["first", "last"] and result["parts"]["slow"]["seconds"] < 5


def test_an_outer_alarm_survives_a_part() -> None:
    """A part's budget borrows SIGALRM: an alarm set outside (pytest-timeout's) is rearmed afterwards."""
    fired: list[int] = []
    previous = gpu_acceptance.signal.signal(gpu_acceptance.signal.SIGALRM, lambda *a: fired.append(1))
    try:
        gpu_acceptance.signal.setitimer(gpu_acceptance.signal.ITIMER_REAL, 30)
        with gpu_acceptance.time_limit(5):
            pass
        remaining, _ = gpu_acceptance.signal.getitimer(gpu_acceptance.signal.ITIMER_REAL)
        assert 25 < remaining <= 30 and not fired
    finally:
        gpu_acceptance.signal.setitimer(gpu_acceptance.signal.ITIMER_REAL, 0)
        gpu_acceptance.signal.signal(gpu_acceptance.signal.SIGALRM, previous)


def test_versions_without_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare GPU machine without diffusers still gets its results written (diffusers recorded as None)."""
    import common

    monkeypatch.setitem(sys.modules, "diffusers", None)
    versions = common.versions()
    assert versions["diffusers"] is None and versions["torch"] == torch.__version__


def test_a_part_whose_imports_fail_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Benchmarks are imported by the part that needs them: a missing package (here the whole script) fails
    that part with a one-line error instead of the run."""
    monkeypatch.setitem(sys.modules, "dvdp_speedup", None)  # import dvdp_speedup -> ImportError
    ctx = acceptance_parts.Context(torch.device("cpu"), True, tmp_path, 60.0)
    part = gpu_acceptance.run_part("dvdp", acceptance_parts.dvdp, ctx)
    assert part["status"] == "failed" and part["error"].startswith(
        "ModuleNotFoundError: import of dvdp_speedup"
    )


def test_a_failing_config_keeps_the_others_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """paper_configs records a failing config as a row and fails the part with the others' rows kept."""

    def fit(config: str, *args: Any) -> dict[str, Any]:
        if "dvdp" in config:
            raise ValueError("planted")
        return {"config": Path(config).name, "loss_finite": True}

    monkeypatch.setattr(acceptance_parts, "fit_steps", fit)
    ctx = acceptance_parts.Context(torch.device("cpu"), True, tmp_path, 60.0)
    with pytest.raises(acceptance_parts.PartialFailure, match="dvdp") as caught:
        acceptance_parts.paper_configs(ctx)
    rows = caught.value.partial["rows"]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "ok", "ok"]
    assert rows[1]["error"] == "ValueError: planted"


def test_junit_outcomes_read_every_kind(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="a" name="t1"/>'
        '<testcase classname="a" name="t2"><failure message="boom&#10;more">x</failure></testcase>'
        '<testcase classname="b" name="t3"><skipped message="needs a CUDA GPU"/></testcase>'
        '<testcase classname="b" name="t4"><error message="setup"/></testcase></testsuite></testsuites>'
    )
    assert acceptance_parts.junit_outcomes(xml) == [
        {"test": "a::t1", "outcome": "passed", "message": ""},
        {"test": "a::t2", "outcome": "failed", "message": "boom"},
        {"test": "b::t3", "outcome": "skipped", "message": "needs a CUDA GPU"},
        {"test": "b::t4", "outcome": "error", "message": "setup"},
    ]


def test_bf16_peak_is_the_variants_dense_figure() -> None:
    """PCIe and NVL cards have lower peaks than SXM: matching "H100" first would overstate MFU's base."""
    peak = train_throughput.peak_for_name
    assert peak("NVIDIA H100 80GB HBM3") == peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12
    assert peak("NVIDIA H100 NVL") == peak("NVIDIA H200 NVL") == 835e12
    assert peak("NVIDIA A100-SXM4-80GB") == 312e12 and peak("NVIDIA L4") is None


def test_wheelhouse_installs_only_what_is_missing_without_an_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(
        gpu_acceptance.importlib.util, "find_spec", lambda name: None if name == "neuralop" else object()
    )
    monkeypatch.setattr(
        gpu_acceptance.subprocess,
        "run",
        lambda command, **kw: calls.append(command) or subprocess.CompletedProcess(command, 0, "done", ""),
    )
    assert gpu_acceptance.install_from_wheelhouse(tmp_path / "absent")["installed"] is False and not calls
    record = gpu_acceptance.install_from_wheelhouse(tmp_path)
    [command] = calls
    assert command[3:] == ["install", "--no-index", "--find-links", str(tmp_path), "neuraloperator"]
    assert record == {
        "wheelhouse": str(tmp_path),
        "missing": ["neuraloperator"],
        "installed": True,
        "pip_last_line": "done",
    }


def test_report_shows_the_parts_of_an_acceptance_run() -> None:
    result = {
        "benchmark": "gpu_acceptance",
        "_file": "gpu_acceptance_cuda.json",
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"},
        "versions": {"torch": "2.11.0", "cuda": "12.8", "triton": "3.3.0", "diffusers": None},
        "git_commit": "0123456789abcdef",
        "date": "2026-12-07T04:00:00+00:00",
        "parts": {
            "sparse": {"status": "ok", "error": None, "seconds": 20.0, "budget_s": 34.0,
                       "measured_threshold": 0.25, "notes": ["a note"],
                       "rows": [{"resolution": 64, "density": 0.25, "triton_s": 0.001}]},
            "dvdp": {"status": "failed", "error": "PartTimeout: ran past its budget of 63 s",
                     "seconds": 63.0},
        },
    }  # fmt: skip
    text = report.render({"gpu_acceptance": [result]})
    assert (
        "NVIDIA H100 80GB HBM3, torch 2.11.0, cuda 12.8, triton 3.3.0, diffusers —, commit 0123456789ab"
        in text
    )
    assert "| sparse | ok | 20 | 34 | — |" in text
    assert "| dvdp | failed | 63 | — | PartTimeout: ran past its budget of 63 s |" in text
    assert "**sparse**; measured_threshold 0.25" in text and "| 64 | 0.25 | 0.001 |" in text
    assert "a note" in text and "smoke" not in text
