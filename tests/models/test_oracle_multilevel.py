"""Exact-denoiser oracle for MultilevelSDE: Gaussian random functions as data, the closed-form noise
predictor (``oracle_multilevel.MultilevelOracle``, written from the README with dense float64 matrices)
plugged in as the module's network, and the module's own ``sample()`` and ``loss()`` run on it.

* Sampling: every sampler step is affine plus Gaussian noise, so what ``sample()`` returns has an exact
  Gaussian law (``sampler_law``). At few steps the module's samples must match it to Monte-Carlo precision
  (2048 samples: each whitened mode's variance to +-3 %), for the default prior (periodic Matérn), a
  cosine-basis Matérn, the inverse Laplacian, a sum of covariances, the finite-rank FNO priors (rezdiff's
  and the authors') and the authors' combined prior, with the samplers of ``SAMPLERS`` (an ODE sampler
  for every prior), at the training grid, twice it and half of it. The FNO-type priors are written as the
  operators they are the law of (the authors' ``SpectralConv2d`` and ``CombinedConv`` rewritten from their
  code); ``test_oracle_multilevel_priors.py`` checks them as covariances. The Euler-Maruyama sampler
  forgets x_T (its first 10-step update multiplies it by ~0.02), so the x_T law is checked by the ODE
  samplers. As the steps grow, that law converges to the law of ``E[x_0 | x_{t_min}]`` (``tweedie_law``)
  at the order of the scheme (measured below), which is the data law up to the posterior covariance at
  ``t_min``.
* Loss: with the exact network the loss equals the analytic minimum ``tr V / d`` at the drawn ``t`` (and
  its average over ``t ~ U(train_t_min, 1)``), at the native grid and at a coarse level of finer data,
  whose law is the band-limited projection of the fine law in the prior's basis; with a network off by a
  known offset or scale it is larger by the known amount.

Data: ``oracle_multilevel.function_law``, 2 channels (1 for the cross-resolution runs), anisotropic
spectrum plus a non-stationary rank-one part, non-zero smooth mean; tiny grids (4², 8², 16²).
"""

from __future__ import annotations

import math

import pytest
import torch

from rezdiff.data.batch import FieldBatch
from rezdiff.models import MultilevelSDE
from rezdiff.models.multilevel.priors import (
    AuthorsFNOPrior,
    CombinedCovariance,
    Covariance,
    FNOPrior,
    InverseLaplacian,
    Matern,
)
from tests.helpers import move_live_weights, to_recorder
from tests.models.oracle_multilevel import (
    MultilevelOracle,
    PriorOperator,
    Spectrum,
    assert_follows,
    authors_fno_root,
    combined_root,
    data_batch,
    fno_prior_reflect_root,
    fno_prior_root,
    function_law,
    inverse_laplacian_root,
    matern_root,
    resize_matrix,
    sampler_law,
    sampler_law_dense,
    spectral_root,
    tweedie_law,
    vp_coefficients,
)

pytestmark = pytest.mark.usefixtures("single_thread")

