"""The cross-environment report over asv's results: a table, an HTML heatmap, an upgrade gate.

asv graphs each benchmark against commits, one environment at a time; this
module puts the environments side by side instead.  It reads asv's results
directory (format of asv 0.6: ``<results>/<machine>/machine.json``,
``<results>/<machine>/<commit8>-<env>.json``, ``<results>/benchmarks.json``)
with the standard library only, never writes into it, and refuses files from
another format version with a clear error rather than guessing.

One column is one environment on one machine (asv's environment name, e.g.
``virtualenv-py3.12-numpy2.2.6``); one row is one benchmark parameter
combination (for cowmem's suite: data x access x gc variant); a cell is the
benchmark's value in its own unit (MiB for the copies).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import enum
import html
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import CowmemError, UnknownNameError

# The file-format versions asv 0.6 writes ("version" key of each file):
# asv.results.Results.api_version, asv.machine.Machine.api_version and
# asv.benchmarks.Benchmarks.api_version.
RESULTS_FORMAT = 2
MACHINE_FORMAT = 1
BENCHMARKS_FORMAT = 2

# The files asv keeps beside the results files, never results themselves.
_NOT_RESULTS = {"machine.json", "benchmarks.json"}

DEFAULT_MIN_ABS = 1.0
DEFAULT_MIN_REL = 0.10

COPIED_MEANS = (
    "After fork() the parent and the child share every private page copy-on-write. "
    "\u201cCopied\u201d counts the pages that were still shared just before the access "
    "ran in the child and were the child's own just after it: each is one copy the kernel "
    "made because the access wrote to a shared page, 4096 bytes each. Pages newly "
    "allocated during the access are not copies and are not counted."
)


class ResultsError(CowmemError, ValueError):
    """The results directory is missing or empty, or holds a file cowmem cannot read."""


# A cell: the benchmark's value; NaN when asv recorded n/a (the combination
# does not apply), None when the benchmark failed.
Value = Optional[float]


@dataclass(frozen=True)
class Environment:
    """One asv environment on one machine: a column of the report."""

    machine: str
    name: str                                   # asv's environment name
    python: str                                 # "3.12", or an interpreter path for existing:
    requirements: Tuple[Tuple[str, str], ...]   # e.g. (("numpy", "2.2.6"),)
    env_vars: Tuple[Tuple[str, str], ...]

    def label_lines(self, with_machine: bool) -> List[str]:
        """Short header lines: machine (when asked), python, each requirement and variable."""
        lines = [self.machine] if with_machine else []
        # virtualenv environments name a version ("3.12"), existing: ones a path
        lines.append(f"py{self.python}" if re.fullmatch(r"[\d.]+", self.python)
                     else self.python)
        lines += [f"{name} {version}".rstrip() for name, version in self.requirements]
        lines += [f"{name}={value}" for name, value in self.env_vars]
        return lines

    def selector_fields(self) -> Dict[str, str]:
        """What ``key=value`` selectors can match: machine, python, requirements, variables."""
        fields = {"machine": self.machine, "python": self.python}
        fields.update(self.requirements)
        fields.update(self.env_vars)
        return fields

    def sort_key(self) -> tuple:
        """Machine, then python and requirement versions in numeric order."""
        return (self.machine, _version_key(self.python),
                tuple((name, _version_key(version)) for name, version in self.requirements),
                self.env_vars, self.name)

    def __str__(self) -> str:
        return f"{self.name} on {self.machine}"


@dataclass(frozen=True)
class BenchmarkInfo:
    """What benchmarks.json says about a benchmark: its parameter names and unit."""

    name: str
    param_names: Tuple[str, ...]
    unit: str


@dataclass(frozen=True)
class Run:
    """One results file: every benchmark's values in one environment at one commit."""

    environment: Environment
    commit: str
    date: int                                             # commit date, ms since the epoch
    path: Path
    params: Mapping[str, Tuple[Tuple[str, ...], ...]]     # benchmark -> repr'd parameter values
    values: Mapping[Tuple[str, Tuple[str, ...]], Value]   # (benchmark, combination) -> value


