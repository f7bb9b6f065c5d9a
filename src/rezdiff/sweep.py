"""``rezdiff sweep``: a grid of ``rezdiff fit`` + ``rezdiff test`` runs, one results table and one plot.

A sweep file (YAML)::

    name: lr_vs_family                     # the sweep directory is out/ (default runs/sweeps/<name>)
    seeds: [0, 1]                          # one run per seed (--seed_everything)
    configs:                               # config files every run starts from, in order; may be a grid:
      axis: family
      grid:                                #   a mapping names each value (a list = several -c files;
        ddpm: configs/quickstart/ddpm.yaml #   an inline mapping = config written to a file)
        dvdp: configs/quickstart/dvdp.yaml
    config:                                # a config fragment applied after them (dotted keys allowed)
      trainer.max_epochs: 2
      model.init_args.optimizer.init_args.lr: {grid: [1.0e-3, 3.0e-4]}
      evaluate: {resolutions: [32, 64], metrics: [fid, kid, swd], num_samples: 128}
    collect: [fid, kid, swd]               # metrics (or keys) for the table and plot (default: all)
    prepare:                               # optional: fits every run depends on, done once, first
      infd_stage1: [configs/quickstart/infd.yaml]   # its checkpoint is "${prepare.infd_stage1}"

Any leaf or subtree of ``configs`` or ``config`` may be ``{grid: [...]}`` (or ``{grid: {name: value}}``,
optionally with ``axis: <label>``); the runs are the Cartesian product of all grid nodes and the seeds. A grid
over ``model.class_path`` works when the families share the init_args set so far; to sweep families with
different arguments, grid over whole ``model`` mappings or over base config files as above.

Each run lives in ``<out>/<run name>/``: ``sweep/`` holds the generated config files, ``run.json`` and
``log.txt`` (stdout and stderr of both commands); the run directory itself is the ``rezdiff fit`` run
directory, and ``rezdiff test`` writes ``metrics.json`` there. A run with ``metrics.json`` is finished and
skipped when the sweep is started again; a failed run is recorded (``sweep/failed.json``, status in the
table) and the sweep goes on. ``--print_commands`` prints one shell command per unfinished run (for a SLURM
array or any scheduler) instead of running them; ``--collect`` only rebuilds ``results.csv``,
``results.md``, ``results.json`` and ``results.png`` from the run directories.

``prepare`` names fits that runs depend on, such as the stage 1 of a two-stage family: each is fitted once
into ``<out>/_prepare/<name>/`` before the runs (skipped when it finished before), from its own config list
only (the sweep's ``config`` fragment does not apply), and the string ``${prepare.<name>}`` anywhere in
``configs`` or ``config`` becomes the path of its ``last.ckpt``. ``--print_commands`` prints the prepare
fits first: they must finish before the run lines start (e.g. a SLURM job dependency).

(Over ~400 lines: the sweep file's format (grids, ``prepare``, dotted keys), the runs it expands to and the
table collected from them are one command; the format is read by the code that expands it, in one file.)
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STATUS_DONE, STATUS_FAILED, STATUS_PENDING = "done", "failed", "pending"


# ---------------------------------------------------------------------------------------------- grid


@dataclass
class GridNode:
    """One ``{grid: ...}`` entry: where it sits, its axis label and its (name, value) choices."""

    path: tuple[str, ...]
    axis: str
    choices: list[tuple[str, Any]]


def _is_grid(node: Any) -> bool:
    return isinstance(node, dict) and "grid" in node and set(node) <= {"grid", "axis"}


def _value_name(value: Any) -> str:
    if isinstance(value, str):
        return Path(value).stem if value.endswith((".yaml", ".yml")) else value.rsplit(".", 1)[-1]
    if isinstance(value, (int, float, bool)) or value is None:
        return str(value)
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    return json.dumps(value, sort_keys=True, separators=(",", ":"))[:40]


def _grid_node(node: dict[str, Any], path: tuple[str, ...]) -> GridNode:
    grid = node["grid"]
    if isinstance(grid, dict):
        choices = [(str(name), value) for name, value in grid.items()]
    elif isinstance(grid, list):
        choices = [(_value_name(value), value) for value in grid]
    else:
        raise ValueError(f"sweep: grid at {'.'.join(path)} must be a list or a mapping, got {grid!r}")
    if not choices:
        raise ValueError(f"sweep: grid at {'.'.join(path)} is empty")
    axis = str(node.get("axis") or (path[-1] if path else "grid"))
    return GridNode(path, axis, choices)


def nest_dotted(tree: Any) -> Any:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``, recursively (grid nodes are kept as they are)."""
    if not isinstance(tree, dict) or _is_grid(tree):
        return tree
    out: dict[str, Any] = {}
    for key, value in tree.items():
        parts = str(key).split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        value = nest_dotted(value)
        last = parts[-1]
        if isinstance(target.get(last), dict) and isinstance(value, dict) and not _is_grid(value):
            target[last] = _merge(target[last], value)
        else:
            target[last] = value
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict) and not _is_grid(value)
        out[key] = _merge(out[key], value) if both else value
    return out


