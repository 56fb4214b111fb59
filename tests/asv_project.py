"""Test helper: real asv results from a tiny throwaway suite, and environments derived from them.

``build_project`` makes a git repository with a suite shaped like cowmem's
results contract, runs real asv on it with the current interpreter
(``-E existing:same --record-samples``) on two machines and two commits,
and once more on the first machine into a second results directory (two
runs of one environment), and keeps the results:

- ``copies.Copies`` (data x access x gc, MiB): the three copy metrics, each
  returning three samples whose values the tests derive from the case;
- ``measured.Measured.track_child_mib``: a real whole-child measurement
  (cowmem.measure_fork, three children), the only value that varies between
  runs;
- ``cost.Cost.track_measuring_ms``: a timing figure the gate must ignore;
- ``bench_explain.Causes``: copied MiB by cause of the first write;
- ``bench_platform.Platform.track_fact``: the platform facts, read from this
  interpreter and kernel.

``add_environment`` copies one of those real results files under another
environment's name (``virtualenv-py3.12.1-numpy2.2.6``) with chosen values
changed and the facts it records set to that environment's versions: asv can
only run the current interpreter here without building environments, and
building them takes minutes.
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
SIZE = 10**7                # elements the values below stand for
LIST_MIB = 306.40625        # 78,440 pages: the 10**7-element list of docs/method.md
CHILD_EXTRA_MIB = 4.0
PAGE_MIB = 4096 / 2**20
DATA_BENCH = "copies.Copies.track_data_mib"
CHILD_BENCH = "copies.Copies.track_child_mib"
PER_ELEMENT_BENCH = "copies.Copies.track_bytes_per_element"
MEASURED_BENCH = "measured.Measured.track_child_mib"
COST_BENCH = "cost.Cost.track_measuring_ms"
EXPLAIN_BENCH = "bench_explain.Causes.track_data_mib_by_first_write"
PLATFORM_BENCH = "bench_platform.Platform.track_fact"
FACTS = ["python", "free_threaded", "numpy", "pandas", "kernel", "page_size", "thp",
         "pfns_readable"]
COST_MS = 12.5
CAUSES = ["refcount", "gc_header", "payload"]


def data_mib(data: str, access: str, gc: str) -> float:
    """What track_data_mib returns (all three samples); NaN (n/a) for ndarray with gc freeze."""
    if data == "ndarray" and gc == "freeze":
        return float("nan")
    return LIST_MIB if data == "list_int" and gc == "plain" else 0.0


def child_samples(data: str, access: str, gc: str) -> List[float]:
    """track_child_mib's three samples: the data's MiB plus the interpreter's, one page apart."""
    base = data_mib(data, access, gc) + CHILD_EXTRA_MIB
    return [base - PAGE_MIB, base, base + PAGE_MIB]


def cause_mib(pair: str, cause: str) -> float:
    """What the explain benchmark returns: list_int x iterate is all refcount writes."""
    return LIST_MIB if (pair, cause) == ("list_int x iterate", "refcount") else 0.0


