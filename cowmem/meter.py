"""The measuring behind measure_fork: snapshots around an access, and the report.

A ForkMeter is made in the parent before the fork (it reads the maps,
locates the regions and allocates every buffer there), runs the access in
the child between two pagemap snapshots, compares them there, and leaves
what it found in shared memory.  The ForkReport is built from that: in the
child after the run, or in the parent once the child is done.
docs/method.md describes the method and why each step is as it is.
"""

from __future__ import annotations

import os
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _linux
from .errors import AccessError, CowmemError, DescriptorsClosedError
from .regions import RegionSpec, Regions
from ._linux import PAGE_SHIFT, PAGE_SIZE, PFN_MASK


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
    ``swapped_bytes`` are pages
    swapped out in one snapshot whose entry changed between the two: swap
    hides whether they were copied, so they count as neither.

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
    return regions if isinstance(regions, Regions) else Regions(regions)


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
        self._facts = _linux.pagemap_facts()
        self.cross_checks = bool(cross_checks)
        # Located before the fork (in a helper of its own, see Regions):
        # walking a container in the child would write the very reference
        # counts being watched.
        self._regions = located(regions)
        self._region_pages = self._regions.pages
        # Last, so that the maps it reads are those the child inherits.  Its
        # buffers are never among the mappings measured.
        self._buffers = _prepare(len(self._region_pages))
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
        snaps, counters = self._snaps, self._counters
        if prepare is not None:
            _call_outside(prepare, "prepare")
        # Everything between the fork and the baseline may copy a page the
        # access would have copied: only reads into memory prepared by the
        # parent, and no new int (see docs/method.md).
        snaps.attach()
        counters.attach(self.cross_checks)
        snaps.warm_up()
        # The counters read smaps_rollup (with cross-checks), a page-table
        # walk as long as a snapshot: outside the snapshots, so that the
        # pages they touch are not counted.
        counters.read(0)
        snaps.take(0)
        t0 = time.perf_counter_ns()
        try:
            access()
        except BaseException as exc:
            failure: Optional[AccessError] = _access_error(exc)
        else:
            t1 = time.perf_counter_ns()
            try:
                snaps.take(1)
                counters.read(1)
            except OSError:
                self._check_descriptors()
                raise
            # Nothing below is measured: it may allocate freely.
            self._check_descriptors()
            self._findings.store(self._compare(), t1 - t0)
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

    def _compare(self) -> "_Found":
        snaps, facts = self._snaps, self._facts
        before, after = snaps.entries
        diff = compare(before, after, facts.zero_frame if facts.frames_readable else None,
                       snaps.changed_positions())
        unobserved = [0] * len(self._region_pages)
        if self._region_pages:
            blind = snaps.page_numbers(exclusive_positions(before))
            unobserved = [_common(own, blind) for own in self._region_pages.values()]
        fresh_new = 0
        if _linux.private_writable_now() != self._buffers.planned_for:
            # Memory mapped since the parent read its maps has no baseline.
            known = [(m.start, m.stop) for m in self._targets] + _linux.own_ranges()
            fresh_new = fresh_in_new_mappings(sorted(known), facts)
        return _Found(snaps.page_numbers(diff.copied), diff.fresh + fresh_new, diff.swapped, unobserved)

    def report(self) -> ForkReport:
        """The report of the completed run (bytes, pages of 4 KiB)."""
        if self._findings is None:
            raise CowmemError("no measurement to report: this ForkMeter was closed")
        found, access_ns = self._findings.load()
        copied = found.copied
        by_label: Dict[str, int] = {}
        if copied.size:
            # numpy's methods, not its Python-level functions: this runs
            # after each fork, when each page first written costs a fault.
            starts = np.array([m.start >> PAGE_SHIFT for m in self._targets], np.uint64)
            counts = np.bincount(starts.searchsorted(copied, side="right") - 1, minlength=len(starts))
            for index in counts.nonzero()[0].tolist():
                label = self._targets[index].label
                by_label[label] = by_label.get(label, 0) + int(counts[index]) * PAGE_SIZE
        minflt_before, uss_before, dirty_before = self._counters.parse(0)
        minflt_after, uss_after, dirty_after = self._counters.parse(1)
        return ForkReport(
            copied_bytes=int(copied.size) * PAGE_SIZE,
            fresh_bytes=found.fresh * PAGE_SIZE,
            regions=_per_region(self._region_pages, copied),
            mappings=types.MappingProxyType(dict(sorted(by_label.items(), key=lambda kv: -kv[1]))),
            copied_ranges=_runs(copied),
            unobserved=types.MappingProxyType({name: count * PAGE_SIZE for name, count
                                               in zip(self._region_pages, found.unobserved)}),
            minor_faults=minflt_after - minflt_before,
            uss_delta_bytes=None if uss_before is None else uss_after - uss_before,
            private_dirty_delta_bytes=None if dirty_before is None else dirty_after - dirty_before,
            access_seconds=access_ns / 1e9,
            pfn_guard=self._facts.frames_readable,
            swapped_bytes=found.swapped * PAGE_SIZE,
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


def _prepare(regions: int) -> "_Buffers":
    """Every buffer the child writes, with snapshots planned for the parent's private writable mappings.

    Making the buffers can add a mapping (a new allocator arena) after the
    maps were read: read again until they hold still, or a page present at
    the fork would have no baseline.  The mappings so found are kept
    (``planned_for``): the child compares its own with them after the
    access, to see whether it mapped memory the snapshots do not cover,
    and the next ForkMeter, finding them unchanged, reuses the plans and
    makes nothing that a second reading would have to look for.
    """
    for _ in range(5):
        now = _linux.private_writable_now()
        buffers = _spare_planned_for(now, regions)
        if buffers is not None:
            return buffers
        text = _linux.read_maps_text()  # for the mappings' names
        targets = _linux.subtract_from_maps(_linux.parse_maps(text, private_writable_only=True),
                                            _linux.own_ranges())
        ranges = [(m.start, m.stop) for m in targets]
        buffers = _take_buffers(_linux.PagemapSnapshots.bytes_for(ranges), regions)
        buffers.plan(targets)
        after = _linux.private_writable_now()
        if _linux.subtract_ranges(after, _linux.own_ranges()) == ranges:
            buffers.planned_for = after
            return buffers
        _keep(buffers)
    raise CowmemError("this process's mappings kept changing while cowmem prepared its "
                      "buffers (another thread mapping memory?); try again")


class _Buffers:
    """Everything a measuring child writes: snapshots, counters, findings.

    Kept for the next ForkMeter when closed, with the snapshots' plans
    (one spare set per process): none of it is measured, and reusing it
    spares both mapping anything while the maps are read, which would mean
    reading them again, and planning again for mappings that did not change.
    """

    def __init__(self, snapshot_bytes: int, regions: int) -> None:
        # Room to grow: the same data measured again seldom needs more.
        snapshot_bytes += snapshot_bytes // 4 + (1 << 16)
        self.memory = _linux.UnforkedBuffer(snapshot_bytes)
        self.findings = _Findings(regions + snapshot_bytes // 16)
        self.counters = _linux.ProcCounters()
        self.owner = os.getpid()
        self.targets: List[_linux.Mapping] = []
        self.snaps: Optional[_linux.PagemapSnapshots] = None
        self.planned_for: List[Tuple[int, int]] = []

    def fits(self, snapshot_bytes: int, regions: int) -> bool:
        return self.memory.capacity >= snapshot_bytes and self.findings.capacity >= regions + snapshot_bytes // 16

    def plan(self, targets: List[_linux.Mapping]) -> None:
        """Snapshots of ``targets`` in these buffers."""
        if self.snaps is not None:
            self.snaps.close()
        self.targets = targets
        self.snaps = _linux.PagemapSnapshots([(m.start, m.stop) for m in targets], self.memory.view)
        self.planned_for = []

    def close(self) -> None:
        if self.snaps is not None:
            self.snaps.close()
        self.memory.close()
        self.findings.close()
        self.counters.close()


# At most one set, and only this process's: a set inherited from the
# process this one was forked from is left alone, its shared memory being
# that process's too.
_spare: List[_Buffers] = []


def _spare_planned_for(mappings: List[Tuple[int, int]], regions: int) -> Optional[_Buffers]:
    """The spare set, taken, if its plans are for ``mappings`` and it has room for ``regions``."""
    if not (_spare and _spare[0].owner == os.getpid() and _spare[0].planned_for == mappings
            and _spare[0].fits(0, regions)):
        return None
    buffers = _spare.pop()
    buffers.findings.reset(regions)
    return buffers


def _take_buffers(snapshot_bytes: int, regions: int) -> _Buffers:
    """The spare set if it fits, else new buffers."""
    buffers = _spare.pop() if _spare and _spare[0].owner == os.getpid() else None
    if buffers is None or not buffers.fits(snapshot_bytes, regions):
        if buffers is not None:
            buffers.close()
        buffers = _Buffers(snapshot_bytes, regions)
    buffers.findings.reset(regions)
    return buffers


def _keep(buffers: _Buffers) -> None:
    """Keep ``buffers`` as the spare, or release them if the spare is larger."""
    if _spare and _spare[0].owner == os.getpid() and _spare[0].memory.capacity >= buffers.memory.capacity:
        buffers.close()
        return
    while _spare:
        spare = _spare.pop()
        if spare.owner == os.getpid():
            spare.close()
    _spare.append(buffers)


class _Found(NamedTuple):
    copied: np.ndarray          # page numbers of the copied pages, sorted
    fresh: int                  # pages
    swapped: int                # pages
    unobserved: Sequence[int]   # pages, one count per region


class _Findings:
    """What the child found, left in shared memory for whoever builds the report.

    Counts first, one count per region next, then the copied pages'
    numbers (``capacity`` words for both).  Mapped but not populated: only
    the pages the child writes are ever faulted in, a few for most accesses.
    """

    _DONE, _FRESH, _SWAPPED, _ACCESS_NS, _COPIED = range(5)
    _HEAD = 5

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buffer = _linux.shared_buffer((self._HEAD + capacity) * 8, populate=False)
        # Counts through a plain view: numpy's first calls in a child cost more.
        self._words = memoryview(self._buffer).cast("q")
        self._regions = 0

    def reset(self, regions: int) -> None:
        """Ready for a run measuring ``regions`` regions."""
        self._regions = regions
        if self._words[self._DONE]:
            self._words[self._DONE] = 0

    def store(self, found: _Found, access_ns: int) -> None:
        words, first = self._words, self._HEAD + self._regions
        if found.copied.size:
            np.frombuffer(self._buffer, np.int64, found.copied.size, first * 8)[:] = found.copied.view(np.int64)
        for k, count in enumerate(found.unobserved):
            words[self._HEAD + k] = count
        words[self._FRESH], words[self._SWAPPED] = found.fresh, found.swapped
        words[self._ACCESS_NS], words[self._COPIED] = access_ns, found.copied.size
        words[self._DONE] = 1

    def load(self) -> Tuple[_Found, int]:
        """(what was found, access nanoseconds); raises CowmemError before a completed run."""
        words, first = self._words, self._HEAD + self._regions
        if words[self._DONE] != 1:
            raise CowmemError("no measurement to report: ForkMeter.run() has not completed")
        copied = np.frombuffer(self._buffer, np.uint64, words[self._COPIED], first * 8).copy()
        found = _Found(copied, words[self._FRESH], words[self._SWAPPED],
                       [words[self._HEAD + k] for k in range(self._regions)])
        return found, words[self._ACCESS_NS]

    def close(self) -> None:
        self._words.release()
        _linux.release(self._buffer)


def _per_region(region_pages: Mapping[str, np.ndarray], pages: np.ndarray) -> Mapping[str, int]:
    """Bytes of ``pages`` (sorted, unique) inside each region's own (sorted, unique) pages."""
    return types.MappingProxyType({name: _common(own, pages) * PAGE_SIZE for name, own in region_pages.items()})


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """How many values two sorted unique arrays share: the smaller looked up in the larger."""
    small, large = (a, b) if a.size <= b.size else (b, a)
    if not small.size:
        return 0
    at = large.searchsorted(small).clip(max=large.size - 1)
    return int(np.count_nonzero(large[at] == small))


def _runs(pages: np.ndarray) -> Tuple[Tuple[int, int], ...]:
    """Merge sorted page numbers into byte ranges ``(start, stop)``."""
    if pages.size == 0:
        return ()
    breaks = ((pages[1:] - pages[:-1]) != 1).nonzero()[0]
    firsts = np.concatenate((pages[:1], pages[breaks + 1])).tolist()
    lasts = np.concatenate((pages[breaks], pages[-1:])).tolist()
    return tuple((f << PAGE_SHIFT, (l + 1) << PAGE_SHIFT) for f, l in zip(firsts, lasts))


def copied_page_numbers(report: ForkReport) -> np.ndarray:
    """The page numbers (address >> 12) of every page the report counts as copied."""
    parts = [np.arange(start >> PAGE_SHIFT, stop >> PAGE_SHIFT, dtype=np.uint64)
             for start, stop in report.copied_ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


_PRESENT, _SWAPPED = _linux.FLAG_PRESENT, _linux.FLAG_SWAPPED
_FILE, _EXCLUSIVE = _linux.FLAG_FILE_OR_SHARED, _linux.FLAG_EXCLUSIVE
_KIND = _PRESENT | _FILE | _EXCLUSIVE
_NEITHER, _COPIED, _FRESH, _HIDDEN_BY_SWAP = range(4)


def _classes() -> np.ndarray:
    """What a change of a page's flags means, for every pair: index ``before * 256 + after``.

    Copied: present, anonymous and shared before; exclusive after.  Fresh:
    exclusive after and not present (nor swapped out) before, or a file
    page before (a private file page's first write copies the page cache,
    not the parent).  Hidden by swap: swapped out after, or swapped out
    before and exclusive after: whether a copy happened cannot be seen.
    """
    before = np.repeat(np.arange(256, dtype=np.uint8), 256)
    after = np.tile(np.arange(256, dtype=np.uint8), 256)
    mine_after = (after & _KIND) == (_PRESENT | _EXCLUSIVE)
    classes = np.full(65536, _NEITHER, np.uint8)
    classes[mine_after & ((before & _KIND) == _PRESENT)] = _COPIED
    classes[mine_after & ((before & (_PRESENT | _FILE)) != _PRESENT) & ((before & _SWAPPED) == 0)] = _FRESH
    classes[((after & _SWAPPED) != 0) | (mine_after & ((before & _SWAPPED) != 0))] = _HIDDEN_BY_SWAP
    return classes


# Made here, in the parent: a child only reads it.
_CLASSES = _classes()


class Diff(NamedTuple):
    """What happened between two snapshots of the same pages (positions in the snapshots)."""

    copied: np.ndarray   # positions of the copied pages, sorted
    fresh: int           # pages populated without a copy
    swapped: int         # pages swapped out in a snapshot, whose entry changed


def compare(before: np.ndarray, after: np.ndarray, zero_frame: Optional[int],
            changed: Optional[np.ndarray] = None) -> Diff:
    """Classify every page whose entry changed between two snapshots of the same pages.

    By the change of its flags (``_classes``); and where frame numbers are
    readable (``zero_frame`` not None), a copied page must also have a new
    frame (the parent's write after the fork leaves the child's in place)
    and not have been the zero page (a first write to it is fresh).  A page
    whose entry did not change is none of these, so only those that
    changed (``changed``: their positions, found here if not given) are
    looked at: a few pages for most accesses.
    """
    if changed is None:
        changed = (before != after).nonzero()[0]
    if not changed.size:
        return Diff(changed, 0, 0)
    b, a = before[changed], after[changed]
    classes = _CLASSES[((b >> np.uint64(48)) & np.uint64(0xFF00)) | (a >> np.uint64(56))]
    copied = changed[classes == _COPIED]
    fresh = int(np.count_nonzero(classes == _FRESH))
    if zero_frame is not None and copied.size:
        frame_before = before[copied] & PFN_MASK
        was_zero = frame_before == np.uint64(zero_frame) if zero_frame else np.zeros(copied.size, bool)
        fresh += int(np.count_nonzero(was_zero))
        copied = copied[~was_zero & (frame_before != (after[copied] & PFN_MASK))]
    return Diff(copied, fresh, int(np.count_nonzero(classes == _HIDDEN_BY_SWAP)))


def exclusive_positions(entries: np.ndarray) -> np.ndarray:
    """Positions of the present, anonymous, exclusively mapped pages of a snapshot."""
    return ((_linux.flags(entries) & _KIND) == (_PRESENT | _EXCLUSIVE)).nonzero()[0]


def fresh_in_new_mappings(known: Sequence[Tuple[int, int]], facts: _linux.PagemapFacts) -> int:
    """Pages this process holds alone in private writable memory outside ``known`` (sorted ranges).

    Present, anonymous, exclusively mapped, not the zero page: populated by
    this process.  A present page there without the exclusive bit is still
    shared with the parent (mapped by it after the snapshots' ranges were
    read): not fresh.
    """
    new = _linux.subtract_ranges(_linux.private_writable_ranges(_linux.read_maps()), known)
    if not new:
        return 0
    entries = _linux.read_entries(new)
    mine = (_linux.flags(entries) & _KIND) == (_PRESENT | _EXCLUSIVE)
    if facts.frames_readable and facts.zero_frame:
        mine &= (entries & PFN_MASK) != np.uint64(facts.zero_frame)
    return int(np.count_nonzero(mine))
