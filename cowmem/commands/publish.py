"""``cowmem publish``: asv's site, made to render offline, with the report page in it."""

from __future__ import annotations

import argparse
import sys

from ..errors import CowmemError
from ..publish import REPORT_PAGE, default_vendor_cache, publish
from .report import add_table_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cowmem publish``."""
    parser.description = ("Run `asv publish` and make the site render with no network access "
                          "(libraries copied from the npm registry's packages), with the "
                          f"cross-environment report as {REPORT_PAGE}.")
    parser.add_argument("--html-dir", metavar="DIR",
                        help="where to write the site (default: the configuration's html_dir)")
    parser.add_argument("--vendor-cache", default=str(default_vendor_cache()), metavar="DIR",
                        help="where the libraries' npm tarballs are kept; fetched with "
                             "`npm pack` when missing (default: %(default)s)")
    parser.add_argument("--no-pull", dest="pull", action="store_false",
                        help="passed to asv publish: do not fetch the repository first")
    add_table_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """``cowmem publish``: 0 done, 2 failed (one-line error)."""
    try:
        site = publish(args)
    except CowmemError as exc:
        print(f"cowmem publish: error: {exc}", file=sys.stderr)
        return 2
    print(f"site written to {site}; serve it with `python -m http.server -d {site}` "
          f"and open {REPORT_PAGE} there for the environments side by side")
    return 0
