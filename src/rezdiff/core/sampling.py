"""The sampler contract every reverse loop of rezdiff keeps (k-diffusion's idea, in rezdiff's words).

A sampler is one function with one signature (:data:`SamplerFn`)::

    sampler(eps_fn, x_T, schedule, timesteps, settings, generator, callback) -> final state

* ``eps_fn(x_t, t)``: the network (or any ε-predictor; guidance wraps it), ``t`` a ``[B]`` tensor.
* ``x_T``: the initial state, already drawn (and carrying any operator: ``T eps``, ``C^{1/2} z``).
* ``schedule`` and ``timesteps``: what the sampler's *process* defines (see :mod:`rezdiff.core.samplers`):
  the ``alphas_cumprod`` table and descending indices for ``"gaussian"``, a :class:`VPSchedule` and a
  descending time grid (end point included) for ``"vp"``, a ``DVDPSchedule`` and descending indices with
  every turning index for ``"dvdp"``. Spacing is chosen by the caller, never inside a sampler.
* ``settings``: one :class:`SamplerSettings`; each sampler reads the fields it needs.
* ``generator``: :data:`Generators`: one generator for the whole batch, or one per row (per-image seeds:
  row ``k`` draws all its noise from ``generator[k]``, so it does not depend on the batch it is in).
* ``callback(info)``: called after every step with a :class:`StepInfo`; it may return a tensor that
  replaces the state (how guidance moves ``x_{t-1}``), or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

Operator = Callable[[Tensor], Tensor]
EpsFn = Callable[[Tensor, Tensor], Tensor]
# What DDIM's direction term uses once ``clip_x0`` clipped the predicted x_0: the network's eps (diffusers)
# or eps re-derived from the clipped x_0 (OpenAI's guided/improved-diffusion, ∞-Diff's and DVDP's code).
EpsAfterClip = Literal["network", "from_x0"]
# One generator for the batch, or one per row (per-image seeds), or None (the global RNG).
Generators = torch.Generator | Sequence[torch.Generator] | None

__all__ = [
    "Callback",
    "EpsAfterClip",
    "EpsFn",
    "Generators",
    "Operator",
    "SamplerFn",
    "SamplerSettings",
    "StepInfo",
    "VPSchedule",
    "after_step",
    "chain_callbacks",
    "check_timesteps",
    "progress_bar",
    "resolve_generators",
    "seed_generators",
]


@dataclass(frozen=True)
class StepInfo:
    """What a callback sees after step ``index``: the network was called at ``(x_t, t)`` and returned
    ``eps``; the step moved the state to ``x`` at ``t_next`` (``None``: the end of a discrete loop, the
    data). A DVDP turning point's ``x`` is already upsampled."""

    index: int
    t: int | float
    t_next: int | float | None
    x_t: Tensor
    x: Tensor
    eps: Tensor


Callback = Callable[[StepInfo], Tensor | None]


@dataclass(frozen=True)
class SamplerSettings:
    """The knobs of the samplers, one place for all; each sampler reads the ones it uses.

    ``eta``: DDIM's stochasticity (0 deterministic, 1 DDPM's posterior variance). ``clip_x0``: clamp the
    predicted x_0 to ``[-clip_x0, clip_x0]``. ``eps_after_clip``: DDIM's ε once x_0 was clipped.
    ``noise_operator``: applied to every fresh noise draw (``T`` of ∞-Diff, ``C^{1/2}`` of the multilevel
    SDE). ``variance``: the ancestral step's ``"small"``/``"large"`` variance. ``final_alpha_bar``: DDIM's
    last jump target. ``progress``: a tqdm bar over the steps.
    """

    eta: float = 0.0
    clip_x0: float | None = None
    eps_after_clip: EpsAfterClip = "network"
    noise_operator: Operator | None = None
    variance: Literal["small", "large"] = "small"
    final_alpha_bar: float = 1.0
    progress: bool = False


@dataclass(frozen=True)
class VPSchedule:
    """The linear ``beta(t) = beta_min + (beta_max - beta_min) t`` of the continuous VP SDE."""

    beta_min: float = 0.1
    beta_max: float = 20.0


class SamplerFn(Protocol):
    """The one signature of every sampler (module docstring)."""

    def __call__(
        self,
        eps_fn: EpsFn,
        x_T: Tensor,
        schedule: Any,
        timesteps: Tensor | Sequence[int] | Sequence[float],
        settings: SamplerSettings,
        generator: Generators,
        callback: Callback | None,
    ) -> Tensor: ...


def seed_generators(seeds: Iterable[int]) -> list[torch.Generator]:
    """One CPU generator per seed: noise is drawn on the CPU and then moved, the same on any device."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def resolve_generators(num: int, generator: Generators, seeds: Sequence[int] | None) -> Generators:
    """The generator(s) of a ``sample(num, generator=, seeds=)`` call: ``seeds`` (one per image) become one
    generator per row; giving both, or a number of seeds other than ``num``, is a ValueError."""
    if seeds is None:
        if isinstance(generator, Sequence) and len(generator) != num:
            raise ValueError(f"got {len(generator)} generators for {num} samples; pass one per sample")
        return generator
    if generator is not None:
        raise ValueError("pass either generator= or seeds= (one seed per image), not both")
    seeds = list(seeds)
    if len(seeds) != num:
        raise ValueError(f"got {len(seeds)} seeds for {num} samples; pass one seed per sample")
    return seed_generators(seeds)


def check_timesteps(timesteps: Tensor | Sequence[int], num_train_steps: int) -> list[int]:
    """Descending integer timesteps within ``[0, num_train_steps)`` as a list, else a ValueError."""
    ts = [int(t) for t in (timesteps.tolist() if isinstance(timesteps, Tensor) else timesteps)]
    if not ts:
        raise ValueError("timesteps is empty")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps must be strictly decreasing, got {ts}")
    if ts[-1] < 0 or ts[0] >= num_train_steps:
        raise ValueError(f"timesteps must lie in [0, {num_train_steps - 1}], got {ts[0]} .. {ts[-1]}")
    return ts


def progress_bar(items: list[int], enabled: bool, desc: str) -> Iterable[int]:
    """``items`` wrapped in a tqdm bar when ``enabled`` (samplers' ``progress``)."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def after_step(callback: Callback | None, info: StepInfo) -> Tensor:
    """The state after a step: the callback's replacement if it returns one, else ``info.x``."""
    if callback is None:
        return info.x
    replaced = callback(info)
    return info.x if replaced is None else replaced


def chain_callbacks(*callbacks: Callback | None) -> Callback | None:
    """One callback running ``callbacks`` in order, each seeing the state the previous one left (``None``
    entries are skipped; ``None`` if nothing is left)."""
    present = [c for c in callbacks if c is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def chained(info: StepInfo) -> Tensor | None:
        for callback in present:
            info = replace(info, x=after_step(callback, info))
        return info.x

    return chained