@dataclass(frozen=True)
class Results:
    """Everything read from one asv results directory."""

    path: Path
    runs: Tuple[Run, ...]
    benchmarks: Mapping[str, BenchmarkInfo]   # empty when there is no benchmarks.json

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
        runs = [run for run in self.runs if run.commit == commit]
        return sorted(runs, key=lambda run: run.environment.sort_key())


# --- reading asv's results directory -----------------------------------------

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
    for machine_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in machine_dir.glob("*.json") if p.name not in _NOT_RESULTS)
        if not files:
            continue
        machine = _read_machine(machine_dir)
        runs += [_read_run(file, machine) for file in files]
    if not runs:
        raise ResultsError(f"no asv results in {root} (expected <machine>/<commit>-<env>.json "
                           "files; run `asv run` first)")
    return Results(root, tuple(runs), _read_benchmarks(root / "benchmarks.json"))


def _load_json(path: Path, expected_format: int, what: str) -> dict:
    """A JSON object written by asv in format ``expected_format``, or ResultsError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path} is not asv's {what} JSON: {exc}") from None
    except RecursionError:
        raise ResultsError(f"{path} is not asv's {what} JSON: nested too deep to read") from None
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


def _read_machine(machine_dir: Path) -> str:
    path = machine_dir / "machine.json"
    if not path.is_file():
        raise ResultsError(f"{machine_dir} holds results but no machine.json; "
                           "is it an asv results directory?")
    name = _load_json(path, MACHINE_FORMAT, "machine").get("machine")
    if not isinstance(name, str) or not name:
        raise ResultsError(f"{path} names no machine")
    return name


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
        if not (isinstance(param_names, list) and all(isinstance(p, str) for p in param_names)
                and isinstance(unit, str)):
            raise ResultsError(f"{path}: malformed param_names or unit for {name}")
        infos[name] = BenchmarkInfo(name, tuple(param_names), unit)
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

    result_at, params_at = columns.index("result"), columns.index("params")
    params: Dict[str, Tuple[Tuple[str, ...], ...]] = {}
    values: Dict[Tuple[str, Tuple[str, ...]], Value] = {}
    for name, row in results.items():
        if not isinstance(row, list):
            raise ResultsError(f"{path}: the results of {name} are not a list")
        row = row + [None] * (len(columns) - len(row))   # asv drops trailing nulls
        bench_params, bench_values = row[params_at], row[result_at]
        if not (isinstance(bench_params, list)
                and all(isinstance(p, list) and all(isinstance(v, str) for v in p)
                        for p in bench_params)):
            raise ResultsError(f"{path}: malformed parameters for {name}")
        combinations = list(itertools.product(*bench_params))
        if bench_values is None:     # asv stores a benchmark that failed entirely as null
            bench_values = [None] * len(combinations)
        if (not isinstance(bench_values, list) or len(bench_values) != len(combinations)
                or not all(v is None or _is_number(v) for v in bench_values)):
            raise ResultsError(f"{path}: the values of {name} do not match its parameters")
        params[name] = tuple(tuple(p) for p in bench_params)
        for combination, value in zip(combinations, bench_values):
            values[(name, combination)] = None if value is None else float(value)
    return Run(environment, commit, date, path, params, values)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _version_key(text: str) -> tuple:
    """Sort "3.9" before "3.10": numbers compare as numbers, other parts as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"[.\-_+]", text))


def _display_param(value: str) -> str:
    """asv stores parameter values repr'd ("'ints'"); show strings without the quotes."""
    try:
        literal = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return literal if isinstance(literal, str) else value


# --- what counts as a change --------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """A change counts when it exceeds both thresholds: absolute (benchmark's unit) and relative."""

    min_abs: float = DEFAULT_MIN_ABS
    min_rel: float = DEFAULT_MIN_REL

    def differs(self, old: float, new: float) -> bool:
        """True when ``new`` differs from ``old`` by more than both thresholds."""
        delta = abs(new - old)
        return delta > self.min_abs and delta > self.min_rel * abs(old)

    def describe(self) -> str:
        return f"more than {self.min_abs:g} (in the benchmark's unit) and {self.min_rel:.0%}"


