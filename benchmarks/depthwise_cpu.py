"""The CPU's depthwise-convolution cliff and the blocked kernel that avoids it (∞-Diff's dense path).

    python benchmarks/depthwise_cpu.py --clock cpu --threads 1

oneDNN's depthwise conv2d (torch's CPU kernel) is fast up to 9x9 kernels and an order of magnitude slower per
multiply-add from 11x11 up. ∞-Diff resizes its kernels with the output (5 -> 9 at 2x, 21 at 4x for the
quickstart; 7 -> 13, 29, 57 for the paper's), so sampling above the training resolution falls off the cliff.
``rezdiff.models.infty_diff.sparse.depthwise_conv2d`` splits a wide kernel into blocks of at most 7 taps a
side, each a shifted depthwise convolution. Recorded, side by side in one run:

* per (resolution, kernel): one conv2d vs the blocked one, ms per call (32 channels, batch 1, ``--repeats``
  calls each after one untimed call), their ratio, and the ideal ratio -- the one conv2d's time over the
  time of the same multiply-adds at the throughput of a 7x7 kernel at that resolution (what the blocks can
  reach at best);
* per resolution: the ∞-Diff quickstart (untrained) seconds per sampler step with one conv2d (blocking
  turned off) and with the blocks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.models import InftyDiff  # noqa: E402
from rezdiff.models.infty_diff import sparse  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "quickstart" / "infty_diff.yaml"


def conv_row(resolution: int, size: int, channels: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """One conv2d vs the blocked convolution at one size (module docstring)."""
    x = torch.randn(1, channels, resolution, resolution, device=device)
    weight = torch.randn(channels, 1, size, size, device=device)
    fast = torch.randn(channels, 1, 7, 7, device=device)
    with torch.no_grad():
        for warm_up in (weight, fast):  # oneDNN builds a primitive on a shape's first call
            F.conv2d(x, warm_up, padding=warm_up.shape[-1] // 2, groups=channels)
        sparse.depthwise_conv2d(x, weight, sparse.CPU_DEPTHWISE_BLOCK)
        one = timed(lambda _: F.conv2d(x, weight, padding=size // 2, groups=channels), repeats, device)
        blocked = timed(
            lambda _: sparse.depthwise_conv2d(x, weight, sparse.CPU_DEPTHWISE_BLOCK), repeats, device
        )
        seven = timed(lambda _: F.conv2d(x, fast, padding=3, groups=channels), repeats, device)
        error = sparse.depthwise_conv2d(x, weight, 7) - F.conv2d(
            x, weight, padding=size // 2, groups=channels
        )
    macs = resolution**2 * size**2 * channels
    fast_rate = resolution**2 * 49 * channels / seven
    return {
        "resolution": resolution,
        "kernel": size,
        "one_conv2d_ms": one * 1e3,
        "blocked_ms": blocked * 1e3,
        "speedup": one / blocked,
        "ideal_speedup": one / (macs / fast_rate),
        "one_conv2d_gmac_s": macs / one / 1e9,
        "seven_by_seven_gmac_s": fast_rate / 1e9,
        "max_abs_difference": error.abs().max().item(),
        "output_std": F.conv2d(x, weight, padding=size // 2, groups=channels).std().item(),
    }


def step_row(model: InftyDiff, resolution: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Seconds per sampler step of ``model`` at ``resolution``, one conv2d vs blocks (module docstring)."""
    kernel = model.network.denoiser.kernel_size_for(model.process_at((resolution, resolution))[1])
    times = {}
    for name, widest in (("one_conv2d", 10**9), ("blocked", sparse.CPU_DEPTHWISE_MAX)):
        previous, sparse.CPU_DEPTHWISE_MAX = sparse.CPU_DEPTHWISE_MAX, widest
        try:
            model.sample(1, resolution=resolution, steps=1)  # warm-up
            times[name] = (
                timed(lambda _: model.sample(1, resolution=resolution, steps=2), repeats, device) / 2
            )
        finally:
            sparse.CPU_DEPTHWISE_MAX = previous
    return {
        "resolution": resolution,
        "kernel": kernel,
        "one_conv2d_s_per_step": times["one_conv2d"],
        "blocked_s_per_step": times["blocked"],
        "speedup": times["one_conv2d"] / times["blocked"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["64:7", "64:9", "64:11", "64:13", "128:9", "128:11", "128:13", "128:21", "256:21", "256:41"],
    )
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-resolutions", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="depthwise_cpu.json")
    add_device_options(parser)
    options = parser.parse_args(argv)
    device = select_device(options)
    if device.type != "cpu":
        raise SystemExit("depthwise_cpu.py measures the CPU path; run it with --device cpu")
    rows = []
    for spec in options.sizes:
        resolution, size = (int(v) for v in spec.split(":"))
        rows.append(conv_row(resolution, size, options.channels, options.repeats, device))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    init = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]
    model = InftyDiff(
        **{k: v for k, v in init.items() if k not in ("optimizer", "lr_scheduler", "ema")}
    ).eval()
    steps = []
    for resolution in options.model_resolutions:
        steps.append(step_row(model, resolution, max(1, options.repeats // 3), device))
        print(steps[-1])
    report = {
        "benchmark": "depthwise_cpu",
        "device": device_info(device),
        "settings": vars(options),
        "rows": rows,
        "infty_diff_quickstart_steps": steps,
    }
    return write_report(report, options.out, options.name)


if __name__ == "__main__":
    main()
