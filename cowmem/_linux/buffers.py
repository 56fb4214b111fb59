"""The memory a measuring child writes, mapped by the parent: unforked, shared."""

from __future__ import annotations

import functools
import mmap
from typing import List, Set

import numpy as np

from .pagemap import PAGE_SIZE
from .ranges import Range

THP_PATH = "/sys/kernel/mm/transparent_hugepage"

# Linux's values; Python's mmap module lacks some constants (MAP_POPULATE
# before 3.10, MADV_WIPEONFORK in every version so far).
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
_MADV_WIPEONFORK = 18
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)


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

    # Huge pages from this size on: in a measuring child a huge page's
    # fault (zeroing 2 MiB) took about 190 us, and each small page's about
    # 6 us (57 and 2.5 us in a loop that does nothing else).
    HUGE_FROM = 1 << 17

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


def buffer_range(buffer: mmap.mmap) -> Range:
    """The address range of an mmap object."""
    addr = np.frombuffer(buffer, np.uint8).ctypes.data
    return addr, addr + len(buffer)
