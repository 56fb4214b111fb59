"""The environment matrix: scripts/suite's interpreter search and asv's reading of asv.conf.json.

No environment is built: asv only looks its interpreters up on PATH to list
the environments, so fake interpreters (scripts that answer the version
probe the way a real interpreter would) stand in for CPython 3.14, 3.14t
and 3.15, which this machine does not have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from asv import environment
from asv.config import Config

ROOT = Path(__file__).resolve().parents[1]

# What asv.conf.json keeps, by exact interpreter version (docs/suite.md).
LIBS_2 = "pandas2.2.3-psutil7.2.2"
EXPECTED = {
    "3.9.18": ["numpy1.26.4-psutil7.2.2", f"numpy2.0.2-{LIBS_2}-pyarrow21.0.0"],
    "3.10.13": [f"numpy2.2.6-{LIBS_2}-pyarrow21.0.0"],
    "3.11.7": ["numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1"],
    "3.12.1": ["numpy1.26.4-psutil7.2.2", "numpy2.2.6-psutil7.2.2",
               f"numpy2.4.6-{LIBS_2}-pyarrow26.0.1", "numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1"],
    "3.13.0": [f"numpy2.4.6-{LIBS_2}-pyarrow26.0.1", "numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1"],
    "3.14.1": ["numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1"],
    "3.14.0t": ["numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1"],
    "3.15.0a3": [],
}


def fake_interpreter(directory: Path, name: str, answer: str) -> None:
    """An executable ``name`` that answers scripts/suite's probe with ``answer`` and its own path."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{answer} $0"\n')
    path.chmod(0o755)


def environments(python: str, path: Path) -> List[str]:
    """The environment names asv makes of asv.conf.json for one interpreter, looked up on ``path``."""
    conf = Config.load(str(ROOT / "asv.conf.json"))
    conf.pythons = [python]
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{path}{os.pathsep}{old}"
    try:
        return [env.name for env in environment.get_environments(conf, None, verbose=False)]
    finally:
        os.environ["PATH"] = old


@pytest.fixture
def interpreters(tmp_path: Path) -> Path:
    """python<exact version> for every version in EXPECTED (fakes: asv only looks them up)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for version in EXPECTED:
        fake_interpreter(bin_dir, f"python{version}", version)
    return bin_dir


def test_the_matrix_keeps_exactly_the_documented_cells(interpreters: Path) -> None:
    for version, cells in EXPECTED.items():
        assert environments(version, interpreters) == [f"virtualenv-py{version}-{cell}" for cell in cells], version


def test_exclude_rules_match_minor_and_exact_versions_alike(interpreters: Path) -> None:
    for minor, exact in [("3.9", "3.9.18"), ("3.12", "3.12.1"), ("3.13", "3.13.0"), ("3.14t", "3.14.0t")]:
        fake_interpreter(interpreters, f"python{minor}", exact)
        assert [name.replace(f"py{minor}-", f"py{exact}-") for name in environments(minor, interpreters)] \
            == environments(exact, interpreters)


def test_asv_accepts_an_exact_version_by_name_and_keeps_the_excludes(interpreters: Path) -> None:
    conf = Config.load(str(ROOT / "asv.conf.json"))
    os.environ["PATH"] = f"{interpreters}{os.pathsep}{os.environ['PATH']}"
    try:
        chosen = [env.name for env in environment.get_environments(conf, ["virtualenv:3.12.1"], verbose=False)]
        # Asked for by name, an interpreter whose cells are all excluded gets one bare
        # environment, without numpy: the reason scripts/suite leaves such a one out.
        bare = list(environment.get_environments(conf, ["virtualenv:3.15.0a3"], verbose=False))
    finally:
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]
    assert chosen == [f"virtualenv-py3.12.1-{cell}" for cell in EXPECTED["3.12.1"]]
    assert [env.name for env in bare] == ["virtualenv-py3.15.0a3"] and bare[0].requirements == {}


def suite_copy(tmp_path: Path) -> Path:
    """What scripts/suite --list reads, in a directory of its own: it writes .asv/pythons there."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "cowmem").mkdir()
    shutil.copy(ROOT / "scripts" / "suite", repo / "scripts" / "suite")
    shutil.copy(ROOT / "cowmem" / "facts.py", repo / "cowmem" / "facts.py")
    shutil.copy(ROOT / "asv.conf.json", repo / "asv.conf.json")
    (repo / ".venv").symlink_to(Path(sys.prefix))
    return repo


def test_scripts_suite_names_each_interpreter_by_its_exact_version(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = Path(sys.executable).resolve()
    exact = subprocess.run([str(real), "-I", str(ROOT / "cowmem" / "facts.py")], capture_output=True,
                           text=True, check=True).stdout.split()[0]
    minor = ".".join(exact.split(".")[:2])
    (bin_dir / f"python{minor}").symlink_to(real)   # a real one: it runs the probe
    fake_interpreter(bin_dir, "python3.14", "3.14.1")
    fake_interpreter(bin_dir, "python3.14t", "3.14.0t")
    fake_interpreter(bin_dir, "python3.15", "3.15.0a3")
    # A wrong answer, under a name the real one does not have: not taken.
    wrong, answer = ("3.13", "3.12.1") if minor != "3.13" else ("3.12", "3.13.1")
    fake_interpreter(bin_dir, f"python{wrong}", answer)
    repo = suite_copy(tmp_path)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONS": f"{minor} {wrong} 3.14 3.14t 3.15"}
    done = subprocess.run([str(repo / "scripts" / "suite"), "--list"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for line in [f"CPython {minor}: found {exact}", f"CPython {wrong}: missing", "CPython 3.14: found 3.14.1",
                 "CPython 3.14t: found 3.14.0t", "CPython 3.15: found 3.15.0a3",
                 "CPython 3.15.0a3: no cell of the matrix has wheels for it; skipped",
                 "  virtualenv-py3.14.1-numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1",
                 "  virtualenv-py3.14.0t-numpy2.4.6-pandas3.1.1-psutil7.2.2-pyarrow26.0.1"]:
        assert line in lines, (line, done.stdout)
    expected = len(environments(exact, repo / ".asv" / "pythons")) + 2
    assert f"{expected} environments found (CPython versions x numpy and pandas versions in asv.conf.json)" in lines
    links: Dict[str, str] = {p.name: os.readlink(p) for p in (repo / ".asv" / "pythons").iterdir()}
    assert links == {f"python{exact}": str(real), "python3.14.1": str(bin_dir / "python3.14"),
                     "python3.14.0t": str(bin_dir / "python3.14t"), "python3.15.0a3": str(bin_dir / "python3.15")}
