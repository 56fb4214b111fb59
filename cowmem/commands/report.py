"""``cowmem report``: asv's results side by side, one column per environment, and the upgrade gate."""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Optional

from ..errors import CowmemError
from ..report.config import read_asv_config
from ..report.gate import DEFAULT_MIN_ABS, DEFAULT_MIN_REL, Thresholds, compare
from ..report.results import Results, load_results
from ..report.selectors import select
from ..report.table import Table, build_table
from ..reporters.text import DEFAULT_WIDTH, render_comparison, render_table


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """Options ``report`` and ``publish`` share: asv's config, results, commit, benchmarks, thresholds."""
    parser.add_argument("--config", default="asv.conf.json", metavar="PATH",
                        help="asv's configuration file, which names the results directory "
                             "(default: ./asv.conf.json)")
    parser.add_argument("--results", metavar="DIR",
                        help="asv's results directory (default: the one --config names)")
    parser.add_argument("--commit", metavar="HASH",
                        help="commit (or prefix) to report; default: the newest with results")
    parser.add_argument("-b", "--bench", metavar="REGEX", action="append", default=[],
                        help="only benchmarks whose name matches (repeatable, like asv's -b); "
                             "the gate's default is the copy metrics")
    parser.add_argument("--min-abs", type=_non_negative, default=DEFAULT_MIN_ABS, metavar="X",
                        help="a change counts only above this absolute size, in the benchmark's "
                             f"unit (MiB for the copies); default {DEFAULT_MIN_ABS:g}")
    parser.add_argument("--min-rel", type=_non_negative, default=DEFAULT_MIN_REL, metavar="R",
                        help="... and above this fraction of the old value; "
                             f"default {DEFAULT_MIN_REL:g}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cowmem report``."""
    parser.description = ("Print asv's results side by side, one column per environment "
                          "(and machine), for one commit; or write them as an HTML page, or "
                          "gate an upgrade. Reads the results directory, never writes to it.")
    parser.add_argument("--html", metavar="PATH", help="write the table as one "
                        "self-contained HTML page to PATH (and print no table unless --text)")
    parser.add_argument("--text", action="store_true",
                        help="print the table also with --html or --compare")
    parser.add_argument("--markdown", action="store_true",
                        help="print the overview instead: each data kind's bytes per element "
                             "under its headline access, one column per environment, as a "
                             "Markdown table")
    parser.add_argument("--width", type=_width, default=DEFAULT_WIDTH, metavar="N",
                        help=f"wrap the table's columns at N characters (default {DEFAULT_WIDTH})")
    parser.add_argument("--compare", nargs=2, metavar=("FROM", "TO"),
                        help="upgrade gate: list the copy metrics that changed from FROM to TO "
                             "and exit 1 when any grew or failed. Each side: python=3.12, "
                             "numpy=2.2, machine=NAME, commit=HASH (8+ characters), combined by "
                             "commas; an asv environment name or prefix; or a results directory")
    add_table_arguments(parser)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _width(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 40:
        raise argparse.ArgumentTypeError(f"must be at least 40, not {value}")
    return value


def results_dir(args: argparse.Namespace) -> Path:
    """``--results``, else the results directory ``--config`` names."""
    return Path(args.results) if args.results else read_asv_config(args.config).results


def thresholds(args: argparse.Namespace) -> Thresholds:
    return Thresholds(args.min_abs, args.min_rel)


def table_from_args(args: argparse.Namespace, results: Optional[Results] = None) -> Table:
    """The table the shared options ask for."""
    return build_table(results or load_results(results_dir(args)), args.commit,
                       thresholds(args), args.bench)


def run(args: argparse.Namespace) -> int:
    """``cowmem report``: 0 done, 1 the gate tripped, 2 bad input (one-line error)."""
    try:
        default = functools.lru_cache(maxsize=None)(lambda: load_results(results_dir(args)))
        status = 0
        if args.compare:
            old, new = (select(side, default, args.commit) for side in args.compare)
            comparison = compare(old, new, thresholds(args), args.bench)
        table = table_from_args(args, default()) if (
            args.html or args.text or args.markdown or not args.compare) else None
        if args.html:
            from ..reporters.html import write_report
            size = write_report(table, args.html)
            print(f"wrote {args.html} ({size / 1024:.0f} KiB): {len(table.columns)} "
                  f"environments, {len(table.benchmarks)} benchmarks")
        if args.markdown:
            from ..reporters.markdown import render_overview
            sys.stdout.write(render_overview(table))
        elif table is not None and (args.text or not (args.html or args.compare)):
            sys.stdout.write(render_table(table, args.width))
        if args.compare:
            sys.stdout.write(render_comparison(comparison))
            status = 1 if comparison.tripped() else 0
        return status
    except CowmemError as exc:
        print(f"cowmem report: error: {exc}", file=sys.stderr)
        return 2
