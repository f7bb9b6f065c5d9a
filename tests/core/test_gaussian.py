"""Gaussian process maths: against diffusers' schedulers step by step, and against closed forms."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from rezdiff.core import (
    alphas_cumprod,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    ddpm_step,
    eps_from_v,
    expand_like,
    linear_betas,
    make_betas,
    predict_eps,
    predict_v,
    predict_x0,
    q_posterior,
    q_sample,
    randn,
    randn_like,
    sample_timesteps,
    timestep_subsequence,
    vp_heun_step,
    vp_integrate,
    vp_marginal,
    vp_reverse_step,
    vp_sample,
    x0_from_v,
)
from tests.helpers import gen

SCHEDULES = ["linear", "squaredcos_cap_v2"]


def blur_matrix(d: int) -> Tensor:
    """A fixed, non-symmetric, full-rank blur (so A A^T differs from A^T A and mix-ups show)."""
    a = 0.55 * torch.eye(d, dtype=torch.float64)
    a += 0.3 * torch.diag(torch.ones(d - 1, dtype=torch.float64), 1)
    a += 0.15 * torch.diag(torch.ones(d - 1, dtype=torch.float64), -1)
    a[0, 0] += 0.15
    a[-1, -1] += 0.3
    return a


def apply_rows(a: Tensor):
    """The operator ``v -> A v`` on the last dimension."""
    return lambda x: x @ a.T.to(x.dtype)


def cov(x: Tensor) -> Tensor:
    """Sample covariance of the rows of ``x`` ``[N, d]``."""
    xc = x - x.mean(0)
    return xc.T @ xc / (x.shape[0] - 1)


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def test_expand_like_shapes_and_dtype() -> None:
    x = torch.zeros(3, 2, 4, 5, dtype=torch.float32)
    assert expand_like(0.5, x).shape == () and expand_like(0.5, x).dtype == torch.float32
    c = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    e = expand_like(c, x)
    assert e.shape == (3, 1, 1, 1) and e.dtype == torch.float32
    assert expand_like(torch.ones(1, 2, 1, 1), x).shape == (1, 2, 1, 1)
    assert expand_like(c, torch.zeros(3)).shape == (3,)
    with pytest.raises(ValueError, match="per-sample"):
        expand_like(torch.ones(2), x)
    # Python floats keep float64 precision for float64 inputs
    assert expand_like(0.1, x.double()).item() == 0.1


def test_randn_like_matches_diffusers_and_moves_device() -> None:
    x = torch.empty(2, 3, 5, 5)
    assert torch.equal(randn_like(x, gen(3)), randn_tensor(x.shape, generator=gen(3), dtype=x.dtype))
    assert torch.equal(randn_like(x, gen(3)), randn_like(x, gen(3)))
    assert not torch.equal(randn_like(x, gen(3)), randn_like(x, gen(4)))
    assert randn_like(x.double(), gen(0)).dtype == torch.float64
    # a CPU generator with a tensor elsewhere: drawn on the CPU, then moved (meta stands in for CUDA)
    on_meta = randn_like(torch.empty(2, 3, device="meta"), gen(0))
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 3)


def test_sample_timesteps() -> None:
    t = sample_timesteps(10_000, 7, gen(0))
    assert t.dtype == torch.long and t.shape == (10_000,)
    assert t.min() == 0 and t.max() == 6
    assert torch.equal(t, sample_timesteps(10_000, 7, gen(0)))
    counts = torch.bincount(t, minlength=7).double()
    assert (counts / 10_000 - 1 / 7).abs().max() < 0.02


def test_parametrisations_are_consistent() -> None:
    g = gen(0)
    x0, eps = torch.randn(4, 3, 6, generator=g), torch.randn(4, 3, 6, generator=g)
    ab = torch.tensor([0.999, 0.7, 0.2, 1e-3], dtype=torch.float64)
    x_t = q_sample(x0, eps, ab)
    torch.testing.assert_close(x_t[1], 0.7**0.5 * x0[1] + 0.3**0.5 * eps[1])
    torch.testing.assert_close(predict_x0(x_t, eps, ab), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predict_eps(x_t, x0, ab), eps, rtol=1e-4, atol=1e-4)
    v = predict_v(x0, eps, ab)
    torch.testing.assert_close(x0_from_v(x_t, v, ab), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_from_v(x_t, v, ab), eps, rtol=1e-5, atol=1e-5)
    ref = DDPMScheduler()
    t = torch.tensor([3, 300, 600, 999])
    acp = ref.alphas_cumprod[t]
    torch.testing.assert_close(q_sample(x0, eps, acp), ref.add_noise(x0, eps, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(predict_v(x0, eps, acp), ref.get_velocity(x0, eps, t), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------------
# Step by step against diffusers (identity operator)
# --------------------------------------------------------------------------------------------------------


def _inputs(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = gen(seed)
    x = 1.5 * torch.randn(3, 2, 6, 6, generator=g, dtype=dtype)
    return x, torch.randn(3, 2, 6, 6, generator=g, dtype=dtype)


def reference(cls: type, dtype: torch.dtype = torch.float64, **config):
    """A diffusers scheduler whose alpha_bar tensors are cast to ``dtype``.

    diffusers keeps them in float32 and computes ``1 - ab_t / ab_prev`` there, which loses about four
    digits at small t (the ratio is within 1e-4 of 1). Exact agreement is therefore shown in float64; the
    float32 tests check the everyday path where that cancellation is harmless.
    """
    ref = cls(**config)
    ref.alphas_cumprod = ref.alphas_cumprod.to(dtype)
    for name in ("one", "final_alpha_cumprod"):
        if hasattr(ref, name):
            setattr(ref, name, getattr(ref, name).to(dtype))
    return ref


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_matches_diffusers(schedule: str, variance_type: str, clip: bool) -> None:
    ref = reference(DDPMScheduler, beta_schedule=schedule, variance_type=variance_type, clip_sample=clip)
    acp = ref.alphas_cumprod
    x, eps = _inputs()
    variance = "small" if variance_type == "fixed_small" else "large"
    clip_x0 = 1.0 if clip else None
    for t in [999, 998, 500, 37, 2, 1, 0]:
        # diffusers draws its variance noise with randn_tensor(shape, generator, dtype); randn_like makes
        # the same draw from a generator in the same state.
        expected = ref.step(eps, t, x, generator=gen(100 + t)).prev_sample
        ab_prev = acp[t - 1] if t > 0 else 1.0
        noise = randn_like(x, gen(100 + t))
        ours = ddpm_step(x, eps, acp[t], ab_prev, noise, variance=variance, clip_x0=clip_x0)
        assert ours.dtype == x.dtype
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12, msg=f"t={t}")
    # the last step adds no noise (not even with "large"), so noise may be omitted there
    final = ddpm_step(x, eps, acp[0], 1.0, None, variance=variance, clip_x0=clip_x0)
    torch.testing.assert_close(final, ref.step(eps, 0, x).prev_sample, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_step_matches_diffusers_float32(schedule: str, variance_type: str) -> None:
    ref = DDPMScheduler(beta_schedule=schedule, variance_type=variance_type, clip_sample=False)
    acp = ref.alphas_cumprod
    x, eps = _inputs(dtype=torch.float32)
    variance = "small" if variance_type == "fixed_small" else "large"
    for t in [999, 998, 600, 300]:
        expected = ref.step(eps, t, x, generator=gen(t)).prev_sample
        ours = ddpm_step(x, eps, acp[t], acp[t - 1], randn_like(x, gen(t)), variance=variance)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=2e-6, msg=f"t={t}")


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_strided_ddpm_step_matches_diffusers(variance_type: str) -> None:
    ref = reference(DDPMScheduler, beta_schedule="squaredcos_cap_v2", variance_type=variance_type)
    ref.set_timesteps(50)
    acp = ref.alphas_cumprod
    ts = ref.timesteps.tolist()
    x, eps = _inputs(1)
    variance = "small" if variance_type == "fixed_small" else "large"
    for i in [0, 1, 25, 48, 49]:
        t = ts[i]
        ab_prev = acp[ts[i + 1]] if i + 1 < len(ts) else 1.0
        expected = ref.step(eps, t, x, generator=gen(i)).prev_sample
        ours = ddpm_step(x, eps, acp[t], ab_prev, randn_like(x, gen(i)), variance=variance, clip_x0=1.0)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12, msg=f"t={t}")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize(
    ("spacing", "n"), [("leading", 50), ("trailing", 7), ("linspace", 100), ("leading", 1000)]
)
def test_ddim_step_matches_diffusers(schedule: str, eta: float, clip: bool, spacing: str, n: int) -> None:
    ref = reference(
        DDIMScheduler,
        beta_schedule=schedule,
        clip_sample=clip,
        set_alpha_to_one=True,
        timestep_spacing=spacing,
    )
    ref.set_timesteps(n)
    acp = ref.alphas_cumprod
    x, eps = _inputs(2)
    ts = ref.timesteps.tolist()
    for i in sorted({0, 1, len(ts) // 2, len(ts) - 1}):
        t = ts[i]
        # diffusers' DDIM always jumps by T // n (not to the next listed timestep; see ddim_sample)
        prev = t - 1000 // n
        ab_prev = acp[prev] if prev >= 0 else 1.0
        expected = ref.step(eps, t, x, eta=eta, generator=gen(7 * i)).prev_sample
        noise = randn_like(x, gen(7 * i))
        ours = ddim_step(x, eps, acp[t], ab_prev, noise, eta=eta, clip_x0=1.0 if clip else None)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12, msg=f"t={t}")


def test_ddim_eps_after_clip_by_hand() -> None:
    """Issue 14, item 13: after clipping x0, "from_x0" re-derives eps (OpenAI's _predict_eps_from_xstart),
    "network" keeps the network's eps (diffusers). ab_t = 0.25, ab_prev = 0.64, eta = 0, clip at 1."""
    x_t = torch.tensor([[2.0, -0.5, 0.1]], dtype=torch.float64)
    eps = torch.tensor([[0.1, 0.3, 0.2]], dtype=torch.float64)
    s = 0.75**0.5
    x0 = (x_t - s * eps) / 0.5  # [3.8268, -1.5196, -0.1464]: the first two are clipped to +1 / -1
    clipped = x0.clamp(-1, 1)
    rederived = (x_t - 0.5 * clipped) / s  # [1.5 / s, 0, 0.2]: the unclipped entry keeps its eps
    torch.testing.assert_close(rederived[0, 2], eps[0, 2])
    by_hand = {"network": 0.8 * clipped + 0.6 * eps, "from_x0": 0.8 * clipped + 0.6 * rederived}
    torch.testing.assert_close(
        by_hand["from_x0"], torch.tensor([[0.8 + 0.9 / s, -0.8, 0.8 * x0[0, 2] + 0.12]], dtype=torch.float64)
    )
    for mode, expected in by_hand.items():
        ours = ddim_step(x_t, eps, 0.25, 0.64, clip_x0=1.0, eps_after_clip=mode)  # type: ignore[arg-type]
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12, msg=mode)
    # without clipping both are plain DDIM; an unknown mode is named
    plain = ddim_step(x_t, eps, 0.25, 0.64)
    torch.testing.assert_close(ddim_step(x_t, eps, 0.25, 0.64, eps_after_clip="from_x0"), plain)
    with pytest.raises(ValueError, match="eps_after_clip"):
        ddim_step(x_t, eps, 0.25, 0.64, clip_x0=1.0, eps_after_clip="clipped")  # type: ignore[arg-type]