def find_grids(tree: Any, path: tuple[str, ...] = ()) -> list[GridNode]:
    """Every grid node in ``tree``, depth first in document order."""
    if _is_grid(tree):
        return [_grid_node(tree, path)]
    if isinstance(tree, dict):
        return [node for key, value in tree.items() for node in find_grids(value, (*path, str(key)))]
    return []


def _substitute(tree: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return copy.deepcopy(value)
    out = dict(tree)
    out[path[0]] = _substitute(tree[path[0]], path[1:], value)
    return out


@dataclass
class Run:
    """One point of the grid: its name, directory, grid choices, config files and config fragment."""

    index: int
    name: str
    directory: Path
    params: dict[str, Any]
    seed: int
    configs: list[Any]
    fragment: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        if (self.directory / "metrics.json").is_file():
            return STATUS_DONE
        if (self.directory / "sweep" / "failed.json").is_file():
            return STATUS_FAILED
        return STATUS_PENDING


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", text).strip("-") or "run"


_PREPARED = re.compile(r"\$\{prepare\.([^}]+)\}")


def _fill_prepared(tree: Any, checkpoints: dict[str, str]) -> Any:
    """Replace ``${prepare.<name>}`` in every string of ``tree`` by that prepare stage's checkpoint path."""
    if isinstance(tree, dict):
        return {key: _fill_prepared(value, checkpoints) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_fill_prepared(value, checkpoints) for value in tree]
    if isinstance(tree, str):

        def path(match: re.Match[str]) -> str:
            if match.group(1) not in checkpoints:
                raise ValueError(f"sweep: {match.group(0)} names no entry of prepare: {sorted(checkpoints)}")
            return checkpoints[match.group(1)]

        return _PREPARED.sub(path, tree)
    return tree


@dataclass
class Sweep:
    """A parsed sweep file: its output folder, grid axes, seeds, the runs they expand to and the prepare
    fits those runs depend on."""

    name: str
    out: Path
    seeds: list[int]
    collect: list[str] | None
    runs: list[Run]
    axes: list[str]
    stages: list[Run] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path, out: str | Path | None = None) -> Sweep:
        spec = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(spec) - {"name", "out", "seeds", "configs", "config", "collect", "prepare"}
        if unknown:
            raise ValueError(f"sweep {path}: unknown keys {sorted(unknown)}")
        return cls.from_spec(spec, default_name=Path(path).stem, out=out)

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], default_name: str = "sweep", out: str | Path | None = None
    ) -> Sweep:
        name = str(spec.get("name") or default_name)
        root = Path(out or spec.get("out") or Path("runs") / "sweeps" / name)
        seeds = [int(s) for s in spec.get("seeds", [0])]
        stages, checkpoints = [], {}
        for stage_name, entries in (spec.get("prepare") or {}).items():
            directory = root / "_prepare" / _slug(str(stage_name))
            entries = entries if isinstance(entries, list) else [entries]
            stages.append(Run(-1, f"_prepare/{stage_name}", directory, {}, seeds[0], entries, {}))
            checkpoints[str(stage_name)] = str((directory / "checkpoints" / "last.ckpt").resolve())
        tree = {"configs": spec.get("configs", []), "config": nest_dotted(spec.get("config") or {})}
        tree = _fill_prepared(tree, checkpoints)
        nodes = find_grids(tree)
        axes = [node.axis for node in nodes]
        if len(set(axes)) != len(axes):
            raise ValueError(f"sweep {name}: two grids share an axis name {axes}; set axis: on one of them")
        runs = []
        for combo in itertools.product(*(node.choices for node in nodes), seeds):
            *choices, seed = combo
            point = tree
            params: dict[str, Any] = {}
            for node, (label, value) in zip(nodes, choices, strict=True):
                point = _substitute(point, node.path, value)
                params[node.axis] = label
            parts = [f"{axis}={label}" for axis, label in params.items()] + [f"seed={seed}"]
            run_name = _slug(",".join(parts))
            configs = point["configs"] if isinstance(point["configs"], list) else [point["configs"]]
            runs.append(Run(len(runs), run_name, root / run_name, params, seed, configs, point["config"]))
        if len({run.name for run in runs}) != len(runs):
            raise ValueError(f"sweep {name}: grid values give duplicate run names; name them with a mapping")
        collect = spec.get("collect")
        return cls(name, root, seeds, list(collect) if collect else None, runs, axes, stages)


