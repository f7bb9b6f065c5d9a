"""Paths and small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TINY_DDPM = REPO / "tests" / "configs" / "tiny_ddpm.yaml"
