"""INFD's objective terms against hand-computed values on tiny tensors (issue 15, item 3).

Stage 1 (``INFDAutoencoder``), from the paper's Appendix H.2 and the authors' ``models/infd.py``:
``L = w_l1 L1 + w_p P + w_vq VQ + 0.75 lambda (-mean D(fake))`` with ``lambda = clamp(||grad_W (w_l1 L1 +
w_p P)|| / (||grad_W G|| + 1e-4), 0, 1e4)``, detached, ``W`` the renderer's last conv weight; the critic's
hinge loss ``(mean relu(1 - D(real)) + mean relu(1 + D(fake))) / 2``; both GAN terms on from iteration
``disc_start``. The training step is run by a real Lightning trainer whose two optimisers only *record*
the gradients they are handed (lr 0), and those gradients are compared with autograd of the loss written
out by hand. VQ: β on the commitment term (rezdiff's declared deviation from taming's legacy quantiser),
checked by gradients. Stage 2 (``INFD``): trains on pre-VQ latents, scaled once, by the first fit's scale.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from rezdiff.data import FieldBatch, FieldDataModule, Synthetic
from rezdiff.models import INFD, INFDAutoencoder
from rezdiff.models.infd import MultiScalePatches
from rezdiff.models.infd.autoencoder import adaptive_weight, hinge_d_loss
from rezdiff.models.infd.networks import VectorQuantizer
from rezdiff.models.infd.perceptual import LPIPS, LaplacianL1, VGG16Features
from tests.helpers import quiet_trainer
from tests.models.oracle_infd import (
    clif_by_hand,
    clif_query_by_hand,
    hinge_by_hand,
    nearest_codes,
    vq_loss_by_hand,
)

TINY = dict(
    encoder_resolution=16,
    base_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    norm_num_groups=8,
    num_codes=16,
    renderer_channels=8,
    renderer_blocks=1,
    renderer_groups=4,
    perceptual="lap_l1",
    disc_channels=8,
    disc_layers=1,
)
# distinct weights, so that a swapped or dropped weight changes the total
WEIGHTS = dict(l1_weight=1.3, perceptual_weight=0.7, vq_weight=2.1, gan_weight=0.75)


def patches(num: int = 3, seed: int = 0) -> FieldBatch:
    view = MultiScalePatches(patch=8, min_scale=16, max_scale=40, encoder_resolution=16)
    dataset = Synthetic(num_images=num, resolution=40)
    return FieldBatch.collate([view(dataset, i, torch.Generator().manual_seed(seed + i)) for i in range(num)])


def model_with_spread_codes(**options) -> INFDAutoencoder:
    """A tiny stage 1 whose codebook is spread over the latents' range, so several codes are in use."""
    torch.manual_seed(0)
    model = INFDAutoencoder(**{**TINY, **WEIGHTS, **options})
    with torch.no_grad():
        model.quantizer.codebook.weight.normal_(0, 0.3)
    return model


def forward_by_hand(model: INFDAutoencoder, batch: FieldBatch) -> dict[str, torch.Tensor]:
    """Every term of stage 1's objective from its definition (brute-force VQ, the model's networks)."""
    z = model.encoder(batch.cond)
    codebook = model.quantizer.codebook.weight
    vq = vq_loss_by_hand(z, codebook, model.quantizer.beta)
    e = codebook[nearest_codes(z, codebook)].permute(0, 3, 1, 2)
    phi = model.decoder(z + (e - z).detach())
    size, height, width = batch.image.shape[0], *batch.image.shape[-2:]
    queries = [
        clif_query_by_hand(phi[i : i + 1], batch.coords[i].view(height, width, 2), batch.cell[i, 0])
        for i in range(size)
    ]
    prediction = clif_by_hand(model.renderer, torch.cat(queries))
    l1 = (prediction - batch.image).abs().mean()
    perceptual = LaplacianL1()(prediction, batch.image).mean()
    rec = model.l1_weight * l1 + model.perceptual_weight * perceptual
    return {"prediction": prediction, "l1": l1, "perceptual": perceptual, "vq": vq, "rec": rec}


