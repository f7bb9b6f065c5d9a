"""Multilevel warm start vs fine-only training by wall time to equal fine-level validation loss, and
sampling time vs resolution (the multilevel paper's efficiency claim; the issue's goal is <= 0.6x).

    python benchmarks/multilevel_warmstart.py                       # CPU rows: 32² -> 64², small budget
    python benchmarks/multilevel_warmstart.py --steps 4000 --batch 64 --device cuda   # a GPU row

Both runs start from the same initial weights and see the same images (``Synthetic`` grey shapes rendered
once at the fine size, so the data pipeline is not timed; coarse batches are Fourier-downsampled on the
device inside the timed step, as in training). The prior is the authors' warm-start ``CombinedConv`` as
``configs/multilevel_warmstart.yaml`` writes it (``--prior matern``: the model's default Matérn).
Fine-only trains ``--steps`` steps at the fine level; its
final fine-level validation loss is the target. Coarse-to-fine trains ``--coarse-fraction`` of the steps
at the coarse level, then at the fine level until its fine-level validation loss reaches the target (or
``--steps`` more fine steps). Validation: the same images, timesteps and noise for every evaluation
(``--val-repeats`` draws each), not timed. The JSON records both curves (training wall seconds, training
CPU seconds of the process, loss); on a shared CPU the CPU-time ratio is the steadier figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.data import FieldBatch, Synthetic  # noqa: E402
from rezdiff.models import MultilevelSDE  # noqa: E402
from rezdiff.models.base import step_generator  # noqa: E402
from rezdiff.models.multilevel.priors import AuthorsFNOPrior, CombinedCovariance, InverseLaplacian  # noqa: E402


def parse(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coarse", type=int, default=32)
    parser.add_argument("--fine", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300, help="fine-only training steps")
    parser.add_argument("--coarse-fraction", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--val-repeats", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--modes", type=int, default=14)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--prior",
        choices=["combined", "matern"],
        default="combined",
        help="combined: the authors' warm-start CombinedConv as in configs/multilevel_warmstart.yaml; "
        "matern: the model's default Matern(8)",
    )
    parser.add_argument("--sample-resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    add_device_options(parser)
    return parser.parse_args(args)


def warmstart_prior() -> CombinedCovariance:
    """The authors' warm-start prior as ``configs/multilevel_warmstart.yaml`` writes it (see the README)."""
    return CombinedCovariance(
        (
            InverseLaplacian(power=0.55, scale=20 / 64, zero_mode="drop", laplacian="spectral"),
            AuthorsFNOPrior(10, 10, seed=0, scale=1 / 64),
        )
    )


def build(options: argparse.Namespace, device: torch.device) -> MultilevelSDE:
    torch.manual_seed(0)
    model = MultilevelSDE(
        image_size=options.fine,
        channels=1,
        prior=warmstart_prior() if options.prior == "combined" else None,
        modes=options.modes,
        width=options.width,
        optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": options.lr}},
        ema={"decay": 0.0},
    )
    return model.to(device).train()


def val_loss(model: MultilevelSDE, images: torch.Tensor, options: argparse.Namespace) -> float:
    device = images.device
    with torch.no_grad():
        losses = [
            model.loss(FieldBatch(image=images), step_generator(1, repeat, device=device)).item()
            for repeat in range(options.val_repeats)
        ]
    return sum(losses) / len(losses)


