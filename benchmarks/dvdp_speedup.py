"""DVDP vs DDPM, identical U-Net: training s/iter and sampling s/sample, K = 0..3 (paper Tables 1, 3).

    python benchmarks/dvdp_speedup.py                                   # CPU rows: 64x64, small U-Net
    python benchmarks/dvdp_speedup.py --resolution 256 --width 128 128 256 256 512 512 --attention 4 \
        --batch 24 --sample-batch 64 --device cuda                       # the paper's 256x256 setting

K = 0 is the DDPM baseline (``rezdiff.DDPM``); K = 1, 2, 3 use the paper's Table 3 turning points
{250}, {250, 500}, {250, 500, 750}; ``--table1`` adds Table 1's {300, 600}; ``--per-batch`` adds DVDP
rows with one stage per batch (``stage_sampling="per_batch"``). Every model is built from the same U-Net
arguments and measured in the same process, one after the other, on one fixed batch of random images
(the figure is the model's step, not the data pipeline): forward + backward + Adam step + EMA for
training, and a full ``sample()`` (DDIM, ``--sample-steps`` steps, the same for all) for sampling. The
JSON in ``benchmarks/results/`` records device, versions, settings and the paper's figures next to the
measured ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.data.batch import FieldBatch  # noqa: E402
from rezdiff.models import DDPM, DVDP  # noqa: E402
from rezdiff.models.base import DiffusionModule, step_generator  # noqa: E402

TABLE3 = {1: (250,), 2: (250, 500), 3: (250, 500, 750)}
# The paper's figures (A100): Table 3 (CelebA 128, speed-ups vs K = 0) and Table 1 (256x256, K = 2).
PAPER = {
    "table3_train_speedup": {"1": 1.98, "2": 2.24, "3": 2.25},
    "table3_sample_speedup": {"1": 2.12, "2": 2.36, "3": 2.43},
    "table1_256": {
        "ddpm_s_per_iter": 0.99,
        "dvdp_s_per_iter": 0.45,
        "train_speedup": 2.2,
        "ddpm_s_per_sample": 12.2,
        "dvdp_s_per_sample": 5.01,
        "sample_speedup": 2.4,
    },
}


def build(
    turning_points: tuple[int, ...] | None, options: argparse.Namespace, stage_sampling: str = "per_example"
) -> DiffusionModule:
    unet = dict(
        image_size=options.resolution,
        block_out_channels=tuple(options.width),
        layers_per_block=options.layers,
        attention_levels=tuple(options.attention),
        attention_head_dim=options.head_dim,
        norm_num_groups=min(32, min(options.width)),
        dropout=0.0,
        ema_decay=0.999,
    )
    if turning_points is None:
        return DDPM(**unet)
    return DVDP(**unet, turning_points=turning_points, stage_sampling=stage_sampling)


def measure(model: DiffusionModule, options: argparse.Namespace, device: torch.device) -> dict[str, float]:
    model = model.to(device).train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    images = torch.rand(
        options.batch, 3, options.resolution, options.resolution, generator=torch.Generator().manual_seed(0)
    )
    batch = FieldBatch(image=(2 * images - 1).to(device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16)

    def train_step(index: int) -> None:
        with autocast:
            loss = model.loss(batch, step_generator(0, index, device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.ema.update(model.network, index)

    def sample(index: int) -> None:
        with autocast:
            model.sample(
                options.sample_batch,
                steps=options.sample_steps,
                sampler="ddim",
                generator=torch.Generator().manual_seed(index),
            )

    timed(train_step, options.warmup, device)
    train = timed(train_step, options.steps, device)
    timed(sample, 1, device)
    per_sample = timed(sample, options.sample_repeats, device) / options.sample_batch
    return {"train_s_per_iter": train, "sample_s_per_sample": per_sample}


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=int, nargs="+", default=[32, 64, 64])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--attention", type=int, nargs="*", default=[2])
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--sample-repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--table1", action="store_true", help="also K = 2 with Table 1's {300, 600}")
    parser.add_argument("--per-batch", action="store_true", help="also DVDP with stage_sampling=per_batch")
    parser.add_argument("--bf16", action="store_true")
    add_device_options(parser)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    options = parser.parse_args(args)
    device = select_device(options)
    settings = [(k, TABLE3.get(k)) for k in options.levels] + ([(2, (300, 600))] if options.table1 else [])
    modes = ["per_example", "per_batch"] if options.per_batch else ["per_example"]
    settings = [(k, tp, mode) for k, tp in settings for mode in (modes if k else modes[:1])]
    rows = []
    for k, turning_points, mode in settings:
        torch.manual_seed(0)
        row = {"K": k, "model": "DDPM" if k == 0 else "DVDP", "turning_points": list(turning_points or ())}
        row["stage_sampling"] = mode if k else None
        row.update(measure(build(turning_points if k else None, options, mode), options, device))
        rows.append(row)
    base = next((r for r in rows if r["K"] == 0), None)
    print(
        f"{'K':>2} {'T':<18} {'stages':<11} {'train s/iter':>12} {'speed-up':>8} {'paper':>6} "
        f"{'sample s/img':>12} {'speed-up':>8} {'paper':>6}"
    )
    for row in rows:
        if base is not None:
            row["train_speedup"] = base["train_s_per_iter"] / row["train_s_per_iter"]
            row["sample_speedup"] = base["sample_s_per_sample"] / row["sample_s_per_sample"]
        key = str(row["K"])
        paper_t = PAPER["table3_train_speedup"].get(key) if row["turning_points"] != [300, 600] else 2.2
        paper_s = PAPER["table3_sample_speedup"].get(key) if row["turning_points"] != [300, 600] else 2.4
        print(
            f"{row['K']:>2} {str(row['turning_points']):<18} {str(row['stage_sampling'] or '-'):<11} "
            f"{row['train_s_per_iter']:>12.4f} "
            f"{row.get('train_speedup', float('nan')):>7.2f}x {paper_t or '-':>6} "
            f"{row['sample_s_per_sample']:>12.4f} "
            f"{row.get('sample_speedup', float('nan')):>7.2f}x {paper_s or '-':>6}"
        )
    report = {
        "benchmark": "dvdp_speedup",
        "settings": {key: value for key, value in vars(options).items() if key != "out"},
        "parameters": sum(p.numel() for p in build(None, options).network.parameters()),
        "device": device_info(device),
        "paper": PAPER,
        "rows": rows,
    }
    return write_report(report, options.out, f"dvdp_speedup_{options.resolution}_{device.type}.json")


if __name__ == "__main__":
    main()
