"""benchmarks/report.py: the README tables are generated from the committed results and kept current."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("report", REPO / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_readme_tables_are_up_to_date_with_the_committed_results() -> None:
    assert report.main(["--check"]) == 0, "run: python benchmarks/report.py"


def test_every_claim_has_a_section_and_rows_carry_device_date_and_paper() -> None:
    tables = report.render(report.load_results())
    for title, _, _ in report.CLAIMS:
        assert f"### {title}\n" in tables
    dvdp = tables.split("### DVDP speed-up")[1].split("###")[0]
    rows = [line for line in dvdp.splitlines() if line.startswith("| 64²")]
    assert rows and all("2026-" in row for row in rows)
    assert "| 1.98 |" in dvdp  # the paper's Table 3 figure beside ours
    assert "3.15" in tables.split("### ∞-Diff subsampling")[1].split("###")[0]  # paper figure, no result yet


def test_rewrite_keeps_the_prose_and_check_detects_stale_tables(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro prose\n\n<!-- report:begin -->\nold table\n<!-- report:end -->\nclosing prose\n")
    results = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    args = ["--readme", str(readme), "--results", str(results)]
    assert report.main([*args, "--check"]) == 1
    assert report.main(args) == 0
    text = readme.read_text()
    assert text.startswith("intro prose\n") and text.endswith("closing prose\n") and "old table" not in text
    assert report.main([*args, "--check"]) == 0

    # a new result file of an unknown benchmark shows up as its own generic table
    extra = {
        "benchmark": "new_claim",
        "device": {"type": "cuda", "name": "H100"},
        "date": "2027-01-01T00:00",
        "rows": [{"size": 64, "seconds": 0.5}],
    }
    (results / "new_claim_gpu.json").write_text(json.dumps(extra))
    assert report.main([*args, "--check"]) == 1
    report.main(args)
    assert "| H100 | 2027-01-01 | 64 | 0.5 |" in readme.read_text()
