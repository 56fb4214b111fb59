"""``cowmem report``: asv's results side by side, one column per environment, and the upgrade gate."""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import CowmemError
from ..report import (DEFAULT_MIN_ABS, DEFAULT_MIN_REL, compare, read_asv_config, render_comparison,
                      render_text, table_from_args, write_html)


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """Options ``report`` and ``publish`` share: asv's config, commit, benchmarks, thresholds."""
    parser.add_argument("--config", default="asv.conf.json", metavar="PATH",
                        help="asv's configuration file, which names the results directory "
                             "(default: ./asv.conf.json)")
    parser.add_argument("--commit", metavar="HASH",
                        help="commit (or prefix) to report; default: the newest with results")
    parser.add_argument("-b", "--bench", metavar="REGEX", action="append", default=[],
                        help="only benchmarks whose name matches (repeatable, like asv's -b)")
    parser.add_argument("--min-abs", type=_non_negative, default=DEFAULT_MIN_ABS, metavar="X",
                        help="a change counts only above this absolute size, in the benchmark's "
                             f"unit (MiB for the copies); default {DEFAULT_MIN_ABS:g}")
    parser.add_argument("--min-rel", type=_non_negative, default=DEFAULT_MIN_REL, metavar="R",
                        help="... and above this fraction of the old value; "
                             f"default {DEFAULT_MIN_REL:g}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cowmem report``."""
    parser.description = ("Print asv's results side by side, one column per environment "
                          "(and machine), for one commit; optionally write an HTML heatmap or "
                          "gate an upgrade. Reads the results directory, never writes to it.")
    parser.add_argument("--results", metavar="DIR",
                        help="asv's results directory (default: the one --config names)")
    parser.add_argument("--html", metavar="PATH", help="also write the table as one "
                        "self-contained HTML page to PATH")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                        help="upgrade gate: list the combinations that grew or shrank from OLD "
                             "to NEW (asv environment names, prefixes, or selectors such as "
                             "python=3.12,numpy=2.2) and exit 1 when any grew or failed")
    add_table_arguments(parser)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """``cowmem report``: 0 done, 1 the gate tripped, 2 bad input (one-line error)."""
    try:
        results = args.results or read_asv_config(args.config).results
        table = table_from_args(args, results)
        if args.html:
            write_html(table, args.html)
        if args.compare:
            comparison = compare(table, *args.compare)
            sys.stdout.write(render_comparison(comparison, table))
            return 1 if comparison.tripped() else 0
        sys.stdout.write(render_text(table))
        return 0
    except CowmemError as exc:
        print(f"cowmem report: error: {exc}", file=sys.stderr)
        return 2
