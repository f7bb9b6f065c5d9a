"""Shared fixtures: tiny configs and a fast CLI runner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_DDPM


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, split the cores between the workers instead of letting each take them all, in the
    worker and in the processes its tests start (a notebook's kernel, CLI runs, DDP ranks): more threads
    than cores make OpenMP's waiting threads spin (the notebook test took minutes beside a busy worker)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the longest tests first: last in line, one would run alone while the other workers idle
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors gain nothing from more, and lose a lot on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_stats_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference features cached by evaluation tests go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("REZDIFF_STATS_DIR", str(tmp_path_factory.mktemp("stats")))


@pytest.fixture
def fit_tiny(tmp_path: Path):
    """Run ``rezdiff fit`` on a tiny config (DDPM by default) in ``tmp_path/run`` with extra CLI arguments."""
    from rezdiff.cli import main

    def run(*extra: str, root: Path | None = None, config: Path = TINY_DDPM):
        root = root or tmp_path / "run"
        return main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root), *extra])

    return run
