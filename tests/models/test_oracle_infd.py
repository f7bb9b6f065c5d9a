"""Exact-denoiser oracles for INFD: Gaussian latents, the closed-form ε-predictor plugged into the module in
place of its U-Net, and the module's own ``sample()`` / ``sample_latents()`` / ``loss()`` run on it.

* Sampling: INFD samples latents by DDIM (η = 1 by default, the authors'; η = 0 offered) from ``t = T - 1``
  (``spacing="trailing"``) or the authors' ``"leading"`` stride. With a linear denoiser every step is affine
  plus Gaussian noise, so the result has an exact Gaussian law (``oracle.sampler_law``); the samples must
  follow it to Monte-Carlo precision, and at the default 200 steps that law must be the data law within the
  discretisation error. ``sample()`` must then undo the latent scale exactly once before decoding
  (checked with :class:`~tests.models.oracle_infd.LinearStage1`, whose decode/render are exact
  identities/repetitions) and decode with VQ + decoder (checked on a real tiny stage 1).
* Loss: with the exact network the loss equals the analytic minimum; with a network off by a known offset
  or scale it is larger by the known amount; raw (unscaled) latents in the batch are scaled once.

Data: raw latents ``z ~ oracle.gaussian_law()`` (2 x 8 x 8), diffused as ``s z`` with ``s = 2.5``, so a
scale applied twice, never or on the wrong side is far outside the Monte-Carlo error.
"""

from __future__ import annotations

import math

import pytest
import torch

from rezdiff.data.batch import FieldBatch
from rezdiff.models import INFD
from tests.helpers import record_calls
from tests.models.oracle import gaussian_law, sampler_law
from tests.models.oracle_infd import LinearStage1, infd_oracle, nearest_codes
from tests.models.test_oracle_ddpm_dvdp import assert_follows

SCALE = 2.5
SAMPLES = 2048
BATCH = 4096
STAGE1 = dict(  # a tiny real stage 1 with 2 x 8 x 8 latents (encoder input 32, downsampling 4)
    encoder_resolution=32,
    latent_channels=2,
    base_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    norm_num_groups=8,
    num_codes=32,
    renderer_channels=8,
    renderer_blocks=1,
    renderer_groups=8,
    perceptual="none",
    disc_channels=8,
    disc_layers=1,
)
UNET = dict(unet=dict(block_out_channels=(8, 16), layers_per_block=1, attention_levels=(), norm_num_groups=8))


@pytest.fixture(scope="module")
def law() -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_law()


def build(scale: float = SCALE, **options) -> INFD:
    config = {"class_path": "rezdiff.models.INFDAutoencoder", "init_args": STAGE1}
    torch.manual_seed(0)
    return INFD("unused.ckpt", autoencoder_config=config, latent_scale=scale, **UNET, **options)


def with_oracle(model: INFD, law, stand_in: bool = True):
    """Exact ε-predictor of the scaled latents as the network (EMA off); the linear stage 1 if asked."""
    oracle = infd_oracle(*law, scale=float(model.latent_scale_value))
    model.network = oracle
    model.ema = None
    if stand_in:
        model.autoencoder = LinearStage1(32, 2, 8)
    return oracle


def trailing(steps: int) -> list[int]:
    """``round(T - i T / n) - 1``: from T - 1 (the README's default spacing)."""
    return [round(1000 - i * 1000 / steps) - 1 for i in range(steps)]