# ---------------------------------------------------------------------------------------------- running


def prepare(run: Run) -> list[Path]:
    """Write the run's generated config files; return every ``-c`` file in order (absolute paths)."""
    folder = run.directory / "sweep"
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for k, entry in enumerate(run.configs):
        for item in entry if isinstance(entry, list) else [entry]:
            if isinstance(item, dict):
                inline = folder / f"inline_{len(files)}_{k}.yaml"
                inline.write_text(yaml.safe_dump(nest_dotted(item), sort_keys=False))
                files.append(inline.resolve())
            else:
                if not Path(item).is_file():
                    raise FileNotFoundError(f"sweep run {run.name}: config file {item} not found")
                files.append(Path(item).resolve())
    if run.fragment:
        fragment = folder / "sweep_config.yaml"
        fragment.write_text(yaml.safe_dump(run.fragment, sort_keys=False))
        files.append(fragment.resolve())
    run.files = files
    (folder / "run.json").write_text(
        json.dumps({"index": run.index, "name": run.name, "params": run.params, "seed": run.seed}, indent=2)
    )
    return files


def commands(run: Run, python: str | None = None) -> list[list[str]]:
    """The ``rezdiff fit`` and ``rezdiff test`` command lines of a prepared run (``python -m rezdiff``)."""
    python = python or sys.executable
    configs = [arg for path in run.files for arg in ("-c", str(path))]
    common = [
        "--seed_everything",
        str(run.seed),
        "--trainer.default_root_dir",
        str(run.directory.resolve()),
        "--trainer.enable_progress_bar",
        "false",
    ]
    ckpt = str((run.directory / "checkpoints" / "last.ckpt").resolve())
    return [
        [python, "-m", "rezdiff", "fit", *configs, *common],
        [python, "-m", "rezdiff", "test", *configs, *common, "--ckpt_path", ckpt],
    ]