def run(
    model: MultilevelSDE,
    train: torch.Tensor,
    val: torch.Tensor,
    schedule: list[tuple[int, int]],
    options: argparse.Namespace,
    device: torch.device,
    target: float | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train by ``schedule`` [(first step, resolution)]; return the curve of (training seconds, val loss)."""
    optimizer = model.configure_optimizers()
    seconds, cpu_seconds, curve, step = 0.0, 0.0, [], 0
    limit = max_steps if max_steps is not None else options.steps

    def resolution_at(index: int) -> int:
        return [r for start, r in schedule if start <= index][-1]

    def train_step(index: int) -> None:
        model.train_resolution = resolution_at(index)
        order = torch.randint(0, len(train), (options.batch,), generator=torch.Generator().manual_seed(index))
        loss = model.loss(FieldBatch(image=train[order.to(device)]), step_generator(0, index, device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    while step < limit:
        chunk = min(options.eval_every, limit - step)
        cpu_start = time.process_time()
        seconds += timed(train_step, chunk, device, first=step) * chunk
        cpu_seconds += time.process_time() - cpu_start
        step += chunk
        model.train_resolution = None
        loss = val_loss(model, val, options)
        curve.append(
            {
                "step": step,
                "train_seconds": round(seconds, 3),
                "train_cpu_seconds": round(cpu_seconds, 3),
                "resolution": resolution_at(step - 1),
                "val_loss": loss,
            }
        )
        print(f"  step {step:5d} at {curve[-1]['resolution']}²: {seconds:7.1f} s, fine val loss {loss:.4f}")
        if target is not None and resolution_at(step - 1) == options.fine and loss <= target:
            break
    return {"curve": curve}


def first_time_at_or_below(
    curve: list[dict[str, Any]], target: float, fine: int, key: str = "train_seconds"
) -> float | None:
    hits = [row[key] for row in curve if row["resolution"] == fine and row["val_loss"] <= target]
    return hits[0] if hits else None


def main(args: list[str] | None = None) -> dict[str, Any]:
    options = parse(args)
    device = select_device(options)
    dataset = Synthetic(
        num_images=options.images + options.val_images, resolution=options.fine, channels=1, seed=0
    )
    images = torch.stack([dataset[i] for i in range(len(dataset))]).to(device)
    train, val = images[: options.images], images[options.images :]

    print(f"fine-only at {options.fine}²")
    fine_only = run(build(options, device), train, val, [(0, options.fine)], options, device)
    target = fine_only["curve"][-1]["val_loss"]
    coarse_steps = int(round(options.coarse_fraction * options.steps))
    print(
        f"coarse-to-fine: {coarse_steps} steps at {options.coarse}², then {options.fine}² "
        f"to loss {target:.4f}"
    )
    warm = run(
        build(options, device),
        train,
        val,
        [(0, options.coarse), (coarse_steps, options.fine)],
        options,
        device,
        target=target,
        max_steps=coarse_steps + options.steps,
    )
    fine_time = first_time_at_or_below(fine_only["curve"], target, options.fine)
    warm_time = first_time_at_or_below(warm["curve"], target, options.fine)
    fine_cpu = first_time_at_or_below(fine_only["curve"], target, options.fine, "train_cpu_seconds")
    warm_cpu = first_time_at_or_below(warm["curve"], target, options.fine, "train_cpu_seconds")

    model = build(options, device).eval()
    sampling = []
    for resolution in options.sample_resolutions:

        def draw(index: int, resolution: int = resolution) -> None:
            model.sample(
                options.sample_batch,
                resolution,
                steps=options.sample_steps,
                generator=torch.Generator().manual_seed(index),
            )

        draw(0)  # warm-up
        seconds = timed(draw, 2, device, first=1)
        sampling.append(
            {
                "resolution": resolution,
                "seconds_per_sample": seconds / options.sample_batch,
                "seconds_per_step_per_sample": seconds / options.sample_batch / options.sample_steps,
            }
        )
        print(
            f"sampling at {resolution}²: {seconds / options.sample_batch:.3f} s/sample "
            f"({options.sample_steps} steps)"
        )

    ratio = None if fine_time is None or warm_time is None else warm_time / fine_time
    print(
        f"time to fine val loss {target:.4f}: fine-only {fine_time} s, coarse-to-fine {warm_time} s, "
        f"ratio {ratio}"
    )
    report = {
        "benchmark": "multilevel_warmstart",
        "device": device_info(device),
        "settings": {k: v for k, v in vars(options).items() if k != "out"},
        "target_val_loss": target,
        "fine_only_seconds": fine_time,
        "coarse_to_fine_seconds": warm_time,
        "time_ratio": ratio,
        "fine_only_cpu_seconds": fine_cpu,
        "coarse_to_fine_cpu_seconds": warm_cpu,
        "cpu_time_ratio": None if fine_cpu is None or warm_cpu is None else warm_cpu / fine_cpu,
        "goal_ratio": 0.6,
        "fine_only": fine_only,
        "coarse_to_fine": warm,
        "sampling": sampling,
    }
    # the runs with the model's default Matern prior keep their old file name
    suffix = "" if options.prior == "matern" else f"_{options.prior}"
    name = f"multilevel_warmstart_{options.fine}_{device.type}{suffix}.json"
    return write_report(report, options.out, name)


if __name__ == "__main__":
    main()