def test_ddim_from_x0_with_eta_one_is_the_ancestral_step_where_clipping_acts() -> None:
    """With eps re-derived from the clipped x0, DDIM (eta = 1) is DDPM's ancestral step exactly -- the
    reason DVDP and OpenAI's code use it; with the network's eps it is not."""
    x_t = torch.tensor([[2.0, -0.5, 0.1]], dtype=torch.float64)
    eps = torch.tensor([[0.1, 0.3, 0.2]], dtype=torch.float64)
    noise = torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64)
    ancestral = ddpm_step(x_t, eps, 0.25, 0.64, noise, clip_x0=1.0)
    consistent = ddim_step(x_t, eps, 0.25, 0.64, noise, eta=1.0, clip_x0=1.0, eps_after_clip="from_x0")
    torch.testing.assert_close(consistent, ancestral, rtol=1e-12, atol=1e-12)
    kept = ddim_step(x_t, eps, 0.25, 0.64, noise, eta=1.0, clip_x0=1.0, eps_after_clip="network")
    assert (kept - ancestral).abs().max() > 0.1


def fake_eps(x: Tensor, t: Tensor) -> Tensor:
    """A fixed network stand-in: linear in x_t (with channel/pixel mixing) and in t."""
    tt = (t.to(x.dtype) / 1000).view(-1, *([1] * (x.ndim - 1)))
    return 0.6 * x + 0.25 * x.roll(1, dims=-1) - 0.1 * x.flip(1) + 0.3 * tt - 0.05


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize(
    ("spacing", "n", "clip"), [("leading", 50, False), ("trailing", 50, True), ("leading", 7, True)]
)
def test_ddim_sample_matches_diffusers_loop(
    dtype: torch.dtype, schedule: str, eta: float, spacing: str, n: int, clip: bool
) -> None:
    ref = reference(
        DDIMScheduler,
        dtype,
        beta_schedule=schedule,
        clip_sample=clip,
        set_alpha_to_one=True,
        timestep_spacing=spacing,
    )
    ref.set_timesteps(n)
    x_T = torch.randn(2, 3, 5, 5, generator=gen(11), dtype=dtype)
    g = gen(12)
    x = x_T
    for t in ref.timesteps:
        x = ref.step(fake_eps(x, t.expand(x.shape[0])), t, x, eta=eta, generator=g).prev_sample
    ts = timestep_subsequence(1000, n, spacing)  # type: ignore[arg-type]
    assert torch.equal(ts, ref.timesteps)
    clip_x0 = 1.0 if clip else None
    g_ours = gen(12)
    ours = ddim_sample(fake_eps, x_T, ref.alphas_cumprod, ts, eta=eta, generator=g_ours, clip_x0=clip_x0)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours, x, rtol=tol, atol=tol)
    assert torch.equal(g_ours.get_state(), g.get_state())  # the same draws, also the unused last one


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("num_inference", [None, 50])
def test_ddpm_sample_matches_diffusers_loop(variance_type: str, num_inference: int | None) -> None:
    ref = reference(DDPMScheduler, beta_schedule="linear", variance_type=variance_type, clip_sample=True)
    if num_inference is not None:
        ref.set_timesteps(num_inference)
    x_T = torch.randn(2, 1, 4, 4, generator=gen(21), dtype=torch.float64)
    g = gen(22)
    x = x_T
    for t in ref.timesteps:
        x = ref.step(fake_eps(x, t.expand(x.shape[0])), t, x, generator=g).prev_sample
    g_ours = gen(22)
    ours = ddpm_sample(
        fake_eps,
        x_T,
        ref.alphas_cumprod,
        generator=g_ours,
        variance="small" if variance_type == "fixed_small" else "large",
        clip_x0=1.0,
        timesteps=None if num_inference is None else ref.timesteps,
    )
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)
    assert torch.equal(g_ours.get_state(), g.get_state())