def leading(steps: int) -> list[int]:
    """The authors' ``"ddimN"`` stride: ``range(0, T, T // N)`` reversed (995, 990, ... for N = 200)."""
    return list(range(0, 1000, 1000 // steps))[::-1]


def raw_latents(law, num: int, seed: int) -> torch.Tensor:
    mean, cov = law
    white = torch.randn(num, mean.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mean + white @ torch.linalg.cholesky(cov).T).to(torch.float32).reshape(num, 2, 8, 8)


# ------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    ("eta", "spacing", "timesteps"),
    [(1.0, None, trailing), (0.0, None, trailing), (1.0, "leading", leading), (0.0, "leading", leading)],
)
def test_samples_follow_the_exact_law_of_latent_ddim_with_the_scale_undone_once(
    law, single_thread, eta: float, spacing, timesteps
) -> None:
    """``sample(n, 16)`` = the DDIM latents / s, repeated 2x2 by the stand-in renderer: the law of the
    discrete sampler for ``s z``, divided by ``s``."""
    model = build()
    oracle = with_oracle(model, law)
    steps = 20
    images = model.sample(
        SAMPLES, 16, steps=steps, eta=eta, spacing=spacing, generator=torch.Generator().manual_seed(0)
    )
    assert images.shape == (SAMPLES, 2, 16, 16)
    assert torch.equal(images, images[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert [int(t[0]) for t, _ in oracle.calls] == timesteps(steps)  # the sampler's own time grid
    mean, cov = sampler_law(oracle, timesteps(steps), "ddim", eta)
    assert_follows(images[..., ::2, ::2], mean / SCALE, cov / SCALE**2)


def test_default_sampler_at_the_default_steps_returns_the_data_law(law, single_thread) -> None:
    """η = 1, 200 trailing steps (the model's defaults) on latents scaled to variances 0.7-3.8 (s = 8, the
    regime ``latent_scale=None`` aims at): the exact sampler law is the data law within the discretisation
    error (measured: means 5e-4 sd, mode variances 3.4-6.4 % low; with s = 1, variances 0.011-0.059, they
    are 23-50 % low: these betas start at 0.0015, too coarse for such small latents), and the module's own
    samples follow that law."""
    mean, cov = law
    scale = 8.0
    model = build(scale)
    oracle = with_oracle(model, law)
    assert model.sample_steps == 200 and model.eta == 1.0
    out_mean, out_cov = sampler_law(oracle, trailing(200), "ddim", 1.0)
    evals, evecs = torch.linalg.eigh(cov)
    white = evecs / evals.sqrt()
    assert ((out_mean / scale - mean) @ white).abs().max() < 0.01
    relative = white.T @ out_cov @ white / scale**2 - torch.eye(mean.numel(), dtype=torch.float64)
    assert relative.diagonal().abs().max() < 0.08, relative.diagonal()
    assert (relative - torch.diag(relative.diagonal())).abs().max() < 1e-6
    latents = model.sample_latents(SAMPLES, generator=torch.Generator().manual_seed(1))
    assert [int(t[0]) for t, _ in oracle.calls] == trailing(200)
    assert_follows(latents, out_mean, out_cov)


def test_sample_decodes_the_unscaled_latents_with_vq_and_the_decoder(law, single_thread) -> None:
    """On a real (tiny, random) stage 1: ``sample`` renders ``decoder(codebook[nearest(latents / s)])``."""
    model = build()
    with_oracle(model, law, stand_in=False)
    stage1 = model.autoencoder
    latents = model.sample_latents(3, steps=5, generator=torch.Generator().manual_seed(2))
    images = model.sample(3, 16, steps=5, generator=torch.Generator().manual_seed(2), tile=None)
    raw = latents / SCALE
    codes = nearest_codes(raw, stage1.quantizer.codebook.weight)
    phi = stage1.decoder(stage1.quantizer.codebook.weight[codes].permute(0, 3, 1, 2))
    expected = stage1.render(phi, (16, 16), tile=None).clamp(-1, 1)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- loss


def drawn_loss(model: INFD, oracle, batch: FieldBatch, seed: int) -> tuple[float, list[int]]:
    oracle.calls.clear()
    loss = float(model.loss(batch, torch.Generator().manual_seed(seed)))
    return loss, [int(t) for ts, _ in oracle.calls for t in ts]


def test_loss_of_the_exact_network_is_the_analytic_minimum(law, single_thread) -> None:
    """Batches hold raw latents; the loss diffuses ``s z``: with the exact predictor of ``s z`` it is the
    mean of ``tr V_t / d`` over the drawn t (and over all t, within the spread of the draw)."""
    model = build()
    oracle = with_oracle(model, law)
    loss, drawn = drawn_loss(model, oracle, FieldBatch(image=raw_latents(law, BATCH, 3)), seed=4)
    assert len(drawn) == BATCH
    minima = [oracle.min_error(t) for t in drawn]
    expected = sum(m for m, _ in minima) / BATCH
    spread = math.sqrt(sum(2 * v for _, v in minima)) / BATCH
    assert loss == pytest.approx(expected, abs=5 * spread), (loss, expected, spread)
    every = torch.tensor([oracle.min_error(t)[0] for t in range(1000)], dtype=torch.float64)
    spread_t = math.sqrt(float(every.var()) / BATCH + spread**2)
    assert loss == pytest.approx(float(every.mean()), abs=5 * spread_t)


def test_loss_of_a_known_wrong_network_is_larger_by_the_known_amount(law, single_thread) -> None:
    """``eps_hat + delta``: + delta^2; ``(1 + gamma) eps_hat``: + gamma^2 (1 - tr V / d) (same draws)."""
    model = build()
    oracle = with_oracle(model, law)
    batch = FieldBatch(image=raw_latents(law, BATCH, 5))
    exact, drawn = drawn_loss(model, oracle, batch, seed=6)
    d = 128
    traces = [
        (float(torch.trace(v)), float(v.sum()), float((v * v).sum()))
        for v in (oracle.gain(t)[2] for t in drawn)
    ]
    delta, gamma = 0.05, 0.2
    oracle.offset = delta
    shifted, _ = drawn_loss(model, oracle, batch, seed=6)
    spread = 2 * delta * math.sqrt(sum(total / d**2 for _, total, _ in traces)) / BATCH
    assert shifted - exact == pytest.approx(delta**2, abs=5 * spread + 1e-6)
    oracle.offset, oracle.scale = 0.0, 1 + gamma
    scaled, _ = drawn_loss(model, oracle, batch, seed=6)
    known = sum(1 - tr / d for tr, _, _ in traces) / BATCH * gamma**2
    variance = sum(
        (4 * gamma**2 * (tr - sq) + 2 * gamma**4 * (d - 2 * tr + sq)) / d**2 for tr, _, sq in traces
    )
    assert scaled - exact == pytest.approx(known, abs=5 * math.sqrt(variance) / BATCH + 1e-6)


def test_sample_forwards_every_option_to_the_latent_sampler_and_the_render(law, single_thread) -> None:
    """``sample()`` is ``sample_latents`` (steps, sampler, η, spacing, the per-image generators, progress
    and the callback passed on) → ``decode`` → ``render`` (tile, pad, norm passed on) → clamp; left out,
    each option is the documented default."""
    model = build()
    with_oracle(model, law, stand_in=False)
    seen: list[tuple[int, int]] = []
    latent_options = dict(steps=3, sampler="ddpm", eta=0.3, spacing="leading")
    latents = model.sample_latents(2, generator=torch.Generator().manual_seed(4), **latent_options)
    expected = model.render(model.decode(latents), (16, 12), tile=8, pad=5, norm="tile").clamp(-1, 1)
    images = model.sample(
        2,
        (16, 12),
        generator=torch.Generator().manual_seed(4),
        tile=8,
        pad=5,
        norm="tile",
        callback=lambda info: seen.append((info.index, info.t)),
        **latent_options,
    )
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert seen == [(0, 666), (1, 333), (2, 0)]  # the authors' leading stride, every step
    # per-image seeds reach the latent sampler as one generator per image
    by_seed = model.sample(2, 16, seeds=[5, 6], steps=2)
    alone = model.sample(1, 16, seeds=[6], steps=2)
    torch.testing.assert_close(by_seed[1:], alone, rtol=0, atol=1e-4)  # batched float32 sums
    # the defaults: DDIM with the model's η and spacing, global-norm tiles of 256 px with 8 px of context
    # (300 px wide: two tiles, so a per-tile norm would show; under the global norm the tiled render is the
    # whole one, so the tile and pad defaults change nothing observable)
    default = model.sample(2, (16, 300), generator=torch.Generator().manual_seed(4), steps=3)
    explicit = model.sample(
        2,
        (16, 300),
        generator=torch.Generator().manual_seed(4),
        steps=3,
        sampler="ddim",
        eta=model.eta,
        spacing=model.spacing,
        tile=256,
        pad=8,
        norm="global",
    )
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    assert (model.eta, model.spacing) == (1.0, "trailing")
    latents = model.sample_latents(2, generator=torch.Generator().manual_seed(4), steps=3)
    assert torch.equal(
        latents, model.sample_latents(2, generator=torch.Generator().manual_seed(4), steps=3, eta=1.0)
    )
    assert not torch.equal(
        latents, model.sample_latents(2, generator=torch.Generator().manual_seed(4), steps=3, eta=0.0)
    )


def test_encode_scales_stage1_latents_once_and_the_scale_is_estimated_only_when_unset() -> None:
    """``encode`` is stage 1's pre-VQ latents times the scale (``decode`` divides it back out); the scale
    is estimated as ``1 / std`` of the latents only while none is set, and kept afterwards."""
    model = build()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    raw = model.autoencoder.encode(images)
    torch.testing.assert_close(model.encode(images), raw * SCALE, rtol=0, atol=0)
    latents = torch.randn(64, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    model.estimate_latent_scale(latents)  # a given scale stands
    assert float(model.latent_scale_value) == SCALE
    unset = build(scale=None)
    assert not bool(unset.latent_scale_set)
    unset.estimate_latent_scale(latents)
    assert float(unset.latent_scale_value) == pytest.approx(1 / float(latents.std())) and bool(
        unset.latent_scale_set
    )
    unset.estimate_latent_scale(latents * 10)  # fixed at the first estimate
    assert float(unset.latent_scale_value) == pytest.approx(1 / float(latents.std()))


def test_guided_sample_defaults_and_each_guidance_option_counts(law) -> None:
    """Box guidance reaches the latent sampler from ``sample``: by default with step scale 1 and normalised
    gradients, and a different scale, the raw gradient or no guidance each give another sample."""
    from rezdiff.models.infd.guidance import Box, ColorLoss, Condition

    model = build()
    with_oracle(model, law, stand_in=False)
    guidance = [Condition(Box(0.0, -1.0, 1.0, 1.0), 8, ColorLoss((1.0, -1.0, -1.0)))]

    def sample(**options) -> torch.Tensor:
        return model.sample(2, 16, steps=3, tile=None, generator=torch.Generator().manual_seed(0), **options)

    default = sample(guidance=guidance)
    explicit = sample(guidance=guidance, guidance_scale=1.0, guidance_normalize=True)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    for other in (
        {"guidance": guidance, "guidance_scale": 2.0},
        {"guidance": guidance, "guidance_normalize": False},
        {},
    ):
        assert not torch.allclose(default, sample(**other)), other


def test_loss_names_data_that_are_not_latents_and_asks_for_timesteps_on_their_device(
    law, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rezdiff.models.infd.latent as latent_module

    model = build()
    with_oracle(model, law)
    with pytest.raises(ValueError) as error:
        model.loss(FieldBatch(image=torch.zeros(2, 3, 32, 32)), torch.Generator())
    assert str(error.value) == (
        "INFD expects batches of stage-1 latents (2, 8, 8), got (3, 32, 32): configure the data module with "
        "`view: rezdiff.models.infd.CachedLatents`"
    )
    calls = record_calls(monkeypatch, latent_module, "sample_timesteps")
    model.loss(FieldBatch(image=torch.zeros(2, 2, 8, 8)), torch.Generator().manual_seed(0))
    assert [kwargs.get("device") for _, kwargs in calls] == [torch.device("cpu")]


def test_sample_latents_defaults_when_called_directly(law, capsys: pytest.CaptureFixture[str]) -> None:
    """``sample_latents`` on its own (as the DPS examples call it): EMA weights, guidance at scale 1 with
    normalised gradients, no progress bar, and every training step for the ancestral sampler."""
    from rezdiff.models.infd.guidance import Box, ColorLoss, Condition

    class Halved(torch.nn.Module):
        def __init__(self, network: torch.nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 0.5 * self.network(x, t)

    class EMAStandIn(torch.nn.Module):
        def __init__(self, network: torch.nn.Module) -> None:
            super().__init__()
            self.module = network  # what sampling_network(use_ema=True) reads

    model = build()
    oracle = with_oracle(model, law, stand_in=False)
    model.ema = EMAStandIn(Halved(oracle))  # an EMA copy whose network differs from the live one
    guidance = [Condition(Box(0.0, -1.0, 1.0, 1.0), 8, ColorLoss((1.0, -1.0, -1.0)))]

    def latents(**options) -> torch.Tensor:
        return model.sample_latents(2, steps=3, generator=torch.Generator().manual_seed(0), **options)

    default = latents(guidance=guidance)
    assert capsys.readouterr().err == ""
    explicit = latents(guidance=guidance, use_ema=True, guidance_scale=1.0, guidance_normalize=True)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    for other in ({"use_ema": False}, {"guidance_scale": 2.0}, {"guidance_normalize": False}):
        assert not torch.allclose(default, latents(guidance=guidance, **other)), other
    seen: list[int] = []
    model.sample_latents(1, sampler="ddpm", callback=lambda info: seen.append(info.t))
    assert len(seen) == model.num_train_steps and seen[0] == model.num_train_steps - 1


def test_guided_latents_are_dps_over_the_conditions_on_the_decoded_box(law) -> None:
    """Guided ``sample_latents`` written out: the DDIM loop with DPS's ε and callback, whose loss is the
    conditions' loss of the scaled latents decoded and rendered on each condition's box (whole, untiled)."""
    from rezdiff.core.gaussian import randn
    from rezdiff.core.samplers import GAUSSIAN, get_sampler
    from rezdiff.core.sampling import SamplerSettings
    from rezdiff.core.schedules import timestep_subsequence
    from rezdiff.models.infd.guidance import Box, ColorLoss, Condition, DPSGuidance, conditions_loss

    model = build()
    oracle = with_oracle(model, law, stand_in=False)
    guidance = [Condition(Box(0.25, -1.0, 1.0, 0.5), 8, ColorLoss((1.0, -1.0, -1.0)))]

    def render_box(features: torch.Tensor, resolution: tuple[int, int], box) -> torch.Tensor:
        return model.autoencoder.render(features, resolution, box=box.as_tuple(), tile=None)

    loss_fn = conditions_loss(guidance, lambda z: model.autoencoder.decode(z / SCALE), render_box)
    guide = DPSGuidance(oracle, model.alphas_cumprod, loss_fn, 3.0, False)
    generator = torch.Generator().manual_seed(0)
    x_T = randn((2, 2, 8, 8), generator)
    timesteps = timestep_subsequence(model.num_train_steps, 3, model.spacing)
    ddim = get_sampler(GAUSSIAN, "ddim").fn
    expected = ddim(
        guide.eps,
        x_T,
        model.alphas_cumprod,
        timesteps,
        SamplerSettings(eta=model.eta),
        generator,
        guide.callback,
    )
    seen: list[int] = []
    latents = model.sample_latents(
        2,
        steps=3,
        generator=torch.Generator().manual_seed(0),
        guidance=guidance,
        guidance_scale=3.0,
        guidance_normalize=False,
        callback=lambda info: seen.append(info.index),  # after guidance's own, every step
    )
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-6)
    assert seen == [0, 1, 2]
