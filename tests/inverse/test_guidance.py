"""Any-scale DPS guidance: boxes, losses, the guided DDIM loop (closed forms) and INFD box guidance."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from rezdiff.core.gaussian import predict_x0
from rezdiff.core.loops import ddim_sample
from rezdiff.core.samplers import GAUSSIAN, get_sampler
from rezdiff.core.sampling import SamplerSettings
from rezdiff.core.schedules import alphas_cumprod, linear_betas
from rezdiff.data.coords import Resolution
from rezdiff.models import INFD
from rezdiff.models.infd.clif import grid_queries
from rezdiff.models.infd.guidance import (
    Box,
    ColorLoss,
    Condition,
    DPSGuidance,
    ReferenceLoss,
    conditions_loss,
    dps_ddim_sample,
    guided_sample,
)
from tests.helpers import REPO
from tests.models.test_infd_latent import TINY

AB = alphas_cumprod(linear_betas(100, 1e-3, 0.05))
TIMESTEPS = [90, 60, 30, 0]


def _eps(x: Tensor, t: Tensor) -> Tensor:
    """The exact noise predictor for data x0 ~ N(0, I): E[eps | x_t] = sqrt(1 - ab_t) x_t."""
    return (1 - AB[t]).sqrt().view(-1, 1, 1, 1).to(x) * x


def test_box_coordinates_and_validation() -> None:
    assert Box.from_pixels(0, 0, 32, 16, (16, 32)).as_tuple() == (-1.0, -1.0, 1.0, 1.0)
    assert Box.from_pixels(8, 4, 24, 12, 32).as_tuple() == (-0.5, -0.75, 0.5, -0.25)
    for bad in ((0.5, 0.0, 0.5, 1.0), (-1.5, 0.0, 0.0, 1.0), (0.0, 0.2, 1.0, 0.1)):
        with pytest.raises(ValueError, match="box needs"):
            Box(*bad)


def test_losses_have_their_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    patch = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    low = patch.view(2, 3, 4, 2, 4, 2).mean((3, 5))  # the 2x2 block means
    assert ReferenceLoss(low).__call__(patch).abs().max() < 1e-12
    shifted = ReferenceLoss(low[0] + 0.1)(patch)  # [C, h, w] reference shared by the batch
    torch.testing.assert_close(shifted[0], torch.tensor(0.01 * 3 * 4 * 4))
    with pytest.raises(ValueError, match="at least at the reference size"):
        ReferenceLoss(patch)(low)
    target = (0.5, -0.5, 0.0)
    expected = (patch.mean((2, 3)) - torch.tensor(target)).square().sum(1)
    torch.testing.assert_close(ColorLoss(target)(patch), expected)
    with_std = ColorLoss(target, std=(0.1, 0.1, 0.1))(patch)
    stds = patch.flatten(2).std(2)
    torch.testing.assert_close(with_std, expected + (stds - 0.1).square().sum(1))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_zero_guidance_is_plain_ddim(eta: float) -> None:
    x_T = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    plain = ddim_sample(_eps, x_T, AB, TIMESTEPS, eta=eta, generator=torch.Generator().manual_seed(1))
    for loss in (lambda x0: torch.zeros(x0.shape[0]), lambda x0: 0 * x0.sum((1, 2, 3))):
        guided = dps_ddim_sample(
            _eps, x_T, AB, TIMESTEPS, loss, scale=5.0, eta=eta, generator=torch.Generator().manual_seed(1)
        )
        torch.testing.assert_close(guided, plain, rtol=0, atol=0)


def test_one_dps_step_matches_the_formula() -> None:
    """One step t -> 0: DDIM(x_t) - scale * grad ||x̂0 - y||, where x̂0 = sqrt(ab) x_t (Gaussian data)."""
    x_t = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    scale, t = 0.3, 50
    guided = dps_ddim_sample(_eps, x_t, AB, [t], lambda x0: (x0 - y).square().sum((1, 2, 3)), scale=scale)
    ab = AB[t].to(torch.float64)
    x0 = predict_x0(x_t, _eps(x_t, torch.tensor([t, t])), ab)
    torch.testing.assert_close(x0, ab.sqrt() * x_t)
    residual = x0 - y
    norm = residual.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = x0 - scale * ab.sqrt() * residual / norm  # DDIM to alpha_bar = 1 returns x̂0
    torch.testing.assert_close(guided, expected)
    raw = dps_ddim_sample(
        _eps, x_t, AB, [t], lambda x0: (x0 - y).square().sum((1, 2, 3)), scale=scale, normalize=False
    )
    torch.testing.assert_close(raw, x0 - scale * 2 * ab.sqrt() * residual)


def test_dps_is_an_eps_wrapper_and_a_callback_any_sampler_runs() -> None:
    """Issue 16, item 1: DPS has no loop of its own; through the ancestral sampler (whose last step to
    alpha_bar = 1 is x̂0, like DDIM's) one step gives the same closed form as above."""
    x_t = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    scale, t = 0.3, 50
    guide = DPSGuidance(_eps, AB, lambda x0: (x0 - y).square().sum((1, 2, 3)), scale)
    guided = get_sampler(GAUSSIAN, "ddpm").fn(
        guide.eps, x_t, AB, [t], SamplerSettings(), None, guide.callback
    )
    x0 = AB[t].to(torch.float64).sqrt() * x_t
    residual = x0 - y
    norm = residual.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(guided, x0 - scale * AB[t].to(torch.float64).sqrt() * residual / norm)


def test_guidance_pulls_toward_the_target() -> None:
    x_T = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    steps = list(range(99, -1, -9))
    target = (0.8, -0.8, 0.0)
    loss = ColorLoss(target)
    plain = ddim_sample(_eps, x_T, AB, steps, eta=1.0, generator=torch.Generator().manual_seed(1))
    guided = dps_ddim_sample(
        _eps, x_T, AB, steps, loss, scale=20.0, eta=1.0, generator=torch.Generator().manual_seed(1)
    )
    assert loss(guided).mean() < 0.2 * loss(plain).mean(), (loss(guided).mean(), loss(plain).mean())


# ---------------------------------------------------------------------------------- INFD box guidance
TINY_UNET = {**TINY, "ema": {"decay": 0.0}}  # the U-Net of tests/configs/tiny_infd_latent.yaml


def _infd(renderer: str = "clif") -> INFD:
    """A tiny untrained INFD (stage 1 of tests/configs/tiny_infd.yaml, built without a checkpoint file)."""
    args = yaml.safe_load((REPO / "tests" / "configs" / "tiny_infd.yaml").read_text())["model"]["init_args"]
    config = {
        "class_path": "rezdiff.models.infd.autoencoder.INFDAutoencoder",
        "init_args": {**args, "renderer": renderer},
    }
    torch.manual_seed(0)
    return INFD("unused.ckpt", autoencoder_config=config, **TINY_UNET).eval()


def test_conditions_render_their_own_box() -> None:
    """With the point-wise renderer a box render is exactly the matching crop of a whole render."""
    model = _infd("liif")
    seen: list[Tensor] = []
    record = lambda patch: seen.append(patch) or patch.sum((1, 2, 3))  # noqa: E731
    conditions = [
        Condition(Box.from_pixels(8, 4, 24, 20, 32), 16, record),  # 16x16 px of the 32 grid, same scale
        Condition(Box.from_pixels(4, 2, 12, 10, 16), 8, record, weight=2.0),  # same area, half the scale
        Condition(Box(-1.0, 0.0, 0.0, 1.0), (8, 8), record),  # bottom-left quarter at 8x8
    ]
    latents = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.decode(latents)
        render = lambda f, r, b: model.autoencoder.render(f, r, box=b.as_tuple(), tile=None)  # noqa: E731
        total = conditions_loss(conditions, model.decode, render)(latents)
        whole32 = model.autoencoder.render(features, 32, tile=None)
        whole16 = model.autoencoder.render(features, 16, tile=None)
    torch.testing.assert_close(seen[0], whole32[..., 4:20, 8:24], rtol=0, atol=1e-5)
    torch.testing.assert_close(seen[1], whole16[..., 2:10, 4:12], rtol=0, atol=1e-5)
    torch.testing.assert_close(seen[2], whole16[..., 8:16, 0:8], rtol=0, atol=1e-5)
    expected = seen[0].sum((1, 2, 3)) + 2 * seen[1].sum((1, 2, 3)) + seen[2].sum((1, 2, 3))
    torch.testing.assert_close(total, expected)


class SmoothField(nn.Module):
    """A stand-in stage 1 with an expressive, smooth field: φ = z, rendered by bilinear sampling of φ on
    the box's pixel grid. Isolates the guidance path (boxes, scales, DPS) from what tiny networks can draw."""

    def __init__(self, encoder_resolution: int = 16, latent_channels: int = 3) -> None:
        super().__init__()
        self.encoder_resolution = encoder_resolution
        self.latent_channels = latent_channels
        self.latent_size = encoder_resolution // 4

    def encode(self, images: Tensor) -> Tensor:
        return F.avg_pool2d(images, 4)

    def decode(self, z: Tensor) -> Tensor:
        return z

    def render(self, phi: Tensor, resolution: Resolution, *, tile=None, pad=8, box=None) -> Tensor:  # noqa: ANN001
        points, _ = grid_queries(resolution, box=box, device=phi.device)
        grid = points.to(phi.dtype).expand(phi.shape[0], -1, -1, -1)
        return F.grid_sample(phi, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _box_error(images: Tensor, target: ColorLoss) -> tuple[float, float]:
    """Colour loss of the right half (the guided box) and of the left half of ``images``."""
    half = images.shape[-1] // 2
    return float(target(images[..., half:]).mean()), float(target(images[..., :half]).mean())


def test_colour_guidance_moves_only_its_box() -> None:
    config = {"class_path": f"{__name__}.SmoothField", "init_args": {}}
    torch.manual_seed(0)
    model = INFD("unused.ckpt", autoencoder_config=config, **TINY_UNET).eval()
    target = ColorLoss((1.0, -1.0, -1.0))
    condition = Condition(Box(0.0, -1.0, 1.0, 1.0), 8, target)  # the right half, rendered at 8x8 only
    options = dict(steps=8, eta=1.0, tile=None)
    plain = model.sample(4, 32, generator=torch.Generator().manual_seed(0), **options)
    guided = model.sample(
        4, 32, generator=torch.Generator().manual_seed(0), guidance=[condition], guidance_scale=2.0, **options
    )
    (box_plain, rest_plain), (box_guided, rest_guided) = _box_error(plain, target), _box_error(guided, target)
    assert box_guided < 0.3 * box_plain, (box_guided, box_plain)
    assert abs(rest_guided - rest_plain) < 0.5 * (box_plain - box_guided), (rest_guided, rest_plain)


def test_infd_colour_guidance_moves_the_box_and_null_guidance_changes_nothing() -> None:
    """On the real (tiny, untrained) CLIF stage 1: guidance lowers the box's colour loss a little (what
    this decoder can draw bounds it), and a loss that ignores its input leaves the sample unchanged."""
    model = _infd()
    box = Box(0.0, -1.0, 1.0, 1.0)
    target = ColorLoss((1.0, -1.0, -1.0))
    options = dict(steps=4, eta=1.0, tile=None)
    plain = model.sample(4, 32, generator=torch.Generator().manual_seed(0), **options)
    guided = guided_sample(
        model,
        [Condition(box, 8, target)],
        4,
        32,
        guidance_scale=100.0,
        generator=torch.Generator().manual_seed(0),
        **options,
    )
    assert guided.shape == plain.shape == (4, 3, 32, 32)
    assert _box_error(guided, target)[0] < _box_error(plain, target)[0] - 2e-3
    null = [Condition(box, 8, lambda patch: torch.zeros(patch.shape[0]))]
    unchanged = model.sample(4, 32, generator=torch.Generator().manual_seed(0), guidance=null, **options)
    torch.testing.assert_close(unchanged, plain, rtol=0, atol=1e-6)


def test_guide_specs_parse_into_conditions(tmp_path) -> None:
    from rezdiff.data.images import save_image
    from rezdiff.models.infd.guidance import parse_condition

    red = parse_condition("box=-1,-1,0,0,res=16x8,weight=2,loss=color,mean=1,-1,-1,std=0.1,0.1,0.1")
    assert red.box == Box(-1, -1, 0, 0) and red.resolution == (16, 8) and red.weight == 2
    patch = torch.zeros(2, 3, 16, 8)
    expected = torch.tensor([1.0 + 1 + 1 + 3 * 0.01] * 2)
    torch.testing.assert_close(red.loss(patch), expected)
    save_image(torch.ones(3, 4, 6) * torch.tensor([1.0, -1.0, -1.0])[:, None, None], tmp_path / "ref.png")
    reference = parse_condition(f"box=0,0,1,1,loss=ref,image={tmp_path / 'ref.png'}")
    assert reference.resolution == (4, 6) and reference.weight == 1.0
    assert float(reference.loss(torch.ones(1, 3, 8, 12) * torch.tensor([1.0, -1, -1])[:, None, None])) < 1e-4
    for bad, message in [
        ("box=0,0,1", "needs box"),
        ("box=0,0,1,1,loss=color", "needs mean"),
        ("box=0,0,1,1,loss=color,mean=1,1", "3 values"),
        ("box=0,0,1,1,loss=clip", "'color' or 'ref'"),
        ("box=0,0,1,1,loss=ref", "image=PATH"),
        ("box=0,0,1,1,colour=1,loss=color,mean=1,1,1", "unknown field"),
        ("box=1,1,0,0,loss=color,mean=1,1,1", "x0 < x1"),
        ("1,box=0,0,1,1", "key=value"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_condition(bad)


def test_sample_command_guides_boxes_from_the_command_line(tmp_path) -> None:
    """``rezdiff sample --guide``: a colour box and a reference box, each pulled toward its target."""
    from rezdiff.cli import main
    from rezdiff.data.images import load_image, save_image

    config = {"class_path": f"{__name__}.SmoothField", "init_args": {}}
    torch.manual_seed(0)
    model = INFD("unused.ckpt", autoencoder_config=config, **TINY_UNET)
    checkpoint: dict = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "smooth.ckpt")
    checker = torch.linspace(-1, 1, 4)[None, :, None].expand(3, 4, 4).contiguous()  # a vertical ramp
    save_image(checker, tmp_path / "ramp.png")
    guides = [
        "box=0,-1,1,0,res=8,loss=color,mean=1,-1,-1",  # top-right quarter: red
        f"box=-1,0,0,1,res=8,loss=ref,image={tmp_path / 'ramp.png'}",  # bottom-left: the ramp
    ]  # fmt: skip
    common = ["sample", "--ckpt_path", str(tmp_path / "smooth.ckpt"), "--resolution", "32", "--num", "4"]
    common += ["--steps", "8", "--out"]
    plain = main([*common, str(tmp_path / "plain")])
    guided = main([*common, str(tmp_path / "guided"), "--guide", json.dumps(guides), "--guidance_scale", "2"])
    assert [p.name for p in guided] == [p.name for p in plain]

    def errors(paths: list) -> tuple[float, float]:
        images = torch.stack([load_image(p) for p in paths if p.parent.name == "32x32"])
        colour = ColorLoss((1.0, -1.0, -1.0))(images[..., :16, 16:]).mean()
        ramp = ReferenceLoss(load_image(tmp_path / "ramp.png"))(images[..., 16:, :16]).mean()
        return float(colour), float(ramp)

    (colour_plain, ramp_plain), (colour_guided, ramp_guided) = errors(plain), errors(guided)
    assert colour_guided < 0.4 * colour_plain and ramp_guided < 0.4 * ramp_plain, (
        (colour_plain, ramp_plain),
        (colour_guided, ramp_guided),
    )
