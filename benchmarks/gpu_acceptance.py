"""GPU acceptance: every GPU figure of the project in one command, each part under a time budget.

    python benchmarks/gpu_acceptance.py --out benchmarks/results/    # on one H100/H200: < 8 minutes
    python benchmarks/gpu_acceptance.py --smoke --out /tmp/acc       # every part at toy sizes (CPU, seconds)

Parts (``acceptance_parts.PARTS``, in this order, each with a share of ``--budget-s``): the ``gpu``-marked
tests (``pytest -m gpu`` in a subprocess, one row per test), the sparse operator's rows and measured ``auto``
density threshold, ∞-Diff's training step at 1x-16x subsampling (Tables 4-5's 256²/64² setting, bf16),
DVDP vs DDPM at 256² (Table 1, K = 2 {300, 600}), INFD rendering 256² -> 2048² whole vs tiled, the DDPM
U-Net's training step (fp32, bf16-mixed, bf16 + torch.compile, MFU, beside the same U-Net in a plain
diffusers loop) and one paper config per family for 20 bf16 steps. A part that fails, runs out of its
budget (SIGALRM; the pytest subprocess by its timeout) or cannot run is recorded with ``status`` and a
one-line ``error``, and the run goes on. One JSON (``gpu_acceptance_<device>.json``; ``--smoke``:
``gpu_acceptance_smoke.json``) records device, versions and git commit; on CUDA the sub-benchmarks also
write their own ``*_cuda.json`` beside it, and when ``--out`` is ``benchmarks/results`` the README tables
are regenerated.

First step: if ``--wheelhouse`` (default ``build/wheelhouse``, made by ``benchmarks/gpu_wheels.sh``) exists
and diffusers, neuraloperator, jsonargparse or rezdiff cannot be imported, they are installed from it with
``pip install --no-index`` (a bare GPU machine has no index to reach). Only the standard library is
imported before that step.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
# Import name -> distribution name of what a bare GPU machine may lack (rezdiff: its wheel, no-deps).
TRAVELLING = {"diffusers": "diffusers", "neuralop": "neuraloperator", "jsonargparse": "jsonargparse"}


def install_from_wheelhouse(wheelhouse: Path) -> dict[str, Any]:
    """Install the missing travelling packages (and rezdiff) from ``wheelhouse`` without an index."""
    missing = [dist for module, dist in TRAVELLING.items() if importlib.util.find_spec(module) is None]
    if importlib.util.find_spec("rezdiff") is None and not (REPO / "src" / "rezdiff").is_dir():
        missing.append("rezdiff")
    record: dict[str, Any] = {"wheelhouse": str(wheelhouse), "missing": missing, "installed": False}
    if missing and wheelhouse.is_dir():
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse)]
        done = subprocess.run([*command, *missing], capture_output=True, text=True)
        record["installed"] = done.returncode == 0
        record["pip_last_line"] = ((done.stdout + done.stderr).strip().splitlines() or [""])[-1][:300]
        importlib.invalidate_caches()
    return record


def package_version(module: str) -> str | None:
    """``module.__version__``, or None where it is not installed (or fails to import)."""
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(device: Any) -> dict[str, Any]:
    """Device name and memory, library versions (None: not installed), git commit."""
    import torch
    from common import cpu_name

    info: dict[str, Any] = {"type": device.type, "cpu": cpu_name(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(name=properties.name, memory_gib=round(properties.total_memory / 2**30, 1))
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    for module in ("triton", "diffusers", "neuralop", "jsonargparse", "lightning", "rezdiff"):
        versions[module] = package_version(module)
    return {"device": info, "versions": versions, "git_commit": git_commit()}


class PartTimeout(Exception):
    """A part ran past its budget."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`PartTimeout` in the block after ``seconds`` (SIGALRM: main thread on POSIX only; a
    long CUDA kernel or C++ call is interrupted when it returns to Python)."""
    usable = hasattr(signal, "setitimer") and _main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise PartTimeout(f"ran past its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)  # an outer alarm (pytest-timeout) is put back
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_part(name: str, fn: Callable[[Any], dict[str, Any]], ctx: Any) -> dict[str, Any]:
    """``fn(ctx)`` under its budget; ``{"status": "ok"|"failed"|"skipped", "error": one line, ...}``."""
    import torch
    from acceptance_parts import PartialFailure, Skipped, one_line

    print(f"== {name} (budget {ctx.budget_s:.0f} s)", flush=True)
    start = time.perf_counter()
    try:
        with time_limit(ctx.budget_s):
            result = {"status": "ok", "error": None, **fn(ctx)}
    except Skipped as error:
        result = {"status": "skipped", "error": str(error)}
    except PartialFailure as error:
        result = {"status": "failed", "error": one_line(error), **error.partial}
    except (Exception, PartTimeout, subprocess.TimeoutExpired) as error:
        result = {"status": "failed", "error": one_line(error)}
    finally:
        gc.collect()
        if ctx.device.type == "cuda":
            try:  # a part's CUDA error may surface here; it is that part's, recorded above if raised there
                torch.cuda.synchronize(ctx.device)
                torch.cuda.empty_cache()
            except RuntimeError as error:
                print(f"   after {name}: {one_line(error)}", flush=True)
    result["seconds"] = time.perf_counter() - start
    result["budget_s"] = ctx.budget_s
    print(f"   {name}: {result['status']} in {result['seconds']:.1f} s {result['error'] or ''}", flush=True)
    return result


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS), help="folder of the acceptance JSON")
    parser.add_argument("--smoke", action="store_true", help="every part at toy sizes (the CPU test)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds shared by the parts (default 420; --smoke: 1800, for a loaded shared CPU)",
    )
    parser.add_argument("--parts", nargs="+", default=None, help="run only these parts (default: all)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--wheelhouse", default=str(REPO / "build" / "wheelhouse"))
    parser.add_argument("--vgg-weights", default=None, help="VGG16 file for INFD's LPIPS (else lap_l1)")
    options = parser.parse_args(args)
    if options.budget_s is None:
        options.budget_s = 1800.0 if options.smoke else 420.0
    if options.budget_s <= 0:
        raise ValueError(f"--budget-s must be positive, got {options.budget_s}")
    setup = install_from_wheelhouse(Path(options.wheelhouse))
    if (REPO / "src" / "rezdiff").is_dir() and importlib.util.find_spec("rezdiff") is None:
        sys.path.insert(0, str(REPO / "src"))  # a bare machine: rezdiff from the source tree
    sys.path.insert(0, str(HERE))
    import acceptance_parts
    import torch
    from acceptance_parts import Context

    unknown = sorted(set(options.parts or []) - set(acceptance_parts.PARTS))
    if unknown:
        raise ValueError(f"--parts: unknown {unknown}; choose from {list(acceptance_parts.PARTS)}")
    if options.threads:
        torch.set_num_threads(options.threads)
    cuda = torch.cuda.is_available() if options.device == "auto" else options.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible; use --device cpu with --smoke")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    # Sub-benchmarks write their own files: beside the acceptance JSON on CUDA (names end in _cuda), else
    # in a temporary folder, so that a CPU or smoke run never replaces a committed CPU result.
    scratch = tempfile.TemporaryDirectory(prefix="gpu_acceptance_")
    raw_out = out if device.type == "cuda" and not options.smoke else Path(scratch.name)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report: dict[str, Any] = {"benchmark": "gpu_acceptance", "smoke": options.smoke, "setup": setup}
    report.update(environment(device), date=started, budget_s=options.budget_s, parts={})
    clock = time.perf_counter()
    for name, (fn, share) in acceptance_parts.PARTS.items():
        if options.parts and name not in options.parts:
            continue
        ctx = Context(device, options.smoke, raw_out, share * options.budget_s, options.vgg_weights)
        report["parts"][name] = run_part(name, fn, ctx)
    report["total_seconds"] = time.perf_counter() - clock
    scratch.cleanup()
    path = out / ("gpu_acceptance_smoke.json" if options.smoke else f"gpu_acceptance_{device.type}.json")
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    print(f"wrote {path} ({report['total_seconds']:.0f} s)")
    if out.resolve() == RESULTS.resolve() and not options.smoke:
        import report as readme_report

        readme_report.main([])
    return report


def _jsonable(value: Any) -> Any:
    """Tensors and other numbers JSON does not know, as floats (or their text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


if __name__ == "__main__":
    main()
