"""Sparse depthwise convolution: gather loop vs masked-dense backend vs a plain conv2d, by density.

    python benchmarks/sparse_conv.py                                   # CPU: 64², 128², 256²; batch 4; C = 64
    python benchmarks/sparse_conv.py --device cuda --batch 32          # GPU rows (sets the CUDA threshold)
    python benchmarks/sparse_conv.py --backends gather triton dense    # choose the sparse backends timed

The committed CPU file was taken with ``--threads 1`` on a 2-core machine shared with other jobs: one
thread keeps the timings stable there (no waits on a descheduled second thread).

For each resolution and density (fraction of the pixels present, each example its own random subset) it
times forward + backward (input and weight gradients) of ``sparse_depthwise_conv`` with the ``"gather"``
and ``"dense"`` backends (and ``"triton"`` on CUDA when Triton is installed) on the same points, and of a
plain zero-padded depthwise ``conv2d`` over the full image (what a grid network pays at any density). The
neighbour structure is built outside the timed region, as in the network where one build serves every
block; its cost is reported separately. The JSON records every time, the ratios, and the density up to
which each loop (gather, triton) beats the dense backend on this device: that is where
``rezdiff.models.infty_diff.sparse.GATHER_MAX_DENSITY`` comes from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.models.infty_diff.sparse import GATHER_MAX_DENSITY, build_neighbours, sparse_depthwise_conv  # noqa: E402

DENSITIES = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
BACKENDS = ("gather", "triton", "dense")  # the order of the columns


def default_backends(device: torch.device) -> list[str]:
    """``gather`` and ``dense``, plus ``triton`` on CUDA when it is installed."""
    from rezdiff.models.infty_diff.sparse_triton import triton_available

    return ["gather", "dense"] + (["triton"] if device.type == "cuda" and triton_available(device) else [])


def loops_against_dense(backends: list[str]) -> list[str]:
    """The loop backends (gather, triton) whose time is compared with the dense backend's, when it ran."""
    return [name for name in backends if name != "dense"] if "dense" in backends else []


def measure(
    resolution: int, density: float, options: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    batch, channels, size = options.batch, options.channels, options.kernel_size
    pixels = resolution * resolution
    num = max(1, round(density * pixels))
    index = torch.stack([torch.randperm(pixels, generator=generator)[:num] for _ in range(batch)]).to(device)
    x = torch.randn(batch, num, channels, generator=generator).to(device).requires_grad_()
    weight = (torch.randn(channels, size, size, generator=generator) / size).to(device).requires_grad_()
    image = (
        torch.randn(batch, channels, resolution, resolution, generator=generator).to(device).requires_grad_()
    )

    def build(_: int) -> None:
        neighbours = build_neighbours(index, resolution, size)
        neighbours.table  # noqa: B018 - force the lazily built table

    neighbours = build_neighbours(index, resolution, size)
    neighbours.table  # noqa: B018

    def step(backend: str):
        def run(_: int) -> None:
            out = sparse_depthwise_conv(x, weight, neighbours, backend)
            out.backward(torch.ones_like(out))

        return run

    def conv2d(_: int) -> None:
        out = F.conv2d(image, weight.unsqueeze(1), padding=size // 2, groups=channels)
        out.backward(torch.ones_like(out))

    row: dict[str, Any] = {"resolution": resolution, "density": density, "points_per_example": num}
    backends, loops = options.backends, loops_against_dense(options.backends)
    for name, fn in (
        *((f"{backend}_s", step(backend)) for backend in backends),
        ("conv2d_s", conv2d),
        ("build_s", build),
    ):
        timed(fn, options.warmup, device)
        row[name] = timed(fn, options.repeats, device)
    for backend in loops:
        row[f"dense_over_{backend}"] = row["dense_s"] / row[f"{backend}_s"]  # > 1: the loop is faster
    for backend in backends:
        row[f"{backend}_over_conv2d"] = row[f"{backend}_s"] / row["conv2d_s"]
    times = [row[f"{name}_s"] for name in (*backends, "conv2d", "build")]
    ratios = [row[f"dense_over_{name}"] for name in loops]
    print(
        f"{resolution:>5} {density:>7.4f} {num:>7} "
        + " ".join([*(f"{t:>9.4f}" for t in times), *(f"{r:>9.2f}" for r in ratios)])
    )
    return row


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        help="sparse backends to time (default: gather and dense, plus triton on CUDA when installed)",
    )
    add_device_options(parser)
    options = parser.parse_args(args)
    device = select_device(options)
    chosen = options.backends or default_backends(device)
    options.backends = backends = [name for name in BACKENDS if name in chosen]  # in column order
    loops = loops_against_dense(backends)
    header = ["res", "density", "N", *(f"{name} s" for name in backends), "conv2d s", "build s"]
    header += [f"d/{name[0]}" for name in loops]
    print(" ".join(f"{name:>{9 if i > 2 else (5, 7, 7)[i]}}" for i, name in enumerate(header)))
    rows = [measure(r, d, options, device) for r in options.resolutions for d in options.densities]
    report: dict[str, Any] = {
        "benchmark": "sparse_conv",
        "settings": {key: value for key, value in vars(options).items() if key != "out"},
        "statistic": "mean over --repeats runs of forward + backward, after --warmup runs (common.timed)",
        "device": device_info(device),
    }
    for name in loops:
        # The largest density up to which this loop beats the dense backend at every resolution measured.
        wins = [
            d
            for d in sorted(options.densities)
            if all(r[f"dense_over_{name}"] > 1 for r in rows if r["density"] == d)
        ]
        report[f"{name}_wins_up_to_density"] = max(
            (d for d in wins if all(w in wins for w in sorted(options.densities) if w <= d)), default=0.0
        )
    report["auto_threshold_in_code"] = GATHER_MAX_DENSITY.get(device.type)
    report["rows"] = rows
    return write_report(report, options.out, f"sparse_conv_{device.type}.json")


if __name__ == "__main__":
    main()
