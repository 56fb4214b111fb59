"""The measuring behind measure_fork: snapshots around an access, and the report.

A ForkMeter is made in the parent before the fork (it reads the maps,
locates the regions and allocates every buffer there), runs the access in
the child between two pagemap snapshots, and builds the ForkReport from
those snapshots, which live in shared memory: in the child after the run,
or in the parent once the child is done.  See DESIGN.md, "The measuring
method".
"""

from __future__ import annotations

import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import _linux
from .errors import AccessError, CowmemError, UnsupportedPlatformError
from .regions import RegionSpec, Regions
from ._linux import FILE_OR_SHARED, PAGE_SHIFT, PAGE_SIZE, PFN_MASK, PRESENT


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
    ``unobserved`` the bytes of each region that were already the child's
    when the baseline was taken (the parent wrote them after the fork, or
    the fork's own bookkeeping did): the access may have written them too,
    unseen.  cowmem keeps this to a few pages at most; it is reported so
    that no reader has to take that on trust.  ``unlocated`` gives, per
    region, {type name: objects} whose memory cowmem could not all place
    (see :class:`Regions`): pages of theirs may be missing from the region.

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


class ForkMeter:
    """Measure what one access copies in a child that you fork yourself.

    Make it in the parent just before the fork (regions as for
    :func:`cowmem.measure_fork`); call :meth:`run` once in the child; then
    call :meth:`report` in the child after ``run`` returned, or in the
    parent after the child has exited.  :func:`cowmem.measure_fork` is this
    plus the forking, waiting and reaping.
    """

    def __init__(self, regions: Union[Mapping[str, RegionSpec], Regions, None] = None, *,
                 cross_checks: bool = True) -> None:
        _linux.check_pagemap()
        self.cross_checks = cross_checks
        # Located before the fork (in a helper of its own, see Regions):
        # walking a container in the child would write the very reference
        # counts being watched.
        self._regions = regions if isinstance(regions, Regions) else Regions(regions)
        self._zero_frame = _zero_frame()
        self._counters = _linux.ProcCounters()
        # Last, so that the maps it reads are those the child inherits.  The
        # buffers are shared mappings: never among the private ones measured.
        self._targets, self._snaps = _prepare_snapshots()

    def anonymous_ranges(self) -> List[Tuple[int, int]]:
        """The anonymous private writable ranges measured ([start, stop) in bytes)."""
        return [(m.start, m.stop) for m in self._targets if m.label.startswith("[")]

    def run(self, access: Callable[[], Any], prepare: Optional[Callable[[], Any]] = None,
            finish: Optional[Callable[[], Any]] = None) -> None:
        """In the child: run ``access()`` between the two snapshots.

        ``prepare()``, if given, runs before the baseline and ``finish()``
        after the second snapshot (also when the access raised): neither is
        counted.  A page ``prepare`` makes the child's is so before the
        baseline, so a write to it by the access is not seen either (inside
        a region it counts as unobserved).  Raises AccessError, carrying the
        type and traceback, if any of the three raises (the access's first).
        """
        snaps, counters = self._snaps, self._counters
        if prepare is not None:
            _call_outside(prepare, "prepare")
        # Everything between the fork and the baseline may copy a page the
        # access would have copied: only reads into memory prepared by the parent.
        snaps.attach()
        counters.attach(self.cross_checks)
        snaps.warm_up()
        # The counters read smaps_rollup, a page-table walk as long as a
        # snapshot: outside the snapshots, so that the pages they touch are
        # not counted.  No fault happens in between: the buffers are populated.
        counters.read(0)
        snaps.take(0)
        t0 = time.perf_counter_ns()
        try:
            access()
        except BaseException as exc:
            failure: Optional[AccessError] = _access_error(exc)
        else:
            t1 = time.perf_counter_ns()
            snaps.take(1)
            counters.read(1)
            counters.finish(_fresh_in_new_mappings([(m.start, m.stop) for m in self._targets],
                                                   self._zero_frame), t1 - t0)
            failure = None
        if finish is not None:
            try:
                _call_outside(finish, "finish")
            except AccessError as error:
                failure = failure or error
        if failure is not None:
            raise failure

    def report(self) -> ForkReport:
        """The report of the completed run (bytes, pages of 4 KiB)."""
        return _build_report(self._snaps, self._counters, self._targets, self._regions, self._zero_frame)

    def close(self) -> None:
        """Release the buffers (in the parent; a child simply exits)."""
        self._snaps.close()
        self._counters.close()

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


def _prepare_snapshots() -> Tuple[list, _linux.PagemapSnapshots]:
    """The parent's private writable mappings and snapshot buffers for them.

    Making the buffers allocates, which can add a mapping (a new allocator
    arena) after the maps were read: read again until they hold still, or a
    page present at the fork would later look fresh.
    """
    for _ in range(5):
        targets = [m for m in _linux.read_maps() if m.private_writable]
        snaps = _linux.PagemapSnapshots([(m.start, m.stop) for m in targets])
        if _linux.private_writable_ranges(_linux.read_maps()) == [(m.start, m.stop) for m in targets]:
            return targets, snaps
        snaps.close()
    raise CowmemError("this process's mappings kept changing while cowmem prepared its "
                      "buffers (another thread mapping memory?); try again")



_zero_frame_cache: list = []


def _zero_frame() -> int:
    if not _zero_frame_cache:
        _zero_frame_cache.append(_linux.zero_page_frame())
    return _zero_frame_cache[0]


def _build_report(snaps: _linux.PagemapSnapshots, counters: _linux.ProcCounters,
                  targets: list, regions: Regions, zero_frame: int) -> ForkReport:
    fresh_new, access_seconds = counters.outcome()
    diff = _compare(*snaps.entries, zero_frame)
    copied = snaps.page_numbers(diff.copied)
    blind = snaps.page_numbers(diff.blind)
    starts = np.array([m.start >> PAGE_SHIFT for m in targets], np.uint64)
    which = np.searchsorted(starts, copied, side="right") - 1
    by_label: Dict[str, int] = {}
    for index, count in zip(*np.unique(which, return_counts=True)):
        label = targets[index].label
        by_label[label] = by_label.get(label, 0) + int(count) * PAGE_SIZE
    minflt_before, uss_before, dirty_before = counters.parse(0)
    minflt_after, uss_after, dirty_after = counters.parse(1)
    return ForkReport(
        copied_bytes=int(copied.size) * PAGE_SIZE,
        fresh_bytes=(diff.fresh + fresh_new) * PAGE_SIZE,
        regions=_per_region(regions.pages, copied),
        mappings=types.MappingProxyType(dict(sorted(by_label.items(), key=lambda kv: -kv[1]))),
        copied_ranges=_runs(copied),
        unobserved=_per_region(regions.pages, blind),
        minor_faults=minflt_after - minflt_before,
        uss_delta_bytes=None if uss_before is None else uss_after - uss_before,
        private_dirty_delta_bytes=None if dirty_before is None else dirty_after - dirty_before,
        access_seconds=access_seconds,
        pfn_guard=diff.pfn_guard,
        unlocated=types.MappingProxyType({name: types.MappingProxyType(dict(found))
                                          for name, found in regions.unlocated.items()}),
    )


def _per_region(region_pages: Mapping[str, np.ndarray], pages: np.ndarray) -> Mapping[str, int]:
    return types.MappingProxyType(
        {name: int(np.count_nonzero(np.isin(own, pages, assume_unique=True))) * PAGE_SIZE
         for name, own in region_pages.items()})


def _runs(pages: np.ndarray) -> Tuple[Tuple[int, int], ...]:
    """Merge sorted page numbers into byte ranges ``(start, stop)``."""
    if pages.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(pages) != 1)
    firsts = np.concatenate(([pages[0]], pages[breaks + 1]))
    lasts = np.concatenate((pages[breaks], [pages[-1]]))
    return tuple((int(f) << PAGE_SHIFT, (int(l) + 1) << PAGE_SHIFT) for f, l in zip(firsts, lasts))


