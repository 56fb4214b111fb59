"""``cowmem report``: reading asv's results, the table, the HTML page, selectors, the gate.

The results are real: asv ran a tiny suite shaped like cowmem's (see
asv_project.py), twice in one environment; other environments are copies of
a real file under another environment's name with the values a test needs.
The committed ``results/`` (11 environments of cowmem's suite, written before
samples and platform facts were recorded) are read as they are.
"""

from __future__ import annotations

import html.parser
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from asv_project import (CHILD_BENCH, COST_BENCH, COST_MS, DATA_BENCH, LIST_MIB,
                         MEASURED_BENCH, PAGE_MIB, PER_ELEMENT_BENCH, SIZE, Project,
                         add_environment, assert_one_line_error, build_project, child_samples,
                         combinations, data_mib, run_cowmem, snapshot)
from cowmem.report import gate, selectors, versions
from cowmem.report.results import UnknownNameError, load_results
from cowmem.report.table import build_table
from cowmem.reporters.html import COPIED_MEANS
from cowmem.reporters.text import render_table

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results"
COMMITTED_LIST_INT = "bench_numbers.ListInt"     # the suite's class for list_int
REGRESSED = ("list_int", "iterate", "freeze")
# What the gate compares in one pair of runs: the three copy metrics of each
# Copies combination, and Measured's track_child_mib for its two accesses.
COMBINATIONS = len(combinations()) + 2
VALUES = 3 * len(combinations()) + 2


def counted(pairs: int, changed: int = 0, grew: int = 0, shrank: int = 0, failed: int = 0) -> str:
    """The gate's verdict counts, over ``pairs`` pairs of runs."""
    return (f"{pairs * COMBINATIONS} combinations compared ({pairs * VALUES} values): "
            f"{changed} changed ({grew} grew, {shrank} shrank, {failed} failed on the new side)")


@pytest.fixture(scope="session")
def real_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_project(tmp_path_factory.getbasetemp())


@pytest.fixture
def project(real_project: Project, tmp_path: Path) -> Project:
    """A private copy of the real results, free to change."""
    return real_project.copy(tmp_path / "project")


def newest(project: Project, machine: str = "alpha") -> Path:
    return project.results_file(machine, project.commits[1])


