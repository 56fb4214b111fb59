"""``cowmem publish``: asv's site, made to render offline, opening on cowmem's overview."""

from __future__ import annotations

import argparse
import sys

from ..errors import CowmemError
from .report import add_table_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cowmem publish``."""
    from ..publish.vendor import default_vendor_cache
    parser.description = ("Run `asv publish` on a results directory and make the site render "
                          "with no network access (libraries copied from the npm registry's "
                          "packages). The site opens on cowmem's overview (index.html), with "
                          "the upgrade page (upgrade.html), the report of every environment "
                          "and asv's own graphs (asv.html).")
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
    from ..publish.build import publish
    try:
        site = publish(args)
    except CowmemError as exc:
        print(f"cowmem publish: error: {exc}", file=sys.stderr)
        return 2
    print(f"site written to {site}; serve it with `python -m http.server -d {site}` "
          "and open index.html (cowmem's overview; asv's graphs are asv.html)")
    return 0