def copied_page_numbers(report: ForkReport) -> np.ndarray:
    """The page numbers (address >> 12) of every page the report counts as copied."""
    parts = [np.arange(start >> PAGE_SHIFT, stop >> PAGE_SHIFT, dtype=np.uint64)
             for start, stop in report.copied_ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


_PRESENT, _SWAPPED = _linux.FLAG_PRESENT, _linux.FLAG_SWAPPED
_FILE, _EXCLUSIVE = _linux.FLAG_FILE_OR_SHARED, _linux.FLAG_EXCLUSIVE


class _Diff(NamedTuple):
    copied: np.ndarray   # positions of the copied pages in the snapshots
    fresh: int           # pages populated without a copy
    blind: np.ndarray    # positions of pages already the child's at the baseline
    pfn_guard: bool


def _compare(before: np.ndarray, after: np.ndarray, zero_frame: int) -> _Diff:
    """What happened to each page between two snapshots of the same pages.

    Copied: present, anonymous and shared before; exclusive after; and,
    where PFNs are readable, a new frame and not the zero page before.
    Fresh: exclusive after and not present (or the zero page) before.
    Blind: exclusive already before (the parent, or the fork's own
    bookkeeping, wrote it first): a write by the access cannot be seen.
    """
    fb, fa = _linux.flags(before), _linux.flags(after)
    kind = _PRESENT | _FILE | _EXCLUSIVE
    mine_after = (fa & kind) == (_PRESENT | _EXCLUSIVE)
    mine = np.flatnonzero(mine_after)
    if mine.size == 0:
        # The child has written pages of its own by now (its stack, at the
        # least): a kernel that shows none as exclusive does not report bit 56.
        raise UnsupportedPlatformError(
            "this kernel does not report the exclusively-mapped bit (56) in pagemap "
            "(Linux 4.2+ does): copied pages cannot be told from shared ones")
    # Without CAP_SYS_ADMIN every frame number reads as 0.
    pfn_guard = bool(np.any(after[mine[:64]] & PFN_MASK))
    candidates = np.flatnonzero(mine_after & ((fb & kind) == _PRESENT))
    fresh = int(np.count_nonzero(mine_after & ((fb & (_PRESENT | _FILE)) != _PRESENT) & ((fb & _SWAPPED) == 0)))
    if pfn_guard:
        pfn_b = before[candidates] & PFN_MASK
        was_zero = pfn_b == np.uint64(zero_frame) if zero_frame else np.zeros(pfn_b.shape, bool)
        fresh += int(np.count_nonzero(was_zero))
        candidates = candidates[~was_zero & (pfn_b != (after[candidates] & PFN_MASK))]
    blind = np.flatnonzero((fb & kind) == (_PRESENT | _EXCLUSIVE))
    return _Diff(candidates, fresh, blind, pfn_guard)


def _fresh_in_new_mappings(known: list, zero_frame: int) -> int:
    """Present anonymous pages, not the zero page, in private writable memory mapped since the fork."""
    new = _linux.subtract_ranges(_linux.private_writable_ranges(_linux.read_maps()), known)
    if not new:
        return 0
    entries = _linux.read_entries(new)
    populated = entries[(entries & (PRESENT | FILE_OR_SHARED)) == PRESENT]
    return int(np.count_nonzero((populated & PFN_MASK) != np.uint64(zero_frame))) if zero_frame \
        else int(populated.size)