SUITE = {
    "copies.py": f'''
DATA = {DATA!r}
ACCESS = {ACCESS!r}
GC = {GC!r}
PAGE_MIB = {PAGE_MIB!r}


def _samples(value):
    return {{"samples": [value, value, value], "number": 1}}


class Copies:
    params = [DATA, ACCESS, GC]
    param_names = {PARAM_NAMES!r}

    def setup(self, data, access, gc):
        if data == "ndarray" and gc == "freeze":
            raise NotImplementedError("does not apply")

    def _mib(self, data, access, gc):
        return {LIST_MIB!r} if data == "list_int" and gc == "plain" else 0.0

    def track_data_mib(self, data, access, gc):
        return _samples(self._mib(data, access, gc))

    track_data_mib.unit = "MiB"

    def track_child_mib(self, data, access, gc):
        if data == "ndarray" and access == "sum" and gc == "plain":
            raise RuntimeError("a failing combination")
        base = self._mib(data, access, gc) + {CHILD_EXTRA_MIB!r}
        return {{"samples": [base - PAGE_MIB, base, base + PAGE_MIB], "number": 1}}

    track_child_mib.unit = "MiB"

    def track_bytes_per_element(self, data, access, gc):
        return _samples(self._mib(data, access, gc) * 2**20 / {SIZE!r})

    track_bytes_per_element.unit = "bytes"
''',
    "measured.py": '''
from cowmem import measure_fork

MIB = 2**20


class Measured:
    params = [["iterate", "none"]]
    param_names = ["access"]

    def setup(self, access):
        self.data = list(range(10**4))

    def track_child_mib(self, access):
        data = self.data
        work = (lambda: [x for x in data]) if access == "iterate" else (lambda: None)
        return {"samples": [measure_fork(work, cross_checks=False).copied_bytes / MIB
                            for _ in range(3)], "number": 1}

    track_child_mib.unit = "MiB"
''',
    "cost.py": f'''
class Cost:
    def track_measuring_ms(self):
        return {COST_MS!r}

    track_measuring_ms.unit = "ms"
''',
    "bench_explain.py": f'''
CAUSES = {CAUSES!r}


class Causes:
    params = [["list_int x iterate", "ndarray x sum"], CAUSES]
    param_names = ["pair", "cause"]
    unit = "MiB"

    def track_data_mib_by_first_write(self, pair, cause):
        return {LIST_MIB!r} if (pair, cause) == ("list_int x iterate", "refcount") else 0.0
''',
    "bench_platform.py": f'''
import os
import sys
import sysconfig

FACTS = {FACTS!r}


def _version(text):
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in text.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0] * 10**6 + parts[1] * 10**3 + parts[2]


class Platform:
    params = [FACTS]
    param_names = ["fact"]

    def setup(self, fact):
        if fact in ("numpy", "pandas"):
            try:
                self.module = __import__(fact)
            except ImportError:
                raise NotImplementedError(fact + " is not installed")

    def track_fact(self, fact):
        if fact == "python":
            return _version("%d.%d.%d" % sys.version_info[:3])
        if fact == "free_threaded":
            return int(bool(sysconfig.get_config_var("Py_GIL_DISABLED")))
        if fact in ("numpy", "pandas"):
            return _version(self.module.__version__)
        if fact == "kernel":
            return _version(os.uname().release.split("-")[0])
        if fact == "page_size":
            return os.sysconf("SC_PAGE_SIZE")
        if fact == "thp":
            with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
                mode = f.read().split("[")[1].split("]")[0]
            return ["never", "madvise", "always"].index(mode)
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(8 * (id(self) // 4096))
            return int(int.from_bytes(f.read(8), "little") & ((1 << 55) - 1) != 0)
''',
}

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

    @property
    def repeat(self) -> Path:
        """A second run of the first machine at the newest commit, in the same environment."""
        return self.root / "repeat"

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
    """The tiny project under ``base`` (built once per process; about 40 s of asv)."""
    if base in _BUILT:
        return _BUILT[base]
    root = base / "tiny"
    (root / "benchmarks").mkdir(parents=True)
    (root / "benchmarks" / "__init__.py").write_text("")
    for name, text in SUITE.items():
        (root / "benchmarks" / name).write_text(text)
    (root / "asv.conf.json").write_text(json.dumps(CONFIG, indent=2))
    (root / "home").mkdir()   # asv's machine file goes to $HOME: keep it in here
    (root / ".gitignore").write_text("home/\nresults/\nrepeat/\nhtml/\nenv/\n")
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
    for machine, commit in (("alpha", second), ("alpha", first), ("beta", second)):
        _run(asv + ["machine", "--yes", "--machine", machine], root, env)
        # asv run exits 2 because one combination fails on purpose.
        _run(asv + ["run", "-E", "existing:same", "--machine", machine, "--set-commit-hash",
                    commit, "--record-samples"], root, env, ok=(0, 2))
        if (machine, commit) == ("alpha", second):   # alpha's first run, kept apart
            shutil.copytree(root / "results", root / "repeat")
    # the same environment, machine and commit run again: results/ keeps this one
    _run(asv + ["run", "-E", "existing:same", "--machine", "alpha", "--set-commit-hash", second,
                "--record-samples"], root, env, ok=(0, 2))
    project = Project(root, (first, second), machines)
    for machine, commit in (("alpha", first), ("alpha", second), ("beta", second)):
        project.results_file(machine, commit)   # asserts the run saved its results
    _BUILT[base] = project
    return project


def combinations() -> List[Tuple[str, str, str]]:
    """The suite's combinations in asv's order."""
    return list(itertools.product(DATA, ACCESS, GC))


def add_environment(source: Path, python: str, numpy: str,
                    changes: Mapping[Tuple[str, Tuple[str, ...]], Optional[float]] = {},
                    facts: bool = True) -> Path:
    """Copy a real results file as environment ``virtualenv-py{python}-numpy{numpy}``.

    ``changes`` maps (benchmark, displayed parameter values) to the value the
    copy stores instead, as three equal samples (None: failed).  The copy's
    platform facts name ``python`` and ``numpy`` (a python without a patch
    release records none); ``facts=False`` drops them, as in results written
    before the suite recorded any.  Returns the new file's path.
    """
    data = json.loads(source.read_text())
    name = f"virtualenv-py{python}-numpy{numpy}"
    data["env_name"] = name
    data["python"] = python
    data["params"] = dict(data["params"], python=python, numpy=numpy)
    data["requirements"] = {"numpy": numpy}
    columns = data["result_columns"]
    recorded = {"numpy": encode_version(numpy)}
    if python.count(".") == 2:
        recorded["python"] = encode_version(python)
    changes = dict(changes)
    for fact, value in recorded.items():
        changes[(PLATFORM_BENCH, (fact,))] = value
    if not facts:
        del data["results"][PLATFORM_BENCH]
        changes = {key: v for key, v in changes.items() if key[0] != PLATFORM_BENCH}
    for (bench, combination), value in changes.items():
        row = data["results"][bench]
        row += [None] * (len(columns) - len(row))
        params = [[display(v) for v in values] for values in row[columns.index("params")]]
        at = list(itertools.product(*params)).index(tuple(combination))
        for column in columns:
            cells = row[columns.index(column)]
            if column == "result":
                cells[at] = value
            elif column == "samples" and cells is not None:
                cells[at] = None if value is None else [value] * 3
            elif column.startswith("stats_") and cells is not None:
                cells[at] = None
    target = source.with_name(f"{data['commit_hash'][:8]}-{name}.json")
    target.write_text(json.dumps(data))
    return target


def encode_version(text: str) -> int:
    """``"3.12.1"`` -> 3012001, as the suite's platform facts record versions."""
    parts = [int(p) for p in text.split(".")] + [0, 0]
    return parts[0] * 10**6 + parts[1] * 10**3 + parts[2]


def display(value: str) -> str:
    """asv's repr'd parameter value as the tests name it: ``"'ints'"`` -> ``ints``."""
    return value[1:-1] if value[:1] == value[-1:] == "'" else value


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
