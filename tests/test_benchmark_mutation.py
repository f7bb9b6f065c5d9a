"""benchmarks/mutation.py: scores, the equivalents file and the subset mapping, without running mutmut."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# registered in sys.modules before it runs: its dataclasses look their module up there
spec = importlib.util.spec_from_file_location("benchmark_mutation", REPO / "benchmarks" / "mutation.py")
mutation = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutation
spec.loader.exec_module(mutation)

DIFF = """--- src/rezdiff/core/x.py
+++ src/rezdiff/core/x.py
@@ -1,2 +1,2 @@
 def f(a):
-    return a + 1
+    return a - 1"""


def test_score_excludes_explained_equivalents_and_counts_timeouts_as_detected() -> None:
    codes = {
        "m.f__mutmut_1": 1,
        "m.f__mutmut_2": 0,
        "m.f__mutmut_3": 0,
        "m.f__mutmut_4": 36,
        "m.f__mutmut_5": 33,
    }
    diffs = {"m.f__mutmut_2": DIFF, "m.f__mutmut_3": DIFF.replace("a - 1", "a * 1"), "m.f__mutmut_5": DIFF}
    equivalents = {"m.f__mutmut_2": mutation.Equivalent("m.f__mutmut_2", DIFF, "same value")}
    s = mutation.score_module("m.py", codes, diffs, equivalents)
    assert (s.mutants, s.killed, s.timeout, s.equivalent, s.survived) == (5, 1, 1, 1, 2)
    assert s.score == pytest.approx(2 / 4)  # (killed + timeout) / (mutants - equivalent)
    assert [m["name"] for m in s.survivors] == ["m.f__mutmut_3"]
    assert s.unreached == {"f": 1}  # 5: no test reaches it (a survivor, named by its function)
    assert s.equivalents == [{"name": "m.f__mutmut_2", "reason": "same value"}]


def test_an_explanation_stops_covering_a_mutant_whose_diff_changed() -> None:
    stale = mutation.Equivalent("m.f__mutmut_1", DIFF.replace("a + 1", "a + 2"), "old reason")
    s = mutation.score_module("m.py", {"m.f__mutmut_1": 0}, {"m.f__mutmut_1": DIFF}, {"m.f__mutmut_1": stale})
    assert (s.equivalent, s.survived, s.score) == (0, 1, 0.0)
    # context lines and indentation do not matter, only the changed lines
    moved = mutation.Equivalent("m.f__mutmut_1", "-return a + 1\n+  return a - 1", "same")
    s = mutation.score_module("m.py", {"m.f__mutmut_1": 0}, {"m.f__mutmut_1": DIFF}, {"m.f__mutmut_1": moved})
    assert (s.equivalent, s.survived, s.score) == (1, 0, None)


def test_unfinished_mutants_are_left_out_of_the_score_and_totals_add_up() -> None:
    a = mutation.score_module("a.py", {"a.f__mutmut_1": 1, "a.f__mutmut_2": None}, {}, {})
    b = mutation.score_module("b.py", {"b.f__mutmut_1": -9, "b.f__mutmut_2": 0}, {"b.f__mutmut_2": DIFF}, {})
    assert (a.not_checked, a.score) == (1, 1.0)
    assert (b.timeout, b.survived, b.score) == (1, 1, 0.5)
    row = mutation.total([a, b]).row()
    assert (row["mutants"], row["killed"], row["timeout"], row["survived"], row["not_checked"]) == (
        4,
        1,
        1,
        1,
        1,
    )
    assert row["score"] == round(2 / 3, 4)
    md = mutation.markdown("x", "2026-01-01", [a, b], {"mutmut": "3", "tests": ["t.py"], "wall": "1 min"})
    assert "| **all** | 4 | 1 | 1 | 1 | 0 | 0 | 1 | 66.7% |" in md and "b.f__mutmut_2" in md


def test_equivalents_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "eq.toml"
    path.write_text('[[mutant]]\nname = "m.f__mutmut_2"\ndiff = """\n-a\n+b\n"""\nreason = "r"\n')
    [(name, entry)] = mutation.load_equivalents(path).items()
    assert name == "m.f__mutmut_2" and mutation.changed_lines(entry.diff) == ["-a", "+b"]
    path.write_text('[[mutant]]\nname = "m.f__mutmut_2"\ndiff = "-a"\nreason = ""\n')
    with pytest.raises(ValueError, match="lacks reason"):
        mutation.load_equivalents(path)
    path.write_text('[[mutant]]\nname = "a"\ndiff = "-a"\nreason = "r"\n' * 2)
    with pytest.raises(ValueError, match="listed twice"):
        mutation.load_equivalents(path)
    # the committed file parses and every entry has a name, a diff and a reason
    mutation.load_equivalents()


def test_every_subset_maps_to_existing_sources_and_tests() -> None:
    for patterns in mutation.SUBSETS.values():
        for module in mutation.modules_of(patterns):
            assert (REPO / "src" / module).exists()
            tests = mutation.tests_for(module)
            assert tests and all((REPO / t).exists() for t in tests), module
    with pytest.raises(ValueError, match="matches no file"):
        mutation.modules_of(["rezdiff/core/nothing.py"])
    with pytest.raises(ValueError, match="no tests mapped"):
        mutation.tests_for("rezdiff/cli.py")


def test_prepare_writes_the_subset_config(tmp_path: Path) -> None:
    tomllib = mutation.tomllib

    mutation.prepare(tmp_path, ["rezdiff/core/ema.py"], ["tests/core/test_ema.py"])
    config = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == ["src/rezdiff/core/ema.py"]
    assert config["pytest_add_cli_args_test_selection"] == ["tests/core/test_ema.py"]
    assert config["process_isolation"] == "forkserver"  # the repository's settings carried over
    assert config["also_copy"] == ["configs"] and (tmp_path / "configs").is_symlink()
    assert (tmp_path / "src" / "rezdiff" / "core" / "ema.py").exists() and (tmp_path / "setup.cfg").exists()
    # src is a copy whose subset modules carry the __init__ pragma; the package's own file does not
    module = "rezdiff/models/infd/latent.py"
    mutation.prepare(tmp_path, [module], ["tests/models/test_oracle_infd.py"])
    copied, original = (tmp_path / "src" / module).read_text(), (REPO / "src" / module).read_text()
    assert not (tmp_path / "src").is_symlink() and "pragma: no mutate" not in original
    assert copied == mutation.mutable_copy(original) != original
    assert (tmp_path / "src" / "rezdiff" / "py.typed").exists()
    assert json.dumps(config)  # plain values only


def test_check_mutable_names_decorated_functions_and_rejects_a_trampolined_init() -> None:
    source = (
        "class M:\n"
        "    def __init__(self, a):{pragma}\n"
        "        self.save_hyperparameters()\n"
        "\n"
        "    @torch.no_grad()\n"
        "    def sample(self):\n"
        "        return 1\n"
        "\n"
        "    @staticmethod\n"
        "    def plain():\n"
        "        return 2\n"
    )
    assert mutation.check_mutable(source.format(pragma="  # pragma: no mutate block"), "m.py") == ["sample"]
    with pytest.raises(ValueError, match=r"m.py:2: __init__ .*# pragma: no mutate block"):
        mutation.check_mutable(source.format(pragma=""), "m.py")
    # the mutation folder's copy gets the pragma; the rest of the source is unchanged
    patched = mutation.with_init_pragma(source.format(pragma=""))
    assert patched == source.format(pragma="  # pragma: no mutate block")
    assert mutation.with_init_pragma(patched) == patched
    assert mutation.check_mutable(patched, "m.py") == ["sample"]
    # a multi-line header gets it on its last line, after any comment there
    header = "class M:\n    def __init__(\n        self, a\n    ) -> None:  # noqa\n"
    header += "        self.save_hyperparameters()\n"
    last = mutation.with_init_pragma(header).splitlines()[3]
    assert last == "    ) -> None:  # noqa  # pragma: no mutate block"
    # every module of every subset passes the check once patched
    for patterns in mutation.SUBSETS.values():
        for module in mutation.modules_of(patterns):
            mutation.check_mutable(mutation.with_init_pragma((REPO / "src" / module).read_text()), module)


def test_family_subsets_run_their_oracle_tests_and_a_narrowed_selection_stays_inside_them() -> None:
    def tests_of(subset: str) -> set[str]:
        return {t for m in mutation.modules_of(mutation.SUBSETS[subset]) for t in mutation.tests_for(m)}

    start, seeds = "tests/models/test_sampling_start.py", "tests/models/test_sampling_seeds.py"
    defaults = "tests/models/test_sample_defaults.py"
    expected = {
        "dvdp": {"tests/models/test_oracle_ddpm_dvdp.py", start, seeds},
        "multilevel": {"tests/models/test_oracle_multilevel.py", start, seeds, defaults},
        "infty_diff": {"tests/models/test_oracle_infty_diff.py", start, seeds, defaults},
        "infd": {
            "tests/models/test_oracle_infd.py",
            "tests/models/test_infd_objective.py",
            start,
            seeds,
            defaults,
        },
    }
    for subset, files in expected.items():
        assert files <= tests_of(subset), subset
    files = ["tests/models/test_dvdp.py", start]
    assert mutation.narrowed(files, []) == files
    assert mutation.narrowed(files, [f"{start}::test_x"]) == [f"{start}::test_x"]
    with pytest.raises(ValueError, match="not in this subset's test files"):
        mutation.narrowed(files, ["tests/models/test_ddpm.py"])


def test_no_grad_methods_are_unwrapped_into_a_block_that_behaves_the_same() -> None:
    import torch

    source = (
        "import torch\n"
        "\n"
        "class M:\n"
        "    @torch.no_grad()\n"
        "    def sample(self, x):\n"
        '        """Doc."""\n'
        "        y = x * 2\n"
        "\n"
        "        return y.requires_grad, torch.is_grad_enabled()\n"
        "\n"
        "    @torch.no_grad()\n"
        "    def kept(self):\n"
        '        return """a\n'
        'b"""\n'
    )
    unwrapped = mutation.without_no_grad_decorators(source)
    lines = unwrapped.splitlines()
    assert lines[3:9] == [
        "    def sample(self, x):",
        '        """Doc."""',
        "        with torch.no_grad():  # @torch.no_grad() unwrapped for mutmut",
        "            y = x * 2",
        "",
        "            return y.requires_grad, torch.is_grad_enabled()",
    ]
    # a multi-line string would change with the indentation: that method keeps its decorator
    assert mutation.check_mutable(unwrapped, "m.py") == ["kept"]
    namespace: dict[str, object] = {}
    exec(compile(unwrapped, "m.py", "exec"), namespace)
    x = torch.ones(2, requires_grad=True)
    assert namespace["M"]().sample(x) == (False, False)  # type: ignore[attr-defined]
    assert namespace["M"]().kept() == "a\nb"  # type: ignore[attr-defined]
    # the family modules' sample() methods become mutable
    for subset in ("multilevel", "infty_diff", "infd"):
        for module in mutation.modules_of(mutation.SUBSETS[subset]):
            copy = mutation.mutable_copy((REPO / "src" / module).read_text())
            assert "sample" not in mutation.check_mutable(copy, module), module


