"""A test against its limit: run the body measured, and fail it when it copied too much.

The verdict comes from one plain run of the body, which locates nothing
unless the marker names regions.  Only when the body is over its limit does
a second run explain the copies: with the test's fixtures as regions, and
with userfaultfd where it works (explain mode, root), so that the message
can say which objects and which writes made the kernel copy.  That run
disturbs the heap it measures (locating, the fault handler) and is never
the verdict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import pytest

from ..errors import CowmemError, ExplainUnavailableError, UnsupportedPlatformError
from ..meter import ForkReport, Regions, copied_page_numbers
from .message import failure_message
from .body import ForkedBody
from .marker import Limit
from .outcome import RerunError

# Fixture values that are pytest's own machinery (request, capsys,
# monkeypatch...), not the test's data: never located or explained.
_PYTEST_MODULES = ("_pytest", "pytest", "pluggy")


@dataclass(frozen=True)
class Explained:
    """What the second run found, or why there is none."""

    report: Optional[ForkReport]        # with regions, and an explanation where explain mode works
    regions: Dict[str, Any]             # the fixtures located in it (or named by the marker)
    note: str = ""                      # why there is no explanation (or no second run)


def check(item: pytest.Function, limit: Limit, timeout: float, explain: bool) -> None:
    """Run ``item``'s body in a child; fail the test when it copied more than ``limit``."""
    body = ForkedBody(item, timeout)
    named = {name: item.funcargs[name] for name in limit.regions}
    regions = Regions(named) if named else None
    try:
        report = body.measure(regions=regions)
    except UnsupportedPlatformError as exc:
        pytest.skip(f"{limit.describe()}: cowmem cannot measure here: {exc}")
    counted = counted_bytes(report, regions)
    if counted <= limit.limit:
        return
    second = _explain(body, item, regions, named) if explain else \
        Explained(None, named, "not explained (--limit-copied-explain=never)")
    pytest.fail(failure_message(limit, report, counted, second), pytrace=False)


def counted_bytes(report: ForkReport, regions: Optional[Regions]) -> int:
    """The bytes the limit applies to: the whole child's, or those inside the regions (counted once)."""
    if regions is None:
        return report.copied_bytes
    return int(np.count_nonzero(np.isin(copied_page_numbers(report), region_pages(regions)))) * report.page_size


def region_pages(regions: Regions) -> np.ndarray:
    """The page numbers of all the regions together, ascending."""
    return np.unique(np.concatenate([np.zeros(0, np.uint64), *regions.pages.values()]))


def _explain(body: ForkedBody, item: pytest.Function, regions: Optional[Regions],
             named: Dict[str, Any]) -> Explained:
    """Run the body again, with the fixtures as regions and explain mode where it works."""
    objects = named or fixture_data(item)
    if not objects:
        return Explained(None, {}, "not explained: the test has no fixtures to locate")
    located = regions or Regions(objects)
    try:
        try:
            report = body.measure(regions=located, explain=True, quiet=True)
            note = ""
        except ExplainUnavailableError as exc:
            if named:
                return Explained(None, objects, f"not explained: {exc}")
            report = body.measure(regions=located, quiet=True)
            note = f"not explained by cause: {exc}"
    except (RerunError, CowmemError) as exc:
        return Explained(None, objects, f"not explained: the second run of the body failed: {exc}")
    if report.explanation is not None and named:
        own = np.intersect1d(copied_page_numbers(report), region_pages(located))
        report = dataclasses.replace(report, explanation=report.explanation.restrict(own))
    return Explained(report, objects, note)


def fixture_data(item: pytest.Function) -> Dict[str, Any]:
    """The values of the test's fixtures that are data, not pytest's own objects."""
    return {name: value for name, value in item.funcargs.items()
            if value is not None and type(value).__module__.split(".")[0] not in _PYTEST_MODULES}
