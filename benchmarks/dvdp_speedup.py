"""DVDP vs DDPM, identical U-Net: training s/iter and sampling s/sample, K = 0..3 (paper Tables 1, 3).

    python benchmarks/dvdp_speedup.py --threads 1 --table1 --per-batch   # CPU rows: 64x64, small U-Net
    python benchmarks/dvdp_speedup.py --resolution 256 --width 128 128 256 256 512 512 --attention 4 \
        --batch 24 --sample-batch 64 --device cuda --table1 --per-batch  # the paper's 256x256 setting

K = 0 is the DDPM baseline (``rezdiff.DDPM``); K = 1, 2, 3 use the paper's Table 3 turning points
{250}, {250, 500}, {250, 500, 750}; ``--table1`` adds Table 1's {300, 600}; ``--per-batch`` adds DVDP
rows with one stage per batch (``stage_sampling="per_batch"``). Every model is built from the same U-Net
arguments and measured in the same process on one fixed batch of random images (the figure is the
model's step, not the data pipeline): forward + backward + Adam step + EMA for training, and a full
``sample()`` (DDIM, ``--sample-steps`` steps, the same for all) for sampling. With ``--rounds`` > 1 the
models take turns round after round and each figure is the median of its rounds, so a change in the
machine's load hits every model alike.

**Stage mix.** A DVDP training step costs what its stages cost, so the timed steps must visit the stages
in the proportions training does (stage k: its share (T_{k+1} - T_k) / T of the timesteps). The steps'
random keys are chosen (stratified) so that they do exactly: each timed step draws the expected number of
examples per stage (``per_example``) or the stages come up in exactly the expected proportions over the
timed steps (``per_batch``; ``--steps`` should make those counts whole, e.g. a multiple of 20). The
stages the network actually saw are counted during the timed steps and recorded; a mismatch is an error.

**Ideal bounds.** Beside every measured speed-up the JSON records the ideal one if cost were
proportional to the pixels the network processes (``ideal_*_speedup``; DDPM pixels / DVDP pixels, as
counted during the timed run) and to the network's forward FLOPs (``ideal_*_speedup_flops``,
``torch.utils.flop_counter``; per-call costs such as the time embedding and attention's quadratic cost
make it differ a little from the pixel ratio). The pyramid operations and the framework's per-call
overheads are in neither, so a measured ratio above them calls for an explanation. The JSON in
``benchmarks/results/`` also records device, versions, settings and the paper's figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.core.gaussian import sample_timesteps  # noqa: E402
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
        unet=dict(
            block_out_channels=tuple(options.width),
            layers_per_block=options.layers,
            attention_levels=tuple(options.attention),
            attention_head_dim=options.head_dim,
            norm_num_groups=min(32, min(options.width)),
            dropout=0.0,
        ),
        ema={"decay": 0.999},
    )
    if turning_points is None:
        return DDPM(**unet)
    return DVDP(**unet, turning_points=turning_points, stage_sampling=stage_sampling)


def stage_mix(model: DiffusionModule) -> list[Fraction]:
    """The fraction of training examples in each stage: (T_{k+1} - T_k) / T (DDPM: one stage)."""
    if not isinstance(model, DVDP):
        return [Fraction(1)]
    schedule = model.schedule
    return [
        Fraction(stop - start, schedule.num_steps)
        for start, stop in (schedule.stage_bounds(k) for k in range(schedule.levels + 1))
    ]


def allocate(mix: list[Fraction], total: int) -> list[int]:
    """``total`` split by ``mix``: exact where ``mix * total`` is whole, else by largest remainder."""
    shares = [share * total for share in mix]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(mix)), key=lambda k: shares[k] - counts[k], reverse=True)
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def drawn_stages(model: DiffusionModule, batch_size: int, key: int, device: torch.device) -> list[int]:
    """Examples per stage that ``model.loss`` puts in the step keyed ``step_generator(0, key)``.

    It replays the loss's first draw (``t`` uniform per example; ``per_batch`` takes the stage of the
    first ``t`` for the whole batch); :func:`measure` checks the replay against what the network saw.
    """
    if not isinstance(model, DVDP):
        return [batch_size]
    mix = stage_mix(model)
    generator = step_generator(0, key, device=device)
    t = sample_timesteps(batch_size, model.num_train_steps, generator=generator)
    stages = model.schedule.stage_of(t[:1] if model.stage_sampling == "per_batch" else t).cpu()
    counts = torch.bincount(stages, minlength=len(mix)) * (
        batch_size if model.stage_sampling == "per_batch" else 1
    )
    return counts.tolist()


def stratified_keys(
    model: DiffusionModule, batch_size: int, steps: int, device: torch.device, first: int = 0
) -> list[int]:
    """Keys for ``steps`` training steps whose stages follow the expected mix exactly (stratified draw).

    ``per_example``: step ``i`` draws ``allocate(mix, B (i + 1)) - allocate(mix, B i)`` examples per stage
    (every step the same mix when ``B * mix`` is whole). ``per_batch``: the same with one unit per step, so
    the stages come up in order, interleaved, ``allocate(mix, steps)`` times in all. Keys are searched in
    increasing order from ``first`` (each is the first unused key that draws its step's target).
    """
    mix = stage_mix(model)
    unit = batch_size if isinstance(model, DVDP) and model.stage_sampling == "per_batch" else 1
    per_step = batch_size // unit
    keys, key = [], first
    for i in range(steps):
        target = [
            unit * (a - b)
            for a, b in zip(allocate(mix, per_step * (i + 1)), allocate(mix, per_step * i), strict=True)
        ]
        for _ in range(1_000_000):
            found = drawn_stages(model, batch_size, key, device) == target
            key += 1
            if found:
                keys.append(key - 1)
                break
        else:
            raise RuntimeError(f"no key up to {key} draws the stage counts {target}")
    return keys


class CallLog:
    """Counts the inputs a network sees (``(batch, height, width)`` per call) through a forward pre-hook."""

    def __init__(self, network: nn.Module) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.handle = network.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        self.calls.append((x.shape[0], x.shape[-2], x.shape[-1]))

    def pixels(self) -> int:
        return sum(b * h * w for b, h, w in self.calls)

    def flops(self, per_image: dict[tuple[int, int], int]) -> int:
        return sum(b * per_image[(h, w)] for b, h, w in self.calls)

    def examples_per_stage(self, resolution: int, stages: int) -> list[int]:
        counts = [0] * stages
        for b, h, _ in self.calls:
            counts[(resolution // h).bit_length() - 1] += b
        return counts


def forward_flops(
    network: nn.Module, sizes: set[tuple[int, int]], channels: int, device: torch.device
) -> dict:
    """Forward FLOPs of ``network`` on one image of each size (FLOPs are linear in the batch)."""
    flops = {}
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for h, w in sorted(sizes):
            counter = FlopCounterMode(display=False)
            with counter:
                network(
                    torch.zeros(1, channels, h, w, device=device),
                    torch.zeros(1, dtype=torch.long, device=device),
                )
            flops[(h, w)] = counter.get_total_flops()
    network.train(was_training)
    return flops


class Bench:
    """One model on the benchmark's fixed batch: its optimiser, its stratified keys and its call log."""

    def __init__(self, model: DiffusionModule, options: argparse.Namespace, device: torch.device) -> None:
        self.model = model.to(device).train()
        self.options, self.device = options, device
        optimizer = model.configure_optimizers()
        self.optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        images = torch.rand(
            options.batch,
            3,
            options.resolution,
            options.resolution,
            generator=torch.Generator().manual_seed(0),
        )
        self.batch = FieldBatch(image=(2 * images - 1).to(device))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16)
        self.keys = stratified_keys(model, options.batch, options.steps, device, first=options.warmup)
        self.train_times: list[float] = []
        self.sample_times: list[float] = []
        self.train_log = self.sample_log = None

    def train_step(self, key: int) -> None:
        with self.autocast:
            loss = self.model.loss(self.batch, step_generator(0, key, device=self.device))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.ema.update(self.model.network, key)

    def sample(self, seed: int) -> None:
        with self.autocast:
            self.model.sample(
                self.options.sample_batch,
                steps=self.options.sample_steps,
                sampler="ddim",
                generator=torch.Generator().manual_seed(seed),
            )

    def warm_up(self) -> None:
        timed(self.train_step, self.options.warmup, self.device)  # keys 0 .. warmup - 1, never timed
        self.sample(0)

    def run_round(self) -> None:
        """The timed steps (every stratified key once) and ``--sample-repeats`` timed ``sample()`` calls."""
        log = CallLog(self.model.network)
        self.train_times.append(timed(lambda i: self.train_step(self.keys[i]), len(self.keys), self.device))
        log.handle.remove()
        self.train_log = log
        network = self.model.sampling_network(True)
        log = CallLog(network)
        repeats = self.options.sample_repeats
        self.sample_times.append(
            timed(self.sample, repeats, self.device, first=1) / self.options.sample_batch
        )
        log.handle.remove()
        self.sample_log, self.sample_images = log, repeats * self.options.sample_batch

    def result(self) -> dict[str, Any]:
        levels = len(stage_mix(self.model))
        seen = self.train_log.examples_per_stage(self.options.resolution, levels)
        expected = [allocate(stage_mix(self.model), self.options.batch * len(self.keys))]
        if isinstance(self.model, DVDP) and self.model.stage_sampling == "per_batch":
            expected = [[self.options.batch * n for n in allocate(stage_mix(self.model), len(self.keys))]]
        if seen != expected[0]:
            raise RuntimeError(
                f"the timed steps put {seen} examples in the stages, the plan {expected[0]}: the benchmark's "
                "replay of the loss's draw (drawn_stages) no longer matches DVDP.loss"
            )
        sizes = {(h, w) for _, h, w in self.train_log.calls + self.sample_log.calls}
        flops = forward_flops(self.model.network, sizes, 3, self.device)
        return {
            "train_s_per_iter": statistics.median(self.train_times),
            "sample_s_per_sample": statistics.median(self.sample_times),
            "train_rounds_s_per_iter": self.train_times,
            "sample_rounds_s_per_sample": self.sample_times,
            "expected_stage_mix": [float(share) for share in stage_mix(self.model)],
            "train_examples_per_stage": seen,
            "train_pixels_per_iter": self.train_log.pixels() / len(self.keys),
            "train_forward_flops_per_iter": self.train_log.flops(flops) / len(self.keys),
            "sample_pixels_per_sample": self.sample_log.pixels() / self.sample_images,
            "sample_forward_flops_per_sample": self.sample_log.flops(flops) / self.sample_images,
            "sample_network_calls": len(self.sample_log.calls) // self.options.sample_repeats,
        }


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
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="models take turns; figures are medians")
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--table1", action="store_true", help="also K = 2 with Table 1's {300, 600}")
    parser.add_argument("--per-batch", action="store_true", help="also DVDP with stage_sampling=per_batch")
    parser.add_argument("--bf16", action="store_true")
    add_device_options(parser)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    options = parser.parse_args(args)
    if options.steps < 1 or options.rounds < 1 or options.sample_repeats < 1:
        raise ValueError("--steps, --rounds and --sample-repeats must be at least 1")
    device = select_device(options)
    settings = [(k, TABLE3.get(k)) for k in options.levels] + ([(2, (300, 600))] if options.table1 else [])
    modes = ["per_example", "per_batch"] if options.per_batch else ["per_example"]
    settings = [(k, tp, mode) for k, tp in settings for mode in (modes if k else modes[:1])]
    benches = []
    for k, turning_points, mode in settings:
        torch.manual_seed(0)
        benches.append(Bench(build(turning_points if k else None, options, mode), options, device))
    for bench in benches:
        bench.warm_up()
    for _ in range(options.rounds):
        for bench in benches:
            bench.run_round()
    rows = []
    for (k, turning_points, mode), bench in zip(settings, benches, strict=True):
        row = {"K": k, "model": "DDPM" if k == 0 else "DVDP", "turning_points": list(turning_points or ())}
        row["stage_sampling"] = mode if k else None
        row.update(bench.result())
        rows.append(row)
    base = next((r for r in rows if r["K"] == 0), None)
    print(
        f"{'K':>2} {'T':<16} {'stages':<11} {'train s/it':>10} {'speed-up':>8} {'ideal':>6} {'paper':>6} "
        f"{'sample s/img':>12} {'speed-up':>8} {'ideal':>6} {'paper':>6}"
    )
    for row in rows:
        if base is not None:
            for what, time, cost in (
                ("train", "train_s_per_iter", "train_pixels_per_iter"),
                ("sample", "sample_s_per_sample", "sample_pixels_per_sample"),
            ):
                flops = cost.replace("pixels", "forward_flops")
                row[f"{what}_speedup"] = base[time] / row[time]
                row[f"ideal_{what}_speedup"] = base[cost] / row[cost]
                row[f"ideal_{what}_speedup_flops"] = base[flops] / row[flops]
        table1 = row["turning_points"] == [300, 600]
        paper_t = 2.2 if table1 else PAPER["table3_train_speedup"].get(str(row["K"]))
        paper_s = 2.4 if table1 else PAPER["table3_sample_speedup"].get(str(row["K"]))
        nan = float("nan")
        print(
            f"{row['K']:>2} {str(row['turning_points']):<16} {str(row['stage_sampling'] or '-'):<11} "
            f"{row['train_s_per_iter']:>10.4f} {row.get('train_speedup', nan):>7.2f}x "
            f"{row.get('ideal_train_speedup', nan):>5.2f}x {paper_t or '-':>6} "
            f"{row['sample_s_per_sample']:>12.4f} {row.get('sample_speedup', nan):>7.2f}x "
            f"{row.get('ideal_sample_speedup', nan):>5.2f}x {paper_s or '-':>6}"
        )
    report = {
        "benchmark": "dvdp_speedup",
        "settings": {key: value for key, value in vars(options).items() if key != "out"},
        "parameters": sum(p.numel() for p in benches[0].model.network.parameters()),
        "device": device_info(device),
        "paper": PAPER,
        "rows": rows,
    }
    return write_report(report, options.out, f"dvdp_speedup_{options.resolution}_{device.type}.json")


if __name__ == "__main__":
    main()
