"""The sampler registry: every sampler rezdiff runs, by process and name, in one place.

A *process* names what a sampler's ``schedule`` and ``timesteps`` are (:mod:`rezdiff.core.sampling`):

* ``"gaussian"``: discrete linear-Gaussian diffusion; ``schedule`` = the ``alphas_cumprod`` table,
  ``timesteps`` = descending indices (DDPM, ∞-Diff in its T-space, the latent models of ∞-Diff and INFD).
* ``"vp"``: the continuous VP SDE; ``schedule`` = a :class:`~rezdiff.core.sampling.VPSchedule`,
  ``timesteps`` = a descending float time grid, end point included (the multilevel SDE).
* ``"dvdp"``: DVDP's dimensionality-varying process; ``schedule`` = a
  :class:`~rezdiff.core.pyramid.DVDPSchedule`, ``timesteps`` = descending indices with every turning index.

A family declares its process (``DiffusionModule.sampler_process``) and runs every sampler registered for
it: adding one (say DPM-Solver++ for ``"gaussian"``) is one function with the
:class:`~rezdiff.core.sampling.SamplerFn` signature plus one :func:`register_sampler` line, and it is then
a valid ``sampler=`` of every such family's ``sample``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rezdiff.core.loops import ddim_sample, ddpm_sample, vp_integrate
from rezdiff.core.pyramid import DVDPSchedule, dvdp_sample
from rezdiff.core.sampling import Callback, EpsFn, Generators, SamplerFn, SamplerSettings, VPSchedule

GAUSSIAN = "gaussian"
VP = "vp"
DVDP = "dvdp"

__all__ = [
    "DVDP",
    "GAUSSIAN",
    "VP",
    "RegisteredSampler",
    "check_sampler",
    "get_sampler",
    "register_sampler",
    "sampler_names",
    "unregister_sampler",
]


@dataclass(frozen=True)
class RegisteredSampler:
    """A registry entry: the function and whether ``steps=None`` means every training step (ancestral
    sampling's custom) rather than the model's ``sample_steps``."""

    fn: SamplerFn
    all_steps: bool = False


@dataclass(frozen=True)
class _Built:
    """A registry entry whose function ``factory(**options)`` builds each time :func:`get_sampler` looks it
    up, not once at import: mutation testing (``benchmarks/mutation.py``) switches a function's mutant on
    only when it is called, so a closure built at import would never run a mutant of its factory."""

    factory: Callable[..., SamplerFn]
    options: dict[str, object]
    all_steps: bool = False

    def build(self) -> RegisteredSampler:
        """The entry with its function built now."""
        return RegisteredSampler(self.factory(**self.options), self.all_steps)


_REGISTRY: dict[str, dict[str, RegisteredSampler | _Built]] = {GAUSSIAN: {}, VP: {}, DVDP: {}}


def _process(process: str) -> dict[str, RegisteredSampler | _Built]:
    if process not in _REGISTRY:
        raise ValueError(f"unknown sampler process {process!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[process]


def register_sampler(
    process: str, name: str, fn: SamplerFn, *, all_steps: bool = False, replace: bool = False
) -> None:
    """Make ``fn`` the sampler ``name`` of ``process``; an existing name needs ``replace=True``."""
    entries = _process(process)
    if name in entries and not replace:
        raise ValueError(f"sampler {name!r} is already registered for {process!r}; pass replace=True")
    entries[name] = RegisteredSampler(fn, all_steps)


def unregister_sampler(process: str, name: str) -> None:
    """Remove the sampler ``name`` of ``process`` (a ValueError if there is none)."""
    entries = _process(process)
    if name not in entries:
        raise ValueError(f"no sampler {name!r} is registered for {process!r}")
    del entries[name]


def sampler_names(process: str) -> tuple[str, ...]:
    """The names registered for ``process``, sorted."""
    return tuple(sorted(_process(process)))


def check_sampler(process: str, name: str) -> str:
    """``name`` if it is registered for ``process``, else the ValueError that lists the choices."""
    if name not in _process(process):
        raise ValueError(f"unknown sampler {name!r}; expected one of {list(sampler_names(process))}")
    return name


def get_sampler(process: str, name: str) -> RegisteredSampler:
    """The registry entry of sampler ``name`` of ``process`` (ValueError naming the choices if unknown)."""
    entry = _process(process)[check_sampler(process, name)]
    return entry.build() if isinstance(entry, _Built) else entry


# ------------------------------------------------------------------------------------------- "gaussian"


def ddim(
    eps_fn: EpsFn,
    x_T: Tensor,
    schedule: Tensor,
    timesteps: Tensor | Sequence[int],
    settings: SamplerSettings,
    generator: Generators,
    callback: Callback | None,
) -> Tensor:
    """DDIM (:func:`rezdiff.core.loops.ddim_sample`) under the sampler contract."""
    return ddim_sample(
        eps_fn,
        x_T,
        schedule,
        timesteps,
        eta=settings.eta,
        generator=generator,
        clip_x0=settings.clip_x0,
        eps_after_clip=settings.eps_after_clip,
        noise_operator=settings.noise_operator,
        final_alpha_bar=settings.final_alpha_bar,
        progress=settings.progress,
        callback=callback,
    )


def ddpm(
    eps_fn: EpsFn,
    x_T: Tensor,
    schedule: Tensor,
    timesteps: Tensor | Sequence[int],
    settings: SamplerSettings,
    generator: Generators,
    callback: Callback | None,
) -> Tensor:
    """Ancestral sampling (:func:`rezdiff.core.loops.ddpm_sample`) under the sampler contract."""
    return ddpm_sample(
        eps_fn,
        x_T,
        schedule,
        generator=generator,
        variance=settings.variance,
        clip_x0=settings.clip_x0,
        noise_operator=settings.noise_operator,
        timesteps=timesteps,
        progress=settings.progress,
        callback=callback,
    )


# ------------------------------------------------------------------------------------------------- "vp"


def _vp(ode: bool, solver: str) -> SamplerFn:
    def run(
        eps_fn: EpsFn,
        x_T: Tensor,
        schedule: VPSchedule,
        timesteps: Tensor | Sequence[float],
        settings: SamplerSettings,
        generator: Generators,
        callback: Callback | None,
    ) -> Tensor:
        return vp_integrate(
            eps_fn,
            x_T,
            torch.as_tensor(timesteps, dtype=torch.float64),
            beta_min=schedule.beta_min,
            beta_max=schedule.beta_max,
            generator=generator,
            noise_operator=settings.noise_operator,
            ode=ode,
            solver=solver,  # type: ignore[arg-type]
            progress=settings.progress,
            callback=callback,
        )

    kind = "ODE" if ode else "SDE"
    run.__doc__ = f"The reverse VP {kind} by {solver} (:func:`~rezdiff.core.loops.vp_integrate`)."
    return run


# ----------------------------------------------------------------------------------------------- "dvdp"


def _dvdp(kind: str) -> SamplerFn:
    def run(
        eps_fn: EpsFn,
        x_T: Tensor,
        schedule: DVDPSchedule,
        timesteps: Sequence[int],
        settings: SamplerSettings,
        generator: Generators,
        callback: Callback | None,
    ) -> Tensor:
        return dvdp_sample(
            eps_fn,
            x_T,
            schedule,
            [int(t) for t in timesteps],
            sampler=kind,  # type: ignore[arg-type]
            eta=settings.eta,
            clip_x0=settings.clip_x0,
            generator=generator,
            progress=settings.progress,
            callback=callback,
        )

    run.__doc__ = f"DVDP's {kind} reverse process (:func:`~rezdiff.core.pyramid.dvdp_sample`)."
    return run


register_sampler(GAUSSIAN, "ddim", ddim)
register_sampler(GAUSSIAN, "ddpm", ddpm, all_steps=True)
# the factory-made samplers are built at lookup (:class:`_Built`); register_sampler(..., replace=True)
# or unregister_sampler treat them like any other entry
_REGISTRY[VP]["sde"] = _Built(_vp, {"ode": False, "solver": "euler"})
_REGISTRY[VP]["ode_euler"] = _Built(_vp, {"ode": True, "solver": "euler"})
_REGISTRY[VP]["ode_heun"] = _Built(_vp, {"ode": True, "solver": "heun"})
_REGISTRY[DVDP]["ddim"] = _Built(_dvdp, {"kind": "ddim"})
_REGISTRY[DVDP]["ddpm"] = _Built(_dvdp, {"kind": "ddpm"}, all_steps=True)