def test_loops_validate_timesteps() -> None:
    acp = alphas_cumprod(linear_betas(10))
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="decreasing"):
        ddim_sample(fake_eps, x, acp, [3, 5])
    with pytest.raises(ValueError, match="lie in"):
        ddim_sample(fake_eps, x, acp, [10, 5])
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, acp[5], acp[3], None, eta=1.0)


def test_step_errors_name_the_step_and_the_choices_in_full() -> None:
    """Each step's one-line error names the step that needs noise, or the bad value and the valid ones
    (the whole message: a loose ``match`` lets a garbled name through)."""
    x = torch.ones(1, 2, dtype=torch.float64)
    expected = {
        "ddpm_step needs `noise` for a stochastic step": lambda: ddpm_step(x, x, 0.5, 0.8, None),
        "ddim_step with eta > 0 needs `noise` for a stochastic step": lambda: ddim_step(
            x, x, 0.5, 0.8, None, eta=1.0
        ),
        "vp_reverse_step (SDE) needs `noise` for a stochastic step": lambda: vp_reverse_step(
            x, x, 0.5, 0.4, None
        ),
        "unknown variance 'medium'; expected 'small' or 'large'": lambda: ddpm_step(
            x,
            x,
            0.5,
            0.8,
            x,
            variance="medium",  # type: ignore[arg-type]
        ),
        "unknown eps_after_clip 'clipped'; expected 'network' or 'from_x0'": lambda: ddim_step(
            x,
            x,
            0.5,
            0.8,
            eps_after_clip="clipped",  # type: ignore[arg-type]
        ),
    }
    for message, call in expected.items():
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call()


