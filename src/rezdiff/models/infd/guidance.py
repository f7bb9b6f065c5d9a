"""Any-scale guidance (INFD paper §5.5): conditions on boxes of the image, each rendered at its own size.

A :class:`Condition` is a box of the whole image (any position, any scale, in the ``[-1, 1]`` coordinates
of :mod:`rezdiff.data.coords`), the small resolution its patch is rendered at, a differentiable loss of
that patch and a weight. Sampling follows diffusion posterior sampling (DPS, Chung et al. 2023, Alg. 1)
in a latent DDIM loop: at every step the predicted clean latent ``x̂₀(x_t)`` is decoded, each box is
rendered, the weighted losses are summed to ``L``, and after the ordinary DDIM step ``x_{t-1}`` is moved
against ``∇_{x_t}`` through the network:

``x_{t-1} ← x_{t-1} − ζ ∇_{x_t} √L``  (``normalize=True``, the default), i.e. ``ζ ∇L / (2 √L)``.

For ``L = ‖y − A(x̂₀)‖²`` this is exactly DPS's step ``ζ ∇‖y − A(x̂₀)‖`` (their step size is normalised
by the residual norm). It is taken per sample (DPS's code uses the norm over the whole batch, which
couples the samples of a batch). Where ``L = 0`` the step is zero. ``normalize=False`` uses ``ζ ∇L``
(needed for losses that can be negative, e.g. a CLIP similarity). The shipped losses are squared
residual norms ``‖y − A(patch)‖²`` (sums, not means), so ``normalize=True`` is DPS's step exactly and
``ζ`` has DPS's meaning; a constraint whose operator ``A`` averages many pixels (a mean colour) has a
small gain per pixel and needs a larger ``ζ`` than a per-pixel reference.

Only the network, decoder and renderer are differentiated; nothing here knows about Lightning.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rezdiff.core.gaussian import predict_x0
from rezdiff.core.loops import ddim_sample
from rezdiff.core.sampling import EpsFn, Generators, StepInfo
from rezdiff.data.coords import Resolution, as_hw

__all__ = [
    "Box",
    "ColorLoss",
    "Condition",
    "DPSGuidance",
    "GuidanceLoss",
    "ReferenceLoss",
    "conditions_loss",
    "dps_ddim_sample",
    "guided_sample",
    "parse_condition",
]

# A loss of a rendered patch [B, C, h, w] -> per-sample values [B] (a scalar is broadcast to the batch).
GuidanceLoss = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Box:
    """An axis-aligned region ``[x0, x1] x [y0, y1]`` of the image in ``[-1, 1]`` coordinates (x = column)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not (-1.0 <= self.x0 < self.x1 <= 1.0 and -1.0 <= self.y0 < self.y1 <= 1.0):
            raise ValueError(
                f"a box needs -1 <= x0 < x1 <= 1 and -1 <= y0 < y1 <= 1 (whole-image coordinates), got {self}"
            )

    @classmethod
    def from_pixels(cls, left: int, top: int, right: int, bottom: int, resolution: Resolution) -> Box:
        """The box covering pixel columns ``left:right`` and rows ``top:bottom`` of a ``resolution`` grid."""
        height, width = as_hw(resolution)
        return cls(2 * left / width - 1, 2 * top / height - 1, 2 * right / width - 1, 2 * bottom / height - 1)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass
class Condition:
    """Render ``box`` at ``resolution`` (int or ``(h, w)``); score the patch with ``weight * loss(patch)``."""

    box: Box
    resolution: Resolution
    loss: GuidanceLoss
    weight: float = 1.0


class ReferenceLoss:
    """``‖y − A(patch)‖²``: squared distance to a low-resolution reference ``y`` of the box, with ``A`` the
    area downsampling of the rendered patch to the reference size, summed per sample (DPS's residual).

    ``reference`` is ``[C, h, w]`` (shared by the batch) or ``[B, C, h, w]`` in ``[-1, 1]``; rendering the
    box finer than the reference makes it a super-resolution constraint at any scale.
    """

    def __init__(self, reference: Tensor) -> None:
        if reference.ndim not in (3, 4):
            raise ValueError(f"reference must be [C, h, w] or [B, C, h, w], got {tuple(reference.shape)}")
        self.reference = reference if reference.ndim == 4 else reference.unsqueeze(0)

    def __call__(self, patch: Tensor) -> Tensor:
        size = tuple(self.reference.shape[-2:])
        if patch.shape[-2] < size[0] or patch.shape[-1] < size[1]:
            raise ValueError(
                f"render the box at least at the reference size {size}, got {tuple(patch.shape[-2:])}"
            )
        low = F.interpolate(patch, size=size, mode="area") if tuple(patch.shape[-2:]) != size else patch
        reference = self.reference.to(device=patch.device, dtype=patch.dtype)
        return (low - reference).square().flatten(1).sum(1)


