"""Test helper: real asv results from a tiny throwaway suite, and environments derived from them.

``build_project`` makes a git repository with a three-parameter suite shaped
like cowmem's (data x access x gc, MiB), runs real asv on it with the
current interpreter (``-E existing:same``) on two machines and two commits,
and keeps the result.  ``add_environment`` copies one of those real results
files under another environment's name (``virtualenv-py3.12-numpy2.2.6``)
with chosen values changed: asv can only run the current interpreter here
without building environments, and building them takes minutes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

# The suite: its parameters, and the values it returns, so tests can derive
# every expected cell from the case.
DATA = ["list_int", "ndarray"]
ACCESS = ["iterate", "sum"]
GC = ["plain", "freeze"]
PARAM_NAMES = ["data", "access", "gc"]
LIST_MIB = 306.40625   # 78,440 pages: the 10**7-element list of docs/method.md
CHILD_EXTRA_MIB = 4.0
DATA_BENCH = "copies.Copies.track_data_mib"
CHILD_BENCH = "copies.Copies.track_child_mib"


def data_mib(data: str, access: str, gc: str) -> float:
    """What track_data_mib returns; NaN (n/a) for ndarray with gc freeze."""
    if data == "ndarray" and gc == "freeze":
        return float("nan")
    return LIST_MIB if data == "list_int" and gc == "plain" else 0.0


SUITE = f'''
DATA = {DATA!r}
ACCESS = {ACCESS!r}
GC = {GC!r}


class Copies:
    params = [DATA, ACCESS, GC]
    param_names = {PARAM_NAMES!r}

    def setup(self, data, access, gc):
        if data == "ndarray" and gc == "freeze":
            raise NotImplementedError("does not apply")

    def track_data_mib(self, data, access, gc):
        return {LIST_MIB!r} if data == "list_int" and gc == "plain" else 0.0

    track_data_mib.unit = "MiB"

    def track_child_mib(self, data, access, gc):
        if data == "ndarray" and access == "sum" and gc == "plain":
            raise RuntimeError("a failing combination")
        return self.track_data_mib(data, access, gc) + {CHILD_EXTRA_MIB!r}

    track_child_mib.unit = "MiB"
'''

CONFIG = {
    "version": 1, "project": "tiny", "project_url": "http://127.0.0.1/", "repo": ".",
    "branches": ["main"], "environment_type": "virtualenv", "benchmark_dir": "benchmarks",
    "results_dir": "results", "html_dir": "html", "env_dir": "env",
}


@dataclass(frozen=True)
class Project:
    """A tiny asv project with real results; treat as read-only and copy it to change it."""

    root: Path
    commits: Tuple[str, str]       # oldest first
    machines: Tuple[str, str]      # the first ran both commits, the second only the newest

    @property
    def results(self) -> Path:
        return self.root / "results"

    def results_file(self, machine: str, commit: str) -> Path:
        [path] = (self.results / machine).glob(f"{commit[:8]}-existing-*.json")
        return path

    def copy(self, destination: Path) -> "Project":
        shutil.copytree(self.root, destination, symlinks=True)
        return Project(destination, self.commits, self.machines)


def _run(command: List[str], cwd: Path, env: Optional[Mapping[str, str]] = None,
         ok: Tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode in ok, f"{command} exited {done.returncode}:\n{done.stdout}"
    return done.stdout


def _git(root: Path, *args: str, date: str = "2024-01-01T12:00:00Z") -> str:
    # Fixed dates, a day apart: asv orders commits by date, at one-second resolution.
    env = dict(os.environ, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return _run(["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1",
                 "-c", "commit.gpgsign=false", *args], root, env).strip()


_BUILT: Dict[Path, Project] = {}


def build_project(base: Path) -> Project:
    """The tiny project under ``base`` (built once per process; about 25 s of asv)."""
    if base in _BUILT:
        return _BUILT[base]
    root = base / "tiny"
    (root / "benchmarks").mkdir(parents=True)
    (root / "benchmarks" / "__init__.py").write_text("")
    (root / "benchmarks" / "copies.py").write_text(SUITE)
    (root / "asv.conf.json").write_text(json.dumps(CONFIG, indent=2))
    (root / "home").mkdir()   # asv's machine file goes to $HOME: keep it in here
    (root / ".gitignore").write_text("home/\nresults/\nhtml/\nenv/\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "suite")
    first = _git(root, "rev-parse", "HEAD")
    (root / "NEWS").write_text("a second commit\n")
    _git(root, "add", "NEWS")
    _git(root, "commit", "-q", "-m", "second", date="2024-01-02T12:00:00Z")
    second = _git(root, "rev-parse", "HEAD")

    env = dict(os.environ, HOME=str(root / "home"))
    asv = [sys.executable, "-m", "asv"]
    machines = ("alpha", "beta")
    for machine, commit in (("alpha", first), ("alpha", second), ("beta", second)):
        _run(asv + ["machine", "--yes", "--machine", machine], root, env)
        # asv run exits 2 because one combination fails on purpose.
        _run(asv + ["run", "-E", "existing:same", "--machine", machine, "--set-commit-hash",
                    commit, "--quick"], root, env, ok=(0, 2))
    project = Project(root, (first, second), machines)
    for machine, commit in (("alpha", first), ("alpha", second), ("beta", second)):
        project.results_file(machine, commit)   # asserts the run saved its results
    _BUILT[base] = project
    return project


def combinations() -> List[Tuple[str, str, str]]:
    """The suite's combinations in asv's order."""
    return list(itertools.product(DATA, ACCESS, GC))


def add_environment(source: Path, python: str, numpy: str,
                    changes: Mapping[Tuple[str, Tuple[str, str, str]], Optional[float]] = {},
                    ) -> Path:
    """Copy a real results file as environment ``virtualenv-py{python}-numpy{numpy}``.

    ``changes`` maps (benchmark, (data, access, gc)) to the value the copy
    stores instead (None: failed).  Returns the new file's path.
    """
    data = json.loads(source.read_text())
    name = f"virtualenv-py{python}-numpy{numpy}"
    data["env_name"] = name
    data["python"] = python
    data["params"] = dict(data["params"], python=python, numpy=numpy)
    data["requirements"] = {"numpy": numpy}
    at = data["result_columns"].index("result")
    for (bench, combination), value in changes.items():
        row = data["results"][bench]
        row[at][combinations().index(combination)] = value
    target = source.with_name(f"{data['commit_hash'][:8]}-{name}.json")
    target.write_text(json.dumps(data))
    return target


def run_cowmem(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m cowmem ARGS`` in ``cwd``, output captured as text."""
    return subprocess.run([sys.executable, "-m", "cowmem", *args], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def snapshot(root: Path) -> Dict[str, Tuple[str, int]]:
    """Every file under ``root``: content digest and modification time (ns)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_line_error(done: subprocess.CompletedProcess, command: str,
                          *fragments: str) -> None:
    """Exit 2 with one line ``cowmem COMMAND: error: ...`` holding every fragment, no traceback."""
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cowmem {command}: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
