"""``cowmem report``: reading asv's results, the cross-environment table, the HTML page, the gate.

The results are real: asv ran a tiny suite shaped like cowmem's (see
asv_project.py); other environments are copies of a real file under another
environment's name with the values a test needs.
"""

from __future__ import annotations

import html.parser
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from asv_project import (CHILD_BENCH, CHILD_EXTRA_MIB, DATA_BENCH, LIST_MIB, Project,
                         add_environment, assert_one_line_error, build_project, combinations,
                         data_mib, run_cowmem, snapshot)
from cowmem import report, workloads

ONE_PAGE_MIB = 4096 / 2**20
REGRESSED = ("list_int", "iterate", "freeze")


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


# --- reading real asv results ---------------------------------------------------

def test_reads_every_value_asv_stored(real_project: Project) -> None:
    results = report.load_results(real_project.results)
    assert {(run.environment.machine, run.commit) for run in results.runs} == {
        ("alpha", real_project.commits[0]), ("alpha", real_project.commits[1]),
        ("beta", real_project.commits[1])}
    assert results.commits() == [real_project.commits[1], real_project.commits[0]]
    for run in results.runs:
        assert run.environment.python == sys.executable or \
            Path(run.environment.python).resolve() == Path(sys.executable).resolve()
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
                assert child == expected + CHILD_EXTRA_MIB
    assert results.benchmarks[DATA_BENCH].param_names == ("data", "access", "gc")
    assert results.benchmarks[DATA_BENCH].unit == "MiB"


def test_table_prints_the_newest_commit_with_every_environment(project: Project) -> None:
    add_environment(newest(project), "3.12", "2.2.6")
    add_environment(newest(project), "3.10", "2.2.6")
    add_environment(newest(project), "3.9", "1.26.4")
    done = cowmem("--bench", "track_data", cwd=project.root)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert CHILD_BENCH not in out
    assert f"at commit {project.commits[1][:8]} (2024-01-02): 5 environment(s)" in out
    header = [line for line in out.splitlines() if line.startswith("data ")][0]
    # numeric version order: 3.9 before 3.10 before 3.12
    assert header.index("numpy 1.26.4") < header.index("numpy 2.2.6")
    py_line = [line for line in out.splitlines() if "py3.9" in line][0]
    assert py_line.index("py3.9") < py_line.index("py3.10") < py_line.index("py3.12")
    assert "alpha" in out and "beta" in out                # two machines: each column labelled
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in out.splitlines()
            if line.split()[:1] in (["list_int"], ["ndarray"])}
    assert rows[("list_int", "iterate", "plain")] == [f"{LIST_MIB:.1f}"] * 5
    assert rows[("ndarray", "sum", "freeze")] == ["n/a"] * 5


