"""The cross-environment table of one commit: one column per environment, one row per combination.

One column is one environment on one machine; one row is one benchmark
parameter combination (for cowmem's suite: data x access x gc variant); a
cell is the benchmark's value in its own unit (MiB for the copies).  Rows
that are n/a in every environment are left out (they do not apply anywhere).
"""

from __future__ import annotations

import datetime
import enum
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .gate import Thresholds
from .metrics import is_copy_metric, param_names, select_benchmarks
from .results import Environment, Results, Run, display_param, is_measured
from .versions import Versions, versions_of


class NotRun(enum.Enum):
    """A combination an environment's results do not have (shown as "-")."""

    NOT_RUN = "-"


NOT_RUN = NotRun.NOT_RUN
Cell = Union[float, None, NotRun]


@dataclass(frozen=True)
class TableRow:
    """One parameter combination of one benchmark across every column."""

    labels: Tuple[str, ...]         # the displayed parameter values
    cells: Tuple[Cell, ...]
    marked: Tuple[bool, ...]        # cell differs from the row's most common value


@dataclass(frozen=True)
class BenchmarkTable:
    """The rows of one benchmark."""

    name: str
    param_names: Tuple[str, ...]
    unit: str
    copies: bool                    # one of the copy metrics
    rows: Tuple[TableRow, ...]
    not_applicable: int             # rows left out: n/a in every column


@dataclass(frozen=True)
class Table:
    """The report: one commit, every environment that has results for it, side by side."""

    results_path: Path
    commit: str
    date: int
    columns: Tuple[Environment, ...]
    versions: Tuple[Versions, ...]    # one per column
    benchmarks: Tuple[BenchmarkTable, ...]
    absent: Tuple[Environment, ...]   # environments with results, but none at this commit
    thresholds: Thresholds

    def several_machines(self) -> bool:
        return len({env.machine for env in self.columns}) > 1

    def column_labels(self, with_machine: Optional[bool] = None) -> List[List[str]]:
        """Each column's header lines (:meth:`Environment.label_lines`), less the shared ones.

        A requirement at the same version in every column (psutil 7.2.2
        pinned everywhere) tells no column from another and is left out; the
        interpreter never is.  ``with_machine`` defaults to "when there are
        several machines".
        """
        several = self.several_machines() if with_machine is None else with_machine
        labels = [env.label_lines(several) for env in self.columns]
        requirements = [{f"{name} {version}" for name, version in env.requirements if version}
                        for env in self.columns]
        shared = set.intersection(*requirements) if len(requirements) > 1 else set()
        return [[line for line in lines if line not in shared] for lines in labels]

    def heading(self) -> str:
        day = datetime.datetime.fromtimestamp(self.date / 1000, datetime.timezone.utc)
        return (f"asv results in {self.results_path} at commit {self.commit[:8]} "
                f"({day:%Y-%m-%d}): {len(self.columns)} environment(s)")


def build_table(results: Results, commit: Optional[str] = None,
                thresholds: Thresholds = Thresholds(), bench: Sequence[str] = ()) -> Table:
    """The table for ``commit`` (a prefix; the newest commit when None).

    ``bench`` holds regular expressions; when given, only the benchmarks whose
    name matches one of them are kept.  The copy metrics come first.
    """
    full_commit = results.resolve_commit(commit)
    runs = results.runs_at(full_commit)
    columns = tuple(run.environment for run in runs)
    names = select_benchmarks({name for run in runs for name in run.params}, bench,
                              results.benchmarks, copies_only=False)
    names.sort(key=lambda name: not is_copy_metric(name, results.info(name)))
    tables = []
    for name in names:
        combinations = _combinations(runs, name)
        info = results.info(name)
        arity = len(combinations[0]) if combinations else 0
        rows = []
        for combination in combinations:
            cells = tuple(run.values.get((name, combination), NOT_RUN) for run in runs)
            if all(isinstance(c, float) and math.isnan(c) for c in cells):
                continue
            rows.append(TableRow(tuple(display_param(v) for v in combination), cells,
                                 _marks(cells, thresholds)))
        tables.append(BenchmarkTable(name, param_names(name, info, arity),
                                     info.unit if info else "", is_copy_metric(name, info),
                                     tuple(rows), len(combinations) - len(rows)))
    absent = tuple(env for env in results.environments() if env not in columns)
    return Table(results.path, full_commit, runs[0].date, columns,
                 tuple(versions_of(results, run) for run in runs), tuple(tables), absent,
                 thresholds)


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
    measured = [c for c in cells if is_measured(c)]
    if not measured:
        return tuple(False for _ in cells)
    reference = max(measured, key=lambda ref: sum(not thresholds.differs(ref, c)
                                                  for c in measured))
    return tuple(is_measured(c) and thresholds.differs(reference, c) for c in cells)


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


def groups(columns: Sequence[Environment]) -> List[Tuple[Tuple[str, str], List[int]]]:
    """Consecutive columns of one machine and python: (machine, python) -> column indexes."""
    out: List[Tuple[Tuple[str, str], List[int]]] = []
    for index, env in enumerate(columns):
        key = (env.machine, env.python)
        if out and out[-1][0] == key:
            out[-1][1].append(index)
        else:
            out.append((key, [index]))
    return out


def describe_names(descriptions: Mapping[str, Mapping[str, str]],
                   table: Table) -> Dict[str, List[Tuple[str, str]]]:
    """The descriptions of the names the table uses: group -> [(name, sentence)]."""
    used = {label for bench in table.benchmarks for row in bench.rows for label in row.labels}
    shown = {group: [(name, text) for name, text in entries.items() if name in used]
             for group, entries in descriptions.items()}
    return {group: entries for group, entries in shown.items() if entries}