# ------------------------------------------------------------------------------------------ stage 1 terms


def test_reconstruction_loss_is_weighted_l1_perceptual_and_vq_by_hand(single_thread) -> None:
    model = model_with_spread_codes()
    batch = patches()
    terms = forward_by_hand(model, batch)
    assert len(nearest_codes(model.encoder(batch.cond), model.quantizer.codebook.weight).unique()) > 3
    expected = terms["rec"] + model.vq_weight * terms["vq"]
    torch.testing.assert_close(model.loss(batch), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(model.perceptual, LaplacianL1)  # perceptual="lap_l1" names the weight-free network
    none = INFDAutoencoder(**{**TINY, **WEIGHTS, "perceptual": "none"})
    none.load_state_dict(model.state_dict())
    assert none.perceptual is None
    torch.testing.assert_close(
        none.loss(batch),
        model.l1_weight * terms["l1"] + model.vq_weight * terms["vq"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_renderer_input_and_output_are_clif_by_hand(single_thread) -> None:
    """The render of ``phi`` on a grid (2x, 4x, a box) is CLIF, written out, on the brute-force query."""
    model = model_with_spread_codes().eval()
    phi = torch.randn(2, 8, 4, 4)
    for resolution, box in ((8, None), (16, None), (13, (-0.93, -0.71, 0.64, 0.88))):
        out = model.render(phi, resolution, box=box, tile=None)
        if box is None:
            centres = (2 * torch.arange(resolution) + 1) / resolution - 1
            cell = torch.tensor([2 / resolution, 2 / resolution])
        else:
            x0, y0, x1, y1 = box
            unit = (2 * torch.arange(resolution, dtype=torch.float64) + 1) / resolution / 2
            xs, ys = x0 + unit * (x1 - x0), y0 + unit * (y1 - y0)
            cell = torch.tensor([(x1 - x0) / resolution, (y1 - y0) / resolution])
        if box is None:
            xs = ys = centres.double()
        points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).float()
        query = clif_query_by_hand(phi, points, cell)
        torch.testing.assert_close(out, clif_by_hand(model.renderer, query), rtol=1e-5, atol=1e-5)


def test_vq_loss_puts_beta_on_the_commitment_term_by_gradients() -> None:
    """``||sg[z] - e||^2 + beta ||z - sg[e]||^2``: dL/dz = 2 beta (z - e) / n (encoder, commitment),
    dL/de_k = 2 sum_{i -> k} (e_k - z_i) / n (codebook); z_q = z + sg(e - z): values e, gradient identity."""
    torch.manual_seed(1)
    quantizer = VectorQuantizer(num_codes=5, dim=2, beta=0.25)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(
            torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [3.0, 3.0]])
        )
    z = torch.tensor(
        [[[[0.2, 0.9], [-0.8, 0.4]], [[0.1, -0.2], [-1.2, 1.1]]]], requires_grad=True
    )  # [1, 2, 2, 2]
    z_q, loss, codes = quantizer(z)
    # vectors (0.2, 0.1) -> 0, (0.9, -0.2) -> 1, (-0.8, -1.2) -> 3, (0.4, 1.1) -> 2
    assert codes.flatten().tolist() == [0, 1, 3, 2]
    e = quantizer.codebook.weight[codes].permute(0, 3, 1, 2).detach()
    n = z.numel()
    assert float(loss) == pytest.approx(1.25 * float(((z - e) ** 2).sum()) / n, rel=1e-6)
    torch.testing.assert_close(z_q, e)
    weights = torch.randn_like(z)
    grad_z, grad_codes = torch.autograd.grad(loss + (weights * z_q).sum(), (z, quantizer.codebook.weight))
    torch.testing.assert_close(grad_z, 2 * 0.25 * (z - e).detach() / n + weights)
    expected = torch.zeros(5, 2)
    for vector, code in zip(z.detach().permute(0, 2, 3, 1).reshape(-1, 2), codes.flatten(), strict=True):
        expected[code] += 2 * (quantizer.codebook.weight[code].detach() - vector) / n
    torch.testing.assert_close(grad_codes, expected)  # code 4 is unused: zero, not touched by z_q