NETWORK = dict(modes=2, width=4, n_layers=1, projection=4, time_embedding=8)  # replaced by the oracle
SAMPLES = 2048  # Monte-Carlo size of a sampling test (each whitened mode's variance to +-3 %)
BATCH = 4096  # examples in a loss test
T_MIN = 0.02  # sample_t_min of the few-step tests: large enough that the final Tweedie step matters
STEPS = {"sde": 10, "ode_euler": 10, "ode_heun": 5}
# name: (the library's prior or None for the default, its basis, the same prior written from the README or
# the authors' code)
PRIORS: dict[str, tuple[Covariance | None, str, Spectrum | PriorOperator]] = {
    "matern": (None, "periodic", matern_root()),
    # scaled so that data and noise are comparable on some modes (whitened data/noise ratio 0.1-1), as
    # with real data; the default prior's noise dominates every mode of this data law
    "matern_reflect": (
        Matern(boundary="reflect", scale=0.25),
        "reflect",
        matern_root(scale=0.25, boundary="reflect"),
    ),
    "inverse_laplacian": (InverseLaplacian(scale=0.5), "periodic", inverse_laplacian_root(scale=0.5)),
    # independent draws add: sigma^2 = sigma_1^2 + sigma_2^2
    "sum": (
        Matern(scale=0.5) + InverseLaplacian(scale=0.3),
        "periodic",
        lambda r, c: (
            matern_root(scale=0.5)(r, c) ** 2 + inverse_laplacian_root(scale=0.3)(r, c) ** 2
        ).sqrt(),
    ),
    # finite rank (25 of 64 modes on 8^2): samples lie in the prior's range, the data's other modes are
    # never generated; the scales make the whitened data/noise ratio 0.1-10 on the held modes
    "fno": (FNOPrior(2, seed=3, scale=0.1), "periodic", fno_prior_root(2, seed=3, scale=0.1)),
    "fno_reflect": (
        FNOPrior(2, seed=3, scale=0.1, boundary="reflect"),
        "reflect",
        fno_prior_reflect_root(2, seed=3, scale=0.1),
    ),
    "authors_fno": (
        AuthorsFNOPrior(3, 2, seed=1, scale=0.02),
        "periodic",
        authors_fno_root(3, 2, seed=1, scale=0.02),
    ),
    # the warm-start config's kind of prior: the roots add on one draw (full rank: the FNO part's real
    # parts are >= 0.2 and the Laplacian part is positive off the constant mode)
    "combined": (
        CombinedCovariance(
            (InverseLaplacian(scale=0.15, zero_mode="drop"), AuthorsFNOPrior(3, 2, seed=2, scale=0.02))
        ),
        "periodic",
        combined_root(
            spectral_root(inverse_laplacian_root(scale=0.15, drop_constant=True)),
            authors_fno_root(3, 2, seed=2, scale=0.02),
        ),
    ),
}


def build(
    prior: str, channels: int = 2, structure: float = 1.0, **options
) -> tuple[MultilevelSDE, MultilevelOracle]:
    """A MultilevelSDE with the prior ``PRIORS[prior]`` whose network is the oracle of ``function_law`` under
    that prior; EMA off."""
    library_prior, boundary, root = PRIORS[prior]
    model = MultilevelSDE(image_size=8, channels=channels, prior=library_prior, **NETWORK, **options)
    oracle = MultilevelOracle(function_law(boundary, channels, structure), root)
    model.network = oracle
    model.ema = None
    return model, oracle


def relative_errors(
    mean: torch.Tensor, cov: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor]
) -> tuple[float, float]:
    """Largest whitened mean error and largest relative covariance error of ``(mean, cov)`` w.r.t. ``ref``."""
    evals, evecs = torch.linalg.eigh(ref[1])
    white = evecs / evals.sqrt()
    relative = white.T @ cov @ white - torch.eye(mean.numel(), dtype=torch.float64)
    return float(((mean - ref[0]) @ white).abs().max()), float(relative.abs().max())


# ------------------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("prior", ["matern_reflect", "authors_fno", "combined"])
def test_the_two_sampler_laws_agree(prior: str) -> None:
    """The modal recursion (used for many steps) is the dense step-by-step law (used to derive it), also for
    a finite-rank prior (joint modes of zero prior variance)."""
    _, oracle = build(prior)
    for sampler in STEPS:
        dense = sampler_law_dense(oracle, 8, 4, sampler, T_MIN)
        modal = sampler_law(oracle, 8, 4, sampler, T_MIN)
        torch.testing.assert_close(modal, dense, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------- sampling


# the Euler-Maruyama sampler forgets x_T: every prior gets an ODE sampler too
SAMPLERS = {
    "matern": list(STEPS),
    "matern_reflect": list(STEPS),
    "inverse_laplacian": list(STEPS),
    "sum": ["sde", "ode_heun"],
    "fno": ["sde", "ode_heun"],
    "fno_reflect": ["sde", "ode_euler"],
    "authors_fno": ["sde", "ode_euler"],
    "combined": list(STEPS),
}


@pytest.mark.parametrize(("prior", "sampler"), [(p, s) for p in PRIORS for s in SAMPLERS[p]])
def test_samples_follow_the_exact_law_of_the_sampler(prior: str, sampler: str) -> None:
    """x_T ~ N(0, C) on the grid, the step formulas, the time grid 1 -> sample_t_min, the network's time
    scale (1000 t) and the final Tweedie step: all change the law by far more than 5 standard errors."""
    model, oracle = build(prior, sample_t_min=T_MIN)
    steps = STEPS[sampler]
    images = model.sample(SAMPLES, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0))
    times = [float(t[0]) for t, _ in oracle.calls]
    assert len(times) == (2 * steps if sampler == "ode_heun" else steps) + 1  # + the Tweedie step
    assert times[0] == pytest.approx(1.0) and times[-1] == pytest.approx(T_MIN)
    assert_follows(images, *sampler_law(oracle, 8, steps, sampler, T_MIN))


