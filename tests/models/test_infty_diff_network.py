"""∞-Diff's network and encoder: shapes, symmetries, backends, training, the kernel-scale path, paper size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D

from rezdiff.models.infty_diff.network import InftyDiffEncoder, InftyDiffNet, _LatentScaledTimeProjection

TINY = dict(
    channels=3,
    sparse_width=16,
    sparse_blocks=2,
    kernel_size=5,
    inner_resolution=8,
    inner_channels=16,
    inner_multipliers=(1, 2),
    inner_layers_per_block=1,
    inner_attention_resolutions=(4,),
    dropout=0.0,
    attention_head_dim=16,
    norm_num_groups=8,
)
RES = 16


def subset(batch: int, num: int, resolution: int = RES, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(resolution**2, generator=generator)[:num] for _ in range(batch)])


def tiny_net(**overrides) -> InftyDiffNet:
    torch.manual_seed(0)
    return InftyDiffNet(**{**TINY, **overrides}).eval()


@pytest.mark.parametrize("num", [RES**2 // 16, RES**2 // 4, RES**2])
def test_output_shape_at_several_densities(num: int) -> None:
    net = tiny_net(latent_dim=6)
    index = subset(2, num)
    out = net(torch.randn(2, num, 3), index, RES, torch.tensor([1, 900]), torch.randn(2, 6))
    assert out.shape == (2, num, 3) and torch.isfinite(out).all()
    assert (
        net(torch.randn(2, num, 3), index, (RES, RES), torch.tensor(5.0), torch.randn(2, 6)).shape
        == out.shape
    )


@pytest.mark.parametrize("num", [RES**2 // 4, RES**2])
def test_permutation_equivariance(num: int) -> None:
    net = tiny_net(latent_dim=6)
    index, x = subset(2, num, seed=1), torch.randn(2, num, 3)
    t, z = torch.tensor([10, 700]), torch.randn(2, 6)
    perm = torch.randperm(num)
    with torch.no_grad():
        out = net(x, index, RES, t, z)
        permuted = net(x[:, perm], index[:, perm], RES, t, z)
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-4, atol=1e-5)


def test_backends_give_the_same_network() -> None:
    torch.manual_seed(0)
    nets = {b: InftyDiffNet(**TINY, backend=b).eval() for b in ("gather", "dense")}
    nets["dense"].load_state_dict(nets["gather"].state_dict())
    index, x, t = subset(2, 96, seed=2), torch.randn(2, 96, 3), torch.tensor([3, 300])
    with torch.no_grad():
        torch.testing.assert_close(
            nets["gather"](x, index, RES, t), nets["dense"](x, index, RES, t), rtol=1e-4, atol=1e-5
        )


def test_gradients_reach_every_parameter() -> None:
    net = tiny_net(latent_dim=6).train()
    index = subset(2, 64, seed=3)
    out = net(torch.randn(2, 64, 3), index, RES, torch.tensor([50, 400]), torch.randn(2, 6))
    out.square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_trains_to_fit_a_fixed_target() -> None:
    """A few Adam steps on tiny data: the loss must fall clearly (a fixed smooth denoising-like target)."""
    net = tiny_net().train()
    generator = torch.Generator().manual_seed(4)
    index = subset(4, 64, seed=4)
    rows, cols = (index // RES).float(), (index % RES).float()
    target = torch.stack((torch.sin(cols / 3), torch.cos(rows / 4), torch.sin((rows + cols) / 5)), dim=-1)
    x = target + 0.3 * torch.randn(target.shape, generator=generator)
    t = torch.tensor([100, 200, 300, 400])
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        loss = (net(x, index, RES, t) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::4]


def test_kernel_scale_path_at_twice_the_resolution() -> None:
    net = tiny_net(latent_dim=6)
    assert net.kernel_size_for(2.0) == 9 and net.kernel_size_for(1.0) == 5
    index = torch.arange((2 * RES) ** 2).expand(2, -1)  # the dense sampling path at 32²
    x, t, z = torch.randn(2, index.shape[1], 3), torch.tensor([999, 10]), torch.randn(2, 6)
    with torch.no_grad():
        out = net(x, index, 2 * RES, t, z, kernel_scale=2.0)
        gather = net.__class__(**TINY, latent_dim=6, backend="gather").eval()
        gather.load_state_dict(net.state_dict())
        sparse = subset(2, 200, 2 * RES, seed=5)
        torch.testing.assert_close(
            gather(x[:, :200], sparse, 2 * RES, t, z, kernel_scale=2.0),
            net(x[:, :200], sparse, 2 * RES, t, z, kernel_scale=2.0),
            rtol=1e-4,
            atol=1e-5,
        )
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_encoder_shape_and_point_order_invariance() -> None:
    torch.manual_seed(0)
    encoder = InftyDiffEncoder(**TINY, latent_dim=12).eval()
    index, x = subset(3, 64, seed=6), torch.randn(3, 64, 3)
    perm = torch.randperm(64)
    with torch.no_grad():
        z = encoder(x, index, RES)
        torch.testing.assert_close(encoder(x[:, perm], index[:, perm], RES), z, rtol=1e-4, atol=1e-5)
        assert encoder(x, index, RES, kernel_scale=0.5).shape == (3, 12)
    assert z.shape == (3, 12)
    encoder.train()
    encoder(x, index, RES).square().sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_paper_config_parameter_count() -> None:
    with torch.device("meta"):
        net = InftyDiffNet(latent_dim=1024)
        encoder = InftyDiffEncoder()
    count = sum(p.numel() for p in net.parameters())
    encoder_count = sum(p.numel() for p in encoder.parameters())
    print(f"paper 256² config: network {count / 1e6:.1f}M, encoder {encoder_count / 1e6:.1f}M parameters")
    assert 3e8 < count < 6e8 and 1e8 < encoder_count < 2.5e8
    assert net.unet.down_blocks[-2].attentions and net.unet.down_blocks[-1].attentions  # attention at 16², 8²
    assert not hasattr(net.unet.down_blocks[2], "attentions")
    drops = [block.resnets[0].dropout.p for block in net.unet.down_blocks]
    assert drops == [0.0, 0.0, 0.0, 0.1, 0.1]  # dropout only at <= 16²


def test_clear_errors() -> None:
    net = tiny_net(latent_dim=6)
    index, x, t = subset(2, 32), torch.randn(2, 32, 3), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="pass z"):
        net(x, index, RES, t)
    with pytest.raises(ValueError, match="latent_dim=None"):
        tiny_net()(x, index, RES, t, torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"z must be \[B, 6\]"):
        net(x, index, RES, t, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x must be \[B, N, 3\]"):
        net(torch.randn(2, 32, 4), index, RES, t, torch.randn(2, 6))
    with pytest.raises(ValueError, match="index must be"):
        net(x, index[:, :10], RES, t, torch.randn(2, 6))
    with pytest.raises(ValueError, match="t must be"):
        net(x, index, RES, torch.tensor([1, 2, 3]), torch.randn(2, 6))
    with pytest.raises(ValueError, match="divisible by 2"):
        InftyDiffNet(**{**TINY, "inner_resolution": 9})


def test_latent_scale_is_the_authors_conv_block_modulation() -> None:
    """Every inner U-Net resnet of a "scale" network computes, by hand from its own weights, the authors'
    ConvBlock order: conv1(act(norm1 x)) -> norm2 -> (1 + s) h + b (time) -> h (1 + W2 gelu(W1 z + c1) + c2)
    (latent) -> conv2(act(h)) -> + shortcut(x)."""
    torch.manual_seed(1)
    net = tiny_net(latent_dim=6)
    resnets = net.unet.resnets()
    assert len(resnets) == sum(isinstance(m, ResnetBlock2D) for m in net.unet.modules())
    time_dim = net.time_embedding.linear_2.out_features
    for resnet in resnets:
        assert resnet.upsample is None and resnet.downsample is None
        projection = resnet.time_emb_proj
        assert isinstance(projection, _LatentScaledTimeProjection)
        first, last = projection.latent[0], projection.latent[2]
        torch.nn.init.normal_(last.weight, std=0.3)  # the default init is small; make the scale matter
        x = torch.randn(2, resnet.conv1.in_channels, 8, 8)
        emb, z = torch.randn(2, time_dim), torch.randn(2, 6)
        with torch.no_grad():
            h = resnet.conv1(F.silu(resnet.norm1(x)))
            scale, shift = projection.proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = resnet.norm2(h) * (1 + scale) + shift
            gain = 1 + F.linear(F.gelu(F.linear(z, first.weight, first.bias)), last.weight, last.bias)
            h = resnet.conv2(F.silu(h * gain[:, :, None, None]))
            shortcut = x if resnet.conv_shortcut is None else resnet.conv_shortcut(x)
            expected = (shortcut + h) / resnet.output_scale_factor
            torch.testing.assert_close(resnet(x, torch.cat((emb, z), dim=1)), expected)


def _unconditioned_copy(net: InftyDiffNet) -> InftyDiffNet:
    """The network without latent_dim, with ``net``'s weights (all latent parts left out)."""
    plain = tiny_net()
    state = {
        key.replace("time_emb_proj.proj.", "time_emb_proj."): value
        for key, value in net.state_dict().items()
        if ".latent." not in key and not key.startswith("latent_embedding")
    }
    plain.load_state_dict(state)
    return plain


