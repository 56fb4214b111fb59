"""Reading asv's results directory: every run's values, their spread, and the machines.

The format is asv 0.6's: ``<results>/<machine>/machine.json``,
``<results>/<machine>/<commit8>-<env>.json`` and ``<results>/benchmarks.json``.
It is read with the standard library only, never written, and a file from
another format version is refused with a clear error rather than guessed at.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

from ..errors import CowmemError, UnknownNameError

# The file-format versions asv 0.6 writes ("version" key of each file):
# asv.results.Results.api_version, asv.machine.Machine.api_version and
# asv.benchmarks.Benchmarks.api_version.
RESULTS_FORMAT = 2
MACHINE_FORMAT = 1
BENCHMARKS_FORMAT = 2

# The files asv keeps beside the results files, never results themselves.
_NOT_RESULTS = {"machine.json", "benchmarks.json"}

# A value: the benchmark's number; NaN when asv recorded n/a (the combination
# does not apply), None when the benchmark failed.
Value = Optional[float]
# (benchmark name, asv's repr'd parameter values)
Key = Tuple[str, Tuple[str, ...]]


class ResultsError(CowmemError, ValueError):
    """The results directory is missing or empty, or holds a file cowmem cannot read."""


@dataclass(frozen=True)
class Environment:
    """One asv environment on one machine."""

    machine: str
    name: str                                   # asv's environment name
    python: str                                 # "3.12.1", "3.12", or an interpreter path
    requirements: Tuple[Tuple[str, str], ...]   # e.g. (("numpy", "2.2.6"), ("psutil", ""))
    env_vars: Tuple[Tuple[str, str], ...]

    def label_lines(self, with_machine: bool) -> List[str]:
        """Short header lines: machine (when asked), python, each pinned requirement, variables.

        A requirement without a version (asv's ``"psutil": [""]``, the newest)
        says nothing that tells environments apart, and is left out.
        """
        lines = [self.machine] if with_machine else []
        lines.append(f"py{self.python}" if is_version(self.python) else self.python)
        lines += [f"{name} {version}" for name, version in self.requirements if version]
        lines += [f"{name}={value}" for name, value in self.env_vars]
        return lines

    def label(self) -> str:
        """The header lines on one line, without the machine: ``py3.12 numpy 2.4.6``."""
        return " ".join(self.label_lines(False))

    def sort_key(self) -> tuple:
        """Machine, then python and requirement versions in numeric order."""
        return (self.machine, version_key(self.python),
                tuple((name, version_key(version)) for name, version in self.requirements),
                self.env_vars, self.name)

    def __str__(self) -> str:
        return f"{self.name} on {self.machine}"


@dataclass(frozen=True)
class BenchmarkInfo:
    """What benchmarks.json says about a benchmark: its parameter names, unit and type."""

    name: str
    param_names: Tuple[str, ...]
    unit: str
    type: str          # "track", "time", ...


@dataclass(frozen=True)
class Run:
    """One results file: every benchmark's values in one environment at one commit."""

    environment: Environment
    commit: str
    date: int                                          # commit date, ms since the epoch
    path: Path
    params: Mapping[str, Tuple[Tuple[str, ...], ...]]  # benchmark -> repr'd parameter values
    values: Mapping[Key, Value]
    # (low, high) of the combination's samples, else of asv's statistics;
    # absent when asv recorded neither (one measurement, as in older results)
    spreads: Mapping[Key, Tuple[float, float]]

    def sort_key(self) -> tuple:
        return (self.environment.sort_key(), -self.date, self.commit)


@dataclass(frozen=True)
class Results:
    """Everything read from one asv results directory."""

    path: Path
    runs: Tuple[Run, ...]
    benchmarks: Mapping[str, BenchmarkInfo]   # empty when there is no benchmarks.json
    machines: Mapping[str, Mapping[str, str]]  # machine -> its machine.json (os, cpu, ...)

    def environments(self) -> List[Environment]:
        """Every environment that has results, in column order."""
        return sorted({run.environment for run in self.runs}, key=Environment.sort_key)

    def commits(self) -> List[str]:
        """Every commit that has results, newest (by commit date) first."""
        dates: Dict[str, int] = {}
        for run in self.runs:
            dates[run.commit] = run.date
        return sorted(dates, key=lambda commit: (-dates[commit], commit))

    def resolve_commit(self, prefix: Optional[str]) -> str:
        """The full hash of the commit starting with ``prefix``; the newest commit for None."""
        commits = self.commits()
        if prefix is None:
            return commits[0]
        matches = [commit for commit in commits if commit.startswith(prefix.lower())]
        if len(matches) == 1:
            return matches[0]
        shown = ", ".join(commit[:8] for commit in commits)
        if not matches:
            raise UnknownNameError(f"no results for commit {prefix!r} in {self.path}; "
                                   f"commits with results: {shown}")
        raise UnknownNameError(f"commit {prefix!r} is ambiguous: "
                               + ", ".join(commit[:8] for commit in matches))

    def runs_at(self, commit: str) -> List[Run]:
        """The runs of one commit, in column order."""
        return sorted((run for run in self.runs if run.commit == commit), key=Run.sort_key)

    def info(self, benchmark: str) -> Optional[BenchmarkInfo]:
        return self.benchmarks.get(benchmark)


# --- reading -------------------------------------------------------------------------

def load_results(path: Union[str, Path]) -> Results:
    """Read every machine's results under ``path`` (asv's ``results_dir``); read-only.

    Raises :class:`ResultsError` for a missing or empty directory, a file that
    is not asv's JSON, or a file from another asv format version.
    """
    root = Path(path)
    if not root.exists():
        raise ResultsError(f"results directory {root} does not exist (run `asv run` first)")
    if not root.is_dir():
        raise ResultsError(f"{root} is not a directory; pass asv's results directory")
    runs: List[Run] = []
    machines: Dict[str, Mapping[str, str]] = {}
    for machine_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in machine_dir.glob("*.json") if p.name not in _NOT_RESULTS)
        if not files:
            continue
        machine, info = _read_machine(machine_dir)
        machines[machine] = info
        runs += [_read_run(file, machine) for file in files]
    if not runs:
        raise ResultsError(f"no asv results in {root} (expected <machine>/<commit>-<env>.json "
                           "files; run `asv run` first)")
    return Results(root, tuple(runs), _read_benchmarks(root / "benchmarks.json"), machines)