@pytest.mark.parametrize(
    ("prior", "resolution", "sampler"),
    [
        ("matern", 16, "sde"),
        ("matern", 16, "ode_heun"),
        ("matern", 4, "sde"),
        ("matern", 4, "ode_euler"),
        ("fno", 16, "ode_heun"),
        ("authors_fno", 4, "ode_euler"),  # coarser than the mode set: the modes |k| < 2 of it
        ("combined", 16, "sde"),
        ("combined", 4, "ode_heun"),
    ],
)
def test_samples_at_another_resolution_follow_that_grids_law(
    prior: str, resolution: int, sampler: str
) -> None:
    """Trained at 8², sampled at 16² and 4²: the prior is drawn on the new grid and the noise operator is the
    new grid's C^{1/2}, so with the new grid's exact predictor the law is the sampler's law for the data
    law on that grid (the same random function's values there; see the convergence test)."""
    model, oracle = build(prior, channels=1, sample_t_min=T_MIN)
    steps = STEPS[sampler]
    images = model.sample(
        SAMPLES, resolution, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(1)
    )
    assert {n for _, n in oracle.calls} == {resolution}
    assert_follows(images, *sampler_law(oracle, resolution, steps, sampler, T_MIN))


# Measured with the default prior and sample_t_min = 1e-3 (largest relative covariance error against the
# Tweedie law; 8² two channels / 16² one channel): sde 0.067 / 0.031 at 500 / 1000 steps; ode_euler
# 0.046 / 0.023; ode_heun 0.099 / 0.024 at 100 / 200 steps (second order). The Tweedie law itself is 5.2 %
# below the data law on the 8² grid's least-varying mode (the posterior variance left at t_min = 1e-3).
ORDERS = {"sde": (1000, 1), "ode_euler": (1000, 1), "ode_heun": (200, 2)}


