"""``cowmem measure DATA ACCESS``: what one access copies in a forked child."""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any, Dict

from ..units import format_bytes
from .arguments import size

DEFAULT_SIZE = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Build DATA in this process, fork, run ACCESS on it in the child, "
                          "and report what the kernel copied.")
    parser.add_argument("data", metavar="DATA", help="a data kind (see `cowmem list`)")
    parser.add_argument("access", metavar="ACCESS", help="an access (see `cowmem list`)")
    parser.add_argument("--size", type=size, default=DEFAULT_SIZE, metavar="N",
                        help=f"elements in the data (default {DEFAULT_SIZE:_}); 1e6 and 1_000_000 work")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the parent before the fork")
    parser.add_argument("--json", action="store_true", help="print the report as a JSON object")
    parser.add_argument("--explain", action="store_true",
                        help="name the write that caused each copied page (needs userfaultfd, root)")


def run(args: argparse.Namespace) -> int:
    from .. import workloads

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
         "data pages the access may have written unseen"),
        ("unlocated", ", ".join(f"{name} {count:,}" for name, count in report.unlocated.get("data", {}).items()) or "none",
         "objects of the data whose memory cowmem could not all place"),
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
        from ..meter import copied_page_numbers

        whole = report.explanation
        print()
        print(whole.format())
        # The same without the interpreter's own pages: what the data cost.
        in_data = whole.restrict(np.setdiff1d(copied_page_numbers(report), whole.pages_of("outside_data")))
        print()
        print("first written inside the data:")
        print(in_data.format())
    return 0
