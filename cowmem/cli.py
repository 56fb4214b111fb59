"""The command line: ``cowmem list | measure | seed | report | publish``.

Exit status: 0 on success, 2 on bad usage or bad input (one line on
stderr, never a traceback), 1 when a measurement itself failed (the child
was killed, timed out, or the platform cannot measure), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import decimal
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
from typing import Any, Dict, NoReturn, Optional, Sequence

from .errors import CowmemError, InsufficientMemoryError, NotApplicableError, UnknownNameError

DEFAULT_SIZE = 1_000_000
# Subcommands that other modules implement: name -> (module, one-line help).
EXTERNAL = {
    "report": ("cowmem.report", "compare results across environments (asv results)"),
    "publish": ("cowmem.publish", "asv publish, made to render offline, with the cross-environment report page"),
}

class UsageError(Exception):
    """Bad command-line input, reported in one line with exit status 2."""

# Errors that mean "the input was wrong", as opposed to "measuring failed".
BAD_INPUT = (UsageError, UnknownNameError, NotApplicableError, InsufficientMemoryError)

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``cowmem measure: error: ...``, exit 2).

    A subcommand implemented by another module sets ``lazy_module``: that
    module provides ``add_arguments(parser)`` and ``run(args) -> int``, and
    is imported only when its subcommand is used, so the rest of the command
    line keeps working while it is missing or broken.
    """

    lazy_module: Optional[str] = None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Any = None) -> Any:
        if self.lazy_module is None:
            return super().parse_known_args(args, namespace)
        if importlib.util.find_spec(self.lazy_module) is None:
            self.exit(2, f"{self.prog}: error: not available in this installation "
                         f"({self.lazy_module} is missing)\n")
        module = importlib.import_module(self.lazy_module)
        module.add_arguments(self)
        self.lazy_module = None  # loaded: parse as any other subcommand
        self.set_defaults(handler=module.run)
        return super().parse_known_args(args, namespace)

def _size(text: str) -> int:
    """A count of elements: ``1000000``, ``1_000_000`` or ``1e6``; at least 1."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = decimal.Decimal(text.replace("_", ""))  # exact: 1e40 is 10**40, not a float's guess
        except decimal.InvalidOperation:
            number = decimal.Decimal("NaN")
        if not (number.is_finite() and number == number.to_integral_value()):
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        value = int(number)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value

def _scale(text: str) -> float:
    """A positive finite factor."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value

def _workers(text: str) -> int:
    # More workers than this on a 2-core machine measure the scheduler, not memory.
    limit = 64
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= limit:
        raise argparse.ArgumentTypeError(f"must be between 1 and {limit}, not {value}")
    return value

def build_parser() -> argparse.ArgumentParser:
    """The ``cowmem`` parser with every subcommand."""
    parser = _Parser(prog="cowmem", description="Page-exact measurement of what a forked child copies.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"cowmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="the data kinds and accesses, and which pairs apply",
                       description="List the data kinds and accesses, and which pairs apply.")
    p.set_defaults(handler=_list)

    p = sub.add_parser("measure", help="measure what one access copies in a forked child",
                       description="Build DATA in this process, fork, run ACCESS on it in the child, "
                                   "and report what the kernel copied.")
    p.add_argument("data", metavar="DATA", help="a data kind (see `cowmem list`)")
    p.add_argument("access", metavar="ACCESS", help="an access (see `cowmem list`)")
    p.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="N",
                   help=f"elements in the data (default {DEFAULT_SIZE:_}); 1e6 and 1_000_000 work")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the parent before the fork")
    p.add_argument("--json", action="store_true", help="print the report as a JSON object")
    p.add_argument("--explain", action="store_true",
                   help="name the write that caused each copied page (needs userfaultfd, root)")
    p.set_defaults(handler=_measure)

    p = sub.add_parser("seed", help="the question's experiment: workers, sum() and iteration, numpy vs lists",
                       description="Run the question's three runs and the answer's [1] * n case with "
                                   "multiprocessing workers, and show what each worker copied beside "
                                   "the question's free-memory reading.")
    p.add_argument("--scale", type=_scale, default=1.0, metavar="S",
                   help="multiply the question's sizes (15000 x 15000 floats, 10**8 ints) by S (default 1)")
    p.add_argument("--workers", type=_workers, default=4, metavar="N", help="workers per run (default 4)")
    p.add_argument("--start-method", default="fork", metavar="METHOD",
                   help="fork (the question's, default), forkserver, spawn, or default "
                        "(this interpreter's: forkserver from CPython 3.14)")
    p.set_defaults(handler=_seed)

    for name, (module, help_text) in EXTERNAL.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.lazy_module = module
    return parser

