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
work on that byte alone (``flags()``, ``FLAG_*``).  What this kernel's
pagemap can be trusted with is found once per process (``pagemap_facts``).
docs/method.md describes the method these serve.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import mmap
import os
import re
import struct
import sys
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from .. import children
from ..errors import UnsupportedPlatformError

PAGE_SIZE: int = mmap.PAGESIZE
PAGE_SHIFT: int = PAGE_SIZE.bit_length() - 1
ENTRY_SIZE = 8

MAPS_PATH = "/proc/self/maps"
PAGEMAP_PATH = "/proc/self/pagemap"
THP_PATH = "/sys/kernel/mm/transparent_hugepage"

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

# Linux's values; Python's mmap module lacks some constants (MAP_POPULATE
# before 3.10, MADV_POPULATE_WRITE and MADV_WIPEONFORK in every version so far).
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
_MADV_POPULATE_WRITE = 23
_MADV_WIPEONFORK = 18
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)

Range = Tuple[int, int]

# No page numbers, no positions: shared, never written.
NO_PAGES = np.zeros(0, np.uint64)
NO_PAGES.flags.writeable = False
NO_POSITIONS = np.zeros(0, np.intp)
NO_POSITIONS.flags.writeable = False


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


def read_maps_text(path: str = MAPS_PATH) -> bytes:
    """The raw text of a maps file, for comparing with another reading."""
    with open(path, "rb", buffering=0) as f:
        return f.readall()


def parse_maps(text: bytes, private_writable_only: bool = False) -> List[Mapping]:
    """The mappings of a maps file's text, in address order (only the private writable ones, if asked)."""
    maps = []
    for line in text.splitlines():
        # "start-stop perms offset dev inode [name]"; the name may hold spaces.
        if private_writable_only:
            perms = line.find(b" ") + 1
            if line[perms + 1:perms + 2] != b"w" or line[perms + 3:perms + 4] != b"p":
                continue
        fields = line.split(None, 5)
        start, _, stop = fields[0].partition(b"-")
        maps.append(Mapping(int(start, 16), int(stop, 16), fields[1].decode(),
                            fields[5].decode(errors="surrogateescape") if len(fields) > 5 else "[anon]"))
    return maps


def read_maps(path: str = MAPS_PATH) -> List[Mapping]:
    """A process's mappings (the calling process's by default), in address order."""
    return parse_maps(read_maps_text(path))


def private_writable_ranges(maps: Iterable[Mapping]) -> List[Range]:
    """The ``[start, stop)`` ranges of the private writable mappings."""
    return [(m.start, m.stop) for m in maps if m.private_writable]


# PROCMAP_QUERY (Linux 6.11+, include/uapi/linux/fs.h): one mapping per
# ioctl on a maps file, without formatting the whole text (a file name
# each), which is most of what reading maps costs.
_QUERY = struct.Struct("=9Q4I2Q")   # struct procmap_query
_PROCMAP_QUERY = (3 << 30) | (_QUERY.size << 16) | (ord("f") << 8) | 17   # _IOWR('f', 17, ...)
_QUERY_WRITABLE, _QUERY_COVERING_OR_NEXT = 0x02, 0x10
_VMA_SHARED = 0x08
_query_missing: List[bool] = []


