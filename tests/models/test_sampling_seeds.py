"""Per-image seeds (issue 16, item 3): with ``seeds=`` image ``k`` draws all of its noise (initial state,
ancestral noise, DVDP turning-point noise, the multilevel prior, latent codes) from its own generator, so it
is bit-identical whatever batch it is sampled in, and in whatever order.

Each family runs a stochastic sampler (noise at every step), with untrained tiny networks: the check is on
where the noise comes from, not on image quality. ``INFDAutoencoder`` has no generative model (its
``sample`` refuses), so six of the seven module classes sample here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from rezdiff.models import DDPM, DVDP, INFD, DiffusionModule, InftyDiff, MultilevelSDE
from rezdiff.models.infty_diff import InftyDiffLatent
from tests.helpers import TINY_INFTY_DIFF, TINY_UNET

pytestmark = pytest.mark.usefixtures("single_thread")


def _infd() -> INFD:
    from tests.models.test_infd_latent import TINY, _tiny_autoencoder_config

    return INFD("unused.ckpt", autoencoder_config=_tiny_autoencoder_config(), **TINY, eta=1.0)


def _infty_diff_latent() -> InftyDiffLatent:
    stage1 = {"class_path": "rezdiff.models.InftyDiff", "init_args": {**TINY_INFTY_DIFF, "latent_dim": 8}}
    return InftyDiffLatent("unused.ckpt", stage1=stage1, hidden_dim=16, num_layers=2, eta=1.0)


# (builder, sample options): every sampler here draws fresh noise at each step.
FAMILIES: dict[str, tuple[Callable[[], DiffusionModule], dict[str, Any]]] = {
    "ddpm": (lambda: DDPM(**TINY_UNET), {"sampler": "ddpm", "steps": 3}),
    "dvdp": (lambda: DVDP(**TINY_UNET, turning_points=(50,)), {"sampler": "ddpm", "steps": 3}),
    "multilevel": (
        lambda: MultilevelSDE(channels=3, modes=6, width=16, n_layers=2, projection=32, time_embedding=32),
        {"sampler": "sde", "steps": 3, "resolution": 16},
    ),
    "infty_diff": (lambda: InftyDiff(**TINY_INFTY_DIFF), {"sampler": "ddpm", "steps": 3}),
    "infty_diff_latent": (_infty_diff_latent, {"sampler": "ddpm", "steps": 3, "latent_steps": 3}),
    "infd": (_infd, {"steps": 3, "resolution": 16}),
}


def rowwise(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` applied one row at a time (every tensor argument with the batch's leading size is sliced)."""

    def run(*args: Any, **kwargs: Any) -> Tensor:
        size = args[0].shape[0]

        def row(value: Any, i: int) -> Any:
            is_batched = isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == size
            return value[i : i + 1] if is_batched else value

        rows = [
            fn(*(row(a, i) for a in args), **{k: row(v, i) for k, v in kwargs.items()}) for i in range(size)
        ]
        return torch.cat(rows)

    return run


def rowwise_denoiser(model: InftyDiff) -> Callable[..., Any]:
    """``model.denoiser`` whose ε-function runs one row (and its code) at a time."""
    original = model.denoiser

    def denoiser(resolution: Any, *, z: Tensor | None = None, use_ema: bool = True) -> Callable[..., Tensor]:
        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            code = [None if z is None else z[i : i + 1] for i in range(x.shape[0])]
            rows = [
                original(resolution, z=code[i], use_ema=use_ema)(x[i : i + 1], t[i : i + 1])
                for i in range(len(code))
            ]
            return torch.cat(rows)

        return eps_fn

    return denoiser


def make_batch_invariant(model: DiffusionModule, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every network of ``model`` one image at a time during sampling.

    Batched CPU kernels (convolutions, matrix products) round differently for different batch sizes (by
    ~1e-6 for these networks), which untrained networks and few steps amplify; one image at a time, the
    only thing that could still differ between batches is the noise, which is what seeds must fix.
    """
    if isinstance(model, MultilevelSDE):
        monkeypatch.setattr(model, "eps", rowwise(model.eps))
        return
    if isinstance(model, InftyDiff):
        monkeypatch.setattr(model, "denoiser", rowwise_denoiser(model))
        return
    network = model.sampling_network
    monkeypatch.setattr(model, "sampling_network", lambda use_ema=True: rowwise(network(use_ema)))
    if isinstance(model, InftyDiffLatent):
        monkeypatch.setattr(model.stage1, "denoiser", rowwise_denoiser(model.stage1))
    if isinstance(model, INFD):
        monkeypatch.setattr(model, "decode", rowwise(model.decode))
        monkeypatch.setattr(model, "render", rowwise(model.render))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_image_k_is_the_same_in_any_batch(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build, options = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    make_batch_invariant(model, monkeypatch)

    def sample(seeds: list[int]) -> Tensor:
        return model.sample(len(seeds), seeds=seeds, **options)

    four = sample([0, 1, 2, 3])
    assert torch.equal(four, torch.cat([sample([0, 1]), sample([2, 3])]))
    assert torch.equal(four[2:3], sample([2]))
    assert torch.equal(four[[3, 1]], sample([3, 1]))  # order does not matter either
    assert not torch.equal(four[0], four[1])  # distinct seeds, distinct images


def test_seeds_are_checked() -> None:
    model = DDPM(**TINY_UNET)
    with pytest.raises(ValueError, match="one seed per sample"):
        model.sample(2, seeds=[0])
    with pytest.raises(ValueError, match="not both"):
        model.sample(1, seeds=[0], generator=torch.Generator().manual_seed(0))
