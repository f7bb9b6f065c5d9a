"""No config uses the data module's old key ``sampler``/``val_sampler`` (renamed ``view``/``val_view``,
issue 18 item 4), so the deprecated key cannot creep back; ``model.init_args.sampler`` (the diffusion
sampler) is untouched."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import CONFIGS, REPO

OLD_KEY = re.compile(r"(^|\.)data\.init_args\.(val_)?sampler(\.|$)")
CONFIG_FILES = sorted([*CONFIGS.rglob("*.yaml"), *(REPO / "tests" / "configs").glob("*.yaml")])


def dotted_paths(node: Any, prefix: str = "") -> list[str]:
    """Every key of a YAML tree as a dotted path (nested mappings and dotted keys alike; list items, such as a
    sweep's override mappings, keep their parent's path)."""
    paths: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths += [path, *dotted_paths(value, path)]
    elif isinstance(node, list):
        for item in node:
            paths += dotted_paths(item, prefix)
    return paths


def old_keys(text: str) -> list[str]:
    """The old data-view keys in a config's text: as YAML keys at any depth, or written out in strings."""
    found = [path for path in dotted_paths(yaml.safe_load(text)) if OLD_KEY.search(path)]
    return found + re.findall(r"data\.init_args\.(?:val_)?sampler\b", text)


def test_the_check_finds_every_spelling_of_the_old_key() -> None:
    assert old_keys("data:\n  init_args:\n    sampler:\n      class_path: rezdiff.data.FullGrid\n")
    assert old_keys("data:\n  init_args:\n    val_sampler: null\n")
    assert old_keys("grid:\n  a:\n    - x.yaml\n    - {data.init_args.sampler.init_args.resolution: 8}\n")
    assert old_keys("config:\n  data.init_args:\n    sampler: {class_path: rezdiff.data.FullGrid}\n")
    assert old_keys("# run with --data.init_args.sampler.init_args.resolution 64\nseed_everything: 0\n")
    assert not old_keys("model:\n  init_args:\n    sampler: ddim\ndata:\n  init_args:\n    view: null\n")


def test_the_configs_are_found() -> None:
    assert len(CONFIG_FILES) > 20 and any(path.parent.name == "sweeps" for path in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_config_names_the_data_view_sampler(path: Path) -> None:
    found = old_keys(path.read_text())
    assert not found, f"{path.relative_to(REPO)} uses the old key {found[0]}: write data.init_args.view"