def _is_measured(cell: "Cell") -> bool:
    """A number: neither failed (None), n/a (NaN) nor not run."""
    return isinstance(cell, float) and not math.isnan(cell)


# --- the cross-environment table -----------------------------------------------

class NotRun(enum.Enum):
    """A combination an environment's results do not have (shown as "-")."""

    NOT_RUN = "-"


NOT_RUN = NotRun.NOT_RUN
Cell = Union[float, None, NotRun]


@dataclass(frozen=True)
class Row:
    """One parameter combination of one benchmark across every column."""

    combination: Tuple[str, ...]    # asv's repr'd parameter values
    cells: Tuple[Cell, ...]
    marked: Tuple[bool, ...]        # cell differs from the row's most common value

    def labels(self) -> List[str]:
        return [_display_param(value) for value in self.combination]


@dataclass(frozen=True)
class BenchmarkTable:
    """The rows of one benchmark."""

    name: str
    param_names: Tuple[str, ...]
    unit: str
    rows: Tuple[Row, ...]


@dataclass(frozen=True)
class Table:
    """The report: one commit, every environment that has results for it, side by side."""

    results_path: Path
    commit: str
    date: int
    columns: Tuple[Environment, ...]
    benchmarks: Tuple[BenchmarkTable, ...]
    absent: Tuple[Environment, ...]   # environments with results, but none at this commit
    thresholds: Thresholds

    def several_machines(self) -> bool:
        return len({env.machine for env in self.columns}) > 1

    def heading(self) -> str:
        day = datetime.datetime.fromtimestamp(self.date / 1000, datetime.timezone.utc)
        return (f"asv results in {self.results_path} at commit {self.commit[:8]} "
                f"({day:%Y-%m-%d}): {len(self.columns)} environment(s)")


def build_table(results: Results, commit: Optional[str] = None,
                thresholds: Thresholds = Thresholds(),
                bench: Sequence[str] = ()) -> Table:
    """The table for ``commit`` (a prefix; the newest commit when None).

    ``bench`` holds regular expressions; when given, only the benchmarks whose
    name matches one of them are kept.
    """
    full_commit = results.resolve_commit(commit)
    runs = results.runs_at(full_commit)
    columns = tuple(run.environment for run in runs)
    names = _select_benchmarks({name for run in runs for name in run.params}, bench)
    tables = []
    for name in names:
        combinations = _combinations(runs, name)
        info = results.benchmarks.get(name)
        arity = len(combinations[0]) if combinations else 0
        param_names = (info.param_names if info and len(info.param_names) == arity
                       else tuple(f"param{i + 1}" for i in range(arity)))
        rows = []
        for combination in combinations:
            cells = tuple(run.values.get((name, combination), NOT_RUN) for run in runs)
            rows.append(Row(combination, cells, _marks(cells, thresholds)))
        tables.append(BenchmarkTable(name, param_names, info.unit if info else "", tuple(rows)))
    absent = tuple(env for env in results.environments() if env not in columns)
    date = runs[0].date
    return Table(results.path, full_commit, date, columns, tuple(tables), absent, thresholds)


def _select_benchmarks(names: Iterable[str], patterns: Sequence[str]) -> List[str]:
    try:
        regexes = [re.compile(pattern) for pattern in patterns]
    except re.error as exc:
        raise UnknownNameError(f"bad --bench regular expression: {exc}") from None
    chosen = sorted(name for name in names
                    if not regexes or any(regex.search(name) for regex in regexes))
    if not chosen:
        raise UnknownNameError(f"no benchmark matches {', '.join(patterns)}; benchmarks: "
                               + ", ".join(sorted(names)))
    return chosen


def _combinations(runs: Sequence[Run], name: str) -> List[Tuple[str, ...]]:
    """Every combination any run has, in asv's order (first run's parameters first)."""
    seen: Dict[Tuple[str, ...], None] = {}
    for run in runs:
        if name in run.params:
            for combination in itertools.product(*run.params[name]):
                seen.setdefault(combination, None)
    return list(seen)