def execute(run: Run, python: str | None = None, test: bool = True) -> dict[str, Any]:
    """Run fit (unless an earlier attempt finished it) and test (unless ``test=False``: a prepare stage);
    record the outcome in the run folder."""
    folder = run.directory / "sweep"
    (folder / "failed.json").unlink(missing_ok=True)
    fit_command, test_command = commands(run, python)
    timings: dict[str, Any] = {}
    log_path = folder / "log.txt"
    with log_path.open("a") as log:
        for stage, command in [("fit", fit_command), ("test", test_command)][: 2 if test else 1]:
            done = folder / f"{stage}.done"
            if stage == "fit" and done.is_file():
                continue
            log.write(f"\n$ {shlex.join(command)}\n")
            log.flush()
            start = time.perf_counter()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
            timings[f"{stage}_seconds"] = round(time.perf_counter() - start, 2)
            if result.returncode != 0:
                failure = {"stage": stage, "returncode": result.returncode, "log": str(log_path), **timings}
                (folder / "failed.json").write_text(json.dumps(failure, indent=2))
                return failure
            done.write_text(json.dumps(timings))
    return timings


# ---------------------------------------------------------------------------------------------- results


def _base_metric(key: str) -> tuple[str, str | None]:
    name, _, resolution = key.partition("@")
    return name, resolution or None


def collect(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per run: name, status, grid choices, seed, metrics (``fid@32``, ...) and timings."""
    rows = []
    for run in sweep.runs:
        row: dict[str, Any] = {"run": run.name, "status": run.status, **run.params, "seed": run.seed}
        folder = run.directory / "sweep"
        for stage in ("fit", "test"):
            done = folder / f"{stage}.done"
            if done.is_file():
                row[f"{stage}_seconds"] = json.loads(done.read_text()).get(f"{stage}_seconds")
        if run.status == STATUS_DONE:
            report = json.loads((run.directory / "metrics.json").read_text())
            # a metric's keys as rezdiff test recorded them (kid: kid@R and kid_std@R; pfid: pfid32@R)
            produced = report.get("metric_keys", {})
            chosen = {key for name in sweep.collect or () for key in produced.get(name, ())}
            for key, value in report.get("metrics", {}).items():
                wanted = sweep.collect is None or _base_metric(key)[0] in sweep.collect or key in chosen
                if wanted or key.startswith("test/"):
                    row[key] = value
        elif run.status == STATUS_FAILED:
            failure = json.loads((folder / "failed.json").read_text())
            row["error"] = f"{failure['stage']} exited {failure['returncode']}; see {failure['log']}"
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], axes: list[str], path: Path) -> Path | None:
    """Metric vs resolution, one panel per metric, one line per grid point (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, dict[int, list[float]]]] = {}
    for row in rows:
        if row.get("status") != STATUS_DONE:
            continue
        line = ", ".join(f"{a}={row[a]}" for a in axes) or row["run"].rsplit(",seed=", 1)[0]
        for key, value in row.items():
            name, resolution = _base_metric(key)
            if resolution is None or name.endswith("_std") or not isinstance(value, (int, float)):
                continue
            height = int(resolution.split("x")[0])
            series.setdefault(name, {}).setdefault(line, {}).setdefault(height, []).append(float(value))
    if not series:
        return None
    figure, panels = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.4), squeeze=False)
    for panel, (name, lines) in zip(panels[0], sorted(series.items()), strict=True):
        for line, points in sorted(lines.items()):
            xs = sorted(points)
            panel.plot(xs, [sum(points[x]) / len(points[x]) for x in xs], marker="o", label=line)
        panel.set_xscale("log", base=2)
        panel.set_xticks(sorted({x for p in lines.values() for x in p}))
        panel.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        panel.set_xlabel("resolution")
        panel.set_title(name)
        panel.grid(alpha=0.3)
    panels[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results(sweep: Sweep) -> list[dict[str, Any]]:
    """results.csv, results.md, results.json and results.png in the sweep folder."""
    rows = collect(sweep)
    sweep.out.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    with (sweep.out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if c not in ("error",)]
    text = f"# Sweep {sweep.name}\n\n" + markdown_table(rows, shown)
    failed = [row for row in rows if row.get("error")]
    if failed:
        text += "\nFailed runs:\n\n" + "".join(f"- {row['run']}: {row['error']}\n" for row in failed)
    (sweep.out / "results.md").write_text(text)
    (sweep.out / "results.json").write_text(json.dumps({"sweep": sweep.name, "rows": rows}, indent=2) + "\n")
    plot(rows, sweep.axes, sweep.out / "results.png")
    return rows


# ---------------------------------------------------------------------------------------------- command


def parse(args: list[str]) -> Any:
    """The options of ``rezdiff sweep ARGS``, parsed by jsonargparse in the dialect of ``rezdiff fit`` (``-c``
    files, ``--print_config``, ``--print_commands``, ``--run [0,2]``); the argparse spellings of earlier
    releases (``--print-commands``, ``--run 0 2``) warn once (:func:`rezdiff.commands.respell`)."""
    from rezdiff.commands import add_flag, command_parser, hyphenated, respell

    parser = command_parser("sweep", "Fit and test a grid of runs.")
    parser.add_argument("file", type=str, help="sweep file, e.g. configs/sweeps/families_quickstart.yaml")
    parser.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="sweep folder (default: the file's out: or runs/sweeps/NAME)",
    )
    add_flag(
        parser,
        "print_commands",
        False,
        "print one shell command per unfinished run (for SLURM arrays) instead of running",
    )
    parser.add_argument(
        "--run",
        type=int | list[int] | None,
        default=None,
        help="run only this run index or these, e.g. 2 or [0,2]",
    )
    add_flag(parser, "collect", False, "only rebuild the results from the run folders")
    add_flag(parser, "retry_failed", False, "with --print_commands: include failed runs")
    parser.add_argument(
        "--python", type=str | None, default=None, help="interpreter for the runs (default: this one)"
    )
    names = [name for name in parser._option_string_actions if name.startswith("--")]
    try:
        argv = respell("sweep", args, hyphenated(names), lists=("--run",))
    except ValueError as error:
        parser.error(str(error))
    options = parser.parse_args(argv)
    if isinstance(options.run, int):
        options.run = [options.run]
    return options


