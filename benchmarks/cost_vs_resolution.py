"""Sampling cost vs output resolution, per family: seconds per sampler step and peak memory at 1x, 2x, 4x,
8x the training resolution, the fitted growth exponent and the largest resolution within a memory budget.

    python benchmarks/cost_vs_resolution.py --threads 2               # CPU rows, quickstart-sized models
    python benchmarks/cost_vs_resolution.py --smoke --out /tmp/x      # toy sizes, 1x and 2x (the test)

Each family's model is built with untrained weights from the model part of
``configs/quickstart/<family>.yaml`` (INFD with an untrained stage 1 from ``configs/quickstart/infd.yaml``):
weights do not change the cost. One image is sampled with ``steps=--steps`` at each multiple of the model's
``native_resolution``. s/step = seconds of that call (``--clock``) / ``--steps``; it includes the per-image
fixed costs (INFD's decode and render, ∞-Diff's mollification), so "s/image at default steps" = s/step x
the family's ``sample_steps`` is an extrapolation that overstates a fixed cost by that factor. Peak
memory: a ``steps=1`` call made before the timed one (it doubles as its warm-up) under
``rezdiff.memory.peak_bytes`` (live tensor storages on the CPU, allocator peak on CUDA; weights excluded).
A point is skipped when the previous point's time x (pixel ratio)^a predicts more than
``--point-budget-s``, a the larger of the fit so far and the last two points' slope (1 before two
points); the untimed memory call is not in the prediction. a: least squares of log(s/step) on
log(pixels); the memory exponent likewise. The largest square resolution whose peak stays within
``--memory-budget-gb`` extrapolates the last point with the last two points' memory slope, at least 1.
Paper-sized models are not run here: their rows belong to the GPU acceptance run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import add_device_options, device_info, select_device, timed, write_report  # noqa: E402

from rezdiff.memory import peak_bytes  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("ddpm", "dvdp", "multilevel", "infty_diff", "infd")
# --smoke: overrides that shrink each quickstart model to toy size (every family still runs its sampler)
SMOKE: dict[str, dict[str, Any]] = {
    "ddpm": {
        "image_size": 16,
        "unet": {
            "block_out_channels": [8, 16],
            "attention_levels": [],
            "norm_num_groups": 8,
            "attention_head_dim": 8,
        },
    },
    "dvdp": {
        "image_size": 16,
        "unet": {
            "block_out_channels": [8, 16],
            "attention_levels": [],
            "norm_num_groups": 8,
            "attention_head_dim": 8,
        },
    },
    "multilevel": {"image_size": 16, "modes": 4, "width": 8},
    "infty_diff": {
        "train_resolution": 16,
        "sparse_width": 8,
        "sparse_blocks": 1,
        "inner_resolution": 8,
        "inner_channels": 8,
        "inner_multipliers": [1, 2],
        "inner_attention_resolutions": [],
        "attention_head_dim": 8,
        "norm_num_groups": 4,
    },
    "infd": {
        "unet": {
            "block_out_channels": [16, 16],
            "attention_levels": [],
            "attention_head_dim": 8,
            "norm_num_groups": 8,
        },
    },
}


def parse(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=2, help="sampler steps per timed call")
    parser.add_argument("--point-budget-s", type=float, default=120.0)
    parser.add_argument("--memory-budget-gb", type=float, default=16.0)
    parser.add_argument("--smoke", action="store_true", help="toy models, 1x and 2x only")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    add_device_options(parser)
    options = parser.parse_args(args)
    if options.steps < 1:
        parser.error(f"--steps {options.steps}: give at least 1 sampler step")
    if sorted(set(options.multiples)) != options.multiples:
        parser.error(f"--multiples {options.multiples}: give distinct multiples in increasing order")
    if any(m < 1 for m in options.multiples):
        parser.error(f"--multiples {options.multiples}: every multiple must be >= 1")
    if options.smoke:
        options.multiples = [1, 2]
    return options


def model_args(family: str) -> tuple[str, dict[str, Any]]:
    """The class path and init_args of the family's quickstart config."""
    name = "infd_latent" if family == "infd" else family
    model = yaml.safe_load((REPO / "configs" / "quickstart" / f"{name}.yaml").read_text())["model"]
    return model["class_path"], dict(model["init_args"])


def build(family: str, smoke: bool) -> torch.nn.Module:
    """The family's quickstart-sized model with untrained weights (toy-sized under ``smoke``)."""
    import importlib

    class_path, args = model_args(family)
    for key, value in (SMOKE[family] if smoke else {}).items():  # the unet group merges into the config's
        args[key] = {**args.get(key, {}), **value} if key == "unet" else value
    if family == "infd":
        stage1_path, stage1_args = _stage1()
        if smoke:
            stage1_args.update(
                {
                    "encoder_resolution": 16,
                    "base_channels": 8,
                    "channel_mult": [1, 2],
                    "renderer_channels": 8,
                    "renderer_blocks": 1,
                    "norm_num_groups": 4,
                    "disc_channels": 8,
                    "renderer_groups": 4,
                }
            )
        args["autoencoder_ckpt"] = "unused.ckpt"  # autoencoder_config builds the stage 1: no file is read
        args["autoencoder_config"] = {"class_path": stage1_path, "init_args": stage1_args}
    module_name, class_name = class_path.rsplit(".", 1)
    torch.manual_seed(0)
    return getattr(importlib.import_module(module_name), class_name)(**args).eval()


def _stage1() -> tuple[str, dict[str, Any]]:
    model = yaml.safe_load((REPO / "configs" / "quickstart" / "infd.yaml").read_text())["model"]
    return model["class_path"], dict(model["init_args"])