def test_hinge_critic_loss_by_hand() -> None:
    real = torch.tensor([[2.0, 0.5], [-0.5, 1.0]])
    fake = torch.tensor([[-2.0, -0.3], [0.4, 1.5]])
    # relu(1 - real): 0, 0.5, 1.5, 0 -> mean 0.5; relu(1 + fake): 0, 0.7, 1.4, 2.5 -> mean 1.15
    assert float(hinge_d_loss(real, fake)) == pytest.approx((0.5 + 1.15) / 2)
    assert float(hinge_by_hand(real, fake)) == pytest.approx((0.5 + 1.15) / 2)


def test_adaptive_weight_by_hand_and_its_default_cap() -> None:
    """``||d rec / d layer|| / (||d gan / d layer|| + 1e-4)``, capped at 1e4 by default (LDM's), detached."""
    layer = torch.ones(4, requires_grad=True)
    weight = adaptive_weight((2.0 * layer).sum(), layer.sum(), layer)  # gradient norms 4 and 2
    assert float(weight) == pytest.approx(4.0 / (2.0 + 1e-4), rel=1e-6) and not weight.requires_grad
    small = adaptive_weight(layer.sum(), (2.0 * layer).sum(), layer)  # below 1: no floor but 0
    assert float(small) == pytest.approx(2.0 / (4.0 + 1e-4), rel=1e-6)
    capped = adaptive_weight((1e3 * layer).sum(), (1e-6 * layer).sum(), layer)  # ratio ~2e7
    assert float(capped) == 1e4


def test_optimisers_own_exactly_the_generator_and_the_critic() -> None:
    """opt_g: encoder (+ quant_conv), codebook, decoder (+ post_quant_conv), renderer; opt_d: the critic;
    no overlap, nothing trainable left out, the frozen perceptual network in neither; the paper's Adam."""
    model = INFDAutoencoder(**TINY)
    opt_g, opt_d = model.configure_optimizers()
    ids = [{id(p) for group in opt.param_groups for p in group["params"]} for opt in (opt_g, opt_d)]
    parts = {
        name: {id(p) for p in getattr(model, name).parameters()}
        for name in ("encoder", "quantizer", "decoder", "renderer", "discriminator")
    }
    assert ids[0] == parts["encoder"] | parts["quantizer"] | parts["decoder"] | parts["renderer"]
    assert ids[1] == parts["discriminator"]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in model.parameters()}
    assert id(model.quantizer.codebook.weight) in ids[0] and id(model.encoder.quant_conv.weight) in ids[0]
    assert not {id(p) for p in model.perceptual.parameters()} & (ids[0] | ids[1])
    for opt in (opt_g, opt_d):
        assert isinstance(opt, torch.optim.Adam) and type(opt) is torch.optim.Adam
        assert opt.defaults["lr"] == 3.6e-5 and opt.defaults["betas"] == (0.5, 0.9)
        assert opt.defaults["weight_decay"] == 0


def test_lpips_vgg_is_the_perceptual_network_frozen_and_outside_the_checkpoint(
    tmp_path: Path, single_thread
) -> None:
    """``perceptual="lpips_vgg"``: LPIPS on the named VGG16 file (sum over 5 taps of the lin-weighted
    spatial mean of squared unit-normalised feature differences), frozen, out of the state_dict."""
    torch.manual_seed(2)
    vgg = VGG16Features()
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    model = INFDAutoencoder(**{**TINY, "perceptual": "lpips_vgg", "vgg_weights": str(tmp_path / "vgg16.pth")})
    network = model.perceptual
    assert isinstance(network, LPIPS)
    torch.testing.assert_close(network.vgg.state_dict(), vgg.state_dict())
    assert not any(k.startswith(("_perceptual", "perceptual")) for k in model.state_dict())
    assert not any(p.requires_grad for p in network.parameters())
    model.train()
    assert not network.training
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def taps(images: torch.Tensor) -> list[torch.Tensor]:
        return vgg(((images + 1) / 2 - mean) / std)

    expected = torch.zeros(2)
    for fx, fy, lin in zip(taps(x), taps(y), network.lins, strict=True):
        fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        expected += ((fx - fy) ** 2 * lin.view(1, -1, 1, 1)).sum(1).mean((1, 2))
    # LPIPS's published input normalisation (shift, scale) is rounded to 3 decimals: ~1e-3 relative
    torch.testing.assert_close(network(x, y), expected, rtol=3e-3, atol=1e-6)