def sweep_main(args: list[str]) -> list[dict[str, Any]] | list[str]:
    """``rezdiff sweep FILE``: run every unfinished run, then write the results; see the module docstring."""
    options = parse(args)

    from tqdm.auto import tqdm

    sweep = Sweep.load(options.file, options.out)
    selected = [run for run in sweep.runs if options.run is None or run.index in options.run]
    if options.print_commands:
        lines = []
        for stage in sweep.stages:  # first: the runs need their checkpoints
            if not (stage.directory / "sweep" / "fit.done").is_file():
                prepare(stage)
                lines.append(shlex.join(commands(stage, options.python)[0]))
        for run in selected:
            if run.status == STATUS_DONE or (run.status == STATUS_FAILED and not options.retry_failed):
                continue
            prepare(run)
            lines.append(" && ".join(shlex.join(command) for command in commands(run, options.python)))
        print("\n".join(lines))
        return lines
    if not options.collect:
        pending = [run for run in selected if run.status != STATUS_DONE]
        skipped = len(selected) - len(pending)
        print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {skipped} finished, {len(pending)} to run")
        for stage in sweep.stages if pending else []:
            if (stage.directory / "sweep" / "fit.done").is_file():
                continue
            print(f"sweep {sweep.name}: fitting {stage.name} first")
            prepare(stage)
            outcome = execute(stage, options.python, test=False)
            if "returncode" in outcome:
                print(f"{stage.name} failed: see {outcome['log']} (the runs that need it will fail too)")
        with tqdm(pending, desc=f"sweep {sweep.name}", unit="run") as progress:
            for run in progress:
                progress.set_postfix_str(run.name)
                prepare(run)
                outcome = execute(run, options.python)
                if "returncode" in outcome:
                    tqdm.write(f"run {run.name} failed at {outcome['stage']}: see {outcome['log']}")
    rows = write_results(sweep)
    done = sum(row["status"] == STATUS_DONE for row in rows)
    failed = sum(row["status"] == STATUS_FAILED for row in rows)
    print(f"sweep {sweep.name}: {done} done, {failed} failed; results in {sweep.out}/results.md")
    return rows
