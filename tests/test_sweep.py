"""`rezdiff sweep`: grid expansion, generated configs, skip-finished, failures, print-commands, results."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from rezdiff.cli import main
from rezdiff.sweep import Sweep, nest_dotted, prepare
from tests.helpers import REPO, TINY_DDPM

# A stand-in for `python -m rezdiff fit|test ...`: fit fails when a config sets the model's optimiser lr to
# "fail", otherwise writes last.ckpt; test writes metrics.json with fid@16 = lr and fid@32 = 2 lr. It lets
# the runner's bookkeeping be tested in milliseconds; the slow test below runs the real commands.
STUB = """#!{python}
import json, sys, pathlib, yaml
args = sys.argv[3:]
stage, root = args[0], pathlib.Path(args[args.index("--trainer.default_root_dir") + 1])
lr = 1.0
for i, a in enumerate(args):
    if a == "-c":
        config = yaml.safe_load(open(args[i + 1])) or {{}}
        model = config.get("model", {{}}).get("init_args", {{}})
        lr = model.get("optimizer", {{}}).get("init_args", {{}}).get("lr", lr)
with open(root.parent / "calls.txt", "a") as log:
    log.write(stage + " " + root.name + "\\n")
if lr == "fail":
    sys.exit(3)
if stage == "fit":
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    (root / "checkpoints" / "last.ckpt").write_text("ckpt")
else:
    metrics = {{"fid@16": lr, "fid@32": 2 * lr, "kid@16": 0.1, "test/loss": 0.5}}
    (root / "metrics.json").write_text(json.dumps({{"metrics": metrics}}))
