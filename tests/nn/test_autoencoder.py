"""LDM VQ-f4 parts: shapes, and the vector quantiser against brute force."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rezdiff.models.infd.networks import FeatureDecoder, LatentEncoder, VectorQuantizer, perplexity

SMALL = dict(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, norm_num_groups=8)


def test_encoder_and_decoder_shapes() -> None:
    encoder, decoder = LatentEncoder(3, 3, **SMALL), FeatureDecoder(3, **SMALL)
    z = encoder(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 3, 8, 8)
    phi = decoder(z)
    assert phi.shape == (2, 16, 32, 32) and decoder.out_channels == 16
    # default (the authors' give_pre_end): phi is the raw last activation, not bounded below by SiLU's -0.2785
    assert not hasattr(decoder.decoder.conv_norm_out, "weight") and phi.min() < -0.2785
    normed = FeatureDecoder(3, **SMALL, out_norm=True)
    assert (normed(z) >= -0.2785).all()  # SiLU(GroupNorm(h)): SiLU's minimum is -0.2785


def test_quantiser_picks_the_nearest_code_and_passes_gradients_straight_through() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=50, dim=3, beta=0.25)
    with torch.no_grad():
        vq.codebook.weight.normal_()
    z = torch.randn(2, 3, 5, 4, requires_grad=True)
    z_q, loss, codes = vq(z)
    vectors = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    brute = torch.cdist(vectors, vq.codebook.weight.detach()).argmin(1)
    assert torch.equal(codes.flatten(), brute)
    torch.testing.assert_close(
        z_q.detach().permute(0, 2, 3, 1).reshape(-1, 3), vq.codebook.weight[brute].detach()
    )
    weights = torch.randn_like(z)
    (z_q * weights).sum().backward(retain_graph=True)
    torch.testing.assert_close(z.grad, weights)  # identity gradient
    e = vq.codebook.weight[brute].detach().view(2, 5, 4, 3).permute(0, 3, 1, 2)
    expected = F.mse_loss(e, z.detach()) * 1.25  # codebook + 0.25 commitment, equal values
    torch.testing.assert_close(loss, expected)
    z.grad = None
    vq.codebook.weight.grad = None
    loss.backward()
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - e) / z.numel())  # commitment pulls z
    assert vq.codebook.weight.grad.abs().sum() > 0  # codebook term moves the codes


@pytest.mark.parametrize("legacy", [False, True])
def test_quantiser_equals_diffusers_non_legacy_vector_quantizer(legacy: bool) -> None:
    """diffusers' VectorQuantizer(legacy=False) is an independent reference: same codes, z_q, loss and
    gradients; its default legacy=True (taming's beta on the codebook term) has the same loss value but other
    gradients, which is how the test tells the two placements apart."""
    from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVQ

    torch.manual_seed(1)
    ours = VectorQuantizer(num_codes=64, dim=3, beta=0.25)
    theirs = DiffusersVQ(64, 3, beta=0.25, legacy=legacy)
    with torch.no_grad():
        ours.codebook.weight.normal_()
        theirs.embedding.weight.copy_(ours.codebook.weight)
    z = torch.randn(2, 3, 6, 5)
    results = []
    for module in (ours, theirs):
        z_in = z.clone().requires_grad_(True)
        z_q, loss, extra = module(z_in)
        codes = extra if module is ours else extra[2]
        weights = torch.linspace(-1, 1, z.numel()).view_as(z)
        (loss + (z_q * weights).sum()).backward()
        codebook = ours.codebook.weight if module is ours else theirs.embedding.weight
        results.append((codes.flatten(), z_q.detach(), loss.detach(), z_in.grad, codebook.grad))
    (codes, z_q, loss, grad_z, grad_e), reference = results
    assert torch.equal(codes, reference[0].flatten())
    torch.testing.assert_close(z_q, reference[1])
    torch.testing.assert_close(loss, reference[2])
    same_gradients = torch.allclose(grad_z, reference[3]) and torch.allclose(grad_e, reference[4])
    assert same_gradients is not legacy


def test_code_usage_perplexity() -> None:
    assert abs(float(perplexity(torch.arange(8).repeat(5), 100)) - 8.0) < 1e-4
    assert abs(float(perplexity(torch.zeros(10, dtype=torch.long), 100)) - 1.0) < 1e-6
    vq = VectorQuantizer(num_codes=4, dim=1)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[-3.0], [-1.0], [1.0], [3.0]]))
    codes = vq(torch.tensor([-2.9, -1.2, 0.8, 3.3]).view(1, 1, 2, 2))[2]
    assert codes.flatten().tolist() == [0, 1, 2, 3] and abs(float(perplexity(codes, 4)) - 4) < 1e-5
