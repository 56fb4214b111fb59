"""What a measuring child reads before and after the access, into memory the parent made:
its pagemap entries and what changed in them (``PagemapSnapshots``), and its
counters (``ProcCounters``).
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from . import pagemap
from .buffers import release, shared_buffer
from .page_ranges import PageRanges
from .pagemap import ENTRY_SIZE, PAGE_SHIFT, PAGE_SIZE, _read_rest
from .ranges import Range, _merge_adjacent

# No page numbers, no positions: shared, never written.
NO_PAGES = np.zeros(0, np.uint64)
NO_PAGES.flags.writeable = False
NO_POSITIONS = np.zeros(0, np.intp)
NO_POSITIONS.flags.writeable = False


# A piece is a page of entries: the unit in which the child keeps what changed.
PIECE = PAGE_SIZE // ENTRY_SIZE
# Entries memcmp compares at once before it looks at the pieces within.
_SCAN = 16 * PIECE
# A piece's mark in the kept memory: it changed, and both snapshots of it are kept.
_CHANGED = 1


class PagemapSnapshots:
    """Two snapshots of the pagemap entries of fixed address ranges, taken in a
    forked child, and what changed between them, kept where the parent sees it.

    The parent builds everything before the fork (the read plans, into
    ``view``, ``bytes_for(ranges)`` bytes of an UnforkedBuffer, and
    ``kept``, ``kept_bytes(bytes_for(ranges))`` bytes of shared memory), so
    that the child allocates nothing before its baseline: each write it
    made there could copy a page the access would have copied.
    ``warm_up()`` runs the same code path on one entry, to dirty the
    interpreter's own pages before the baseline.

    After the second snapshot the child copies each piece (a page of
    entries) that changed, both snapshots of it, into ``kept``, with
    memcmp and memmove alone (``keep_changes``); whoever builds the report
    looks into those only (``changed_positions``, ``kept_entries``), in
    the child or in the parent.  So the child runs no numpy: its first
    calls in a forked child copy a hundred pages of numpy's own state, each
    a fault in the child and a page freed at its exit.
    """

    def __init__(self, ranges: Sequence[Range], view: memoryview, kept: memoryview,
                 path: Optional[str] = None) -> None:
        self.path = path or pagemap.PAGEMAP_PATH
        self.ranges = _merge_adjacent([(start, stop) for start, stop in ranges if stop > start])
        self.pages = PageRanges(tuple(start >> PAGE_SHIFT for start, _ in self.ranges),
                                tuple(stop >> PAGE_SHIFT for _, stop in self.ranges), ("",) * len(self.ranges))
        self.pages.page_numbers(NO_POSITIONS)  # its arrays made now, before the fork
        counts = [(stop - start) >> PAGE_SHIFT for start, stop in self.ranges]
        self.npages = sum(counts)
        half = self.npages * ENTRY_SIZE
        views = [view[:half], view[half:2 * half]]
        self.entries = [np.frombuffer(v, np.uint64) for v in views]
        self._addresses = tuple(e.ctypes.data for e in self.entries)
        pieces = -(-self.npages // PIECE)
        self.kept_entries = [np.frombuffer(kept, np.uint64, pieces * PIECE, k * pieces * PAGE_SIZE) for k in (0, 1)]
        self._kept_addresses = tuple(e.ctypes.data for e in self.kept_entries)
        self._marks = kept[2 * pieces * PAGE_SIZE:2 * pieces * PAGE_SIZE + pieces]
        self._marks_address = self._kept_addresses[0] + 2 * pieces * PAGE_SIZE
        self._plans = [self._plan(v, counts) for v in views]
        # One range is enough: the loop's objects are the plans', which
        # warm_up touches; what the loop makes is the same for each range.
        self._warm_plan = self._plan(views[1], [1])
        self._fd = -1

    @staticmethod
    def bytes_for(ranges: Sequence[Range]) -> int:
        """The bytes of buffer two snapshots of ``ranges`` take."""
        return 2 * ENTRY_SIZE * sum((stop - start) >> PAGE_SHIFT for start, stop in ranges if stop > start)

    @staticmethod
    def kept_bytes(snapshot_bytes: int) -> int:
        """The bytes of shared memory that keeping the changes of snapshots of ``snapshot_bytes`` takes."""
        pieces = -(-(snapshot_bytes // (2 * ENTRY_SIZE)) // PIECE)
        return 2 * pieces * PAGE_SIZE + pieces

    def _plan(self, view: memoryview, counts: Sequence[int]) -> list:
        plan = []
        lo = 0
        for (start, _), count in zip(self.ranges, counts):
            plan.append(((start >> PAGE_SHIFT) * ENTRY_SIZE, [view[lo:lo + count * ENTRY_SIZE]]))
            lo += count * ENTRY_SIZE
        return plan

    def reset(self) -> None:
        """In the parent, before a run: nothing kept yet."""
        ctypes.memset(self._marks_address, 0, len(self._marks))

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

    def keep_changes(self, baseline: bool) -> None:
        """In the child, after the second snapshot: keep each piece that
        changed, both snapshots of it, and with ``baseline`` the whole first."""
        before, after = self._addresses
        kept_before, kept_after = self._kept_addresses
        marks, size, piece = self._marks, self.npages * ENTRY_SIZE, PAGE_SIZE
        if baseline:
            _memmove(kept_before, before, size)
        for lo in range(0, size, _SCAN * ENTRY_SIZE):
            hi = min(lo + _SCAN * ENTRY_SIZE, size)
            if not _memcmp(before + lo, after + lo, hi - lo):
                continue
            for at in range(lo, hi, piece):
                n = min(piece, size - at)
                if _memcmp(before + at, after + at, n):
                    _memmove(kept_before + at, before + at, n)
                    _memmove(kept_after + at, after + at, n)
                    marks[at // piece] = _CHANGED

    def changed_positions(self) -> np.ndarray:
        """Positions whose entries differ between the two snapshots, sorted (after ``keep_changes``)."""
        pieces = (np.frombuffer(self._marks, np.uint8) == _CHANGED).nonzero()[0]
        if not pieces.size:
            return NO_POSITIONS
        before, after = (e.reshape(-1, PIECE)[pieces] for e in self.kept_entries)
        rows, columns = (before != after).nonzero()
        positions = pieces[rows] * PIECE + columns
        # The last piece runs past the snapshots: what lies there is no entry.
        return positions[positions < self.npages]

    def descriptor_intact(self) -> bool:
        """True when the descriptor ``attach`` opened still refers to the pagemap."""
        return _refers_to(self._fd, self.path)

    def page_numbers(self, positions: np.ndarray) -> np.ndarray:
        """Virtual page numbers of the given positions in a snapshot."""
        if not positions.size:
            return NO_PAGES
        return self.pages.page_numbers(positions).astype(np.uint64)

    def positions_of(self, pages: np.ndarray) -> np.ndarray:
        """The positions in a snapshot of those of the page numbers ``pages`` it holds."""
        return self.pages.positions_of(pages.astype(np.int64))[0]

    def close(self) -> None:
        """Drop the views into the buffers (which stay their owner's); close the child's descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.entries, self.kept_entries, self._plans, self._warm_plan = [], [], [], []
        self._marks.release()


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memmove = ctypes.memmove


def _refers_to(fd: int, path: str) -> bool:
    """True when ``fd`` is open on the file ``path`` names (checked after the access: allocates)."""
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return opened.st_ino == named.st_ino and opened.st_dev == named.st_dev


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
    """Raw copies of ``/proc/self/stat`` and (with cross-checks) ``smaps_rollup``,
    before and after, in shared memory.

    The child only copies bytes (allocating nothing between the
    snapshots); whoever builds the report parses them.
    """

    _SIZE = 1 << 12  # /proc/self/stat and smaps_rollup: under 1 KiB each
    _PATHS = ("/proc/self/stat", "/proc/self/smaps_rollup")

    def __init__(self) -> None:
        self._buffer = shared_buffer(4 * self._SIZE + PAGE_SIZE)
        view = memoryview(self._buffer)
        self._views = [[view[k * self._SIZE:(k + 1) * self._SIZE]] for k in range(4)]
        # The lengths of the four copies, through a plain view: numpy's first calls in a child cost more.
        self._lengths = view[4 * self._SIZE:4 * self._SIZE + 4 * 8].cast("q")
        self._lengths[1] = self._lengths[3] = 0
        self._fds: Tuple[int, ...] = ()

    def attach(self, cross_checks: bool) -> None:
        """In the child: open the files, and fault in the pages the first reading writes.

        The buffer is shared memory, whose page tables fork does not copy: a
        fault taken while reading the first time would count among the
        access's minor faults.  Those of the second reading come after the
        file's text is made, and are not in it.
        """
        self._fds = tuple(os.open(path, os.O_RDONLY) for path in self._PATHS[:2 if cross_checks else 1])
        self._lengths[0] = 0
        self._views[0][0][0] = 0
        if cross_checks:
            self._views[1][0][0] = 0

    def read(self, which: int) -> None:
        # No loop: an iterator is an object made, maybe on a page of the data, before the baseline.
        lengths, views, fds = self._lengths, self._views, self._fds
        lengths[2 * which] = os.preadv(fds[0], views[2 * which], 0)
        if len(fds) > 1:
            lengths[2 * which + 1] = os.preadv(fds[1], views[2 * which + 1], 0)

    def descriptors_intact(self) -> bool:
        """True when the descriptors ``attach`` opened still refer to their files."""
        return all(_refers_to(fd, path) for fd, path in zip(self._fds, self._PATHS))

    def parse(self, which: int) -> Tuple[int, Optional[int], Optional[int]]:
        """(minor faults, USS bytes, Private_Dirty bytes) of reading ``which``;
        None for the last two without cross-checks.

        USS is psutil's: Private_Clean + Private_Dirty + Private_Hugetlb.
        """
        stat = bytes(self._views[2 * which][0][:self._lengths[2 * which]])
        # Fields after the command name, which may contain spaces: minflt is field 10.
        minflt = int(stat[stat.rindex(b")") + 2:].split()[7])
        if not self._lengths[2 * which + 1]:
            return minflt, None, None
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
            os.close(fd)
        self._fds = ()
        self._lengths.release()
        self._views = []
        release(self._buffer)
