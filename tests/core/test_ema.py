"""EMA: exact copy at start, exact lerp, warm-up, skipping, buffers, checkpoints, frozen shadow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rezdiff.core import EMA


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.lin(x)))


class Owner(nn.Module):
    """Stands in for a LightningModule that owns a network and its EMA."""

    def __init__(self, decay: float = 0.9, update_every: int = 1, warmup: bool = False) -> None:
        super().__init__()
        self.net = Net()
        self.ema = EMA(self.net, decay=decay, update_every=update_every, warmup=warmup)


def perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_initial_copy_is_exact_and_independent() -> None:
    torch.manual_seed(0)
    owner = Owner()
    shadow = owner.ema.module.named_parameters()
    for (name, p), (_, s) in zip(owner.net.named_parameters(), shadow, strict=True):
        assert torch.equal(p, s), name
        assert p.data_ptr() != s.data_ptr()
        assert not s.requires_grad
    perturb(owner.net, 1)
    assert not torch.equal(owner.net.lin.weight, owner.ema.module.lin.weight)
    assert int(owner.ema.num_updates) == 0


def test_one_update_is_the_exact_lerp() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.9, warmup=False)
    before = params(owner.ema.module)
    perturb(owner.net, 1)
    assert owner.ema.update(owner.net, step=0)
    for name, s in owner.ema.module.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(owner.net.named_parameters())[name]
        torch.testing.assert_close(s, expected, rtol=1e-6, atol=1e-7)
    assert int(owner.ema.num_updates) == 1


def test_warmup_decay_schedule() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.5, warmup=True)
    ema = owner.ema
    # n-th update uses min(decay, (1 + n) / (10 + n)): 0.1, 2/11, 3/12, ..., capped at 0.5 from n = 8
    expected = [min(0.5, (1 + n) / (10 + n)) for n in range(12)]
    for n, d in enumerate(expected):
        assert ema.current_decay() == pytest.approx(d)
        before = ema.module.lin.weight.detach().clone()
        perturb(owner.net, n)
        ema.update(owner.net, step=n)
        torch.testing.assert_close(ema.module.lin.weight, d * before + (1 - d) * owner.net.lin.weight)
    assert Owner(decay=0.5, warmup=False).ema.current_decay() == 0.5


def test_update_every_skips_steps() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.5, update_every=3)
    perturb(owner.net, 1)
    start = params(owner.ema.module)
    assert not owner.ema.update(owner.net, step=1)
    assert not owner.ema.update(owner.net, step=2)
    assert all(torch.equal(v, start[k]) for k, v in params(owner.ema.module).items())
    assert int(owner.ema.num_updates) == 0
    assert owner.ema.update(owner.net, step=3)
    assert int(owner.ema.num_updates) == 1
    assert not torch.equal(owner.ema.module.lin.weight, start["lin.weight"])


def test_buffers_are_copied() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.99)
    owner.net.train()
    owner.net(torch.randn(16, 4) * 3 + 1)  # moves the BatchNorm running statistics
    assert not torch.equal(owner.net.bn.running_mean, owner.ema.module.bn.running_mean)
    owner.ema.update(owner.net, step=0)
    assert torch.equal(owner.net.bn.running_mean, owner.ema.module.bn.running_mean)
    assert torch.equal(owner.net.bn.running_var, owner.ema.module.bn.running_var)
    assert torch.equal(owner.net.bn.num_batches_tracked, owner.ema.module.bn.num_batches_tracked)


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.7, warmup=True)
    for step in range(5):
        perturb(owner.net, step)
        owner.ema.update(owner.net, step)
    state = owner.state_dict()
    assert "ema.num_updates" in state and "ema.module.lin.weight" in state
    torch.manual_seed(123)
    fresh = Owner(decay=0.7, warmup=True)
    assert not torch.equal(fresh.ema.module.lin.weight, owner.ema.module.lin.weight)
    fresh.load_state_dict(state)
    assert int(fresh.ema.num_updates) == 5
    assert fresh.ema.current_decay() == owner.ema.current_decay()
    for k, v in owner.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # and the restored EMA continues exactly like the original
    perturb(owner.net, 99)
    perturb(fresh.net, 99)
    owner.ema.update(owner.net, 5)
    fresh.ema.update(fresh.net, 5)
    assert torch.equal(fresh.ema.module.lin.weight, owner.ema.module.lin.weight)


def test_shadow_stays_frozen_and_in_eval_mode() -> None:
    torch.manual_seed(0)
    owner = Owner()
    owner.train()
    assert owner.net.training and owner.ema.training
    assert not owner.ema.module.training and not owner.ema.module.drop.training
    assert all(not p.requires_grad for p in owner.ema.parameters())
    trainable = {n for n, p in owner.named_parameters() if p.requires_grad}
    assert trainable == {f"net.{n}" for n, _ in owner.net.named_parameters()}
    # eval-mode forward: dropout off, BatchNorm uses running statistics -> deterministic
    x = torch.randn(5, 4, requires_grad=True)
    y1, y2 = owner.ema(x), owner.ema(x)
    assert torch.equal(y1, y2)
    # gradients still flow to the input (guidance), never to the shadow weights
    y1.sum().backward()
    assert x.grad is not None and owner.ema.module.lin.weight.grad is None
    # even after someone unfreezes everything, the next update re-freezes the shadow
    owner.requires_grad_(True)
    owner.ema.update(owner.net, 0)
    assert all(not p.requires_grad for p in owner.ema.parameters())


def test_copy_to_and_mismatch() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.5)
    perturb(owner.net, 1)
    owner.ema.update(owner.net, 0)
    target = Net()
    owner.ema.copy_to(target)
    for k, v in params(owner.ema.module).items():
        assert torch.equal(dict(target.named_parameters())[k], v)
    with pytest.raises(ValueError, match="differ"):
        owner.ema.update(nn.Linear(4, 3), 0)
    with pytest.raises(ValueError):
        EMA(Net(), decay=1.5)
    with pytest.raises(ValueError):
        EMA(Net(), update_every=0)


@pytest.mark.gpu
def test_update_on_cuda() -> None:
    torch.manual_seed(0)
    owner = Owner(decay=0.5).cuda()
    before = owner.ema.module.lin.weight.detach().clone()
    perturb(owner.net, 1)
    owner.ema.update(owner.net, 0)
    torch.testing.assert_close(owner.ema.module.lin.weight, 0.5 * before + 0.5 * owner.net.lin.weight)
    assert owner.ema.num_updates.device.type == "cuda"


class Compiled(nn.Module):
    """Stands in for ``torch.compile``'s wrapper: the module it compiled is ``_orig_mod``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner


