"""The README's two set-up commands, CI and the install constraints stay consistent."""

from __future__ import annotations

import re

from tests.helpers import REPO


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "the README must open with a bash block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_commands_and_ci_runs_the_second() -> None:
    install_and_run, install_and_test = readme_commands()
    assert (
        "-c constraints.txt" in install_and_run
        and "rezdiff fit --config configs/quickstart/ddpm.yaml" in install_and_run
    )
    assert "-c constraints.txt" in install_and_test and "pytest" in install_and_test
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert install_and_test.strip() in ci_lines


def test_constraints_pin_the_cpu_torch() -> None:
    lines = [line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    assert "torch==2.13.0" in lines


def test_every_config_parses(tmp_path) -> None:
    """Each shipped config is valid for the CLI (parsed and checked, nothing trained)."""
    import pytest

    from rezdiff.cli import main

    for config in sorted((REPO / "configs").rglob("*.yaml")):
        if "sweeps" in config.parts:
            continue
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None), config
