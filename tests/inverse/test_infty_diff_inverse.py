"""∞-Diff inverse problems: reconstruction-guided inpainting against closed-form denoisers, and the
model-level inpainting and super-resolution on a tiny network."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rezdiff.core import alphas_cumprod, cosine_betas
from rezdiff.core.schedules import timestep_subsequence
from rezdiff.models import InftyDiff
from rezdiff.models.infty_diff.inverse import (
    INPAINT_SPACING,
    blurred_known,
    guided_inpaint_sample,
    inpaint,
    super_resolve,
)
from rezdiff.models.infty_diff.mollified import gaussian_data_eps, mollified_initial_state, mollified_sample
from rezdiff.models.infty_diff.mollifier import GaussianMollifier
from tests.helpers import TINY_INFTY_DIFF, gen

AB = alphas_cumprod(cosine_betas(1000))
S = 16
STEPS = timestep_subsequence(1000, 30, "linspace")  # the paper configs' spacing (the authors')


def smooth_images(batch: int, size: int = S) -> Tensor:
    axis = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    image = torch.stack([torch.sin(2 * xx + yy), 0.8 * torch.cos(3 * yy) * xx])
    return image.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


def left_half(size: int = S) -> Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.float64)
    mask[..., : size // 2] = 1
    return mask


def test_blurred_known_reads_only_known_pixels() -> None:
    mollifier = GaussianMollifier(1.0)
    images, mask = smooth_images(2), left_half()
    garbage = torch.where(mask.bool(), images, 7.0)
    torch.testing.assert_close(
        blurred_known(garbage, mask, mollifier), blurred_known(images, mask, mollifier)
    )
    full = torch.ones_like(mask)
    torch.testing.assert_close(blurred_known(images, full, mollifier), mollifier(images))
    # deep inside the known region (blur window fully known) it is T x
    inside = (blurred_known(images, mask, mollifier) - mollifier(images))[..., 2:-2, : S // 2 - 5]
    assert inside.abs().max() < 1e-3


def test_one_point_data_set_is_returned() -> None:
    """With the exact denoiser of {x0} the estimate of T x0 is constant: guidance (even towards another
    image) has nothing to move, and the result is T x0."""
    mollifier = GaussianMollifier(1.0)
    x0 = smooth_images(3)
    other = -x0.flip(-1)
    out = guided_inpaint_sample(
        lambda x, t: gaussian_data_eps(x, AB[t], mollifier, x0),
        mollified_initial_state(x0.shape, mollifier, 1.0, gen(0), dtype=torch.float64),
        AB,
        STEPS,
        mollifier,
        blurred_known(other, left_half(), mollifier),
        left_half(),
        guidance_scale=1.0,
    )
    torch.testing.assert_close(out, mollifier(x0), atol=1e-8, rtol=0)


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_guidance_fits_the_known_region_of_a_gaussian_prior(factor: float) -> None:
    """Data x0 ~ N(0, 0.5^2 I) (exact linear denoiser): without guidance the known region is a random
    draw; with w = 1 it matches T x_known to 1e-3, and stays in range; w = 0 is DDIM draw for draw."""
    size = int(S * factor)
    mollifier = GaussianMollifier(1.0).scaled(factor)
    images, mask = smooth_images(4, size), left_half(size)
    mean = torch.zeros_like(images[:1])

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        return gaussian_data_eps(x, AB[t], mollifier, mean, 0.5, factor)

    target = blurred_known(images, mask, mollifier)
    inner = torch.zeros_like(mask)
    inner[..., 2:-2, 2 : size // 2 - int(3 * factor)] = 1
    errors = {}
    for scale in (0.0, 1.0):
        x_T = mollified_initial_state(images.shape, mollifier, factor, gen(1), dtype=torch.float64)
        out = guided_inpaint_sample(
            eps_fn, x_T, AB, STEPS, mollifier, target, mask, scale, factor, eta=0.5, generator=gen(2)
        )
        errors[scale] = float(((out - mollifier(images)) * inner).abs().sum() / inner.expand_as(out).sum())
        if scale == 0:
            x_T = mollified_initial_state(images.shape, mollifier, factor, gen(1), dtype=torch.float64)
            plain = mollified_sample(eps_fn, x_T, AB, STEPS, mollifier, factor, eta=0.5, generator=gen(2))
            torch.testing.assert_close(out, plain)
        assert out.abs().max() < 1.5
    assert errors[0.0] > 0.3 and errors[1.0] < 1e-3, errors


def test_few_guided_steps_need_a_last_step_at_t_0() -> None:
    """Reconstruction guidance completes its correction only at a low-noise step. With 4 steps and the exact
    denoiser, inpainting's default grid (linspace: 999, 666, 333, 0) fits the known region to 5e-5; four
    "trailing" steps (999 ... 249) stop at t = 249 and leave 0.19 (unguided: 0.52). Catches a default that
    drops the step at t = 0."""
    mollifier = GaussianMollifier(1.0)
    images, mask = smooth_images(4), left_half()
    mean = torch.zeros_like(images[:1])
    target = blurred_known(images, mask, mollifier)
    inner = torch.zeros_like(mask)
    inner[..., 2:-2, 2 : S // 2 - 3] = 1
    errors = {}
    for spacing in (INPAINT_SPACING, "trailing"):
        x_T = mollified_initial_state(images.shape, mollifier, 1.0, gen(1), dtype=torch.float64)
        out = guided_inpaint_sample(
            lambda x, t: gaussian_data_eps(x, AB[t], mollifier, mean, 0.5),
            x_T,
            AB,
            timestep_subsequence(1000, 4, spacing),
            mollifier,
            target,
            mask,
        )
        errors[spacing] = float(((out - mollifier(images)) * inner).abs().sum() / inner.expand_as(out).sum())
    assert errors[INPAINT_SPACING] < 1e-3 and errors["trailing"] > 0.1, errors


def test_no_guidance_at_pure_noise() -> None:
    """At t = T - 1 the exact correction is nil and a network's error in mu_0 is amplified by
    1 / sqrt(ab_{T-1}), so no gradient is taken there (a briefly trained model's guided known-pixel error
    fell from 1.10 to 0.22 against 0.97 unguided, README); every later step is guided."""
    mollifier = GaussianMollifier(1.0)
    images, mask = smooth_images(2), left_half()
    seen: dict[int, bool] = {}

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        seen[int(t[0])] = x.requires_grad
        return gaussian_data_eps(x, AB[t], mollifier, torch.zeros_like(images[:1]), 0.5)

    steps = timestep_subsequence(1000, 4, "linspace")
    x_T = mollified_initial_state(images.shape, mollifier, 1.0, gen(1), dtype=torch.float64)
    target = blurred_known(images, mask, mollifier)
    guided_inpaint_sample(eps_fn, x_T, AB, steps, mollifier, target, mask)
    assert seen == {999: False, 666: True, 333: True, 0: True}


def test_mask_errors() -> None:
    model = InftyDiff(**TINY)
    images = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="mask must be"):
        inpaint(model, images, torch.ones(8, 8))
    with pytest.raises(ValueError, match="0 \\(unknown\\) and 1"):
        inpaint(model, images, torch.full((16, 16), 0.5))
    with pytest.raises(ValueError, match="latent_dim"):
        super_resolve(model, images, 32)
    with pytest.raises(TypeError, match="InftyDiff"):
        inpaint(object(), images, torch.ones(16, 16))  # type: ignore[arg-type]


def test_inpaint_and_super_resolve_with_a_tiny_model() -> None:
    torch.manual_seed(0)
    images = smooth_images(2).float().repeat(1, 2, 1, 1)[:, :3]
    mask = left_half().float()
    model = InftyDiff(**TINY)
    out = inpaint(model, images, mask, steps=3, generator=gen(0))
    # inpainting's own grid, not the model's sampling default ("trailing" would stop at t = 33)
    assert model.spacing == "trailing"
    torch.testing.assert_close(
        out, inpaint(model, images, mask, steps=3, generator=gen(0), spacing="linspace")
    )
    assert not torch.allclose(
        out, inpaint(model, images, mask, steps=3, generator=gen(0), spacing="trailing")
    )
    assert out.shape == images.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    pasted = inpaint(model, images, mask.bool(), steps=3, generator=gen(0), paste_known=True)
    torch.testing.assert_close(pasted[..., : S // 2], images[..., : S // 2])
    torch.testing.assert_close(pasted[..., S // 2 :], out[..., S // 2 :])

    autoencoder = InftyDiff(**TINY, latent_dim=8)
    low = torch.nn.functional.avg_pool2d(images, 2)  # 8x8
    high = super_resolve(autoencoder, low, 32, steps=3, generator=gen(1))
    assert high.shape == (2, 3, 32, 32) and high.abs().max() <= 1
    # the result is the sample conditioned on the code of the low-resolution input, element by element
    again = torch.cat(
        [super_resolve(autoencoder, low[i : i + 1], 32, steps=3, generator=gen(1)) for i in range(2)]
    )
    # float32: the network's batch-size-dependent rounding (~1e-7) is divided by sqrt(ab) ~ 1e-3 at the first
    # step (t = T - 1) and carried through the steps; measured up to 2.1e-4. Mixing up the batch's codes would
    # change the result by O(0.1) (the -low check below), so 1e-3 still tells the two apart.
    torch.testing.assert_close(high[:1], again[:1], rtol=0, atol=1e-3)
    direct = autoencoder.sample(2, 32, z=autoencoder.encode(low), steps=3, generator=gen(1))
    torch.testing.assert_close(high, direct)
    assert not torch.allclose(high[0], super_resolve(autoencoder, -low[:1], 32, steps=3, generator=gen(1))[0])
    # inpainting an autoencoder encodes the known pixels only: the unknown ones cannot matter
    garbage = torch.where(mask.bool(), images, torch.rand_like(images))
    torch.testing.assert_close(
        inpaint(autoencoder, images, mask, steps=2, generator=gen(2)),
        inpaint(autoencoder, garbage, mask, steps=2, generator=gen(2)),
    )


TINY = TINY_INFTY_DIFF
pytestmark = pytest.mark.usefixtures("single_thread")


def test_inpaint_and_super_resolve_take_per_image_seeds() -> None:
    """``seeds=``: image k of a batch is the image inpainted (or super-resolved) alone with seed k, up to the
    network's batch-size rounding (see the test above); seeds and generator together are refused."""
    torch.manual_seed(0)
    images = smooth_images(2).float().repeat(1, 2, 1, 1)[:, :3]
    mask = left_half().float()
    model = InftyDiff(**TINY)
    both = inpaint(model, images, mask, steps=3, seeds=[3, 4])
    second = inpaint(model, images[1:], mask, steps=3, seeds=[4])
    torch.testing.assert_close(both[1:], second, rtol=0, atol=1e-3)
    assert (both[1:] - inpaint(model, images[1:], mask, steps=3, seeds=[5])).abs().max() > 1e-2
    with pytest.raises(ValueError, match="either generator= or seeds="):
        inpaint(model, images, mask, steps=3, seeds=[3, 4], generator=gen(0))
    autoencoder = InftyDiff(**TINY, latent_dim=8)
    low = torch.nn.functional.avg_pool2d(images, 2)
    high = super_resolve(autoencoder, low, 32, steps=3, seeds=[3, 4])
    torch.testing.assert_close(
        high[1:], super_resolve(autoencoder, low[1:], 32, steps=3, seeds=[4]), rtol=0, atol=1e-3
    )
