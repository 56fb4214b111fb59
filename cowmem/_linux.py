"""Linux's per-process memory state: the one platform layer of cowmem.

Everything cowmem reads from ``/proc`` is read here: ``maps`` (the
mappings), ``pagemap`` (one 64-bit entry per virtual page), ``stat`` and
``smaps_rollup`` (the counters), with one encoding of the pagemap bits.
The bits used (the kernel's Documentation/admin-guide/mm/pagemap.rst):

* 63 present, 62 swapped, 61 file-page or shared-anonymous,
* 56 exclusively mapped (Linux 4.2+): a present private page without it is
  still shared with another process, copy-on-write,
* 0-54 the page frame number (PFN), readable with CAP_SYS_ADMIN only (it
  reads as 0 otherwise).

Every flag bit lives in an entry's top byte, so comparisons of many entries
work on that byte alone (``flags()``, ``FLAG_*``).
"""

from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import CowmemError, UnsupportedPlatformError

PAGE_SIZE: int = mmap.PAGESIZE
PAGE_SHIFT: int = PAGE_SIZE.bit_length() - 1
ENTRY_SIZE = 8

MAPS_PATH = "/proc/self/maps"
PAGEMAP_PATH = "/proc/self/pagemap"

PRESENT_BIT, SWAPPED_BIT, FILE_OR_SHARED_BIT, EXCLUSIVE_BIT = 63, 62, 61, 56
PRESENT = np.uint64(1 << PRESENT_BIT)
SWAPPED = np.uint64(1 << SWAPPED_BIT)
FILE_OR_SHARED = np.uint64(1 << FILE_OR_SHARED_BIT)
EXCLUSIVE = np.uint64(1 << EXCLUSIVE_BIT)
PFN_MASK = np.uint64((1 << 55) - 1)

# The same bits within the top byte of an entry, as flags() returns it.
_TOP = 56
FLAG_PRESENT = 1 << (PRESENT_BIT - _TOP)
FLAG_SWAPPED = 1 << (SWAPPED_BIT - _TOP)
FLAG_FILE_OR_SHARED = 1 << (FILE_OR_SHARED_BIT - _TOP)
FLAG_EXCLUSIVE = 1 << (EXCLUSIVE_BIT - _TOP)

# Linux's values; Python's mmap module lacks the constants (MAP_POPULATE
# before 3.10, MADV_POPULATE_WRITE in every version so far).
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
_MADV_POPULATE_WRITE = 23

Range = Tuple[int, int]


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/self/maps``: ``[start, stop)`` in bytes."""

    start: int
    stop: int
    perms: str
    label: str

    @property
    def private_writable(self) -> bool:
        """Writable and private: the only kind of mapping fork shares copy-on-write."""
        return self.perms[1] == "w" and self.perms[3] == "p"


def read_maps(path: str = MAPS_PATH) -> List[Mapping]:
    """The calling process's mappings, in address order."""
    with open(path) as f:
        lines = f.read().splitlines()
    maps = []
    for line in lines:
        # "start-stop perms offset dev inode [name]"; the name may hold spaces.
        fields = line.split(None, 5)
        start, _, stop = fields[0].partition("-")
        maps.append(Mapping(int(start, 16), int(stop, 16), fields[1],
                            fields[5] if len(fields) > 5 else "[anon]"))
    return maps


def private_writable_ranges(maps: Iterable[Mapping]) -> List[Range]:
    """The ``[start, stop)`` ranges of the private writable mappings."""
    return [(m.start, m.stop) for m in maps if m.private_writable]


def check_pagemap(path: Optional[str] = None) -> None:
    """Raise UnsupportedPlatformError unless ``path`` gives pagemap entries."""
    path = path or PAGEMAP_PATH
    if not hasattr(os, "fork"):
        raise UnsupportedPlatformError("this platform has no os.fork(): cowmem measures forked children")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UnsupportedPlatformError(
            f"cannot open {path} ({exc.strerror}): cowmem needs Linux's per-page "
            "memory state to count copied pages, and will not guess") from None
    try:
        # Presence and the exclusive bit are checked on the real snapshots.
        if len(os.pread(fd, ENTRY_SIZE, (id(fd) >> PAGE_SHIFT) * ENTRY_SIZE)) != ENTRY_SIZE:
            raise UnsupportedPlatformError(f"{path} returned no entry for a mapped page")
    finally:
        os.close(fd)