def test_reconstruct_renders_the_decoded_nearest_codes_of_the_encoding(single_thread) -> None:
    """Stage 1's render path (its ``sample`` raises): ``reconstruct(x, R)`` = CLIF by hand on
    ``decoder(codebook[nearest(encoder(x))])`` queried at the R x R pixel centres."""
    model = model_with_spread_codes().eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = model.reconstruct(images, 32)
        z = model.encoder(images)
        codebook = model.quantizer.codebook.weight
        phi = model.decoder(codebook[nearest_codes(z, codebook)].permute(0, 3, 1, 2))
        centres = (2 * torch.arange(32, dtype=torch.float64) + 1) / 32 - 1
        points = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).float()
        expected = clif_by_hand(
            model.renderer, clif_query_by_hand(phi, points, torch.tensor([2 / 32, 2 / 32]))
        )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ training step


class Recording(torch.optim.SGD):
    """An optimiser that does not move (lr 0) and records the gradients it is stepped with."""

    def __init__(self, params) -> None:  # noqa: ANN001
        super().__init__(list(params), lr=0.0)
        self.grads: list[list[torch.Tensor]] = []

    def step(self, closure=None):  # noqa: ANN001, ANN201
        loss = closure() if closure is not None else None
        params = self.param_groups[0]["params"]
        self.grads.append(
            [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        )
        return loss


class Batches(pl.Callback):
    def __init__(self) -> None:
        self.batches: list[FieldBatch] = []
        self.logs: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.batches.append(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.logs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


@pytest.mark.parametrize("max_weight", [1e4, 1e-3])
def test_training_step_gradients_are_the_hand_written_objective(
    tmp_path: Path, single_thread, max_weight
) -> None:
    """Three iterations with ``disc_start=2``: the generator's gradient is that of ``rec + w_vq VQ`` at
    iterations 0 and 1 and of ``rec + w_vq VQ + 0.75 lambda G`` at iteration 2 (lambda from the gradients at
    the renderer's last conv weight, clamped to ``max_weight``, detached); the critic's is zero, then that
    of the hinge loss on the real patch and the detached render."""
    model = model_with_spread_codes(disc_start=2, adaptive_weight_max=max_weight)
    real = model.configure_optimizers()
    optimisers = [Recording(opt.param_groups[0]["params"]) for opt in real]
    model.configure_optimizers = lambda: optimisers  # type: ignore[method-assign]
    view = MultiScalePatches(patch=8, min_scale=16, max_scale=40, encoder_resolution=16)
    data = FieldDataModule(Synthetic(num_images=9, resolution=40), view, batch_size=3, val_fraction=0.0)
    record = Batches()
    logged: list[tuple[str, dict]] = []
    real_log = model.log
    model.log = lambda name, value, **options: (
        logged.append((name, options)) or real_log(name, value, **options)
    )
    trainer = quiet_trainer(tmp_path, max_steps=6, callbacks=[record])
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 6 and len(record.batches) == 3
    # every value is logged with the batch's size (3) and only the total is on the progress bar
    assert logged and all(options.get("batch_size") == 3 for _, options in logged)
    assert {name for name, options in logged if options.get("prog_bar")} == {"train/loss"}
    model.train()
    gen_params = optimisers[0].param_groups[0]["params"]
    disc_params = optimisers[1].param_groups[0]["params"]
    last = model.renderer.conv_out.weight
    for iteration, batch in enumerate(record.batches):
        terms = forward_by_hand(model, batch)
        total = terms["rec"] + model.vq_weight * terms["vq"]
        on = iteration >= 2
        if on:
            g = -model.discriminator(terms["prediction"]).mean()
            rec_grad = torch.autograd.grad(terms["rec"], last, retain_graph=True)[0]
            g_grad = torch.autograd.grad(g, last, retain_graph=True)[0]
            weight = (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, max_weight).detach()
            assert (float(weight) == pytest.approx(max_weight)) == (max_weight < 1)  # clamped in the 2nd case
            total = total + 0.75 * weight * g
            assert record.logs[iteration]["train/d_weight"] == pytest.approx(float(weight), rel=1e-4)
            assert record.logs[iteration]["train/g"] == pytest.approx(float(g), rel=1e-4)
        else:
            assert "train/g" not in record.logs[iteration]
        assert record.logs[iteration]["train/loss"] == pytest.approx(float(total), rel=1e-5)
        # the terms are logged under their names (dashboards and sweeps read them); perplexity by hand
        codes = nearest_codes(model.encoder(batch.cond), model.quantizer.codebook.weight)
        p = torch.bincount(codes.flatten(), minlength=model.quantizer.num_codes).float() / codes.numel()
        used = p[p > 0]
        for name in ("l1", "perceptual", "vq"):
            assert record.logs[iteration][f"train/{name}"] == pytest.approx(float(terms[name]), rel=1e-5)
        perplexity = float(torch.exp(-(used * used.log()).sum()))
        assert record.logs[iteration]["train/perplexity"] == pytest.approx(perplexity, rel=1e-5)
        expected = torch.autograd.grad(total, gen_params, allow_unused=True)
        # float32 sums in another order: on some CPUs elements near zero differ by up to 5e-7 of the
        # largest gradient (measured), so the absolute tolerance follows that scale; a missing or
        # misweighted term moves the gradient by far more (the GAN term at weight 1e-3: ~1e-3 of it)
        scale = max(float(w.abs().max()) for w in expected if w is not None)
        for got, want in zip(optimisers[0].grads[iteration], expected, strict=True):
            want = torch.zeros_like(got) if want is None else want
            torch.testing.assert_close(got, want, rtol=1e-4, atol=max(1e-7, 5e-6 * scale))
        fake = terms["prediction"].detach()
        d_loss = hinge_by_hand(model.discriminator(batch.image), model.discriminator(fake))
        expected_d = torch.autograd.grad(d_loss, disc_params)
        for got, want in zip(optimisers[1].grads[iteration], expected_d, strict=True):
            torch.testing.assert_close(got, want if on else torch.zeros_like(want), rtol=1e-4, atol=1e-7)
        assert record.logs[iteration]["train/d"] == pytest.approx(float(d_loss) if on else 0.0, rel=1e-5)


# ------------------------------------------------------------------------------------------ stage 2 inputs


def test_stage2_latents_are_the_pre_vq_encoder_outputs_and_scaled_once(single_thread) -> None:
    """The cache holds ``encoder(dataset.render(i, E))``, not its quantisation; the scale estimated once is
    ``1 / std`` of them; ``encode`` applies it once; ``loss`` scales a batch of raw latents once."""
    stage1 = dict(TINY, perceptual="none")
    config = {"class_path": "rezdiff.models.INFDAutoencoder", "init_args": stage1}
    torch.manual_seed(0)
    model = INFD(
        "unused.ckpt",
        autoencoder_config=config,
        latent_scale=None,
        unet=dict(block_out_channels=(8, 16), layers_per_block=1, attention_levels=(), norm_num_groups=8),
    )
    with torch.no_grad():
        model.autoencoder.quantizer.codebook.weight.normal_(0, 0.3)
    dataset = Synthetic(num_images=3, resolution=40)
    latents = model.encode_dataset(dataset)
    images = torch.stack([dataset.render(i, 16) for i in range(3)])
    with torch.no_grad():
        raw = model.autoencoder.encoder(images)
        quantised = model.autoencoder.quantizer(raw)[0]
    torch.testing.assert_close(latents, raw, rtol=0, atol=1e-6)
    assert (quantised - raw).abs().max() > 1e-2  # the two differ: the cache is not post-VQ
    model.estimate_latent_scale(latents)
    scale = 1 / float(latents.std())
    assert float(model.latent_scale_value) == pytest.approx(scale, rel=1e-6)
    model.estimate_latent_scale(latents * 3)  # a later estimate keeps the first fit's scale
    assert float(model.latent_scale_value) == pytest.approx(scale, rel=1e-6)
    torch.testing.assert_close(model.encode(images), raw * scale, rtol=1e-5, atol=1e-6)
    # loss: the network sees sqrt(ab) * s z + sqrt(1 - ab) eps (record its input)
    seen: list[torch.Tensor] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen.append(torch.cat((x.flatten(1), t[:, None].float()), 1))
            return torch.zeros_like(x)

    model.network = Probe()
    loss = model.loss(FieldBatch(image=latents), torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (3,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    betas = torch.linspace(0.0015, 0.0195, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)
    x_t = (ab.sqrt() * scale * latents + (1 - ab).sqrt() * noise).float()
    torch.testing.assert_close(seen[0][:, :-1], x_t.flatten(1), rtol=1e-5, atol=1e-6)
    assert seen[0][:, -1].tolist() == t.float().tolist()
    torch.testing.assert_close(loss, noise.square().mean())  # zero prediction: the mean of eps^2 drawn


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_a_non_finite_loss_stops_training_naming_the_loss_and_the_batch(
    tmp_path: Path, single_thread, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """A NaN in either objective stops the fit before that optimiser steps, with one line that names the
    loss, the iteration, the global step and the batch (here batch 0 of the first iteration)."""
    from rezdiff.models.base import NonFiniteLossError
    from rezdiff.models.infd import autoencoder as module

    model = model_with_spread_codes()
    nan = torch.tensor(float("nan"))
    if which == "generator":
        monkeypatch.setattr(model, "_reconstruction_loss", lambda terms: nan * terms["l1"])
    else:
        monkeypatch.setattr(module, "hinge_d_loss", lambda real, fake: nan + 0 * real.sum())
    view = MultiScalePatches(patch=8, min_scale=16, max_scale=40, encoder_resolution=16)
    data = FieldDataModule(Synthetic(num_images=3, resolution=40), view, batch_size=3, val_fraction=0.0)
    with pytest.raises(NonFiniteLossError) as error:
        quiet_trainer(tmp_path, max_steps=2).fit(model, datamodule=data)
    step = 0 if which == "generator" else 1
    assert str(error.value) == (
        f"non-finite {which} loss (nan) at iteration 0 (global step {step}), epoch 0, batch 0 on some rank; "
        "training stopped before the optimiser step. Lower the learning rate or check the data."
    )


def test_stage1_names_a_batch_it_cannot_render_and_renders_any_batch_size(single_thread) -> None:
    """Each field MultiScalePatches provides is required (the error names it and the view), coordinates
    must cover the patch, and the loss of a batch of two is the hand-written one (the batch size is axis 0,
    not the channel count)."""
    import dataclasses

    model = model_with_spread_codes()
    batch = patches(2)
    for field in ("cond", "coords", "cell"):
        with pytest.raises(ValueError) as error:
            model.loss(dataclasses.replace(batch, **{field: None}))
        assert str(error.value) == (
            f"INFDAutoencoder needs batch fields [{field!r}], which this data view does not provide; "
            "configure the data module with `view: MultiScalePatches` (e.g. --data.init_args.view.class_path "
            "rezdiff.data.MultiScalePatches)"
        )
    with pytest.raises(ValueError) as error:
        model.loss(dataclasses.replace(batch, coords=batch.coords[:, :60]))
    assert str(error.value) == "batch has 60 coords for a 8x8 patch"
    terms = forward_by_hand(model, batch)
    moved: list[
        tuple
    ] = []  # the perceptual network follows the prediction's device (recorded: CPU only here)
    real_to = model.perceptual.to
    model.perceptual.to = lambda *args, **kwargs: moved.append(args) or real_to(*args, **kwargs)
    torch.testing.assert_close(
        model.loss(batch), terms["rec"] + model.vq_weight * terms["vq"], rtol=1e-5, atol=1e-6
    )
    assert moved == [(torch.device("cpu"),)]
