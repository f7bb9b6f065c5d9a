"""Exact-denoiser oracles for ∞-Diff (``InftyDiff``, the diffusion autoencoder, ``InftyDiffLatent``): Gaussian
data, the closed-form predictor of the mollified noise plugged into each module as its network, and the
module's own ``sample()`` and ``loss()`` run on it (``tests/models/oracle_infty_diff.py``).

* Sampling: with a linear denoiser each step is affine plus Gaussian noise, so the samples have an exact
  Gaussian law (``mode_law``, per 2-D DCT mode). The module's samples (deblurred or not) must match it to
  Monte-Carlo precision at 1x, 2x (``x_T = T'(2 eps)``, kernels scaled by 2), 0.5x and 0.25x (the folded
  noise: point values of the same field), for DDIM (eta = 0 and 1) and the ancestral sampler; the laws
  converge to the data's at many steps. Modes whose variance is below 1e-10 are left out: float32 rounding
  dominates there (at 2x the blur leaves modes of variance down to 1e-58).
* Loss: the network sees x_t at a random quarter of the pixels, so its optimum is the dense Gaussian
  conditional mean given those pixels; the module's loss with it equals the analytic minimum, and a network
  off by a known offset or scale raises it by the known amount. The latent stage likewise (L1 loss: the
  minimum is ``sqrt(2 / pi) E sqrt(V_ii)``).
* Objectives by hand: the autoencoder's loss from what its encoder and denoiser were given, the latent
  stage's loss and statistics on tiny tensors.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from rezdiff.core.loops import ddim_sample
from rezdiff.core.schedules import timestep_subsequence
from rezdiff.data.batch import FieldBatch
from rezdiff.models import InftyDiff, InftyDiffLatent
from rezdiff.models.infty_diff.mollified import mollified_marginal
from rezdiff.models.infty_diff.mollifier import GaussianMollifier
from tests.helpers import move_live_weights, to_recorder
from tests.models.oracle import gaussian_law, whitened_statistics
from tests.models.oracle_infty_diff import (
    LatentOracle,
    ModeData,
    MollifiedOracle,
    mode_law,
    trailing,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN = 8  # training resolution: 2 channels of 8 x 8
NET = dict(
    channels=2,
    train_resolution=TRAIN,
    sparse_width=8,
    sparse_blocks=1,
    kernel_size=3,
    inner_resolution=8,
    inner_channels=8,
    inner_multipliers=(1, 2),
    inner_layers_per_block=1,
    inner_attention_resolutions=(),
    attention_head_dim=8,
    norm_num_groups=4,
    dropout=0.0,
    sample_steps=10,
    ema={"decay": 0.0},
)
STEPS = 10
SNR = 0.05  # the Wiener filter's inverse SNR (the default)
FLOOR = 1e-10  # modes with less variance are float32 rounding, not law
SAMPLES = {TRAIN: 2048, 2 * TRAIN: 1024, TRAIN // 2: 16384, TRAIN // 4: 16384}  # variances to 5-15 %
CODE_MODES = [(0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 2)]  # (channel, u, v) a code moves the data mean along
LATENT = 4


def with_oracle(model: InftyDiff, **options: Any) -> MollifiedOracle:
    oracle = MollifiedOracle(NET["channels"], TRAIN, **options)
    model.network.denoiser = oracle
    model.ema = None
    return oracle


def pixel_law(
    oracle: MollifiedOracle, n: int, sampler: str, eta: float, deblur: bool
) -> tuple[ModeData, Tensor, Tensor]:
    """``(data, K [K, C, C], cov [K, C, C])`` of the module's output at ``n`` (mean ``K mu_k``)."""
    data = oracle.modes(n)
    sens, cov = mode_law(oracle.alpha_bar, trailing(1000, STEPS), data.m, data.nvar, data.sigma, sampler, eta)
    w = data.m / (data.m**2 + SNR**2) if deblur else torch.ones_like(data.m)
    return data, w[:, None, None] * sens, w[:, None, None] ** 2 * cov


def assert_follows(samples: Tensor, data: ModeData, mean: Tensor, cov: Tensor) -> dict[str, float]:
    """The DCT coefficients of ``samples [N, C, n, n]`` are a draw of ``N(mean [K, C], cov [KC, KC])`` on
    the modes whose variance exceeds ``FLOOR``: every statistic within ~5 standard errors."""
    channels = mean.shape[1]
    blocks = cov.reshape(mean.shape[0], channels, mean.shape[0], channels).diagonal(dim1=0, dim2=2)
    keep = torch.linalg.eigvalsh(blocks.permute(2, 0, 1)).min(1).values > FLOOR
    assert int(keep.sum()) >= min(16, mean.shape[0]), int(keep.sum())
    dims = (keep.nonzero()[:, :1] * channels + torch.arange(channels)).reshape(-1)
    modes = data.to_modes(samples).reshape(samples.shape[0], -1)[:, dims]
    stats = whitened_statistics(modes, mean.reshape(-1)[dims], cov[dims][:, dims])
    n, d = stats["n"], dims.numel()
    assert stats["mean_z"] < 5.0, stats
    assert stats["var_rel_max"] < 5 * math.sqrt(2 / n), stats
    assert abs(stats["var_rel_avg"]) < 5 * math.sqrt(2 / n / d), stats
    assert stats["corr_max"] < 5.6 / math.sqrt(n), stats
    assert samples.abs().max() < 0.99  # the final clamp to [-1, 1] never acted
    return stats