def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BAD_INPUT as exc:
        return _fail(exc, 2)
    except CowmemError as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        print("cowmem: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (``cowmem list | head``): silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

def _fail(exc: BaseException, status: int) -> int:
    # The first line only: errors carrying a child's traceback put it after.
    print(f"cowmem: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
    return status

# --- list ---------------------------------------------------------------

def _list(args: argparse.Namespace) -> int:
    from . import workloads

    kinds, accesses = workloads.DATA_KINDS, workloads.ACCESSES
    width = max(map(len, [*kinds, *accesses]))
    print("Data kinds (built in the parent from a size N):")
    for name, kind in kinds.items():
        print(f"  {name:<{width}}  {kind.description}")
    print("\nAccesses (run in the child):")
    for name, access in accesses.items():
        print(f"  {name:<{width}}  {access.description}")
    print("\nPairs that apply (x), by data kind (rows) and access (columns):")
    names = list(accesses)
    print(f"  {'':<{width}}  " + " ".join(names))
    for data in kinds:
        marks = ("x" if workloads.applies(data, access) else "-" for access in names)
        print((f"  {data:<{width}}  " + " ".join(f"{m:^{len(n)}}" for m, n in zip(marks, names))).rstrip())
    return 0

# --- measure ------------------------------------------------------------

def _measure(args: argparse.Namespace) -> int:
    from . import workloads

    workloads.check_pair(args.data, args.access)
    options: Dict[str, Any] = {"gc_freeze": args.gc_freeze}
    if args.explain:
        options["explain"] = True
    report = workloads.measure(args.data, args.access, args.size, **options)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    freeze = ", gc.freeze() first" if args.gc_freeze else ""
    print(f"{args.data} x {args.access}, N = {args.size:,}{freeze}; "
          f"CPython {platform.python_version()}, page size {report.page_size} B")
    rows = [
        ("copied", format_bytes(report.copied_bytes, report.page_size), "pages the access made the kernel copy"),
        ("fresh", format_bytes(report.fresh_bytes, report.page_size), "pages newly populated (not copies)"),
        ("in data", format_bytes(report.regions["data"], report.page_size), "copied pages inside the data's memory"),
        ("unobserved", format_bytes(report.unobserved["data"], report.page_size),
         "data pages already the child's at the baseline: writes there unseen"),
        ("USS delta", format_bytes(report.uss_delta_bytes), "the child's unique set size, after - before"),
        ("minor faults", f"{report.minor_faults:,}", "copy-on-write faults plus first touches"),
        ("access time", f"{report.access_seconds * 1e3:,.1f} ms", ""),
    ]
    for label, value, note in rows:
        print(f"  {label:<13} {value:>28}  {note}".rstrip())
    if not report.pfn_guard:
        print("  (page frame numbers unreadable here, without CAP_SYS_ADMIN: writes by the parent "
              "after the fork, and first writes to zero-page memory, count as copies)")
    if report.explanation is not None:
        import numpy as np
        from .meter import copied_page_numbers

        whole = report.explanation
        print()
        print(whole.format())
        # The same without the interpreter's own pages: what the data cost.
        in_data = whole.restrict(np.setdiff1d(copied_page_numbers(report), whole.pages_of("outside_data")))
        print()
        print("first written inside the data:")
        print(in_data.format())
    return 0

def format_bytes(count: int, page_size: Optional[int] = None) -> str:
    """``count`` bytes in MiB (and in pages when ``page_size`` is given)."""
    text = f"{count / 2**20:,.1f} MiB" if abs(count) >= 2**20 / 10 else f"{count:,} B"
    if not page_size:
        return text
    pages = count // page_size
    return f"{text} ({pages:,} page{'' if pages == 1 else 's'})"

# --- seed ---------------------------------------------------------------

def _seed(args: argparse.Namespace) -> int:
    from . import seed, workers

    # Refuse a bad method or a size that does not fit before building anything.
    workers.resolve_start_method(args.start_method)
    seed.check_memory(args.scale, args.workers)
    rows = seed.run(args.scale, args.workers, args.start_method, progress=seed.stderr_progress())
    print(seed.format_rows(rows, args.scale))
    return 0 if all(row.report.ok for row in rows) else 1
