"""∞-Diff training cost vs subsampling rate: time and peak memory of a training step (paper Tables 4, 5).

    python benchmarks/infty_diff_subsampling.py --device cuda        # the paper's network, batch 16, 10 GB
    # the committed CPU rows (narrow network, one thread), 128² then 256² data:
    python benchmarks/infty_diff_subsampling.py --resolutions 128 --inner 32 64 --batch 4 \
        --steps 2 --warmup 0 --threads 1
    python benchmarks/infty_diff_subsampling.py --resolutions 256 --inner 64 128 --batch 2 \
        --steps 2 --warmup 0 --threads 1

One training step is ``InftyDiff.loss`` + backward + Adam step + EMA update on a batch that
``RandomPixels(resolution, 1 / rate)`` draws from ``Synthetic`` images (one batch per measurement,
reused: the figure is the model's step, not the data pipeline). Rate 1 is the full grid, measured in the
same run with the same weights; every ratio is relative to it. For each data resolution and inner grid:

* fixed batch (Table 5): seconds per step and peak memory per rate at ``--batch``; memory reduction =
  peak(1×) / peak(r×), speed-up = time(1×) / time(r×);
* fixed memory (Table 4): the largest batch whose peak memory fits the budget (``--memory-budget`` GB,
  else the rate-1 peak at ``--batch``), searched on measured peaks (an affine first guess, steps of
  1, 2, 4, ... to a bracket, then bisection), and its throughput; speed-up = images/s(r×) / images/s(1×).
  A rate-1 run that cannot fit gives ∞ (the paper's 512² column).

Peak memory is everything alive at the peak of a step (weights, EMA, optimiser state, batch, activations,
gradients): on CUDA ``torch.cuda.max_memory_allocated``; on a CPU, which has no allocator counter, the
bytes of those tensors plus the peak of the live tensor storages the step creates (``common.PeakMemory``).
The default network is the paper's (App. A) on CUDA and a narrower one on a CPU; the JSON records the exact
arguments, the sparse backend each rate ran with and the paper's figures. Time is wall-clock on CUDA and
the process's CPU time on a CPU (``--clock``): on a machine shared with other jobs it measures the work,
not the waits; with one thread (``--threads 1``) the two agree on an idle machine (both are recorded).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PeakMemory, add_device_options, device_info, select_device, sync, timed, write_report  # noqa: E402

from rezdiff.data import FieldBatch, RandomPixels, Synthetic  # noqa: E402
from rezdiff.models import InftyDiff  # noqa: E402
from rezdiff.models.base import step_generator  # noqa: E402
from rezdiff.models.infty_diff.sparse import choose_backend  # noqa: E402

# The paper's figures (Appendix C; one A100 80GB, mixed precision). Keys: "<data>/<inner grid>", then rate.
# Table 4: training speed-up at a fixed 10 GB budget ("∞": the full grid does not fit); Table 5: memory
# reduction at a fixed batch of 16. Both relative to the full grid (1×).
PAPER: dict[str, Any] = {
    "source": "∞-Diff (Bond-Taylor & Willcocks, ICLR 2024), Appendix C, Tables 4 and 5",
    "hardware": "one NVIDIA A100 80GB, automatic mixed precision (Appendix A)",
    "table4": "training speed-up at a fixed memory budget of 10 GB, vs the full grid",
    "table4_budget_gb": 10,
    "table4_speedup_fixed_memory": {
        "128/32": {"2": 1.00, "4": 1.64, "8": 2.65, "16": 2.89},
        "128/64": {"2": 1.00, "4": 1.53, "8": 2.17, "16": 2.49},
        "256/64": {"2": 1.00, "4": 1.97, "8": 3.51, "16": 4.57},
        "256/128": {"2": 1.00, "4": 2.08, "8": 3.18, "16": 3.83},
        "512/128": {"2": 1.00, "4": 3.61, "8": 7.98, "16": 11.78},
        "512/256": {"2": "∞", "4": "∞", "8": "∞", "16": "∞"},
    },
    "table5": "memory reduction during training at a fixed batch size of 16, vs the full grid",
    "table5_batch": 16,
    "table5_memory_reduction_fixed_batch": {
        "128/32": {"2": 1.56, "4": 2.44, "8": 3.27, "16": 3.90},
        "128/64": {"2": 1.44, "4": 2.02, "8": 2.46, "16": 2.75},
        "256/64": {"2": 1.42, "4": 1.99, "8": 2.44, "16": 2.73},
        "256/128": {"2": 1.52, "4": 1.66, "8": 1.88, "16": 2.01},
        "512/128": {"2": 1.43, "4": 2.00, "8": 2.44, "16": 2.73},
        "512/256": {"2": 1.32, "4": 1.67, "8": 1.90, "16": 2.03},
    },
    "table3_fid_clip": {"1": 3.15, "2": 4.12, "4": 4.75, "8": 6.48},
    "table3_speedup": {"1": 1.0, "2": 1.0, "4": 1.3, "8": 1.6},
    "table3": "FFHQ 128 training speed-up beside FID_CLIP; inner grid, batch and mode not stated",
    "text_256_4x_speedup": 1.4,
    "network": "App. A: 3 sparse blocks (depthwise 7x7, 64 channels, MLP); inner ADM U-Net with 128 channels "
    "doubled per level up to 8x, attention at 16² and 8² (stated for the 128² inner grid only)",
}

# Network widths: the paper's (App. A) and a narrower one that a CPU can run at 256² in minutes.
NETWORKS: dict[str, dict[str, Any]] = {
    "paper": dict(
        sparse_width=64, sparse_blocks=3, kernel_size=7, inner_channels=128, inner_layers=2, max_multiplier=8,
        attention=[16, 8], head_dim=64, norm_groups=32, dropout=0.1,
    ),
    "cpu": dict(
        sparse_width=32, sparse_blocks=3, kernel_size=7, inner_channels=32, inner_layers=1, max_multiplier=8,
        attention=[16, 8], head_dim=32, norm_groups=8, dropout=0.1,
    ),
}  # fmt: skip
# The paper's (data, inner grid) pairs, used when --inner is not given.
PAPER_INNER = {128: [32, 64], 256: [64, 128], 512: [128, 256]}


def multipliers(inner: int, max_multiplier: int) -> tuple[int, ...]:
    """Channel multipliers of the inner U-Net: one level per halving down to 8² (or the grid itself if
    smaller), doubling per level up to ``max_multiplier`` — the paper's rule, which gives (1, 2, 4, 8, 8)
    on its 128² grid."""
    levels = int(math.log2(inner // min(8, inner))) + 1
    return tuple(min(2**level, max_multiplier) for level in range(levels))


def model_arguments(resolution: int, inner: int, net: dict[str, Any], latent_dim: int) -> dict[str, Any]:
    return dict(
        train_resolution=resolution,
        sparse_width=net["sparse_width"],
        sparse_blocks=net["sparse_blocks"],
        kernel_size=net["kernel_size"],
        inner_resolution=inner,
        inner_channels=net["inner_channels"],
        inner_multipliers=multipliers(inner, net["max_multiplier"]),
        inner_layers_per_block=net["inner_layers"],
        inner_attention_resolutions=tuple(net["attention"]),
        attention_head_dim=net["head_dim"],
        norm_num_groups=net["norm_groups"],
        dropout=net["dropout"],
        backend=net["backend"],
        latent_dim=latent_dim or None,
    )


def make_batch(resolution: int, rate: int, batch: int, device: torch.device) -> FieldBatch:
    """``batch`` examples of ``RandomPixels(resolution, 1 / rate)`` (8 distinct synthetic images)."""
    dataset = Synthetic(num_images=8, resolution=resolution)
    view = RandomPixels(resolution, 1 / rate)
    generator = torch.Generator().manual_seed(rate * 1000 + batch)
    items = FieldBatch.collate([view(dataset, i % len(dataset), generator) for i in range(batch)])
    fields = {f.name: getattr(items, f.name) for f in dataclasses.fields(items)}
    return FieldBatch(**{name: None if v is None else v.to(device) for name, v in fields.items()})


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


class Trainer:
    """One model and its optimiser; measures training steps at any (rate, batch), caching the results."""

    def __init__(self, model: InftyDiff, options: argparse.Namespace, device: torch.device) -> None:
        self.model = model.to(device).train()
        optimizer = model.configure_optimizers()
        self.optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        self.options, self.device = options, device
        self.resolution = model.train_resolution
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.precision == "bf16")
        self.steps_taken = 0
        self.times: dict[tuple[int, int], tuple[float, float] | None] = {}
        self.peaks: dict[tuple[int, int], tuple[int | None, int]] = {}

    def step_fn(self, batch: FieldBatch) -> Callable[[int], None]:
        def step(_: int) -> None:
            index = self.steps_taken
            self.steps_taken += 1
            with self.autocast:
                loss = self.model.loss(batch, step_generator(0, index, device=self.device))
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.model.ema.update(self.model.network, index)

        return step

    def seconds_per_step(self, rate: int, batch: int) -> tuple[float, float] | None:
        """Median (wall, process CPU) seconds of ``--steps`` single steps (None if out of memory). The memory
        probe at the same shape runs first and serves as the first warm-up step; ``--warmup`` adds more."""
        if (rate, batch) not in self.times:
            self.times[rate, batch] = None
            if self.peak_memory(rate, batch)[0] is not None:
                try:
                    step = self.step_fn(make_batch(self.resolution, rate, batch, self.device))
                    timed(step, self.options.warmup, self.device)
                    walls, cpus = [], []
                    for _ in range(self.options.steps):
                        start = time.process_time()
                        walls.append(timed(step, 1, self.device))
                        cpus.append(time.process_time() - start)
                    self.times[rate, batch] = (statistics.median(walls), statistics.median(cpus))
                except torch.OutOfMemoryError:
                    self.release()
        return self.times[rate, batch]

    def seconds(self, rate: int, batch: int) -> float | None:
        """Seconds per step on ``--clock``: wall (CUDA-synchronised) or the process's CPU time."""
        times = self.seconds_per_step(rate, batch)
        return None if times is None else times[self.options.clock == "cpu"]

    def peak_memory(self, rate: int, batch: int) -> tuple[int | None, int]:
        """``(peak bytes, bytes alive before the step)`` of one step; peak None if it runs out of memory."""
        if (rate, batch) not in self.peaks:
            data = make_batch(self.resolution, rate, batch, self.device)
            step = self.step_fn(data)
            try:
                if self.steps_taken == 0:
                    step(0)  # the optimiser's state exists from the first step on
                if self.device.type == "cuda":
                    sync(self.device)
                    torch.cuda.reset_peak_memory_stats(self.device)
                    static = torch.cuda.memory_allocated(self.device)
                    step(0)
                    sync(self.device)
                    peak: int | None = torch.cuda.max_memory_allocated(self.device)
                else:
                    state = [
                        v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)
                    ]
                    fields = [getattr(data, f.name) for f in dataclasses.fields(data)]
                    static = storage_bytes(
                        [
                            *self.model.parameters(),
                            *self.model.buffers(),
                            *state,
                            *(t for t in fields if t is not None),
                        ]
                    )
                    with PeakMemory() as tracker:
                        step(0)
                    peak = static + tracker.peak
            except torch.OutOfMemoryError:
                peak, static = None, 0
                self.release()
            self.peaks[rate, batch] = (peak, static)
        return self.peaks[rate, batch]

    def release(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def fits(self, rate: int, batch: int, budget: int) -> bool:
        peak, _ = self.peak_memory(rate, batch)
        return peak is not None and peak <= budget

    def largest_batch(self, rate: int, budget: int, start: int) -> int:
        """Largest batch whose measured peak fits ``budget`` (0 if none).

        A first guess assumes memory affine in the batch (intercept: what is alive before the step, slope
        from the peak at ``start``); steps of 1, 2, 4, ... away from it find a batch that fits and one
        that does not, and bisection closes the gap. Usually two probes when memory is affine."""
        peak, static = self.peak_memory(rate, start)
        guess = start
        if peak is not None and peak > static:
            guess = max(1, math.floor((budget - static) * start / (peak - static)))
        guess = min(guess, self.options.max_batch)
        low, high, step = 0, self.options.max_batch + 1, 1
        if self.fits(rate, guess, budget):
            low = guess
            while low < self.options.max_batch:
                candidate = min(low + step, self.options.max_batch)
                if not self.fits(rate, candidate, budget):
                    high = candidate
                    break
                low, step = candidate, 2 * step
        else:
            high = guess
            while high > 1:
                candidate = max(high - step, 1)
                if self.fits(rate, candidate, budget):
                    low = candidate
                    break
                high, step = candidate, 2 * step
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self.fits(rate, middle, budget) else (low, middle)
        return low


def measure(resolution: int, inner: int, options: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Fixed-batch and fixed-memory rows of every rate for one (data resolution, inner grid)."""
    torch.manual_seed(0)
    arguments = model_arguments(resolution, inner, options.net, options.latent_dim)
    trainer = Trainer(InftyDiff(**arguments), options, device)
    key, batch = f"{resolution}/{inner}", options.batch
    rows = []
    for rate in options.rates:
        points = math.floor(resolution * resolution / rate)
        peak, static = trainer.peak_memory(rate, batch)
        seconds = trainer.seconds(rate, batch)
        wall = (trainer.seconds_per_step(rate, batch) or (None, None))[0]
        table4, table5 = (
            PAPER[name].get(key, {}).get(str(rate))
            for name in ("table4_speedup_fixed_memory", "table5_memory_reduction_fixed_batch")
        )
        backend = arguments["backend"]
        if backend == "auto":
            backend = choose_backend(points / resolution**2, device)
        rows.append(
            dict(
                resolution=resolution, inner=inner, rate=rate, fraction=1 / rate, points_per_example=points,
                sparse_backend=backend, batch=batch, s_per_step=seconds, wall_s_per_step=wall,
                images_per_s=batch / seconds if seconds else None,
                peak_bytes=peak, static_bytes=static,
                paper_memory_reduction=table5, paper_speedup_fixed_memory=table4,
            )
        )  # fmt: skip
        shown = "out of memory" if seconds is None else f"{seconds:.3f} s/step, peak {mb(peak)} MB"
        print(f"  {key} {rate:>2}x, batch {batch}: {shown}", flush=True)
    base = next((row for row in rows if row["rate"] == 1), None)
    for row in rows:
        timed_both = base and base["s_per_step"] and row["s_per_step"]
        row["speedup"] = base["s_per_step"] / row["s_per_step"] if timed_both else None
        fits = base and base["peak_bytes"] and row["peak_bytes"]
        row["memory_reduction"] = base["peak_bytes"] / row["peak_bytes"] if fits else None
    budget = round(options.memory_budget * 2**30) if options.memory_budget else (base or {}).get("peak_bytes")
    if options.fixed_memory and budget:
        for row in rows:
            rate = row["rate"]
            largest = trainer.largest_batch(rate, budget, batch)
            row["fixed_memory_budget_bytes"] = budget
            row["fixed_memory_batch"] = largest
            row["fixed_memory_peak_bytes"] = trainer.peak_memory(rate, largest)[0] if largest else None
            seconds = trainer.seconds(rate, largest) if largest else None
            row["fixed_memory_s_per_step"] = seconds
            row["fixed_memory_wall_s_per_step"] = (
                (trainer.seconds_per_step(rate, largest) or (None,))[0] if largest else None
            )
            row["fixed_memory_images_per_s"] = largest / seconds if seconds else 0.0
            throughput = row["fixed_memory_images_per_s"]
            print(f"  {key} {rate:>2}x, fixed memory: batch {largest}, {throughput:.2f} images/s", flush=True)
        reference = base["fixed_memory_images_per_s"] if base else None
        for row in rows:
            throughput = row["fixed_memory_images_per_s"]
            if reference is None or not throughput:  # no baseline, or this rate does not fit either
                row["fixed_memory_speedup"] = None
            else:  # the full grid does not fit the budget at all: the paper's ∞
                row["fixed_memory_speedup"] = throughput / reference if reference else "∞"
    return {
        "rows": rows,
        "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items()},
        "parameters": sum(p.numel() for p in trainer.model.network.parameters()),
        "budget_bytes": budget,
        "probes": sorted([rate, size, peak] for (rate, size), (peak, _) in trainer.peaks.items()),
    }


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def ratio(value: Any) -> str:
    return "-" if value is None else (value if isinstance(value, str) else f"{value:.2f}x")


def print_table(resolution: int, rows: list[dict[str, Any]]) -> None:
    """Ours beside the paper's: T5 memory reduction (fixed batch), T3 speed-up (128² only), T4 (fixed
    memory)."""
    columns = [
        ("data/inner", 10), ("rate", 4), ("batch", 5), ("s/step", 8), ("peak MB", 9), ("mem", 7),
        ("paper T5", 8), ("speed", 7), ("T3", 5), ("| FM batch", 10), ("img/s", 8), ("speed", 7),
        ("paper T4", 8),
    ]  # fmt: skip
    print(f"\n∞-Diff subsampling, {resolution}² data (ratios vs rate 1; FM: fixed memory)")
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    for row in rows:
        paper_t3 = PAPER["table3_speedup"].get(str(row["rate"])) if resolution == 128 else None
        cells = [
            f"{row['resolution']}/{row['inner']}", f"{row['rate']}x", row["batch"],
            f"{row['s_per_step'] or math.nan:.3f}",
            mb(row["peak_bytes"]), ratio(row["memory_reduction"]), ratio(row["paper_memory_reduction"]),
            ratio(row["speedup"]), ratio(paper_t3), f"| {row.get('fixed_memory_batch', '-')}",
            f"{row.get('fixed_memory_images_per_s', math.nan):.2f}", ratio(row.get("fixed_memory_speedup")),
            ratio(row["paper_speedup_fixed_memory"]),
        ]  # fmt: skip
        print(" ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True)))


def main(args: list[str] | None = None) -> dict[int, dict[str, Any]]:
    """Run the benchmark; write one JSON per data resolution and return them by resolution."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_options(parser, clock=False)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument(
        "--inner", type=int, nargs="+", default=None, help="inner grids (default: the paper's)"
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=None, help="fixed batch (default: 16 on CUDA, 2 on CPU)")
    parser.add_argument(
        "--memory-budget", type=float, default=None, help="GB (default: 10 on CUDA, else rate 1's)"
    )
    parser.add_argument("--no-fixed-memory", dest="fixed_memory", action="store_false")
    parser.add_argument("--max-batch", type=int, default=1024, help="upper end of the fixed-memory search")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the median is kept)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="warm-up steps after the memory probe (itself one)"
    )
    parser.add_argument(
        "--clock", choices=["auto", "wall", "cpu"], default="auto", help="auto: wall on CUDA, else CPU time"
    )
    parser.add_argument(
        "--precision", choices=["auto", "32", "bf16"], default="auto", help="auto: bf16 on CUDA"
    )
    parser.add_argument(
        "--network", choices=["auto", "paper", "cpu"], default="auto", help="auto: paper on CUDA"
    )
    for name, value in NETWORKS["paper"].items():
        kind = type(value[0]) if isinstance(value, list) else type(value)
        nargs = "+" if isinstance(value, list) else None
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, nargs=nargs, default=None, help="overrides --network")
    parser.add_argument("--backend", choices=["auto", "gather", "dense", "triton"], default="auto")
    parser.add_argument("--latent-dim", type=int, default=0, help="> 0: the diffusion autoencoder")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    options = parser.parse_args(args)
    device = select_device(options)
    cuda = device.type == "cuda"
    options.network = ("paper" if cuda else "cpu") if options.network == "auto" else options.network
    options.precision = ("bf16" if cuda else "32") if options.precision == "auto" else options.precision
    options.clock = ("wall" if cuda else "cpu") if options.clock == "auto" else options.clock
    options.batch = options.batch or (PAPER["table5_batch"] if cuda else 2)
    if options.memory_budget is None and cuda:
        options.memory_budget = PAPER["table4_budget_gb"]
    net = dict(NETWORKS[options.network], backend=options.backend)
    net.update({k: getattr(options, k) for k in NETWORKS["paper"] if getattr(options, k) is not None})
    options.net = net
    memory_method = (
        "torch.cuda.max_memory_allocated over one step (reset before it)"
        if cuda
        else "live tensor bytes: bytes of weights, EMA, optimiser state and batch, plus the peak of the live "
        "tensor storages created during one step (benchmarks/common.py PeakMemory, a TorchDispatchMode)"
    )
    clock = (
        "process CPU time: stable on a shared machine, equal to wall time with one idle thread"
        if options.clock == "cpu"
        else "wall time, CUDA-synchronised"
    )
    print(
        f"device {device}, clock {options.clock}, threads {torch.get_num_threads()}, "
        f"precision {options.precision}, network {net}"
    )
    reports = {}
    for resolution in options.resolutions:
        inners = [i for i in (options.inner or PAPER_INNER.get(resolution, [])) if i <= resolution]
        results = {inner: measure(resolution, inner, options, device) for inner in inners}
        rows = [row for result in results.values() for row in result["rows"]]
        print_table(resolution, rows)
        report = {
            "benchmark": "infty_diff_subsampling",
            "settings": {
                k: v for k, v in vars(options).items() if k not in ("out", "net", *NETWORKS["paper"])
            },
            "network": net,
            "model_arguments": {str(inner): result["arguments"] for inner, result in results.items()},
            "parameters": {str(inner): result["parameters"] for inner, result in results.items()},
            "memory_budget_bytes": {str(inner): result["budget_bytes"] for inner, result in results.items()},
            "memory_probes": {str(inner): result["probes"] for inner, result in results.items()},
            "memory_method": memory_method,
            "statistic": f"median of --steps single training steps ({clock}) after the memory probe and "
            "--warmup steps; one step = loss + backward + Adam step + EMA update (every 10th step); "
            "fixed-memory batch: affine guess, steps of 1, 2, 4, ... to a bracket, then bisection",
            "device": device_info(device),
            "paper": PAPER,
            "rows": rows,
        }
        name = f"infty_diff_subsampling_{resolution}_{device.type}.json"
        reports[resolution] = write_report(report, options.out, name)
    return reports


if __name__ == "__main__":
    main()
