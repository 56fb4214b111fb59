"""The measuring behind measure_fork: snapshots around an access, and the report.

A ForkMeter is made in the parent before the fork (it reads the maps,
locates the regions and allocates every buffer there), runs the access in
the child between two pagemap snapshots, compares them there, and leaves
what it found in shared memory.  The ForkReport is built from that: in the
child after the run, or in the parent once the child is done.
docs/method.md describes the method and why each step is as it is.
"""

from __future__ import annotations

import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ._linux.buffers import own_ranges
from ._linux.maps import private_writable_are
from ._linux.pagemap import PAGE_SHIFT, PAGE_SIZE
from ._linux.probe import pagemap_facts
from ._linux.snapshots import keep_changes, read_counters
from .errors import AccessError, CowmemError, DescriptorsClosedError
from .meter_buffers import BEGAN, ENDED, _keep, _prepare, stamp
from .regions import RegionSpec, Regions
from .snapshot_diff import _per_region, _runs, compare, exclusive_positions, fresh_in_new_mappings


@dataclass(frozen=True)
class ForkReport:
    """What one access made the kernel do in a forked child.

    Every size is in bytes, a whole number of pages.  A page counts as
    *copied* when it was present and shared with the parent just before the
    access and exclusively the child's just after it (with ``pfn_guard``, also
    only if its frame changed, so that writes by the parent after the fork,
    which leave the child's frame in place, are not charged to the child).
    A page counts as *fresh* when the access populated it without a copy:
    new allocations, first writes to never-touched or zero-page memory.

    ``regions`` gives the copied bytes inside each named region, and
    ``unobserved`` the bytes of each region that the access may have
    written unseen: pages already the child's when the baseline was taken
    (the parent wrote them after the fork, or the fork's own bookkeeping
    did), and, with ``pfn_guard``, pages the parent wrote during the access
    (it took the copy; the child keeps its frame, and its own write there
    copies nothing).  cowmem keeps this to a few pages at most; it is
    reported so that no reader has to take that on trust.  ``unlocated``
    gives, per region, {type name: objects} whose memory cowmem could not
    all place (see :class:`Regions`): pages of theirs may be missing from
    the region.  ``swapped_bytes`` are pages swapped out in one snapshot
    whose entry changed between the two: swap hides whether they were
    copied, so they count as neither.

    Two cases the page state cannot tell apart: a write to a private *file*
    page (``np.load(mmap_mode="c")``) is a copy from the page cache, not
    from the parent, and counts as fresh; memory the access frees and maps
    again at the same address counts as copied.  Without ``pfn_guard`` (no
    CAP_SYS_ADMIN) a first write to zero-page memory counts as copied too.
    """

    copied_bytes: int
    fresh_bytes: int
    regions: Mapping[str, int]
    mappings: Mapping[str, int]
    copied_ranges: Tuple[Tuple[int, int], ...]
    unobserved: Mapping[str, int]
    minor_faults: int
    uss_delta_bytes: Optional[int]
    private_dirty_delta_bytes: Optional[int]
    access_seconds: float
    pfn_guard: bool
    swapped_bytes: int = 0
    page_size: int = PAGE_SIZE
    explanation: Any = field(default=None, compare=False)
    unlocated: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def copied_pages(self) -> int:
        """Copied pages (``copied_bytes // page_size``)."""
        return self.copied_bytes // self.page_size

    @property
    def fresh_pages(self) -> int:
        """Fresh pages (``fresh_bytes // page_size``)."""
        return self.fresh_bytes // self.page_size

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of every field (ranges as ``[start, stop]`` lists)."""
        out = {
            "copied_bytes": self.copied_bytes,
            "copied_pages": self.copied_pages,
            "fresh_bytes": self.fresh_bytes,
            "fresh_pages": self.fresh_pages,
            "swapped_bytes": self.swapped_bytes,
            "regions": dict(self.regions),
            "mappings": dict(self.mappings),
            "copied_ranges": [list(r) for r in self.copied_ranges],
            "unobserved": dict(self.unobserved),
            "unlocated": {name: dict(found) for name, found in self.unlocated.items()},
            "minor_faults": self.minor_faults,
            "uss_delta_bytes": self.uss_delta_bytes,
            "private_dirty_delta_bytes": self.private_dirty_delta_bytes,
            "access_seconds": self.access_seconds,
            "pfn_guard": self.pfn_guard,
            "page_size": self.page_size,
        }
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


def located(regions: Union[Mapping[str, RegionSpec], Regions, None]) -> Regions:
    """``regions`` as a Regions, located now unless it is one already."""
    if regions is None:
        return _NO_REGIONS
    return regions if isinstance(regions, Regions) else Regions(regions)


# Made once: each measurement's code and objects are pages it writes after a fork.
_NO_REGIONS = Regions()


class ForkMeter:
    """Measure what one access copies in a child that you fork yourself.

    Make it in the parent just before the fork (regions as for
    :func:`cowmem.measure_fork`); call :meth:`run` once in the child; then
    call :meth:`report` in the child after ``run`` returned, or in the
    parent after the child has exited.  :func:`cowmem.measure_fork` is this
    plus the forking, waiting and reaping.
    """

    def __init__(self, regions: Union[Mapping[str, RegionSpec], Regions, None] = None, *,
                 cross_checks: bool = False) -> None:
        self._facts = pagemap_facts()
        self.cross_checks = bool(cross_checks)
        # Located before the fork (in a helper of its own, see Regions):
        # walking a container in the child would write the very reference
        # counts being watched.
        self._regions = located(regions)
        self._region_pages = self._regions.pages
        # Last, so that the maps it reads are those the child inherits.  Its
        # buffers are never among the mappings measured.
        self._buffers = _prepare()
        self._targets, self._snaps = self._buffers.targets, self._buffers.snaps
        self._counters, self._findings = self._buffers.counters, self._buffers.findings

    def anonymous_ranges(self) -> List[Tuple[int, int]]:
        """The anonymous private writable ranges measured ([start, stop) in bytes)."""
        return [(m.start, m.stop) for m in self._targets if m.label.startswith("[")]

    def run(self, access: Callable[[], Any], prepare: Optional[Callable[[], Any]] = None,
            finish: Optional[Callable[[], Any]] = None) -> None:
        """In the child: run ``access()`` between the two snapshots, and compare them.

        ``prepare()``, if given, runs before the baseline and ``finish()``
        after the comparison (also when the access raised): neither is
        counted.  A page ``prepare`` makes the child's is so before the
        baseline, so a write to it by the access is not seen either (inside
        a region it counts as unobserved).  Raises AccessError, carrying the
        type and traceback, if any of the three raises (the access's first);
        DescriptorsClosedError if the access closed the descriptors the
        snapshots use.
        """
        snaps, counters, findings = self._snaps, self._counters, self._findings
        if prepare is not None:
            _call_outside(prepare, "prepare")
        # Everything between the fork and the baseline may copy a page the
        # access would have copied: only reads into memory prepared by the
        # parent, and no new int (see docs/method.md).
        snaps.attach()
        counters.attach(self.cross_checks)
        snaps.warm_up()
        # From the baseline to the end of the second reading every page
        # cowmem writes first would count as the access's copy: it calls
        # module functions on what is made here, and looks up no attribute
        # (a miss in the interpreter's type cache, which the access may have
        # evicted, writes the cache and the type's MRO tuple).
        clock, counted, changes = findings.clock, counters.reading(1), snaps.second_reading()
        stamp(clock, BEGAN)  # the clock's pages the child's before the baseline
        # The counters read smaps_rollup (with cross-checks), a page-table
        # walk as long as a snapshot: outside the snapshots, so that the
        # pages they touch are not counted.
        counters.read(0)
        snaps.take_baseline()
        stamp(clock, BEGAN)
        try:
            access()
        except BaseException as exc:
            failure: Optional[AccessError] = _access_error(exc)
        else:
            stamp(clock, ENDED)
            try:
                read_counters(counted)
                keep_changes(changes)
            except OSError:
                self._check_descriptors()
                raise
            if self._region_pages:
                snaps.keep_baseline()
            # Nothing below is measured: it may allocate freely.
            self._check_descriptors()
            findings.store(self._fresh_in_new_mappings())
            failure = None
        if finish is not None:
            try:
                _call_outside(finish, "finish")
            except AccessError as error:
                failure = failure or error
        if failure is not None:
            raise failure

    def _check_descriptors(self) -> None:
        if not (self._snaps.descriptor_intact() and self._counters.descriptors_intact()):
            raise DescriptorsClosedError(
                "the access closed or replaced file descriptors it did not open (os.closerange?): "
                "cowmem's child could not read its own pagemap, so nothing was measured")

    def _fresh_in_new_mappings(self) -> int:
        """In the child: pages it populated in memory mapped since the parent read its maps.

        Such memory has no baseline; what the parent mapped there before
        the fork is still shared, and so not fresh.
        """
        if private_writable_are(self._buffers.planned_for):
            return 0
        known = [(m.start, m.stop) for m in self._targets] + own_ranges()
        return fresh_in_new_mappings(sorted(known), self._facts)

    def report(self) -> ForkReport:
        """The report of the completed run (bytes, pages of 4 KiB)."""
        if self._findings is None:
            raise CowmemError("no measurement to report: this ForkMeter was closed")
        fresh_new, access_ns = self._findings.load()
        snaps, facts = self._snaps, self._facts
        before, after = snaps.kept_entries
        diff = compare(before, after, facts.zero_frame if facts.frames_readable else None,
                       snaps.changed_positions())
        copied = snaps.page_numbers(diff.copied)
        # A region's page already the child's at the baseline, or left to it
        # by the parent during the access: the access may have written it unseen.
        left = _per_region(self._region_pages, snaps.page_numbers(diff.left))
        unobserved = {}
        for name, own in self._region_pages.items():
            unobserved[name] = exclusive_positions(before[snaps.positions_of(own)]).size * PAGE_SIZE + left[name]
        by_label: Dict[str, int] = {}
        if copied.size:
            # numpy's methods, not its Python-level functions: this runs
            # after each fork, when each page first written costs a fault.
            starts = self._buffers.target_pages
            counts = np.bincount(starts.searchsorted(copied, side="right") - 1, minlength=len(starts))
            for index in counts.nonzero()[0].tolist():
                label = self._targets[index].label
                by_label[label] = by_label.get(label, 0) + int(counts[index]) * PAGE_SIZE
        minflt_before, uss_before, dirty_before = self._counters.parse(0)
        minflt_after, uss_after, dirty_after = self._counters.parse(1)
        return ForkReport(
            copied_bytes=int(copied.size) * PAGE_SIZE,
            fresh_bytes=(diff.fresh + fresh_new) * PAGE_SIZE,
            regions=_per_region(self._region_pages, copied),
            mappings=types.MappingProxyType(dict(sorted(by_label.items(), key=lambda kv: -kv[1]))),
            copied_ranges=_runs(copied),
            unobserved=types.MappingProxyType(unobserved),
            minor_faults=minflt_after - minflt_before,
            uss_delta_bytes=None if uss_before is None else uss_after - uss_before,
            private_dirty_delta_bytes=None if dirty_before is None else dirty_after - dirty_before,
            access_seconds=access_ns / 1e9,
            pfn_guard=self._facts.frames_readable,
            swapped_bytes=diff.swapped * PAGE_SIZE,
            unlocated=types.MappingProxyType({name: types.MappingProxyType(dict(found))
                                              for name, found in self._regions.unlocated.items()}),
        )

    def close(self) -> None:
        """Release the buffers (in the parent; a child simply exits); report() is gone with them."""
        if self._buffers is not None:
            _keep(self._buffers)
            self._buffers = self._findings = None

    def __enter__(self) -> "ForkMeter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _access_error(exc: BaseException, where: str = "") -> AccessError:
    """``exc``, raised in the child, with its type and traceback (call it in the except clause)."""
    return AccessError(f"{type(exc).__module__}.{type(exc).__qualname__}", f"{where}{exc}",
                       traceback.format_exc())


def _call_outside(step: Callable[[], Any], name: str) -> None:
    """Run a step the snapshots leave out (prepare, finish); AccessError if it raises."""
    try:
        step()
    except BaseException as exc:
        raise _access_error(exc, f"in {name}: ") from None


def copied_page_numbers(report: ForkReport) -> np.ndarray:
    """The page numbers (address >> 12) of every page the report counts as copied."""
    parts = [np.arange(start >> PAGE_SHIFT, stop >> PAGE_SHIFT, dtype=np.uint64)
             for start, stop in report.copied_ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

