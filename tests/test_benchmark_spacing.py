"""``benchmarks/spacing_swd.py``: DDIM's old and new settings on one checkpoint, for a model that clips x̂₀
(DDPM: three variants, plus the untrained reference) and one that does not (INFD's latent DDIM: the two
spacings alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rezdiff
from rezdiff.models import INFD
from tests.helpers import REPO, TINY_DDPM, untrained_checkpoint
from tests.test_benchmarks import load_script

TINY_INFD_LATENT = REPO / "tests" / "configs" / "tiny_infd_latent.yaml"


def test_ddpm_runs_every_variant_and_the_untrained_reference(tmp_path: Path, single_thread: None) -> None:
    ckpt = untrained_checkpoint(TINY_DDPM, tmp_path / "tiny.ckpt")
    args = ["--ckpt", str(ckpt), "--config", str(TINY_DDPM), "--name", "tiny", "--num", "2", "--steps", "2"]
    report = load_script("spacing_swd").main(
        [*args, "--resolutions", "16", "--untrained", "--device", "cpu", "--out", str(tmp_path)]
    )
    assert json.loads((tmp_path / "spacing_swd_tiny_cpu.json").read_text()) == report
    settings = [(row["weights"], row["spacing"], row["eps_after_clip"]) for row in report["rows"]]
    assert settings == [
        ("trained", "leading", "network"),
        ("trained", "trailing", "network"),
        ("trained", "trailing", "from_x0"),
        ("untrained", "trailing (default)", "from_x0 (default)"),
    ]
    assert all(row["swd_x1e3"] > 0 and row["resolution"] == 16 for row in report["rows"])


@pytest.fixture
def tiny_infd(monkeypatch: pytest.MonkeyPatch) -> INFD:
    """An untrained tiny INFD stage 2 (stage 1 built from its config) that ``rezdiff.load`` returns."""
    from tests.models.test_infd_latent import TINY, _tiny_autoencoder_config

    model = INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **TINY).eval()
    monkeypatch.setattr(rezdiff, "load", lambda path, map_location=None: model)
    return model


def test_infd_latent_runs_the_two_spacings_without_a_clipping_choice(
    tmp_path: Path, tiny_infd: INFD, single_thread: None
) -> None:
    args = ["--ckpt", "stage2.ckpt", "--config", str(TINY_INFD_LATENT), "--name", "infd", "--num", "2"]
    report = load_script("spacing_swd").main(
        [*args, "--steps", "2", "--resolutions", "16", "--device", "cpu", "--out", str(tmp_path)]
    )
    settings = [(row["spacing"], row["eps_after_clip"]) for row in report["rows"]]
    assert settings == [("leading", "no clipping"), ("trailing", "no clipping")]
    assert report["model"] == "INFD" and all(row["swd_x1e3"] > 0 for row in report["rows"])


def test_a_clipping_variant_for_a_model_that_does_not_clip_is_refused(
    tmp_path: Path, tiny_infd: INFD
) -> None:
    args = ["--ckpt", "stage2.ckpt", "--config", str(TINY_INFD_LATENT), "--name", "infd", "--num", "2"]
    with pytest.raises(ValueError, match="INFD.sample has no eps_after_clip.*--variants trailing$"):
        load_script("spacing_swd").main([*args, "--variants", "trailing/from_x0", "--out", str(tmp_path)])
