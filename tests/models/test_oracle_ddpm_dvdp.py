"""Exact-denoiser oracles for DDPM and DVDP: Gaussian data, the closed-form ε-predictor plugged into each
module in place of its U-Net, and the module's own ``sample()`` and ``loss()`` run on it.

* Sampling: with a linear denoiser every sampler step is affine plus Gaussian noise, so what a sampler
  returns has an exact Gaussian law (``oracle.sampler_law``, written from the README's formulas with
  dense matrices). The module's samples must match it to Monte-Carlo precision, and that law must match
  the data law at full steps to within the discretisation error (a few per cent on these low-variance
  modes; zero for the mean).
* Loss: with the exact network the loss equals the analytic minimum (conditional on the drawn
  timesteps to Monte-Carlo precision, and unconditionally within the spread of the draw); with a network
  off by a known offset or scale it is larger by the known amount.

Data: ``oracle.gaussian_law()``, 2 x 8 x 8, correlated channels, per-DCT-mode variances 0.011-0.059 and
a non-zero mean. DDIM's timestep spacing for DDPM is read from the module's ``spacing`` hyperparameter when
it has one ("leading" otherwise), so the tests follow a change of default.
"""

from __future__ import annotations

import math

import pytest
import torch

from rezdiff.core.schedules import timestep_subsequence
from rezdiff.data.batch import FieldBatch
from rezdiff.models import DDPM, DVDP
from rezdiff.models.base import DiffusionModule
from tests.models.oracle import (
    GaussianOracle,
    gaussian_law,
    sampler_law,
    trailing_timesteps,
    whitened_statistics,
)

UNET = dict(
    image_size=8,
    channels=2,
    unet=dict(
        block_out_channels=(8, 16), layers_per_block=1, attention_levels=(), norm_num_groups=8, dropout=0.0
    ),
    clip_denoised=False,
)
TURNS = (300, 600)
SAMPLES = 2048  # Monte-Carlo size of a sampling test (each mode's variance to +-3 %)
BATCH = 4096  # examples in a loss test


@pytest.fixture(scope="module")
def law() -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_law()


def with_oracle(model: DiffusionModule, law: tuple[torch.Tensor, torch.Tensor], **options) -> GaussianOracle:
    """Replace ``model``'s network (and its EMA copy) by the exact ε-predictor of its own process."""
    oracle = GaussianOracle(*law, channels=2, size=8, **options)
    model.network = oracle
    model.ema = None
    return oracle


def data(law: tuple[torch.Tensor, torch.Tensor], num: int, seed: int) -> FieldBatch:
    mean, cov = law
    generator = torch.Generator().manual_seed(seed)
    white = torch.randn(num, mean.numel(), generator=generator, dtype=torch.float64)
    x0 = mean + white @ torch.linalg.cholesky(cov).T
    return FieldBatch(image=x0.to(torch.float32).reshape(num, 2, 8, 8))


def ddpm_timesteps(model: DDPM, steps: int) -> list[int]:
    spacing = model.hparams.get("spacing", "leading")
    return timestep_subsequence(model.num_train_steps, steps, spacing).tolist()


