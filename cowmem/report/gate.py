"""The upgrade gate: what changed between two sides, and whether it should refuse the upgrade.

A combination is one benchmark class's parameter values (``data=list_int
access=iterate gc=plain``) in one pair of runs; its values are those of each
benchmark of the class compared (by default the three copy metrics).  A
value changed when all of these hold:

- the difference exceeds both thresholds, absolute (in the benchmark's unit)
  and relative to the old value;
- the new value lies outside the old side's spread, and the old value
  outside the new side's spread (a spread is the range of the value's
  samples, else asv's statistics; results of one measurement have none);

or when it was measured (or n/a) on the old side and failed on the new one.
A changed combination is one row, with a kind: failed when any of its values
failed, else grew when any grew, else shrank.  The gate trips when any
combination grew or failed.  Rows come largest change first: failures, then
the largest difference inside the data, then in MiB, then in any other
unit.  The upgrade page's script (``reporters/assets/selection.js``)
applies the same rules to the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .metrics import COPY_METRICS, labels, method, select_benchmarks
from .results import Key, Run, Value, is_measured
from .selectors import Pairing, Side, pair

DEFAULT_MIN_ABS = 1.0
DEFAULT_MIN_REL = 0.10
MIB = "MiB"
DATA_METRIC = "track_data_mib"     # the copies inside the data, first in the order


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


def within(value: float, spread: Optional[Tuple[float, float]]) -> bool:
    return spread is not None and spread[0] <= value <= spread[1]


def change_kind(old: Value, new: Value, old_spread: Optional[Tuple[float, float]],
                new_spread: Optional[Tuple[float, float]], thresholds: Thresholds
                ) -> Optional[str]:
    """"grew", "shrank", "failed" or None (no change that counts)."""
    if new is None:
        return "failed" if old is not None else None
    if not (is_measured(old) and is_measured(new)):
        return None
    if not thresholds.differs(old, new) or within(new, old_spread) or within(old, new_spread):
        return None
    return "grew" if new > old else "shrank"


@dataclass(frozen=True)
class Change:
    """One benchmark of a row that changed."""

    kind: str                # "grew", "shrank" or "failed"
    benchmark: str
    unit: str
    old: Value
    new: Value

    @property
    def delta(self) -> float:
        return self.new - self.old if self.kind != "failed" else float("inf")


@dataclass(frozen=True)
class Row:
    """One combination of one pair of runs with at least one change that counts."""

    old: Run
    new: Run
    group: str                                  # the benchmarks' class: bench_copies.Copies
    params: Dict[str, str]                      # data, access, gc...
    changes: Tuple[Change, ...]
    shown: Dict[str, Tuple[Value, Value]]       # each copy metric of the class: old, new

    @property
    def kind(self) -> str:
        """"failed" when any value failed, else "grew" when any grew, else "shrank"."""
        kinds = {change.kind for change in self.changes}
        return next(kind for kind in ("failed", "grew", "shrank") if kind in kinds)

    def sort_key(self) -> tuple:
        """Descending: failures first, then the largest change inside the data (MiB), then in
        any MiB (the whole child's, which holds the interpreter's own writes too), then in any
        other unit."""
        failed = any(c.kind == "failed" for c in self.changes)
        measured = [c for c in self.changes if c.kind != "failed"]
        data = max((abs(c.delta) for c in measured if method(c.benchmark) == DATA_METRIC),
                   default=0.0)
        mib = max((abs(c.delta) for c in measured if c.unit == MIB), default=0.0)
        other = max((abs(c.delta) for c in measured if c.unit != MIB), default=0.0)
        return (not failed, -data, -mib, -other)


@dataclass(frozen=True)
class Comparison:
    """The gate's verdict: what changed from the OLD side to the NEW side."""

    old: Side
    new: Side
    pairing: Pairing
    thresholds: Thresholds
    benchmarks: Tuple[str, ...]
    compared: int                 # combinations compared, over every pair
    values: int                   # their values compared (one per benchmark of the class)
    with_spread: int              # ... values of which both sides recorded a spread
    rows: Tuple[Row, ...]         # one per changed combination

    def changes(self) -> List[Change]:
        return [change for row in self.rows for change in row.changes]

    def count(self, kind: str) -> int:
        """Changed combinations of that kind: "grew", "shrank" or "failed" (see Row.kind)."""
        return sum(row.kind == kind for row in self.rows)

    def tripped(self) -> bool:
        """True when any combination grew, or failed on the new side."""
        return self.count("grew") + self.count("failed") > 0


def compare(old: Side, new: Side, thresholds: Thresholds = Thresholds(),
            bench: Sequence[str] = ()) -> Comparison:
    """Compare every paired run of ``old`` with its counterpart in ``new``.

    ``bench`` holds regular expressions (``-b``); by default only the copy
    metrics are compared, never timing or cost benchmarks.
    """
    pairing = pair(old, new)
    infos = {**old.results.benchmarks, **new.results.benchmarks}
    names = {key[0] for run in (*old.runs, *new.runs) for key in run.values}
    benchmarks = tuple(select_benchmarks(names, bench, infos, copies_only=True))
    rows: List[Row] = []
    compared = values = with_spread = 0
    for old_run, new_run in pairing.pairs:
        grouped: Dict[Tuple[str, Tuple[str, ...]], List[Change]] = {}
        combinations = set()
        for benchmark in benchmarks:
            for key in _keys(old_run, benchmark):
                if key not in new_run.values:
                    continue
                values += 1
                combinations.add((_group(benchmark), key[1]))
                old_spread, new_spread = old_run.spreads.get(key), new_run.spreads.get(key)
                with_spread += old_spread is not None and new_spread is not None
                kind = change_kind(old_run.values[key], new_run.values[key], old_spread,
                                   new_spread, thresholds)
                if kind:
                    info = infos.get(benchmark)
                    grouped.setdefault((_group(benchmark), key[1]), []).append(
                        Change(kind, benchmark, info.unit if info else "",
                               old_run.values[key], new_run.values[key]))
        compared += len(combinations)
        for (group, combination), changes in grouped.items():
            benchmark = changes[0].benchmark
            rows.append(Row(old_run, new_run, group,
                            labels(benchmark, infos.get(benchmark), combination),
                            tuple(changes), _shown(old_run, new_run, group, combination)))
    rows.sort(key=Row.sort_key)
    return Comparison(old, new, pairing, thresholds, benchmarks, compared, values, with_spread,
                      tuple(rows))


def _keys(run: Run, benchmark: str) -> List[Key]:
    return [key for key in run.values if key[0] == benchmark]


def _group(benchmark: str) -> str:
    return benchmark.rsplit(".", 1)[0]


def _shown(old: Run, new: Run, group: str, combination: Tuple[str, ...]
           ) -> Dict[str, Tuple[Value, Value]]:
    shown = {}
    for name in COPY_METRICS:
        key = (f"{group}.{name}", combination)
        if key in old.values and key in new.values:
            shown[name] = (old.values[key], new.values[key])
    return shown


def short_name(benchmark: str) -> str:
    """The method's name for copy metrics, the full name otherwise."""
    return method(benchmark) if method(benchmark) in COPY_METRICS else benchmark
