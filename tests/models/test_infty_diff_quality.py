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
    # Observed (README): 151.2 vs ~227 at 32² (0.67x), 224.8 vs ~298 at 64² (0.75x). The 2x samples are
    # drawn with finer noise and resized kernels the model never trained on, hence the looser bound there.
    bounds = {32: 0.75, 64: 0.85}
    for resolution, bound in bounds.items():
        trained, untrained = figures[resolution]
        assert trained < bound * untrained, (resolution, trained, untrained)