class Keyword(nn.Module):
    """A network with an integer parameter (copied, not averaged) and a keyword argument."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.steps = nn.Parameter(torch.tensor([3, 4]), requires_grad=False)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return scale * self.lin(x)


def test_compiled_models_integer_parameters_keywords_and_errors() -> None:
    """The shadow averages the module under a compile wrapper, copies integer parameters, passes keyword
    arguments on, stays in eval mode while its owner trains (``train()`` means training), keeps its dtype
    and device whatever the source's, and names what does not match."""
    torch.manual_seed(0)
    inner = Keyword()
    ema = EMA(Compiled(inner), decay=0.5, warmup=False)
    assert isinstance(ema.module, Keyword)
    with torch.no_grad():
        inner.steps.copy_(torch.tensor([7, 9]))
        inner.lin.weight.add_(1.0)
    before = ema.module.lin.weight.clone()
    ema.update(Compiled(inner), 0)
    assert torch.equal(ema.module.steps, torch.tensor([7, 9]))
    torch.testing.assert_close(ema.module.lin.weight, 0.5 * before + 0.5 * inner.lin.weight)
    x = torch.randn(3, 2)
    torch.testing.assert_close(ema(x, scale=2.0), 2.0 * ema.module.lin(x))
    ema.train()
    assert ema.training and not ema.module.training
    # a float64 source is averaged into the float32 shadow in float32
    source = Keyword().double()
    ema.update(source, 0)
    assert ema.module.lin.weight.dtype == torch.float32
    # a shadow on another device (meta stands in for a GPU) takes the source there
    ema.module.to("meta")
    ema.update(inner, 0)
    assert ema.module.lin.weight.device.type == "meta"
    with pytest.raises(ValueError) as error:
        ema.update(nn.Linear(2, 2), 0)
    assert str(error.value) == "EMA.update got a model whose parameters differ from the averaged one"
    owner = Owner()
    owner.net.register_buffer("extra", torch.zeros(1))
    owner.ema.module.register_buffer("extra", torch.zeros(1))
    del owner.net.extra
    with pytest.raises(ValueError) as error:
        owner.ema.update(owner.net, 0)
    assert str(error.value) == "EMA: buffer 'extra' missing from the model"


def test_defaults_and_the_ranges_of_decay_and_update_every() -> None:
    """Defaults: decay 0.9999 with warm-up (0.1 at the first update), every step; a long update count.
    decay 0 and 1 are allowed, anything outside [0, 1] is named, as is update_every below 1."""
    ema = EMA(Net())
    assert (ema.decay, ema.update_every, ema.warmup) == (0.9999, 1, True)
    assert ema.current_decay() == pytest.approx(0.1)
    assert ema.update(Net(), 1) and ema.num_updates.dtype == torch.long and int(ema.num_updates) == 1
    assert EMA(Net(), decay=0.0).decay == 0.0 and EMA(Net(), decay=1.0).decay == 1.0
    for decay in (-0.1, 1.5):
        with pytest.raises(ValueError) as error:
            EMA(Net(), decay=decay)
        assert str(error.value) == f"decay must be in [0, 1], got {decay}"
    with pytest.raises(ValueError) as error:
        EMA(Net(), update_every=0)
    assert str(error.value) == "update_every must be >= 1, got 0"
