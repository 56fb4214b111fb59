"""cowmem.asv.Copies in another project's asv suite, across that project's commits.

A throwaway git repository holds a tiny package whose cache is a numpy
array at commit 1, a list of floats at commit 2, and unchanged at commit 3
(a README edit); its asv suite is one ``Copies`` subclass.  asv builds each
commit in a real virtualenv, with cowmem installed there from a wheel of
this checkout, as docs/asv.md tells a user to.  Scanning 10**5 floats copies nothing of an array's buffer and
every float object of a list: 24-byte floats in 32-byte blocks, about 3 MiB.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from cowmem import facts

ROOT = Path(__file__).resolve().parents[1]
N = 100_000
MIB = 1 << 20

CACHE_ARRAY = f"""import numpy as np


def load_cache():
    return np.arange({N}, dtype=np.float64)
"""
CACHE_LIST = f"""def load_cache():
    return [float(i) for i in range({N})]
"""
BENCHMARK = """from cowmem.asv import Copies

import tinycache


class CacheCopies(Copies):
    def build(self):
        return tinycache.load_cache()

    def access_scan(self, cache):
        for value in cache:
            pass

    def access_len(self, cache):
        len(cache)
"""
PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tinycache"
version = "0.1"
dependencies = ["numpy"]
"""


def run(command: List[str], cwd: Path, env: Dict[str, str], ok: Tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert done.returncode in ok, f"{command} exited {done.returncode}:\n{done.stdout}"
    return done


def commit(repo: Path, env: Dict[str, str], message: str, day: int) -> str:
    # A day apart: asv orders commits by date.
    date = f"2024-01-0{day}T12:00:00Z"
    dated = dict(env, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1", "-c", "commit.gpgsign=false"]
    run(git + ["add", "-A"], repo, dated)
    run(git + ["commit", "-q", "-m", message], repo, dated)
    return run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """The throwaway project, run by asv over its three commits in a virtualenv: its paths and commits."""
    work = tmp_path_factory.mktemp("own")
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    # asv looks the interpreter up on PATH by the version the config names.
    pythons = work / "pythons"
    pythons.mkdir()
    python = facts.python_version()
    (pythons / f"python{python}").symlink_to(Path(sys.executable).resolve())
    env = dict(os.environ, HOME=str(work), PATH=f"{pythons}{os.pathsep}{os.environ['PATH']}",
               PIP_FIND_LINKS=" ".join(filter(None, [os.environ.get("PIP_FIND_LINKS"), str(wheels)])),
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")))
    repo = work / "tiny"
    (repo / "tinycache").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "copies.py").write_text(BENCHMARK)
    (repo / ".gitignore").write_text(".asv/\n")
    (repo / "asv.conf.json").write_text(json.dumps({
        "version": 1, "project": "tinycache", "repo": ".", "branches": ["main"],
        "environment_type": "virtualenv", "pythons": [python],
        # cowmem goes into asv's environments like any requirement; the wheel is found through PIP_FIND_LINKS.
        "matrix": {"req": {"numpy": [np.__version__], "cowmem": [""]}},
        # asv's default build also collects the dependencies' wheels, and then cannot tell which is the project's.
        "build_command": ["python -m pip wheel --no-deps -w {build_cache_dir} {build_dir}"],
        "benchmark_dir": "benchmarks", "env_dir": ".asv/env", "results_dir": ".asv/results",
        "html_dir": ".asv/html"}, indent=2))
    (repo / "tinycache" / "__init__.py").write_text(CACHE_ARRAY)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    first = commit(repo, env, "cache as a numpy array", 1)
    (repo / "tinycache" / "__init__.py").write_text(CACHE_LIST)
    second = commit(repo, env, "cache as a list of floats", 2)
    (repo / "README").write_text("tinycache\n")
    third = commit(repo, env, "a README", 3)
    asv = [sys.executable, "-m", "asv"]
    run(asv + ["machine", "--yes", "--machine", "own"], repo, env)
    run(asv + ["run", "--record-samples", "--machine", "own", "main"], repo, env)
    return {"repo": repo, "env": env, "commits": (first, second, third), "asv": asv}


def stored(project: Dict[str, object], commit: str, benchmark: str) -> Dict[str, object]:
    """access -> (result, samples) for one benchmark of one commit's results file."""
    [path] = (project["repo"] / ".asv" / "results" / "own").glob(f"{commit[:8]}-virtualenv-*.json")
    data = json.loads(path.read_text())
    columns = dict(zip(data["result_columns"], data["results"][f"copies.CacheCopies.{benchmark}"]))
    accesses = [p.strip("'") for p in columns["params"][0]]
    return {a: (r, s) for a, r, s in zip(accesses, columns["result"], columns["samples"])}


def test_each_commit_is_built_and_measured_in_three_children(project: Dict[str, object]) -> None:
    array, floats, readme = (stored(project, c, "track_data_mib") for c in project["commits"])
    for results in (array, floats, readme):
        for access, (median, kept) in results.items():
            assert len(kept) == 3 and median == pytest.approx(statistics.median(kept)), access
    # The array's buffer is only read: at most its object's header page.
    assert array["scan"][0] <= 4096 / MIB
    # Every float of the list is copied: 32-byte blocks (pool headers add under 2 %).
    for results in (floats, readme):
        assert 32 * N * 0.98 / MIB <= results["scan"][0] <= 32 * N * 1.03 / MIB
        assert results["len"][0] <= 4096 / MIB
    per_element = stored(project, project["commits"][1], "track_bytes_per_element")
    assert 31 <= per_element["scan"][0] <= 33


def cowmem_report(project: Dict[str, object], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cowmem", "report", "--results", str(project["repo"] / ".asv" / "results"),
                           *args], capture_output=True, text=True, env=project["env"])


def test_the_gate_trips_on_the_commit_that_made_the_list(project: Dict[str, object]) -> None:
    first, second, third = project["commits"]
    tripped = cowmem_report(project, "--compare", f"commit={first[:8]}", f"commit={second[:8]}")
    assert tripped.returncode == 1, tripped
    assert "access=scan" in tripped.stdout and "access=len" not in tripped.stdout
    quiet = cowmem_report(project, "--compare", f"commit={second[:8]}", f"commit={third[:8]}")
    assert quiet.returncode == 0, quiet


def test_asv_continuous_flags_it_too(project: Dict[str, object]) -> None:
    first, second, _ = project["commits"]
    done = run(project["asv"] + ["continuous", "--machine", "own", first, second], project["repo"],
               project["env"], ok=(0, 1))
    assert done.returncode == 1, done.stdout
    # asv's table: | Change | Before | After | Ratio | Benchmark (Parameter) |
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in done.stdout.splitlines() if line.lstrip().startswith("|")]
    changed = {row[4] for row in rows if len(row) == 5 and row[0] == "+"}
    assert "copies.CacheCopies.track_data_mib('scan')" in changed, done.stdout
    # (asv has no absolute threshold: a page's change from 0, as len's may be, is flagged too;
    # cowmem's gate asks for 1 MiB and 10 %.)