# ------------------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("n", [TRAIN, 2 * TRAIN, TRAIN // 2])
def test_oracle_is_the_conditional_mean_under_the_librarys_forward_process(n: int) -> None:
    """With x_t from ``core.mollified_marginal`` (the module's forward process) the oracle's error is
    uncorrelated with x_t, has mean 0 and its per-mode covariance ``n^2 (I - s^2 r^2 (a^2 Sigma + s^2 r^2
    I)^{-1})`` (whitened by ``n_k``, on the modes above the floor)."""
    oracle = MollifiedOracle(2, TRAIN)
    data = oracle.modes(n)
    factor = n / TRAIN
    mollifier = GaussianMollifier(1.0).scaled(factor)
    draws = 4000 if n <= TRAIN else 1000
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(draws, data.pixel_mean.numel(), generator=generator, dtype=torch.float64)
    x0 = (data.pixel_mean + white @ torch.linalg.cholesky(data.pixel_cov).T).reshape(draws, 2, n, n)
    keep = data.nvar > 1e-20
    for t in (0, 500, 999):
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        ts = torch.full((draws,), t)
        x_t, target = mollified_marginal(x0, noise, oracle.alpha_bar[ts], mollifier, factor)
        index = torch.arange(n * n).expand(draws, -1)
        values = x_t.flatten(2).transpose(1, 2)
        eps = oracle(values, index, (n, n), ts, kernel_scale=factor).transpose(1, 2).reshape(x0.shape)
        scale = data.nvar.sqrt()[None, :, None]
        error = (data.to_modes(target - eps) / scale)[:, keep]  # [B, K', C]
        state = data.to_modes(x_t)[:, keep]
        state = (state - state.mean(0)) / state.std(0)
        cross = torch.einsum("bki,bkj->kij", error, state) / draws
        assert cross.abs().max() < 6 / math.sqrt(draws), t
        assert error.mean(0).abs().max() < 6 / math.sqrt(draws), t
        ab = float(oracle.alpha_bar[t])
        r2 = data.r2[keep][:, None, None]
        expected = torch.eye(2) - (1 - ab) * r2 * torch.linalg.inv(
            ab * data.sigma[keep] + (1 - ab) * r2 * torch.eye(2)
        )
        observed = torch.einsum("bki,bkj->kij", error, error) / draws
        spread = (
            expected.diagonal(dim1=1, dim2=2)[:, :, None] * expected.diagonal(dim1=1, dim2=2)[:, None, :]
        ).sqrt()
        assert ((observed - expected).abs() / spread.clamp(min=1e-3)).max() < 6 * math.sqrt(
            2 / draws
        ) + 1e-3, t


