"""The pagemap entries of a process's pages, and the one encoding of their bits.

``/proc/PID/pagemap`` holds one 64-bit entry per virtual page; this module
reads them, and is the only one that knows their bits.  The bits used (the
kernel's Documentation/admin-guide/mm/pagemap.rst):

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
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from .ranges import Range

PAGE_SIZE: int = mmap.PAGESIZE
PAGE_SHIFT: int = PAGE_SIZE.bit_length() - 1
ENTRY_SIZE = 8

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