def cowmem(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cowmem("report", *args, cwd=cwd)


def verdict(done: subprocess.CompletedProcess) -> str:
    return done.stdout.splitlines()[-1]


def changes(done: subprocess.CompletedProcess) -> List[str]:
    return [line for line in done.stdout.splitlines()
            if line.startswith(("grew", "shrank", "failed"))]


# --- reading real asv results ---------------------------------------------------

def test_reads_every_value_and_spread_asv_stored(real_project: Project) -> None:
    results = load_results(real_project.results)
    assert {(run.environment.machine, run.commit) for run in results.runs} == {
        ("alpha", real_project.commits[0]), ("alpha", real_project.commits[1]),
        ("beta", real_project.commits[1])}
    assert results.commits() == [real_project.commits[1], real_project.commits[0]]
    for run in results.runs:
        assert Path(run.environment.python).resolve() == Path(sys.executable).resolve()
        for combination in combinations():
            key = tuple(repr(v) for v in combination)
            expected = data_mib(*combination)
            stored = run.values[(DATA_BENCH, key)]
            assert (math.isnan(stored) if math.isnan(expected) else stored == expected)
            child = run.values[(CHILD_BENCH, key)]
            if combination == ("ndarray", "sum", "plain"):
                assert child is None                      # the benchmark raised: failed
            elif math.isnan(expected):
                assert math.isnan(child)                  # NotImplementedError: n/a
            else:
                samples = child_samples(*combination)
                assert child == samples[1]                # asv stores the median
                assert run.spreads[(CHILD_BENCH, key)] == (samples[0], samples[2])
                assert run.spreads[(DATA_BENCH, key)] == (expected, expected)
                assert run.values[(PER_ELEMENT_BENCH, key)] == expected * 2**20 / SIZE
        assert run.values[(COST_BENCH, ())] == COST_MS
    assert results.benchmarks[DATA_BENCH].param_names == ("data", "access", "gc")
    assert results.benchmarks[DATA_BENCH].unit == "MiB"


def test_exact_versions_come_from_the_results(real_project: Project, project: Project) -> None:
    results = load_results(real_project.results)
    recorded = versions.versions_of(results, results.runs[0])
    # the real run recorded this interpreter, numpy and kernel (bench_platform)
    import numpy
    assert recorded.python == "%d.%d.%d" % sys.version_info[:3]
    assert recorded.build == "GIL"
    assert recorded.numpy == numpy.__version__
    assert recorded.kernel == __import__("os").uname().release.split("-")[0]
    assert recorded.page_size == "4096 bytes"
    assert recorded.thp == Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text() \
        .split("[")[1].split("]")[0]
    assert recorded.pfns == "readable"          # the tests run as root
    # a copy named for another environment records that one's versions
    add_environment(newest(project), "3.12.1", "2.2.6")
    add_environment(newest(project), "3.13", "2.4.6", facts=False)
    copied = {run.environment.python: versions.versions_of(load_results(project.results), run)
              for run in load_results(project.results).runs}
    assert (copied["3.12.1"].python, copied["3.12.1"].numpy) == ("3.12.1", "2.2.6")
    # results without facts: the minor version asv named, and "not recorded"
    assert copied["3.13"].python == "3.13 (patch release not recorded)"
    assert copied["3.13"].numpy == "2.4.6"      # the matrix's pin
    assert copied["3.13"].build == copied["3.13"].thp == versions.NOT_RECORDED
    assert copied["3.13"].kernel == versions.NOT_RECORDED   # `asv machine --yes`: no os


def test_committed_results_record_exact_versions() -> None:
    # scripts/suite names each environment by its exact versions: the facts
    # bench_platform recorded inside it must be those of its name
    results = load_results(COMMITTED)
    assert len(results.runs) == len(list(COMMITTED.glob("*/*-virtualenv-*.json")))
    for run in results.runs:
        named = dict(re.findall(r"-(py|numpy|pandas|pyarrow)([0-9][0-9.]*[0-9t])",
                                run.environment.name))
        recorded = versions.versions_of(results, run)
        assert recorded.python == named["py"]
        assert recorded.numpy == named["numpy"]
        assert recorded.pandas == named.get("pandas", "not installed")
        assert recorded.pyarrow == named.get("pyarrow", "not installed")
        assert recorded.build == ("free-threaded" if named["py"].endswith("t") else "GIL")
        assert recorded.page_size == "4096 bytes" and recorded.pfns == "readable"
        assert recorded.thp in ("never", "madvise", "always")
        assert re.fullmatch(r"\d+\.\d+\.\d+", recorded.kernel)


# --- the table --------------------------------------------------------------------

def test_table_prints_the_newest_commit_with_every_environment(project: Project) -> None:
    add_environment(newest(project), "3.12.1", "2.2.6")
    add_environment(newest(project), "3.10.13", "2.2.6")
    add_environment(newest(project), "3.9.18", "1.26.4")
    done = cowmem("--bench", "track_data", cwd=project.root)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert CHILD_BENCH not in out
    assert f"at commit {project.commits[1][:8]} (2024-01-02): 5 environment(s)" in out
    header = [line for line in out.splitlines() if line.startswith("data ")][0]
    assert header.index("numpy 1.26.4") < header.index("numpy 2.2.6")
    py_line = [line for line in out.splitlines() if "py3.9" in line][0]
    assert py_line.index("py3.9.18") < py_line.index("py3.10.13") < py_line.index("py3.12.1")
    assert "alpha" in out and "beta" in out                # two machines: each column labelled
    rows: Dict[Tuple[str, ...], List[str]] = {}
    for line in out.splitlines():            # the columns wrap into blocks: join them
        if line.split()[:1] in (["list_int"], ["ndarray"]):
            rows.setdefault(tuple(line.split()[:3]), []).extend(line.split()[3:])
    assert rows[("list_int", "iterate", "plain")] == [f"{LIST_MIB:.1f}"] * 5
    assert ("ndarray", "sum", "freeze") not in rows        # n/a everywhere: left out
    assert "(2 combinations n/a in every environment left out)" in out


def test_committed_table_fits_120_columns_without_psutil() -> None:
    done = cowmem("--results", str(COMMITTED), cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert "psutil" not in done.stdout          # pinned alike in every environment: no header
    # every environment's column is still there: one numpy label each, over the blocks
    results = load_results(COMMITTED)
    start = lines.index(f"{COMMITTED_LIST_INT}.track_data_mib (MiB)")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("bench_"))
    assert sum(line.count("numpy ") for line in lines[start:end]) == len(results.environments())
    narrow = cowmem("--results", str(COMMITTED), "--width", "100", cwd=REPO)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 100


def test_commit_option_selects_an_older_commit(project: Project) -> None:
    done = cowmem("--commit", project.commits[0][:7], cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert f"at commit {project.commits[0][:8]} (2024-01-01): 1 environment(s)" in done.stdout
    assert "no results at this commit: existing-" in done.stdout   # beta ran only the newest


def test_cells_that_differ_are_marked(project: Project) -> None:
    add_environment(newest(project), "3.11.7", "2.2.6")
    add_environment(newest(project), "3.12.1", "2.2.6",
                    {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
    add_environment(newest(project), "3.13.0", "2.2.6",
                    {(DATA_BENCH, ("list_int", "sum", "plain")): LIST_MIB + PAGE_MIB})
    table = build_table(load_results(project.results), bench=[DATA_BENCH])
    [bench] = table.benchmarks
    marked = {row.labels: [env.python for env, m in zip(table.columns, row.marked) if m]
              for row in bench.rows}
    assert marked[("list_int", "iterate", "plain")] == ["3.12.1"]
    assert marked[("list_int", "sum", "plain")] == []      # one page is no difference
    assert all(not m for key, m in marked.items() if key != ("list_int", "iterate", "plain"))
    assert "0*" in render_table(table)


def test_markdown_is_the_overview_one_row_per_kind(project: Project) -> None:
    add_environment(newest(project), "3.12.1", "2.2.6",
                    {(PER_ELEMENT_BENCH, ("list_int", "iterate", "plain")): 0.0})
    done = cowmem("--markdown", cwd=project.root)
    assert done.returncode == 0, done.stderr
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in done.stdout.splitlines()]
    header, rule, rows = lines[0], lines[1], {row[0]: row for row in lines[2:]}
    assert header[:2] == ["data", "access"] and len(header) == 5      # alpha, beta, alpha's 3.12.1
    assert rule == ["---", "---"] + ["---:"] * 3
    assert header.index("alpha py3.12.1 numpy 2.2.6") > 1
    assert set(rows) == {"list_int", "ndarray"}                # the data kinds of the suite
    # the headline access reads every element; the gc=plain row, in bytes per element
    assert rows["list_int"][1] == "iterate" and rows["ndarray"][1] == "iterate"
    per_element = LIST_MIB * 2**20 / SIZE                    # 32.1: one int's block per element
    for name, cell in zip(header[2:], rows["list_int"][2:]):
        if "3.12.1" in name:
            assert cell == "**0**"                             # differs from its row: bold
        else:
            assert float(cell) == pytest.approx(per_element, rel=0.01)
    assert rows["ndarray"][2:] == ["0"] * 3


# --- selectors and pairing ----------------------------------------------------------

MATRIX = [("3.9.18", "1.26.4"), ("3.10.13", "2.2.6"), ("3.12.1", "1.26.4"), ("3.12.1", "2.2.6"),
          ("3.13.0", "2.2.6")]


@pytest.fixture
def matrix(project: Project) -> Project:
    for python, numpy in MATRIX:
        add_environment(newest(project), python, numpy)
    return only_the_added(project)


def only_the_added(project: Project) -> Project:
    """The project without the real runs' results: only the environments a test added.

    The real runs are of the interpreter running the tests, whatever it is,
    and would match the selectors of one (python=3.12 under 3.12.1).
    """
    for path in project.results.glob("*/*-existing-*.json"):
        path.unlink()
    return project


@pytest.mark.parametrize("selector, expected", [
    ("virtualenv-py3.12.1-numpy2.2.6", ["virtualenv-py3.12.1-numpy2.2.6"]),
    ("virtualenv-py3.1", ["virtualenv-py3.10.13-numpy2.2.6", "virtualenv-py3.12.1-numpy1.26.4",
                          "virtualenv-py3.12.1-numpy2.2.6", "virtualenv-py3.13.0-numpy2.2.6"]),
    ("python=3.12", ["virtualenv-py3.12.1-numpy1.26.4", "virtualenv-py3.12.1-numpy2.2.6"]),
    ("python=3.1", []),                           # a version matches whole components
    ("numpy=2.2,python=3.10", ["virtualenv-py3.10.13-numpy2.2.6"]),
    ("numpy=1,machine=alpha", ["virtualenv-py3.9.18-numpy1.26.4",
                               "virtualenv-py3.12.1-numpy1.26.4"]),
])
def test_selectors(matrix: Project, selector: str, expected: List[str]) -> None:
    results = load_results(matrix.results)
    if expected:
        side = selectors.select(selector, lambda: results, None)
        assert [run.environment.name for run in side.runs] == expected
    else:
        with pytest.raises(UnknownNameError, match="environments: virtualenv-py3.9"):
            selectors.select(selector, lambda: results, None)


def test_several_environments_per_side_are_paired(matrix: Project) -> None:
    results = load_results(matrix.results)
    old, new = (selectors.select(s, lambda: results, None) for s in ("python=3.12", "python=3.13"))
    pairing = selectors.pair(old, new)
    assert pairing.changed == ("python",)
    assert [(a.environment.name, b.environment.name) for a, b in pairing.pairs] == [
        ("virtualenv-py3.12.1-numpy2.2.6", "virtualenv-py3.13.0-numpy2.2.6")]
    assert [run.environment.name for run in pairing.unpaired] == ["virtualenv-py3.12.1-numpy1.26.4"]
    # numpy upgrade: paired on python, for each python that has both
    old, new = (selectors.select(s, lambda: results, None) for s in ("numpy=1.26", "numpy=2.2"))
    pairing = selectors.pair(old, new)
    assert pairing.changed == ("numpy",)
    assert [(a.environment.python, b.environment.python) for a, b in pairing.pairs] == [
        ("3.12.1", "3.12.1")]


def test_prefix_selectors_pair_too(matrix: Project) -> None:
    done = cowmem("--compare", "virtualenv-py3.12", "virtualenv-py3.13", cwd=matrix.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("compared virtualenv-py3.12.1-numpy2.2.6 at "
            f"{matrix.commits[1][:8]} -> virtualenv-py3.13.0-numpy2.2.6") in done.stdout
    assert "no counterpart: virtualenv-py3.12.1-numpy1.26.4 on alpha" in done.stdout


def test_commit_selectors(project: Project) -> None:
    first, second = project.commits
    done = cowmem("--compare", f"commit={first[:8]}", f"commit={second[:10]}", cwd=project.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith(f"commit={first[:8]} -> commit={second[:10]}: "
                                                  "changed commit;")
    assert f"at {first[:8]} -> existing-" in done.stdout
    short = cowmem("--compare", f"commit={first[:7]}", f"commit={second[:8]}", cwd=project.root)
    assert_one_line_error(short, "report", "give at least 8 characters of the hash")


def test_unknown_environment_lists_the_present_ones(project: Project) -> None:
    add_environment(newest(project), "3.12.1", "2.2.6")
    done = cowmem("--compare", "python=3.14", "python=3.12", cwd=project.root)
    assert_one_line_error(done, "report", "no environment matches 'python=3.14'",
                          "virtualenv-py3.12.1-numpy2.2.6 on alpha", "on beta")
    done = cowmem("--compare", "gcc=1", "python=3.12", cwd=project.root)
    assert_one_line_error(done, "report", "key one of commit, machine, numpy, python")


def test_the_same_environments_on_both_sides_are_refused(project: Project) -> None:
    add_environment(newest(project), "3.12.1", "2.2.6")
    done = cowmem("--compare", "python=3.12", "numpy=2.2", cwd=only_the_added(project).root)
    assert_one_line_error(done, "report", "select the same environments")


def test_a_results_directory_is_not_compared_with_itself(project: Project) -> None:
    # named twice, or once as a directory and once by selecting from the default
    # results: the same files, which would compare equal with themselves
    assert_one_line_error(cowmem("--compare", str(project.results), "results", cwd=project.root),
                          "report", "select the same environments: nothing to compare")
    assert_one_line_error(cowmem("--compare", "results", "machine=alpha", cwd=project.root),
                          "report", "no environment of 'results' has a counterpart in "
                          "'machine=alpha'")


# --- the gate ----------------------------------------------------------------------

def test_gate_is_quiet_on_two_runs_of_one_environment(real_project: Project) -> None:
    # asv really ran the suite twice on alpha; the measured benchmark's whole-child
    # counts differ from run to run
    first, second = load_results(real_project.repeat), load_results(real_project.results)
    [a] = [r for r in first.runs if r.environment.machine == "alpha"]
    [b] = [r for r in second.runs if r.environment.machine == "alpha"
           and r.commit == real_project.commits[1]]
    assert a.values[(MEASURED_BENCH, ("'iterate'",))] > 0
    done = cowmem("--compare", str(real_project.repeat), str(real_project.results),
                  cwd=real_project.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "changed nothing; paired on commit, machine, python" in done.stdout
    assert changes(done) == []
    # every copy metric of both machines' shared commit, timing never
    assert verdict(done) == "ok: " + counted(1)
    assert COST_BENCH not in done.stdout


def test_gate_trips_on_a_seeded_regression(project: Project) -> None:
    add_environment(newest(project), "3.11.7", "2.2.6")
    add_environment(newest(project), "3.13.0", "2.2.6", {(DATA_BENCH, REGRESSED): 12.5})
    before = snapshot(project.results)
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert changes(done) == [f"grew   {DATA_BENCH} data=list_int access=iterate gc=freeze: "
                             "0 -> 12.5 (+12.5)"]
    assert verdict(done) == "FAIL: " + counted(1, changed=1, grew=1)
    assert snapshot(project.results) == before


def test_gate_counts_combinations_each_of_one_kind(project: Project) -> None:
    # one combination whose three copy metrics grew (a row of three changes), one
    # that shrank, one whose data grew while its whole child shrank: 3 changed
    add_environment(newest(project), "3.11.7", "2.2.6")
    grown = {(bench, REGRESSED): value for bench, value in (
        (DATA_BENCH, 12.5), (CHILD_BENCH, 16.5), (PER_ELEMENT_BENCH, 12.5 * 2**20 / SIZE))}
    shrunk = {(DATA_BENCH, ("list_int", "sum", "plain")): 0.0}
    mixed = {(DATA_BENCH, ("list_int", "iterate", "plain")): 2 * LIST_MIB,
             (CHILD_BENCH, ("list_int", "iterate", "plain")): 0.0}
    add_environment(newest(project), "3.13.0", "2.2.6", {**grown, **shrunk, **mixed})
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(changes(done)) == 3 + 1 + 2
    assert verdict(done) == "FAIL: " + counted(1, changed=3, grew=2, shrank=1)
    comparison = gate.compare(*(selectors.select(s, lambda: load_results(project.results), None)
                                for s in ("python=3.11", "python=3.13")))
    assert sorted(row.kind for row in comparison.rows) == ["grew", "grew", "shrank"]
    assert comparison.compared == COMBINATIONS and comparison.values == VALUES


def test_gate_ignores_a_doubled_timing(project: Project) -> None:
    add_environment(newest(project), "3.11.7", "2.2.6")
    add_environment(newest(project), "3.13.0", "2.2.6", {(COST_BENCH, ()): 2 * COST_MS})
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert changes(done) == [] and COST_BENCH not in done.stdout
    # asked for by name, it is compared (and grew)
    asked = cowmem("--compare", "python=3.11", "python=3.13", "-b", "cost", cwd=project.root)
    assert changes(asked) == [f"grew   {COST_BENCH}: 12.5 -> 25.0 (+12.5)"]


def test_a_change_inside_the_spread_is_not_flagged(project: Project) -> None:
    # the child's samples are one page apart; a median moved by one page stays inside
    # both spreads, and is flagged only once it leaves them
    key = ("list_int", "iterate", "plain")
    old, middle, new = child_samples(*key)
    add_environment(newest(project), "3.11.7", "2.2.6")
    path = add_environment(newest(project), "3.13.0", "2.2.6")
    data = json.loads(path.read_text())
    at = data["result_columns"].index("samples"), data["result_columns"].index("result")
    row = data["results"][CHILD_BENCH]
    index = combinations().index(key)
    row[at[0]][index] = [middle, new, new + PAGE_MIB]
    row[at[1]][index] = new
    path.write_text(json.dumps(data))
    strict = ("--min-abs", "0", "--min-rel", "0")
    done = cowmem("--compare", "python=3.11", "python=3.13", *strict, cwd=project.root)
    assert done.returncode == 0, done.stdout
    row[at[0]][index] = [new + PAGE_MIB, new + 2 * PAGE_MIB, new + 3 * PAGE_MIB]
    row[at[1]][index] = new + 2 * PAGE_MIB
    path.write_text(json.dumps(data))
    done = cowmem("--compare", "python=3.11", "python=3.13", *strict, cwd=project.root)
    assert changes(done) == [f"grew   {CHILD_BENCH} data=list_int access=iterate gc=plain: "
                             f"{middle:.1f} -> {new + 2 * PAGE_MIB:.1f} (+0.0)"]


def test_gate_reports_shrinking_without_failing(project: Project) -> None:
    add_environment(newest(project), "3.11.7", "2.2.6")
    add_environment(newest(project), "3.12.1", "2.2.6",
                    {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
    done = cowmem("--compare", "python=3.11", "python=3.12", cwd=project.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"shrank {DATA_BENCH} data=list_int access=iterate gc=plain: "
            f"{LIST_MIB:.1f} -> 0 (-{LIST_MIB:.1f})") in done.stdout


def test_gate_relative_threshold_is_settable(project: Project) -> None:
    add_environment(newest(project), "3.11.7", "2.2.6")
    grown = LIST_MIB * 1.05        # +15.3 MiB: over the absolute threshold, under 10 %
    add_environment(newest(project), "3.13.0", "2.2.6",
                    {(DATA_BENCH, ("list_int", "sum", "plain")): grown})
    compare = ("--compare", "python=3.11", "python=3.13")
    assert cowmem(*compare, cwd=project.root).returncode == 0
    assert cowmem(*compare, "--min-rel", "0.04", cwd=project.root).returncode == 1
    assert cowmem(*compare, "--min-rel", "0.04", "--min-abs", "16",
                  cwd=project.root).returncode == 0


def test_gate_trips_when_the_new_environment_fails(project: Project) -> None:
    add_environment(newest(project), "3.11.7", "2.2.6")
    add_environment(newest(project), "3.13.0", "2.2.6", {(DATA_BENCH, REGRESSED): None})
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 1
    assert f"failed {DATA_BENCH} data=list_int access=iterate gc=freeze: 0 -> failed" \
        in done.stdout


def test_gate_compares_on_every_machine_that_has_both(project: Project) -> None:
    for machine in ("alpha", "beta"):
        add_environment(newest(project, machine), "3.11.7", "2.2.6")
        add_environment(newest(project, machine), "3.13.0", "2.2.6",
                        {(DATA_BENCH, REGRESSED): 12.5} if machine == "beta" else {})
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 1
    assert "changed python; paired on commit, machine, numpy" in done.stdout
    assert f"-> virtualenv-py3.13.0-numpy2.2.6 at {project.commits[1][:8]} on alpha" \
        in done.stdout
    assert (f"grew   {DATA_BENCH} data=list_int access=iterate gc=freeze "
            "[py3.11.7 numpy 2.2.6 -> py3.13.0 numpy 2.2.6 on beta]: 0 -> 12.5") in done.stdout
    assert verdict(done) == "FAIL: " + counted(2, changed=1, grew=1)


def test_committed_results_3_12_to_3_13_flags_the_interned_strings() -> None:
    # CPython 3.12.0-3.12.6 made interned strings immortal; the committed results
    # measured 3.12.1 and 3.13.0: reading them copies in 3.13 only
    results = load_results(COMMITTED)
    old, new = (selectors.select(s, lambda: results, None) for s in ("python=3.12", "python=3.13"))
    comparison = gate.compare(old, new)
    pairs = comparison.pairing.pairs
    assert pairs and all(a.environment.python == "3.12.1" and b.environment.python == "3.13.0"
                         for a, b in pairs)
    assert {b.environment.name for _, b in pairs} == {
        run.environment.name for run in results.runs if run.environment.python == "3.13.0"}
    # first, every combination whose copies inside the strings grew
    reading = [row for row in comparison.rows if row.params["data"] == "list_interned_str" and
               any(c.benchmark.endswith(".track_data_mib") for c in row.changes)]
    assert reading and list(comparison.rows[:len(reading)]) == reading
    iterate = [row for row in reading if row.params["access"] == "iterate"]
    assert len(iterate) == len(pairs) and all(
        row.shown["track_bytes_per_element"][0] < 1 and
        row.shown["track_bytes_per_element"][1] > 60 for row in iterate)
    # only copy metrics: the cost ratios never gate
    assert all(not c.benchmark.startswith("bench_cost") for c in comparison.changes())


# --- reading without numpy ------------------------------------------------------------

BLOCK_NUMPY = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("numpy is blocked in this test")
sys.meta_path.insert(0, Blocked())
from cowmem.cli import main
status = main(sys.argv[1:])
measuring = sorted(m for m in sys.modules if m in ("numpy", "cowmem.fork", "cowmem.meter",
                   "cowmem.workloads", "cowmem.explain", "cowmem._linux", "psutil"))
print("loaded:", measuring)
sys.exit(status)
"""


@pytest.mark.parametrize("args", [
    ["report", "--results", str(COMMITTED), "-b", "track_data_mib"],
    ["report", "--results", str(COMMITTED), "--compare", "python=3.12", "python=3.13"],
])
def test_report_runs_without_numpy_or_the_measuring_code(args: List[str]) -> None:
    done = subprocess.run([sys.executable, "-c", BLOCK_NUMPY, *args], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert done.returncode in (0, 1), done.stderr
    assert done.stdout.splitlines()[-1] == "loaded: []"
    assert "combinations compared" in done.stdout or COMMITTED_LIST_INT in done.stdout


def test_html_without_numpy_has_no_descriptions(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    done = subprocess.run([sys.executable, "-c", BLOCK_NUMPY, "report", "--results",
                           str(COMMITTED), "--html", str(page)], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "<dt>list_int</dt>" not in page.read_text()


# --- bad input: one line, exit 2, nothing written ------------------------------------

def _bad_version(version: int):
    def edit(results: Path) -> None:
        path = next((results / "alpha").glob("*-existing-*.json"))
        data = json.loads(path.read_text())
        data["version"] = version
        path.write_text(json.dumps(data))
    return edit


def _write(relative: str, text: str):
    def edit(results: Path) -> None:
        (results / relative).write_text(text)
    return edit


def _remove_machine_json(results: Path) -> None:
    (results / "beta" / "machine.json").unlink()


def _empty(results: Path) -> None:
    for path in results.glob("*/*-*.json"):
        path.unlink()


@pytest.mark.parametrize("edit, fragments", [
    (_bad_version(3), ["results format version 3, newer than the version 2"]),
    (_bad_version(1), ["old results format version 1", "asv update"]),
    (_write("alpha/0000aaaa-broken.json", "{not json"), ["is not asv's results JSON"]),
    (_write("alpha/0000aaaa-list.json", "[1, 2]"), ["not asv's results JSON: a list"]),
    (_write("alpha/0000aaaa-other.json", '{"version": 2, "hello": 1}'),
     ["'commit_hash' missing"]),
    (_write("benchmarks.json", '{"version": 7}'), ["benchmarks format version 7, newer"]),
    (_remove_machine_json, ["beta holds results but no machine.json"]),
    (_empty, ["no asv results in"]),
], ids=["newer-format", "older-format", "not-json", "json-list", "not-asv", "newer-benchmarks",
        "no-machine-json", "empty"])
def test_bad_results_give_one_line_and_write_nothing(project: Project, edit, fragments) -> None:
    edit(project.results)
    before = snapshot(project.results)
    for args in ([], ["--html", str(project.root / "page.html"), "--compare", "a", "b"]):
        assert_one_line_error(cowmem(*args, cwd=project.root), "report", *fragments)
    assert snapshot(project.results) == before
    assert not (project.root / "page.html").exists()


def test_missing_results_directory(tmp_path: Path) -> None:
    done = cowmem("--results", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert_one_line_error(done, "report", "nowhere does not exist")
    done = cowmem(cwd=tmp_path)
    assert_one_line_error(done, "report", "no asv configuration file asv.conf.json")
    (tmp_path / "results").mkdir()
    done = cowmem("--results", str(tmp_path / "results"), cwd=tmp_path)
    assert_one_line_error(done, "report", "no asv results in")


def test_html_is_never_written_into_the_results_directory(project: Project) -> None:
    before = snapshot(project.results)
    done = cowmem("--html", str(project.results / "alpha" / "page.html"),
                  cwd=project.root)
    assert_one_line_error(done, "report", "inside the results directory")
    assert snapshot(project.results) == before


# --- the HTML page ------------------------------------------------------------------

class _Page(html.parser.HTMLParser):
    """Collects the tags, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, Dict[str, str]]] = []
        self.text: List[str] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        else:
            self.text.append(data)


def test_html_page_is_self_contained_and_shows_every_environment(project: Project) -> None:
    from cowmem import workloads
    add_environment(newest(project), "3.11.7", "2.2.6")
    add_environment(newest(project), "3.12.1", "2.2.6",
                    {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
    page_path = project.root / "report.html"
    before = snapshot(project.results)
    done = cowmem("--html", str(page_path), cwd=project.root)
    assert done.returncode == 0, done.stderr
    # where it wrote, and no table
    assert done.stdout.startswith(f"wrote {page_path} (")
    assert len(done.stdout.splitlines()) == 1
    assert snapshot(project.results) == before
    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    tags = page.tags
    # nothing loaded from anywhere: no scripts, stylesheets, images, frames, fonts, imports
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not [a for _, a in tags if "src" in a]
    assert "url(" not in page.style and "@import" not in page.style
    # a contents list leading to every benchmark's table, the copy metrics first
    results = load_results(project.results)
    links = [a["href"] for t, a in tags if t == "a" and a.get("href", "").startswith("#")]
    tables = [a["data-benchmark"] for t, a in tags if t == "table" and "data-benchmark" in a]
    assert tables[:3] == [PER_ELEMENT_BENCH, CHILD_BENCH, DATA_BENCH]
    assert set(results.benchmarks) - set(tables) == set()
    ids = {a["id"] for _, a in tags if "id" in a}
    assert [link[1:] for link in links] and all(link[1:] in ids for link in links)
    assert len(links) >= len(tables) + 2
    # every environment of the results, with its machine, in each table's header
    headers = {(a["data-machine"], a["data-env"]) for t, a in tags
               if t == "th" and "env" in a.get("class", "")}
    assert headers == {(e.machine, e.name) for e in results.environments()}
    # the marked cell: 3.12's list_int iterate plain in the data table
    [data_table] = [i for i, (t, a) in enumerate(tags) if a.get("data-benchmark") == DATA_BENCH]
    cells = [a for t, a in tags[data_table:] if t == "td"]
    assert any(" d" in a["class"] for a in cells)
    text = " ".join(" ".join(page.text).split())
    assert COPIED_MEANS in text
    assert "3.12.1" in text and "not recorded" not in text.split("Exact versions")[1][:50]
    for name in ("list_int", "ndarray"):
        assert f"{name} {workloads.DATA_KINDS[name].description}" in text
    for name in ("iterate", "sum"):
        assert f"{name} {workloads.ACCESSES[name].description}" in text
    assert "list_float" not in text     # only the names the table uses are described


def test_html_of_the_committed_results_is_under_500_kb(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    done = cowmem("--results", str(COMMITTED), "--html", str(page), "--text", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert page.stat().st_size < 500 * 1024
    assert f"{COMMITTED_LIST_INT}.track_data_mib (MiB)" in done.stdout   # --text: the table too


def test_publish_runs_without_numpy_or_the_measuring_code(tmp_path: Path) -> None:
    from cowmem.publish.vendor import default_vendor_cache
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-c", BLOCK_NUMPY, "publish", "--results",
                           str(COMMITTED), "--html-dir", str(site), "--no-pull",
                           "--vendor-cache", str(default_vendor_cache())], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded: []"
    assert (site / "index.html").is_file() and (site / "upgrade.html").is_file()
