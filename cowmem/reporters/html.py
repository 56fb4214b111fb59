"""The report page: the cross-environment table as one self-contained HTML page.

Each benchmark is a heatmap table (white is 0, dark red the table's largest
value, logarithmic); cells that differ from their row's most common value
are framed.  A contents list leads to each table, the copy metrics first,
and a table gives each environment's exact versions.  The styles are
inlined, nothing is loaded from anywhere.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

from ..report.results import ResultsError, is_measured
from ..report.table import NOT_RUN, BenchmarkTable, Cell, Table, describe_names, format_value
from . import render

HEAT_LEVELS = 10          # classes h0 (white) .. h10 (dark red) in report.css

COPIED_MEANS = (
    "After fork() the parent and the child share every private page copy-on-write. "
    "\u201cCopied\u201d counts the pages that were still shared just before the access "
    "ran in the child and were the child's own just after it: each is one copy the kernel "
    "made because the access wrote to a shared page, 4096 bytes each. Pages newly "
    "allocated during the access are not copies and are not counted."
)


def heat_level(cell: float, top: float) -> int:
    """0 for 0, HEAT_LEVELS for the table's largest value, logarithmic in between."""
    if top <= 0:
        return 0
    return round(HEAT_LEVELS * math.log1p(abs(cell)) / math.log1p(top))


def cell_class(cell: Cell, marked: bool, top: float) -> str:
    if cell is NOT_RUN:
        cls = "missing"
    elif cell is None:
        cls = "failed"
    elif math.isnan(cell):
        cls = "na"
    else:
        cls = f"h{heat_level(cell, top)}"
    return cls + " d" if marked else cls


def anchor(name: str) -> str:
    """An id for a benchmark's section."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _benchmark_view(table: Table, bench: BenchmarkTable) -> Dict[str, object]:
    measured = [c for row in bench.rows for c in row.cells if is_measured(c)]
    top = max((abs(c) for c in measured), default=0.0)
    return {
        "id": anchor(bench.name), "name": bench.name, "unit": bench.unit,
        "param_names": bench.param_names, "not_applicable": bench.not_applicable,
        "rows": [(row.labels, [(format_value(c), cell_class(c, m, top))
                               for c, m in zip(row.cells, row.marked)]) for row in bench.rows],
    }


def machine_spans(table: Table) -> List[Tuple[str, int]]:
    """Consecutive columns of one machine: (machine, count), for header spans."""
    return [(machine, len(list(group)))
            for machine, group in itertools.groupby(env.machine for env in table.columns)]


def render_report(table: Table, descriptions: Mapping[str, Mapping[str, str]] = {},
                  links: Sequence[Tuple[str, str]] = ()) -> str:
    """The page's HTML.

    ``descriptions`` maps a group ("data kinds", "accesses") to name -> one
    sentence; only the names the table uses are shown.  ``links`` are
    (href, text) pairs put under the title (the way back into a site).
    """
    return render(
        "report.html", table=table, links=links, copied_means=COPIED_MEANS,
        several=table.several_machines(), spans=machine_spans(table),
        columns=list(zip(table.columns, table.column_labels(False))),
        versions=[(label, [v.rows()[i][1] for v in table.versions])
                  for i, (label, _) in enumerate(table.versions[0].rows())],
        benchmarks=[_benchmark_view(table, bench) for bench in table.benchmarks],
        names=describe_names(descriptions, table), scale=range(HEAT_LEVELS + 1))


def workload_descriptions() -> Dict[str, Dict[str, str]]:
    """One line per data kind and per access, from cowmem's registry when it can be imported.

    The registry needs numpy and the measuring code; results read elsewhere
    (or without numpy) get a page without the descriptions.
    """
    try:
        from .. import workloads
    except ImportError:
        return {}
    return {group: {name: entry.description for name, entry in registry.items()}
            for group, registry in (("data kinds", workloads.DATA_KINDS),
                                    ("accesses", workloads.ACCESSES))}


def write_report(table: Table, path: Union[str, Path],
                 links: Sequence[Tuple[str, str]] = ()) -> int:
    """Write the page to ``path``, refusing any place inside the results directory; its size."""
    target = Path(path).resolve()
    results = table.results_path.resolve()
    if target == results or results in target.parents:
        raise ResultsError(f"{path} is inside the results directory {table.results_path}; "
                           "cowmem never writes there")
    data = render_report(table, workload_descriptions(), links).encode("utf-8")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(data)
