"""Core tests work on small tensors, where intra-op threads only add contention (badly so on a loaded
2-core machine: a 120k-element add takes ~40x longer with 2 threads than with 1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
