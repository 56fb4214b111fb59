"""``cowmem seed``: the question's experiment, multiprocessing workers touching numpy and list data."""

from __future__ import annotations

import argparse

from .arguments import scale, workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run the question's three runs and the answer's [1] * n case with "
                          "multiprocessing workers, and show what each worker copied beside "
                          "the question's free-memory reading.")
    parser.add_argument("--scale", type=scale, default=1.0, metavar="S",
                        help="multiply the question's sizes (15000 x 15000 floats, 10**8 ints) by S (default 1)")
    parser.add_argument("--workers", type=workers, default=4, metavar="N", help="workers per run (default 4)")
    parser.add_argument("--start-method", default="fork", metavar="METHOD",
                        help="fork (the question's, default), forkserver, spawn, or default "
                             "(this interpreter's: forkserver from CPython 3.14)")


def run(args: argparse.Namespace) -> int:
    from .. import seed, workers as workers_module

    # Refuse a bad method or a size that does not fit before building anything.
    workers_module.resolve_start_method(args.start_method)
    seed.check_memory(args.scale, args.workers)
    rows = seed.run(args.scale, args.workers, args.start_method, progress=seed.stderr_progress())
    print(seed.format_rows(rows, args.scale))
    return 0 if all(row.report.ok for row in rows) else 1
