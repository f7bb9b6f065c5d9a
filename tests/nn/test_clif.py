"""Neural-field renderers: query features against a per-query reference, coordinates, receptive field,
tiled rendering."""

from __future__ import annotations

import pytest
import torch

from rezdiff.data import coords as C
from rezdiff.models.infd.clif import (
    CLIF,
    LIIFRenderer,
    grid_queries,
    query_features,
    render_field,
    sampled_stats,
)


def _reference_query(phi: torch.Tensor, point: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """One query, by brute force: the feature whose centre is nearest (ties impossible off cell edges)."""
    channels, h, w = phi.shape
    centres = C.pixel_centers((h, w), dtype=torch.float64).view(-1, 2)
    scale = torch.tensor((w, h), dtype=torch.float64)
    # The cell containing the point: its centre is within half a cell along both axes.
    nearest = ((centres - point.double()) * scale).abs().amax(1).argmin()
    centre = centres[nearest]
    feature = phi.reshape(channels, -1)[:, nearest]
    rel = (point.double() - centre) * scale
    return torch.cat((feature, rel.float(), (cell.double() * scale).float()))


def test_query_features_match_a_per_query_reference() -> None:
    torch.manual_seed(0)
    phi = torch.randn(2, 5, 4, 6)
    points = torch.rand(2, 3, 7, 2) * 1.98 - 0.99  # arbitrary points, not on a grid
    cell = torch.rand(2, 3, 7, 2) * 0.3
    query = query_features(phi, points, cell)
    assert query.shape == (2, 9, 3, 7)
    for b in range(2):
        for i in range(3):
            for j in range(7):
                expected = _reference_query(phi[b], points[b, i, j], cell[b, i, j])
                torch.testing.assert_close(query[b, :, i, j], expected, rtol=0, atol=1e-5)
    assert query[:, 5:7].abs().max() <= 1.0 + 1e-6  # relative offsets lie in [-1, 1]


def test_scaled_cell_is_two_at_the_feature_resolution_and_halves_per_doubling() -> None:
    phi = torch.randn(1, 2, 8, 8)
    for resolution, expected in ((8, 2.0), (16, 1.0), (32, 0.5)):
        points, cell = grid_queries(resolution)
        query = query_features(phi, points[None], cell[None])
        torch.testing.assert_close(query[:, 4:6], torch.full_like(query[:, 4:6], expected))
        if resolution == 16:  # 2x: each feature cell holds 2x2 queries at offsets -1/2 and +1/2
            assert set(query[0, 2, 0, :4].tolist()) == {-0.5, 0.5}


def test_shifting_the_query_grid_by_one_feature_cell_shifts_the_output() -> None:
    torch.manual_seed(0)
    renderer = CLIF(feature_channels=8, hidden_channels=16, norm_num_groups=4).eval()
    phi = torch.randn(1, 8, 16, 16)
    points, cell = grid_queries(32)  # 2 output pixels per feature cell
    shift = torch.tensor((2.0 / 16, 0.0))  # one feature cell to the right
    fixed = [torch.tensor([[[0.0, 1.0]] * 4])] * renderer.num_norms  # same GroupNorm statistics for both
    with torch.no_grad():
        base = renderer.run(query_features(phi, points[None], cell[None]), fixed)
        moved = renderer.run(query_features(phi, (points + shift)[None], cell[None]), fixed)
    # Away from the zero-padded border (6 px) and the clamped last feature column, moved[x] = base[x + 2].
    torch.testing.assert_close(moved[..., 6:-6, 6:-8], base[..., 6:-6, 8:-6])
    assert (moved[..., 6:-6, 6:-8] - base[..., 6:-6, 6:-8]).abs().max() > 1e-2


def test_receptive_radius_of_clif() -> None:
    torch.manual_seed(0)
    renderer = CLIF(feature_channels=4, hidden_channels=8, norm_num_groups=2).eval()
    query = torch.zeros(1, 8, 31, 31, requires_grad=True)
    out = renderer.run(query, [torch.zeros(1, 2, 2).add_(torch.tensor([0.0, 1.0]))] * renderer.num_norms)
    out[0, :, 15, 15].sum().backward()  # fixed statistics: the only coupling left is convolutional
    reach = query.grad.abs().sum((0, 1)).nonzero()
    radius = int((reach - 15).abs().max())
    assert radius == renderer.receptive_radius == 6


@pytest.mark.parametrize("renderer_kind", ["clif", "liif"])
def test_tiled_render_equals_the_whole_render(renderer_kind: str) -> None:
    torch.manual_seed(0)
    if renderer_kind == "clif":
        renderer = CLIF(feature_channels=8, hidden_channels=16, norm_num_groups=4)
    else:
        renderer = LIIFRenderer(feature_channels=8, hidden_channels=16, depth=2)
    phi = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        for resolution in (37, (20, 45)):
            whole = render_field(renderer, phi, resolution, tile=None)
            tiled = render_field(renderer, phi, resolution, tile=12, pad=6)
            assert whole.shape == (2, 3, *C.as_hw(resolution))
            torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-5)
        box = (-0.5, -1.0, 0.25, 0.5)
        torch.testing.assert_close(
            render_field(renderer, phi, 30, box=box, tile=8, pad=8), render_field(renderer, phi, 30, box=box)
        )


