"""Neural-field renderers: query features against a per-query reference, coordinates, receptive field,
tiled rendering."""

from __future__ import annotations

import pytest
import torch

from rezdiff.data import coords as C
from rezdiff.nn.clif import CLIF, LIIFRenderer, grid_queries, query_features, render_field


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
