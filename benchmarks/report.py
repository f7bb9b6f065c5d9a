"""Build the results tables of ``benchmarks/README.md`` from ``benchmarks/results/*.json``.

One table per claim; every row names its device and date, and the paper's figure sits beside ours. The
tables replace what lies between the ``<!-- report:begin -->`` and ``<!-- report:end -->`` markers of the
README; the prose around them is kept. Paper figures come from a result file's ``paper`` field when it has
one, otherwise from ``PAPER`` below (numbers from the papers as summarised in the project's REFERENCES).

    python benchmarks/report.py            # rewrite the README tables
    python benchmarks/report.py --check    # exit 1 if the README is not what the results give
    python benchmarks/report.py --import-sweep runs/sweeps/families_quickstart
                                           # copy a sweep's results into results/<name>_<device>.json
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
}

# The claims of the issue, in README order: title, benchmark names, what the numbers show.
CLAIMS: list[tuple[str, str, str]] = [
    ("Sparse operator (∞-Diff)", "sparse_conv", "memory and speed of the sparse depthwise convolution"),
    (
        "∞-Diff subsampling",
        "infty_diff_subsampling",
        "training-step time and peak memory vs the subsampling rate, at a fixed batch and a fixed memory",
    ),
    ("DVDP speed-up", "dvdp_speedup", "training and sampling speed-up over the identical-U-Net DDPM"),
    ("DVDP turning points", "dvdp_turning_points", "sample quality vs the first turning point"),
    (
        "INFD rendering",
        "infd_rendering",
        "render time and peak memory, whole vs tiled, by output size; cost of the patch-FID machinery",
    ),
    ("Multilevel warm start", "multilevel_warmstart", "coarse-to-fine vs fine-only training time"),
    ("Baseline throughput", "train_throughput", "training speed of a config"),
    (
        "Families on the quickstart data",
        "families_quickstart",
        "every family's quickstart, scored at 1x/2x/4x",
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
                f"{s['coarse']}² → {s['fine']}², {s['steps']} steps, {s.get('prior', 'matern')} prior",
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
    report = {"benchmark": name, "device": device_info(torch.device("cpu")), "rows": data["rows"]}
    note = folder / "NOTE.md"
    if note.is_file():
        report["note"] = note.read_text().strip()
    write_report(report, RESULTS, f"{name}_{tag}.json")
    for suffix in (".md", ".csv", ".png"):  # the plot only when matplotlib drew one
        if (folder / f"results{suffix}").is_file():
            shutil.copyfile(folder / f"results{suffix}", RESULTS / f"{name}_{tag}{suffix}")
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