"""


@pytest.fixture
def stub_python(tmp_path: Path) -> str:
    path = tmp_path / "stub_python"
    path.write_text(STUB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_expansion_names_runs_and_substitutes_every_leaf(tmp_path: Path) -> None:
    spec = {
        "seeds": [0, 1],
        "configs": {"axis": "family", "grid": {"ddpm": str(TINY_DDPM), "dvdp": [str(TINY_DDPM), {"a.b": 1}]}},
        "config": {
            "trainer.max_epochs": 1,
            "model": {"class_path": {"grid": ["rezdiff.models.DDPM", "rezdiff.models.DVDP"]}},
            "model.init_args.optimizer.init_args.lr": {"grid": [0.1, 0.2, 0.3]},
        },
    }
    sweep = Sweep.from_spec(spec, out=tmp_path)
    assert sweep.axes == ["family", "class_path", "lr"]
    assert len(sweep.runs) == 2 * 2 * 3 * 2
    names = [run.name for run in sweep.runs]
    assert len(set(names)) == len(names)
    assert names[0] == "family=ddpm,class_path=DDPM,lr=0.1,seed=0"
    last = sweep.runs[-1]
    assert last.params == {"family": "dvdp", "class_path": "DVDP", "lr": "0.3"} and last.seed == 1
    assert last.fragment == {
        "trainer": {"max_epochs": 1},
        "model": {
            "class_path": "rezdiff.models.DVDP",
            "init_args": {"optimizer": {"init_args": {"lr": 0.3}}},
        },
    }
    assert last.configs == [str(TINY_DDPM), {"a.b": 1}]
    assert nest_dotted({"a.b.c": 1, "a": {"b": {"d": 2}}}) == {"a": {"b": {"c": 1, "d": 2}}}
    with pytest.raises(ValueError, match="axis"):
        Sweep.from_spec({"config": {"x.lr": {"grid": [1]}, "y.lr": {"grid": [2]}}})


def test_class_path_grid_keeps_shared_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {
        "configs": [str(TINY_DDPM)],
        "config": {"model.class_path": {"grid": ["rezdiff.models.DDPM", "rezdiff.models.DVDP"]}},
    }
    sweep = Sweep.from_spec(spec, out=tmp_path)
    dvdp = sweep.runs[1]
    files = prepare(dvdp)
    with pytest.raises(SystemExit):
        main(["fit", *[a for f in files for a in ("-c", str(f))], "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "rezdiff.models.DVDP"
    assert config["model"]["init_args"]["unet"]["block_out_channels"] == [16, 32]  # kept from the DDPM base


def test_runner_records_failures_continues_and_skips_finished_runs(tmp_path: Path, stub_python: str) -> None:
    out = tmp_path / "sweep"
    spec = {
        "configs": [str(TINY_DDPM)],
        "config": {"model.init_args.optimizer.init_args.lr": {"grid": [0.5, "fail", 2.0]}},
    }
    file = write(tmp_path / "s.yaml", spec)
    rows = main(["sweep", str(file), "--out", str(out), "--python", stub_python])
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert rows[0]["fid@16"] == 0.5 and rows[2]["fid@32"] == 4.0
    failed = out / "lr=fail,seed=0"
    assert "fit exited 3" in rows[1]["error"] and (failed / "sweep" / "log.txt").is_file()
    calls = (out / "calls.txt").read_text().splitlines()
    assert calls == [
        "fit lr=0.5,seed=0",
        "test lr=0.5,seed=0",
        "fit lr=fail,seed=0",
        "fit lr=2.0,seed=0",
        "test lr=2.0,seed=0",
    ]

    text = (out / "results.md").read_text()
    assert "| lr=0.5,seed=0 | done |" in text and "Failed runs" in text
    assert (out / "results.csv").read_text().splitlines()[0].startswith("run,status,lr,seed")
    assert (out / "results.png").stat().st_size > 1000

    # Re-running: finished runs are skipped, the failed one is tried again (and fails again).
    main(["sweep", str(file), "--out", str(out), "--python", stub_python])
    assert (out / "calls.txt").read_text().splitlines()[len(calls) :] == ["fit lr=fail,seed=0"]

    # A run whose fit finished but whose test failed re-runs only the test.
    (out / "lr=2.0,seed=0" / "metrics.json").unlink()
    main(["sweep", str(file), "--out", str(out), "--python", stub_python, "--run", "2"])
    assert (out / "calls.txt").read_text().splitlines()[-1] == "test lr=2.0,seed=0"


def test_print_commands_emits_one_line_per_unfinished_run(
    tmp_path: Path, stub_python: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    file = write(tmp_path / "s.yaml", {"configs": [str(TINY_DDPM)], "seeds": [0, 1, 2]})
    main(["sweep", str(file), "--out", str(out), "--python", stub_python, "--run", "1"])
    capsys.readouterr()
    lines = main(["sweep", str(file), "--out", str(out), "--print_commands"])
    assert capsys.readouterr().out.strip().splitlines() == lines
    assert len(lines) == 2 and "seed=0" in lines[0] and "seed=2" in lines[1]
    assert not (out / "calls.txt").read_text().count("seed=2")  # printed, not run
    for line in lines:
        fit, test = line.split(" && ")
        assert " -m rezdiff fit -c " in fit and " -m rezdiff test -c " in test and "--ckpt_path" in test
        assert "--seed_everything" in fit


def test_prepare_stage_is_fitted_once_first_and_its_checkpoint_substituted(
    tmp_path: Path, stub_python: str
) -> None:
    out = tmp_path / "sweep"
    spec = {
        "configs": [str(TINY_DDPM)],
        "prepare": {"stage1": [str(TINY_DDPM), {"model.init_args.optimizer.init_args.lr": 0.25}]},
        "config": {
            "stage1_ckpt": "${prepare.stage1}",
            "model.init_args.optimizer.init_args.lr": {"grid": [0.5, 2.0]},
        },
    }
    file = write(tmp_path / "s.yaml", spec)
    with pytest.warns(FutureWarning, match="--print-commands is now --print_commands"):  # the old spelling
        commands = main(["sweep", str(file), "--out", str(out), "--print-commands"])
    assert len(commands) == 3 and " fit " in commands[0] and "_prepare/stage1" in commands[0]
    assert " test " not in commands[0]
    rows = main(["sweep", str(file), "--out", str(out), "--python", stub_python])
    assert [row["status"] for row in rows] == ["done", "done"] and len(rows) == 2  # the stage is no row
    assert (out / "_prepare" / "calls.txt").read_text().splitlines() == ["fit stage1"]
    checkpoint = out / "_prepare" / "stage1" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    fragment = yaml.safe_load((out / "lr=0.5,seed=0" / "sweep" / "sweep_config.yaml").read_text())
    assert fragment["stage1_ckpt"] == str(checkpoint.resolve())
    main(["sweep", str(file), "--out", str(out), "--python", stub_python])  # nothing left: no refit
    assert (out / "_prepare" / "calls.txt").read_text().splitlines() == ["fit stage1"]
    with pytest.raises(ValueError, match=r"\$\{prepare.stage2\} names no entry"):
        Sweep.from_spec({**spec, "config": {"x": "${prepare.stage2}"}})


@pytest.mark.slow
def test_real_sweep_of_two_tiny_families(tmp_path: Path) -> None:
    """End to end with the real commands: DDPM and DVDP tiny configs, fit + test, one results table."""
    spec = {
        "configs": {
            "axis": "family",
            "grid": {"ddpm": str(TINY_DDPM), "dvdp": str(REPO / "tests/configs/tiny_dvdp.yaml")},
        },
        "config": {
            "trainer.max_epochs": 1,
            "trainer.callbacks": [],
            "evaluate": {
                "resolutions": [16, 32],
                "metrics": ["fid", "swd"],
                "num_samples": 8,
                "stats_dir": str(tmp_path / "stats"),
            },
        },
    }
    file = write(tmp_path / "s.yaml", spec)
    env_before = dict(os.environ)
    rows = main(["sweep", str(file), "--out", str(tmp_path / "sweep")])
    assert dict(os.environ) == env_before
    assert [row["status"] for row in rows] == ["done", "done"], rows
    for row in rows:
        assert {"fid@16", "fid@32", "swd@16", "swd@32", "test/loss"} <= set(row)
    metrics = json.loads((tmp_path / "sweep" / "family=dvdp,seed=0" / "metrics.json").read_text())
    assert metrics["model"].endswith("DVDP")


@pytest.mark.parametrize("file", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweeps_expand_into_runs_the_cli_accepts(
    file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every run (and prepare stage) of a shipped sweep is a config that ``rezdiff fit`` parses and checks."""
    monkeypatch.chdir(REPO)  # sweep files name their configs relative to the repository root
    sweep = Sweep.load(file, out=tmp_path / file.stem)
    assert sweep.runs
    for run in [*sweep.stages, *sweep.runs]:
        files = prepare(run)
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *[a for f in files for a in ("-c", str(f))], "--print_config"])
        assert exit_info.value.code in (0, None), run.name
        config = yaml.safe_load(capsys.readouterr().out)
        assert "${prepare." not in json.dumps(config), run.name
