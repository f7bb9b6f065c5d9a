"""Slow: the quickstart ∞-Diff learns the synthetic data, at the training resolution and at 2x (multi-scale
SWD of deblurred samples to held-out images, against the same model untrained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import quickstart_swd


@pytest.mark.slow
@pytest.mark.timeout(3600)  # training + 4 x 64 samples at 32² and 64²: 1822 s on the shared 2-core CPU
def test_quickstart_infty_diff_beats_the_untrained_model_at_1x_and_2x(tmp_path: Path) -> None:
    figures = quickstart_swd("infty_diff", tmp_path, steps=25)
    # Observed (README, 2026-12-07, trailing spacing): 159.5 vs 218.3 at 32² (0.73x), 231.5 vs 283.1 at 64²
    # (0.82x); with leading spacing it was 151.2 vs ~227 (0.67x), 224.8 vs ~298 (0.75x). The 2x samples are
    # drawn with finer noise and resized kernels the model never trained on, hence the looser bound there.
    bounds = {32: 0.75, 64: 0.85}
    for resolution, bound in bounds.items():
        trained, untrained = figures[resolution]
        assert trained < bound * untrained, (resolution, trained, untrained)
