"""Slow: the quickstart DVDP learns the synthetic data (multi-scale SWD to held-out images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import quickstart_swd


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 8 training epochs + 4 x 64 samples: the suite's 600 s ran out under load
def test_quickstart_dvdp_beats_the_untrained_model(tmp_path: Path) -> None:
    figures = quickstart_swd("dvdp", tmp_path, steps=100)  # ancestral sampling, 100 strided steps
    trained, untrained = figures[32]
    assert trained < 0.7 * untrained
