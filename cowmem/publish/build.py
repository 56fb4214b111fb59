"""The whole site: asv's pages made to render offline, cowmem's overview, upgrade page and report.

``index.html`` is cowmem's overview; asv's own page is ``asv.html``; the
upgrade page is ``upgrade.html`` and the report ``cowmem-report.html``.
Nothing is loaded from another host.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..report.config import read_asv_config
from ..report.gate import Thresholds
from ..report.results import load_results
from ..report.table import build_table
from ..reporters.html import write_report
from ..reporters.site import OVERVIEW_PAGE, write_site_pages
from . import PublishError
from .asvsite import ASV_PAGE, fit_asv_pages, run_asv_publish
from .vendor import LOCAL_COPIES, external_references, fetch_packages, localize, write_sources

REPORT_PAGE = "cowmem-report.html"


def publish(args: argparse.Namespace) -> Path:
    """Build the site from the parsed ``cowmem publish`` options; returns its directory."""
    config = read_asv_config(args.config)
    results_dir = Path(args.results).resolve() if args.results else config.results
    site = Path(args.html_dir).resolve() if args.html_dir else config.html
    results = load_results(results_dir)       # bad results: fail before asv runs
    table = build_table(results, args.commit, Thresholds(args.min_abs, args.min_rel), args.bench)
    packages = sorted({copy.package for copy in LOCAL_COPIES.values()}, key=lambda p: p.spec)
    tarballs = fetch_packages(packages, Path(args.vendor_cache))
    run_asv_publish(config, results_dir, site, args.pull)
    fit_asv_pages(site, REPORT_PAGE, len(results.commits()))
    copied = localize(site, ASV_PAGE, tarballs)
    write_sources(site, copied, tarballs)
    write_report(table, site / REPORT_PAGE, links=[(OVERVIEW_PAGE, "cowmem's overview"),
                                                   (ASV_PAGE, "asv's graphs")])
    write_site_pages(site, results, table, REPORT_PAGE, ASV_PAGE)
    for page in sorted(site.glob("*.html")):
        left = external_references(page.read_text(encoding="utf-8"))
        if left:
            raise PublishError(f"{page.name} still loads " + ", ".join(left))
    return site
