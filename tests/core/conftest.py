"""Core tests work on small tensors, where intra-op threads only add contention (badly so on a loaded
2-core machine: a 120k-element add takes ~40x longer with 2 threads than with 1)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread: None) -> None:
    """Every core test runs with the shared ``single_thread`` fixture."""