@pytest.mark.parametrize(
    ("n", "sampler"), [(TRAIN, "ddim"), (TRAIN, "ddpm"), (2 * TRAIN, "ddim"), (TRAIN // 2, "ddpm")]
)
def test_sampler_law_at_many_steps_is_the_data_law(n: int, sampler: str) -> None:
    """The reference converges to the data: at 1000 steps the final state's law is
    ``T' x_0``'s, ``N(m mu, m^2 Sigma)`` per mode, to the discretisation error (means to 1e-3 of a standard
    deviation, covariances to a few per cent)."""
    oracle = MollifiedOracle(2, TRAIN)
    data = oracle.modes(n)
    sens, cov = mode_law(oracle.alpha_bar, trailing(1000, 1000), data.m, data.nvar, data.sigma, sampler)
    m = data.m[:, None, None]
    keep = data.m > 1e-3
    target = (m**2 * data.sigma)[keep]
    white = torch.linalg.inv(torch.linalg.cholesky(target))
    mean_error = (sens - m * torch.eye(2))[keep] @ data.mu[keep][..., None]
    assert (white @ mean_error).abs().max() < 1e-3
    relative = white @ cov[keep] @ white.transpose(1, 2) - torch.eye(2)
    assert relative.abs().max() < (0.1 if sampler == "ddpm" else 0.05), relative.abs().max()


# ------------------------------------------------------------------------------------------- sampling

CASES = [
    (TRAIN, "ddim", 0.0, True),
    (TRAIN, "ddim", 1.0, True),
    (TRAIN, "ddpm", 0.0, True),
    (TRAIN, "ddim", 0.0, False),
    (2 * TRAIN, "ddim", 0.0, True),
    (2 * TRAIN, "ddim", 1.0, True),
    (2 * TRAIN, "ddpm", 0.0, True),
    (TRAIN // 2, "ddim", 0.0, True),
    (TRAIN // 2, "ddim", 1.0, True),  # fresh noise below 1x: the folded noise, as x_T
    (TRAIN // 2, "ddpm", 0.0, True),
    (TRAIN // 4, "ddim", 0.0, True),  # 2 x 2: the aliases of the constant mode weigh 8 % here
    (TRAIN // 4, "ddim", 1.0, True),
    (TRAIN // 4, "ddpm", 0.0, True),
]


@pytest.mark.parametrize(("n", "sampler", "eta", "deblur"), CASES)
def test_infty_diff_samples_follow_the_exact_law_of_its_sampler(
    n: int, sampler: str, eta: float, deblur: bool
) -> None:
    """``InftyDiff.sample`` at 1x, 2x, 0.5x and 0.25x (defaults: trailing spacing, clipping, ε from the
    clipped x0): the (deblurred) samples follow the exact law of the sampler started at T - 1 from the
    mollified noise of the grid, and every network call gets kernel_scale f."""
    model = InftyDiff(**NET)
    oracle = with_oracle(model)
    images = model.sample(
        SAMPLES[n],
        n,
        steps=STEPS,
        sampler=sampler,
        eta=eta,
        deblur=deblur,
        generator=torch.Generator().manual_seed(0),
    )
    data, sens, cov = pixel_law(oracle, n, sampler, eta, deblur)
    mean = (sens @ data.mu[..., None])[..., 0]
    assert_follows(images, data, mean, torch.block_diag(*cov))
    assert [int(t[0]) for t, *_ in oracle.calls] == trailing(1000, STEPS)
    assert all(res == (n, n) and scale == n / TRAIN for _, res, scale, _ in oracle.calls)


# ------------------------------------------------------------------------------------------- loss

BATCH = 4096
POINTS = TRAIN * TRAIN // 4  # RandomPixels' default fraction


def subset_batch(num: int, seed: int) -> FieldBatch:
    """``num`` draws of the data law at 1x, each with its own sorted uniform quarter of the pixels."""
    mean, cov = gaussian_law(2, TRAIN)
    generator = torch.Generator().manual_seed(seed)
    white = torch.randn(num, mean.numel(), generator=generator, dtype=torch.float64)
    x0 = (mean + white @ torch.linalg.cholesky(cov).T).to(torch.float32).reshape(num, 2, TRAIN, TRAIN)
    keys = torch.rand(num, TRAIN * TRAIN, generator=generator)
    index = keys.argsort(1)[:, :POINTS].sort(1).values
    return FieldBatch(image=x0, index=index)


def loss_and_errors(
    model: InftyDiff, oracle: MollifiedOracle, batch: FieldBatch, seed: int
) -> tuple[float, Tensor, Tensor]:
    """The module's loss and, per example it drew, the covariances of the error ``V`` and prediction ``U``."""
    oracle.calls.clear()
    loss = float(model.loss(batch, torch.Generator().manual_seed(seed)))
    ((t, res, scale, index),) = oracle.calls
    assert res == (TRAIN, TRAIN) and scale == 1.0 and torch.equal(index, batch.index)
    _, _, v, u = oracle.last_subset_law
    return loss, v, u


@pytest.mark.parametrize("autoencoder", [False, True])
def test_infty_diff_loss_of_the_exact_network_is_the_analytic_minimum(autoencoder: bool) -> None:
    """Also for the diffusion autoencoder, whose code the oracle ignores: its encoder must not disturb x_t."""
    model = InftyDiff(**NET, latent_dim=LATENT if autoencoder else None)
    oracle = with_oracle(model)
    if autoencoder:
        weight = torch.randn(LATENT, 2 * TRAIN * TRAIN, generator=torch.Generator().manual_seed(0))
        model.network.encoder = LinearEncoder(weight.double())
    batch = subset_batch(BATCH, seed=1)
    loss, v, _ = loss_and_errors(model, oracle, batch, seed=2)
    d = v.shape[1]
    minima = v.diagonal(dim1=1, dim2=2).sum(1) / d
    spread = float((2 * (v * v).sum((1, 2))).sum().sqrt()) / d / BATCH
    assert loss == pytest.approx(float(minima.mean()), abs=5 * spread), (loss, float(minima.mean()), spread)
    # unconditionally: t uniform over all 1000 steps, subsets uniform
    generator = torch.Generator().manual_seed(3)
    ts = torch.arange(1000).repeat_interleave(4)
    index = torch.rand(ts.numel(), TRAIN * TRAIN, generator=generator).argsort(1)[:, :POINTS].sort(1).values
    every = oracle.subset_law(ts, index)[2].diagonal(dim1=1, dim2=2).sum(1) / d
    spread_t = math.sqrt(float(every.var()) / BATCH + spread**2)
    assert loss == pytest.approx(float(every.mean()), abs=5 * spread_t), (loss, float(every.mean()))


def test_infty_diff_loss_of_a_known_wrong_network_is_larger_by_the_known_amount() -> None:
    """``eps_hat + delta``: + delta^2; ``(1 + gamma) eps_hat``: + gamma^2 tr U / d (same draws)."""
    model = InftyDiff(**NET)
    oracle = with_oracle(model)
    batch = subset_batch(BATCH, seed=4)
    exact, v, u = loss_and_errors(model, oracle, batch, seed=5)
    d = v.shape[1]
    delta, gamma = 0.02, 0.2
    oracle.offset = delta
    shifted, _, _ = loss_and_errors(model, oracle, batch, seed=5)
    spread = 2 * delta * float(v.sum((1, 2)).sum().sqrt()) / d / BATCH
    assert shifted - exact == pytest.approx(delta**2, abs=5 * spread + 1e-6)
    oracle.offset, oracle.scale = 0.0, 1 + gamma
    scaled, _, _ = loss_and_errors(model, oracle, batch, seed=5)
    known = float(u.diagonal(dim1=1, dim2=2).sum()) / d / BATCH * gamma**2
    # Var (1/d) [2 gamma eps_hat.(eps_hat - T eps) + gamma^2 |eps_hat|^2]; eps_hat ~ N(0, U), error ~ N(0, V)
    variance = float((4 * gamma**2 * (u * v).sum((1, 2)) + 2 * gamma**4 * (u * u).sum((1, 2))).sum()) / d**2
    assert scaled - exact == pytest.approx(known, abs=5 * math.sqrt(variance) / BATCH + 1e-6)


# ------------------------------------------------------------------------------------------- latent stage

LATENT_MEAN = torch.tensor([0.6, -1.0, 0.3, 1.5], dtype=torch.float64)  # the codes' law, stage-1 units
LATENT_COV = torch.tensor(
    [[2.0, 0.5, 0.0, 0.3], [0.5, 1.0, 0.2, 0.0], [0.0, 0.2, 0.5, -0.1], [0.3, 0.0, -0.1, 3.0]],
    dtype=torch.float64,
)
STAT_MEAN = torch.tensor([0.2, -0.5, 0.0, 1.0])  # the standardisation buffers: deliberately not the law's
STAT_STD = torch.tensor([1.5, 0.8, 1.0, 2.0])


class LinearEncoder(nn.Module):
    """A drop-in stage-1 encoder: ``z = E x`` of the image its points fill (every pixel in ``encode``)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = weight  # [D, C * H * W], float64
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(
        self, values: Tensor, index: Tensor, resolution: tuple[int, int], kernel_scale: float = 1.0
    ) -> Tensor:
        self.calls.append((values.detach().clone(), index.clone()))
        height, width = resolution
        canvas = torch.zeros(values.shape[0], values.shape[2], height * width, dtype=torch.float64)
        canvas.scatter_(
            2, index[:, None, :].expand(-1, values.shape[2], -1), values.transpose(1, 2).to(torch.float64)
        )
        return (canvas.reshape(values.shape[0], -1) @ self.weight.T).to(values.dtype)


def latent_model(**options: Any) -> InftyDiffLatent:
    stage1 = {"class_path": "rezdiff.models.InftyDiff", "init_args": {**NET, "latent_dim": LATENT}}
    model = InftyDiffLatent(
        "unused.ckpt", stage1=stage1, hidden_dim=16, num_layers=2, sample_steps=STEPS, **options
    )
    model.latent_mean.copy_(STAT_MEAN)
    model.latent_std.copy_(STAT_STD)
    model.latent_count.fill_(100)
    return model


def standardised_law() -> tuple[Tensor, Tensor]:
    std = STAT_STD.double()
    return (LATENT_MEAN - STAT_MEAN.double()) / std, LATENT_COV / (std[:, None] * std[None, :])


def latent_output_law(oracle: LatentOracle, eta: float) -> tuple[Tensor, Tensor]:
    """Exact law of ``sample_latents`` in stage-1 units: DDIM on standardised codes, then ``std z + mean``."""
    ones = torch.ones(1, dtype=torch.float64)
    sens, cov = mode_law(oracle.alpha_bar, trailing(1000, STEPS), ones, ones, oracle.cov[None], "ddim", eta)
    std = STAT_STD.double()
    return std * (sens[0] @ oracle.mean) + STAT_MEAN.double(), std[:, None] * cov[0] * std[None, :]


def assert_vector_law(samples: Tensor, mean: Tensor, cov: Tensor) -> None:
    stats = whitened_statistics(samples, mean, cov)
    n, d = stats["n"], mean.numel()
    assert stats["mean_z"] < 5.0, stats
    assert stats["var_rel_max"] < 5 * math.sqrt(2 / n), stats
    assert abs(stats["var_rel_avg"]) < 5 * math.sqrt(2 / n / d), stats
    assert stats["corr_max"] < 5.6 / math.sqrt(n), stats


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_latent_codes_follow_the_exact_law_of_the_latent_sampler(eta: float) -> None:
    """``sample_latents``: DDIM from ``T - 1`` on the standardised codes, unstandardised with the buffers."""
    model = latent_model(eta=eta)
    oracle = LatentOracle(*standardised_law())
    model.network, model.ema = oracle, None
    codes = model.sample_latents(8192, generator=torch.Generator().manual_seed(0))
    assert_vector_law(codes.double(), *latent_output_law(oracle, eta))
    assert [int(t[0]) for t in oracle.calls] == trailing(1000, STEPS)


@pytest.mark.parametrize(("n", "sampler"), [(TRAIN, "ddim"), (2 * TRAIN, "ddpm")])
def test_latent_model_samples_follow_the_exact_law_of_both_stages(n: int, sampler: str) -> None:
    """``InftyDiffLatent.sample``: codes from the latent DDIM, then stage 1's pixel sampler conditioned on
    them, whose data mean moves with the code (``mu_0 + B z``): the samples' law is the pixel sampler's law
    given z, mixed over the codes' exact law."""
    model = latent_model()
    latent = LatentOracle(*standardised_law())
    model.network, model.ema = latent, None
    pixels = MollifiedOracle(2, TRAIN, code_modes=CODE_MODES)
    model.stage1.network.denoiser = pixels
    images = model.sample(
        SAMPLES[n], n, steps=STEPS, sampler=sampler, generator=torch.Generator().manual_seed(1)
    )
    assert len(latent.calls) == STEPS and len(pixels.calls) == STEPS
    data, sens, cov = pixel_law(pixels, n, sampler, 0.0, True)
    code_mean, code_cov = latent_output_law(latent, model.eta)
    jac = torch.einsum("kij,dkj->kid", sens, data.basis).reshape(-1, LATENT)  # d output / d z, [K C, D]
    mean = (sens @ data.mu[..., None])[..., 0].reshape(-1) + jac @ code_mean
    assert_follows(images, data, mean.reshape(-1, 2), torch.block_diag(*cov) + jac @ code_cov @ jac.T)


def latent_batch(num: int, seed: int, symmetric: bool) -> tuple[FieldBatch, LinearEncoder]:
    """Images of the 1x data law and an encoder whose codes have the law ``N(LATENT_MEAN, LATENT_COV)``
    (exactly, when ``symmetric``: ``E`` ignores mirroring, so the random flips leave the law alone)."""
    mean, cov = gaussian_law(2, TRAIN)
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(LATENT, mean.numel(), generator=generator, dtype=torch.float64)
    if symmetric:
        raw = raw + raw.reshape(LATENT, 2, TRAIN, TRAIN).flip(-1).reshape(LATENT, -1)
    # E = A raw with A chosen so that E Sigma E^T = LATENT_COV; the offset image shifts E mu to LATENT_MEAN
    base = raw @ cov @ raw.T
    weight = torch.linalg.cholesky(LATENT_COV) @ torch.linalg.inv(torch.linalg.cholesky(base)) @ raw
    white = torch.randn(num, mean.numel(), generator=generator, dtype=torch.float64)
    x0 = mean + white @ torch.linalg.cholesky(cov).T
    # the least-norm image with E shift = LATENT_MEAN - E mu (it lies in E's rows: mirror-symmetric if E is)
    shift = weight.T @ torch.linalg.solve(weight @ weight.T, LATENT_MEAN - weight @ mean)
    images = (x0 + shift).to(torch.float32).reshape(num, 2, TRAIN, TRAIN)
    return FieldBatch(image=images), LinearEncoder(weight)


def test_latent_loss_of_the_exact_network_is_the_analytic_minimum_and_an_offset_adds_the_known_amount() -> (
    None
):
    """L1 to eps: with the exact predictor each error is ``N(0, V_ii)``, so the loss is ``sqrt(2 / pi)
    mean sqrt(V_ii)``; ``eps_hat + delta`` adds ``E|e - delta| - E|e|`` (closed form, same draws)."""
    model = latent_model()
    batch, encoder = latent_batch(8192, seed=2, symmetric=True)
    model.stage1.network.encoder = encoder
    mean, cov = standardised_law()
    shift = encoder.weight @ batch.image.double().reshape(len(batch.image), -1).mean(0) - LATENT_MEAN
    assert shift.abs().max() < 0.15  # the codes do have the intended law (mean to MC error)
    oracle = LatentOracle(mean, cov)
    model.network, model.ema = oracle, None
    loss = float(model.loss(batch, torch.Generator().manual_seed(3)))
    (t,) = oracle.calls
    sd = oracle.law(t)[1].diagonal(dim1=1, dim2=2).sqrt()  # [B, D]
    expected = float((math.sqrt(2 / math.pi) * sd).mean())
    # Var of the per-example mean of |e_i|: Cov(|X|, |Y|) = 2 s_x s_y / pi (sqrt(1 - r^2) + r asin r - 1)
    v = oracle.law(t)[1]
    rho = (v / (sd[:, :, None] * sd[:, None, :])).clamp(-1, 1)
    pair = 2 * sd[:, :, None] * sd[:, None, :] / math.pi * ((1 - rho**2).sqrt() + rho * rho.asin() - 1)
    spread = float(pair.sum((1, 2)).sum().sqrt()) / LATENT / len(t)
    assert loss == pytest.approx(expected, abs=5 * spread), (loss, expected, spread)
    every = math.sqrt(2 / math.pi) * oracle.law(torch.arange(1000))[1].diagonal(dim1=1, dim2=2).sqrt().mean(1)
    spread_t = math.sqrt(float(every.var()) / len(t) + spread**2)
    assert loss == pytest.approx(float(every.mean()), abs=5 * spread_t), (loss, float(every.mean()))
    delta = 0.3
    oracle.offset = delta
    shifted = float(model.loss(batch, torch.Generator().manual_seed(3)))
    normal = torch.distributions.Normal(0.0, 1.0)
    ratio = delta / sd
    wrong = sd * math.sqrt(2 / math.pi) * torch.exp(-(ratio**2) / 2) + delta * (1 - 2 * normal.cdf(-ratio))
    known = float((wrong - math.sqrt(2 / math.pi) * sd).mean())
    assert shifted - loss == pytest.approx(known, abs=5 * delta / math.sqrt(len(t))), (shifted - loss, known)


# ------------------------------------------------------------------------------------------- by hand


class SpyDenoiser(nn.Module):
    """A denoiser with a known output, ``0.5 values + mean(z)``, that keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Tensor, Tensor, tuple[int, int], Tensor, Tensor | None]] = []

    def forward(
        self,
        values: Tensor,
        index: Tensor,
        resolution: tuple[int, int],
        t: Tensor,
        z: Tensor | None = None,
        kernel_scale: float = 1.0,
    ) -> Tensor:
        self.calls.append((values.clone(), index.clone(), resolution, t.clone(), z))
        return 0.5 * values + (0.0 if z is None else z.mean(1)[:, None, None])


def test_autoencoder_loss_by_hand() -> None:
    """The diffusion autoencoder's loss on 3 tiny images: the encoder reads the *clean* image at its own
    sorted uniform subset of as many pixels (not the batch's), its code goes to the denoiser, which reads
    x_t at the batch's pixels; the loss is the mean of (prediction - T eps)^2 there, where ``T eps = (x_t -
    sqrt(ab) T x_0) / sqrt(1 - ab)`` with the dense blur and the cosine schedule written out."""
    model = InftyDiff(**NET, latent_dim=LATENT)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(LATENT, 2 * TRAIN * TRAIN, generator=generator, dtype=torch.float64) / 10
    encoder, denoiser = LinearEncoder(weight), SpyDenoiser()
    model.network.encoder, model.network.denoiser = encoder, denoiser
    batch = subset_batch(3, seed=6)
    loss = float(model.loss(batch, torch.Generator().manual_seed(7)))
    ((seen, own),) = encoder.calls
    assert own.shape == batch.index.shape and not torch.equal(own, batch.index)
    assert bool((own[:, 1:] > own[:, :-1]).all()) and own.min() >= 0 and own.max() < TRAIN * TRAIN
    flat = batch.image.flatten(2)
    torch.testing.assert_close(seen, torch.stack([flat[b][:, own[b]].T for b in range(3)]), rtol=0, atol=0)
    ((values, index, resolution, t, z),) = denoiser.calls
    assert z is not None
    assert torch.equal(index, batch.index) and resolution == (TRAIN, TRAIN)
    canvas = torch.zeros(3, 2, TRAIN * TRAIN, dtype=torch.float64)  # what the encoder read, zeros elsewhere
    for b in range(3):
        canvas[b][:, own[b]] = flat[b][:, own[b]].double()
    torch.testing.assert_close(z.double(), canvas.reshape(3, -1) @ weight.T, rtol=1e-5, atol=1e-6)
    oracle = MollifiedOracle(2, TRAIN)
    data = oracle.modes(TRAIN)
    blur = data.dct.T @ torch.diag(data.m) @ data.dct
    t_x0 = (batch.image.double().reshape(3, 2, -1) @ blur.T).transpose(1, 2)  # [B, HW, C]
    ab = oracle.alpha_bar[t][:, None, None]
    t_x0_s = torch.stack([t_x0[b, batch.index[b]] for b in range(3)])
    target = (values.double() - ab.sqrt() * t_x0_s) / (1 - ab).sqrt()
    prediction = 0.5 * values.double() + z.double().mean(1)[:, None, None]
    assert loss == pytest.approx(float((prediction - target).square().mean()), rel=1e-4)
    # the target is the mollified noise: per-pixel variance ~1 / (4 pi), not white noise's 1
    assert float(target.square().mean()) < 0.3


def test_latent_loss_by_hand() -> None:
    """The latent stage's loss on single images: ``|net(z_t, t) - eps|`` averaged, ``z_t = sqrt(ab) z_0 +
    sqrt(1 - ab) eps`` with ``ab = 0.992^(t+1)`` and ``z_0`` the standardised code of the image or of its
    mirror image, each with probability 1/2 (``eps`` recovered from ``z_t`` for both candidates; exactly
    one gives the loss)."""
    model = latent_model()
    batch, encoder = latent_batch(1, seed=8, symmetric=False)
    model.stage1.network.encoder = encoder
    seen: list[tuple[Tensor, Tensor]] = []

    class Spy(nn.Module):
        def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
            seen.append((z_t.clone(), t.clone()))
            return 0.3 * z_t

    model.network, model.ema = Spy(), None
    image = batch.image.double().reshape(1, -1)
    mirror = batch.image.flip(-1).double().reshape(1, -1)
    codes = [(x @ encoder.weight.T - STAT_MEAN.double()) / STAT_STD.double() for x in (image, mirror)]
    assert (codes[0] - codes[1]).abs().max() > 0.1
    flips = []
    for seed in range(40):
        loss = float(model.loss(batch, torch.Generator().manual_seed(seed)))
        z_t, t = seen[-1]
        ab = 0.992 ** (float(t[0]) + 1)
        candidates = [
            float((0.3 * z_t.double() - (z_t.double() - math.sqrt(ab) * z0) / math.sqrt(1 - ab)).abs().mean())
            for z0 in codes
        ]
        match = [abs(loss - c) < 1e-5 * max(1.0, abs(c)) for c in candidates]
        assert sum(match) == 1, (loss, candidates)
        flips.append(match[1])
    assert 5 <= sum(flips) <= 35  # mirrored about half the time


def test_latent_loss_flip_is_drawn_from_the_loss_generator() -> None:
    """Whether an image is mirrored comes from the generator handed to ``loss`` (as t and the noise do), so
    one seed gives one loss whatever the global RNG holds."""
    model = latent_model()
    batch, encoder = latent_batch(4, seed=8, symmetric=False)
    model.stage1.network.encoder = encoder
    for seed in range(6):
        losses = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            losses.append(float(model.loss(batch, torch.Generator().manual_seed(seed))))
        assert losses[0] == losses[1], (seed, losses)


def test_latent_loss_flips_where_the_draw_is_below_one_half_on_the_generators_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An image is mirrored iff its draw is < 0.5 (a draw of exactly 0.5 keeps it), and the draw is made on
    the generator's device (a CUDA generator cannot draw on the CPU)."""
    model = latent_model()
    batch, encoder = latent_batch(1, seed=8, symmetric=False)
    model.stage1.network.encoder = encoder
    devices: list[object] = []

    def loss_with_draw(value: float) -> float:
        def fixed_rand(*size: int, generator: torch.Generator | None = None, device: object = None) -> Tensor:
            devices.append(device)
            return torch.full(size, value)  # the generator is not advanced: t and the noise stay the same

        with monkeypatch.context() as patch:
            patch.setattr(torch, "rand", fixed_rand)
            return float(model.loss(batch, torch.Generator().manual_seed(0)))

    kept, at_half, mirrored = loss_with_draw(0.75), loss_with_draw(0.5), loss_with_draw(0.25)
    assert kept == at_half != mirrored
    assert devices == [torch.device("cpu")] * 3


def test_latent_loss_moves_the_flip_draw_and_asks_for_timesteps_on_the_datas_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU the flip draw (made on the generator's device) must be moved to the images' device, and the
    timesteps drawn for the codes' device; on this CPU-only machine either slip passes every numerical
    test, so the calls are recorded."""
    import rezdiff.models.infty_diff.latent as latent_module

    model = latent_model()
    batch, encoder = latent_batch(2, seed=8, symmetric=False)
    model.stage1.network.encoder = encoder
    moved: list[tuple[object, ...]] = []
    asked: list[object] = []

    Draw = to_recorder(moved)

    real_rand, real_timesteps = torch.rand, latent_module.sample_timesteps

    def recording_timesteps(*args: Any, **kwargs: Any) -> Tensor:
        asked.append(kwargs.get("device"))
        return real_timesteps(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", lambda *a, **k: real_rand(*a, **k).as_subclass(Draw))
    monkeypatch.setattr(latent_module, "sample_timesteps", recording_timesteps)
    model.loss(batch, torch.Generator().manual_seed(0))
    assert moved[0] == (torch.device("cpu"),) and asked == [torch.device("cpu")]


def test_latent_statistics_by_hand() -> None:
    """Per-dimension mean and unbiased std over the codes of the images and their mirror images, at most
    ``stats_max_images`` images; ``flip=False`` uses the images alone."""
    batch, encoder = latent_batch(10, seed=9, symmetric=False)
    for flip, limit in ((True, None), (True, 7), (False, None)):
        model = latent_model(flip=flip, stats_max_images=limit, stats_batch_size=4)
        model.stage1.network.encoder = encoder
        model.latent_count.zero_()
        model.compute_latent_statistics([batch.image[:6], FieldBatch(image=batch.image[6:])])
        images = batch.image[: limit or 10].double().reshape(-1, 2 * TRAIN * TRAIN)
        codes = [images] + (
            [batch.image[: limit or 10].flip(-1).double().reshape(images.shape)] if flip else []
        )
        z = torch.cat(codes) @ encoder.weight.T
        torch.testing.assert_close(model.latent_mean.double(), z.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.latent_std.double(), z.std(0), rtol=1e-5, atol=1e-5)
        assert int(model.latent_count) == len(z)


def test_latent_sample_is_its_codes_then_stage1_with_every_option_passed_on() -> None:
    """``InftyDiffLatent.sample`` draws codes with the latent options (steps, spacing, EMA, progress) and the
    image's own generator, then runs stage 1's sampler with the pixel options and the same generators:
    exactly what the two calls written out give."""
    torch.manual_seed(0)
    model = latent_model(ema={"decay": 0.5, "warmup": False})
    move_live_weights(model.network)  # EMA and raw latent weights differ
    seen: list[int] = []
    ddim = dict(steps=2, sampler="ddim", eta=0.5, spacing="leading", eps_after_clip="network", deblur=False)
    ddpm = dict(steps=2, sampler="ddpm", spacing="leading")
    for use_ema, pixel in ((True, ddim), (False, ddpm)):
        seen.clear()
        generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
        z = model.sample_latents(2, steps=3, generator=generators, use_ema=use_ema, spacing="leading")
        expected = model.stage1.sample(2, 2 * TRAIN, generator=generators, z=z, **pixel)
        images = model.sample(
            2,
            2 * TRAIN,
            seeds=[5, 6],
            use_ema=use_ema,
            latent_steps=3,
            latent_spacing="leading",
            callback=lambda info: seen.append(info.t),
            **pixel,
        )
        torch.testing.assert_close(images, expected, rtol=0, atol=0)
        assert seen == [500, 0]  # the pixel sampler's leading stride, every step seen
    # the latent stride is the model's spacing unless latent_spacing is given, and differs from leading
    codes = model.sample_latents(2, steps=3, generator=torch.Generator().manual_seed(1))
    trailing = model.sample_latents(
        2, steps=3, generator=torch.Generator().manual_seed(1), spacing="trailing"
    )
    leading = model.sample_latents(2, steps=3, generator=torch.Generator().manual_seed(1), spacing="leading")
    assert model.spacing == "trailing" and torch.equal(codes, trailing) and not torch.equal(codes, leading)


def test_latent_codes_default_to_the_models_settings_and_each_override_counts() -> None:
    """``sample_latents`` without options is DDIM with the model's η, spacing and ``sample_steps`` on the
    EMA weights, unstandardised; each option given changes the codes (so none is dropped on the way)."""
    torch.manual_seed(0)
    model = latent_model(ema={"decay": 0.5, "warmup": False}, eta=0.5)
    move_live_weights(model.network)

    model.sample_steps, model.spacing = 7, "leading"  # neither the class default nor the other option

    def codes(**options: Any) -> Tensor:
        return model.sample_latents(2, generator=torch.Generator().manual_seed(3), **options)

    default = codes()
    # written out: latent DDIM (the core loop, proven on its own) on the EMA network, then unstandardised
    generator = torch.Generator().manual_seed(3)
    z_T = torch.randn(2, LATENT, generator=generator)
    timesteps = timestep_subsequence(model.num_train_steps, 7, "leading")
    raw = ddim_sample(model.ema.module, z_T, model.alphas_cumprod, timesteps, eta=0.5, generator=generator)
    torch.testing.assert_close(default, raw * STAT_STD + STAT_MEAN, rtol=0, atol=1e-6)
    for override in ({"steps": 8}, {"eta": 0.0}, {"spacing": "trailing"}, {"use_ema": False}):
        assert not torch.allclose(default, codes(**override)), override
    # in stage 1's units: the network's output unstandardised with the statistics
    z = torch.randn(3, LATENT)
    torch.testing.assert_close(model.unstandardize(z), z * STAT_STD + STAT_MEAN)
    torch.testing.assert_close(model.standardize(model.unstandardize(z)), z)


def test_latent_progress_bars_are_off_by_default_and_shown_for_both_stages_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``progress=True`` shows the latent stage's bar (2 steps here) and stage 1's (3 steps); without it,
    ``sample`` and ``sample_latents`` print nothing."""
    model = latent_model()
    model.sample_latents(1, steps=2)
    model.sample(1, steps=3, latent_steps=2)
    assert capsys.readouterr().err == ""
    model.sample(1, steps=3, latent_steps=2, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "3/3" in err
    model.sample_latents(1, steps=2, progress=True)
    assert "2/2" in capsys.readouterr().err