@pytest.mark.parametrize("resolution", [8, 16])
@pytest.mark.parametrize("sampler", list(ORDERS))
def test_sampler_law_converges_to_the_data_law_at_the_schemes_order(sampler: str, resolution: int) -> None:
    """At the default steps the sampler's law is within 4 % (covariance) of E[x_0 | x_{t_min}]'s law, and
    halving the step size divides the error by 2^order (+-25 %): the reference is a consistent
    discretisation of the README's reverse SDE / ODE, at the training grid and at twice it."""
    _, oracle = build("matern", channels=2 if resolution == 8 else 1)
    steps, order = ORDERS[sampler]
    limit = tweedie_law(oracle, resolution, 1e-3)
    fine = relative_errors(*sampler_law(oracle, resolution, steps, sampler, 1e-3), limit)
    coarse = relative_errors(*sampler_law(oracle, resolution, steps // 2, sampler, 1e-3), limit)
    assert fine[0] < 0.01 and fine[1] < 0.04, fine
    assert 0.75 * 2**order < coarse[1] / fine[1] < 1.25 * 2**order, (coarse, fine)
    data_mean, data_cov = oracle.grid(resolution).mean, oracle.grid(resolution).cov
    gap = relative_errors(*limit, (data_mean, data_cov))
    assert gap[0] < 1e-9 and gap[1] < 0.07, gap  # t_min's posterior variance, not a sampler error


# ------------------------------------------------------------------------------------------- loss


def level_law(oracle: MultilevelOracle, fine: int, coarse: int, channels: int) -> None:
    """Tell the oracle that data on the coarse grid is the band-limited projection of the fine law."""
    mean, cov = oracle.law.on_grid(fine)
    axis = resize_matrix(fine, coarse, oracle.law.boundary)
    resize = torch.kron(torch.eye(channels, dtype=torch.float64), torch.kron(axis, axis))
    oracle.set_law(coarse, resize @ mean, resize @ cov @ resize.T)


def run_loss(
    model: MultilevelSDE, oracle: MultilevelOracle, batch: FieldBatch, seed: int, **kw
) -> tuple[float, torch.Tensor, int]:
    """The module's loss with a fresh call log, the ``t`` it drew per example and the grid it trained on."""
    oracle.calls.clear()
    loss = float(model.loss(batch, torch.Generator().manual_seed(seed), **kw))
    assert len(oracle.calls) == 1
    t, n = oracle.calls[0]
    return loss, t, n


# (prior, data grid, level): the level is set via train_resolution (ResolutionSchedule's way) or, for
# "arg", via loss(..., resolution=) (validation's way)
LOSS_CASES = {
    "native": ("matern", 8, None),
    "level": ("matern", 16, "schedule"),
    "reflect_native": ("matern_reflect", 8, None),
    "reflect_level": ("matern_reflect", 16, "arg"),
    "fno_native": ("fno", 8, None),
    "fno_reflect_level": ("fno_reflect", 16, "arg"),
    # both the coarse data and this finite-rank prior lack the coarse Nyquist modes: Sigma + C is singular
    "authors_level": ("authors_fno", 16, "schedule"),
    "combined_native": ("combined", 8, None),
    "combined_level": ("combined", 16, "arg"),
}


def loss_setup(name: str) -> tuple[MultilevelSDE, MultilevelOracle, FieldBatch, dict, int]:
    prior, size, level = LOSS_CASES[name]
    model, oracle = build(prior, structure=5.0)  # a resize's phase error shifts the mean: make it count
    law = oracle.law.on_grid(size)
    batch = FieldBatch(image=data_batch(law, BATCH, 2, size, seed=3))
    options: dict = {}
    if level is not None:
        level_law(oracle, size, 8, 2)
        if level == "schedule":
            model.train_resolution = 8
        else:
            options["resolution"] = 8
    return model, oracle, batch, options, 8


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_loss_of_the_exact_network_is_the_analytic_minimum(name: str) -> None:
    """Conditional on the drawn t: mean of tr V(t) / d within 5 standard errors; unconditionally: the
    average over t ~ U(train_t_min, 1) (midpoint rule, 4000 nodes) within the spread of the t draw."""
    model, oracle, batch, options, level = loss_setup(name)
    loss, t, n = run_loss(model, oracle, batch, seed=4, **options)
    assert n == level and t.numel() == BATCH
    mse, mse_sq = oracle.min_error(level, t)
    expected, spread = float(mse.mean()), float((2 * mse_sq).sum().sqrt()) / BATCH
    assert loss == pytest.approx(expected, abs=5 * spread), (loss, expected, spread)
    t_min = model.train_t_min
    nodes = t_min + (1 - t_min) * (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    every = oracle.min_error(level, nodes)[0]
    spread_t = math.sqrt(float(every.var()) / BATCH + spread**2)
    assert loss == pytest.approx(float(every.mean()), abs=5 * spread_t), (loss, float(every.mean()))


@pytest.mark.parametrize("name", ["native", "reflect_level", "fno_native", "combined_level"])
def test_loss_of_a_known_wrong_network_is_larger_by_the_known_amount(name: str) -> None:
    """``eps_hat + delta``: + delta^2; ``(1 + gamma) eps_hat``: + gamma^2 tr(C - V) / d (same draws)."""
    model, oracle, batch, options, level = loss_setup(name)
    exact, t, _ = run_loss(model, oracle, batch, seed=6, **options)
    grid = oracle.grid(level)
    m, s, _ = vp_coefficients(t)
    r = grid.error(m, s)  # V = B diag(r) B^T, C - V = B diag(q - r) B^T
    d = grid.mean.numel()
    ones = grid.colour.T @ torch.ones(d, dtype=torch.float64)  # B^T 1
    delta, gamma = 0.05, 0.2
    oracle.offset = delta
    shifted, _, _ = run_loss(model, oracle, batch, seed=6, **options)
    spread = 2 * delta * float((r @ ones**2).sum().sqrt()) / d / BATCH
    assert shifted - exact == pytest.approx(delta**2, abs=5 * spread + 1e-6)
    oracle.offset, oracle.scale = 0.0, 1 + gamma
    scaled, _, _ = run_loss(model, oracle, batch, seed=6, **options)
    gram2 = grid.gram**2
    explained = grid.q - r
    known = float((explained @ grid.gram.diagonal()).mean()) / d * gamma**2
    # per example: (gamma^2 |eps_hat|^2 + 2 gamma eps_hat.(eps_hat - eps)) / d with eps_hat ~ N(0, C - V)
    # independent of eps_hat - eps ~ N(0, V): variance 2 gamma^4 tr (C - V)^2 + 4 gamma^2 tr (C - V) V
    variance = (
        2 * gamma**4 * torch.einsum("bj,jl,bl->b", explained, gram2, explained)
        + 4 * gamma**2 * torch.einsum("bj,jl,bl->b", explained, gram2, r)
    ) / d**2
    assert scaled - exact == pytest.approx(known, abs=5 * float(variance.sum().sqrt()) / BATCH + 1e-6)


def test_loss_by_hand_on_one_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """One seeded loss written out: ``t = t_min + (1 - t_min) u`` with ``u`` a float64 uniform from the
    generator (on its device), then the prior's noise from the same generator, ``x_t = m(t) x_0 + s(t)
    C^{1/2} xi`` and the mean squared error of the network's ε. A draw from the global RNG, in float32 or
    in another order fails it; the draw's device is recorded (on a CPU-only machine a draw on the default
    device would pass)."""
    from rezdiff.core.gaussian import randn
    from rezdiff.core.schedules import vp_marginal

    model, oracle = build("matern", train_t_min=0.1)
    x0 = data_batch(oracle.law.on_grid(8), 4, 2, 8, seed=3)
    generator = torch.Generator().manual_seed(7)
    u = torch.rand(4, generator=generator, dtype=torch.float64)
    t = 0.1 + 0.9 * u
    noise = model.prior.sqrt(randn(tuple(x0.shape), generator, x0.device, x0.dtype))
    mean, std = vp_marginal(t, model.beta_min, model.beta_max)
    x_t = mean.float().view(-1, 1, 1, 1) * x0 + std.float().view(-1, 1, 1, 1) * noise
    expected = (model.eps(x_t, t) - noise).square().mean()
    devices: list[object] = []
    moved: list[tuple[object, ...]] = []
    real_rand = torch.rand

    Draw = to_recorder(moved)

    def rand(*args, **kwargs):
        devices.append(kwargs.get("device"))
        return real_rand(*args, **kwargs).as_subclass(Draw)

    import rezdiff.models.multilevel.module as module

    noise_draws: list[tuple[object, ...]] = []

    def recording_randn(*args, **kwargs):
        noise_draws.append((*args[2:], *kwargs.values()))  # what the loss passes after shape and generator
        return randn(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", rand)
    monkeypatch.setattr(module, "randn", recording_randn)
    torch.manual_seed(123)  # the global RNG must not matter
    loss = model.loss(FieldBatch(image=x0), torch.Generator().manual_seed(7))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert devices == [torch.device("cpu")] and moved == [(torch.device("cpu"),)]  # t onto the data's device
    assert noise_draws == [(x0.device, x0.dtype)]  # the noise on the data's device, in its dtype


def test_loss_names_a_point_batch_and_a_channel_mismatch() -> None:
    """The one-line errors of the data a loss refuses, in full: a batch that selects points (an index, or
    coordinates, either one) and data with another channel count (axis 1)."""
    model, _ = build("matern")
    image = torch.zeros(2, 2, 8, 8)
    points = (
        "MultilevelSDE trains on full grids, but this batch selects points; configure the data module with "
        "`view: Levels` (multilevel training) or `view: FullGrid` (e.g. --data.init_args.view.class_path "
        "rezdiff.data.Levels)"
    )
    for fields in ({"index": torch.zeros(2, 4, dtype=torch.long)}, {"coords": torch.zeros(2, 4, 2)}):
        with pytest.raises(ValueError) as error:
            model.loss(FieldBatch(image=image, **fields), torch.Generator())
        assert str(error.value) == points
    with pytest.raises(ValueError) as error:
        model.loss(FieldBatch(image=torch.zeros(2, 3, 8, 8)), torch.Generator())
    assert str(error.value) == "MultilevelSDE was built for 2 channels, the data has 3"


def test_sample_hands_the_vp_sampler_its_grid_schedule_and_callback_then_denoises_at_t_min(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``sample()`` passes on, recorded: a float64 grid of ``steps + 1`` times from 1 to
    ``sample_t_min``, the VP schedule with the model's (non-default) betas, the callback; then the final
    Tweedie step at ``sample_t_min`` with the model's betas and a time tensor on the state's device."""
    import rezdiff.models.multilevel.module as module
    from rezdiff.core.samplers import RegisteredSampler

    model, _ = build("matern", beta_min=0.2, beta_max=15.0, sample_t_min=0.01)
    handed: list[tuple] = []
    marginals: list[tuple] = []
    fulls: list[dict] = []
    real_get, real_marginal, real_full = module.get_sampler, module.vp_marginal, torch.full

    def get_sampler(process: str, name: str) -> RegisteredSampler:
        entry = real_get(process, name)

        def fn(eps_fn, x_T, schedule, grid, settings, generator, callback):
            handed.append((schedule, grid, callback))
            return entry.fn(eps_fn, x_T, schedule, grid, settings, generator, callback)

        return RegisteredSampler(fn, entry.all_steps)

    def full(*args, **kwargs):
        fulls.append(kwargs)
        return real_full(*args, **kwargs)

    monkeypatch.setattr(module, "get_sampler", get_sampler)
    monkeypatch.setattr(module, "vp_marginal", lambda *a: marginals.append(a) or real_marginal(*a))
    monkeypatch.setattr(torch, "full", full)
    callback = lambda info: None  # noqa: E731
    model.sample(2, 8, steps=4, callback=callback, generator=torch.Generator().manual_seed(0))
    [(schedule, grid, given)] = handed
    assert (schedule.beta_min, schedule.beta_max) == (0.2, 15.0) and given is callback
    assert (
        grid.dtype == torch.float64
        and grid.tolist() == torch.linspace(1.0, 0.01, 5, dtype=torch.float64).tolist()
    )
    assert marginals == [(0.01, 0.2, 15.0)]
    assert fulls[-1] == {"dtype": torch.float32, "device": torch.device("cpu")}  # the final step's time


def test_eps_reads_the_live_network_by_default_with_time_in_the_states_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``eps`` (what the loss trains) calls the live network, not the EMA copy, unless asked; the network
    gets ``1000 t`` in the state's dtype (the loss draws t in float64)."""
    model = MultilevelSDE(image_size=8, channels=2, **NETWORK, ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([0.3, 0.7], dtype=torch.float64)
    live, ema = model.network(x, t.float() * 1000), model.ema.module(x, t.float() * 1000)
    assert not torch.allclose(live, ema)
    torch.testing.assert_close(model.eps(x, t), live, rtol=0, atol=0)
    torch.testing.assert_close(model.eps(x, t, use_ema=True), ema, rtol=0, atol=0)
    times: list[torch.dtype] = []
    real_forward = type(model.network).forward
    monkeypatch.setattr(
        type(model.network), "forward", lambda self, a, s: times.append(s.dtype) or real_forward(self, a, s)
    )
    model.eps(x, t)
    assert times == [torch.float32]
