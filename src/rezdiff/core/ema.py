"""Exponential moving average of a model's weights, kept inside the owner's ``state_dict``.

The average lives in a frozen deep copy registered as a submodule (``ema.module``), with the number of
updates in a buffer (``ema.num_updates``): saving, resuming and loading a checkpoint carry both without
any callback, and sampling with the average is just ``ema(x, t)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile``'s wrapper, if any."""
    return getattr(model, "_orig_mod", model)


class EMA(nn.Module):
    """EMA of ``model``: ``shadow <- d * shadow + (1 - d) * model`` every ``update_every`` steps.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` for the ``n``-th update (counting from
    0), so early averages are not dominated by the random initialisation. The shadow starts as an exact
    copy of ``model``; it is always in eval mode and never requires gradients (inputs can still be
    differentiated through it, e.g. for guidance). Floating parameters are averaged; buffers (BatchNorm
    statistics, ...) and non-floating parameters are copied.
    """

    num_updates: Tensor

    def __init__(self, model: nn.Module, decay: float = 0.9999, update_every: int = 1, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.decay = float(decay)
        self.update_every = int(update_every)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(_unwrap(model))
        for p in self.module.parameters():
            p.grad = None
        self._freeze()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _freeze(self) -> None:
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> EMA:
        """Keep the shadow in eval mode whatever the parent does."""
        super().train(mode)
        self.module.eval()
        return self

    def current_decay(self) -> float:
        """Decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Average ``model`` into the shadow if ``step % update_every == 0``; returns whether it did."""
        if step % self.update_every != 0:
            return False
        decay = self.current_decay()
        model = _unwrap(model)
        src_params = dict(model.named_parameters())
        dst_params = dict(self.module.named_parameters())
        if src_params.keys() != dst_params.keys():
            raise ValueError("EMA.update got a model whose parameters differ from the averaged one")
        for name, dst in dst_params.items():
            src = src_params[name].detach().to(device=dst.device, dtype=dst.dtype)
            if dst.is_floating_point() or dst.is_complex():
                dst.lerp_(src, 1.0 - decay)
            else:
                dst.copy_(src)
            dst.requires_grad_(False)
        self._copy_buffers(model, self.module)
        self.num_updates += 1
        return True

    @staticmethod
    def _copy_buffers(src_model: nn.Module, dst_model: nn.Module) -> None:
        src_buffers = dict(src_model.named_buffers())
        for name, dst in dst_model.named_buffers():
            if name not in src_buffers:
                raise ValueError(f"EMA: buffer {name!r} missing from the model")
            dst.copy_(src_buffers[name].detach())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged parameters and buffers into ``model`` (e.g. to export or evaluate it)."""
        model = _unwrap(model)
        src_params = dict(self.module.named_parameters())
        for name, dst in model.named_parameters():
            dst.copy_(src_params[name])
        self._copy_buffers(self.module, model)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the averaged model."""
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, update_every={self.update_every}, warmup={self.warmup}"
