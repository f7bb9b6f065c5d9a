"""Slow: the quickstart DDPM learns the synthetic data (multi-scale SWD to held-out images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import quickstart_swd


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 8 training epochs + 4 x 64 samples: the suite's 600 s ran out under load
def test_quickstart_ddpm_beats_the_untrained_model(tmp_path: Path) -> None:
    figures = quickstart_swd("ddpm", tmp_path)
    # At the training resolution the baseline must have learned the data; at 2x (enlarged noise) it is the
    # naive comparison point of the resolution-agnostic papers, so it is reported, not asserted.
    trained, untrained = figures[32]
    assert trained < 0.7 * untrained
