"""Everything a measuring child writes, made by the parent before the fork, and
what the child found, left there for whoever builds the report.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional, Tuple

import numpy as np

from ._linux.buffers import UnforkedBuffer, own_ranges, release, shared_buffer
from ._linux.maps import (Mapping, parse_maps, private_writable_are, private_writable_now, read_maps_text,
                          subtract_from_maps)
from ._linux.pagemap import PAGE_SHIFT
from ._linux.ranges import subtract_ranges
from ._linux.snapshots import PagemapSnapshots, ProcCounters
from .errors import CowmemError


def _prepare() -> "_Buffers":
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
        buffers = _spare_still_planned()
        if buffers is not None:
            return buffers
        text = read_maps_text()  # for the mappings' names
        targets = subtract_from_maps(parse_maps(text, private_writable_only=True),
                                     own_ranges())
        ranges = [(m.start, m.stop) for m in targets]
        buffers = _take_buffers(PagemapSnapshots.bytes_for(ranges))
        buffers.plan(targets)
        buffers.reset()
        after = private_writable_now()
        if subtract_ranges(after, own_ranges()) == ranges:
            buffers.planned_for = after
            return buffers
        _keep(buffers)
    raise CowmemError("this process's mappings kept changing while cowmem prepared its "
                      "buffers (another thread mapping memory?); try again")


class _Buffers:
    """Everything a measuring child writes: snapshots, what changed in them, counters, findings.

    Kept for the next ForkMeter when closed, with the snapshots' plans
    (one spare set per process): none of it is measured, and reusing it
    spares both mapping anything while the maps are read, which would mean
    reading them again, and planning again for mappings that did not change.
    """

    def __init__(self, snapshot_bytes: int) -> None:
        # Room to grow: the same data measured again seldom needs more.
        snapshot_bytes += snapshot_bytes // 4 + (1 << 16)
        self.memory = UnforkedBuffer(snapshot_bytes)
        # Mapped but not populated: only what the child keeps is ever faulted in.
        self.kept = shared_buffer(PagemapSnapshots.kept_bytes(self.memory.capacity), populate=False)
        self.findings = _Findings()
        self.counters = ProcCounters()
        self.owner = os.getpid()
        self.targets: List[Mapping] = []
        self.target_pages = np.zeros(0, np.uint64)
        self.snaps: Optional[PagemapSnapshots] = None
        self.planned_for: List[Tuple[int, int]] = []

    def fits(self, snapshot_bytes: int) -> bool:
        return self.memory.capacity >= snapshot_bytes

    def plan(self, targets: List[Mapping]) -> None:
        """Snapshots of ``targets`` in these buffers."""
        if self.snaps is not None:
            self.snaps.close()
        self.targets = targets
        # Each target's first page, for the report to find the mapping of a copied page in.
        self.target_pages = np.array([m.start >> PAGE_SHIFT for m in targets], np.uint64)
        self.snaps = PagemapSnapshots([(m.start, m.stop) for m in targets], self.memory.view, memoryview(self.kept))
        self.planned_for = []

    def reset(self) -> None:
        """Ready for a run: nothing found, nothing kept."""
        self.findings.reset()
        if self.snaps is not None:
            self.snaps.reset()

    def close(self) -> None:
        if self.snaps is not None:
            self.snaps.close()
        self.memory.close()
        release(self.kept)
        self.findings.close()
        self.counters.close()


# At most one set, and only this process's: a set inherited from the
# process this one was forked from is left alone, its shared memory being
# that process's too.
_spare: List[_Buffers] = []


def _spare_still_planned() -> Optional[_Buffers]:
    """The spare set, taken and reset, if its plans are for this process's mappings as they are now."""
    if not (_spare and _spare[0].owner == os.getpid() and private_writable_are(_spare[0].planned_for)):
        return None
    buffers = _spare.pop()
    buffers.reset()
    return buffers


def _take_buffers(snapshot_bytes: int) -> _Buffers:
    """The spare set if it fits, else new buffers (to be planned, then reset)."""
    buffers = _spare.pop() if _spare and _spare[0].owner == os.getpid() else None
    if buffers is None or not buffers.fits(snapshot_bytes):
        if buffers is not None:
            buffers.close()
        buffers = _Buffers(snapshot_bytes)
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


class _Findings:
    """What the child found besides the snapshots, left in shared memory for whoever builds the report.

    Mapped but not populated: the child faults in its one page.
    """

    _DONE, _FRESH_NEW = 0, 1

    def __init__(self) -> None:
        self._buffer = shared_buffer(4 * 8, populate=False)
        # Counts through a plain view: numpy's first calls in a child cost more.
        self._words = memoryview(self._buffer).cast("q")
        self.clock = self._words  # where ``stamp`` writes

    def reset(self) -> None:
        """Ready for a run."""
        if self._words[self._DONE]:
            self._words[self._DONE] = 0

    def store(self, fresh_new: int) -> None:
        """In the child: pages fresh in mappings made since the plans; the run is complete."""
        words = self._words
        words[self._FRESH_NEW] = fresh_new
        words[self._DONE] = 1

    def load(self) -> Tuple[int, int]:
        """(fresh pages in new mappings, access nanoseconds); raises CowmemError before a completed run."""
        words = self._words
        if words[self._DONE] != 1:
            raise CowmemError("no measurement to report: ForkMeter.run() has not completed")
        return words[self._FRESH_NEW], words[ENDED] - words[BEGAN]

    def close(self) -> None:
        self.clock = None
        self._words.release()
        release(self._buffer)


# The clock before and after the access (ns), in a _Findings' words.
BEGAN, ENDED = 2, 3


def stamp(clock: memoryview, which: int) -> None:
    """In the child: the clock (``_Findings.clock``) into ``BEGAN`` or ``ENDED``.

    Stored, not returned: the int the clock makes is freed here, so that
    each stamp reuses the same memory, which a stamp before the baseline
    has made the child's (a new int on a page still shared would be a copy
    counted as the access's).  Looks up no attribute.
    """
    clock[which] = _clock()


_clock = time.perf_counter_ns
