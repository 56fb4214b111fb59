"""What a measuring child reads before and after the access, into memory the parent made:
its pagemap entries (``PagemapSnapshots``) and its counters (``ProcCounters``).
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from . import pagemap
from .buffers import populate, release, shared_buffer
from .pagemap import ENTRY_SIZE, PAGE_SHIFT, PAGE_SIZE, _read_rest
from .ranges import Range, _merge_adjacent

# No page numbers, no positions: shared, never written.
NO_PAGES = np.zeros(0, np.uint64)
NO_PAGES.flags.writeable = False
NO_POSITIONS = np.zeros(0, np.intp)
NO_POSITIONS.flags.writeable = False


class PagemapSnapshots:
    """Two snapshots of the pagemap entries of fixed address ranges, taken in a forked child.

    The parent builds everything before the fork (the read plans, into
    ``view``, ``bytes_for(ranges)`` bytes of an UnforkedBuffer), so that
    the child allocates nothing before its baseline: each write it made
    there could copy a page the access would have copied.  Only the child
    sees the snapshots; it compares them itself.  ``warm_up()`` runs the
    same code path on one entry, to dirty the interpreter's own pages
    before the baseline.
    """

    def __init__(self, ranges: Sequence[Range], view: memoryview, path: Optional[str] = None) -> None:
        self.path = path or pagemap.PAGEMAP_PATH
        self.ranges = _merge_adjacent([(start, stop) for start, stop in ranges if stop > start])
        self.page_starts = np.array([start >> PAGE_SHIFT for start, _ in self.ranges], np.uint64)
        counts = [(stop - start) >> PAGE_SHIFT for start, stop in self.ranges]
        self.offsets = np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int64)
        self.npages = int(self.offsets[-1])
        half = self.npages * ENTRY_SIZE
        views = [view[:half], view[half:2 * half]]
        self.entries = [np.frombuffer(v, np.uint64) for v in views]
        self._addresses = tuple(e.ctypes.data for e in self.entries)
        self._plans = [self._plan(v, counts) for v in views]
        # One range is enough: the loop's objects are the plans', which
        # warm_up touches; what the loop makes is the same for each range.
        self._warm_plan = self._plan(views[1], [1])
        self._fd = -1

    @staticmethod
    def bytes_for(ranges: Sequence[Range]) -> int:
        """The bytes of buffer two snapshots of ``ranges`` take."""
        return 2 * ENTRY_SIZE * sum((stop - start) >> PAGE_SHIFT for start, stop in ranges if stop > start)

    def _plan(self, view: memoryview, counts: Sequence[int]) -> list:
        plan = []
        lo = 0
        for (start, _), count in zip(self.ranges, counts):
            plan.append(((start >> PAGE_SHIFT) * ENTRY_SIZE, [view[lo:lo + count * ENTRY_SIZE]]))
            lo += count * ENTRY_SIZE
        return plan

    def attach(self) -> None:
        """In the child: open its pagemap (``/proc/self`` is resolved at open)."""
        self._fd = os.open(self.path, os.O_RDONLY)

    def warm_up(self) -> None:
        """Touch what the snapshots touch, so that taking them copies nothing.

        The plans are objects the parent made: reading them writes their
        reference counts, which copies their pages in the child.
        """
        for plan in self._plans:
            _touch(plan)
        _read(self._fd, self._warm_plan)

    def take(self, which: int) -> None:
        """Read snapshot ``which`` (0 or 1) into ``entries[which]``."""
        _read(self._fd, self._plans[which])

    # Entries compared at a time by memcmp, looked into by numpy only where they differ.
    _CHUNK = 1 << 13

    def changed_positions(self) -> np.ndarray:
        """Positions whose entries differ between the two snapshots, sorted.

        libc's memcmp finds the chunks that differ, and numpy looks into
        those only: comparing whole snapshots makes a boolean array of
        fresh pages (a fault and a zeroed page per 4 KiB) as large as a
        snapshot's quarter, and numpy's first calls in a forked child copy
        a hundred pages of its own state.
        """
        before, after = self.entries
        parts = []
        for lo in range(0, self.npages, self._CHUNK):
            size = min(self._CHUNK, self.npages - lo)
            if _memcmp(self._addresses[0] + lo * ENTRY_SIZE, self._addresses[1] + lo * ENTRY_SIZE,
                       size * ENTRY_SIZE):
                parts.append((before[lo:lo + size] != after[lo:lo + size]).nonzero()[0] + lo)
        return np.concatenate(parts) if parts else NO_POSITIONS

    def descriptor_intact(self) -> bool:
        """True when the descriptor ``attach`` opened still refers to the pagemap."""
        return _refers_to(self._fd, self.path)

    def page_numbers(self, index: np.ndarray) -> np.ndarray:
        """Virtual page numbers of the given positions in a snapshot."""
        if not index.size:
            return NO_PAGES
        which = self.offsets.searchsorted(index, side="right") - 1
        return self.page_starts[which] + (index - self.offsets[which]).astype(np.uint64)

    def close(self) -> None:
        """Drop the views into the buffer (which stays its owner's); close the child's descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.entries, self._plans, self._warm_plan = [], [], []


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def _refers_to(fd: int, path: str) -> bool:
    """True when ``fd`` is open on the file ``path`` names (checked after the access: allocates)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read(fd: int, plan: list) -> None:
    # One preadv per range into a prebuilt view: the loop allocates nothing
    # but the returned ints.
    for offset, views in plan:
        if os.preadv(fd, views, offset) != len(views[0]):
            _read_rest(fd, offset, views[0])


def _touch(plan: list) -> None:
    for _offset, views in plan:
        # Taking a reference writes the same reference counts preadv will.
        views[0]


class ProcCounters:
    """Raw copies of ``/proc/self/stat`` and ``smaps_rollup``, before and
    after, in shared memory.

    The child only copies bytes (allocating nothing between the
    snapshots); whoever builds the report parses them.
    """

    _SIZE = 1 << 12  # /proc/self/stat and smaps_rollup: under 1 KiB each

    def __init__(self) -> None:
        self._buffer = shared_buffer(4 * self._SIZE + PAGE_SIZE)
        view = memoryview(self._buffer)
        self._views = [[view[k * self._SIZE:(k + 1) * self._SIZE]] for k in range(4)]
        # The lengths of the four copies.
        self._lengths = np.frombuffer(self._buffer, np.int64, 4, 4 * self._SIZE)
        self._paths: Tuple[str, str] = ("/proc/self/stat", "/dev/null")
        self._fds: Tuple[int, int] = (-1, -1)

    def attach(self, cross_checks: bool) -> None:
        """In the child: open the files and map the buffer in."""
        self._paths = ("/proc/self/stat", "/proc/self/smaps_rollup" if cross_checks else "/dev/null")
        self._fds = (os.open(self._paths[0], os.O_RDONLY), os.open(self._paths[1], os.O_RDONLY))
        populate(self._buffer)

    def read(self, which: int) -> None:
        lengths = self._lengths
        lengths[2 * which] = os.preadv(self._fds[0], self._views[2 * which], 0)
        lengths[2 * which + 1] = os.preadv(self._fds[1], self._views[2 * which + 1], 0)

    def descriptors_intact(self) -> bool:
        """True when the descriptors ``attach`` opened still refer to their files."""
        return all(_refers_to(fd, path) for fd, path in zip(self._fds, self._paths))

    def parse(self, which: int) -> Tuple[int, Optional[int], Optional[int]]:
        """(minor faults, USS bytes, Private_Dirty bytes) of reading ``which``;
        None for the last two without cross-checks.

        USS is psutil's: Private_Clean + Private_Dirty + Private_Hugetlb.
        """
        stat = bytes(self._views[2 * which][0][:self._lengths[2 * which]])
        # Fields after the command name, which may contain spaces: minflt is field 10.
        minflt = int(stat[stat.rindex(b")") + 2:].split()[7])
        fields = {}
        rollup = bytes(self._views[2 * which + 1][0][:self._lengths[2 * which + 1]]).decode()
        for line in rollup.splitlines():
            name, _, rest = line.partition(":")
            if name.startswith("Private_"):
                fields[name] = int(rest.split()[0]) * 1024
        if not fields:
            return minflt, None, None
        uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0) + fields.get("Private_Hugetlb", 0)
        return minflt, uss, fields.get("Private_Dirty", 0)

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._fds = (-1, -1)
        self._views, self._lengths = [], None
        release(self._buffer)
