"""Multilevel warm start vs fine-only training by training time to equal fine-level validation loss, and
sampling time vs resolution (the multilevel paper's efficiency claim; the issue's goal is <= 0.6x).

    # one seed: fine-only, then coarse-to-fine branches at three coarse fractions and two switch rules
    python benchmarks/multilevel_warmstart.py --seed 0 --coarse-fraction 0.25 0.5 0.75 \\
        --switch keep reset --threads 1 --clock cpu --out benchmarks/results/multilevel_warmstart_runs
    # median and spread over the seeds' files
    python benchmarks/multilevel_warmstart.py --summarize benchmarks/results/multilevel_warmstart_runs/*.json

Every run starts from the same initial weights for a seed and sees the same images (``Synthetic`` grey
shapes rendered once at the fine size, so the data pipeline is not timed; coarse batches are
Fourier-downsampled inside the timed step, as in training). The prior is the authors' warm-start
``CombinedConv`` as ``configs/multilevel_warmstart.yaml`` writes it (``--prior matern``: the model's default
Matérn). Fine-only trains ``--steps`` steps at the fine level. Coarse-to-fine trains one coarse trajectory
and branches from it at each ``--coarse-fraction`` x ``--steps`` step: each branch continues at the fine
level with the optimiser handled by each ``--switch`` rule (``keep``: the same AdamW state and learning
rate, as the authors' ``main_warmstart.py`` does; ``reset``: a fresh AdamW), optionally with a linear
learning-rate warm-up over ``--switch-warmup`` fine steps, until ``--confirm`` evaluations in a row are at
or below the target (or ``--steps`` fine steps). Between branch points the coarse trajectory is evaluated
too: its curve is what coarse-only training buys at the fine level.

**Validation** (not timed): the fine-level loss of ``--val-images`` held-out images x ``--val-repeats``
fixed draws of ``t`` and noise, the same for every evaluation and run, so two evaluations differ only by the
weights (common random numbers). **Ratio**: each curve (training CPU seconds of the process with
``--clock cpu``, else wall seconds; loss) is smoothed by a decreasing isotonic fit (pool adjacent
violators: no window, no lag); the target is fine-only's smoothed final loss; a run's time to target is the
first time its smoothed curve is at or below it, interpolated linearly between evaluations; ratio =
coarse-to-fine time / fine-only time. ``ideal_ratio`` = ``1 - f (1 - c)`` is what the branch would score if
every coarse step were worth one fine step (``f`` its coarse fraction, ``c`` the measured cost of a coarse
step over a fine one). ``equivalent_steps`` maps every evaluation of a branch to the fine-only step whose
smoothed loss it matches. ``fine_step_ratio`` counts time in fine steps instead, a coarse step at
``own_step_cost_ratio`` (coarse over fine step cost both measured in the branch's process): the ratio a
branch scores if its process's clock runs at another speed than fine-only's (another process, other load).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
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

SWITCH_RULES = ("keep", "reset")
"""What happens to the optimiser at the coarse-to-fine switch: ``keep`` its AdamW state and learning rate
(the authors' ``main_warmstart.py``: one Adam, constant learning rate, for both phases), or ``reset`` it."""


def parse(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coarse", type=int, default=32)
    parser.add_argument("--fine", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300, help="fine-only training steps")
    parser.add_argument(
        "--coarse-fraction",
        type=float,
        nargs="*",
        default=[0.5],
        help="coarse steps as a fraction of --steps, one branch each (none: fine-only alone)",
    )
    parser.add_argument("--switch", choices=SWITCH_RULES, nargs="+", default=["keep"])
    parser.add_argument(
        "--switch-warmup", type=int, default=0, help="linear learning-rate warm-up fine steps after a switch"
    )
    parser.add_argument("--confirm", type=int, default=2, help="evaluations at/below the target to stop")
    parser.add_argument(
        "--max-ratio", type=float, default=1.5, help="stop a branch past this x fine-only's time to target"
    )
    parser.add_argument("--seed", type=int, default=0, help="initial weights, batch order and training noise")
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
    parser.add_argument(
        "--coarse-only",
        type=int,
        default=0,
        help="only train this many coarse steps, evaluated at the fine level (no fine-only run, no branches)",
    )
    parser.add_argument(
        "--from-log",
        default=None,
        help="the printed log of a stopped run of these settings: write its result",
    )
    parser.add_argument(
        "--fine-only-from",
        default=None,
        help="a result file of this script with the same settings and seed: reuse its fine-only curve",
    )
    parser.add_argument("--sample-resolutions", type=int, nargs="*", default=[32, 64, 128])
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default=None, help="result file name (default from fine size, device, ...)")
    parser.add_argument(
        "--summarize", nargs="+", default=None, help="result files of several seeds: write their summary"
    )
    parser.add_argument("--plot", default=None, help="with --summarize: a PNG of every seed's curves")
    add_device_options(parser)
    options = parser.parse_args(args)
    check(options)
    return options


def check(options: argparse.Namespace) -> None:
    """One-line ValueErrors for settings the schedule cannot run."""
    if options.coarse >= options.fine:
        raise ValueError(f"--coarse {options.coarse} must be smaller than --fine {options.fine}")
    for fraction in options.coarse_fraction:
        if not 0 < fraction < 1:
            raise ValueError(f"--coarse-fraction {fraction} must lie in (0, 1)")
        if round(fraction * options.steps) % options.eval_every:
            raise ValueError(
                f"--coarse-fraction {fraction} x --steps {options.steps} must be a multiple of "
                f"--eval-every {options.eval_every} (the switch falls on an evaluation); change either"
            )
    if options.steps % options.eval_every:
        raise ValueError(f"--steps {options.steps} must be a multiple of --eval-every {options.eval_every}")
    if options.coarse_only % options.eval_every:
        raise ValueError(
            f"--coarse-only {options.coarse_only} must be a multiple of --eval-every {options.eval_every}"
        )
    if options.confirm < 1 or options.switch_warmup < 0:
        raise ValueError("--confirm must be >= 1 and --switch-warmup >= 0")


def warmstart_prior() -> CombinedCovariance:
    """The authors' warm-start prior as ``configs/multilevel_warmstart.yaml`` writes it (see the README)."""
    return CombinedCovariance(
        (
            InverseLaplacian(power=0.55, scale=20 / 64, zero_mode="drop", laplacian="spectral"),
            AuthorsFNOPrior(10, 10, seed=0, scale=1 / 64),
        )
    )


def build(options: argparse.Namespace, device: torch.device) -> MultilevelSDE:
    torch.manual_seed(options.seed)
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
    """Fine-level loss on fixed ``t`` and noise draws (keys independent of the seed: every run, same)."""
    device = images.device
    model.train_resolution = None
    with torch.no_grad():
        losses = [
            model.loss(FieldBatch(image=images), step_generator(1, repeat, device=device)).item()
            for repeat in range(options.val_repeats)
        ]
    return sum(losses) / len(losses)


class Trainer:
    """One training trajectory: model, optimiser, its step count and curve; copyable at a branch point."""

    def __init__(
        self,
        model: MultilevelSDE,
        train: torch.Tensor,
        val: torch.Tensor,
        options: argparse.Namespace,
        device: torch.device,
    ) -> None:
        self.model, self.train, self.val, self.options, self.device = model, train, val, options, device
        self.optimizer = model.configure_optimizers()
        self.step, self.seconds, self.cpu_seconds = 0, 0.0, 0.0
        self.curve: list[dict[str, Any]] = []
        self.warmup_from: int | None = None  # the step a learning-rate warm-up starts at

    def branch(self, switch: str) -> Trainer:
        """A copy that continues from here; ``switch="reset"`` gives it a fresh optimiser."""
        other = copy.copy(self)
        other.model = copy.deepcopy(self.model)
        other.optimizer = other.model.configure_optimizers()
        if switch == "keep":
            other.optimizer.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
        other.curve = list(self.curve)
        if self.options.switch_warmup:
            other.warmup_from = self.step
        return other

    def learning_rate(self, index: int) -> float:
        """``--lr``, ramped linearly over ``--switch-warmup`` steps after a switch."""
        if self.warmup_from is None:
            return self.options.lr
        return self.options.lr * min(1.0, (index - self.warmup_from + 1) / self.options.switch_warmup)

    def train_step(self, index: int, resolution: int) -> None:
        options = self.options
        self.model.train_resolution = resolution
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(index)
        order = torch.randint(
            0, len(self.train), (options.batch,), generator=step_generator(2, options.seed, index)
        )
        loss = self.model.loss(
            FieldBatch(image=self.train[order.to(self.device)]),
            step_generator(0, options.seed, index, device=self.device),
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def advance(self, steps: int, resolution: int) -> dict[str, Any]:
        """Train ``steps`` steps at ``resolution``, then evaluate at the fine level; return the new row."""
        cpu_start = time.process_time()
        self.seconds += timed(lambda i: self.train_step(i, resolution), steps, self.device, first=self.step)
        self.cpu_seconds += time.process_time() - cpu_start
        self.step += steps
        row = {
            "step": self.step,
            "train_seconds": round(self.seconds, 3),
            "train_cpu_seconds": round(self.cpu_seconds, 3),
            "resolution": resolution,
            "val_loss": val_loss(self.model, self.val, self.options),
        }
        self.curve.append(row)
        return row


def timed_total(trainer: Trainer, steps: int, resolution: int) -> None:
    """``advance`` by ``steps`` in ``--eval-every`` chunks, printing each evaluation."""
    for _ in range(steps // trainer.options.eval_every):
        row = trainer.advance(trainer.options.eval_every, resolution)
        print(
            f"  step {row['step']:5d} at {resolution}²: {row['train_cpu_seconds']:7.1f} CPU-s, "
            f"fine val loss {row['val_loss']:.5f}",
            flush=True,
        )


# ---------------------------------------------------------------------------------- curves and ratios


def isotonic_decreasing(values: list[float]) -> list[float]:
    """The least-squares non-increasing fit of ``values`` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for value in values:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            mean, count = blocks.pop()
            last = blocks[-1]
            last[0] = (last[0] * last[1] + mean * count) / (last[1] + count)
            last[1] += count
    return [mean for mean, count in blocks for _ in range(int(count))]


def smoothed(curve: list[dict[str, Any]]) -> list[float]:
    return isotonic_decreasing([row["val_loss"] for row in curve])


def time_to(curve: list[dict[str, Any]], target: float, key: str) -> float | None:
    """First ``key`` time at which the smoothed curve is <= ``target``, linear between evaluations (from
    time 0 at the first evaluation's loss); None if never."""
    losses, times = smoothed(curve), [row[key] for row in curve]
    for index, (loss, when) in enumerate(zip(losses, times, strict=True)):
        if loss <= target:
            if index == 0:
                return when
            before, since = losses[index - 1], times[index - 1]
            return since + (when - since) * (before - target) / (before - loss)
    return None


def equivalent_steps(branch: list[dict[str, Any]], fine_only: list[dict[str, Any]]) -> list[float | None]:
    """For each evaluation of ``branch``, the fine-only step whose smoothed loss equals its smoothed loss
    (linear between evaluations; None past fine-only's end)."""
    steps = [{"step": row["step"], "val_loss": row["val_loss"]} for row in fine_only]
    return [time_to(steps, loss, "step") for loss in smoothed(branch)]


def clock_key(options: argparse.Namespace | dict[str, Any]) -> str:
    clock = options.get("timer", "wall") if isinstance(options, dict) else getattr(options, "timer", "wall")
    return "train_cpu_seconds" if clock == "cpu" else "train_seconds"


def score(branch: dict[str, Any], fine_only: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Target, times, ratio, per-step costs and the ideal ratio of one branch against fine-only."""
    target = smoothed(fine_only)[-1]
    fine_time, warm_time = time_to(fine_only, target, key), time_to(branch["curve"], target, key)
    switch_row = next(row for row in branch["curve"] if row["step"] == branch["coarse_steps"])
    coarse_cost = switch_row[key] / branch["coarse_steps"]
    fine_cost = fine_only[-1][key] / fine_only[-1]["step"]
    fraction = branch["coarse_fraction"]
    own_cost = own_step_cost_ratio(branch, key)
    fine_steps = time_to(fine_only, target, "step")
    in_fine_steps = None
    if own_cost is not None and fine_steps:
        steps = [
            {
                **row,
                "fine_steps": min(row["step"], branch["coarse_steps"]) * own_cost
                + max(0, row["step"] - branch["coarse_steps"]),
            }
            for row in branch["curve"]
        ]
        reached = time_to(steps, target, "fine_steps")
        in_fine_steps = None if reached is None else reached / fine_steps
    return {
        "target_val_loss": target,
        "fine_only_seconds": fine_time,
        "coarse_to_fine_seconds": warm_time,
        "time_ratio": None if fine_time is None or warm_time is None else warm_time / fine_time,
        "coarse_step_seconds": coarse_cost,
        "fine_step_seconds": fine_cost,
        "step_cost_ratio": coarse_cost / fine_cost,
        "ideal_ratio": 1 - fraction * (1 - coarse_cost / fine_cost),
        "equivalent_steps": equivalent_steps(branch["curve"], fine_only),
        "own_step_cost_ratio": own_cost,
        "fine_step_ratio": in_fine_steps,
    }


def own_step_cost_ratio(branch: dict[str, Any], key: str) -> float | None:
    """Coarse over fine step cost within the branch's own process (its coarse phase over its fine phase;
    None before a fine evaluation): unlike ``step_cost_ratio`` it does not mix two processes' clocks."""
    switch = next(row for row in branch["curve"] if row["step"] == branch["coarse_steps"])
    last = branch["curve"][-1]
    if last["step"] == switch["step"]:
        return None
    fine_cost = (last[key] - switch[key]) / (last["step"] - switch["step"])
    return switch[key] / branch["coarse_steps"] / fine_cost


# ---------------------------------------------------------------------------------- runs


def fine_only_curve(options: argparse.Namespace, make: Any) -> list[dict[str, Any]]:
    if options.fine_only_from:
        earlier = json.loads(Path(options.fine_only_from).read_text())
        same = (
            "coarse",
            "fine",
            "steps",
            "seed",
            "batch",
            "images",
            "val_images",
            "val_repeats",
            "eval_every",
        )
        same += ("modes", "width", "lr", "prior", "timer")
        differ = [k for k in same if earlier["settings"].get(k) != getattr(options, k)]
        if differ:
            raise ValueError(
                f"--fine-only-from {options.fine_only_from} was run with other {', '.join(differ)}; "
                "rerun fine-only or pass the same settings"
            )
        print(f"fine-only curve from {options.fine_only_from}")
        return earlier["fine_only"]["curve"]
    print(f"fine-only at {options.fine}², seed {options.seed}")
    trainer = make()
    timed_total(trainer, options.steps, options.fine)
    return trainer.curve


def warm_branches(
    options: argparse.Namespace, make: Any, target: float, give_up: float | None, save: Any
) -> list[dict[str, Any]]:
    """One coarse trajectory, branched at each coarse fraction into each switch rule's fine phase; the
    longest coarse phase first (the cheapest branch to finish). A branch stops once ``--confirm``
    evaluations in a row are at or below ``target``, after ``--steps`` fine steps, or once its training time
    passes ``give_up`` (``--max-ratio`` x fine-only's time to the target)."""
    branches: list[dict[str, Any]] = []
    if not options.coarse_fraction:
        return branches
    coarse, snapshots = make(), []
    for fraction in sorted(options.coarse_fraction):
        coarse_steps = int(round(fraction * options.steps))
        print(f"coarse trajectory at {options.coarse}² to step {coarse_steps}")
        timed_total(coarse, coarse_steps - coarse.step, options.coarse)
        snapshots.append((fraction, coarse_steps, coarse.branch("keep")))
    key = clock_key(options)
    for fraction, coarse_steps, snapshot in reversed(snapshots):
        for switch in options.switch:
            print(f"branch: {coarse_steps} coarse steps, switch {switch}, {options.fine}² to {target:.5f}")
            trainer = snapshot.branch(switch)
            branch = {
                "coarse_fraction": fraction,
                "coarse_steps": coarse_steps,
                "switch": switch,
                "switch_warmup": options.switch_warmup,
                "curve": trainer.curve,
                "finished": False,
            }
            branches.append(branch)
            below = 0
            while trainer.step < coarse_steps + options.steps and below < options.confirm:
                if give_up is not None and trainer.curve[-1][key] > give_up:
                    break
                timed_total(trainer, options.eval_every, options.fine)
                below = below + 1 if trainer.curve[-1]["val_loss"] <= target else 0
                save(branches, coarse.curve)  # after every evaluation: a stopped run keeps its curves
            branch["finished"] = True
            save(branches, coarse.curve)
    return branches


def main(args: list[str] | None = None) -> dict[str, Any]:
    options = parse(args)
    if options.summarize:
        return summarize(options)
    device = select_device(options)
    dataset = Synthetic(
        num_images=options.images + options.val_images, resolution=options.fine, channels=1, seed=0
    )
    images = torch.stack([dataset[i] for i in range(len(dataset))]).to(device)
    train, val = images[: options.images], images[options.images :]
    key = clock_key(options)

    def make() -> Trainer:
        return Trainer(build(options, device), train, val, options, device)

    suffix = "" if options.prior == "matern" else f"_{options.prior}"
    name = (
        options.name or f"multilevel_warmstart_{options.fine}_{device.type}{suffix}_seed{options.seed}.json"
    )
    report: dict[str, Any] = {
        "benchmark": "multilevel_warmstart",
        "device": device_info(device),
        "settings": {k: v for k, v in vars(options).items() if k not in ("out", "summarize", "name")},
        "definition": RATIO_DEFINITION,
        "goal_ratio": 0.6,
    }
    if options.coarse_only:
        return coarse_only(options, make, report, name.replace(".json", "_coarse_only.json"))
    if options.from_log:
        return from_log(options, report, name)
    fine_only = fine_only_curve(options, make)
    target = smoothed(fine_only)[-1]
    report.update(fine_only={"curve": fine_only}, target_val_loss=target)

    def save(branches: list[dict[str, Any]], coarse_curve: list[dict[str, Any]]) -> None:
        scored = [{**branch, **score(branch, fine_only, key)} for branch in branches]
        report.update(branches=scored, coarse_only={"curve": coarse_curve}, complete=False)
        if scored:  # the report table's columns: the first branch (the first fraction and switch rule)
            first = scored[0]
            report.update(
                {k: first[k] for k in ("fine_only_seconds", "coarse_to_fine_seconds", "time_ratio")}
            )
            report["coarse_to_fine"] = {"curve": first["curve"]}
        write_report(report, options.out, name)

    save([], [])
    fine_time = time_to(fine_only, target, key)
    give_up = None if fine_time is None else options.max_ratio * fine_time
    branches = warm_branches(options, make, target, give_up, save)
    for branch in report.get("branches", []):
        print(
            f"fraction {branch['coarse_fraction']}, {branch['switch']}: ratio {branch['time_ratio']} "
            f"(ideal {branch['ideal_ratio']:.3f}, coarse/fine step cost {branch['step_cost_ratio']:.3f})"
        )
    if not branches:
        report.update(fine_only_seconds=time_to(fine_only, target, key), coarse_to_fine_seconds=None)
        report.update(time_ratio=None)
    report["sampling"] = sampling_rows(options, device)
    report["complete"] = True
    return write_report(report, options.out, name)


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The fine-only curve, coarse trajectory and branches printed by a run of this script (CPU seconds to
    0.1 s, losses to 1e-5): the record of a run stopped before it wrote its file."""
    fine_only: list[dict[str, Any]] = []
    coarse: list[dict[str, Any]] = []
    branches: list[dict[str, Any]] = []
    current = fine_only
    for line in Path(path).read_text().splitlines():
        words = line.replace(",", " ").replace(":", " ").split()
        if line.startswith("coarse trajectory"):
            current = coarse
        elif line.startswith("branch: "):
            coarse_steps, switch = int(words[1]), words[5]
            rows = [row for row in coarse if row["step"] <= coarse_steps]
            branch = {"coarse_steps": coarse_steps, "switch": switch, "curve": rows, "finished": False}
            branches.append(branch)
            current = branch["curve"]
        elif line.startswith("  step "):  # "  step   150 at 64²:    63.3 CPU-s, fine val loss 0.02521"
            seconds = float(words[4])
            resolution = int(words[3].rstrip("²"))
            row = {"step": int(words[1]), "train_seconds": seconds, "train_cpu_seconds": seconds}
            current.append({**row, "resolution": resolution, "val_loss": float(words[-1])})
    return fine_only, coarse, branches


def from_log(options: argparse.Namespace, report: dict[str, Any], name: str) -> dict[str, Any]:
    """``--from-log``: score the curves of a run's printed log (its settings passed again on the command
    line) and write its result file, marked ``from_log``."""
    if getattr(options, "timer", "wall") != "cpu":
        raise ValueError("--from-log reads the printed CPU seconds: pass --clock cpu as the run did")
    fine_only, coarse, branches = read_log(options.from_log)
    if not fine_only:
        raise ValueError(f"--from-log {options.from_log} holds no fine-only curve; pass a log of this script")
    target = smoothed(fine_only)[-1]
    for branch in branches:
        branch.update(
            coarse_fraction=branch["coarse_steps"] / options.steps, switch_warmup=options.switch_warmup
        )
        branch.update(score(branch, fine_only, "train_cpu_seconds"))
    report.update(
        from_log=Path(options.from_log).name, fine_only={"curve": fine_only}, target_val_loss=target
    )
    report.update(branches=branches, coarse_only={"curve": coarse}, sampling=[], complete=False)
    if branches:
        report.update(
            {k: branches[0][k] for k in ("fine_only_seconds", "coarse_to_fine_seconds", "time_ratio")}
        )
    return write_report(report, options.out, name)


def coarse_only(options: argparse.Namespace, make: Any, report: dict[str, Any], name: str) -> dict[str, Any]:
    """The coarse trajectory alone, written after every evaluation (what coarse training buys at the fine
    level, step for step: compare with a fine-only curve of the same seed)."""
    print(f"coarse-only at {options.coarse}², seed {options.seed}, {options.coarse_only} steps")
    trainer = make()
    for _ in range(options.coarse_only // options.eval_every):
        timed_total(trainer, options.eval_every, options.coarse)
        report.update(coarse_only={"curve": trainer.curve}, complete=trainer.step == options.coarse_only)
        written = write_report(report, options.out, name)
    return written


RATIO_DEFINITION = (
    "curves smoothed by a decreasing isotonic fit; target = fine-only's smoothed final fine-level validation "
    "loss; time to target = first time a smoothed curve is <= target (linear between evaluations), on the "
    "process CPU clock with --clock cpu; ratio = coarse-to-fine time / fine-only time; ideal_ratio = "
    "1 - f (1 - c), f the coarse fraction, c the measured coarse/fine step cost; fine_step_ratio = the same "
    "ratio with time counted in fine steps, a coarse step at the coarse/fine cost measured in the branch's "
    "own process"
)


def sampling_rows(options: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Sampling seconds per sample at each ``--sample-resolutions`` (random FNO; none when empty)."""
    model = build(options, device).eval()
    rows = []
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
        rows.append(
            {
                "resolution": resolution,
                "seconds_per_sample": seconds / options.sample_batch,
                "seconds_per_step_per_sample": seconds / options.sample_batch / options.sample_steps,
            }
        )
        print(f"sampling at {resolution}²: {seconds / options.sample_batch:.3f} s/sample")
    return rows


def summarize(options: argparse.Namespace) -> dict[str, Any]:
    """Median and range over seeds of each schedule's ratio (a schedule: coarse fraction, switch rule and
    warm-up); one result file per schedule, named by it, and with ``--plot`` one figure of every curve."""
    loaded = [json.loads(Path(path).read_text()) for path in options.summarize]
    results = [result for result in loaded if "fine_only" in result]
    for alone in (result for result in loaded if "fine_only" not in result):  # a --coarse-only file
        for result in results:  # its longer coarse trajectory replaces the one of its seed's full run
            if result["settings"]["seed"] == alone["settings"]["seed"]:
                result["coarse_only"] = alone["coarse_only"]
    paths = [path for path, result in zip(options.summarize, loaded, strict=True) if "fine_only" in result]
    groups: dict[tuple[float, str, int], list[dict[str, Any]]] = {}
    for path, result in zip(paths, results, strict=True):
        for branch in result.get("branches", []):
            members = groups.setdefault(
                (branch["coarse_fraction"], branch["switch"], branch["switch_warmup"]), []
            )
            seed = result["settings"]["seed"]
            if seed in [m["seed"] for m in members]:
                raise ValueError(
                    f"--summarize: {path} repeats seed {seed} of a schedule; pass one file per seed"
                )
            members.append({**branch, "seed": seed, "file": Path(path).name, "settings": result["settings"]})

    def spread(values: list[float | None]) -> dict[str, Any]:
        known = [v for v in values if v is not None]
        return {
            "median": statistics.median(known) if len(known) == len(values) and known else None,
            "min": min(known, default=None),
            "max": max(known, default=None),
            "values": values,
        }

    coarse_rows = [  # what coarse steps alone buy at the fine level, in fine-only steps
        {
            "seed": result["settings"]["seed"],
            "curve": result["coarse_only"]["curve"],
            "equivalent_steps": equivalent_steps(
                result["coarse_only"]["curve"], result["fine_only"]["curve"]
            ),
        }
        for result in results
        if result.get("coarse_only")
    ]
    summaries = []
    for (fraction, switch, warmup), members in sorted(groups.items()):
        figures = ("time_ratio", "ideal_ratio", "step_cost_ratio", "fine_only_seconds")
        figures += ("coarse_to_fine_seconds", "target_val_loss", "own_step_cost_ratio", "fine_step_ratio")
        row = {k: spread([m.get(k) for m in members]) for k in figures}  # the last two: absent in old files
        seeds = [m["seed"] for m in members]
        ratio = row["time_ratio"]
        label = f"coarse fraction {fraction:g}, switch {switch}" + (f", warm-up {warmup}" if warmup else "")
        label += f"; median of seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"; seed {seeds[0]}"
        if len(seeds) > 1 and ratio["min"] is not None:
            label += f" (ratio {ratio['min']:.2f}-{ratio['max']:.2f})"
        ideal = row["ideal_ratio"]["median"]
        if ideal is not None:  # the ratio beside what perfect transfer would score at the measured step cost
            label += f"; ideal bound {ideal:.2f}"
        settings = members[0]["settings"]
        report = {
            "benchmark": "multilevel_warmstart",
            "device": results[0]["device"],
            "settings": {**settings, "seed": seeds, "coarse_fraction": fraction, "switch": switch},
            "label": label,
            "definition": RATIO_DEFINITION,
            "goal_ratio": 0.6,
            "summary_of": [m["file"] for m in members],
            **row,
            # the report table's columns: medians over the seeds
            "fine_only_seconds": row["fine_only_seconds"]["median"],
            "coarse_to_fine_seconds": row["coarse_to_fine_seconds"]["median"],
            "time_ratio": ratio["median"],
            "time_ratio_spread": ratio,
            "coarse_only": coarse_rows,
            "sampling": [],
        }
        prior = "" if settings.get("prior") == "matern" else f"_{settings.get('prior', 'combined')}"
        name = f"multilevel_warmstart_{settings['fine']}_cpu{prior}_f{fraction:g}_{switch}"
        summaries.append(
            write_report(report, options.out, name + (f"_w{warmup}" if warmup else "") + ".json")
        )
    if options.plot:
        plot_curves(results, Path(options.plot))
    return {"summaries": summaries}


def plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per seed: fine-level validation loss vs training time of fine-only, coarse-only and each
    branch (raw points, isotonic fit as lines), with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = clock_key(results[0]["settings"])
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False, sharey=True)
    for ax, result in zip(axes[0], results, strict=True):
        curves = [("fine-only", result["fine_only"]["curve"], "black")]
        curves.append(("coarse-only", result.get("coarse_only", {}).get("curve", []), "tab:grey"))
        colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"])
        for branch in result.get("branches", []):
            label = f"coarse {branch['coarse_fraction']:g}, {branch['switch']}"
            ratio = branch["time_ratio"]
            label += f": ratio {ratio:.2f}" if ratio is not None else ": not reached"
            curves.append((label, branch["curve"], next(colours)))
        for label, curve, colour in curves:
            if not curve:
                continue
            times = [row[key] for row in curve]
            ax.plot(times, [row["val_loss"] for row in curve], ".", color=colour, alpha=0.5)
            ax.plot(times, smoothed(curve), "-", color=colour, label=label)
        ax.axhline(result["target_val_loss"], color="black", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"seed {result['settings']['seed']}")
        ax.set_xlabel("training CPU-s" if key == "train_cpu_seconds" else "training s")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("fine-level validation loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
