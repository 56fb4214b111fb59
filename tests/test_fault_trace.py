"""cowmem counts no write of its own: the kernel's fault trace says when each copied page was written.

Every page a forked child copies is copied in a write fault, which the
kernel's tracepoints log in order with markers the access writes as it
begins and ends (tests/reference/faults.py).  So every page cowmem counts
as the access's copy must have its first written fault between the
markers: one whose first came before was the child's already (its set-up
copied it, and cowmem's baseline would show it so), and one whose first
came after was written by cowmem's own second snapshot or comparison.
"""

from __future__ import annotations

import json
import mmap
import os

import numpy as np
import pytest

from cowmem import PAGE_SIZE, measure_fork
from capabilities import needs
from reference import faults

pytestmark = needs("tracefs")

BEGIN, END = "cowmem-test: access begins", "cowmem-test: access ends"


def _pages(ranges):
    return {p for start, stop in ranges for p in range(start // PAGE_SIZE, stop // PAGE_SIZE)}


def _traced(work, warm: bool, **options):
    """measure_fork(work) with the access bracketed by markers: (report, {page: when first written}).

    ``warm``: ``prepare`` first runs the access once, unmarked, and a
    marker, so that before the baseline the child has written what the
    access and the markers write (its code's and its objects' reference
    counts among them).  Then a page first written between the baseline
    and the first marker was written by cowmem itself.
    """
    with faults.FaultTrace() as trace:
        # The markers' own calls look nothing up and make nothing: a builtin and an fd.
        begin, end, mark, fd = BEGIN.encode(), END.encode(), os.write, trace.marker
        armed, touched = [], []

        def access():
            if armed:
                mark(fd, begin)
            work()
            if armed:
                mark(fd, end)

        def prepare():
            access()
            mark(fd, b"cowmem-test: prepared")
            touched.append((begin, end))  # the markers' texts' reference counts written too
            armed.append(True)

        trace.start(os.getpid())
        if warm:
            report = measure_fork(access, prepare=prepare, **options)
        else:
            armed.append(True)
            report = measure_fork(access, **options)
        _, written = faults.first_faults_between(trace.stop(), BEGIN, END)
    return report, written


def _mapped(pages):
    buf = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buf, np.uint8)
    view[::PAGE_SIZE] = 1
    return buf, view


def _nothing():
    pass


NUMBERS = list(range(10**5))
ARRAY = np.arange(10**6, dtype=np.float64)
DOCUMENT = {str(i): [i, str(i) * 3, {"x": float(i)}] for i in range(20_000)}
MAPPED, VIEW = _mapped(3000)


ACCESSES = {
    "nothing": _nothing,
    "iterate a list": lambda: [None for _ in NUMBERS],
    "sum an array": ARRAY.sum,
    "json.dumps a document": lambda: json.dumps(DOCUMENT),
    "write 1,000 pages": lambda: VIEW.__setitem__(slice(100, 100 + 3000 * PAGE_SIZE, 3 * PAGE_SIZE), 2),
}


OPTIONS = pytest.mark.parametrize("options", [{}, {"regions": {"numbers": NUMBERS}}, {"cross_checks": True}],
                                  ids=["plain", "with a region", "with cross-checks"])


def _copied_when(report, written):
    """For each page counted as copied: (when it was first written, by which instruction)."""
    copied = _pages(report.copied_ranges)
    assert len(copied) * PAGE_SIZE == report.copied_bytes
    return {hex(p << 12): written.get(p, ("never", "")) for p in copied}


@OPTIONS
@pytest.mark.parametrize("name", ACCESSES)
def test_no_copied_page_was_first_written_after_the_access(name, options):
    """However the access runs, cowmem's second snapshot and comparison write no page it counts."""
    report, written = _traced(ACCESSES[name], warm=False, **options)
    late = {page: first for page, first in _copied_when(report, written).items() if first[0] in ("after", "never")}
    assert not late, f"counted as the access's copies, but first written {late}"


@OPTIONS
@pytest.mark.parametrize("name", ACCESSES)
def test_every_copied_page_of_a_warm_access_was_written_by_it(name, options):
    """With the access's own writes made before the baseline, every page counted was written between its markers."""
    report, written = _traced(ACCESSES[name], warm=True, **options)
    elsewhere = {page: first for page, first in _copied_when(report, written).items() if first[0] != "between"}
    assert not elsewhere, f"counted as the access's copies, but first written {elsewhere}"


def test_the_pages_the_access_wrote_are_the_copied_pages_of_a_region():
    """Inside a buffer nothing else touches, written during the access is exactly copied."""
    span = (VIEW.ctypes.data, VIEW.ctypes.data + VIEW.size)
    report, written = _traced(ACCESSES["write 1,000 pages"], warm=False, regions={"buffer": span})
    inside = {p for p, (when, _) in written.items() if when == "between" and span[0] >> 12 <= p < span[1] >> 12}
    expected = {(span[0] + 100 + i * 3 * PAGE_SIZE) >> 12 for i in range(1000)}
    assert inside == expected
    assert _pages(report.copied_ranges) & inside == expected
    assert report.regions["buffer"] == len(expected) * PAGE_SIZE
