"""What every benchmark records and how it measures: device, versions, timer, peak memory, JSON file."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning
import torch

from rezdiff.memory import PeakMemory  # noqa: F401  (re-exported: the benchmarks import it from here)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": device.type,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "clock": "cpu" if _clock is CLOCKS["cpu"] else "wall",
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    return info


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""What :func:`timed` reads: wall-clock seconds, or the process's CPU seconds (``--clock cpu``: on a shared
CPU with one thread, what the process itself spent, insensitive to other processes' load)."""
_clock = CLOCKS["wall"]


def now() -> float:
    """The ``--clock`` reading in seconds (wall by default): for benchmarks with timers of their own."""
    return _clock()


def add_device_options(parser: argparse.ArgumentParser, clock: bool = True) -> None:
    """``--device auto|cpu|cuda``, ``--threads N`` and (unless ``clock=False``: a benchmark with timers of
    its own) ``--clock wall|cpu`` for :func:`timed`, read back by :func:`select_device`."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    if clock:
        parser.add_argument(
            "--clock",
            dest="timer",
            choices=sorted(CLOCKS),
            default="wall",
            help="what timers read: wall seconds, or the process's CPU seconds (cpu: a loaded shared CPU)",
        )


def select_device(options: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` (on a shared CPU one thread avoids OpenMP spin-waits) and ``--clock``; resolve
    ``--device``."""
    global _clock
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto" else options.device
    )
    clock = getattr(options, "timer", "wall")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu times CPU work only; use --clock wall on a GPU")
    _clock = CLOCKS[clock]
    return device


def versions() -> dict[str, str | None]:
    """Library versions; diffusers None where it is not installed (a bare GPU machine's pure-torch parts)."""
    import rezdiff

    try:
        import diffusers

        diffusers_version: str | None = diffusers.__version__
    except ImportError:
        diffusers_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "diffusers": diffusers_version,
        "rezdiff": rezdiff.__version__,
    }


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Every timer brackets its region so."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[int], None], repeats: int, device: torch.device, first: int = 0) -> float:
    """Mean seconds of ``fn(first) .. fn(first + repeats - 1)`` on the ``--clock`` (wall by default),
    CUDA-synchronised (0 for no repeats)."""
    if repeats <= 0:
        return 0.0
    sync(device)
    start = _clock()
    for index in range(first, first + repeats):
        fn(index)
    sync(device)
    return (_clock() - start) / repeats


def write_report(report: dict[str, Any], out: str | Path, name: str) -> dict[str, Any]:
    """Add the library versions and the date to ``report`` and write it as JSON to ``out/name``."""
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = {**report, "versions": versions(), "date": date}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / name}")
    return report


def write_rows(
    benchmark: str, options: argparse.Namespace, device: torch.device, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write a table of computed figures (``rows``) with the device and every option, to
    ``options.out/options.name``: the report of a script that computes figures rather than timing them."""
    report = {"benchmark": benchmark, "device": device_info(device), "settings": vars(options), "rows": rows}
    return write_report(report, options.out, options.name)


def untrained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model``'s architecture (its recorded hyperparameters) with the initial weights of seed 0, on the CPU
    and in eval mode: the "untrained" baseline of a quality figure. The global RNG state is left as it was."""
    hparams = {key: value for key, value in model.hparams.items() if not key.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return type(model)(**hparams).eval()