def test_parts_of_a_subset_merge_verdicts_and_refuse_different_sources(tmp_path: Path) -> None:
    def run(name: str, module_codes: dict[str, dict[str, int | None]], text: str = "x = 1\n") -> Path:
        folder = tmp_path / name
        for module, codes in module_codes.items():
            meta = folder / "mutants" / "src" / (module + ".meta")
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"exit_code_by_key": codes}))
            (folder / "src" / module).parent.mkdir(parents=True, exist_ok=True)
            (folder / "src" / module).write_text(text)
        return folder

    a, b = "rezdiff/core/a.py", "rezdiff/core/b.py"
    first = run("core_sampling-one", {a: {"a.f__mutmut_1": 1, "a.f__mutmut_2": None, "a.f__mutmut_3": 3}})
    second = run("core_sampling-two", {a: {"a.f__mutmut_1": None, "a.f__mutmut_2": 36, "a.f__mutmut_3": 1}})
    (tmp_path / "core_sampling_other").mkdir()  # another subset's folder is not a part
    (tmp_path / "core").mkdir()
    assert mutation.run_folders("core_sampling", tmp_path) == [first, second]
    assert mutation.run_folders("core", tmp_path) == [tmp_path / "core"]
    # a verdict replaces an earlier one, an unchecked mutant keeps what it has
    codes, source = mutation.merge_codes(
        [("one", {"m_1": 1, "m_2": None, "m_3": 0}), ("two", {"m_1": None, "m_2": 36, "m_3": 1})]
    )
    assert codes == {"m_1": 1, "m_2": 36, "m_3": 1} and source == {"m_1": "one", "m_2": "two", "m_3": "two"}
    # read over folders: oldest meta first; a module no folder ran is left out; no survivors, no mutmut call
    os.utime(second / "mutants" / "src" / (a + ".meta"), (1, 1))
    codes_by_module, diffs = mutation.read_results([first, second], [a, b])
    assert codes_by_module == {a: {"a.f__mutmut_1": 1, "a.f__mutmut_2": 36, "a.f__mutmut_3": 3}} and not diffs
    with pytest.raises(ValueError, match="no run of rezdiff/core/b.py"):
        mutation.read_results([first, second], [b])
    stale = run("core_sampling-three", {a: {"a.f__mutmut_1": 1}}, text="x = 2\n")
    with pytest.raises(ValueError, match="mutated different versions of rezdiff/core/a.py"):
        mutation.read_results([first, stale], [a])
    # the markdown names each part's mutants, tests and wall time, and the modules not run yet
    s = mutation.score_module(a, codes_by_module[a], {}, {})
    parts = [
        {"folder": "core_sampling-one", "tests": ["t1.py"], "functions": ["a.f*"], "wall": "3 min"},
        {"folder": "core_sampling-two", "tests": ["t2.py::x"], "functions": [], "wall": "5 min"},
    ]
    settings = {"mutmut": "3", "tests": ["t1.py", "t2.py::x"], "wall": "", "parts": parts, "not_run": [b]}
    md = mutation.markdown("core_sampling", "2026-01-01", [s], settings)
    assert "- `core_sampling-one`: mutants `a.f*`; tests `t1.py`; wall time 3 min." in md
    assert "- `core_sampling-two`: mutants all; tests `t2.py::x`; wall time 5 min." in md
    assert (
        "Not run yet: `rezdiff/core/b.py`." in md and "| **all** | 3 | 2 | 0 | 1 | 0 | 0 | 0 | 100.0% |" in md
    )


