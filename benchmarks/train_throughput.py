"""Training throughput of any family: images/s, peak memory and (on a GPU) model FLOPs utilisation.

    python benchmarks/train_throughput.py --config configs/quickstart/ddpm.yaml
    python benchmarks/train_throughput.py --config configs/ddpm_ffhq256.yaml \
        --precision 32 bf16-mixed --compile

The model and data come from the same config ``rezdiff fit`` reads (built by LightningCLI with
``run=False``); one batch is drawn once and reused so that the figure is the model's step (forward,
backward, optimiser, EMA), not the data pipeline. Each precision/compile setting is measured in the
same process, side by side; the JSON in ``benchmarks/results/`` records device, versions and settings.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

import lightning
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.cli import RezdiffCLI  # noqa: E402
from rezdiff.data.datamodule import FieldDataModule  # noqa: E402
from rezdiff.models.base import DiffusionModule, step_generator  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity) in FLOP/s, matched against torch.cuda.get_device_name in this
# order (the first key the name contains). Vendor figures: NVIDIA's H100 datasheet gives bf16 1,979 TFLOPS
# (SXM), 1,513 (PCIe) and 1,671 (NVL) *with sparsity*, i.e. 989, 756 and 835 dense; the H200 datasheet 1,979
# (SXM) and 1,671 (NVL) with sparsity; the A100 datasheet 312 dense. SXM parts report e.g. "NVIDIA H100 80GB
# HBM3" and "NVIDIA H200", so the plain "H100"/"H200" keys come after the PCIe/NVL ones.
BF16_PEAK = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


def build(config: str, overrides: list[str]) -> tuple[DiffusionModule, FieldDataModule]:
    cli = RezdiffCLI(
        DiffusionModule,
        FieldDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", config, *overrides],
        save_config_callback=None,
    )
    return cli.model, cli.datamodule


def peak_bf16(device: torch.device) -> float | None:
    """The dense bf16 peak of a CUDA device from :data:`BF16_PEAK` (None: a CPU or an unlisted GPU)."""
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def peak_for_name(name: str) -> float | None:
    """The first :data:`BF16_PEAK` entry whose key ``name`` contains (the table's order: PCIe/NVL first)."""
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def measure(
    model: DiffusionModule, batch: Any, *, precision: str, compile_model: bool, steps: int, warmup: int
) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup``; count the FLOPs of one forward+backward."""
    device = model.device
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    network = model.network
    if compile_model:
        model.network = torch.compile(network)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step(index: int) -> None:
        with autocast:
            loss = model.loss(batch, step_generator(0, index, device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if model.ema is not None:
            model.ema.update(network, index)

    timed(step, warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, steps, device, first=warmup)

    with FlopCounterMode(display=False) as counter, autocast:
        model.network = network  # count the eager graph: the compiled one computes the same FLOPs
        model.loss(batch, step_generator(0, -1, device=device)).backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    result: dict[str, Any] = {
        "precision": precision,
        "compile": compile_model,
        "seconds_per_step": seconds,
        "images_per_second": batch.batch_size / seconds,
        "train_flops_per_step": flops,
        "achieved_tflops": flops / seconds / 1e12,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        peak = peak_bf16(device)
        if peak:
            result["mfu_vs_bf16_peak"] = flops / seconds / peak
    else:  # process-wide high-water mark of resident memory (Linux reports KiB)
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument(
        "--override", nargs="*", default=[], help="dotted CLI overrides, e.g. --data.init_args.batch_size=8"
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=None,
        choices=["32", "bf16-mixed"],
        help="default: 32 on a CPU; 32 and bf16-mixed on a GPU",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile for each precision"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    add_device_options(parser)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    options = parser.parse_args(args)

    device = select_device(options)
    precisions = options.precision or (["32", "bf16-mixed"] if device.type == "cuda" else ["32"])
    settings = [(p, False) for p in precisions] + ([(p, True) for p in precisions] if options.compile else [])
    rows = []
    for precision, compile_model in settings:
        torch.manual_seed(0)
        model, data = build(options.config, options.override)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        model = model.to(device).train()
        batch = lightning.fabric.utilities.apply_func.move_data_to_device(batch, device)
        rows.append(
            measure(
                model,
                batch,
                precision=precision,
                compile_model=compile_model,
                steps=options.steps,
                warmup=options.warmup,
            )
        )
        print(json.dumps(rows[-1]))
    report = {
        "benchmark": "train_throughput",
        "config": options.config,
        "overrides": options.override,
        "model": type(model).__name__,
        "batch_size": batch.batch_size,
        "image_shape": list(batch.image.shape[1:]),
        "parameters": sum(p.numel() for p in model.network.parameters()),
        "device": device_info(device),
        "rows": rows,
    }
    parts = Path(options.config).with_suffix("").parts
    tag = "_".join(parts[parts.index("configs") + 1 :] if "configs" in parts else parts[-1:])
    report = write_report(report, options.out, f"train_throughput_{tag}_{device.type}.json")
    return report


if __name__ == "__main__":
    main()