class ColorLoss:
    """``‖μ − mean‖² (+ ‖σ − std‖²)``: squared distance of the patch's per-channel mean ``μ`` (and standard
    deviation ``σ``, if ``std`` is given) to targets in ``[-1, 1]`` units (``(1, -1, -1)`` asks for red)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float] | None = None) -> None:
        self.mean = torch.tensor([float(v) for v in mean])
        self.std = None if std is None else torch.tensor([float(v) for v in std])
        if self.std is not None and self.std.shape != self.mean.shape:
            raise ValueError(f"mean and std need one value per channel each, got {len(mean)} and {len(std)}")

    def __call__(self, patch: Tensor) -> Tensor:
        if patch.shape[1] != self.mean.numel():
            raise ValueError(f"ColorLoss has {self.mean.numel()} channel targets, the patch {patch.shape[1]}")
        flat = patch.flatten(2)
        loss = (flat.mean(2) - self.mean.to(patch)).square().sum(1)
        if self.std is not None:
            loss = loss + (flat.std(2) - self.std.to(patch)).square().sum(1)
        return loss


def conditions_loss(
    conditions: Sequence[Condition],
    decode: Callable[[Tensor], Tensor],
    render_box: Callable[[Tensor, Resolution, Box], Tensor],
) -> Callable[[Tensor], Tensor]:
    """``x0 -> [B]`` weighted sum of every condition's loss on its box of ``decode(x0)``.

    ``decode`` maps the predicted clean latent to the decoder's feature map (once per step, shared by every
    box); ``render_box(features, resolution, box)`` renders one box at its resolution.
    """
    if not conditions:
        raise ValueError("guidance needs at least one Condition")

    def loss(x0: Tensor) -> Tensor:
        features = decode(x0)
        total = x0.new_zeros(x0.shape[0])
        for condition in conditions:
            patch = render_box(features, as_hw(condition.resolution), condition.box)
            value = condition.loss(patch)
            total = total + condition.weight * value.to(total.dtype).expand(x0.shape[0])
        return total

    return loss


class DPSGuidance:
    """DPS as an ε-function wrapper and a step callback, for any sampler of the ``"gaussian"`` process.

    :meth:`eps` calls the network with gradients, evaluates ``L = loss_fn(x̂₀(x_t))`` and keeps
    ``∇_{x_t} √L`` (``normalize``) or ``∇_{x_t} L``; :meth:`callback` then moves the sampler's new state by
    ``-scale`` times that gradient (``nan`` from ``√L`` at ``L = 0`` counts as no move). A loss that ignores
    its input has no gradient: no move. Pass ``eps`` as the sampler's ε-function and ``callback`` as (or
    chained into) its callback.
    """

    def __init__(
        self,
        eps_fn: EpsFn,
        alphas_cumprod: Tensor,
        loss_fn: Callable[[Tensor], Tensor],
        scale: float = 1.0,
        normalize: bool = True,
    ) -> None:
        self.eps_fn, self.alphas_cumprod, self.loss_fn = eps_fn, alphas_cumprod, loss_fn
        self.scale, self.normalize = scale, normalize
        self._grad: Tensor | None = None

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """The network's ε at ``(x, t)`` (detached); the guidance gradient is kept for :meth:`callback`."""
        batch = x.shape[0]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = self.eps_fn(x_in, t)
            x0 = predict_x0(x_in, eps, self.alphas_cumprod[int(t[0])])
            loss = self.loss_fn(x0).reshape(-1).expand(batch)
            objective = loss.clamp(min=0).sqrt() if self.normalize else loss
            self._grad = None
            if objective.requires_grad:  # a loss that ignores its input has no graph: no guidance
                (self._grad,) = torch.autograd.grad(objective.sum(), x_in, allow_unused=True)
        return eps.detach()

    def callback(self, info: StepInfo) -> Tensor | None:
        """``x_{t-1} - scale * grad`` with the gradient of the step's ε call, or ``None`` (no move)."""
        grad, self._grad = self._grad, None
        if grad is None:
            return None
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # sqrt'(0): no step at L = 0
        return info.x - self.scale * grad