def _load_json(path: Path, expected_format: int, what: str) -> dict:
    """A JSON object written by asv in format ``expected_format``, or ResultsError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ResultsError(f"{path} is not asv's {what} JSON: "
                           f"{exc if isinstance(exc, ValueError) else 'nested too deep'}") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} is not asv's {what} JSON: a {type(data).__name__}, "
                           "not an object")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsError(f"{path} is not asv's {what} JSON: no format version")
    if version > expected_format:
        raise ResultsError(f"{path} is in {what} format version {version}, newer than the "
                           f"version {expected_format} cowmem reads (asv 0.6's); "
                           "upgrade cowmem or read it with the asv that wrote it")
    if version < expected_format:
        raise ResultsError(f"{path} is in the old {what} format version {version}; "
                           f"`asv update` converts it to version {expected_format}")
    return data


def _read_machine(machine_dir: Path) -> Tuple[str, Dict[str, str]]:
    path = machine_dir / "machine.json"
    if not path.is_file():
        raise ResultsError(f"{machine_dir} holds results but no machine.json; "
                           "is it an asv results directory?")
    data = _load_json(path, MACHINE_FORMAT, "machine")
    name = data.get("machine")
    if not isinstance(name, str) or not name:
        raise ResultsError(f"{path} names no machine")
    return name, {str(k): str(v) for k, v in data.items() if k != "version"}


def _read_benchmarks(path: Path) -> Dict[str, BenchmarkInfo]:
    if not path.exists():
        return {}
    infos = {}
    for name, entry in _load_json(path, BENCHMARKS_FORMAT, "benchmarks").items():
        if name == "version":
            continue
        if not isinstance(entry, dict):
            raise ResultsError(f"{path}: the entry of {name} is not an object")
        param_names = entry.get("param_names") or []
        unit = entry.get("unit") or ""
        kind = entry.get("type") or ""
        if not (isinstance(param_names, list) and all(isinstance(p, str) for p in param_names)
                and isinstance(unit, str) and isinstance(kind, str)):
            raise ResultsError(f"{path}: malformed param_names, unit or type for {name}")
        infos[name] = BenchmarkInfo(name, tuple(param_names), unit, kind)
    return infos


def _read_run(path: Path, machine: str) -> Run:
    data = _load_json(path, RESULTS_FORMAT, "results")

    def field(key: str, kind: type, default=None):
        value = data.get(key, default)
        if not isinstance(value, kind):
            raise ResultsError(f"{path} is not asv's results JSON: "
                               f"{key!r} missing or not a {kind.__name__}")
        return value

    commit = field("commit_hash", str)
    env_name = field("env_name", str)
    date = field("date", int)
    env_params = field("params", dict)
    columns = field("result_columns", list)
    results = field("results", dict)
    requirements = field("requirements", dict, {})
    env_vars = field("env_vars", dict, {})
    if "result" not in columns or "params" not in columns:
        raise ResultsError(f"{path} is not asv's results JSON: result_columns lacks "
                           "'result' or 'params'")
    if env_params.get("machine", machine) != machine:
        raise ResultsError(f"{path} is for machine {env_params['machine']!r}, "
                           f"but its machine.json names {machine!r}")
    python = str(env_params.get("python", data.get("python", "")))
    environment = Environment(
        machine, env_name, python,
        tuple(sorted((str(k), "" if v is None else str(v)) for k, v in requirements.items())),
        tuple(sorted((str(k), str(v)) for k, v in env_vars.items())))

    params: Dict[str, Tuple[Tuple[str, ...], ...]] = {}
    values: Dict[Key, Value] = {}
    spreads: Dict[Key, Tuple[float, float]] = {}
    for name, row in results.items():
        if not isinstance(row, list):
            raise ResultsError(f"{path}: the results of {name} are not a list")
        row = dict(zip(columns, row + [None] * (len(columns) - len(row))))  # asv drops trailing nulls
        bench_params = row["params"]
        if not (isinstance(bench_params, list)
                and all(isinstance(p, list) and all(isinstance(v, str) for v in p)
                        for p in bench_params)):
            raise ResultsError(f"{path}: malformed parameters for {name}")
        combinations = list(itertools.product(*bench_params))
        columns_of = {column: _per_combination(row.get(column), len(combinations))
                      for column in ("result", "samples", "stats_ci_99_a", "stats_ci_99_b",
                                     "stats_q_25", "stats_q_75")}
        if (columns_of["result"] is None
                or not all(v is None or _is_number(v) for v in columns_of["result"])):
            raise ResultsError(f"{path}: the values of {name} do not match its parameters")
        params[name] = tuple(tuple(p) for p in bench_params)
        for i, combination in enumerate(combinations):
            value = columns_of["result"][i]
            values[(name, combination)] = None if value is None else float(value)
            spread = _spread({column: (cells[i] if cells else None)
                              for column, cells in columns_of.items()})
            if spread is not None:
                spreads[(name, combination)] = spread
    return Run(environment, commit, date, path, params, values, spreads)


def _per_combination(cells: object, count: int) -> Optional[list]:
    """A column's list of one entry per combination; None for a column asv left out.

    asv stores a benchmark that failed entirely as a single null.
    """
    if cells is None:
        return [None] * count
    if not isinstance(cells, list) or len(cells) != count:
        return None
    return cells


def _spread(cells: Mapping[str, object]) -> Optional[Tuple[float, float]]:
    """The combination's spread: its samples' range, else asv's 99 % interval, else quartiles."""
    samples = cells.get("samples")
    if isinstance(samples, list):
        numbers = [float(s) for s in samples if _is_number(s) and math.isfinite(s)]
        if numbers:
            return min(numbers), max(numbers)
    for low_column, high_column in (("stats_ci_99_a", "stats_ci_99_b"),
                                    ("stats_q_25", "stats_q_75")):
        low, high = cells.get(low_column), cells.get(high_column)
        if _is_number(low) and _is_number(high) and math.isfinite(low) and math.isfinite(high):
            return float(min(low, high)), float(max(low, high))
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- names and versions ------------------------------------------------------------

def is_version(text: str) -> bool:
    """"3.12", "3.12.1", "3.14t": a version, not an interpreter path."""
    return re.fullmatch(r"\d+(\.\d+)*t?", text) is not None


def version_key(text: str) -> tuple:
    """Sort "3.9" before "3.10": numbers compare as numbers, other parts as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"[.\-_+]", text))


def display_param(value: str) -> str:
    """asv stores parameter values repr'd ("'ints'"); show strings without the quotes."""
    try:
        literal = ast.literal_eval(value)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return value
    return literal if isinstance(literal, str) else value


def is_measured(value: object) -> bool:
    """A number: neither failed (None), n/a (NaN) nor absent."""
    return isinstance(value, float) and not math.isnan(value)
