"""Sampling another process's pages: the frame behind each of its private pages.

One read of a process takes its private writable mappings from
``/proc/PID/maps`` and their entries from ``/proc/PID/pagemap`` (through
``cowmem._linux.pagemap``, the one encoding of the pagemap bits).  Of each entry it
keeps the frame number of a present anonymous page (0 where there is none,
where the page is a file's, and where it is the kernel's shared zero page,
which holds nobody's data) and the entry's flag byte.

A child is read straight onto its parent's addresses (``PageReader.read``
with ``onto``): the entries land where the parent's are, so that the two
compare position by position with no copy in between, and the child's
pages outside the parent's mappings are only counted.

Two processes share a page exactly when the same frame backs it in both:
comparing frames needs the frame numbers, which only CAP_SYS_ADMIN can read
(they read as 0 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .._linux import pagemap
from .._linux.maps import read_maps
from .._linux.page_ranges import PageRanges
from .._linux.pagemap import FLAG_EXCLUSIVE, FLAG_FILE_OR_SHARED, FLAG_PRESENT, PAGE_SHIFT, PFN_MASK
from ..errors import CowmemError


class ProcessGone(CowmemError):
    """The process exited (or became a zombie) while it was being read."""


def anonymous(flags: np.ndarray) -> np.ndarray:
    """Which entries (by their flag bytes) are present anonymous pages."""
    return (flags & (FLAG_PRESENT | FLAG_FILE_OR_SHARED)) == FLAG_PRESENT


@dataclass(frozen=True)
class ProcessPages:
    """One process's private writable pages at one moment, over ``ranges``.

    ``frames[k]`` is the frame number behind position ``k`` (see
    ``PageRanges``) when a private anonymous page other than the zero page
    is there, else 0; ``flags[k]`` is the entry's top byte (``pagemap.FLAG_*``).
    Without readable frame numbers every frame is 0 and only the flags tell.
    ``ranges`` are the process's own mappings, or those of the parent it
    was read onto; ``outside`` then counts its anonymous pages (the zero page
    left out where it can be told) at addresses the parent does not map.
    """

    pid: int
    ranges: PageRanges
    frames: np.ndarray
    flags: np.ndarray
    outside: int = 0

    @property
    def anonymous(self) -> np.ndarray:
        """Positions holding a present anonymous page (the zero page too, without frames)."""
        return anonymous(self.flags)

    @property
    def exclusive(self) -> np.ndarray:
        """Positions whose anonymous page no other process maps (pagemap bit 56)."""
        return self.anonymous & ((self.flags & FLAG_EXCLUSIVE) != 0)

    def aligned(self, values: np.ndarray, onto: PageRanges) -> np.ndarray:
        """``values`` (an array over ``ranges``) moved onto ``onto``'s
        positions, 0 (False) where ``ranges`` do not reach."""
        aligned = np.zeros(onto.npages, values.dtype)
        for _, dst, src, count in self.ranges.overlaps(onto):
            aligned[dst:dst + count] = values[src:src + count]
        return aligned


class Buffer:
    """A reused array that grows (with room to spare) when asked for more.

    Sampling every second, fresh arrays would each time fault in megabytes
    of new memory, which costs as much as reading the pagemap itself.
    """

    def __init__(self, dtype: type) -> None:
        self._array = np.zeros(0, dtype)

    def get(self, size: int) -> np.ndarray:
        """A view of ``size`` elements (their values are left over: overwrite them)."""
        if self._array.size < size:
            self._array = np.empty(size + size // 8 + 1024, self._array.dtype)
        return self._array[:size]


class PageReader:
    """Reads one process's pages, sample after sample, into reused memory.

    Two sets of buffers take turns, so that the pages of the previous read
    stay valid while the next one is taken (a child forked in between is
    compared with both of its parent's reads); the read before that is
    overwritten.
    """

    def __init__(self, pid: int, zero_frame: int) -> None:
        self.pid = pid
        self.zero_frame = zero_frame
        self._turns = [(Buffer(np.uint64), Buffer(np.uint8)) for _ in range(2)]
        self._outside = Buffer(np.uint64)
        self._mask = Buffer(np.bool_)
        self._turn = 0

    def read(self, onto: Optional[PageRanges] = None) -> ProcessPages:
        """Read the process's private writable mappings and their pagemap
        entries: over its own mappings, or ``onto`` another process's.

        Raises ProcessGone if the process is gone or a zombie (whose memory
        is gone), PermissionError if this process may not read it.
        """
        pid = self.pid
        frames_buffer, flags_buffer = self._turns[self._turn]
        try:
            own = PageRanges.of(read_maps(f"/proc/{pid}/maps"))
            ranges = own if onto is None else onto
            entries = frames_buffer.get(ranges.npages)
            pieces, outside = self._plan(own, ranges, entries)
            pagemap.read_entries_into(pieces, f"/proc/{pid}/pagemap")
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(pid) from exc
        except PermissionError:
            raise
        except OSError as exc:
            # A process exiting mid-read gives a short read (its memory is gone).
            raise ProcessGone(pid) from exc
        if not own.starts:
            raise ProcessGone(pid)  # a zombie: no memory at all
        self._turn ^= 1
        flags = pagemap.flags(entries, out=flags_buffer.get(entries.size))
        frames = self._frames(entries, flags)
        held_outside = 0
        if outside.size:
            outside_flags = pagemap.flags(outside)
            held_outside = int(np.count_nonzero(self._frames(outside, outside_flags) if self.zero_frame
                                                else anonymous(outside_flags)))
        return ProcessPages(pid, ranges, frames, flags, held_outside)

    def _plan(self, own: PageRanges, ranges: PageRanges, entries: np.ndarray):
        """Where each stretch of entries goes: ``(address, array)`` pieces,
        zeroing what the process does not map; and the array of its pages
        outside ``ranges``."""
        if ranges is own:
            offsets = own.offsets.tolist()
            return [(start << PAGE_SHIFT, entries[offsets[i]:offsets[i + 1]])
                    for i, start in enumerate(own.starts)], entries[:0]
        pieces, done = [], 0
        for page, dst, _, count in own.overlaps(ranges):
            entries[done:dst] = 0
            pieces.append((page << PAGE_SHIFT, entries[dst:dst + count]))
            done = dst + count
        entries[done:] = 0
        rest = own.minus(ranges)
        outside = self._outside.get(sum(stop - start for start, stop in rest))
        lo = 0
        for start, stop in rest:
            pieces.append((start << PAGE_SHIFT, outside[lo:lo + stop - start]))
            lo += stop - start
        return pieces, outside

    def _frames(self, entries: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """Turn entries into frames in place: 0 but for present anonymous pages, the zero page left out."""
        frames = np.bitwise_and(entries, PFN_MASK, out=entries)
        if not self.zero_frame:
            return frames  # all 0: frame numbers are unreadable
        mask = self._mask.get(entries.size)
        np.equal(flags & (FLAG_PRESENT | FLAG_FILE_OR_SHARED), FLAG_PRESENT, out=mask)
        np.multiply(frames, mask, out=frames)
        np.equal(frames, np.uint64(self.zero_frame), out=mask)
        np.putmask(frames, mask, 0)
        return frames
