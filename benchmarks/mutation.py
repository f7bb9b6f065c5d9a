"""Mutation testing with mutmut on one subset of the package, and its score table.

    python benchmarks/mutation.py core                       # mutmut on core/ with core's fast tests
    python benchmarks/mutation.py ddpm dvdp                  # several subsets, one after the other
    python benchmarks/mutation.py core --functions 'rezdiff.core.gaussian.*'   # only these mutants
    python benchmarks/mutation.py core --report-only         # rebuild the result files from the last run
    python benchmarks/mutation.py core_sampling --part loops --modules rezdiff/core/loops.py  # a part
    python benchmarks/mutation.py --list                     # the subsets, their modules and tests

Needs the ``dev`` extra (``pip install -c constraints.txt -e ".[dev]"``); not run by CI. Each subset runs
in its own folder ``build/mutation/<subset>/`` (mutmut keeps its state, ``mutants/``, in the folder it runs
from, so subsets do not disturb each other and a rerun only tests mutants of functions that changed). That
folder holds a copy of ``src`` (the subset's modules with the ``__init__`` pragma mutmut needs and
``@torch.no_grad()`` moved into the body so that mutmut mutates the method, see :func:`mutable_copy`),
links to ``tests`` and ``configs``, a copy of ``setup.cfg`` (the pytest settings) and a
``pyproject.toml`` whose ``[tool.mutmut]`` is the repository's with ``only_mutate`` set to the subset's
modules and the test selection set to the union of their test files (:data:`MODULE_TESTS`). mutmut runs
that selection once to learn which tests call which function, then runs each mutant against only those
tests. The run is niced (``--nice``, 15 by default) with one worker (``--workers``): the machine is shared.

Afterwards the script writes ``benchmarks/results/mutation_<subset>.json`` and ``.md``: per module the
mutants, killed, survived (including mutants no selected test reaches), timeouts, the survivors explained as
equivalent in ``benchmarks/mutation_equivalents.toml``, and the score, with the date and every unexplained
survivor's diff. An explanation covers a mutant only while its diff is the recorded one: after an edit of
the function the mutant is counted again until it is re-explained.

A subset too slow for one run is run in parts: ``--part NAME`` runs in ``build/mutation/<subset>-<NAME>/``
with its own modules (``--modules``, within the subset), ``--functions`` and ``--tests`` (a different test
selection makes mutmut start over, so each selection needs its own folder), and the subset's report merges
``<subset>/`` and every ``<subset>-*/`` folder: per mutant the latest run's verdict, with each part's
mutants, tests and wall time listed; a module no part has run yet is named as such.

Score = detected / (mutants - equivalent), where detected = killed + timeout (a mutant that hangs the tests
is caught) and mutants that mutmut did not finish ("not checked") are left out and counted apart.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mutmut itself needs 3.11's tomllib or the toml package
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EQUIVALENTS = REPO / "benchmarks" / "mutation_equivalents.toml"
WORK = REPO / "build" / "mutation"

# module (relative to src/) -> the fast test files that check it; a module's mutants run only the tests
# among these that call the mutated function
MODULE_TESTS: dict[str, list[str]] = {
    "rezdiff/core/ema.py": ["tests/core/test_ema.py"],
    "rezdiff/core/gaussian.py": [
        "tests/core/test_gaussian.py",
        "tests/core/test_loops.py",
        "tests/core/test_vp_ode.py",
        "tests/models/test_oracle_ddpm_dvdp.py",
    ],
    "rezdiff/core/laplacian.py": ["tests/core/test_laplacian.py", "tests/metrics/test_swd.py"],
    "rezdiff/core/loops.py": [
        "tests/core/test_loops.py",
        "tests/core/test_gaussian.py",
        "tests/core/test_vp_ode.py",
        "tests/core/test_samplers.py",
    ],
    "rezdiff/models/infty_diff/mollified.py": [
        "tests/core/test_mollified.py",
        "tests/models/test_mollifier_contract.py",
    ],
    "rezdiff/core/shapes.py": ["tests/core/test_shapes.py", "tests/data/test_coords.py"],
    "rezdiff/core/samplers.py": ["tests/core/test_samplers.py"],
    "rezdiff/core/sampling.py": ["tests/core/test_sampling_contract.py", "tests/core/test_samplers.py"],
    "rezdiff/core/operators.py": [
        "tests/core/test_operators.py",
        "tests/core/test_operators_contract.py",
        "tests/models/test_oracle_multilevel_priors.py",
    ],
    "rezdiff/core/pyramid.py": [
        "tests/core/test_pyramid.py",
        "tests/core/test_pyramid_schedule.py",
        "tests/core/test_pyramid_steps.py",
        "tests/models/test_oracle_ddpm_dvdp.py",
    ],
    "rezdiff/core/schedules.py": ["tests/core/test_schedules.py", "tests/core/test_gaussian.py"],
    # the exact-oracle tests (sample laws, loss minima, objective terms by hand), the wiring tests
    # (sample == core sampler) and the start-time and per-image-seed tests of the family's sample();
    # DDPM leaves test_sampling_start.py out to keep its run within an hour on 2 shared cores
    "rezdiff/models/ddpm/module.py": ["tests/models/test_oracle_ddpm_dvdp.py", "tests/models/test_ddpm.py"],
    "rezdiff/models/dvdp/module.py": [
        "tests/models/test_oracle_ddpm_dvdp.py",
        "tests/models/test_dvdp.py",
        "tests/models/test_sampling_start.py",
        "tests/models/test_sampling_seeds.py",
    ],
    # family modules with their own tests, before their family's glob (the first matching key wins)
    "rezdiff/models/multilevel/priors.py": [
        "tests/core/test_operators.py",
        "tests/models/test_oracle_multilevel_priors.py",
        "tests/models/test_priors_contract.py",
    ],
    "rezdiff/models/infty_diff/mollifier.py": [
        "tests/core/test_operators.py",
        "tests/core/test_mollified.py",
        "tests/models/test_mollifier_contract.py",
    ],
    "rezdiff/models/infd/guidance.py": ["tests/inverse/test_guidance.py"],
    "rezdiff/models/infty_diff/inverse.py": ["tests/inverse/test_infty_diff_inverse.py"],
    "rezdiff/models/infty_diff/sparse.py": ["tests/nn/test_sparse.py"],
    "rezdiff/models/infd/clif.py": ["tests/nn/test_clif.py"],
    "rezdiff/models/multilevel/*.py": [
        "tests/models/test_multilevel.py",
        "tests/models/test_multilevel_sanity.py",
        "tests/models/test_oracle_multilevel.py",
        "tests/models/test_sampling_start.py",
        "tests/models/test_sample_defaults.py",
        "tests/models/test_sampling_seeds.py",
    ],
    "rezdiff/models/infty_diff/*.py": [
        "tests/models/test_infty_diff.py",
        "tests/models/test_infty_diff_network.py",
        "tests/models/test_oracle_infty_diff.py",
        "tests/models/test_sampling_start.py",
        "tests/models/test_sample_defaults.py",
        "tests/models/test_sampling_seeds.py",
    ],
    "rezdiff/models/infd/*.py": [
        "tests/models/test_infd_autoencoder.py",
        "tests/models/test_infd_latent.py",
        "tests/models/test_infd_objective.py",
        "tests/models/test_oracle_infd.py",
        "tests/models/test_sampling_start.py",
        "tests/models/test_sample_defaults.py",
        "tests/models/test_sampling_seeds.py",
    ],
}

# subset name -> module patterns (keys of MODULE_TESTS or globs over them)
SUBSETS: dict[str, list[str]] = {
    "core": ["rezdiff/core/*.py"],
    "core_maths": [
        "rezdiff/core/gaussian.py",
        "rezdiff/core/schedules.py",
        "rezdiff/core/operators.py",
        "rezdiff/core/pyramid.py",
        "rezdiff/models/infty_diff/mollified.py",
    ],
    # the reverse steps and loops every family's sample() calls (DDPM/DDIM/VP SDE/ODE) and their registry
    "core_sampling": ["rezdiff/core/gaussian.py", "rezdiff/core/loops.py", "rezdiff/core/samplers.py"],
    "ddpm": ["rezdiff/models/ddpm/module.py"],
    "dvdp": ["rezdiff/models/dvdp/module.py"],
    "ddpm_dvdp": ["rezdiff/models/ddpm/module.py", "rezdiff/models/dvdp/module.py"],  # one stats run for both
    "multilevel": ["rezdiff/models/multilevel/*.py"],
    "infty_diff": ["rezdiff/models/infty_diff/*.py"],
    "infd": ["rezdiff/models/infd/*.py"],
    "inverse": ["rezdiff/models/infty_diff/inverse.py", "rezdiff/models/infd/guidance.py"],
    "nn": ["rezdiff/models/infty_diff/sparse.py", "rezdiff/models/infd/clif.py"],
}

NOT_REACHED = 33  # mutmut's code for a mutant of a function that no selected test calls

# mutmut's exit code of a mutant's test run -> our category (mutmut.stats.status_by_exit_code, grouped)
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "survived",  # no test collected: nothing checks it
    33: "survived",  # no selected test calls the function (NOT_REACHED)
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    -9: "timeout",  # SIGKILL after the CPU limit
    -11: "suspicious",
    35: "suspicious",
    2: "not checked",
    None: "not checked",
}


def status_of(exit_code: int | None) -> str:
    """The category of a mutmut exit code (unknown codes are ``suspicious``, as in mutmut)."""
    return STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


def modules_of(patterns: list[str]) -> list[str]:
    """The :data:`MODULE_TESTS` patterns and the source files (relative to src/) a subset's patterns name."""
    src = REPO / "src"
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(str(p.relative_to(src)) for p in src.glob(pattern) if p.name != "__init__.py")
        if not matched:
            raise ValueError(
                f"subset pattern {pattern!r} matches no file under src/: fix SUBSETS or --modules"
            )
        files += [f for f in matched if f not in files]
    return files