def fit_exponent(pixels: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(pixels); None under two points."""
    if len(pixels) < 2:
        return None
    xs, ys = [math.log(p) for p in pixels], [math.log(max(v, 1e-12)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def largest_within(pixels: int, peak_mib: float, exponent: float | None, budget_gb: float) -> int | None:
    """Side of the largest square image whose peak, extrapolated from ``peak_mib`` at ``pixels`` as
    pixels^exponent, stays within ``budget_gb``; None without a positive exponent."""
    if not exponent or exponent <= 0 or peak_mib <= 0:
        return None
    return math.isqrt(int(pixels * (budget_gb * 1024 / peak_mib) ** (1 / exponent)))


def measure_family(family: str, options: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = build(family, options.smoke).to(device)
    native = tuple(model.native_resolution)
    default_steps = int(model.hparams.get("sample_steps") or 0)
    points: list[dict[str, Any]] = []
    exponent = 1.0
    for multiple in options.multiples:
        resolution = (native[0] * multiple, native[1] * multiple)
        measured = [p for p in points if "seconds_per_step" in p]
        if measured:
            last = measured[-1]
            growth = (resolution[0] * resolution[1] / last["pixels"]) ** exponent
            predicted = last["seconds_per_step"] * options.steps * growth
            if predicted > options.point_budget_s:
                points.append(
                    {
                        "multiple": multiple,
                        "resolution": resolution[0],
                        "skipped": "over budget",
                        "predicted_seconds": predicted,
                    }
                )
                continue

        def run(index: int, resolution: tuple[int, int] = resolution) -> None:
            model.sample(1, resolution, steps=options.steps, generator=torch.Generator().manual_seed(index))

        with peak_bytes(device) as peak:  # first: also the warm-up call of this resolution
            model.sample(1, resolution, steps=1, generator=torch.Generator().manual_seed(0))
        seconds = timed(run, 1, device)
        per_step = seconds / options.steps
        points.append(
            {
                "multiple": multiple,
                "resolution": resolution[0],
                "pixels": resolution[0] * resolution[1],
                "seconds_per_step": per_step,
                "seconds_per_image_default_steps_extrapolated": per_step * default_steps,
                "peak_mib": peak[0] / 2**20,
            }
        )
        measured = [p for p in points if "seconds_per_step" in p]
        # predict with the larger of the fit and the last two points' slope: cost curves bend up
        fitted = fit_exponent([p["pixels"] for p in measured], [p["seconds_per_step"] for p in measured])
        recent = fit_exponent(
            [p["pixels"] for p in measured[-2:]], [p["seconds_per_step"] for p in measured[-2:]]
        )
        exponent = max(fitted or 1.0, recent or 1.0)
        print(family, points[-1], flush=True)
    measured = [p for p in points if "seconds_per_step" in p]
    time_exponent = fit_exponent([p["pixels"] for p in measured], [p["seconds_per_step"] for p in measured])
    memory_exponent = fit_exponent([p["pixels"] for p in measured], [p["peak_mib"] for p in measured])
    last = measured[-1]
    # extrapolate from the last two points' slope, at least 1: fixed costs flatten the fit at small sizes,
    # while a model's activations grow at least in proportion to the pixels
    recent = fit_exponent([p["pixels"] for p in measured[-2:]], [p["peak_mib"] for p in measured[-2:]])
    largest = largest_within(
        last["pixels"], last["peak_mib"], max(recent or 1.0, 1.0), options.memory_budget_gb
    )
    return {
        "family": family,
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "native_resolution": native[0],
        "default_steps": default_steps,
        "points": points,
        "time_exponent": time_exponent,
        "memory_exponent": memory_exponent,
        "largest_resolution_within_budget_extrapolated": largest,
    }


def plot(report: dict[str, Any], path: Path) -> bool:
    """s/step vs pixels on log-log axes, one line per family; False where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for family in report["families"]:
        measured = [p for p in family["points"] if "seconds_per_step" in p]
        label = (
            f"{family['family']} (a={family['time_exponent']:.2f})"
            if family["time_exponent"]
            else family["family"]
        )
        axes[0].loglog(
            [p["pixels"] for p in measured], [p["seconds_per_step"] for p in measured], "o-", label=label
        )
        axes[1].loglog(
            [p["pixels"] for p in measured], [p["peak_mib"] for p in measured], "o-", label=family["family"]
        )
    axes[0].set(xlabel="output pixels", ylabel="s per sampler step", title="time")
    axes[1].set(xlabel="output pixels", ylabel="peak MiB", title="peak memory")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


def main(args: list[str] | None = None) -> dict[str, Any]:
    options = parse(args)
    device = select_device(options)
    families = [measure_family(family, options, device) for family in options.families]
    report = {
        "benchmark": "cost_vs_resolution",
        "device": device_info(device),
        "settings": {
            "multiples": options.multiples,
            "steps": options.steps,
            "point_budget_s": options.point_budget_s,
            "memory_budget_gb": options.memory_budget_gb,
            "smoke": options.smoke,
            "models": "quickstart configs, untrained weights"
            + (" (toy-sized: --smoke)" if options.smoke else ""),
            "paper_sized": "not run on the CPU: paper-sized rows belong to the GPU acceptance run",
        },
        "families": families,
    }
    Path(options.out).mkdir(parents=True, exist_ok=True)
    name = f"cost_vs_resolution_{device.type}{'_smoke' if options.smoke else ''}"
    report["plot"] = f"{name}.png" if plot(report, Path(options.out) / f"{name}.png") else None
    return write_report(report, options.out, f"{name}.json")


if __name__ == "__main__":
    main()
