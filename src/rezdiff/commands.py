"""The ``rezdiff`` console script and ``python -m rezdiff``: ``rezdiff`` and ``rezdiff --help`` answer from
here without importing Lightning, diffusers or any family; every command goes on to :mod:`rezdiff.cli`."""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Iterable
from typing import Any, NoReturn

HELP = """usage: rezdiff <command> [options]

Resolution-agnostic diffusion models, trained and sampled from one command.

commands:
  fit        train a model:           rezdiff fit --config configs/quickstart/ddpm.yaml
  validate   validation loss of a checkpoint:  rezdiff validate --config CFG --ckpt_path CKPT
  test       test-set loss and the `evaluate:` metrics (FID, KID, SWD, ... at each resolution) of a
             checkpoint, written to <run>/metrics.json:  rezdiff test --config CFG --ckpt_path CKPT
  predict    generate one PNG per seed into <run>/predictions/<H>x<W>/seed######.png, on any number of
             ranks: rezdiff predict --config CFG --ckpt_path CKPT --predictions.seeds 0-49999
             [--predictions.resolution 256] [--predictions.sample_options '{sampler: ddim, eta: 0.5}']
  sample     write samples of any checkpoint at several resolutions, or solve an inverse problem:
             rezdiff sample --ckpt_path run/checkpoints/last.ckpt --resolution [64,128] --out samples/
             (∞-Diff: --inpaint IMAGE --hole [X0,Y0,X1,Y1] | --mask IMAGE; --super_resolve IMAGE;
              INFD: --guide box=X0,Y0,X1,Y1,loss=color,mean=R,G,B --guidance_scale 20;
              INFD stage 1: --super_resolve IMAGE renders its reconstruction at --resolution)
  stats      compute and cache the reference features `evaluate:` needs:  rezdiff stats --config CFG
  export     a checkpoint as a diffusers pipeline (DDPM, INFD) or as safetensors + JSON (any model):
             rezdiff export --ckpt_path CKPT --out DIR --format diffusers|safetensors
  sweep      fit + test a grid of runs, one results table and plot:
             rezdiff sweep configs/sweeps/families_quickstart.yaml [--print_commands]

Every command parses its options with jsonargparse, in one dialect: `-c FILE` (several allowed, later
ones and then the command line override earlier ones), `--print_config` (the resolved options as
YAML), underscores (--ckpt_path, --batch_size), lists as [64,128], flags as --force / --no_force, and
dotted keys for nested options (--evaluate.resolutions [32,64], --model.init_args.sample_steps 50).
`rezdiff <command> --help` lists a command's options (`rezdiff sample --ckpt_path CKPT --help`: with
the sampler settings of that checkpoint's family). The argparse spellings of earlier releases
(--ckpt, --super-resolve, --resolution 64 128, ...) still work with one FutureWarning.
"""


def print_overview(argv: list[str]) -> bool:
    """Print :data:`HELP` and return True when ``argv`` is ``-h``/``--help``; with no command at all,
    print it and exit with status 2; otherwise False (a command to run)."""
    if argv and argv[0] not in ("-h", "--help"):
        return False
    print(HELP)
    if not argv:
        raise SystemExit(2)
    return True


def entry_point() -> None:
    """Print the overview for no command or ``-h``/``--help``; otherwise run :func:`rezdiff.cli.main`."""
    if print_overview(sys.argv[1:]):
        return
    from rezdiff.cli import entry_point as run

    run()


# ----------------------------------------------------------------------------------- one flag dialect
# sample, sweep and export parse with jsonargparse like fit (and stats, which is LightningCLI's parser):
# `-c FILE` (several allowed),
# `--print_config`, underscores (`--ckpt_path`), lists as `--resolution [64,128]`, flags as `--force` /
# `--no_force` (or `--force true`). The argparse spellings of earlier releases are rewritten by
# `respell` with one FutureWarning; they go in the next release.


class UsageError(SystemExit):
    """A user error of a command: exit status 2 (argparse's) and the one-line message as ``str``."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(command: str, message: str) -> NoReturn:
    """Print ``rezdiff COMMAND: error: MESSAGE`` as one line on stderr and exit with status 2."""
    line = f"rezdiff {command}: error: {' '.join(str(message).split())}"
    print(line, file=sys.stderr)
    raise UsageError(line)


def _type_name(text: str) -> str:
    """``<class 'int'>`` -> ``int``, ``typing.Literal['a', 'b']`` -> ``one of a, b``, NoneType -> ``null``."""
    text = text.strip()
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text)
    if literal:
        return "one of " + ", ".join(part.strip().strip("'\"") for part in literal.group(1).split(","))
    text = re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", text)
    return "null" if text == "NoneType" else text


def one_line(message: str) -> str:
    """jsonargparse's multi-line message about one key as one line naming the option, the accepted types
    and the value given: ``--eta: expected float or null, got nan``."""
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S)
    if match is None:
        return " ".join(message.split())
    key, detail = match.groups()
    given = re.search(r"(?:Given|Got) value: (.*)", detail)
    expected = re.findall(r"Expected a (.+?)(?:\. Got value: .*)?$", detail, re.M)
    names = list(dict.fromkeys(_type_name(text) for text in expected))
    if not names:
        return f"--{key}: {' '.join(detail.split())}"
    return (
        f"--{key}: expected {' or '.join(names)}, got {given.group(1).strip() if given else 'another value'}"
    )


def command_parser(command: str, description: str) -> Any:
    """A jsonargparse parser for ``rezdiff COMMAND`` with ``-c/--config`` files (and so ``--print_config``)
    whose errors are one line (:func:`fail`), not a usage block."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    class Parser(ArgumentParser):
        unrecognized_hint = ""  # said after "unrecognized arguments: ..." (what the command does accept)

        def error(self, message: str, ex: Exception | None = None) -> NoReturn:  # type: ignore[override]
            if message.startswith("unrecognized arguments") and self.unrecognized_hint:
                message = f"{message} ({self.unrecognized_hint})"
            fail(command, one_line(message))

    parser = Parser(prog=f"rezdiff {command}", description=description)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these options")
    return parser