class PagemapSnapshots:
    """Two snapshots of the pagemap entries of fixed address ranges.

    Made in the parent before the fork, so that the child does as little as
    possible before its baseline: every write the child makes before the
    baseline may copy a page the access would have copied.  The buffers are
    shared memory (``MAP_SHARED``, populated): the child writes its snapshots
    straight into them, the parent reads them in place, and reading a
    snapshot allocates nothing.  ``warm_up()`` runs the same code path on one
    entry per range, to dirty the interpreter's own pages before the baseline.
    """

    def __init__(self, ranges: Sequence[Range], path: Optional[str] = None) -> None:
        self.path = path or PAGEMAP_PATH
        self.ranges = [(start, stop) for start, stop in ranges if stop > start]
        self.page_starts = np.array([start >> PAGE_SHIFT for start, _ in self.ranges], np.uint64)
        counts = [(stop - start) >> PAGE_SHIFT for start, stop in self.ranges]
        self.offsets = np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int64)
        self.npages = int(self.offsets[-1])
        self._maps = [shared_buffer(max(self.npages, 1) * ENTRY_SIZE) for _ in range(2)]
        self._warm = shared_buffer(max(len(self.ranges), 1) * ENTRY_SIZE)
        self.entries = [np.frombuffer(m, np.uint64)[:self.npages] for m in self._maps]
        self._plans = [self._plan(memoryview(m), counts) for m in self._maps]
        self._warm_plan = self._plan(memoryview(self._warm), [1] * len(self.ranges))
        self._fd = -1

    def _plan(self, view: memoryview, counts: Sequence[int]) -> list:
        plan = []
        lo = 0
        for (start, _), count in zip(self.ranges, counts):
            plan.append(((start >> PAGE_SHIFT) * ENTRY_SIZE, [view[lo:lo + count * ENTRY_SIZE]]))
            lo += count * ENTRY_SIZE
        return plan

    def attach(self) -> None:
        """Open the calling process's pagemap (``/proc/self`` is resolved at open)
        and map the buffers in."""
        self._fd = os.open(self.path, os.O_RDONLY)
        populate(*self._maps, self._warm)

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

    def page_numbers(self, index: np.ndarray) -> np.ndarray:
        """Virtual page numbers of the given positions in a snapshot."""
        which = np.searchsorted(self.offsets, index, side="right") - 1
        return self.page_starts[which] + (index - self.offsets[which]).astype(np.uint64)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.entries, self._plans, self._warm_plan = [], [], []
        release(*self._maps, self._warm)


def release(*buffers: mmap.mmap) -> None:
    """Unmap buffers now, or, where arrays still view them (a traceback
    being raised through), when the last view goes."""
    for buffer in buffers:
        try:
            buffer.close()
        except BufferError:
            pass


def shared_buffer(size: int) -> mmap.mmap:
    """Populated shared anonymous memory: a child writes it, the parent reads it."""
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | _MAP_POPULATE)


def populate(*buffers: mmap.mmap) -> None:
    """Map shared buffers into a forked child's page tables now.

    fork() does not copy the page tables of shared memory, so a child's
    first touch of each buffer page faults; doing it up front keeps those
    faults out of the access's count.  Linux 5.14+; older kernels fault later.
    """
    for buffer in buffers:
        try:
            buffer.madvise(_MADV_POPULATE_WRITE)
        except (OSError, AttributeError):
            return


def buffer_range(buffer: mmap.mmap) -> Range:
    """The address range of an mmap object."""
    addr = np.frombuffer(buffer, np.uint8).ctypes.data
    return addr, addr + len(buffer)


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