def _marks(cells: Sequence[Cell], thresholds: Thresholds) -> Tuple[bool, ...]:
    """Mark the measured cells that differ from the row's most common value.

    The reference is the measured value that the most cells agree with (within
    the thresholds); ties go to the leftmost, so with two environments the
    right-hand one is marked.
    """
    measured = [c for c in cells if _is_measured(c)]
    if not measured:
        return tuple(False for _ in cells)
    reference = max(measured, key=lambda ref: sum(not thresholds.differs(ref, c)
                                                  for c in measured))
    return tuple(_is_measured(c) and thresholds.differs(reference, c) for c in cells)


def format_value(cell: Cell) -> str:
    """A cell as text: the value (0 exactly as "0"), "n/a", "failed", or "-" (not run)."""
    if cell is NOT_RUN:
        return NOT_RUN.value
    if cell is None:
        return "failed"
    if math.isnan(cell):
        return "n/a"
    if cell == 0:
        return "0"
    # tenths of a MiB for large values, three significant digits below 10
    # (a page is 0.0039 MiB)
    return f"{cell:.1f}" if abs(cell) >= 10 else f"{cell:.3g}"


def render_text(table: Table) -> str:
    """The table as aligned plain text, one block per benchmark."""
    several = table.several_machines()
    out = [table.heading(),
           f"* = differs from the row's most common value by {table.thresholds.describe()}"]
    if table.absent:
        out.append("no results at this commit: " + ", ".join(str(e) for e in table.absent))
    for bench in table.benchmarks:
        labels = [env.label_lines(several) for env in table.columns]
        depth = max(len(lines) for lines in labels)
        labels = [lines + [""] * (depth - len(lines)) for lines in labels]
        params = [list(bench.param_names)] + [row.labels() for row in bench.rows]
        cells = [[format_value(c) + ("*" if m else "") for c, m in zip(row.cells, row.marked)]
                 for row in bench.rows]
        param_widths = [max(len(r[i]) for r in params) for i in range(len(bench.param_names))]
        cell_widths = [max([len(line) for line in labels[j]] + [len(r[j]) for r in cells])
                       for j in range(len(table.columns))]
        out += ["", f"{bench.name}" + (f" ({bench.unit})" if bench.unit else "")]
        for depth_index in range(depth):
            head = [("" if depth_index < depth - 1 else name).ljust(w)
                    for name, w in zip(bench.param_names, param_widths)]
            head += [labels[j][depth_index].rjust(w) for j, w in enumerate(cell_widths)]
            out.append("  ".join(head).rstrip())
        for row, row_cells in zip(bench.rows, cells):
            line = [v.ljust(w) for v, w in zip(row.labels(), param_widths)]
            line += [v.rjust(w) for v, w in zip(row_cells, cell_widths)]
            out.append("  ".join(line).rstrip())
    return "\n".join(out) + "\n"


