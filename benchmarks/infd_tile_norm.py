"""INFD tiled rendering: whole-image (``norm="global"``) vs per-tile (``norm="tile"``, the authors') norms.

    PYTHONPATH=src python benchmarks/infd_tile_norm.py --ckpt runs/quickstart_infd/checkpoints/last.ckpt

For ``--num`` held-out images of the quickstart data (``Synthetic(2048, 128)``, the last images, which the
quickstart's seeded split need not hold out: any images serve here, the measure is of the renderer) the
stage-1 checkpoint encodes the image at its encoder resolution once (``phi``) and renders it at
``--resolution`` (default 4x the encoder resolution) four ways: whole (one pass, no tiles) and tiled
(``--tile``/``--pad``) with each GroupNorm statistics mode: exact whole-image (``global``), whole-image
estimated from windows (``sampled``) and per tile (``tile``). Written to ``--out/--name`` as JSON:

- ``max_diff_to_whole``/``mean_diff_to_whole``/``psnr_to_whole``: the tiled render against the whole one
  (PSNR with peak-to-peak 2, images in [-1, 1]);
- ``seam_ratio``: the mean absolute jump between neighbouring pixels across a tile border divided by the
  mean jump between neighbours inside tiles (1 = borders look like the rest; the whole render's value at the
  same positions is given as ``seam_ratio_whole``, the image content's own ratio);
- ``scale_consistency``: :func:`rezdiff.metrics.render_scale_consistency` between the render at
  ``resolution / 2`` and at ``resolution`` (box-averaged), both rendered with the same tiling and norm.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name, write_report  # noqa: E402

import rezdiff  # noqa: E402
from rezdiff.data import Synthetic  # noqa: E402
from rezdiff.metrics import render_scale_consistency  # noqa: E402
from rezdiff.models.infd.clif import NORM_MODES  # noqa: E402


def neighbour_jumps(images: Tensor, tile: int) -> tuple[float, float]:
    """Mean ``|x[i] - x[i-1]|`` over neighbour pairs (rows and columns) across tile borders / inside tiles."""
    rows = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # per row boundary i|i+1
    cols = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    jumps = torch.cat((rows, cols))
    border = torch.cat(
        (torch.arange(1, images.shape[-2]) % tile == 0, torch.arange(1, images.shape[-1]) % tile == 0)
    )
    return float(jumps[border].mean()), float(jumps[~border].mean())


def psnr(image: Tensor, reference: Tensor) -> float:
    """PSNR in dB of ``image`` against ``reference``, both in [-1, 1] (peak-to-peak 2); inf when equal."""
    mse = float((image - reference).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="an INFDAutoencoder (stage 1) checkpoint")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=None, help="default: 4x the encoder resolution")
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--pad", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="infd_tile_norm_cpu.json")
    parser.add_argument("--note", default="", help="what the checkpoint is (stored in the JSON)")
    options = parser.parse_args(argv)
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
    modes: list[tuple[str, dict[str, Any]]] = [("whole", {"tile": None})]
    modes += [(f"tiled, norm={n}", {"tile": options.tile, "pad": options.pad, "norm": n}) for n in NORM_MODES]
    rows = []
    for mode, render in modes:
        image = whole if render["tile"] is None else model.render(phi, resolution, **render)
        border, inside = neighbour_jumps(image, options.tile)
        rows.append(
            {
                "mode": mode,
                "max_diff_to_whole": float((image - whole).abs().max()),
                "mean_diff_to_whole": float((image - whole).abs().mean()),
                "psnr_to_whole": psnr(image, whole),
                "seam_ratio": border / inside,
                "scale_consistency_psnr": render_scale_consistency(model, phi, resolution // 2, **render)[
                    "psnr"
                ],
            }
        )
        print(json.dumps(rows[-1]))
    settings = {key: getattr(options, key) for key in ("ckpt", "num", "tile", "pad", "note")}
    report = {
        "benchmark": "infd_tile_norm",
        "settings": {**settings, "resolution": resolution, "encoder_resolution": model.encoder_resolution},
        "device": {"type": "cpu", "cpu": cpu_name(), "threads": options.threads},
        "rows": rows,
    }
    return write_report(report, options.out, options.name)


if __name__ == "__main__":
    main()