def _read_rest(fd: int, offset: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read from pagemap at offset {offset + done}")
        done += got


def read_entries(ranges: Sequence[Range], path: Optional[str] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """Pagemap entries of ``ranges`` concatenated, read once.

    ``path`` may name another process's pagemap (``/proc/PID/pagemap``):
    reading it needs ptrace access to that process, and its frame numbers
    CAP_SYS_ADMIN.  With ``out`` (a uint64 array at least that long) the
    entries go into its beginning, and that view is returned: a reader that
    samples again and again touches no new memory.
    """
    counts = [(stop - start) >> PAGE_SHIFT for start, stop in ranges]
    total = sum(counts)
    entries = np.empty(total, np.uint64) if out is None or out.size < total else out[:total]
    pieces, lo = [], 0
    for (start, _), count in zip(ranges, counts):
        pieces.append((start, entries[lo:lo + count]))
        lo += count
    read_entries_into(pieces, path)
    return entries


def read_entries_into(pieces: Sequence[Tuple[int, np.ndarray]], path: Optional[str] = None) -> None:
    """For each ``(address, out)``: the entries of the pages from byte
    ``address`` on into the uint64 array ``out``, as many as it holds."""
    fd = os.open(path or PAGEMAP_PATH, os.O_RDONLY)
    try:
        for start, out in pieces:
            _read_rest(fd, (start >> PAGE_SHIFT) * ENTRY_SIZE, memoryview(out).cast("B"))
    finally:
        os.close(fd)


def flags(entries: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The top byte of every entry (bits 56-63), as a contiguous uint8 array
    (``out`` if given, of the same length); test with FLAG_*."""
    top = 7 if sys.byteorder == "little" else 0
    if out is None:
        return np.ascontiguousarray(entries.view(np.uint8)[top::8])
    np.copyto(out, entries.view(np.uint8)[top::8])
    return out


def page_span(ranges: Iterable[Range]) -> np.ndarray:
    """Sorted unique page numbers that the byte ranges ``[start, stop)`` touch."""
    parts = [np.arange(start >> PAGE_SHIFT, ((stop - 1) >> PAGE_SHIFT) + 1, dtype=np.uint64)
             for start, stop in ranges if stop > start]
    if not parts:
        return np.zeros(0, np.uint64)
    return np.unique(np.concatenate(parts))


def subtract_ranges(ranges: Sequence[Range], remove: Sequence[Range]) -> List[Range]:
    """The parts of ``ranges`` not covered by any range in ``remove``."""
    out = []
    for start, stop in ranges:
        pieces = [(start, stop)]
        for r_start, r_stop in remove:
            pieces = [p for s, e in pieces
                      for p in ((s, min(e, r_start)), (max(s, r_stop), e)) if p[1] > p[0]]
        out.extend(pieces)
    return out


def zero_page_frame() -> int:
    """The frame number of the kernel's shared zero page; 0 when PFNs are hidden.

    A private page that was only ever read maps the zero page: present, not
    exclusive, yet holding nobody's data.  A write to it makes a fresh page,
    not a copy, so such entries must be told apart from shared data.  (The
    huge zero page needs no such care: pagemap flags it as a file page.)
    """
    with mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        addr = buffer_range(m)[0]
        m[0]  # a read fault maps the zero page
        entry = int(read_entries([(addr, addr + PAGE_SIZE)])[0])
    return entry & int(PFN_MASK) if entry & int(PRESENT) else 0


class ProcCounters:
    """Raw copies of ``/proc/self/stat`` and ``smaps_rollup``, before and
    after, and the child's two numbers (fresh pages in new mappings, access
    nanoseconds), all in shared memory.

    The child only copies bytes (allocating nothing between the
    snapshots); whoever builds the report parses them.
    """

    _SIZE = 1 << 14

    def __init__(self) -> None:
        self._buffer = shared_buffer(4 * self._SIZE)
        view = memoryview(self._buffer)
        self._views = [[view[k * self._SIZE:(k + 1) * self._SIZE]] for k in range(4)]
        self._lengths_buffer = shared_buffer(mmap.PAGESIZE)
        # [0:4] lengths of the four copies; [4] fresh pages in new mappings;
        # [5] access time in ns; [6] 1 once the child finished.
        self._lengths = np.frombuffer(self._lengths_buffer, np.int64)
        self._fds: Tuple[int, int] = (-1, -1)

    def attach(self, cross_checks: bool) -> None:
        self._fds = (os.open("/proc/self/stat", os.O_RDONLY),
                     os.open("/proc/self/smaps_rollup" if cross_checks else "/dev/null", os.O_RDONLY))
        populate(self._buffer, self._lengths_buffer)

    def read(self, which: int) -> None:
        lengths = self._lengths
        lengths[2 * which] = os.preadv(self._fds[0], self._views[2 * which], 0)
        lengths[2 * which + 1] = os.preadv(self._fds[1], self._views[2 * which + 1], 0)

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

    def finish(self, fresh_new: int, access_ns: int) -> None:
        self._lengths[4:7] = fresh_new, access_ns, 1

    def outcome(self) -> Tuple[int, float]:
        """(fresh pages in new mappings, access seconds); the child must have finished."""
        if self._lengths[6] != 1:
            raise CowmemError("no measurement to report: ForkMeter.run() has not completed")
        return int(self._lengths[4]), int(self._lengths[5]) / 1e9

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._fds = (-1, -1)
        self._views, self._lengths = [], None
        release(self._buffer, self._lengths_buffer)
