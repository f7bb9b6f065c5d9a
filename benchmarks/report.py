"""Build the results tables of ``benchmarks/README.md`` from ``benchmarks/results/*.json``.

One table per claim; every row names its device and date, and the paper's figure sits beside ours. The
tables replace what lies between the ``<!-- report:begin -->`` and ``<!-- report:end -->`` markers of the
README; the prose around them is kept. Paper figures come from a result file's ``paper`` field when it has
one, otherwise from ``PAPER`` below (numbers from the papers; each entry names its table or section).

    python benchmarks/report.py            # rewrite the README tables
    python benchmarks/report.py --check    # exit 1 if the README is not what the results give
    python benchmarks/report.py --import-sweep runs/sweeps/families_quickstart
                                           # copy a sweep's results into results/<name>_<device>.json
    python benchmarks/report.py --import-sweep runs/sweeps/families_photographs
                                           # the same, plus each run's parameters and steps, the 2x plot
                                           # and one sample grid per family in docs/figures/
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"

# Paper figures for claims whose result files do not carry them.
PAPER: dict[str, dict[str, Any]] = {
    "sparse_conv": {
        "source": "none for the operator alone: the paper's Tables 4-5 measure whole training steps "
        "(see ∞-Diff subsampling)",
    },
    "infty_diff_subsampling": {  # its figures travel in each result file ("paper", from the script)
        "source": "∞-Diff App. C (one A100 80GB, mixed precision) and Table 3 (FFHQ 128)",
    },
    "infd_rendering": {
        "source": "none: INFD reports no rendering time or memory. Its patch FIDs (authors' README, FFHQ, "
        "trained model: 256/1K 7.91, 512/1K 6.73, 1K/1K 5.71) are quality figures, not comparable with "
        "these costs of a randomly initialised model",
    },
    "multilevel_warmstart": {"source": "rezdiff goal (the paper gives no wall-time figure)", "ratio": 0.6},
    "train_throughput": {"source": "baseline: no paper figure"},
    "families_quickstart": {"source": "no paper figure: FIDs use rezdiff's random_conv features"},
    "families_photographs": {"source": "no paper figure: patch FIDs use rezdiff's random_conv features"},
}

# The claims of the issue, in README order: title, benchmark names, what the numbers show.
CLAIMS: list[tuple[str, str, str]] = [
    ("Sparse operator (∞-Diff)", "sparse_conv", "memory and speed of the sparse depthwise convolution"),
    (
        "∞-Diff subsampling",
        "infty_diff_subsampling",
        "training-step time and peak memory vs the subsampling rate, at a fixed batch and a fixed memory",
    ),
    (
        "∞-Diff figures without training",
        "infty_diff_figures",
        "the ∞-Diff README's noise per-pixel variances by resolution, the leading spacing's first step and "
        "the 256² config's parameter counts (`infty_diff_figures.py`)",
    ),
    ("DVDP speed-up", "dvdp_speedup", "training and sampling speed-up over the identical-U-Net DDPM"),
    ("DVDP turning points", "dvdp_turning_points", "sample quality vs the first turning point"),
    (
        "INFD rendering",
        "infd_rendering",
        "render time and peak memory, whole vs tiled, by output size; cost of the patch-FID machinery",
    ),
    ("Multilevel warm start", "multilevel_warmstart", "coarse-to-fine vs fine-only training time"),
    (
        "Multilevel priors and levels",
        "multilevel_priors",
        "the figures of the multilevel README's deviations table (priors' exact spectra, digits, LFW and "
        "Synthetic data; `multilevel_priors.py`)",
    ),
    ("Baseline throughput", "train_throughput", "training speed of a config"),
    (
        "Families on the quickstart data",
        "families_quickstart",
        "every family's quickstart, scored at 1x/2x/4x",
    ),
    (
        "Families on photographs: 2x vs 1x + bicubic",
        "families_photographs",
        "every family trained at 32² on 27 photograph regions for the same optimiser steps, sampled at 1x, "
        "2x (and 4x where cheap) and scored against the 8 held-out regions rendered at that resolution; at "
        "2x beside its own 32² samples upsampled bicubically, DDPM's, and a DDPM trained at 64²",
    ),
    (
        "Cost vs output resolution",
        "cost_vs_resolution",
        "per family (quickstart-sized, untrained weights): sampling time per step and peak memory at 1x-8x "
        "the training resolution, the growth exponent a (s/step ∝ pixels^a) and the largest square output "
        "within a memory budget",
    ),
    (
        "GPU acceptance",
        "gpu_acceptance",
        "every GPU figure from one run of `gpu_acceptance.py` (device, versions, commit): the parts' "
        "statuses, "
        "then one table per part",
    ),
]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def device_name(result: dict[str, Any]) -> str:
    device = result.get("device") or {}
    if isinstance(device, str):
        return device
    if device.get("type") == "cuda":
        return str(device.get("name", "CUDA GPU"))
    threads = device.get("threads")
    unit = "thread" if threads == 1 else "threads"
    clock = ", CPU time" if device.get("clock") == "cpu" else ""
    return (
        f"{device.get('cpu', 'CPU')} ({threads} {unit}{clock})" if threads else str(device.get("cpu", "CPU"))
    )


def date(result: dict[str, Any]) -> str:
    return str(result.get("date", "—"))[:10]


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ one per benchmark


def train_throughput(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        for row in result["rows"]:
            name = f"{result['config']} ({result['parameters'] / 1e6:.1f}M params)"
            rows.append(
                [
                    name,
                    device_name(result),
                    date(result),
                    row["precision"],
                    result["batch_size"],
                    row["seconds_per_step"],
                    row["images_per_second"],
                    row.get("achieved_tflops"),
                    "— (baseline)",
                ]
            )
    header = ["config", "device", "date", "precision", "batch", "s/step", "images/s", "TFLOP/s", "paper"]
    return table(header, rows)


def dvdp_speedup(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        paper = result.get("paper", {})
        train, sample = paper.get("table3_train_speedup", {}), paper.get("table3_sample_speedup", {})
        table1 = paper.get("table1_256", {})
        resolution = result["settings"]["resolution"]
        for row in result["rows"]:
            if row["K"] == 0:
                continue
            is_table1 = row["turning_points"] == [300, 600]
            rows.append(
                [
                    f"{resolution}², K={row['K']} {row['turning_points']} ({row['stage_sampling']})",
                    device_name(result),
                    date(result),
                    f"{fmt(row['train_speedup'])} (artefact)"
                    if row.get("train_speedup_artefact")
                    else row["train_speedup"],
                    row.get("ideal_train_speedup"),
                    table1.get("train_speedup") if is_table1 else train.get(str(row["K"])),
                    row["sample_speedup"],
                    row.get("ideal_sample_speedup"),
                    table1.get("sample_speedup") if is_table1 else sample.get(str(row["K"])),
                ]
            )
    header = [
        "setting",
        "device",
        "date",
        "train ×",
        "ideal train ×",
        "paper train ×",
        "sample ×",
        "ideal sample ×",
        "paper sample ×",
    ]
    text = table(header, rows)
    notes = "".join(
        f"\nNote ({date(result)}): {result['note']}\n" for result in results if result.get("note")
    )
    return (
        text
        + notes
        + "\nIdeal: the speed-up if time were proportional to the pixels the network processes (DDPM's / "
        "DVDP's, counted by the benchmark in its timed run, where the training steps visit the stages in "
        "exactly the expected proportions; older results carry the exact pixel ratios). Paper: Table 3 "
        "(CelebA 128, K = 1..3); Table 1 (256², K = 2, turning points {300, 600}): 2.2× training, 2.4× "
        "sampling.\n"
    )


def dvdp_turning_points(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        for row in result["rows"]:
            rows.append(
                [
                    row["T1"],
                    row["process"],
                    device_name(result),
                    date(result),
                    row["swd_x1e3"],
                    row["train_seconds"],
                    "Fig. 4 (curve, no table)",
                ]
            )
    return table(["T1", "process", "device", "date", "SWD ×1e3", "train s", "paper"], rows)


def multilevel_warmstart(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        s = result["settings"]
        rows.append(
            [
                f"{s['coarse']}² → {s['fine']}², {s['steps']} steps, {s.get('prior', 'matern')} prior"
                + (f"; {result['label']}" if result.get("label") else ""),
                device_name(result),
                date(result),
                result["coarse_to_fine_seconds"],
                result["fine_only_seconds"],
                result["time_ratio"],
                f"≤ {PAPER['multilevel_warmstart']['ratio']} (goal)",
            ]
        )
    header = ["setting", "device", "date", "coarse→fine s", "fine-only s", "ratio", "target"]
    sampling = [
        [f"{row['resolution']}²", device_name(result), date(result), row["seconds_per_sample"]]
        for result in results
        for row in result.get("sampling", [])
    ]
    text = table(header, rows)
    if sampling:
        text += "\nSampling time per sample:\n\n" + table(
            ["resolution", "device", "date", "s/sample"], sampling
        )
    return text


def families_quickstart(results: list[dict[str, Any]]) -> str:
    """One row per family and resolution; metric columns from the ``<metric>@<resolution>`` keys."""
    text = ""
    for result in results:
        metrics: list[str] = []
        resolutions: list[str] = []
        for row in result["rows"]:
            for key in row:
                name, _, resolution = key.partition("@")
                if resolution and not name.endswith("_std"):
                    metrics += [name] if name not in metrics else []
                    resolutions += [resolution] if resolution not in resolutions else []
        resolutions.sort(key=lambda r: int(r.split("x")[0]))
        body = []
        for row in result["rows"]:
            family = row.get("family", row["run"])
            if row["status"] != "done":
                body.append(
                    [family, "—", device_name(result), date(result), row["status"]]
                    + ["—"] * (len(metrics) + 3)
                )
                continue
            for resolution in resolutions:
                body.append(
                    [
                        family,
                        f"{resolution}²",
                        device_name(result),
                        date(result),
                        row["status"],
                        row.get("fit_seconds"),
                        row.get("test_seconds"),
                    ]
                    + [row.get(f"{m}@{resolution}") for m in metrics]
                    + ["—"]
                )
        header = ["family", "resolution", "device", "date", "status", "fit s", "test s", *metrics, "paper"]
        text += table(header, body)
        if result.get("note"):
            text += f"\n{result['note']}\n"
    return text


#: The families of the photographs sweep, in table order; ``ddpm64`` is the fixed-resolution upper bound.
PHOTO_FAMILIES = ("ddpm", "dvdp", "multilevel", "infty_diff", "infd")
#: The row of :func:`real_anchor`: the evaluation applied to real training renders.
REAL = "real (training regions)"


def _change(native: Any, baseline: Any) -> str:
    """``native`` relative to ``baseline`` in percent (negative: lower, i.e. better for SWD and FID)."""
    if not isinstance(native, (int, float)) or not isinstance(baseline, (int, float)) or baseline == 0:
        return "—"
    return f"{100 * (native - baseline) / baseline:+.0f} %"


def families_photographs(results: list[dict[str, Any]]) -> str:
    """Budgets, then the 2x comparison (family vs its own 1x + bicubic, DDPM's, DDPM trained at 2x), then
    every figure at every resolution."""
    text = ""
    for result in results:
        rows = {str(row.get("family", row["run"])): row for row in result["rows"]}
        budget = [
            [family, row["status"], row.get("params"), row.get("steps"), row.get("fit_seconds"),
             row.get("test_seconds")]
            for family, row in rows.items()
            if family != REAL
        ]  # fmt: skip
        text += "Budgets (" + device_name(result) + ", " + date(result) + "):\n\n"
        text += table(["family", "status", "trainable params", "optimiser steps", "fit s", "test s"], budget)
        body = []
        for family in PHOTO_FAMILIES:
            row = rows.get(family, {})
            swd, swd_up = row.get("swd@64"), row.get("swd_up32@64")
            pfid, pfid_up = row.get("pfid16@64"), row.get("pfid16_up32@64")
            figures = (swd, swd_up, pfid, pfid_up)
            both = "—" if None in figures else ("yes" if swd < swd_up and pfid < pfid_up else "no")
            body.append(
                [family, swd, swd_up, _change(swd, swd_up), pfid, pfid_up, _change(pfid, pfid_up), both]
            )
        ddpm, upper = rows.get("ddpm", {}), rows.get("ddpm64", {})
        body.append(
            [
                "(b) DDPM 32² + bicubic",
                ddpm.get("swd_up32@64"),
                "",
                "",
                ddpm.get("pfid16_up32@64"),
                "",
                "",
                "",
            ]
        )
        body.append(
            ["(c) DDPM trained at 64²", upper.get("swd@64"), "", "", upper.get("pfid16@64"), "", "", ""]
        )
        real = rows.get(REAL, {})
        if real:
            swd, swd_up = real.get("swd@64"), real.get("swd_up32@64")
            pfid, pfid_up = real.get("pfid16@64"), real.get("pfid16_up32@64")
            perfect = "real training regions (a perfect model)"
            body.append(
                [perfect, swd, swd_up, _change(swd, swd_up), pfid, pfid_up, _change(pfid, pfid_up), ""]
            )
        header = ["at 64² (2x)", "SWD", "SWD 1x+bicubic", "change", "pFID16", "pFID16 1x+bicubic", "change",
                  "beats own 1x+bicubic on both"]  # fmt: skip
        text += (
            "\nAt 2x, each family's own 64² samples vs its 32² samples upsampled bicubically "
            "(lower is better):\n\n"
        )
        text += table(header, body)
        keys = ["swd", "swd_up32", "pfid16", "pfid16_up32"]
        every = []
        for resolution in ("32", "64", "128"):
            for family, row in rows.items():
                values = [row.get(f"{key}@{resolution}") for key in keys]
                if any(v is not None for v in values):
                    every.append([family, f"{resolution}²", *values])
        text += "\nEvery figure:\n\n" + table(["family", "resolution", *keys], every)
        if result.get("note"):
            text += f"\n{result['note']}\n"
    return text


def plot_families_photographs(result: dict[str, Any], path: Path) -> Path:
    """Bars at 64² per family: its own 2x samples and its 1x + bicubic, SWD and pFID16 panels, with the DDPM
    trained at 64² and the real training regions (:func:`real_anchor`) as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {str(row.get("family", row["run"])): row for row in result["rows"]}
    families = [f for f in PHOTO_FAMILIES if f in rows]
    figure, panels = plt.subplots(1, 2, figsize=(10, 3.6))
    for panel, (key, title) in zip(
        panels, (("swd", "multi-scale SWD at 64²"), ("pfid16", "patch FID 16² at 64²")), strict=True
    ):
        native = [rows[f].get(f"{key}@64") or 0.0 for f in families]
        upsampled = [rows[f].get(f"{key}_up32@64") or 0.0 for f in families]
        xs = range(len(families))
        panel.bar([x - 0.2 for x in xs], native, width=0.4, label="sampled at 64²")
        panel.bar([x + 0.2 for x in xs], upsampled, width=0.4, label="32² + bicubic")
        upper = rows.get("ddpm64", {}).get(f"{key}@64")
        if upper is not None:
            panel.axhline(upper, color="k", linestyle="--", linewidth=1, label="DDPM trained at 64²")
        real = rows.get(REAL, {}).get(f"{key}@64")
        if real is not None:
            panel.axhline(
                real, color="grey", linestyle=":", linewidth=1.5, label="real training regions at 64²"
            )
        panel.set_xticks(list(xs), families, rotation=20)
        panel.set_title(title + " (lower is better)")
        panel.grid(alpha=0.3, axis="y")
    panels[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def photograph_grids(folder: Path, out: Path) -> list[Path]:
    """One PNG per family: held-out renders and its samples at 32², then held-out renders, its samples and
    its 32² samples + bicubic at 64² (each block the run's ``samples/eval_*.png``, 8 images)."""
    import torch
    from PIL import Image, ImageDraw

    from rezdiff.data import Photographs
    from rezdiff.data.images import make_grid, to_uint8

    def real(resolution: int) -> Image.Image:
        held_out = Photographs(split="held_out")
        images = torch.stack([held_out.render(i, resolution) for i in range(len(held_out))])
        return Image.fromarray(to_uint8(make_grid(images)).permute(1, 2, 0).numpy())

    written = []
    reals = {32: real(32), 64: real(64)}
    for run in sorted(folder.glob("family=*")):
        family = run.name.split(",")[0].removeprefix("family=")
        samples = run / "samples"
        blocks = [("held-out 32x32", reals[32]), ("samples 32x32", samples / "eval_32.png"),
                  ("held-out 64x64", reals[64]), ("samples 64x64", samples / "eval_64.png"),
                  ("32x32 + bicubic", samples / "eval_64_up32.png")]  # fmt: skip
        tiles = [(label, image if isinstance(image, Image.Image) else Image.open(image).convert("RGB"))
                 for label, image in blocks if isinstance(image, Image.Image) or image.is_file()]  # fmt: skip
        if len(tiles) < 3:
            continue
        width = sum(tile.width for _, tile in tiles) + 8 * (len(tiles) - 1)
        height = max(tile.height for _, tile in tiles) + 14
        canvas = Image.new("RGB", (width, height), "white")
        draw, left = ImageDraw.Draw(canvas), 0
        for label, tile in tiles:
            draw.text((left, 0), label, fill="black")
            canvas.paste(tile, (left, 14))
            left += tile.width + 8
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"families_photographs_{family}.png"
        canvas.quantize(256).save(target, optimize=True)  # a 256-colour palette: well under 300 KB
        written.append(target)
    return written


def real_anchor(folder: Path) -> dict[str, Any]:
    """The sweep's evaluation with real images in place of samples: image k is the exact render of region
    k mod 27 of ``Photographs(split="train")`` (the regions not held out), at 32² and 64², and its 32² render
    upsampled bicubically. ``swd@64`` is what a perfect 2x model scores, ``swd_up32@64`` a perfect 1x model
    plus bicubic, on the same references, crops and settings as the runs (read from the ddpm run's config)."""
    import torch
    import yaml
    from torch import nn

    from rezdiff.data import Photographs
    from rezdiff.evaluation import Evaluate

    training = Photographs(split="train")
    config = yaml.safe_load((folder / "family=ddpm,seed=0" / "config.yaml").read_text())["evaluate"]
    names = ("metrics", "patch_size", "crops_per_image", "num_samples", "batch_size", "seed", "feature")
    evaluate = Evaluate(
        resolutions=[32, 64],
        upsample_from=32,
        stats_dir=str(folder / "stats"),
        save_grid=0,
        **{name: config[name] for name in names},
    )

    def renders(model: nn.Module, positions: Any, resolution: tuple[int, int]) -> torch.Tensor:
        return torch.stack([training.render(k % len(training), resolution) for k in positions])

    evaluate.pipeline.generate_batch = renders  # type: ignore[method-assign]
    stand_in = nn.Linear(1, 1)  # the harness reads a parameter's device; no sample() is called
    stand_in.sample = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    results = evaluate.run(stand_in, Photographs(split="held_out"))  # run() takes the reference set
    return {"run": "real", "status": "done", "family": REAL, **results}


def _run_budget(run: Path) -> dict[str, Any]:
    """A sweep run's trainable parameters (Lightning's model summary in its log) and optimiser steps (its
    last checkpoint's global step)."""
    import re

    import torch

    budget: dict[str, Any] = {}
    log = run / "sweep" / "log.txt"
    found = re.findall(r"Trainable params: ([0-9.]+ ?[KMG]?)", log.read_text()) if log.is_file() else []
    if found:
        budget["params"] = found[0].replace(" ", "")
    checkpoint = run / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        budget["steps"] = torch.load(checkpoint, map_location="cpu", weights_only=False).get("global_step")
    return budget


def infty_diff_subsampling(results: list[dict[str, Any]]) -> str:
    """One row per (data, inner grid, rate): fixed batch (Table 5) and fixed memory (Table 4) vs the paper."""
    rows = []
    notes = []
    for result in results:
        paper = result["paper"]
        for row in result["rows"]:
            key, rate = f"{row['resolution']}/{row['inner']}", str(row["rate"])
            peak = row.get("peak_bytes")
            rows.append(
                [
                    f"{row['resolution']}² / {row['inner']}², {row['rate']}×",
                    device_name(result),
                    date(result),
                    row["batch"],
                    row.get("s_per_step"),
                    None if peak is None else round(peak / 2**20),
                    row.get("memory_reduction"),
                    paper["table5_memory_reduction_fixed_batch"].get(key, {}).get(rate),
                    row.get("speedup"),
                    row.get("fixed_memory_batch"),
                    row.get("fixed_memory_images_per_s"),
                    row.get("fixed_memory_speedup"),
                    paper["table4_speedup_fixed_memory"].get(key, {}).get(rate),
                ]
            )
        settings = result.get("settings", {})
        budget = f"{settings['memory_budget']} GB" if settings.get("memory_budget") else "the 1× peak"
        network = ", ".join(f"{k} {v}" for k, v in result.get("network", {}).items())
        notes.append(
            f"- `{result['_file']}`: network {network}; precision {settings.get('precision')}; "
            f"s/step in {'CPU' if settings.get('clock') == 'cpu' else 'wall'} time; fixed batch "
            f"{settings.get('batch')}; fixed-memory budget {budget}; "
            f"peak memory: {result.get('memory_method')}."
        )
    header = [
        "data / inner, rate", "device", "date", "batch", "s/step", "peak MiB", "memory ×", "paper T5 ×",
        "speed-up ×", "fixed-memory batch", "images/s", "speed-up ×", "paper T4 ×",
    ]  # fmt: skip
    paper = results[0]["paper"]
    t3 = ", ".join(
        f"{r}× → {fid} ({paper['table3_speedup'][r]}× faster)" for r, fid in paper["table3_fid_clip"].items()
    )
    return (
        table(header, rows)
        + "\nRatios are vs 1× (the full grid) in the same run. Paper: Table 5 = memory reduction at a fixed "
        "batch of 16, Table 4 = training speed-up at a fixed 10 GB budget (one A100, mixed precision, the "
        "paper's network). What subsampling costs in quality (Table 3, FFHQ 128, FID_CLIP): "
        + t3
        + ".\n\n"
        + "\n".join(notes)
        + "\n"
    )


def infd_rendering(results: list[dict[str, Any]]) -> str:
    """Whole vs tiled render per output size (time, peak memory, the output buffer), then pFID P/R costs."""
    mib = 2**20
    rows, pfid, notes = [], [], []
    for result in results:
        by_size: dict[int, dict[str, dict[str, Any]]] = {}
        for row in result["rows"]:
            key = "whole" if row["mode"] == "whole" else row["norm"]
            by_size.setdefault(row["resolution"], {})[key] = row
        for resolution, modes in by_size.items():
            whole = modes.get("whole", {})
            done = whole.get("status") == "done"
            predicted = whole.get("predicted_peak_bytes")
            skipped = "—" if predicted is None else f"(≈{predicted / mib:.0f})"
            for key, tiled in modes.items():
                if key == "whole":
                    continue
                rows.append(
                    [
                        f"{resolution}²",
                        device_name(result),
                        date(result),
                        whole.get("time_s") if done else whole.get("status", "—"),
                        round(whole["peak_bytes"] / mib) if done else skipped,
                        f"{key} norm, {tiled['tile']} + {tiled['pad']} px, {tiled['tiles']} tile"
                        + ("s" if tiled["tiles"] > 1 else ""),
                        tiled["time_s"],
                        round(tiled["peak_bytes"] / mib),
                        tiled["output_bytes"] / mib,
                        round(tiled["peak_minus_output_bytes"] / mib),
                        None if tiled.get("rss_peak_bytes") is None else round(tiled["rss_peak_bytes"] / mib),
                    ]
                )
        for row in result.get("pfid", {}).get("rows", []):
            pfid.append(
                [
                    row["label"],
                    device_name(result),
                    date(result),
                    row["images"],
                    row["render_s_per_image"],
                    1e3 * row["crop_s_per_image"],
                    1e3 * row["features_s_per_image"],
                    1e3 * row["fid_stats_s"],
                    1e3 * row["metric_s_per_image"],
                ]
            )
        model = result.get("model", {})
        notes.append(
            f"- `{result['_file']}`: decoder {model.get('decoder_parameters', 0) / 1e6:.1f}M + renderer "
            f"{model.get('renderer_parameters', 0) / 1e6:.2f}M parameters ({model.get('weights')}); phi "
            f"{model.get('phi_shape')} decoded once in {fmt(result.get('decode_s'))} s; peak memory: "
            f"{result.get('memory_method')}; memory budget for whole renders "
            f"{result.get('settings', {}).get('memory_budget_gb')} GiB."
        )
    header = [
        "output", "device", "date", "whole s", "whole peak MiB", "tiled", "tiled s", "tiled peak MiB",
        "output MiB", "tiled peak − output MiB", "tiled RSS peak MiB",
    ]  # fmt: skip
    text = table(header, rows) + (
        "\nPeak memory is above what existed before the call (weights, phi) and includes the output; a "
        "skipped whole render shows its predicted peak in brackets; RSS peak: the process's resident-set "
        "high-water mark above its start (CPU cross-check). `global` GroupNorm statistics are exact "
        "(one pass over the tiles per norm layer, then the render pass); `sampled` estimates them from an "
        "8x8 grid of windows in one pass of one tile's pixels, then renders the tiles once; `tile` is the "
        "authors' per-tile statistics. Files measured on different days (and clocks) are not comparable "
        "with each other: compare rows of one file.\n"
    )
    if pfid:
        pfid_header = [
            "P/R", "device", "date", "images", "render s/img", "crop ms/img", "features ms/img",
            "FID stats ms/set", "metric ms/img",
        ]  # fmt: skip
        text += (
            "\nPatch FID P/R machinery with `rezdiff.evaluation` (one random P² crop per image, features, "
            "Fréchet distance to cached reference statistics), per generated image:\n\n"
        ) + table(pfid_header, pfid)
    return text + "\n" + "\n".join(notes) + "\n"


def cost_vs_resolution(results: list[dict[str, Any]]) -> str:
    """One row per family and resolution; the fits on each family's rows; the plot where one was drawn."""
    header = ["family", "device", "date", "resolution", "s/step", "s/image at default steps (extrapolated)"]
    header += ["peak MiB", "a (time)", "a (memory)", "largest within budget (extrapolated)"]
    text = ""
    for result in results:
        s = result["settings"]
        rows = []
        for family in result["families"]:
            for point in family["points"]:
                fits = [family["time_exponent"], family["memory_exponent"]]
                fits.append(family["largest_resolution_within_budget_extrapolated"])
                first = point is family["points"][0]
                if "skipped" in point:
                    figures: list[Any] = [f"skipped: {point['skipped']}", None, None]
                else:
                    figures = [
                        point["seconds_per_step"],
                        f"{fmt(point['seconds_per_image_default_steps_extrapolated'])} "
                        f"({family['default_steps']} steps)",
                        point["peak_mib"],
                    ]
                rows.append(
                    [
                        family["family"] if first else "",
                        device_name(result),
                        date(result),
                        f"{point['resolution']}² ({point['multiple']}x)",
                        *figures,
                        *(fits if first else ["", "", ""]),
                    ]
                )
        text += (
            f"{s['steps']} sampler steps per timed call, s/step = its time / {s['steps']}; memory budget "
            f"{s['memory_budget_gb']} GB (largest: last point extrapolated with the last two points' memory "
            f"slope, at least 1); points predicted over {s['point_budget_s']} s skipped. "
            f"{s['paper_sized'][:1].upper()}{s['paper_sized'][1:]}.\n\n" + table(header, rows)
        )
        if result.get("plot"):
            text += f"\n![cost vs resolution](results/{result['plot']})\n"
        if result.get("reading"):
            text += f"\n{result['reading']}\n"
    return text


def gpu_acceptance(results: list[dict[str, Any]]) -> str:
    """Per run: device, versions and commit; a status table of the parts; then each part's rows and notes."""
    text = ""
    for result in results:
        versions = result.get("versions", {})
        shown = ", ".join(f"{k} {versions.get(k) or '—'}" for k in ("torch", "cuda", "triton", "diffusers"))
        commit = (result.get("git_commit") or "—")[:12]
        smoke = " — **smoke run (toy sizes): not a measurement**" if result.get("smoke") else ""
        text += f"`{result['_file']}`: {device_name(result)}, {shown}, commit {commit}, {date(result)}"
        text += f"{smoke}.\n\n"
        parts = result.get("parts", {})
        text += table(
            ["part", "status", "s", "budget s", "error"],
            [
                [name, p["status"], p.get("seconds"), p.get("budget_s"), p.get("error")]
                for name, p in parts.items()
            ],
        )
        for name, part in parts.items():
            skip = {"status", "error", "seconds", "budget_s", "rows", "notes", "files"}
            scalars = {k: v for k, v in part.items() if k not in skip and not isinstance(v, (dict, list))}
            if not part.get("rows") and not scalars:
                continue
            text += f"\n**{name}**" + "".join(f"; {k} {fmt(v)}" for k, v in scalars.items()) + "\n\n"
            text += generic([{**result, "rows": part.get("rows") or []}])
            text += "".join(f"\n{note}\n" for note in part.get("notes", []))
    return text


def generic(results: list[dict[str, Any]]) -> str:
    """Any result file with ``rows``: its own columns, plus device, date and the paper's figures."""
    text = ""
    for result in results:
        rows = result.get("rows") or []
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns and not isinstance(row[k], (dict, list))]
        body = [[device_name(result), date(result), *[row.get(c) for c in columns]] for row in rows]
        text += table(["device", "date", *columns], body) if rows else "(no rows)\n"
    return text


RENDERERS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "train_throughput": train_throughput,
    "dvdp_speedup": dvdp_speedup,
    "dvdp_turning_points": dvdp_turning_points,
    "multilevel_warmstart": multilevel_warmstart,
    "families_quickstart": families_quickstart,
    "families_photographs": families_photographs,
    "infty_diff_subsampling": infty_diff_subsampling,
    "infd_rendering": infd_rendering,
    "gpu_acceptance": gpu_acceptance,
    "cost_vs_resolution": cost_vs_resolution,
}