def tests_for(module: str) -> list[str]:
    """The test files of a source file (relative to src/): the first matching :data:`MODULE_TESTS` key's."""
    for pattern, tests in MODULE_TESTS.items():
        if fnmatch.fnmatch(module, pattern):
            return tests
    raise ValueError(f"no tests mapped for {module}: add it to MODULE_TESTS in benchmarks/mutation.py")


def narrowed(tests: list[str], chosen: list[str]) -> list[str]:
    """``chosen`` (files or node ids) if each lies in one of ``tests``, else ``tests``; raise for a stray one.

    A narrower selection makes mutmut's instrumented run shorter; it stays within the mapped files so that a
    subset's score is never taken against tests of another module.
    """
    for item in chosen:
        if item.split("::", 1)[0] not in tests:
            raise ValueError(
                f"--tests {item!r} is not in this subset's test files ({', '.join(tests)}): "
                "name one of those files or a node id inside one"
            )
    return list(chosen) or tests


# --------------------------------------------------------------------------------------------------------
# Equivalent mutants and scores (no mutmut needed)
# --------------------------------------------------------------------------------------------------------


def changed_lines(diff: str) -> list[str]:
    """The removed and added lines of a unified diff, stripped: what identifies a mutation across runs."""
    return [
        line[0] + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


@dataclass
class Equivalent:
    """One survivor explained as equivalent: it changes nothing observable, so no test can kill it."""

    mutant: str
    diff: str
    reason: str


def load_equivalents(path: Path = EQUIVALENTS) -> dict[str, Equivalent]:
    """``[[mutant]]`` tables with ``name``, ``diff`` and ``reason`` from the equivalents file, by name."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    found: dict[str, Equivalent] = {}
    for entry in data.get("mutant", []):
        missing = [key for key in ("name", "diff", "reason") if not str(entry.get(key, "")).strip()]
        if missing:
            raise ValueError(f"{path}: entry {entry.get('name', '?')!r} lacks {', '.join(missing)}: add them")
        if entry["name"] in found:
            raise ValueError(f"{path}: mutant {entry['name']!r} is listed twice: keep one entry")
        found[entry["name"]] = Equivalent(entry["name"], entry["diff"], entry["reason"])
    return found


@dataclass
class ModuleScore:
    """Counts of one module's mutants by category; ``score`` excludes the explained equivalents."""

    module: str
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    equivalent: int = 0
    suspicious: int = 0
    skipped: int = 0
    not_checked: int = 0
    survivors: list[dict[str, str]] = field(default_factory=list)
    equivalents: list[dict[str, str]] = field(default_factory=list)
    # function -> category -> count (not for a row carried from an older result file)
    functions: dict[str, dict[str, int]] = field(default_factory=dict)
    # function -> survivors that no selected test calls (in ``survived``, listed apart from ``survivors``)
    unreached: dict[str, int] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """Detected (killed + timeout) over the non-equivalent mutants that were checked; None if none."""
        judged = self.killed + self.timeout + self.survived + self.suspicious
        return (self.killed + self.timeout) / judged if judged else None

    def row(self) -> dict[str, Any]:
        score = self.score
        return {
            "module": self.module,
            "mutants": self.mutants,
            "killed": self.killed,
            "survived": self.survived,
            "timeout": self.timeout,
            "equivalent": self.equivalent,
            "suspicious": self.suspicious,
            "not_checked": self.not_checked + self.skipped,
            "score": None if score is None else round(score, 4),
        }


def score_module(
    module: str,
    exit_codes: dict[str, int | None],
    diffs: dict[str, str],
    equivalents: dict[str, Equivalent],
) -> ModuleScore:
    """Classify one module's mutants; a survivor whose diff matches its explanation counts as equivalent.

    ``diffs`` needs an entry for every survivor (the unified diff mutmut shows for it).
    """
    result = ModuleScore(module)
    for name, code in sorted(exit_codes.items()):
        status, function = status_of(code), function_of(name)
        result.mutants += 1
        if status == "survived":
            explained = equivalents.get(name)
            diff = diffs.get(name, "")  # an unreached mutant's diff is not kept
            if explained is not None and changed_lines(explained.diff) == changed_lines(diff):
                status = "equivalent"
                result.equivalents.append({"name": name, "reason": explained.reason})
            elif code == NOT_REACHED:
                result.unreached[function] = result.unreached.get(function, 0) + 1
            else:
                result.survivors.append({"name": name, "diff": diff})
        status = "not_checked" if status == "not checked" else status
        setattr(result, status, getattr(result, status) + 1)
        counts = result.functions.setdefault(function, {})
        counts[status] = counts.get(status, 0) + 1
    return result


def function_of(mutant: str) -> str:
    """The function a mutant's name points at, as written in the source: ``Class.method`` or ``function``
    (mutmut names them ``<module>.xǁClassǁmethod__mutmut_N`` and ``<module>.x_function__mutmut_N``)."""
    tail = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    return ".".join(tail[2:].split("ǁ")) if tail.startswith("xǁ") else tail.removeprefix("x_")


def function_table(scores: list[ModuleScore]) -> list[str]:
    """Markdown rows per function of every module scored from per-mutant verdicts: where the mutants of a
    module's loss and sample code stand, apart from its other functions."""
    lines = [
        "| module | function | mutants | detected | survived | equivalent | not checked | score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in scores:
        for function, c in sorted(s.functions.items()):
            detected = c.get("killed", 0) + c.get("timeout", 0)
            judged = detected + c.get("survived", 0) + c.get("suspicious", 0)
            score = f"{100 * detected / judged:.1f}%" if judged else "–"
            cells = [
                f"`{s.module}`",
                f"`{function}`",
                str(sum(c.values())),
                str(detected),
                str(c.get("survived", 0) + c.get("suspicious", 0)),
                str(c.get("equivalent", 0)),
                str(c.get("not_checked", 0) + c.get("skipped", 0)),
                score,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def total(scores: list[ModuleScore]) -> ModuleScore:
    """The sum of several modules' counts (row ``all``)."""
    out = ModuleScore("all")
    for s in scores:
        for key in (
            "mutants",
            "killed",
            "survived",
            "timeout",
            "equivalent",
            "suspicious",
            "skipped",
            "not_checked",
        ):
            setattr(out, key, getattr(out, key) + getattr(s, key))
    return out


def markdown(subset: str, date: str, scores: list[ModuleScore], settings: dict[str, Any]) -> str:
    """The score table, the settings and every unexplained survivor's diff, as markdown."""
    header = [
        "module",
        "mutants",
        "killed",
        "survived",
        "timeout",
        "equivalent",
        "suspicious",
        "not checked",
        "score",
    ]
    lines = [
        f"# Mutation score: {subset}",
        "",
        f"Date: {date}. Generated by `python benchmarks/mutation.py {subset}` (mutmut {settings['mutmut']}); "
        "score = (killed + timeout) / (mutants - equivalent - not checked). Survived includes mutants that "
        "no "
        "selected test reaches. Equivalent mutants and why: `benchmarks/mutation_equivalents.toml`.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for s in [*scores, total(scores)]:
        row = s.row()
        score = "–" if row["score"] is None else f"{100 * row['score']:.1f}%"
        cells = [f"`{row['module']}`" if s.module != "all" else "**all**"]
        cells += [str(row[k]) for k in header[1:-2]] + [str(row["not_checked"]), score]
        lines.append("| " + " | ".join(cells) + " |")
    parts = settings.get("parts", [])
    if len(parts) > 1:  # one line per run folder: what it ran against which tests
        lines += [
            "",
            "Merged from these runs (a later run's verdict on a mutant replaces an earlier one):",
            "",
        ]
        for part in parts:
            named = part["functions"]
            functions = (
                f"{len(named)} mutants by name (the JSON lists them)"
                if len(named) > 8
                else " ".join(f"`{f}`" for f in named) or "all"
            )
            tests = ", ".join(f"`{t}`" for t in part["tests"])
            lines.append(
                f"- `{part['folder']}`: mutants {functions}; tests {tests}; wall time {part['wall']}."
            )
        lines.append("")
    else:
        lines += [
            "",
            f"Tests: {', '.join(f'`{t}`' for t in settings['tests'])}.",
            f"Wall time: {settings['wall']}.",
            "",
        ]
    if settings.get("not_run"):
        lines += [f"Not run yet: {', '.join(f'`{m}`' for m in settings['not_run'])}.", ""]
    if any(s.functions for s in scores):
        lines += ["## By function", "", *function_table(scores), ""]
    survivors = [m for s in scores for m in s.survivors]
    unreached = [(s.module, f, n) for s in scores for f, n in sorted(s.unreached.items())]
    lines.append(f"## Surviving mutants ({len(survivors) + sum(n for _, _, n in unreached)})")
    lines.append("")
    if unreached:
        lines += [
            "Of functions that no selected test calls (counted as survived, diffs not listed): "
            + ", ".join(f"`{f}` in `{m}` ({n})" for m, f, n in unreached)
            + ".",
            "",
        ]
    if not survivors and not unreached:
        lines.append("None.")
    for m in survivors:
        lines += [f"### `{m['name']}`", "", "```diff", m["diff"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


PRAGMA = "# pragma: no mutate block"


def _trampoline_breakers(source: str) -> list[int]:
    """0-based indices of the ``def`` header lines (their last line) of every ``__init__`` that calls
    ``save_hyperparameters()`` without ``# pragma: no mutate`` in its header."""
    import ast

    lines = source.splitlines()
    found: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name != "__init__":
            continue
        header = lines[node.lineno - 1 : node.body[0].lineno - 1]
        calls = {
            c.func.attr
            for c in ast.walk(node)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
        }
        if "save_hyperparameters" in calls and "pragma: no mutate" not in "\n".join(header):
            last = max(i for i, line in enumerate(header) if line.split("#", 1)[0].rstrip().endswith(":"))
            found.append(node.lineno - 1 + last)
    return found


def with_init_pragma(source: str) -> str:
    """``source`` with ``# pragma: no mutate block`` ending the header of every ``__init__`` that needs it.

    mutmut 3 copies each mutated function out of its class; a copied ``__init__`` that calls
    ``save_hyperparameters()`` records no hyperparameters, and the tests that read them fail before any
    mutant runs. :func:`prepare` applies this to the mutation folder's copy of the sources, so that the
    package itself needs no mutmut comments (such an ``__init__`` is then not mutated).
    """
    lines = source.splitlines(keepends=True)
    for index in _trampoline_breakers(source):
        body = lines[index].rstrip("\r\n")
        lines[index] = f"{body}  {PRAGMA}" + lines[index][len(body) :]
    return "".join(lines)


def _is_no_grad(decorator: Any) -> bool:
    """Whether a decorator node is ``torch.no_grad()`` (called, no arguments)."""
    import ast

    return (
        isinstance(decorator, ast.Call)
        and not decorator.args
        and not decorator.keywords
        and ast.unparse(decorator.func) == "torch.no_grad"
    )


def without_no_grad_decorators(source: str) -> str:
    """``source`` with every ``@torch.no_grad()`` method turned into one whose body runs in ``with
    torch.no_grad():`` (after the docstring): the same behaviour, but mutmut mutates it.

    mutmut leaves decorated functions alone, and most families' ``sample()`` carries this decorator.
    Applied to the mutation folder's copy only. A function whose body holds a multi-line string (whose
    text the extra indentation would change) or that is a generator is left decorated.
    """
    import ast

    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int]] = []  # (decorator line, first body line, last body line), 0-based
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef) or len(node.decorator_list) != 1:
            continue
        if not _is_no_grad(node.decorator_list[0]):
            continue
        body = node.body
        docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        statements = body[1:] if docstring else body
        inner = [n for s in statements for n in ast.walk(s)]
        multiline = any(
            isinstance(n, ast.Constant) and isinstance(n.value, str) and n.lineno != n.end_lineno
            for n in inner
        )
        generator = any(
            isinstance(n, ast.Yield | ast.YieldFrom)
            for n in inner
            if not isinstance(n, ast.FunctionDef | ast.Lambda)
        )
        if not statements or multiline or generator:
            continue
        decorator = node.decorator_list[0]
        if decorator.lineno != decorator.end_lineno:
            continue
        edits.append((decorator.lineno - 1, statements[0].lineno - 1, node.end_lineno - 1))
    for decorator, first, last in sorted(edits, reverse=True):
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        block = [("    " + line if line.strip() else line) for line in lines[first : last + 1]]
        opening = f"{indent}with torch.no_grad():  # @torch.no_grad() unwrapped for mutmut\n"
        lines[first : last + 1] = [opening, *block]
        del lines[decorator]
    return "".join(lines)


def mutable_copy(source: str) -> str:
    """The text :func:`prepare` writes for a subset's module: :func:`with_init_pragma` and
    :func:`without_no_grad_decorators` applied; the package's own files are never changed."""
    return with_init_pragma(without_no_grad_decorators(source))


def check_mutable(source: str, module: str) -> list[str]:
    """Names of the functions mutmut will leave alone (decorated ones); raise for what breaks its run.

    An ``__init__`` that calls ``save_hyperparameters()`` breaks it unless its header carries
    ``# pragma: no mutate block`` (see :func:`with_init_pragma`, which the mutation folder's copy gets).
    Functions with a decorator other than ``staticmethod``/``classmethod`` (e.g. ``@torch.no_grad()``)
    are not mutated at all: put the context in the body to have them tested.
    """
    import ast

    broken = _trampoline_breakers(source)
    if broken:
        raise ValueError(
            f"{module}:{broken[0] + 1}: __init__ calls save_hyperparameters(), which records nothing in "
            f"mutmut's copy: end its def line with `{PRAGMA}`"
        )
    skipped: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        plain = {"staticmethod", "classmethod"}
        if any(not (isinstance(d, ast.Name) and d.id in plain) for d in node.decorator_list):
            skipped.append(node.name)
    return skipped


# --------------------------------------------------------------------------------------------------------
# Running mutmut
# --------------------------------------------------------------------------------------------------------


def prepare(folder: Path, modules: list[str], tests: list[str]) -> None:
    """Lay out ``folder`` for mutmut: links to src and tests, setup.cfg, and the subset's pyproject.toml."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tests", "configs"):  # the tests read the paper configs by relative path
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(REPO / name, folder))
    # a copy of src, not a link: the subset's modules get the __init__ pragma mutmut needs (the package's
    # own files stay free of it); files already equal are left untouched (mutmut compares contents)
    copy = folder / "src"
    if copy.is_symlink():
        copy.unlink()
    for source in (REPO / "src").rglob("*"):
        module = str(source.relative_to(REPO / "src"))
        if not source.is_file() or "__pycache__" in source.parts or ".egg-info" in module:
            continue
        data = source.read_bytes()
        if module in modules:
            data = mutable_copy(data.decode()).encode()
        target = copy / module
        if not target.exists() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    (folder / "setup.cfg").write_text((REPO / "setup.cfg").read_text())
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    config = {
        **base,
        "only_mutate": [f"src/{m}" for m in modules],
        "pytest_add_cli_args_test_selection": tests,
        # mutmut runs the tests from its mutants/ folder, into which it copies tests/ but not configs/
        "also_copy": [*base.get("also_copy", []), "configs"],
    }
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in config.items())
    text = f"# written by benchmarks/mutation.py\n[tool.mutmut]\n{body}\n"
    if not (folder / "pyproject.toml").exists() or (folder / "pyproject.toml").read_text() != text:
        (folder / "pyproject.toml").write_text(text)


def run_mutmut(folder: Path, functions: list[str], workers: int, nice: int) -> None:
    """``mutmut run`` in ``folder`` (niced); mutmut resumes where an earlier run there stopped."""
    command = ["nice", "-n", str(nice), sys.executable, "-m", "mutmut", "run", "--max-children", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # mutmut puts mutants/src first; a path to the real src would shadow it
    subprocess.run([*command, *functions], cwd=folder, env=env, check=True)


def run_folders(subset: str, work: Path | None = None) -> list[Path]:
    """The run folders whose results make up ``subset``'s report: ``<subset>`` and every part folder
    ``<subset>-<part>`` (see ``--part``) that exists under ``work`` (default :data:`WORK`), in name order."""
    work = work or WORK
    folders = [work / subset] if (work / subset).is_dir() else []
    return folders + sorted(p for p in work.glob(f"{subset}-*") if p.is_dir())


def _meta(folder: Path, module: str) -> Path:
    return folder / "mutants" / "src" / (module + ".meta")


def run_codes(meta: dict[str, Any]) -> dict[str, int | None]:
    """A ``.meta`` file's exit codes, with a "timeout" that took no time read as not checked (``None``).

    mutmut's runner can stop a mutant's tests by its CPU limit before they start (exit -24 with a recorded
    duration of 0.0 s, seen in a row of mutants on a loaded machine): the tests never ran, so it is no
    evidence that they would catch the mutant.
    """
    durations = meta.get("durations_by_key", {})
    return {
        name: None if status_of(code) == "timeout" and durations.get(name, 1.0) <= 0.0 else code
        for name, code in meta["exit_code_by_key"].items()
    }


def merge_codes(
    runs: list[tuple[str, dict[str, int | None]]],
) -> tuple[dict[str, int | None], dict[str, str]]:
    """One module's exit codes merged over several runs (oldest first), and the run each verdict came from.

    A run's verdict (any exit code) replaces an earlier one; a mutant a run did not check (``None``) keeps
    the verdict it has, so parts that checked different functions add up.
    """
    codes: dict[str, int | None] = {}
    source: dict[str, str] = {}
    for run, run_codes in runs:
        for name, code in run_codes.items():
            if code is not None or name not in codes:
                codes[name] = code
                source[name] = run
    return codes, source


def read_results(
    folders: list[Path], modules: list[str]
) -> tuple[dict[str, dict[str, int | None]], dict[str, str]]:
    """mutmut's exit codes per module merged over ``folders`` (:func:`merge_codes`, from the ``.meta``
    files) and the diffs of the survivors, each taken in the folder its verdict came from.

    Every folder that holds a module must have mutated the same text of it (its copy under ``src``):
    otherwise a mutant's number would name different mutations in different folders.
    """
    codes: dict[str, dict[str, int | None]] = {}
    where: dict[str, Path] = {}
    for module in modules:
        holding = [f for f in folders if _meta(f, module).exists()]
        if not holding:
            continue  # reported as not run
        texts = {(f / "src" / module).read_bytes() for f in holding}
        if len(texts) > 1:
            raise ValueError(
                f"the runs in {', '.join(f.name for f in holding)} mutated different versions of {module}: "
                "rerun the stale ones (or remove their folders) before reporting"
            )
        holding.sort(key=lambda f: _meta(f, module).stat().st_mtime)
        runs = [(str(f), run_codes(json.loads(_meta(f, module).read_text()))) for f in holding]
        codes[module], source = merge_codes(runs)
        where.update({name: Path(run) for name, run in source.items()})
    if not codes:
        raise ValueError(
            f"no run of {', '.join(modules)} under {', '.join(str(f) for f in folders) or WORK}: run "
            "`python benchmarks/mutation.py` without --report-only first"
        )
    survivors = [(m, n) for m, c in codes.items() for n, code in c.items() if status_of(code) == "survived"]
    diffs: dict[str, str] = {}
    if survivors:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        cwd = Path.cwd()
        try:
            for module, name in survivors:
                os.chdir(where[name])  # mutmut reads its config and state relative to the working directory
                diffs[name] = get_diff_for_mutant(name, path=Path("src") / module)
        finally:
            os.chdir(cwd)
    return codes, diffs


def folder_settings(folder: Path) -> dict[str, Any]:
    """What one run folder recorded: its test selection, ``--functions`` and wall time."""
    config = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["mutmut"]
    functions = folder / "functions.txt"
    wall = folder / "wall.txt"
    return {
        "folder": folder.name,
        "tests": config["pytest_add_cli_args_test_selection"],
        "functions": functions.read_text().split() if functions.exists() else [],
        "wall": wall.read_text().strip() if wall.exists() else "not recorded",
    }


def _sha256(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def mutated_text(folders: list[Path], module: str) -> bytes:
    """The text of ``module`` that was (or would be) mutated: the copy in a run folder that mutated it (the
    other folders' copies of it are plain), else today's mutable copy."""
    for folder in folders:
        if _meta(folder, module).exists():
            return (folder / "src" / module).read_bytes()
    return mutable_copy((REPO / "src" / module).read_text()).encode()


def carried_row(previous: dict[str, Any], module: str) -> ModuleScore | None:
    """A committed row of ``module`` (a result file without per-mutant verdicts) as a score, if it checked
    anything; its survivors and equivalents are those whose names lie in the module."""
    row = next((r for r in previous.get("rows", []) if r["module"] == module), None)
    if row is None or row["mutants"] == row["not_checked"]:
        return None
    prefix = module.removesuffix(".py").replace("/", ".") + "."
    counts = ("mutants", "killed", "survived", "timeout", "equivalent", "suspicious", "not_checked")
    score = ModuleScore(module, **{k: row[k] for k in counts})
    score.survivors = [m for m in previous.get("survivors", []) if m["name"].startswith(prefix)]
    score.equivalents = [m for m in previous.get("equivalents", []) if m["name"].startswith(prefix)]
    return score


def merged_with_committed(
    previous: dict[str, Any],
    folders: list[Path],
    modules: list[str],
    codes: dict[str, dict[str, int | None]],
    diffs: dict[str, str],
) -> tuple[list[str], dict[str, ModuleScore]]:
    """Fold the committed result file's verdicts under the run folders' (which are newer), in place.

    Run folders do not outlive a machine, so a report must not drop what earlier runs found. A module with
    per-mutant ``verdicts`` merges mutant by mutant (:func:`merge_codes`) while its mutated text is the one
    they were taken on (its hash); a module without them (a row from before they were recorded) keeps its
    row while no folder holds it. Returns the modules that took something from the file and those rows.
    """
    used: list[str] = []
    rows: dict[str, ModuleScore] = {}
    verdicts = previous.get("verdicts", {})
    for module in modules:
        if module not in verdicts:  # a row from before per-mutant records (kept by every later report)
            row = carried_row(previous, module)
            if row is not None and module in codes:
                print(f"{module}: the committed verdicts have no per-mutant record: this run replaces them")
            elif row is not None:
                rows[module] = row
                used.append(module)
            continue
        if verdicts[module]["sha256"] != _sha256(mutated_text(folders, module)):
            print(f"{module}: the committed verdicts were taken on another text of it: dropped")
            continue
        earlier = verdicts[module]["codes"]
        codes[module], source = merge_codes([("committed", earlier), ("runs", codes.get(module, {}))])
        diffs.update({n: d for n, d in verdicts[module]["diffs"].items() if source.get(n) == "committed"})
        used.append(module)
    return used, rows


def report(
    subset: str, modules: list[str], out: Path = RESULTS, note: str = "", work: Path | None = None
) -> list[ModuleScore]:
    """Score ``subset`` over its run folders (:func:`run_folders`) and the committed result file
    (:func:`merged_with_committed`), and write ``mutation_<subset>.json`` and ``.md`` into ``out``."""
    from importlib.metadata import PackageNotFoundError, version

    folders = run_folders(subset, work)
    path = out / f"mutation_{subset}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    held = [m for m in modules if any(_meta(f, m).exists() for f in folders)]
    codes, diffs = read_results(folders, held) if held or not previous else ({}, {})
    used, rows = merged_with_committed(previous, folders, modules, codes, diffs)
    if not codes and not rows:
        raise ValueError(f"no verdicts for {', '.join(modules)}: run mutation.py without --report-only first")
    equivalents = load_equivalents()
    scores = [
        rows[m] if m in rows else score_module(m, codes[m], diffs, equivalents)
        for m in modules
        if m in codes or m in rows
    ]
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [folder_settings(f) for f in folders]
    if used:  # the runs behind the committed verdicts stay listed
        settings_before = previous["settings"]
        earlier = settings_before.get("parts") or [
            {
                "folder": f"{subset} (run before {previous['date'][:10]})",
                "tests": settings_before["tests"],
                "functions": [],
                "wall": settings_before["wall"],
            }
        ]
        parts = [p for p in earlier if p["folder"] not in {q["folder"] for q in parts}] + parts
    try:
        mutmut_version = version("mutmut")
    except PackageNotFoundError:  # only re-reporting committed verdicts
        mutmut_version = previous.get("settings", {}).get("mutmut", "not installed")
    settings = {
        "mutmut": mutmut_version,
        "tests": sorted({t for part in parts for t in part["tests"]}),
        "wall": "; ".join(f"{p['folder']}: {p['wall']}" for p in parts)
        if len(parts) > 1
        else parts[0]["wall"],
        "parts": parts,
        "not_run": [m for m in modules if m not in codes and m not in rows],
    }
    data = {
        "benchmark": "mutation",
        "device": "CPU (mutmut)",
        "subset": subset,
        "date": date,
        "settings": settings,
        "rows": [s.row() for s in [*scores, total(scores)]],
        "survivors": [m for s in scores for m in s.survivors],
        "equivalents": [m for s in scores for m in s.equivalents],
        "functions": {s.module: s.functions for s in scores if s.functions},
        "note": note,
        # per mutant, so that a later report on another machine (without these run folders) keeps them
        "verdicts": {
            m: {
                "sha256": _sha256(mutated_text(folders, m)),
                "codes": c,
                "diffs": {
                    n: diffs[n]
                    for n, code in c.items()
                    if status_of(code) == "survived" and code != NOT_REACHED
                },
            }
            for m, c in codes.items()
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    text = markdown(subset, date, scores, settings)
    if note:
        text = text.replace("\n## Surviving mutants", f"\nNote: {note}\n\n## Surviving mutants", 1)
    (out / f"mutation_{subset}.md").write_text(text)
    print(f"wrote {path} and .md")
    return scores


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("subsets", nargs="*", help=f"one or more of {', '.join(SUBSETS)}")
    parser.add_argument(
        "--modules",
        nargs="+",
        help="source files (relative to src/, globs allowed) instead of a named subset; "
        "the one subset word names the run",
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        default=[],
        help="mutant name globs passed to mutmut run, e.g. 'rezdiff.core.gaussian.x_ddim_step*'",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="mutmut's --max-children (default 1: shared machine)"
    )
    parser.add_argument(
        "--tests",
        nargs="+",
        default=[],
        help="test files or node ids (within the subset's test files) instead of all of them: narrows a "
        "slow instrumented run to the tests that reach the --functions",
    )
    parser.add_argument("--nice", type=int, default=15)
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the result files from the last run"
    )
    parser.add_argument(
        "--note", default="", help="a remark for the result files (e.g. survivors killed since)"
    )
    parser.add_argument(
        "--part",
        help="run into build/mutation/<subset>-<PART> (its own mutmut state, tests and --functions) and "
        "report the subset merged over all its parts: e.g. one part per module, each with the tests that "
        "reach it",
    )
    parser.add_argument("--list", action="store_true", help="print the subsets with their modules and tests")
    options = parser.parse_args(args)
    if options.list:
        for name, patterns in SUBSETS.items():
            modules = modules_of(patterns)
            print(
                f"{name}: {' '.join(modules)}\n"
                f"    tests: {' '.join(sorted({t for m in modules for t in tests_for(m)}))}"
            )
        return 0
    if not options.subsets:
        parser.error("name a subset (see --list)")
    if (options.modules or options.part) and len(options.subsets) != 1:
        parser.error("--modules and --part need exactly one subset word")
    if options.part and options.subsets[0] not in SUBSETS:
        parser.error(f"--part needs a named subset ({', '.join(SUBSETS)}), not {options.subsets[0]!r}")
    for subset in options.subsets:
        if not options.modules and subset not in SUBSETS:
            parser.error(f"unknown subset {subset!r}: choose from {', '.join(SUBSETS)} or give --modules")
        modules = modules_of(options.modules or SUBSETS[subset])
        if options.part:
            outside = sorted(set(modules) - set(modules_of(SUBSETS[subset])))
            if outside:
                parser.error(f"--modules {' '.join(outside)} not in subset {subset!r}: name its modules only")
        tests = narrowed(sorted({t for m in modules for t in tests_for(m)}), options.tests)
        for module in modules:
            skipped = check_mutable(mutable_copy((REPO / "src" / module).read_text()), module)
            if skipped:
                print(f"{module}: not mutated (decorated): {', '.join(skipped)}")
        if not options.report_only:
            folder = WORK / (f"{subset}-{options.part}" if options.part else subset)
            prepare(folder, modules, tests)
            (folder / "functions.txt").write_text(" ".join(options.functions) + "\n")
            start = datetime.now(timezone.utc)
            run_mutmut(folder, options.functions, options.workers, options.nice)
            minutes = (datetime.now(timezone.utc) - start).total_seconds() / 60
            wall = (
                f"{minutes:.0f} min, {options.workers} worker(s), niced, shared 2-core machine (under load)"
            )
            (folder / "wall.txt").write_text(wall)
        report(subset, modules_of(SUBSETS[subset]) if options.part else modules, note=options.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
