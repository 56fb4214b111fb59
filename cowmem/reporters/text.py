"""Plain-text outputs: the cross-environment table and the gate's report.

The table fits a terminal: its environment columns are wrapped into blocks
no wider than ``width`` characters, a block holding whole groups of columns
(one machine and python) where they fit, each block repeating the
parameter columns.
"""

from __future__ import annotations

from typing import List, Sequence

from ..report.gate import Comparison
from ..report.metrics import combination_text
from ..report.table import BenchmarkTable, Table, format_value, groups

DEFAULT_WIDTH = 120
_GAP = 2


def render_table(table: Table, width: int = DEFAULT_WIDTH) -> str:
    """The table as aligned plain text, one section per benchmark, at most ``width`` wide."""
    out = [table.heading(),
           f"* = differs from the row's most common value by {table.thresholds.describe()}"]
    if table.absent:
        out.append("no results at this commit: " + ", ".join(str(e) for e in table.absent))
    labels = table.column_labels()
    for bench in table.benchmarks:
        out += ["", bench.name + (f" ({bench.unit})" if bench.unit else "")]
        if bench.not_applicable:
            out.append(f"({bench.not_applicable} combinations n/a in every environment "
                       "left out)")
        out += _benchmark_lines(table, bench, labels, width)
    return "\n".join(out) + "\n"


def _benchmark_lines(table: Table, bench: BenchmarkTable, labels: List[List[str]],
                     width: int) -> List[str]:
    cells = [[format_value(c) + ("*" if m else "") for c, m in zip(row.cells, row.marked)]
             for row in bench.rows]
    params = [list(bench.param_names)] + [list(row.labels) for row in bench.rows]
    param_widths = [max(len(r[i]) for r in params) for i in range(len(bench.param_names))]
    cell_widths = [max([len(line) for line in labels[j]] + [len(r[j]) for r in cells])
                   for j in range(len(table.columns))]
    room = width - sum(w + _GAP for w in param_widths)
    lines: List[str] = []
    for block in _blocks(table, cell_widths, room):
        depth = max(len(labels[j]) for j in block)
        if lines:
            lines.append("")
        for level in range(depth):
            head = [("" if level < depth - 1 else name).ljust(w)
                    for name, w in zip(bench.param_names, param_widths)]
            head += [(labels[j] + [""] * depth)[level].rjust(cell_widths[j]) for j in block]
            lines.append((" " * _GAP).join(head).rstrip())
        for row, row_cells in zip(bench.rows, cells):
            line = [v.ljust(w) for v, w in zip(row.labels, param_widths)]
            line += [row_cells[j].rjust(cell_widths[j]) for j in block]
            lines.append((" " * _GAP).join(line).rstrip())
    return lines


def _blocks(table: Table, cell_widths: Sequence[int], room: int) -> List[List[int]]:
    """Column indexes per block: whole (machine, python) groups while they fit in ``room``."""
    blocks: List[List[int]] = [[]]
    used = 0
    for _, members in groups(table.columns):
        need = sum(cell_widths[j] + _GAP for j in members)
        if blocks[-1] and used + need > room:
            blocks.append([])
            used = 0
        for j in members:           # a group wider than the room alone is split
            if blocks[-1] and used + cell_widths[j] + _GAP > room:
                blocks.append([])
                used = 0
            blocks[-1].append(j)
            used += cell_widths[j] + _GAP
    return [block for block in blocks if block]


def summary(comparison: Comparison) -> str:
    """``612 combinations compared (1836 values): 71 changed (63 grew, 8 shrank, 0 failed ...)``.

    Every count but the values' is of combinations, each changed one a row
    of its kind (see cowmem.report.gate); the upgrade page's summary says the
    same (``assets/upgrade.js``).
    """
    return (f"{comparison.compared} combinations compared ({comparison.values} values): "
            f"{len(comparison.rows)} changed ({comparison.count('grew')} grew, "
            f"{comparison.count('shrank')} shrank, {comparison.count('failed')} failed "
            "on the new side)")


def render_comparison(comparison: Comparison) -> str:
    """The gate's report: the pairs, every change (largest first), then a one-line verdict."""
    old, new, pairing = comparison.old, comparison.new, comparison.pairing
    out = [f"{old.selector} -> {new.selector}: changed {', '.join(pairing.changed) or 'nothing'}"
           f"; paired on {', '.join(pairing.paired_on) or 'nothing'}"]
    for a, b in pairing.pairs:
        out.append(f"compared {a.environment.name} at {a.commit[:8]} -> {b.environment.name} "
                   f"at {b.commit[:8]} on {b.environment.machine}")
    for run in pairing.unpaired:
        out.append(f"no counterpart: {run.environment} at {run.commit[:8]}")
    spread = (f"outside both sides' spread (recorded for {comparison.with_spread} of "
              f"{comparison.values} values; elsewhere the thresholds alone)")
    out.append(f"a change counts when it is {comparison.thresholds.describe()}, and {spread}")
    several = len(pairing.pairs) > 1
    for row in comparison.rows:
        where = (f" [{row.old.environment.label()} -> {row.new.environment.label()}"
                 f" on {row.new.environment.machine}]" if several else "")
        for change in row.changes:
            delta = f" ({change.delta:+.1f})" if change.kind != "failed" else ""
            params = " " + combination_text(row.params) if row.params else ""
            out.append(f"{change.kind:7}{change.benchmark}{params}{where}: "
                       f"{format_value(change.old)} -> {format_value(change.new)}{delta}")
    verdict = "FAIL" if comparison.tripped() else "ok"
    out.append(f"{verdict}: {summary(comparison)}")
    return "\n".join(out) + "\n"
