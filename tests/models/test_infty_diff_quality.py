"""Slow: the quickstart ∞-Diff learns the synthetic data, at the training resolution and at 2x (multi-scale
SWD of deblurred samples to held-out images, against the same model untrained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import quickstart_swd


@pytest.mark.slow
@pytest.mark.timeout(1800)  # training + 4 x 64 samples at 32² and 64²: minutes on a 2-core CPU
def test_quickstart_infty_diff_beats_the_untrained_model_at_1x_and_2x(tmp_path: Path) -> None:
    figures = quickstart_swd("infty_diff", tmp_path, steps=25)
    # Observed (README): 179 vs 231 at 32², 262 vs 303 at 64². The toy ∞-Diff learns more slowly than the
    # DDPM quickstart (whose test asks for 0.7x) within the same CPU budget, hence the weaker bound.
    for resolution in (32, 64):
        trained, untrained = figures[resolution]
        assert trained < 0.9 * untrained, (resolution, trained, untrained)
