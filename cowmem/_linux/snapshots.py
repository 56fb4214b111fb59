"""What a measuring child reads before and after the access, into memory the parent made:
its pagemap entries and what changed in them (``PagemapSnapshots``), and its
counters (``ProcCounters``).
"""

from __future__ import annotations

import array
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
_SCAN_BYTES = _SCAN * ENTRY_SIZE
# A piece's mark in the kept memory: it changed, and both snapshots of it are kept.
_CHANGED = 1


class PagemapSnapshots:
    """A baseline snapshot of the pagemap entries of fixed address ranges,
    taken in a forked child, and what changed in them by the second reading,
    kept where the parent sees it.

    The parent builds everything before the fork (the read plans, into
    ``view``, ``bytes_for(ranges)`` bytes of an UnforkedBuffer, and
    ``kept``, ``kept_bytes(bytes_for(ranges))`` bytes of shared memory), so
    that the child allocates nothing before its baseline: each write it
    made there could copy a page the access would have copied.
    ``warm_up()`` runs the same code paths on one entry, to dirty the
    interpreter's own pages before the baseline.

    The second reading is never kept whole: it is read a window of
    ``_WINDOW`` bytes at a time into scratch memory, and each piece (a page
    of entries) that differs from the baseline is copied, both readings of
    it, into ``kept``, with memcmp and memmove alone (``keep_changes``).
    Whoever builds the report looks into those only (``changed_positions``,
    ``kept_entries``), in the child or in the parent.  So the child runs no
    numpy (its first calls in a forked child copy a hundred pages of
    numpy's own state), and the second reading costs no fresh memory and
    is compared while it is still in the cache.
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
        size, window = self.npages * ENTRY_SIZE, _window_bytes(self.npages)
        self.baseline = np.frombuffer(view, np.uint64, self.npages)
        base = np.frombuffer(view, np.uint8, 1).ctypes.data
        scratch, spare = view[size:size + window], view[size + window:size + window + _SPARE]
        pieces = -(-self.npages // PIECE)
        self.kept_entries = [np.frombuffer(kept, np.uint64, pieces * PIECE, k * pieces * PAGE_SIZE) for k in (0, 1)]
        kept_before, kept_after = (e.ctypes.data for e in self.kept_entries)
        self._marks = kept[2 * pieces * PAGE_SIZE:2 * pieces * PAGE_SIZE + pieces]
        self._marks_address = kept_before + 2 * pieces * PAGE_SIZE
        self._baseline_plan = _plan(self.ranges, view[:size], 0, size)
        self._keep_baseline = (kept_before, base, size)
        # What keep_changes reads and where it keeps what changed; and the
        # same for warm_up: one entry, compared with a spare word that
        # always differs from it, so that every branch runs, kept in spare
        # words.
        spare_base = base + size + window
        starts = range(0, size, window)
        self._streams = (
            _stream(base + size, [(_plan(self.ranges, scratch, lo, min(lo + window, size)),
                                   (base + lo, min(window, size - lo), kept_before + lo, kept_after + lo),
                                   self._marks[lo // PAGE_SIZE:]) for lo in starts]),
            _stream(base + size, [(_plan(self.ranges[:1], scratch, 0, ENTRY_SIZE),
                                   (spare_base, ENTRY_SIZE, spare_base + ENTRY_SIZE, spare_base + 2 * ENTRY_SIZE),
                                   spare[3 * ENTRY_SIZE:])]))
        self._spare_word = spare_base
        # The child's pagemap descriptor, in an array: the readings' arguments
        # are made here, in the parent, so that the child makes no new object.
        self._descriptor = array.array("q", [-1])
        self._readings = tuple((self._descriptor, stream) for stream in self._streams)

    @staticmethod
    def bytes_for(ranges: Sequence[Range]) -> int:
        """The bytes of buffer the baseline of ``ranges`` takes, with the scratch for the second reading."""
        npages = sum((stop - start) >> PAGE_SHIFT for start, stop in ranges if stop > start)
        return npages * ENTRY_SIZE + _window_bytes(npages) + _SPARE

    @staticmethod
    def kept_bytes(snapshot_bytes: int) -> int:
        """The bytes of shared memory that keeping the changes takes, for snapshots in ``snapshot_bytes`` of buffer."""
        pieces = -(-(snapshot_bytes // ENTRY_SIZE) // PIECE)
        return 2 * pieces * PAGE_SIZE + pieces

    def reset(self) -> None:
        """In the parent, before a run: nothing kept yet."""
        ctypes.memset(self._marks_address, 0, len(self._marks))

    def attach(self) -> None:
        """In the child: open its pagemap (``/proc/self`` is resolved at open)."""
        self._descriptor[0] = os.open(self.path, os.O_RDONLY)

    def warm_up(self) -> None:
        """Run what the readings run, so that the baseline and the second reading copy nothing.

        The plans are objects the parent made: reading them writes their
        reference counts, which copies their pages in the child.  The
        second reading runs once, on one entry, through every branch.
        """
        _touch(self._baseline_plan)
        plans, _, marks = self._streams[0]
        for w in range(len(plans)):
            _touch(plans[w])
            marks[w]
        _memset(self._spare_word, 0xFF, ENTRY_SIZE)
        keep_changes(self.second_reading(_WARM))

    def take_baseline(self) -> None:
        """Read the baseline into ``baseline``."""
        _read(self._descriptor[0], self._baseline_plan)

    def second_reading(self, stream: int = 0) -> tuple:
        """In the child, after ``attach``: what ``keep_changes`` takes, made before the baseline."""
        return self._readings[stream]

    def keep_baseline(self) -> None:
        """After the second reading, for regions: the whole baseline, kept with the changes."""
        _memmove(*self._keep_baseline)

    def changed_positions(self) -> np.ndarray:
        """Positions whose entries differ between the two readings, sorted (after ``keep_changes``)."""
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
        return _refers_to(self._descriptor[0], self.path)

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
        if self._descriptor[0] >= 0:
            os.close(self._descriptor[0])
            self._descriptor[0] = -1
        self.baseline, self.kept_entries, self._baseline_plan, self._streams, self._readings = NO_ENTRIES, [], [], (), ()
        self._marks.release()


_WARM = 1  # warm_up's stream
NO_ENTRIES = np.zeros(0, np.uint64)
NO_ENTRIES.flags.writeable = False
# The second reading goes through scratch memory this large (entries of
# 32,768 pages): few reads, and the scratch stays in the cache while it is compared.
_WINDOW = 4 * _SCAN * ENTRY_SIZE
# After the scratch: words for warm_up to compare and keep (before, kept
# before, kept after, a mark).
_SPARE = 4 * ENTRY_SIZE


def _window_bytes(npages: int) -> int:
    return min(_WINDOW, max(1, -(-npages // PIECE)) * PAGE_SIZE)


def _plan(ranges: Sequence[Range], view: memoryview, lo: int, hi: int) -> tuple:
    """preadv's file offsets and views for the bytes [lo, hi) of the entries of
    ``ranges`` laid end to end, into ``view`` (which starts at ``lo``).

    The offsets are an array, not ints: an int the parent made may lie on a
    page of the data, which the child would make its own by touching it
    before the baseline (unobserved).  Read from the array, each is a new
    int, freed at once, so that one block of memory serves them all.
    """
    offsets, views, at = array.array("q"), [], 0
    for start, stop in ranges:
        n = ((stop - start) >> PAGE_SHIFT) * ENTRY_SIZE
        first, last = max(lo, at), min(hi, at + n)
        if first < last:
            offsets.append((start >> PAGE_SHIFT) * ENTRY_SIZE + first - at)
            views.append([view[first - lo:last - lo]])
        at += n
    return offsets, views


def _stream(scratch: int, windows: list) -> tuple:
    """What ``keep_changes`` needs: per window a plan into scratch, the marks
    from its first piece on, and (baseline address, bytes, kept-before and
    kept-after addresses), these with the scratch's address and the chunk
    and piece sizes in one array (see ``_plan``: an int constant of the
    module's, made at import, may share a page with the data too)."""
    numbers = array.array("q", [scratch, _SCAN_BYTES, PAGE_SIZE])
    for _, addresses, _ in windows:
        numbers.extend(addresses)
    return [plan for plan, _, _ in windows], numbers, [marks for _, _, marks in windows]


def keep_changes(reading: tuple) -> None:
    """The second reading (``PagemapSnapshots.second_reading``): read each
    window into scratch; keep each piece that differs from the baseline,
    both readings of it.

    Pieces lie on the window's grid, so none straddles two windows.  The
    same code runs in warm_up, on one entry, through every branch: every
    object it touches is the child's before the baseline, and each int it
    makes reuses the memory the warm-up's made and freed.  It looks up no
    attribute (see ``_read``).
    """
    descriptor, (plans, numbers, marks) = reading
    fd, scratch = descriptor[0], numbers[0]
    for w in range(len(plans)):
        _read(fd, plans[w])
        before, n = numbers[3 + 4 * w], numbers[4 + 4 * w]
        if _memcmp(before, scratch, n):
            _keep_pieces(before, scratch, n, numbers[5 + 4 * w], numbers[6 + 4 * w], marks[w],
                         numbers[1], numbers[2])


def _keep_pieces(before: int, scratch: int, n: int, kept_before: int, kept_after: int, marks: memoryview,
                 scan: int, piece: int) -> None:
    """In a window that changed: memcmp's chunks of ``scan`` bytes, then the
    pieces of ``piece`` bytes within the chunks that changed (``marks``
    from the window's first piece on)."""
    for chunk in range(0, n, scan):
        size = min(scan, n - chunk)
        if _memcmp(before + chunk, scratch + chunk, size):
            for at in range(chunk, chunk + size, piece):
                m = min(piece, n - at)
                if _memcmp(before + at, scratch + at, m):
                    _memmove(kept_before + at, before + at, m)
                    _memmove(kept_after + at, scratch + at, m)
                    marks[at // piece] = _CHANGED


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memmove, _memset = ctypes.memmove, ctypes.memset
_preadv = os.preadv


def _refers_to(fd: int, path: str) -> bool:
    """True when ``fd`` is open on the file ``path`` names (checked after the access: allocates)."""
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return opened.st_ino == named.st_ino and opened.st_dev == named.st_dev


def _read(fd: int, plan: tuple) -> None:
    # One preadv per range into a prebuilt view.  Names are globals and
    # locals only: an attribute lookup that misses the interpreter's type
    # cache (the access may have evicted it) writes the cache and the type's
    # MRO tuple, pages that a reading in progress would count.
    offsets, views = plan
    for i in range(len(views)):
        into = views[i]
        if _preadv(fd, into, offsets[i]) != len(into[0]):
            _read_rest(fd, offsets[i], into[0])


def _touch(plan: tuple) -> None:
    # Taking references writes the same reference counts _read and preadv will.
    offsets, views = plan
    for into in views:
        into[0]


def read_counters(reading: tuple) -> None:
    """Copy the counters (``ProcCounters.reading``), looking up no attribute (see ``_read``)."""
    # No loop: an iterator is an object made, maybe on a page of the data, before the baseline.
    descriptors, views, lengths, at = reading
    lengths[at] = _preadv(descriptors[0], views[0], 0)
    if descriptors[1] >= 0:
        lengths[at + 1] = _preadv(descriptors[1], views[1], 0)


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
        # The child's descriptors (-1: not open) and each reading's arguments,
        # made here, in the parent, so that the child makes no new object.
        self._descriptors = array.array("q", [-1, -1])
        self._readings = tuple((self._descriptors, self._views[2 * k:2 * k + 2], self._lengths, 2 * k)
                               for k in (0, 1))

    def attach(self, cross_checks: bool) -> None:
        """In the child: open the files, fault in the pages the first reading
        writes, and make the second reading once.

        The buffer is shared memory, whose page tables fork does not copy: a
        fault taken while reading the first time would count among the
        access's minor faults.  The second reading comes right after the
        access, before the second snapshot, where each object it touched
        for the first time (its views, written by preadv) would be a copy
        counted as the access's: so it is made once now, and its pages are
        faulted in too.
        """
        self._descriptors[0] = os.open(self._PATHS[0], os.O_RDONLY)
        if cross_checks:
            self._descriptors[1] = os.open(self._PATHS[1], os.O_RDONLY)
        self._lengths[0] = 0
        self._views[0][0][0] = 0
        if cross_checks:
            self._views[1][0][0] = 0
        self.read(1)

    def read(self, which: int) -> None:
        """Copy the counters into reading ``which`` (0 or 1)."""
        read_counters(self.reading(which))

    def reading(self, which: int) -> tuple:
        """What ``read_counters`` takes for reading ``which`` (made by the parent)."""
        return self._readings[which]

    def descriptors_intact(self) -> bool:
        """True when the descriptors ``attach`` opened still refer to their files."""
        return all(_refers_to(fd, path) for fd, path in zip(self._descriptors, self._PATHS) if fd >= 0)

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
        for k, fd in enumerate(self._descriptors):
            if fd >= 0:
                os.close(fd)
                self._descriptors[k] = -1
        self._readings, self._views = (), []
        self._lengths.release()
        release(self._buffer)