def test_vp_loop_refuses_each_bad_grid_and_solver_with_its_own_message() -> None:
    """A 2-D grid, a single point, a repeated point and a rising grid are each refused (not only their
    combination); the solver errors name the value and the fix."""
    x = torch.zeros(1, 2, dtype=torch.float64)
    for grid in ([[0.5, 0.4]], [0.5], [0.5, 0.5, 0.4], [0.4, 0.5]):
        with pytest.raises(
            ValueError, match=r"^the VP time grid must be 1-D, strictly decreasing, with >= 2 points; got "
        ):
            vp_integrate(fake_eps, x, torch.tensor(grid, dtype=torch.float64), ode=True)
    with pytest.raises(ValueError, match=r"^unknown solver 'rk4'; expected 'euler' or 'heun'$"):
        vp_integrate(fake_eps, x, torch.tensor([0.5, 0.4]), ode=True, solver="rk4")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^solver='heun' integrates the probability-flow ODE; "
        r"pass ode=True \(the SDE uses Euler-Maruyama\)$",
    ):
        vp_integrate(fake_eps, x, torch.tensor([0.5, 0.4]), solver="heun")


def test_progress_bars_name_the_sampler(capsys: pytest.CaptureFixture[str]) -> None:
    """With ``progress=True`` each loop shows a bar labelled with its sampler (and the ODE's solver)."""
    acp = alphas_cumprod(linear_betas(10))
    x = torch.zeros(1, 2, dtype=torch.float64)
    runs = {
        "DDIM": lambda: ddim_sample(fake_eps, x, acp, [9, 5, 0], progress=True),
        "DDPM": lambda: ddpm_sample(fake_eps, x, acp, timesteps=[9, 5, 0], generator=gen(0), progress=True),
        "VP SDE": lambda: vp_sample(fake_eps, x, 2, generator=gen(0), progress=True),
        "VP ODE (heun)": lambda: vp_sample(fake_eps, x, 2, ode=True, solver="heun", progress=True),
        "VP ODE (euler)": lambda: vp_sample(fake_eps, x, 2, ode=True, progress=True),
    }
    for desc, run in runs.items():
        run()
        err = capsys.readouterr().err
        assert f"{desc}: 100%" in err, (desc, err)
    # and no bar by default
    ddim_sample(fake_eps, x, acp, [9, 5, 0])
    ddpm_sample(fake_eps, x, acp, timesteps=[9, 5, 0], generator=gen(0))
    vp_sample(fake_eps, x, 2, generator=gen(0))
    vp_integrate(fake_eps, x, torch.tensor([0.5, 0.4]), ode=True)
    assert capsys.readouterr().err == ""