def add_flag(parser: Any, name: str, default: bool | None, help: str) -> None:
    """A flag ``--NAME`` / ``--no_NAME``, also ``--NAME true|false`` and ``NAME: true`` in a file."""
    from jsonargparse import ActionYesNo

    parser.add_argument(
        f"--{name}", action=ActionYesNo(no_prefix="no_"), nargs="?", default=default, help=help
    )


def _is_value(token: str) -> bool:
    """A command-line word that is a value, not an option (negative numbers are values)."""
    return not token.startswith("-") or bool(re.match(r"-\d|-\.\d", token))


def respell(
    command: str,
    argv: list[str],
    renames: dict[str, str],
    lists: Iterable[str] = (),
    appends: Iterable[str] = (),
    commas: Iterable[str] = (),
    nullable: Iterable[str] = (),
) -> list[str]:
    """``argv`` in the jsonargparse dialect, with one FutureWarning naming every old spelling rewritten.

    ``renames`` maps old option names to new ones (``--ckpt`` -> ``--ckpt_path``); ``lists`` are (new)
    options whose several space-separated values become ``[a,b]``; ``appends`` options that were repeated
    to give several values; ``commas`` options whose value was one ``X0,Y0,X1,Y1`` word (now ``[...]``);
    ``nullable`` options whose ``none`` is now ``null``. An old spelling given with its new one is a
    ValueError naming both."""
    lists, appends, commas, nullable = set(lists), set(appends), set(commas), set(nullable)
    out: list[str] = []
    notes: dict[str, str] = {}
    used_new: set[str] = set()
    used_old: dict[str, str] = {}
    appended: dict[str, int] = {}  # new option -> index in out of its merged value
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            out.append(token)
            continue
        name, equals, value = token.partition("=")
        new = renames.get(name, name)
        if new != name:
            used_old[new] = name
            notes[name] = f"{name} is now {new}"
        else:
            used_new.add(name)
        values = [value] if equals else []
        if not equals and (new in lists or new in appends or new in commas or new in nullable):
            while i < len(argv) and _is_value(argv[i]) and (new in lists or not values):
                values.append(argv[i])
                i += 1
        if new in lists and len(values) > 1:
            notes[f"{new} list"] = f"{new} {' '.join(values)} is now {new} {_listed(values)}"
            values = [_listed(values)]
        if new in commas and values and "," in values[0] and not values[0].lstrip().startswith("["):
            notes[f"{new} commas"] = f"{new} {values[0]} is now {new} [{values[0]}]"
            values = [f"[{values[0]}]"]
        if new in nullable and values and values[0].lower() == "none":
            notes[f"{new} none"] = f"{new} none is now {new} null"
            values = ["null"]
        if new in appends and values:
            if new in appended:  # repeated: one list of every value
                index = appended[new]
                merged = json.loads(out[index]) if out[index].startswith("[") else [out[index]]
                out[index] = json.dumps([*merged, *values])
                notes[f"{new} repeated"] = f"a repeated {new} is now one {new} '{out[index]}'"
                continue
            appended[new] = len(out) + 1
        out.append(new)
        out.extend(values)
    for new, old in used_old.items():
        if new in used_new:
            raise ValueError(
                f"{old} and {new} are both given, but {old} is the old spelling of {new}; keep only {new}"
            )
    if notes:  # attributed to no source file, so that the console shows this one line and no code line
        warnings.warn_explicit(
            f"rezdiff {command}: old spelling: {'; '.join(notes.values())}; "
            "the old spellings will be removed in the next release",
            FutureWarning,
            filename="rezdiff",
            lineno=0,
            module="rezdiff",
        )
    return out


def _listed(values: list[str]) -> str:
    """Several command-line words as one list value: ``[64,128]``, ``[a.png,b.png]``, or a JSON list where a
    word holds a character of YAML's flow syntax (a comma, a bracket, a colon, a quote, a space)."""
    if any(re.search(r"[,\[\]{}:#'\"\s]", value) for value in values):
        return json.dumps(values)
    return "[" + ",".join(values) + "]"


def hyphenated(options: Iterable[str]) -> dict[str, str]:
    """``{"--batch-size": "--batch_size", ...}``: the argparse spelling of every new option with an underscore
    (``--no-X`` too for flags)."""
    return {name.replace("_", "-"): name for name in options if "_" in name}