def test_per_tile_statistics_leave_seams_and_small_pad_is_refused() -> None:
    torch.manual_seed(0)
    renderer = CLIF(feature_channels=8, hidden_channels=16, norm_num_groups=4)
    phi = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        whole = render_field(renderer, phi, 32, tile=None)
        per_tile = render_field(renderer, phi, 32, tile=16, pad=8, norm="tile")
    assert (per_tile - whole).abs().max() > 1e-3  # why "global" is the default
    with pytest.raises(ValueError, match="receptive radius"):
        render_field(renderer, phi, 32, tile=16, pad=4)


def test_box_render_is_the_window_of_the_whole_render_for_a_pointwise_renderer() -> None:
    torch.manual_seed(0)
    renderer = LIIFRenderer(feature_channels=8, hidden_channels=16, depth=2)
    phi = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        whole = render_field(renderer, phi, 32)
        right_half = render_field(renderer, phi, (32, 16), box=(0.0, -1.0, 1.0, 1.0))
        full_box = render_field(renderer, phi, 32, box=(-1.0, -1.0, 1.0, 1.0))
    torch.testing.assert_close(right_half, whole[..., 16:])
    torch.testing.assert_close(full_box, whole)


def _whole_query(phi: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], size: tuple[int, int]):
    points, cell = grid_queries(size, rows, cols, None)
    batch = phi.shape[0]
    return query_features(phi, points.expand(batch, -1, -1, -1), cell.view(1, 2).expand(batch, 2))


def test_sampled_statistics_are_those_of_the_whole_render_over_the_window_centres() -> None:
    """``sampled_stats`` on a 128x128 output cut into 8x8 adjacent 16-px windows (radius 4: centres are
    pixels 4..11 of each window): norm k's statistics equal the per-image moments of the whole render's
    norm-k input (under the same statistics for the earlier norms) over exactly those centre pixels. A
    window centre that saw zero padding, images pooled together or a window left out would differ."""
    torch.manual_seed(0)
    renderer = CLIF(feature_channels=8, hidden_channels=16, num_res_blocks=1, norm_num_groups=4).eval()
    assert renderer.receptive_radius == 4 and 2 * 4 + 8 == 16
    phi = torch.randn(2, 8, 8, 8)
    phi[1] = phi[1] * 3 + 1  # the two images have different statistics
    size = (128, 128)

    def window_query(rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        return _whole_query(phi, rows, cols, size)

    with torch.no_grad():
        stats = sampled_stats(renderer, window_query, size, tile=128, batch=2)
        assert len(stats) == renderer.num_norms and stats[0].shape == (2, 4, 2)
        centre = (torch.arange(128) % 16 >= 4) & (torch.arange(128) % 16 < 12)
        mask = centre[:, None] & centre[None, :]
        query = window_query((0, 128), (0, 128))
        for k in range(renderer.num_norms):
            h = renderer.run(query, stats, stop=k)[..., mask].double().reshape(2, 4, -1)
            expected = torch.stack((h.mean(-1), h.var(-1, unbiased=False)), dim=-1)
            torch.testing.assert_close(stats[k], expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(stats[0][0], stats[0][1])


def test_sampled_render_is_the_whole_render_under_the_sampled_statistics() -> None:
    """Tiled ``norm="sampled"``: every tile is normalised with the sampled whole-image statistics (so no
    seams), and the windows stay within one tile's pixels for tiles of 160 and more."""
    torch.manual_seed(0)
    renderer = CLIF(feature_channels=8, hidden_channels=16, norm_num_groups=4).eval()
    phi = torch.randn(2, 8, 8, 8)
    size = (150, 170)

    def window_query(rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        return _whole_query(phi, rows, cols, size)

    with torch.no_grad():
        stats = sampled_stats(renderer, window_query, size, tile=48, batch=2)
        expected = renderer.run(window_query((0, 150), (0, 170)), stats)
        tiled = render_field(renderer, phi, size, tile=48, pad=8, norm="sampled")
        whole = render_field(renderer, phi, size, tile=None)
        per_tile = render_field(renderer, phi, size, tile=48, pad=8, norm="tile")
    torch.testing.assert_close(tiled, expected, rtol=1e-4, atol=1e-5)
    assert (tiled - whole).abs().mean() < (per_tile - whole).abs().mean()

    seen: list[int] = []

    class Counting(CLIF):
        def run(self, query, stats=None, stop=None):  # type: ignore[no-untyped-def]
            seen.append(query.shape[0] * query.shape[-2] * query.shape[-1])
            return super().run(query, stats, stop)

    counting = Counting(feature_channels=8, hidden_channels=8, num_res_blocks=1, norm_num_groups=4)
    with torch.no_grad():
        sampled_stats(counting, lambda r, c: _whole_query(phi[:1], r, c, (1024, 1024)), (1024, 1024), 256, 1)
    assert seen == [256 * 256]  # one pass over 8 x 8 windows of 32 px: one tile's pixels
    with pytest.raises(ValueError, match="'global' .* 'sampled' .* 'tile'"):
        render_field(renderer, phi, size, tile=48, norm="exact")  # type: ignore[arg-type]