def test_a_timeout_that_took_no_time_is_not_counted_as_detected() -> None:
    """mutmut's runner stopped rows of mutants by its CPU limit before their tests ran (exit -24, 0.0 s):
    those are not checked; a timeout that ran, and every other verdict, stand."""
    meta = {
        "exit_code_by_key": {
            "m.f__mutmut_1": -24,
            "m.f__mutmut_2": -24,
            "m.f__mutmut_3": 1,
            "m.f__mutmut_4": 0,
        },
        "durations_by_key": {"m.f__mutmut_1": 0.0, "m.f__mutmut_2": 41.5, "m.f__mutmut_3": 0.0},
    }
    assert mutation.run_codes(meta) == {
        "m.f__mutmut_1": None,
        "m.f__mutmut_2": -24,
        "m.f__mutmut_3": 1,
        "m.f__mutmut_4": 0,
    }


def test_a_report_keeps_the_committed_verdicts_that_no_run_folder_holds(tmp_path: Path) -> None:
    """Run folders do not outlive a machine: a report on a new one must merge the committed per-mutant
    verdicts under the new runs', drop them when the module's mutated text changed, and keep an older
    file's row (no per-mutant record) for a module that no folder ran."""
    ema, gaussian = "rezdiff/core/ema.py", "rezdiff/core/gaussian.py"
    text = mutation.mutable_copy((REPO / "src" / ema).read_text())
    work, out = tmp_path / "work", tmp_path / "out"
    folder = work / "core-a"
    meta = folder / "mutants" / "src" / (ema + ".meta")
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {"e.m_1": 1, "e.m_2": None, "e.m_3": 3}}))
    (folder / "src" / ema).parent.mkdir(parents=True)
    (folder / "src" / ema).write_text(text)
    (folder / "pyproject.toml").write_text('[tool.mutmut]\npytest_add_cli_args_test_selection = ["t.py"]\n')
    committed = {
        "date": "2026-01-01T00:00:00",
        "settings": {"mutmut": "3", "tests": ["old.py"], "wall": "9 min", "parts": []},
        "verdicts": {
            ema: {
                "sha256": mutation._sha256(text.encode()),
                "codes": {"e.m_1": 0, "e.m_2": 0, "e.m_4": 1},
                "diffs": {"e.m_1": DIFF, "e.m_2": DIFF},
            }
        },
    }
    out.mkdir()
    (out / "mutation_core.json").write_text(json.dumps(committed))
    plain = work / "core-0"  # a part that mutated another module holds a plain copy of this one: not it
    (plain / "src" / ema).parent.mkdir(parents=True)
    (plain / "src" / ema).write_text("plain\n")
    (plain / "pyproject.toml").write_text('[tool.mutmut]\npytest_add_cli_args_test_selection = ["t.py"]\n')
    [s] = mutation.report("core", [ema], out=out, work=work)
    # m_1 and m_3 from the run, m_2 (a survivor, with its committed diff) and m_4 from the file
    assert (s.mutants, s.killed, s.survived) == (4, 3, 1) and s.survivors == [{"name": "e.m_2", "diff": DIFF}]
    written = json.loads((out / "mutation_core.json").read_text())
    assert written["verdicts"][ema]["codes"] == {"e.m_1": 1, "e.m_2": 0, "e.m_3": 3, "e.m_4": 1}
    assert [p["folder"] for p in written["settings"]["parts"]] == [
        "core (run before 2026-01-01)",
        "core-0",
        "core-a",
    ]
    # on a machine without the folder the written file alone gives the same table
    [again] = mutation.report("core", [ema], out=out, work=tmp_path / "empty")
    assert again.row() == s.row()
    # verdicts taken on another text of the module name other mutations: dropped
    committed["verdicts"][ema]["sha256"] = "0" * 64
    (out / "mutation_core.json").write_text(json.dumps(committed))
    [fresh] = mutation.report("core", [ema], out=out, work=work)
    assert (fresh.mutants, fresh.killed, fresh.not_checked) == (3, 2, 1)
    # an older file without verdicts: its row stands for a module no folder ran, a run replaces the other
    rows = [
        {"module": m, "mutants": 5, "killed": 2, "survived": 1, "timeout": 0, "equivalent": 0}
        | {"suspicious": 0, "not_checked": 2, "score": 0.6667}
        for m in (ema, gaussian)
    ]
    survivor = {"name": "rezdiff.core.gaussian.x_f__mutmut_1", "diff": DIFF}
    older = {"date": "2026-01-01", "settings": committed["settings"], "rows": rows, "survivors": [survivor]}
    (out / "mutation_core.json").write_text(json.dumps(older))
    replaced, kept = mutation.report("core", [ema, gaussian], out=out, work=work)
    assert (replaced.mutants, replaced.killed) == (3, 2)
    assert kept.row() == rows[1] and kept.survivors == [survivor]
    # and the row stays through the next report, which finds per-mutant verdicts for the other module
    replaced, kept = mutation.report("core", [ema, gaussian], out=out, work=work)
    assert kept.row() == rows[1] and kept.survivors == [survivor]


