"""Everything a measuring child writes, made by the parent before the fork, and
what the child found, left there for whoever builds the report.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._linux.buffers import UnforkedBuffer, own_ranges, release, shared_buffer
from ._linux.maps import Mapping, parse_maps, private_writable_now, read_maps_text, subtract_from_maps
from ._linux.ranges import subtract_ranges
from ._linux.snapshots import PagemapSnapshots, ProcCounters
from .errors import CowmemError


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
        now = private_writable_now()
        buffers = _spare_planned_for(now, regions)
        if buffers is not None:
            return buffers
        text = read_maps_text()  # for the mappings' names
        targets = subtract_from_maps(parse_maps(text, private_writable_only=True),
                                     own_ranges())
        ranges = [(m.start, m.stop) for m in targets]
        buffers = _take_buffers(PagemapSnapshots.bytes_for(ranges), regions)
        buffers.plan(targets)
        after = private_writable_now()
        if subtract_ranges(after, own_ranges()) == ranges:
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
        self.memory = UnforkedBuffer(snapshot_bytes)
        self.findings = _Findings(regions + snapshot_bytes // 16)
        self.counters = ProcCounters()
        self.owner = os.getpid()
        self.targets: List[Mapping] = []
        self.snaps: Optional[PagemapSnapshots] = None
        self.planned_for: List[Tuple[int, int]] = []

    def fits(self, snapshot_bytes: int, regions: int) -> bool:
        return self.memory.capacity >= snapshot_bytes and self.findings.capacity >= regions + snapshot_bytes // 16

    def plan(self, targets: List[Mapping]) -> None:
        """Snapshots of ``targets`` in these buffers."""
        if self.snaps is not None:
            self.snaps.close()
        self.targets = targets
        self.snaps = PagemapSnapshots([(m.start, m.stop) for m in targets], self.memory.view)
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
        self._buffer = shared_buffer((self._HEAD + capacity) * 8, populate=False)
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
        release(self._buffer)
