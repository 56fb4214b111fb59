"""``cowmem workers``: the multiprocessing experiment, workers touching numpy and list data."""

from __future__ import annotations

import argparse

from .arguments import scale, workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Fork multiprocessing workers from a parent holding a numpy array, then a "
                          "list of ints, then a list of one int; have each worker sum or iterate the "
                          "data, and show what each copied beside the free memory the system reports.")
    parser.add_argument("--scale", type=scale, default=1.0, metavar="S",
                        help="multiply the sizes (15000 x 15000 floats, 10**8 ints) by S (default 1)")
    parser.add_argument("--workers", type=workers, default=4, metavar="N", help="workers per run (default 4)")
    parser.add_argument("--start-method", default="fork", metavar="METHOD",
                        help="fork (default), forkserver, spawn, or default "
                             "(this interpreter's: forkserver from CPython 3.14)")


def run(args: argparse.Namespace) -> int:
    from .. import experiment, workers as workers_module

    # Refuse a bad method or a size that does not fit before building anything.
    workers_module.resolve_start_method(args.start_method)
    experiment.check_memory(args.scale, args.workers)
    rows = experiment.run(args.scale, args.workers, args.start_method, progress=experiment.stderr_progress())
    print(experiment.format_rows(rows, args.scale))
    return 0 if all(row.report.ok for row in rows) else 1
