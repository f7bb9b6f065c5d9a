"""The defaults of ``sample()`` that the family-specific tests do not pin, for the families whose
``sample()`` mutation testing checks (DDPM's and DVDP's are in their own files): EMA weights unless
``use_ema=False``, and no progress bar unless ``progress=True``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from rezdiff.models import INFD, DiffusionModule, InftyDiff, MultilevelSDE
from rezdiff.models.infty_diff import InftyDiffLatent
from tests.helpers import TINY_INFTY_DIFF, move_live_weights

pytestmark = pytest.mark.usefixtures("single_thread")

EMA = {"decay": 0.5, "warmup": False}


def _multilevel() -> MultilevelSDE:
    return MultilevelSDE(channels=3, modes=6, width=16, n_layers=2, projection=32, time_embedding=32, ema=EMA)


def _infty_diff_latent() -> InftyDiffLatent:
    stage1 = {"class_path": "rezdiff.models.InftyDiff", "init_args": {**TINY_INFTY_DIFF, "latent_dim": 8}}
    return InftyDiffLatent("unused.ckpt", stage1=stage1, hidden_dim=16, num_layers=2, ema=EMA)


def _infd() -> INFD:
    from tests.models.test_infd_latent import TINY, _tiny_autoencoder_config

    return INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **TINY, ema=EMA)


# (builder, sample options): two steps at a small size
FAMILIES: dict[str, tuple[Callable[[], DiffusionModule], dict[str, Any]]] = {
    "multilevel": (_multilevel, {"steps": 2, "resolution": 16}),
    "infty_diff": (lambda: InftyDiff(**TINY_INFTY_DIFF, ema=EMA), {"steps": 2}),
    "infty_diff_latent": (_infty_diff_latent, {"steps": 2, "latent_steps": 2}),
    "infd": (_infd, {"steps": 2, "resolution": 16}),
}


def _sample(model: DiffusionModule, options: dict[str, Any], **extra: Any) -> torch.Tensor:
    options = {**options, **extra}
    resolution = options.pop("resolution", None)
    return model.sample(2, resolution, generator=torch.Generator().manual_seed(0), **options)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sample_uses_ema_weights_by_default(family: str) -> None:
    build, options = FAMILIES[family]
    model = build()
    move_live_weights(model.network)  # the raw weights move, the EMA copy does not
    default = _sample(model, options)
    ema = _sample(model, options, use_ema=True)
    raw = _sample(model, options, use_ema=False)
    torch.testing.assert_close(default, ema, rtol=0, atol=0)
    assert not torch.allclose(default, raw)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sample_is_silent_unless_progress_is_asked_for(
    family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build, options = FAMILIES[family]
    model = build()
    _sample(model, options)
    assert capsys.readouterr().err == ""
    _sample(model, options, progress=True)
    assert capsys.readouterr().err != ""


def _record_start_devices(family: str, model: DiffusionModule, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Wrap the function that draws the family's starting noise so that it records its device argument
    (a CUDA model must draw on CUDA; on a CPU-only machine only the argument shows it)."""
    import rezdiff.models.infd.latent as infd_latent
    import rezdiff.models.infty_diff.latent as infty_latent
    import rezdiff.models.infty_diff.module as infty_module

    devices: list[Any] = []

    def recording(real: Callable[..., Any], position: int) -> Callable[..., Any]:
        def draw(*args: Any, **kwargs: Any) -> Any:
            devices.append(args[position] if len(args) > position else kwargs.get("device"))
            return real(*args, **kwargs)

        return draw

    if family == "multilevel":
        prior = type(model.prior)  # a frozen dataclass: wrap its class's method (self is argument 0)
        monkeypatch.setattr(prior, "sample", recording(prior.sample, 3))
    elif family == "infty_diff":
        real = infty_module.mollified_initial_state
        monkeypatch.setattr(infty_module, "mollified_initial_state", recording(real, 4))
    else:
        module = infty_latent if family == "infty_diff_latent" else infd_latent
        monkeypatch.setattr(module, "randn", recording(module.randn, 2))
    return devices


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sample_draws_its_starting_noise_on_the_models_device(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build, options = FAMILIES[family]
    model = build()
    devices = _record_start_devices(family, model, monkeypatch)
    _sample(model, options)
    assert devices and all(device == model.device for device in devices), devices
