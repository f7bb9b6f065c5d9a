"""How far apart batched and batch-invariant sampling are, and what batch invariance costs.

    python benchmarks/batch_invariance.py --ckpt runs/quickstart_ddpm/checkpoints/last.ckpt --threads 2

For each checkpoint, ``--num`` seeds are sampled twice with the model's sampler at ``--steps``: in one
batch (``sample_seeds(seeds)``) and each image alone (``sample_seeds(seeds, batch_invariant=True)``).
Recorded: the largest and the mean absolute difference between the two (images in [-1, 1]), whether a
second batch-invariant pass repeats the first bit for bit, and the seconds per image of each way
(``--clock``). Per-image seeds make the two draw the same noise, so the difference is kernel rounding
(batched kernels block by batch size) carried through the sampler's steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

import rezdiff  # noqa: E402


def measure(ckpt: str, num: int, steps: int, device: torch.device) -> dict[str, Any]:
    """One checkpoint's row (module docstring)."""
    model = rezdiff.load(ckpt, map_location=device)
    seeds = list(range(num))
    results: dict[str, torch.Tensor] = {}

    def run(batch_invariant: bool) -> None:
        with torch.no_grad():
            results[str(batch_invariant)] = model.sample_seeds(
                seeds, batch_invariant=batch_invariant, steps=steps
            ).cpu()

    batched_s = timed(lambda _: run(False), 1, device) / num
    alone_s = timed(lambda _: run(True), 1, device) / num
    first = results["True"]
    run(True)
    difference = (results["False"] - first).abs()
    return {
        "ckpt": ckpt,
        "class": type(model).__name__,
        "resolution": list(model.native_resolution),
        "num": num,
        "steps": steps,
        "max_abs_difference": difference.max().item(),
        "mean_abs_difference": difference.mean().item(),
        "batch_invariant_repeats_bit_for_bit": bool(torch.equal(first, results["True"])),
        "batched_s_per_image": batched_s,
        "alone_s_per_image": alone_s,
        "cost_ratio": alone_s / batched_s,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True, help="checkpoints of models that sample")
    parser.add_argument("--num", type=int, default=8, help="seeds per checkpoint")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="batch_invariance_cpu.json")
    parser.add_argument("--note", default="", help="what the checkpoints are (stored in the JSON)")
    add_device_options(parser)
    options = parser.parse_args(argv)
    device = select_device(options)
    rows = [measure(ckpt, options.num, options.steps, device) for ckpt in options.ckpt]
    for row in rows:
        print(
            f"{row['class']:>16}: max |batched - alone| {row['max_abs_difference']:.2e}, "
            f"alone/batched time {row['cost_ratio']:.2f}x, "
            f"repeats: {row['batch_invariant_repeats_bit_for_bit']}"
        )
    report = {"device": device_info(device), "settings": vars(options), "rows": rows}
    return write_report(report, options.out, options.name)


if __name__ == "__main__":
    main()
