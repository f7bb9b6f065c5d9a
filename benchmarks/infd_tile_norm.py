"""INFD tiled rendering: whole-image (``norm="global"``) vs per-tile (``norm="tile"``, the authors') norms.

    PYTHONPATH=src python benchmarks/infd_tile_norm.py --ckpt runs/quickstart_infd/checkpoints/last.ckpt

For ``--num`` held-out images of the quickstart data (``Synthetic(2048, 128)``, the last images, which the
quickstart's seeded split need not hold out: any images serve here, the measure is of the renderer) the
stage-1 checkpoint encodes the image at its encoder resolution once (``phi``) and renders it at
``--resolution`` (default 4x the encoder resolution) three ways: whole (one pass, no tiles), tiled with
global statistics and tiled with per-tile statistics (``--tile``/``--pad``). Printed as JSON:

- ``max_diff_to_whole``/``mean_diff_to_whole``: the tiled render against the whole one;
- ``seam_ratio``: the mean absolute jump between neighbouring pixels across a tile border divided by the
  mean jump between neighbours inside tiles (1 = borders look like the rest; the whole render's value at the
  same positions is given as ``seam_ratio_whole``, the image content's own ratio);
- ``scale_consistency``: :func:`rezdiff.metrics.render_scale_consistency` between the render at
  ``resolution / 2`` and at ``resolution`` (box-averaged), both rendered with the same tiling and norm.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor

import rezdiff
from rezdiff.data import Synthetic
from rezdiff.metrics import render_scale_consistency


def neighbour_jumps(images: Tensor, tile: int) -> tuple[float, float]:
    """Mean ``|x[i] - x[i-1]|`` over neighbour pairs (rows and columns) across tile borders / inside tiles."""
    rows = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # per row boundary i|i+1
    cols = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    jumps = torch.cat((rows, cols))
    border = torch.cat(
        (torch.arange(1, images.shape[-2]) % tile == 0, torch.arange(1, images.shape[-1]) % tile == 0)
    )
    return float(jumps[border].mean()), float(jumps[~border].mean())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="an INFDAutoencoder (stage 1) checkpoint")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=None, help="default: 4x the encoder resolution")
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--pad", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    model = rezdiff.load(options.ckpt).eval()
    resolution = options.resolution or 4 * model.encoder_resolution
    if resolution % 2 or resolution <= options.tile:
        raise SystemExit(f"--resolution {resolution} must be even and larger than --tile {options.tile}")
    dataset = Synthetic(num_images=2048, resolution=128)
    indices = range(len(dataset) - options.num, len(dataset))
    images = torch.stack([dataset.render(i, model.encoder_resolution) for i in indices])
    phi = model.decode(model.encode(images))
    whole = model.render(phi, resolution, tile=None)
    report: dict[str, object] = {
        "ckpt": options.ckpt,
        "num": options.num,
        "resolution": resolution,
        "tile": options.tile,
        "pad": options.pad,
        "seam_ratio_whole": None,
    }
    border, inside = neighbour_jumps(whole, options.tile)
    report["seam_ratio_whole"] = border / inside
    report["scale_consistency_whole"] = render_scale_consistency(model, phi, resolution // 2, tile=None)
    for norm in ("global", "tile"):
        render = {"tile": options.tile, "pad": options.pad, "norm": norm}
        tiled = model.render(phi, resolution, **render)
        border, inside = neighbour_jumps(tiled, options.tile)
        report[norm] = {
            "max_diff_to_whole": float((tiled - whole).abs().max()),
            "mean_diff_to_whole": float((tiled - whole).abs().mean()),
            "seam_ratio": border / inside,
            "scale_consistency": render_scale_consistency(model, phi, resolution // 2, **render),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