class _Called(Exception):
    """Raised by a network stand-in once it has recorded what it was called with."""


def test_loops_give_the_network_t_on_the_states_device_in_the_documented_dtype() -> None:
    """DDIM and DDPM pass ``t`` as a long ``[B]`` tensor, the VP loops and the Heun corrector as a ``[B]``
    tensor in ``x``'s dtype, all on ``x``'s device (the meta device here: a tensor left on the CPU shows)."""
    seen: list[Tensor] = []

    def record(x: Tensor, t: Tensor) -> Tensor:
        seen.append(t)
        if len(seen) == 2 or x.device.type == "meta":
            raise _Called
        return torch.zeros_like(x)

    acp = alphas_cumprod(linear_betas(10))
    meta = torch.zeros(3, 2, dtype=torch.float64, device="meta")
    runs = {
        ("ddim", torch.long): lambda: ddim_sample(record, meta, acp, [9, 5]),
        ("ddpm", torch.long): lambda: ddpm_sample(record, meta, acp, timesteps=[8, 5]),
        ("vp_integrate", torch.float64): lambda: vp_integrate(
            record, meta, torch.tensor([0.5, 0.25]), ode=True
        ),
        ("vp_sample", torch.float32): lambda: vp_sample(record, meta.float(), 1, t_max=0.75, t_min=0.25),
    }
    for (name, dtype), run in runs.items():
        seen.clear()
        with pytest.raises(_Called):
            run()
        (t,) = seen
        assert (t.dtype, t.device.type, t.shape) == (dtype, "meta", (3,)), name
    # Heun's second (corrector) call: at t_next, in x's dtype
    seen.clear()
    with pytest.raises(_Called):
        vp_heun_step(record, torch.zeros(3, 2, dtype=torch.float64), 0.5, 0.25)
    assert [(t.dtype, t.shape, t.tolist()) for t in seen] == [
        (torch.float64, (3,), [0.5] * 3),
        (torch.float64, (3,), [0.25] * 3),
    ]


# --------------------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------------------


def test_chained_forward_steps_give_the_marginal() -> None:
    """Chaining q(x_t | x_{t-1}) from x_0 gives mean sqrt(ab) x_0 and variance 1 - ab."""
    betas = make_betas("cosine", 1000)
    acp = alphas_cumprod(betas)
    g = gen(5)
    x0 = torch.tensor([1.0, -0.5, 2.0]).repeat(40_000, 1)
    x = x0
    for t in range(1000):
        x = q_sample(x, torch.randn(x.shape, generator=g, dtype=x.dtype), 1 - betas[t])
        if t in (4, 99, 499, 899, 999):
            torch.testing.assert_close(x.mean(0), acp[t].sqrt().float() * x0[0], rtol=0, atol=0.02)
            torch.testing.assert_close(x.var(0), (1 - acp[t]).float().expand(3), rtol=0.03, atol=0)


def test_operator_marginal_and_chain() -> None:
    """With an operator A: q_sample's covariance is (1 - ab) A A^T, and the T-space chain agrees."""
    d, n = 5, 100_000
    a = blur_matrix(d)
    op = apply_rows(a)
    aat = a @ a.T
    betas = linear_betas(200, 1e-3, 0.05)
    acp = alphas_cumprod(betas)
    g = gen(6)
    x0 = torch.linspace(-1, 1, d, dtype=torch.float64).repeat(n, 1)
    t = 120
    x_t = q_sample(x0, torch.randn(n, d, generator=g, dtype=torch.float64), acp[t], operator=op)
    torch.testing.assert_close(x_t.mean(0), acp[t].sqrt() * a @ x0[0], rtol=0, atol=0.01)
    torch.testing.assert_close(cov(x_t), (1 - acp[t]) * aat, rtol=0, atol=0.015)
    # ∞-Diff in T-space: start at T x_0 and add T z at every step
    x = op(x0)
    for s in range(t + 1):
        x = q_sample(x, torch.randn(n, d, generator=g, dtype=torch.float64), 1 - betas[s], noise_operator=op)
    torch.testing.assert_close(x.mean(0), acp[t].sqrt() * a @ x0[0], rtol=0, atol=0.01)
    torch.testing.assert_close(cov(x), (1 - acp[t]) * aat, rtol=0, atol=0.015)
    # the noise-only operator (multilevel form) leaves the mean at sqrt(ab) x_0
    x_ml = q_sample(x0, torch.randn(n, d, generator=g, dtype=torch.float64), acp[t], noise_operator=op)
    torch.testing.assert_close(x_ml.mean(0), acp[t].sqrt() * x0[0], rtol=0, atol=0.01)
    torch.testing.assert_close(cov(x_ml), (1 - acp[t]) * aat, rtol=0, atol=0.015)