def dps_ddim_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor | Sequence[int],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    scale: float = 1.0,
    normalize: bool = True,
    eta: float = 0.0,
    generator: Generators = None,
    final_alpha_bar: float = 1.0,
    progress: bool = False,
) -> Tensor:
    """DDIM with DPS guidance: :func:`rezdiff.core.loops.ddim_sample` driven by :class:`DPSGuidance`
    (after every step, ``-scale * grad_{x_t} sqrt(L)`` (``normalize``) or ``-scale * grad_{x_t} L``).

    Noise is drawn exactly as in ``ddim_sample`` (one draw per step when ``eta > 0``), so a guidance whose
    gradient is zero returns the unguided sample for the same generator.
    """
    guide = DPSGuidance(eps_fn, alphas_cumprod, loss_fn, scale, normalize)
    return ddim_sample(
        guide.eps,
        x_T.detach(),
        alphas_cumprod,
        timesteps,
        eta=eta,
        generator=generator,
        final_alpha_bar=final_alpha_bar,
        progress=progress,
        callback=guide.callback,
    )


def guided_sample(
    model: object,
    conditions: Sequence[Condition],
    num: int,
    resolution: Resolution | None = None,
    **sample_options: object,
) -> Tensor:
    """``model.sample(num, resolution, guidance=conditions, **sample_options)`` for a model that supports
    guidance (:class:`rezdiff.models.INFD`): samples satisfying the box conditions, at any resolution."""
    sample = getattr(model, "sample", None)
    if sample is None or "guidance" not in inspect.signature(sample).parameters:
        raise TypeError(f"{type(model).__name__} does not support box guidance (no sample(..., guidance=))")
    return sample(num, resolution, guidance=list(conditions), **sample_options)


def _spec_fields(spec: str) -> dict[str, list[str]]:
    """``"box=-1,-1,0,0,res=32,loss=color,mean=1,-1,-1"`` -> ``{"box": [...], "res": ["32"], ...}``: a
    token with ``=`` starts a key, tokens without one extend the last key's list of values."""
    fields: dict[str, list[str]] = {}
    key = None
    for token in (part.strip() for part in spec.split(",")):
        if "=" in token:
            key, value = (piece.strip() for piece in token.split("=", 1))
            if key in fields:
                raise ValueError(f"guide spec {spec!r}: {key!r} is given twice")
            fields[key] = [value] if value else []
        elif key is None or not token:
            raise ValueError(f"guide spec {spec!r}: expected key=value, got {token!r}")
        else:
            fields[key].append(token)
    return fields


def parse_condition(spec: str, channels: int = 3) -> Condition:
    """A :class:`Condition` from the text of ``rezdiff sample --guide``::

        box=X0,Y0,X1,Y1[,res=R|HxW][,weight=W],loss=color,mean=V1,...[,std=V1,...]
        box=X0,Y0,X1,Y1[,res=R|HxW][,weight=W],loss=ref,image=PATH

    The box is in whole-image ``[-1, 1]`` coordinates (x = column, y = row); ``res`` is the size the box is
    rendered at (default 32, or the reference's size); colour targets are in ``[-1, 1]`` per channel; the
    reference image is read at its own size (``load_image``) and compared with the area-downsampled box.
    """
    fields = _spec_fields(spec)
    unknown = set(fields) - {"box", "res", "weight", "loss", "mean", "std", "image"}
    if unknown:
        raise ValueError(f"guide spec {spec!r}: unknown field(s) {sorted(unknown)}")
    try:
        box = Box(*(float(v) for v in fields["box"])) if len(fields.get("box", [])) == 4 else None
        weight = float(fields.get("weight", ["1"])[0])
        res = fields.get("res", [])
        resolution: Resolution | None = None
        if res:
            text = res[0].lower()
            resolution = tuple(int(v) for v in text.split("x")) if "x" in text else int(text)  # type: ignore[assignment]
    except (TypeError, ValueError) as error:
        raise ValueError(f"guide spec {spec!r}: {error}") from error
    if box is None:
        raise ValueError(f"guide spec {spec!r}: needs box=X0,Y0,X1,Y1 (four numbers in [-1, 1])")
    kind = fields.get("loss", [""])[0]
    loss: GuidanceLoss
    if kind == "color":
        if "mean" not in fields:
            raise ValueError(f"guide spec {spec!r}: loss=color needs mean=... (one value per channel)")
        loss = ColorLoss(
            [float(v) for v in fields["mean"]], [float(v) for v in fields["std"]] if "std" in fields else None
        )
        if len(fields["mean"]) != channels:
            raise ValueError(f"guide spec {spec!r}: mean needs {channels} values (one per channel)")
    elif kind == "ref":
        if not fields.get("image"):
            raise ValueError(f"guide spec {spec!r}: loss=ref needs image=PATH")
        from rezdiff.data.images import load_image

        reference = load_image(fields["image"][0], channels=channels)  # type: ignore[arg-type]
        loss = ReferenceLoss(reference)
        resolution = resolution or tuple(reference.shape[-2:])  # type: ignore[assignment]
    else:
        raise ValueError(f"guide spec {spec!r}: loss must be 'color' or 'ref', got {kind!r}")
    return Condition(box, resolution or 32, loss, weight)
