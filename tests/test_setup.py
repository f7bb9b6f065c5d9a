"""The README's two set-up commands, CI and the install constraints stay consistent."""

from __future__ import annotations

import ast
import re
import sys

import pytest

from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


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
    if " -n " in install_and_test:  # workers need pytest-xdist, which only the test extra brings
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        assert any(r.startswith("pytest-xdist") for r in project["optional-dependencies"]["test"])


def test_constraints_pin_the_cpu_torch() -> None:
    lines = [line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    assert "torch==2.13.0" in lines


@pytest.mark.heavy
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


# distribution name -> the module it provides, where the two differ
IMPORT_NAMES = {
    "pillow": "PIL",
    "scikit-image": "skimage",
    "scikit-learn": "sklearn",
    "neuraloperator": "neuralop",
    "pyyaml": "yaml",
}
OPTIONAL_IMPORTS = {"triton"}  # the `triton` extra: imported only where it is installed
USED_INDIRECTLY = {"jsonargparse", "tensorboard"}  # LightningCLI's parser and its default logger's writer:
# lightning imports them but does not require them


def test_declared_dependencies_are_the_imported_ones() -> None:
    """Every runtime dependency is imported by the package and every third-party import is declared (an
    unused einops and an undeclared matplotlib were found this way)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = set()
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=; ]", requirement, maxsplit=1)[0].lower()
        declared.add(IMPORT_NAMES.get(name, name))
    imported = set()
    for path in (REPO / "src" / "rezdiff").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"rezdiff", "__future__"} - OPTIONAL_IMPORTS
    assert declared - imported - USED_INDIRECTLY == set(), "declared but never imported"
    assert third_party - declared == set(), "imported but not declared"


def test_core_maths_imports_without_lightning_and_the_package_names_resolve() -> None:
    """No module of ``rezdiff.core`` loads Lightning, diffusers or a higher layer (an eager
    ``rezdiff/__init__`` did; ``core/mollified`` once imported ``rezdiff.data.coords``);
    every public name of ``rezdiff`` still resolves on first use."""
    import subprocess

    code = (
        "import importlib, pkgutil, sys, rezdiff.core\n"
        "for module in pkgutil.iter_modules(rezdiff.core.__path__):\n"
        "    importlib.import_module('rezdiff.core.' + module.name)\n"
        "heavy = sorted(m for m in ('lightning', 'diffusers', 'jsonargparse') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "layers = sorted(m for m in sys.modules if m.startswith(('rezdiff.data', 'rezdiff.models')))\n"
        "assert not layers, layers  # core is the bottom layer\n"
        "import rezdiff\n"
        "missing = [name for name in rezdiff.__all__ if getattr(rezdiff, name, None) is None]\n"
        "assert not missing, missing\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