def test_q_posterior_equals_gaussian_conditioning() -> None:
    """Exact: condition the joint Gaussian (x_prev, x_t) | x_0 with the textbook formula."""
    acp = alphas_cumprod(make_betas("linear", 1000))
    t = torch.tensor([1, 10, 400, 999, 999])
    prev = torch.tensor([0, 3, 150, 998, 0])
    ab_t, ab_p = acp[t], acp[prev]
    x0 = torch.tensor([[0.3], [-1.0], [0.8], [2.0], [0.1]], dtype=torch.float64)
    x_t = torch.tensor([[0.2], [0.5], [-1.3], [0.7], [-0.4]], dtype=torch.float64)
    mean, var = q_posterior(x0, x_t, ab_t, ab_p)
    alpha = ab_t / ab_p
    var_p, var_t = 1 - ab_p, 1 - ab_t
    cov_pt = alpha.sqrt() * var_p
    exp_mean = ab_p.sqrt()[:, None] * x0 + (cov_pt / var_t)[:, None] * (x_t - ab_t.sqrt()[:, None] * x0)
    exp_var = var_p - cov_pt**2 / var_t
    torch.testing.assert_close(mean, exp_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var.flatten(), exp_var, rtol=1e-8, atol=1e-15)


def test_q_posterior_monte_carlo() -> None:
    """Regress simulated x_prev on x_t given x_0: slope, intercept and residual variance."""
    acp = alphas_cumprod(make_betas("cosine", 1000))
    ab_t, ab_p = acp[700], acp[500]
    c, n = 0.7, 400_000
    g = gen(8)
    x0 = torch.full((n, 1), c, dtype=torch.float64)
    x_prev = q_sample(x0, torch.randn(n, 1, generator=g, dtype=torch.float64), ab_p)
    x_t = q_sample(x_prev, torch.randn(n, 1, generator=g, dtype=torch.float64), ab_t / ab_p)
    design = torch.cat([torch.ones_like(x_t), x_t], 1)
    coef = torch.linalg.lstsq(design, x_prev).solution.flatten()
    resid = x_prev - design @ coef[:, None]
    # posterior mean = m0 + m1 x_t: read m0, m1 off q_posterior at x_t = 0 and 1
    m_at0, var = q_posterior(x0[:1], torch.zeros(1, 1, dtype=torch.float64), ab_t, ab_p)
    m_at1, _ = q_posterior(x0[:1], torch.ones(1, 1, dtype=torch.float64), ab_t, ab_p)
    assert coef[0].item() == pytest.approx(m_at0.item(), abs=5e-3)
    assert coef[1].item() == pytest.approx((m_at1 - m_at0).item(), abs=5e-3)
    assert resid.var().item() == pytest.approx(var.item(), rel=0.01)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_step_with_operator_has_posterior_covariance(variance: str) -> None:
    """With noise_operator=A the step's covariance is var * A A^T around the posterior mean."""
    d, n = 4, 200_000
    a = blur_matrix(d)
    op = apply_rows(a)
    acp = alphas_cumprod(make_betas("cosine", 1000))
    ab_t, ab_p = acp[300], acp[280]
    g = gen(9)
    x_t = torch.randn(1, d, generator=g, dtype=torch.float64).expand(n, d)
    eps = torch.randn(1, d, generator=g, dtype=torch.float64).expand(n, d)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    out = ddpm_step(x_t, eps, ab_t, ab_p, z, variance=variance, noise_operator=op)
    mean, small = q_posterior(predict_x0(x_t[:1], eps[:1], ab_t), x_t[:1], ab_t, ab_p)
    var = small if variance == "small" else 1 - ab_t / ab_p
    torch.testing.assert_close(out.mean(0), mean[0], rtol=0, atol=5e-3 * var.sqrt().item() * 3)
    torch.testing.assert_close(cov(out), var * a @ a.T, rtol=0, atol=0.01 * var.item())