def paper_line(name: str, results: list[dict[str, Any]]) -> str:
    paper = PAPER.get(name)
    if not paper or name in (
        "dvdp_speedup",
        "multilevel_warmstart",
        "train_throughput",
        "families_quickstart",
        "families_photographs",
        "infty_diff_subsampling",  # its table carries the paper's figures
    ):
        return ""
    figures = "; ".join(
        f"{key}: " + ", ".join(f"{k} → {v}" for k, v in value.items())
        for key, value in paper.items()
        if isinstance(value, dict)
    )
    return f"\nPaper ({paper['source']}): {figures}.\n" if figures else f"\nPaper: {paper['source']}.\n"


def load_results(folder: Path = RESULTS) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        result["_file"] = path.name
        grouped.setdefault(result.get("benchmark", path.stem), []).append(result)
    return grouped


def render(grouped: dict[str, list[dict[str, Any]]]) -> str:
    """The markdown between the markers: one section per claim, then any other benchmark found."""
    sections = []
    known = {name for _, name, _ in CLAIMS}
    claims = CLAIMS + [(name, name, "") for name in sorted(grouped) if name not in known]
    for title, name, what in claims:
        results = grouped.get(name, [])
        files = ", ".join(f"`results/{r['_file']}`" for r in results)
        head = f"### {title}\n\n" + (f"{what[0].upper()}{what[1:]}.\n\n" if what else "")
        if not results:
            body = "No results yet.\n" + paper_line(name, results)
        else:
            body = (
                RENDERERS.get(name, generic)(results)
                + paper_line(name, results)
                + f"\nRaw figures: {files}.\n"
            )
        sections.append(head + body)
    generated = "<!-- generated by benchmarks/report.py from results/*.json; do not edit by hand -->\n\n"
    return generated + "\n".join(sections)