# --- the HTML heatmap ----------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.heatmap { border-collapse: collapse; margin: 0.5em 0 2em; }
table.heatmap th, table.heatmap td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
table.heatmap th { background: #f4f4f4; font-weight: normal; text-align: left; }
table.heatmap th.env { text-align: center; }
table.heatmap td.value { text-align: right; font-variant-numeric: tabular-nums; min-width: 4em; }
table.heatmap td.differs { outline: 3px solid #1f4fd7; outline-offset: -3px; font-weight: bold; }
table.heatmap td.na, table.heatmap td.missing { color: #888; }
table.heatmap td.failed { color: #b00; }
.scale span { display: inline-block; width: 3em; text-align: center; border: 1px solid #ccc; }
dt { font-weight: bold; font-family: monospace; } dd { margin: 0 0 0.4em 1.5em; }
"""


def render_html(table: Table, descriptions: Mapping[str, Mapping[str, str]],
                links: Sequence[Tuple[str, str]] = ()) -> str:
    """One self-contained HTML page: the heatmap tables, a legend, what the names mean.

    ``descriptions`` maps a group ("data kinds", "accesses", ...) to
    name -> one sentence; only names that appear in the table are shown.
    ``links`` are (href, text) pairs put under the title (the way back into a site).
    """
    esc = html.escape
    several = table.several_machines()
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>cowmem: copies per environment</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Copy-on-write copies per environment</h1>",
        "".join(f'<p><a href="{esc(href)}">{esc(text)}</a></p>' for href, text in links),
        f'<p id="heading">{esc(table.heading())}</p>',
        '<section id="legend"><h2>Legend</h2>',
        f"<p><b>Copied</b>: {esc(COPIED_MEANS)}</p>",
        "<p>Cell colour: white is 0, dark red the largest value of its table "
        "(logarithmic). A framed bold cell differs from its row's most common value by "
        f"{esc(table.thresholds.describe())}. <i>n/a</i>: the combination does not apply; "
        "<i>failed</i>: the benchmark failed; <i>-</i>: not run in that environment.</p>",
        '<p class="scale">' + "".join(
            f'<span style="{_heat_style(t)}">{label}</span>'
            for t, label in ((0, "0"), (0.25, "&nbsp;"), (0.5, "&nbsp;"), (0.75, "&nbsp;"),
                             (1, "max")))
        + " log(1 + value) / log(1 + the table's largest value)</p>",
    ]
    if table.absent:
        parts.append("<p>No results at this commit: "
                     + esc(", ".join(str(e) for e in table.absent)) + "</p>")
    parts.append("</section>")
    for bench in table.benchmarks:
        parts.append(_html_benchmark(table, bench, several))
    used = {label for bench in table.benchmarks for row in bench.rows for label in row.labels()}
    for group, entries in descriptions.items():
        shown = [(name, text) for name, text in entries.items() if name in used]
        if shown:
            parts.append(f'<section class="names"><h2>{esc(group.capitalize())}</h2><dl>'
                         + "".join(f"<dt>{esc(name)}</dt><dd>{esc(text)}</dd>"
                                   for name, text in shown) + "</dl></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_benchmark(table: Table, bench: BenchmarkTable, several: bool) -> str:
    esc = html.escape
    measured = [c for row in bench.rows for c in row.cells if _is_measured(c)]
    top = max((abs(c) for c in measured), default=0.0)
    unit = f" ({esc(bench.unit)})" if bench.unit else ""
    out = [f'<h2>{esc(bench.name)}{unit}</h2>',
           f'<table class="heatmap" data-benchmark="{esc(bench.name)}"><thead>']
    span = len(bench.param_names)
    if several:
        out.append("<tr>" + (f'<th colspan="{span}"></th>' if span else "") + "".join(
            f'<th class="machine" colspan="{n}">{esc(machine)}</th>'
            for machine, n in _runs_of(env.machine for env in table.columns)) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{esc(p)}</th>" for p in bench.param_names) + "".join(
        f'<th class="env" data-machine="{esc(env.machine)}" data-env="{esc(env.name)}" '
        f'title="{esc(str(env))}">' + "<br>".join(esc(line) for line in env.label_lines(False))
        + "</th>" for env in table.columns) + "</tr></thead><tbody>")
    for row in bench.rows:
        cells = []
        for cell, marked, env in zip(row.cells, row.marked, table.columns):
            text = esc(format_value(cell))
            if cell is NOT_RUN:
                cls, style = "missing", ""
            elif cell is None:
                cls, style = "failed", ""
            elif math.isnan(cell):
                cls, style = "na", ""
            else:
                t = math.log1p(abs(cell)) / math.log1p(top) if top > 0 else 0.0
                cls, style = "value", _heat_style(t)
                text = f'<span title="{cell!r} {esc(bench.unit)}">{text}</span>'
            if marked:
                cls += " differs"
            cells.append(f'<td class="{cls}" data-env="{esc(env.name)}" '
                         f'data-machine="{esc(env.machine)}" style="{style}">{text}</td>')
        out.append("<tr>" + "".join(f"<th>{esc(label)}</th>" for label in row.labels())
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _heat_style(t: float) -> str:
    """White (t = 0) to dark red (t = 1); light text on the dark end."""
    low, high = (255, 255, 255), (179, 0, 0)
    r, g, b = (round(a + (z - a) * t) for a, z in zip(low, high))
    return f"background: rgb({r},{g},{b});" + (" color: #fff;" if t > 0.6 else "")


def _runs_of(items: Iterable[str]) -> List[Tuple[str, int]]:
    """Consecutive equal items and their counts: machines as header spans."""
    return [(key, len(list(group))) for key, group in itertools.groupby(items)]


def workload_descriptions() -> Dict[str, Dict[str, str]]:
    """One line per data kind and per access, from cowmem.workloads' registries."""
    from . import workloads
    return {group: {name: entry.description for name, entry in registry.items()}
            for group, registry in (("data kinds", workloads.DATA_KINDS),
                                    ("accesses", workloads.ACCESSES))}


# --- the upgrade gate ---------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """One combination that grew, shrank or failed between two environments on one machine."""

    kind: str            # "grew", "shrank" or "failed"
    benchmark: str
    params: str          # "data=ints access=sum gc=plain"
    machine: str
    old: Value
    new: Value


@dataclass(frozen=True)
class Comparison:
    """The gate's verdict: what changed from OLD to NEW at one commit."""

    pairs: Tuple[Tuple[Environment, Environment], ...]
    compared: int
    changes: Tuple[Change, ...]
    thresholds: Thresholds

    def tripped(self) -> bool:
        """True when any combination grew, or failed in the new environment."""
        return any(change.kind in ("grew", "failed") for change in self.changes)


def select_environments(environments: Sequence[Environment], selector: str) -> List[Environment]:
    """The environments a selector names.

    A selector is an asv environment name or a prefix of one
    (``virtualenv-py3.12``), or comma-separated ``key=value`` terms
    (``python=3.12,numpy=2.2``; keys: machine, python, a requirement or an
    environment variable) where a version matches itself and its longer
    releases ("2.2" matches "2.2.6", not "2.20").
    """
    if "=" in selector:
        terms = []
        for term in selector.split(","):
            key, sep, value = term.partition("=")
            known = sorted({k for env in environments for k in env.selector_fields()})
            if not sep or key.strip() not in known:
                raise UnknownNameError(f"bad selector term {term!r} in {selector!r}: "
                                       f"use key=value with key one of {', '.join(known)}")
            terms.append((key.strip(), value.strip()))
        chosen = [env for env in environments
                  if all(_version_matches(env.selector_fields().get(k), v) for k, v in terms)]
    else:
        exact = [env for env in environments if env.name == selector]
        chosen = exact or [env for env in environments if env.name.startswith(selector)]
    if not chosen:
        raise UnknownNameError(f"no environment matches {selector!r}; environments: "
                               + ", ".join(str(env) for env in environments))
    return chosen


def _version_matches(actual: Optional[str], wanted: str) -> bool:
    return actual is not None and (actual == wanted or actual.startswith(wanted + "."))


def compare(table: Table, old: str, new: str) -> Comparison:
    """Compare environment ``old`` with ``new`` (selectors) on every machine that has both.

    Each selector must name at most one environment per machine.
    """
    olds = _one_per_machine(select_environments(table.columns, old), old)
    news = _one_per_machine(select_environments(table.columns, new), new)
    machines = sorted(set(olds) & set(news))
    if not machines:
        raise UnknownNameError(f"{old!r} and {new!r} share no machine at commit "
                               f"{table.commit[:8]}: {old!r} is on {', '.join(sorted(olds))}, "
                               f"{new!r} on {', '.join(sorted(news))}")
    pairs = tuple((olds[m], news[m]) for m in machines)
    if any(a == b for a, b in pairs):
        raise UnknownNameError(f"{old!r} and {new!r} name the same environment")
    index = {env: i for i, env in enumerate(table.columns)}
    changes: List[Change] = []
    compared = 0
    for bench in table.benchmarks:
        for row in bench.rows:
            params = " ".join(f"{n}={v}" for n, v in zip(bench.param_names, row.labels()))
            for old_env, new_env in pairs:
                before, after = row.cells[index[old_env]], row.cells[index[new_env]]
                kind = _change_kind(before, after, table.thresholds)
                compared += before is not NOT_RUN and after is not NOT_RUN
                if kind:
                    changes.append(Change(kind, bench.name, params, old_env.machine,
                                          before, after))
    return Comparison(pairs, compared, tuple(changes), table.thresholds)


def _one_per_machine(environments: Sequence[Environment], selector: str) -> Dict[str, Environment]:
    chosen: Dict[str, Environment] = {}
    for env in environments:
        if env.machine in chosen:
            names = ", ".join(e.name for e in environments if e.machine == env.machine)
            raise UnknownNameError(f"{selector!r} names several environments on machine "
                                   f"{env.machine}: {names}; be more specific")
        chosen[env.machine] = env
    return chosen


def _change_kind(before: Cell, after: Cell, thresholds: Thresholds) -> Optional[str]:
    if before is NOT_RUN or after is NOT_RUN:
        return None
    if after is None and before is not None:
        return "failed"
    if not (_is_measured(before) and _is_measured(after)):
        return None
    if not thresholds.differs(before, after):
        return None
    return "grew" if after > before else "shrank"


def render_comparison(comparison: Comparison, table: Table) -> str:
    """The gate's report: every change, then a one-line verdict."""
    out = [f"commit {table.commit[:8]}: a change counts when it is "
           f"{comparison.thresholds.describe()}"]
    for old, new in comparison.pairs:
        out.append(f"compared {old.name} -> {new.name} on {old.machine}")
    for change in comparison.changes:
        delta = ""
        if change.kind != "failed":
            delta = f" ({change.new - change.old:+.1f})"
        out.append(f"{change.kind:7}{change.benchmark} {change.params}"
                   f"{' on ' + change.machine if len(comparison.pairs) > 1 else ''}: "
                   f"{format_value(change.old)} -> {format_value(change.new)}{delta}")
    counts = {kind: sum(c.kind == kind for c in comparison.changes)
              for kind in ("grew", "shrank", "failed")}
    verdict = "FAIL" if comparison.tripped() else "ok"
    out.append(f"{verdict}: {comparison.compared} combinations compared, "
               f"{counts['grew']} grew, {counts['shrank']} shrank, "
               f"{counts['failed']} failed in the new environment")
    return "\n".join(out) + "\n"


# --- the command line -----------------------------------------------------------

@dataclass(frozen=True)
class AsvConfig:
    """The paths an asv configuration names, made absolute (asv resolves them from its folder)."""

    path: Path
    results: Path
    html: Path


def read_asv_config(path: Union[str, Path]) -> AsvConfig:
    """Read asv's configuration file (JSON with comments, read by asv itself)."""
    config = Path(path).resolve()
    if not config.is_file():
        raise ResultsError(f"no asv configuration file {path}; pass --config PATH "
                           "(or --results DIR to the report)")
    try:
        from asv import util as asv_util
        from asv.config import Config
    except ImportError:
        raise ResultsError(f"reading {path} needs asv, which {sys.executable} does not have; "
                           "`pip install asv`, or pass --results DIR") from None
    try:
        conf = Config.load(str(config))
    except asv_util.UserError as exc:
        raise ResultsError(f"cannot read asv's configuration: {exc}") from None
    return AsvConfig(config, (config.parent / conf.results_dir).resolve(),
                     (config.parent / conf.html_dir).resolve())


def table_from_args(args: argparse.Namespace, results_dir: Union[str, Path]) -> Table:
    """Read ``results_dir`` and build the table the shared options ask for."""
    return build_table(load_results(results_dir), args.commit,
                       Thresholds(args.min_abs, args.min_rel), args.bench)


def write_html(table: Table, path: Union[str, Path],
               links: Sequence[Tuple[str, str]] = ()) -> None:
    """Write the HTML page to ``path``, refusing any place inside the results directory."""
    target = Path(path).resolve()
    if target == table.results_path.resolve() or table.results_path.resolve() in target.parents:
        raise ResultsError(f"{path} is inside the results directory {table.results_path}; "
                           "cowmem never writes there")
    try:
        descriptions = workload_descriptions()
    except ImportError:   # reading results gathered elsewhere needs no workloads
        descriptions = {}
    try:
        target.write_text(render_html(table, descriptions, links), encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