def test_reverse_step_with_operator_reproduces_the_true_joint() -> None:
    """∞-Diff in T-space: with the exact T eps, a DDPM step samples the true joint of (x_t, x_prev)."""
    d, n = 3, 300_000
    a = blur_matrix(d)
    op = apply_rows(a)
    acp = alphas_cumprod(make_betas("linear", 1000))
    ab_t, ab_p = acp[400], acp[350]
    g = gen(10)
    x0 = torch.tensor([0.5, -0.2, 0.9], dtype=torch.float64).repeat(n, 1)
    tx0 = op(x0)

    def draw() -> Tensor:
        return torch.randn(n, d, generator=g, dtype=torch.float64)

    x_prev_true = q_sample(x0, draw(), ab_p, operator=op)
    x_t = q_sample(x_prev_true, draw(), ab_t / ab_p, noise_operator=op)
    t_eps = predict_eps(x_t, tx0, ab_t)  # exactly T eps_t
    x_prev = ddpm_step(x_t, t_eps, ab_t, ab_p, draw(), noise_operator=op)
    joint_true = torch.cat([x_t, x_prev_true], 1)
    joint_ours = torch.cat([x_t, x_prev], 1)
    torch.testing.assert_close(joint_ours.mean(0), joint_true.mean(0), rtol=0, atol=0.01)
    torch.testing.assert_close(cov(joint_ours), cov(joint_true), rtol=0, atol=0.01)
    # and its residual around the posterior mean has covariance var * A A^T
    mean, var = q_posterior(tx0, x_t, ab_t, ab_p)
    torch.testing.assert_close(cov(x_prev_true - mean), var * a @ a.T, rtol=0, atol=0.01 * var.item())


def test_ddim_eta_one_is_ddpm_and_eta_zero_follows_the_noise() -> None:
    d = 6
    a = blur_matrix(d)
    op = apply_rows(a)
    acp = alphas_cumprod(make_betas("cosine", 1000))
    g = gen(13)
    x_t, eps, z = (torch.randn(4, 2, d, generator=g, dtype=torch.float64) for _ in range(3))
    ab_t = acp[torch.tensor([900, 500, 100, 10])]
    ab_p = torch.cat([acp[torch.tensor([700, 499, 0])], torch.ones(1, dtype=torch.float64)])
    torch.testing.assert_close(
        ddim_step(x_t, eps, ab_t, ab_p, z, eta=1.0, noise_operator=op),
        ddpm_step(x_t, eps, ab_t, ab_p, z, noise_operator=op),
    )
    # eta = 0 with the exact noise moves along the same noise: x_prev = sqrt(ab_p) x0 + sqrt(1-ab_p) eps
    x0 = torch.randn(4, 2, d, generator=g, dtype=torch.float64)
    xt = q_sample(x0, eps, ab_t)
    torch.testing.assert_close(ddim_step(xt, eps, ab_t, ab_p), q_sample(x0, eps, ab_p))


def test_final_step_adds_no_noise_per_sample() -> None:
    acp = alphas_cumprod(make_betas("linear", 1000))
    x, eps = _inputs(3, torch.float32)
    x, eps = x[:2], eps[:2]
    noise = 100 * torch.randn(x.shape, generator=gen(0))
    ab_t, ab_p = torch.stack([acp[10], acp[0]]), torch.stack([acp[9], torch.tensor(1.0)])
    out = ddpm_step(x, eps, ab_t, ab_p, noise, variance="large")
    clean = ddpm_step(x, eps, ab_t, ab_p * 0 + 1, None, variance="large")
    assert (out[0] - clean[0]).abs().max() > 1.0  # noisy (and a different mean), sample 0
    torch.testing.assert_close(out[1], clean[1])  # ab_prev == 1: no noise
    # float32 in, float32 out, with float64 coefficients
    assert out.dtype == torch.float32


@pytest.mark.parametrize("ode", [False, True])
def test_vp_sampler_recovers_a_gaussian_with_correlated_prior(ode: bool) -> None:
    """Exact eps for x_0 ~ N(mu, s^2 A A^T) under the VP SDE with covariance C = A A^T."""
    d, n = 3, 40_000
    a = blur_matrix(d)
    op = apply_rows(a)
    mu, s = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64), 0.4

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        m, std = vp_marginal(t)
        m, std = m[:, None], std[:, None]
        return std * (x - m * mu) / (m**2 * s**2 + std**2)

    x_T = op(torch.randn(n, d, generator=gen(14), dtype=torch.float64))
    t_min = 1e-3
    x = vp_sample(eps_fn, x_T, 500, t_min=t_min, generator=gen(15), noise_operator=op, ode=ode)
    m, std = vp_marginal(torch.tensor(t_min, dtype=torch.float64))
    torch.testing.assert_close(x.mean(0), m * mu, rtol=0, atol=0.02)
    torch.testing.assert_close(cov(x), (m**2 * s**2 + std**2) * a @ a.T, rtol=0, atol=0.01)


