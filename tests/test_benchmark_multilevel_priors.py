"""``benchmarks/multilevel_priors.py``: the figures of the multilevel README's deviations table.

A small run (two coarse grids, eight images per data set) must give the committed result's figures wherever
they depend on the priors alone, so the committed file cannot drift from the library; the README quotes the
committed figures.
"""

from __future__ import annotations

import json
import math

from tests.helpers import REPO
from tests.test_benchmarks import load_script

RESULT = REPO / "benchmarks" / "results" / "multilevel_priors_cpu.json"
README = REPO / "src" / "rezdiff" / "models" / "multilevel" / "README.md"


def committed() -> dict[tuple[str, str], float]:
    rows = json.loads(RESULT.read_text())["rows"]
    return {(row["figure"], row["grid"]): row["value"] for row in rows}


def test_small_run_repeats_the_committed_prior_figures() -> None:
    rows = load_script("multilevel_priors").compute(grids=(16, 32), limit=8)
    figures = committed()
    prior_only = [
        row
        for row in rows
        if not any(word in row["figure"] for word in ("data", "digits", "downsampling"))
        and (row["figure"], row["grid"]) in figures
    ]
    assert len(prior_only) == 13  # noise stds, mode counts, Nyquist share, combined vs sum
    for row in prior_only:
        expected = figures[(row["figure"], row["grid"])]
        assert math.isclose(row["value"], expected, rel_tol=1e-9), (row, expected)
    data_rows = [row for row in rows if "downsampling" in row["figure"] or "data std" in row["figure"]]
    assert data_rows and all(math.isfinite(row["value"]) and row["value"] >= 0 for row in data_rows)


def test_readme_quotes_the_committed_figures() -> None:
    figures, readme = committed(), README.read_text()
    ratios = [figures[("Matern(8) noise-to-data ratio on digits", str(n))] for n in (32, 64, 128)]
    assert " / ".join(f"{r:.2f}" for r in ratios) == "0.87 / 0.91 / 0.95"
    assert "0.87 / 0.91 / 0.95 at 32² / 64² / 128²" in readme
    stds = [figures[("warm-start prior noise std", str(n))] for n in (32, 64, 128)]
    assert f"per-pixel std {stds[0]:.3f} / {stds[1]:.3f} / {stds[2]:.3f}" in readme
    modes = figures[("AuthorsFNOPrior(32, 16) modes held", "64")]
    assert f"`AuthorsFNOPrior(32, 16)` holds {modes:.0f} modes at 64²" in readme
    nyquist = figures[("share of their FNOprior(32, 16) trace on the Nyquist row (dropped)", "64")]
    assert f"carries {100 * nyquist:.1f} % of their" in readme
    assert "benchmarks/results/multilevel_priors_cpu.json" in readme