def test_commit_option_selects_an_older_commit(project: Project) -> None:
    done = cowmem("--commit", project.commits[0][:7], cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert f"at commit {project.commits[0][:8]} (2024-01-01): 1 environment(s)" in done.stdout
    assert "no results at this commit: existing-" in done.stdout   # beta ran only the newest


def test_cells_that_differ_are_marked(project: Project) -> None:
    # interned strings were immortal in 3.12 only: one environment's cell drops to 0
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.12", "2.2.6",
                    {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
    add_environment(newest(project), "3.13", "2.2.6",
                    {(DATA_BENCH, ("list_int", "sum", "plain")): LIST_MIB + ONE_PAGE_MIB})
    table = report.build_table(report.load_results(project.results), bench=[DATA_BENCH])
    columns = [env.python for env in table.columns if env.machine == "alpha"]
    [bench] = table.benchmarks
    marked = {tuple(row.labels()): [env.python for env, m in zip(table.columns, row.marked) if m]
              for row in bench.rows}
    assert marked[("list_int", "iterate", "plain")] == ["3.12"]
    assert marked[("list_int", "sum", "plain")] == []      # one page is no difference
    assert all(not m for key, m in marked.items()
               if key not in {("list_int", "iterate", "plain")})
    assert len(columns) == 4
    assert "0*" in report.render_text(table)


# --- the gate ----------------------------------------------------------------------

def test_gate_is_quiet_on_identical_results(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.13", "2.2.6")
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == ("ok: 16 combinations compared, 0 grew, 0 shrank, "
                                            "0 failed in the new environment")


def test_gate_trips_on_a_seeded_regression(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.13", "2.2.6", {(DATA_BENCH, REGRESSED): 12.5})
    before = snapshot(project.results)
    done = cowmem("--compare", "virtualenv-py3.11", "virtualenv-py3.13",
                  cwd=project.root)
    assert done.returncode == 1, done.stdout + done.stderr
    changes = [line for line in done.stdout.splitlines() if line.startswith(("grew", "shrank"))]
    assert changes == [f"grew   {DATA_BENCH} data=list_int access=iterate gc=freeze: "
                       "0 -> 12.5 (+12.5)"]
    assert done.stdout.splitlines()[-1].startswith("FAIL: 16 combinations compared, 1 grew")
    assert snapshot(project.results) == before


def test_gate_reports_shrinking_without_failing(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.12", "2.2.6",
                    {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
    done = cowmem("--compare", "python=3.11", "python=3.12", cwd=project.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"shrank {DATA_BENCH} data=list_int access=iterate gc=plain: "
            f"{LIST_MIB:.1f} -> 0 (-{LIST_MIB:.1f})") in done.stdout


def test_one_page_wobble_trips_only_when_thresholds_are_zero(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.13", "2.2.6",
                    {(DATA_BENCH, ("list_int", "sum", "plain")): LIST_MIB + ONE_PAGE_MIB})
    quiet = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert quiet.returncode == 0, quiet.stdout
    strict = cowmem("--compare", "python=3.11", "python=3.13",
                    "--min-abs", "0", "--min-rel", "0", cwd=project.root)
    assert strict.returncode == 1, strict.stdout
    assert "grew   " + DATA_BENCH + " data=list_int access=sum gc=plain" in strict.stdout


def test_gate_relative_threshold_is_settable(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    grown = LIST_MIB * 1.05        # +15.3 MiB: over the absolute threshold, under 10 %
    add_environment(newest(project), "3.13", "2.2.6",
                    {(DATA_BENCH, ("list_int", "sum", "plain")): grown})
    assert cowmem("--compare", "python=3.11", "python=3.13",
                  cwd=project.root).returncode == 0
    assert cowmem("--compare", "python=3.11", "python=3.13", "--min-rel", "0.04",
                  cwd=project.root).returncode == 1
    assert cowmem("--compare", "python=3.11", "python=3.13", "--min-rel", "0.04",
                  "--min-abs", "16", cwd=project.root).returncode == 0


def test_gate_trips_when_the_new_environment_fails(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.13", "2.2.6", {(DATA_BENCH, REGRESSED): None})
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 1
    assert f"failed {DATA_BENCH} data=list_int access=iterate gc=freeze: 0 -> failed" \
        in done.stdout


def test_gate_compares_on_every_machine_that_has_both(project: Project) -> None:
    for machine in ("alpha", "beta"):
        add_environment(newest(project, machine), "3.11", "2.2.6")
        add_environment(newest(project, machine), "3.13", "2.2.6",
                        {(DATA_BENCH, REGRESSED): 12.5} if machine == "beta" else {})
    done = cowmem("--compare", "python=3.11", "python=3.13", cwd=project.root)
    assert done.returncode == 1
    assert "compared virtualenv-py3.11-numpy2.2.6 -> virtualenv-py3.13-numpy2.2.6 on alpha" \
        in done.stdout
    assert f"grew   {DATA_BENCH} data=list_int access=iterate gc=freeze on beta: 0 -> 12.5" \
        in done.stdout
    assert "32 combinations compared, 1 grew" in done.stdout


@pytest.mark.parametrize("selector, expected", [
    ("virtualenv-py3.12-numpy2.2.6", ["virtualenv-py3.12-numpy2.2.6"]),
    ("virtualenv-py3.1", ["virtualenv-py3.10-numpy2.2.6", "virtualenv-py3.12-numpy2.2.6"]),
    ("python=3.1", []),                           # a version matches whole components
    ("numpy=2.2", ["virtualenv-py3.10-numpy2.2.6", "virtualenv-py3.12-numpy2.2.6"]),
    ("numpy=2.2.6,python=3.10", ["virtualenv-py3.10-numpy2.2.6"]),
    ("numpy=1", ["virtualenv-py3.9-numpy1.26.4"]),
])
def test_selectors(project: Project, selector: str, expected: List[str]) -> None:
    for python, numpy in (("3.9", "1.26.4"), ("3.10", "2.2.6"), ("3.12", "2.2.6")):
        add_environment(newest(project), python, numpy)
    envs = report.load_results(project.results).environments()
    if expected:
        assert [e.name for e in report.select_environments(envs, selector)] == expected
    else:
        with pytest.raises(report.UnknownNameError, match="environments: virtualenv-py3.9"):
            report.select_environments(envs, selector)


def test_unknown_environment_lists_the_present_ones(project: Project) -> None:
    add_environment(newest(project), "3.12", "2.2.6")
    done = cowmem("--compare", "python=3.14", "python=3.12", cwd=project.root)
    assert_one_line_error(done, "report", "no environment matches 'python=3.14'",
                          "virtualenv-py3.12-numpy2.2.6 on alpha", "on beta")
    done = cowmem("--compare", "gcc=1", "python=3.12", cwd=project.root)
    assert_one_line_error(done, "report", "key one of machine, numpy, python")


def test_ambiguous_selector_is_refused(project: Project) -> None:
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.12", "2.2.6")
    done = cowmem("--compare", "numpy=2.2", "python=3.12", cwd=project.root)
    assert_one_line_error(done, "report",
                          "'numpy=2.2' names several environments on machine alpha")


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
    add_environment(newest(project), "3.11", "2.2.6")
    add_environment(newest(project), "3.12", "2.2.6",
                    {(DATA_BENCH, ("list_int", "iterate", "plain")): 0.0})
    page_path = project.root / "report.html"
    before = snapshot(project.results)
    done = cowmem("--html", str(page_path), cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert snapshot(project.results) == before
    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    tags = page.tags
    # nothing loaded from anywhere: no scripts, stylesheets, images, frames, fonts, imports
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not [a for _, a in tags if "src" in a]
    assert "url(" not in page.style and "@import" not in page.style
    # every environment of the results, with its machine, in each table's header
    results = report.load_results(project.results)
    headers = {(a["data-machine"], a["data-env"]) for t, a in tags
               if t == "th" and "env" in a.get("class", "")}
    assert headers == {(e.machine, e.name) for e in results.environments()}
    # one machine header span per machine in each of the two benchmarks' tables
    assert sum(1 for t, a in tags if t == "th" and a.get("class") == "machine") == 2 * 2
    # the marked cell: 3.12's list_int iterate plain in the data table
    differs = [a for t, a in tags if t == "td" and "differs" in a.get("class", "")]
    assert [(a["data-machine"], a["data-env"]) for a in differs] == [
        ("alpha", "virtualenv-py3.12-numpy2.2.6")]
    text = " ".join(" ".join(page.text).split())
    assert report.COPIED_MEANS in text
    for name in ("list_int", "ndarray"):
        assert f"{name} {workloads.DATA_KINDS[name].description}" in text
    for name in ("iterate", "sum"):
        assert f"{name} {workloads.ACCESSES[name].description}" in text
    assert "list_float" not in text     # only the names the table uses are described
