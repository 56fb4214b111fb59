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
from .._linux.pagemap import page_span
from ..meter import ForkReport, Regions, copied_page_numbers
from ..locate import object_block
from .message import failure_message
from .body import ForkedBody
from .marker import Limit
from .outcome import RerunError

# Fixture values that are pytest's own machinery (request, capsys,
# monkeypatch...), not the test's data: never located or explained.
_PYTEST_MODULES = ("_pytest", "pytest", "pluggy")


@dataclass(frozen=True)
class Findings:
    """What is known of a body over its limit beyond the count."""

    report: Optional[ForkReport]    # the second run's: with regions, explained where explain mode works
    objects: Dict[str, Any]         # the fixtures located (or named by the marker)
    note: str = ""                  # why there is no explanation (or no second run)
    headers_only: bool = False      # every page copied inside the fixtures holds one of their own headers


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
    findings = _explain(body, item, regions, named) if explain else \
        Findings(None, named, "not explained (--limit-copied-explain=never)")
    if regions is not None:
        findings = dataclasses.replace(findings, headers_only=_headers_only(report, regions, named))
    pytest.fail(failure_message(limit, report, counted, findings), pytrace=False)


def counted_bytes(report: ForkReport, regions: Optional[Regions]) -> int:
    """The bytes the limit applies to: the whole child's, or those inside the regions (counted once)."""
    if regions is None:
        return report.copied_bytes
    return _inside(report, regions).size * report.page_size


def _inside(report: ForkReport, regions: Regions) -> np.ndarray:
    """The page numbers copied inside the regions."""
    pages = np.unique(np.concatenate([np.zeros(0, np.uint64), *regions.pages.values()]))
    return np.intersect1d(copied_page_numbers(report), pages)


def _headers_only(report: ForkReport, regions: Regions, objects: Dict[str, Any]) -> bool:
    """Whether every page copied inside the regions holds a fixture object's own block."""
    inside = _inside(report, regions)
    own = page_span(object_block(obj) for obj in objects.values())
    return bool(inside.size) and bool(np.all(np.isin(inside, own)))


def _explain(body: ForkedBody, item: pytest.Function, regions: Optional[Regions],
             named: Dict[str, Any]) -> Findings:
    """Run the body again, with the fixtures as regions and explain mode where it works."""
    objects = named or fixture_data(item)
    if not objects:
        return Findings(None, {}, "not explained: the test has no fixtures to locate")
    located = regions or Regions(objects)
    try:
        try:
            report = body.measure(regions=located, explain=True, quiet=True)
            note = ""
        except ExplainUnavailableError as exc:
            if named:
                return Findings(None, objects, f"not explained: {exc}")
            report = body.measure(regions=located, quiet=True)
            note = f"not explained by cause: {exc}"
    except (RerunError, CowmemError) as exc:
        return Findings(None, objects, f"not explained: the second run of the body failed: {exc}")
    if report.explanation is not None and named:
        report = dataclasses.replace(report, explanation=report.explanation.restrict(_inside(report, located)))
    return Findings(report, objects, note, headers_only=_headers_only(report, located, objects))


def fixture_data(item: pytest.Function) -> Dict[str, Any]:
    """The test's arguments that are data: not pytest's own objects, nor other plugins' autouse fixtures."""
    values = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    return {name: value for name, value in values.items()
            if value is not None and type(value).__module__.split(".")[0] not in _PYTEST_MODULES}