def private_writable_now(path: str = MAPS_PATH) -> List[Range]:
    """The ranges of the private writable mappings of the process ``path`` names, now.

    One ioctl per writable mapping where the kernel has PROCMAP_QUERY,
    else from the maps' text.
    """
    if not _query_missing:
        fd = os.open(path, os.O_RDONLY)
        try:
            return _query_private_writable(fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
            _query_missing.append(True)
        finally:
            os.close(fd)
    return private_writable_ranges(parse_maps(read_maps_text(path), private_writable_only=True))


def _query_private_writable(fd: int) -> List[Range]:
    query = bytearray(_QUERY.size)
    found: List[Range] = []
    addr = 0
    while True:
        _QUERY.pack_into(query, 0, _QUERY.size, _QUERY_WRITABLE | _QUERY_COVERING_OR_NEXT, addr, *[0] * 12)
        try:
            fcntl.ioctl(fd, _PROCMAP_QUERY, query)
        except FileNotFoundError:
            return found  # no mapping at or above addr
        start, stop, flags = _QUERY.unpack_from(query)[3:6]
        if not flags & _VMA_SHARED:
            found.append((start, stop))
        addr = stop


def subtract_ranges(ranges: Sequence[Range], remove: Sequence[Range]) -> List[Range]:
    """The parts of ``ranges`` (sorted, disjoint) not covered by any range in ``remove``."""
    cuts = sorted(r for r in remove if r[1] > r[0])
    out: List[Range] = []
    first = 0
    for start, stop in ranges:
        while first < len(cuts) and cuts[first][1] <= start:
            first += 1
        pos, k = start, first
        while k < len(cuts) and cuts[k][0] < stop:
            if cuts[k][0] > pos:
                out.append((pos, cuts[k][0]))
            pos = max(pos, cuts[k][1])
            k += 1
        if pos < stop:
            out.append((pos, stop))
    return out


def subtract_from_maps(maps: Sequence[Mapping], remove: Sequence[Range]) -> List[Mapping]:
    """``subtract_ranges`` on mappings: each piece keeps its mapping's perms and label."""
    out: List[Mapping] = []
    for m in maps:
        if any(start < m.stop and m.start < stop for start, stop in remove):
            out.extend(replace(m, start=start, stop=stop)
                       for start, stop in subtract_ranges([(m.start, m.stop)], remove))
        else:
            out.append(m)
    return out


def _merge_adjacent(ranges: Sequence[Range]) -> List[Range]:
    """Sorted ranges with each run of touching ones made one (one read instead of several)."""
    out: List[Range] = []
    for start, stop in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def intersect_ranges(ranges: Sequence[Range], within: Sequence[Range]) -> List[Range]:
    """The parts of ``ranges`` inside ``within`` (sorted, disjoint)."""
    return [(max(start, w_start), min(stop, w_stop))
            for start, stop in ranges for w_start, w_stop in within
            if max(start, w_start) < min(stop, w_stop)]


# --- what this kernel's pagemap tells ------------------------------------

@dataclass(frozen=True)
class PagemapFacts:
    """What this process can read from its pagemap, found once (``pagemap_facts``).

    ``frames_readable``: frame numbers are visible (CAP_SYS_ADMIN).
    ``zero_frame``: the frame number of the kernel's shared zero page, 0
    when frames are hidden.  ``exclusive_per_page``: bit 56 was seen set
    for a 4 KiB page of a huge page that a child maps too, which a kernel
    that decides it per large folio (CONFIG_NO_PAGE_MAPCOUNT) does not do
    (True); None when no huge page could be made to tell.
    """

    frames_readable: bool
    zero_frame: int
    exclusive_per_page: Optional[bool]


_facts: Dict[str, PagemapFacts] = {}


def pagemap_facts(path: Optional[str] = None) -> PagemapFacts:
    """Check that ``path`` (the calling process's pagemap) can be measured with; its facts.

    Raises UnsupportedPlatformError when there is no ``os.fork``, no
    readable pagemap, no exclusive bit, or an exclusive bit decided per
    large folio.  The first call forks one short-lived child; the answer
    is kept for the process.
    """
    path = path or PAGEMAP_PATH
    if not hasattr(os, "fork"):
        raise UnsupportedPlatformError("this platform has no os.fork(): cowmem measures forked children")
    if path not in _facts:
        _facts[path] = _probe(path)
    return _facts[path]


def check_pagemap(path: Optional[str] = None) -> None:
    """Raise UnsupportedPlatformError unless ``path``'s pagemap can be measured with (``pagemap_facts``)."""
    pagemap_facts(path)


def zero_page_frame() -> int:
    """The frame number of the kernel's shared zero page; 0 when frame numbers are hidden."""
    return pagemap_facts().zero_frame


def _probe(path: str) -> PagemapFacts:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise UnsupportedPlatformError(
            f"cannot open {path} ({exc.strerror}): cowmem needs Linux's per-page "
            "memory state to count copied pages, and will not guess") from None
    with mmap.mmap(-1, 2 * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        addr = buffer_range(m)[0]
        m[0]        # a read fault maps the zero page
        m[PAGE_SIZE] = 1  # a write fault: a page of this process alone
        zero, written = (int(e) for e in read_entries([(addr, addr + 2 * PAGE_SIZE)], path))
    if written & int(PRESENT | EXCLUSIVE | FILE_OR_SHARED) != int(PRESENT | EXCLUSIVE):
        raise UnsupportedPlatformError(
            f"{path} does not show a page this process just wrote as present and exclusively "
            "mapped (bits 63 and 56; Linux 4.2+ reports both): copied pages cannot be told "
            "from shared ones")
    frames_readable = bool(written & int(PFN_MASK))
    zero_frame = zero & int(PFN_MASK) if frames_readable and zero & int(PRESENT) else 0
    per_page = _judge_huge_page(_huge_page_split_by_both(path))
    if per_page is False:
        raise UnsupportedPlatformError(
            "this kernel decides pagemap's exclusive bit (56) per large folio, not per 4 KiB page "
            "(CONFIG_NO_PAGE_MAPCOUNT, Linux 6.15+): a page of a huge page that only one process "
            "maps can read as shared, so copies cannot be counted page-exactly; cowmem refuses "
            "rather than count wrong")
    return PagemapFacts(frames_readable, zero_frame, per_page)


def _judge_huge_page(flags_after: Optional[np.ndarray]) -> Optional[bool]:
    """Per page (True) or per folio (False), from ``_huge_page_split_by_both``; None: cannot tell."""
    if flags_after is None:
        return None
    mine = (flags_after & (FLAG_PRESENT | FLAG_EXCLUSIVE)) == (FLAG_PRESENT | FLAG_EXCLUSIVE)
    present = (flags_after & FLAG_PRESENT) != 0
    if not (present.all() and mine[1]) or mine[2:].any():
        return None          # not what a huge page split by both processes looks like
    return bool(mine[0])


@functools.lru_cache(maxsize=None)
def huge_page_size() -> int:
    """The size of a transparent huge page in bytes; 0 when THP is off (``never``)."""
    try:
        with open(f"{THP_PATH}/enabled") as f:
            if "[never]" in f.read():
                return 0
        with open(f"{THP_PATH}/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _huge_page_split_by_both(path: str) -> Optional[np.ndarray]:
    """This process's flags for the pages of a huge page that it and a child each wrote once.

    Each write copies one 4 KiB page (Linux 5.8+) and maps the huge page
    by 4 KiB pages in the writer.  The child writes page 0, this process
    page 1: page 0 of the huge page is then mapped by this process alone,
    which per-page accounting shows as exclusive and per-folio accounting,
    the folio being mapped by both, does not.  Page 1 is this process's own
    copy, the others are shared.  (Read while mapped whole by a 2 MiB entry,
    a huge page's 512 entries all take the exclusive bit of its first page,
    on Linux 6.18 at least: hence both writes.)  None when no huge page
    could be made.
    """
    size = huge_page_size()
    if not size:
        return None
    with mmap.mmap(-1, 2 * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        base = buffer_range(m)[0]
        offset = -base % size
        try:
            m.madvise(_MADV_HUGEPAGE, offset, size)
        except OSError:
            return None
        m[offset] = 1  # one fault maps the whole huge page, if the kernel can make one
        if _anon_huge_bytes(base + offset) < size:
            return None
        with children.held_back() as handlers:
            return _write_with_a_child(m, offset, size, path, handlers)


def _write_with_a_child(m: mmap.mmap, offset: int, size: int, path: str,
                        handlers: children.Handlers) -> Optional[np.ndarray]:
    """The writes of ``_huge_page_split_by_both``, and this process's flags after them."""
    wrote_r, wrote_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            children.become_child(handlers)
            m[offset] = 2
            os.write(wrote_w, b"x")
            os.read(hold_r, 1)  # keep the huge page shared until the parent has looked
        finally:
            os._exit(0)
    try:
        os.close(wrote_w)
        wrote_w = -1
        if os.read(wrote_r, 1) != b"x":
            return None
        m[offset + PAGE_SIZE] = 2
        base = buffer_range(m)[0] + offset
        return flags(read_entries([(base, base + size)], path))
    finally:
        for fd in (wrote_r, wrote_w, hold_r, hold_w):
            if fd >= 0:
                os.close(fd)
        children.end(pid)


_SMAPS_HEADER = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) ", re.M)


def _anon_huge_bytes(addr: int) -> int:
    """AnonHugePages of the calling process's mapping that holds ``addr``, in bytes."""
    with open("/proc/self/smaps", "rb") as f:
        text = f.read()
    headers = list(_SMAPS_HEADER.finditer(text))
    for here, after in zip(headers, headers[1:] + [None]):
        if int(here[1], 16) <= addr < int(here[2], 16):
            block = text[here.end():after.start() if after else len(text)]
            found = re.search(rb"^AnonHugePages:\s+(\d+) kB", block, re.M)
            return int(found[1]) * 1024 if found else 0
    return 0


# --- snapshots -----------------------------------------------------------

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
        self.path = path or PAGEMAP_PATH
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


# The address ranges of every UnforkedBuffer mapped in this process: never
# measured, in any child.
_own_ranges: Set[Range] = set()


def own_ranges() -> List[Range]:
    """The address ranges of every UnforkedBuffer mapped in this process: never to be measured."""
    return sorted(_own_ranges)


class UnforkedBuffer:
    """Private memory for a forked child to fill: never touched here, empty in every child.

    The parent maps it but never writes it (and ``MADV_WIPEONFORK`` makes
    sure every child starts it empty), so it costs the parent nothing but
    address space, and the child's first writes are fresh pages.  A large
    one is made of huge pages where the kernel has them (``view`` is 2 MiB
    aligned): a fault per 2 MiB rather than per 4 KiB; a small one is not,
    as a huge page would be zeroed whole for a few pages used.  Its range is
    in ``own_ranges()``.
    """

    # Huge pages from this size on: a huge page zeroed costs about what
    # faulting 150 of its 512 small pages one by one does.
    HUGE_FROM = 1 << 20

    def __init__(self, capacity: int) -> None:
        huge = huge_page_size() if capacity >= self.HUGE_FROM else 0
        if huge:
            capacity += -capacity % huge  # whole huge pages: a fault each
        self.capacity = capacity
        self._mmap = mmap.mmap(-1, capacity + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for advice in (_MADV_WIPEONFORK, _MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE):
            try:
                self._mmap.madvise(advice)
            except OSError:
                pass  # older kernels: never touched here, the child's pages are fresh anyway
        start, stop = buffer_range(self._mmap)
        self.range = (start, stop + (-stop % PAGE_SIZE))  # as mapped: whole pages
        _own_ranges.add(self.range)
        skip = -start % huge if huge else 0
        self.view = memoryview(self._mmap)[skip:skip + capacity]

    def close(self) -> None:
        _own_ranges.discard(self.range)
        try:
            self.view.release()
        except BufferError:
            pass  # views still alive: unmapped when the last goes
        release(self._mmap)


def release(*buffers: mmap.mmap) -> None:
    """Unmap buffers now, or, where arrays still view them (a traceback
    being raised through), when the last view goes."""
    for buffer in buffers:
        try:
            buffer.close()
        except BufferError:
            pass


def shared_buffer(size: int, populate: bool = True) -> mmap.mmap:
    """Shared anonymous memory, populated unless told otherwise: a child writes it, the parent reads it."""
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | (_MAP_POPULATE if populate else 0))


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