def assert_follows(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> dict[str, float]:
    """``samples`` ``[N, ...]`` are a draw of ``N(mean, cov)``: every statistic within ~5 standard errors."""
    stats = whitened_statistics(samples.reshape(samples.shape[0], -1), mean, cov)
    n, d = stats["n"], mean.numel()
    assert stats["mean_z"] < 5.0, stats
    assert stats["var_rel_max"] < 5 * math.sqrt(2 / n), stats
    assert abs(stats["var_rel_avg"]) < 5 * math.sqrt(2 / n / d), stats
    assert stats["corr_max"] < 5.6 / math.sqrt(n), stats
    return stats


# ------------------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("turning_points", [(), TURNS])
def test_oracle_is_the_conditional_mean_under_the_modules_forward_process(law, turning_points) -> None:
    """E[(eps - eps_hat) x_t^T] = 0, E[eps - eps_hat] = 0 and E|eps - eps_hat|^2 / d = tr V / d (MC)."""
    model = DVDP(**UNET, turning_points=turning_points) if turning_points else DDPM(**UNET)
    oracle = with_oracle(model, law, turning_points=turning_points)
    from rezdiff.core.gaussian import q_sample
    from rezdiff.core.pyramid import marginal

    x0 = data(law, 20000, seed=1).image.to(torch.float64)
    generator = torch.Generator().manual_seed(2)
    for t in (0, 40, 299, 300, 450, 599, 600, 800):
        k = oracle.stage_of(t)
        noise = torch.randn(x0.shape[0], 2, 8 >> k, 8 >> k, generator=generator, dtype=torch.float64)
        ts = torch.full((x0.shape[0],), t)
        if turning_points:
            x_t = marginal(x0, noise, model.schedule, ts)
        else:
            x_t = q_sample(x0, noise, model.alphas_cumprod[ts])
        error = (noise - oracle(x_t, ts)).reshape(x0.shape[0], -1)
        flat = x_t.reshape(x0.shape[0], -1)
        flat = flat - flat.mean(0)
        scale = error.std(0).max() * flat.std(0).max() / math.sqrt(x0.shape[0])
        assert (error.T @ flat / x0.shape[0]).abs().max() < 6 * scale, t
        assert error.mean(0).abs().max() < 6 / math.sqrt(x0.shape[0]), t
        mse, mse_var = oracle.min_error(t)
        assert error.square().mean() == pytest.approx(mse, abs=6 * math.sqrt(2 * mse_var / x0.shape[0]))


@pytest.mark.parametrize(
    ("turning_points", "sampler"),
    [((), "ddpm"), ((), "ddim"), (TURNS, "ddpm"), (TURNS, "ddim")],
)
@pytest.mark.slow  # 1000 dense 128-dim steps: 7-13 s measured under load, > 10 min under heavy load
def test_sampler_law_at_full_steps_is_the_data_law(law, turning_points, sampler) -> None:
    """The reference the sampling tests use converges to the data: means exact, variances within the
    discretisation error of 1000 steps on modes of variance >= 0.011 (< 10 % ancestral, < 5 % DDIM)."""
    mean, cov = law
    oracle = GaussianOracle(mean, cov, 2, 8, turning_points)
    out_mean, out_cov = sampler_law(oracle, trailing_timesteps(1000, None, turning_points), sampler)
    evals, evecs = torch.linalg.eigh(cov)
    white = evecs / evals.sqrt()
    assert ((out_mean - mean) @ white).abs().max() < 0.02
    relative = white.T @ out_cov @ white - torch.eye(mean.numel(), dtype=torch.float64)
    assert relative.diagonal().abs().max() < (0.1 if sampler == "ddpm" else 0.05)
    assert (relative - torch.diag(relative.diagonal())).abs().max() < 0.02


# ------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_ddpm_samples_follow_the_exact_law_of_its_sampler(law, sampler: str, eta: float) -> None:
    model = DDPM(**UNET)
    oracle = with_oracle(model, law)
    steps = 50
    images = model.sample(
        SAMPLES, steps=steps, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(0)
    )
    assert_follows(images, *sampler_law(oracle, ddpm_timesteps(model, steps), sampler, eta))


@pytest.mark.parametrize(
    ("sampler", "eta", "process"),
    [("ddpm", 0.0, "dvdp"), ("ddim", 0.0, "dvdp"), ("ddim", 1.0, "dvdp"), ("ddpm", 0.0, "subspace")],
)
def test_dvdp_samples_follow_the_exact_law_of_its_sampler(
    law, sampler: str, eta: float, process: str
) -> None:
    model = DVDP(**UNET, turning_points=TURNS, process=process)
    oracle = with_oracle(model, law, turning_points=TURNS, process=process)
    steps = 50
    images = model.sample(
        SAMPLES, steps=steps, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(0)
    )
    assert oracle.calls[0][1] == 2 and oracle.calls[-1][1] == 8  # starts at 8 / 2^2, ends at full size
    assert_follows(images, *sampler_law(oracle, trailing_timesteps(1000, steps, TURNS), sampler, eta))


# ------------------------------------------------------------------------------------------- loss


def loss_and_reference(
    model: DiffusionModule, oracle: GaussianOracle, batch: FieldBatch, seed: int
) -> tuple[float, list[tuple[int, int]]]:
    """The module's loss with a fresh call log, and the ``(t, dims)`` of every example it drew."""
    oracle.calls.clear()
    loss = float(model.loss(batch, torch.Generator().manual_seed(seed)))
    drawn = [(int(t), 2 * size * size) for ts, size in oracle.calls for t in ts]
    return loss, drawn


MODELS = {
    "ddpm": (lambda: DDPM(**UNET), {}),
    "dvdp": (lambda: DVDP(**UNET, turning_points=TURNS), {"turning_points": TURNS}),
    "dvdp_per_batch": (
        lambda: DVDP(**UNET, turning_points=TURNS, stage_sampling="per_batch"),
        {"turning_points": TURNS},
    ),
    "subspace": (
        lambda: DVDP(**UNET, turning_points=TURNS, process="subspace"),
        {"turning_points": TURNS, "process": "subspace"},
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_loss_of_the_exact_network_is_the_analytic_minimum(law, name: str) -> None:
    build, options = MODELS[name]
    model = build()
    oracle = with_oracle(model, law, **options)
    batch = data(law, BATCH, seed=3)
    loss, drawn = loss_and_reference(model, oracle, batch, seed=4)
    assert len(drawn) == BATCH
    # every example at its stage's resolution (the oracle raises otherwise) and weighted 1 / N
    minima = [oracle.min_error(t) for t, _ in drawn]
    expected = sum(m for m, _ in minima) / BATCH
    spread = math.sqrt(sum(2 * v for _, v in minima)) / BATCH
    assert loss == pytest.approx(expected, abs=5 * spread), (loss, expected, spread)
    if name != "dvdp_per_batch":  # one stage per call there: the t's are not a uniform sample of all T
        every = torch.tensor([oracle.min_error(t)[0] for t in range(1000)], dtype=torch.float64)
        spread_t = math.sqrt(float(every.var()) / BATCH + spread**2)
        assert loss == pytest.approx(float(every.mean()), abs=5 * spread_t), (loss, float(every.mean()))


@pytest.mark.parametrize("name", list(MODELS))
def test_loss_of_a_known_wrong_network_is_larger_by_the_known_amount(law, name: str) -> None:
    """``eps_hat + delta``: + delta^2; ``(1 + gamma) eps_hat``: + gamma^2 (1 - tr V / d) (same draws)."""
    build, options = MODELS[name]
    model = build()
    oracle = with_oracle(model, law, **options)
    batch = data(law, BATCH, seed=5)
    exact, drawn = loss_and_reference(model, oracle, batch, seed=6)
    # per example: tr V, sum V (= 1^T V 1) and tr V^2 (= sum V * V, V symmetric), and its dims
    traces = [
        (float(torch.trace(v)), float(v.sum()), float((v * v).sum()), d)
        for v, d in ((oracle.gain(t)[2], d) for t, d in drawn)
    ]
    delta, gamma = 0.05, 0.2
    oracle.offset = delta
    shifted, _ = loss_and_reference(model, oracle, batch, seed=6)
    spread = 2 * delta * math.sqrt(sum(total / d**2 for _, total, _, d in traces)) / BATCH
    assert shifted - exact == pytest.approx(delta**2, abs=5 * spread + 1e-6)
    oracle.offset, oracle.scale = 0.0, 1 + gamma
    scaled, _ = loss_and_reference(model, oracle, batch, seed=6)
    known = sum(1 - tr / d for tr, _, _, d in traces) / BATCH * gamma**2
    # Var of (1/d) [2 gamma eps_hat.(eps_hat - eps) + gamma^2 (|eps_hat|^2 - E)]: eps_hat ~ N(0, I - V)
    variance = sum(
        (4 * gamma**2 * (tr - sq) + 2 * gamma**4 * (d - 2 * tr + sq)) / d**2 for tr, _, sq, d in traces
    )
    assert scaled - exact == pytest.approx(known, abs=5 * math.sqrt(variance) / BATCH + 1e-6)