@pytest.mark.parametrize("conditioning", ["scale", "embedding"])
def test_latent_conditioning_with_neutral_z_is_the_unconditioned_network(conditioning: str) -> None:
    """With every latent map's output layer zeroed (gain 1, nothing added), both forms equal the network
    built without latent_dim; un-zeroing only the U-Net's part makes the output depend on z."""
    net = tiny_net(latent_dim=6, latent_conditioning=conditioning)
    index, x, t = subset(2, 80, seed=4), torch.randn(2, 80, 3), torch.tensor([7, 500])
    z1, z2 = torch.randn(2, 6), torch.randn(2, 6)
    unet_maps = (
        [resnet.time_emb_proj.latent[2] for resnet in net.unet.resnets()]
        if conditioning == "scale"
        else [net.latent_embedding]
    )
    sparse_maps = [block.latent[i][2] for block in (*net.down, *net.up) for i in range(2)]
    with torch.no_grad():
        for layer in (*unet_maps, *sparse_maps):
            layer.weight.zero_()
            layer.bias.zero_()
        expected = _unconditioned_copy(net)(x, index, RES, t)
        torch.testing.assert_close(net(x, index, RES, t, z1), expected)
        for layer in unet_maps:
            torch.nn.init.normal_(layer.weight, std=0.3)
        assert (net(x, index, RES, t, z1) - net(x, index, RES, t, z2)).abs().max() > 1e-3


def test_latent_conditioning_default_and_errors() -> None:
    net = tiny_net(latent_dim=6)
    assert net.latent_conditioning == "scale" and net.latent_embedding is None
    assert tiny_net(latent_dim=6, latent_conditioning="embedding").unet.latent_dim is None
    with pytest.raises(ValueError, match="latent_conditioning"):
        tiny_net(latent_dim=6, latent_conditioning="add")
    with pytest.raises(ValueError, match="pass z"):
        net.unet(torch.randn(1, 16, 8, 8), torch.randn(1, 64))