@pytest.mark.gpu
def test_cuda_state_with_cpu_generator_and_schedule() -> None:
    """A CPU generator and a CPU (or CUDA) schedule drive CUDA samples to the CPU result."""
    x_T = torch.randn(2, 3, 4, 4, generator=gen(0))
    acp = alphas_cumprod(make_betas("cosine", 1000))
    ts = timestep_subsequence(1000, 20)
    cpu = ddim_sample(fake_eps, x_T, acp, ts, eta=1.0, generator=gen(1), clip_x0=1.0)
    for schedule in (acp, acp.cuda()):
        out = ddim_sample(fake_eps, x_T.cuda(), schedule, ts, eta=1.0, generator=gen(1), clip_x0=1.0)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), cpu, rtol=1e-5, atol=1e-5)
    out = ddpm_sample(fake_eps, x_T.cuda(), acp, generator=gen(2), timesteps=ts)
    expected = ddpm_sample(fake_eps, x_T, acp, generator=gen(2), timesteps=ts)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_randn_with_one_generator_per_row_draws_each_row_alone() -> None:
    """Per-image seeds: row k of a batch is the draw of ``shape[1:]`` from generator k alone, in the
    requested dtype, then moved to the device; a count of generators other than the rows is named."""
    shape = (3, 2, 4)
    rows = randn(shape, [torch.Generator().manual_seed(s) for s in (1, 2, 3)], dtype=torch.float64)
    for k, seed in enumerate((1, 2, 3)):
        alone = torch.randn((2, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert torch.equal(rows[k], alone)
    moved = randn((2, 5), [torch.Generator(), torch.Generator()], device="meta")
    assert moved.device.type == "meta" and moved.shape == (2, 5) and moved.dtype == torch.float32
    with pytest.raises(ValueError) as error:
        randn((3, 2), [torch.Generator(), torch.Generator()])
    assert str(error.value) == "got 2 generators for a batch of 3 rows"


def test_sample_timesteps_draws_with_the_generator_where_it_lives_then_moves_them() -> None:
    """With a generator: the draw ``torch.randint(0, T, (B,))`` from it on its device, then moved to
    ``device`` (the meta device stands in for a GPU). Without one: drawn on ``device`` itself (so a meta
    draw leaves the CPU's global RNG alone)."""
    expected = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(sample_timesteps(6, 10, generator=torch.Generator().manual_seed(4)), expected)
    generator = torch.Generator().manual_seed(4)
    moved = sample_timesteps(6, 10, generator=generator, device="meta")
    assert moved.device.type == "meta" and moved.dtype == torch.long
    fresh = torch.Generator().manual_seed(4)
    torch.randint(0, 10, (6,), generator=fresh)  # the generator advanced by exactly that draw
    assert torch.equal(
        torch.randint(0, 10, (6,), generator=generator), torch.randint(0, 10, (6,), generator=fresh)
    )
    state = torch.get_rng_state()
    assert sample_timesteps(6, 10, device="meta").device.type == "meta"
    assert torch.equal(torch.get_rng_state(), state)


def test_expand_like_moves_shapes_and_refuses_coefficients_by_their_rule() -> None:
    """A per-sample ``[B]`` coefficient becomes ``[B, 1, ..., 1]`` on ``x``'s device and dtype (meta
    stands in for a GPU); one of ``x``'s own rank passes as it is; anything else is named."""
    x = torch.zeros(2, 3, 4, 4, device="meta", dtype=torch.float16)
    c = expand_like(torch.tensor([0.5, 0.2]), x)
    assert c.device.type == "meta" and c.dtype == torch.float16 and c.shape == (2, 1, 1, 1)
    assert expand_like(torch.ones(2, 1, 1, 1), torch.zeros(2, 3, 4, 4)).shape == (2, 1, 1, 1)
    assert expand_like(torch.ones(2, 1), torch.zeros(2, 3)).shape == (2, 1)  # rank 2 against rank 2
    with pytest.raises(ValueError) as error:
        expand_like(torch.ones(2, 3), torch.zeros(2, 3, 4, 4))
    assert (
        str(error.value) == "coefficient of shape (2, 3) does not broadcast per sample against (2, 3, 4, 4)"
    )
    with pytest.raises(ValueError) as error:
        expand_like(torch.ones(3), torch.zeros(2))
    assert str(error.value) == "per-sample coefficient has 3 entries for a batch of 2"


def test_randn_draws_with_the_generator_where_it_lives_then_moves_the_noise() -> None:
    """One generator: the draw from it on its device (the generator advances by exactly that draw), then
    moved to ``device`` (meta stands in for a GPU). None: drawn on ``device`` itself, so a meta draw leaves
    the CPU's global RNG alone."""
    generator = torch.Generator().manual_seed(5)
    noise = randn((2, 3), generator, device="meta")
    assert noise.device.type == "meta" and noise.shape == (2, 3)
    fresh = torch.Generator().manual_seed(5)
    torch.randn((2, 3), generator=fresh)
    assert torch.equal(torch.randn((2, 3), generator=generator), torch.randn((2, 3), generator=fresh))
    state = torch.get_rng_state()
    assert randn((2, 3), None, device="meta").device.type == "meta"
    assert torch.equal(torch.get_rng_state(), state)