def test_scores_are_broken_down_by_function() -> None:
    """The issue's goal is stated for loss and sample code: each mutant counts under its own function."""
    assert mutation.function_of("rezdiff.models.ddpm.module.xǁDDPMǁloss__mutmut_12") == "DDPM.loss"
    assert mutation.function_of("rezdiff.core.gaussian.x_ddim_step__mutmut_3") == "ddim_step"
    assert mutation.function_of("rezdiff.core.gaussian.x__add_noise__mutmut_3") == "_add_noise"
    codes = {
        "m.xǁAǁloss__mutmut_1": 1,
        "m.xǁAǁloss__mutmut_2": 0,
        "m.x_f__mutmut_1": 36,
        "m.x_f__mutmut_2": None,
    }
    s = mutation.score_module("rezdiff/m.py", codes, {"m.xǁAǁloss__mutmut_2": DIFF}, {})
    assert s.functions == {"A.loss": {"killed": 1, "survived": 1}, "f": {"timeout": 1, "not_checked": 1}}
    assert mutation.function_table([s])[2:] == [
        "| `rezdiff/m.py` | `A.loss` | 2 | 1 | 1 | 0 | 0 | 50.0% |",
        "| `rezdiff/m.py` | `f` | 2 | 1 | 0 | 0 | 1 | 100.0% |",
    ]
    # a function that no selected test calls: its survivors are counted and named, their diffs not listed
    codes |= {"m.x_g__mutmut_1": 33, "m.x_g__mutmut_2": 33}
    s = mutation.score_module("rezdiff/m.py", codes, {"m.xǁAǁloss__mutmut_2": DIFF}, {})
    assert s.survived == 3 and len(s.survivors) == 1 and s.unreached == {"g": 2}
    settings = {"mutmut": "3", "tests": ["t.py"], "wall": "1 min"}
    md = mutation.markdown("x", "2026-01-01", [s], settings)
    assert "## Surviving mutants (3)" in md and "`g` in `rezdiff/m.py` (2)" in md and md.count("```diff") == 1