def updated_readme(text: str, tables: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables}{END}{tail}"


def import_sweep(folder: Path, device: str | None) -> Path:
    """Copy a sweep's results into ``results/<sweep>_<device>.json`` (+ its .md, .csv and .png beside it)."""
    sys.path.insert(0, str(HERE))
    import torch
    from common import device_info, write_report

    data = json.loads((folder / "results.json").read_text())
    name = data["sweep"]
    tag = device or "cpu"
    rows = data["rows"]
    if name == "families_photographs":
        rows = [{**row, **_run_budget(folder / row["run"])} for row in rows] + [real_anchor(folder)]
    report = {"benchmark": name, "device": device_info(torch.device("cpu")), "rows": rows}
    settings = folder / "SETTINGS.json"  # what the sweep's README section needs beyond the rows
    if settings.is_file():
        report["settings"] = json.loads(settings.read_text())
    note = folder / "NOTE.md"
    if note.is_file():
        report["note"] = note.read_text().strip()
    report = write_report(report, RESULTS, f"{name}_{tag}.json")
    for suffix in (".md", ".csv", ".png"):  # the plot only when matplotlib drew one
        if (folder / f"results{suffix}").is_file():
            shutil.copyfile(folder / f"results{suffix}", RESULTS / f"{name}_{tag}{suffix}")
    if name == "families_photographs":
        plot_families_photographs(report, RESULTS / f"{name}_{tag}.png")
        photograph_grids(folder, HERE.parent / "docs" / "figures")
    return RESULTS / f"{name}_{tag}.json"


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--stdout", action="store_true", help="print the tables instead of writing")
    parser.add_argument("--results", default=str(RESULTS), help="folder of result JSON files")
    parser.add_argument("--readme", default=str(README))
    parser.add_argument("--import-sweep", default=None, help="a sweep folder to copy into results/ first")
    options = parser.parse_args(args)
    if options.import_sweep:
        import_sweep(Path(options.import_sweep), None)
    tables = render(load_results(Path(options.results)))
    if options.stdout:
        print(tables)
        return 0
    readme = Path(options.readme)
    text = readme.read_text()
    new = updated_readme(text, tables)
    if options.check:
        if new != text:
            print(f"{readme} is out of date: run python benchmarks/report.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
