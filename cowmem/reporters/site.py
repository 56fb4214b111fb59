"""cowmem's own pages of the published site: the overview (index.html) and the upgrade page.

The overview shows, for the newest commit, each data kind's copied bytes per
element under its headline access, one column per environment.  The
upgrade page compares two selectors in the browser, from the copy metrics
written to ``cowmem-data.js``; ``assets/selection.js`` applies the same
selection, pairing and threshold rules as :mod:`cowmem.report.selectors`
and :mod:`cowmem.report.gate`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..report.gate import Thresholds
from ..report.metrics import (class_kind, combination_text, explain_causes, is_copy_metric,
                              labels, method, select_benchmarks)
from ..report.results import Results, Run, is_measured, is_version, version_key
from ..report.selectors import fields
from ..report.table import Table, TableRow, format_value
from ..report.versions import versions_of
from . import ASSETS, render
from .html import COPIED_MEANS, cell_class

OVERVIEW_PAGE = "index.html"
UPGRADE_PAGE = "upgrade.html"
DATA_SCRIPT = "cowmem-data.js"
SITE_ASSETS = ("site.css", "heat.css", "selection.js", "upgrade.js")

# The access an overview row shows, in order of preference: reading every
# element is the question the suite answers (a table's strings, by the
# library's own string functions).
HEADLINE_ACCESSES = ("iterate", "str_len_sum", "sum")
PER_ELEMENT = "track_bytes_per_element"


def _encode(value: Optional[float]) -> object:
    """A value for the page's data: a number, None (failed) or "n/a"."""
    if value is None:
        return None
    return "n/a" if math.isnan(value) else value


def site_data(results: Results, runs: List[Run], thresholds: Thresholds) -> Dict[str, object]:
    """What the upgrade page compares: every copy metric of ``runs``, with spreads and versions.

    Combinations a run does not have are "-"; the runs keep their order, which
    the pairing's order follows (:func:`cowmem.report.selectors.select` sorts
    a side's runs the same way).
    """
    names = select_benchmarks({key[0] for run in runs for key in run.values}, (),
                              results.benchmarks, copies_only=True)
    benchmarks = {}
    for name in names:
        combinations = list(dict.fromkeys(key[1] for run in runs for key in run.values
                                          if key[0] == name))
        info = results.info(name)
        shown = [labels(name, info, c) for c in combinations]
        benchmarks[name] = {"unit": info.unit if info else "", "method": method(name),
                            "combinations": [list(c) for c in combinations],
                            "labels": shown, "texts": [combination_text(s) for s in shown]}
    data_runs = []
    for run in runs:
        pairs = {(s["data"], s["access"]) for b in benchmarks.values() for s in b["labels"]
                 if "data" in s and "access" in s}
        causes = {f"{data} x {access}": found for data, access in sorted(pairs)
                  if (found := explain_causes(results, run, data, access)) is not None}
        data_runs.append({
            "env": run.environment.name, "machine": run.environment.machine,
            "commit": run.commit, "label": run.environment.label(),
            "fields": fields(results, run), "versions": versions_of(results, run).rows(),
            "values": {name: [_encode(run.values[(name, tuple(c))])
                              if (name, tuple(c)) in run.values else "-"
                              for c in b["combinations"]] for name, b in benchmarks.items()},
            "spreads": {name: [list(run.spreads[(name, tuple(c))])
                               if (name, tuple(c)) in run.spreads else None
                               for c in b["combinations"]] for name, b in benchmarks.items()},
            "causes": causes,
        })
    return {"thresholds": {"min_abs": thresholds.min_abs, "min_rel": thresholds.min_rel},
            "commits": results.commits(), "benchmarks": benchmarks, "runs": data_runs}


def headline_rows(table: Table) -> List[Dict[str, object]]:
    """One overview row per data kind: its headline access's bytes per element, per column."""
    candidates: Dict[str, List[Tuple[int, Dict[str, str], TableRow]]] = {}
    for place, bench in enumerate(table.benchmarks):
        if method(bench.name) != PER_ELEMENT or not bench.copies:
            continue
        for row in bench.rows:
            shown = dict(zip(bench.param_names, row.labels))
            if any(is_measured(c) for c in row.cells):
                candidates.setdefault(shown.get("data") or class_kind(bench.name), []).append(
                    (place, shown, row))
    # Each kind's best row over all the benchmarks that measure it (bench_gc's
    # frozen collections among them), in the order of the benchmarks they come
    # from: the kinds of one topic together.
    picked = []
    for kind, found in candidates.items():
        place, shown, row = min(found, key=lambda item: (
            _preference(item[1].get("access")), item[1].get("gc", "plain") != "plain"))
        picked.append((place, kind, shown, row))
    picked.sort(key=lambda item: item[0])
    rows: List[Dict[str, object]] = []
    top = max((abs(c) for *_, row in picked for c in row.cells if is_measured(c)), default=0.0)
    for _, kind, shown, row in picked:
        rows.append({"kind": kind, "params": shown, "differs": list(row.marked),
                     "cells": [(format_value(c), cell_class(c, m, top))
                               for c, m in zip(row.cells, row.marked)]})
    return rows


def _preference(access: Optional[str]) -> int:
    return HEADLINE_ACCESSES.index(access) if access in HEADLINE_ACCESSES else len(
        HEADLINE_ACCESSES)


def example_comparisons(table: Table) -> List[Tuple[str, str]]:
    """(from, to) selectors worth a link: each python to the next, oldest numpy to newest."""
    examples = []
    for key in ("python", "numpy"):
        found = sorted({dict((("python", env.python), *env.requirements)).get(key, "")
                        for env in table.columns} - {""}, key=version_key)
        found = [value for value in found if is_version(value)]   # not interpreter paths
        if key == "python":
            examples += [(f"python={a}", f"python={b}") for a, b in zip(found, found[1:])]
        elif len(found) > 1:
            examples.append((f"numpy={found[0]}", f"numpy={found[-1]}"))
    return examples


def write_site_pages(site: Path, results: Results, table: Table, report_page: str,
                     asv_page: str) -> None:
    """The overview, the upgrade page, their data and assets, into ``site``."""
    data = site_data(results, sorted(results.runs, key=Run.sort_key), table.thresholds)
    data["default_commit"] = table.commit
    (site / DATA_SCRIPT).write_text(
        render("cowmem-data.js", data=json.dumps(data, separators=(",", ":"),
                                                 allow_nan=False)), encoding="utf-8")
    for name in SITE_ASSETS:
        shutil.copyfile(ASSETS / name, site / name)
    common = {"report_page": report_page, "asv_page": asv_page, "table": table,
              "upgrade_page": UPGRADE_PAGE, "overview_page": OVERVIEW_PAGE}
    rows = headline_rows(table)
    (site / OVERVIEW_PAGE).write_text(render(
        "overview.html", copied_means=COPIED_MEANS, rows=rows,
        columns=list(zip(table.columns, table.column_labels())),
        examples=example_comparisons(table), differing=[r["kind"] for r in rows if any(r["differs"])],
        graphs=[name for name in (b.name for b in table.benchmarks)
                if is_copy_metric(name, results.info(name))],
        **common), encoding="utf-8")
    (site / UPGRADE_PAGE).write_text(render(
        "upgrade.html", examples=example_comparisons(table), data_script=DATA_SCRIPT,
        thresholds=table.thresholds, **common), encoding="utf-8")
