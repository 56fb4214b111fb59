"""Private writable mappings as page numbers, and a page's position in arrays over them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, List, Sequence, Tuple

import numpy as np

from .maps import Mapping
from .pagemap import PAGE_SHIFT
from .ranges import subtract_ranges


@dataclass(frozen=True)
class PageRanges:
    """Private writable mappings as page numbers: ``[starts[i], stops[i])``.

    A page's position in arrays over these ranges is ``offsets[i] +
    (page - starts[i])``; ``labels[i]`` is the mapping's name in
    ``/proc/PID/maps`` (``[heap]``, ``[anon]``, a file's path).
    """

    starts: Tuple[int, ...]
    stops: Tuple[int, ...]
    labels: Tuple[str, ...]

    @classmethod
    def of(cls, maps: Sequence[Mapping]) -> "PageRanges":
        keep = [m for m in maps if m.private_writable and m.stop > m.start]
        return cls(tuple(m.start >> PAGE_SHIFT for m in keep), tuple(m.stop >> PAGE_SHIFT for m in keep),
                   tuple(m.label for m in keep))

    @cached_property
    def offsets(self) -> np.ndarray:
        """``offsets[i]``: the position of range ``i``'s first page; ``offsets[-1]``: the pages in all (read-only)."""
        return _read_only(np.concatenate(([0], np.cumsum(np.subtract(self.stops, self.starts), dtype=np.int64))))

    @cached_property
    def _first_pages(self) -> np.ndarray:
        return _read_only(np.array(self.starts, np.int64))

    @property
    def npages(self) -> int:
        return int(sum(self.stops) - sum(self.starts))

    def page_numbers(self, positions: np.ndarray) -> np.ndarray:
        """The virtual page numbers (address >> 12) at positions in arrays over these ranges."""
        # Array methods, not numpy's Python-level functions: this runs after
        # a fork, where each page first written costs a fault.
        offsets = self.offsets
        which = offsets.searchsorted(positions, side="right") - 1
        return self._first_pages[which] + (positions - offsets[which])

    def positions_of(self, pages: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The positions of the page numbers these ranges hold, and which of
        ``pages`` those are (a boolean mask)."""
        if not self.starts:
            return np.zeros(0, np.int64), np.zeros(len(pages), bool)
        starts = self._first_pages
        which = starts.searchsorted(pages, side="right") - 1
        inside = (which >= 0) & (pages < np.asarray(self.stops, np.int64)[np.maximum(which, 0)])
        which = which[inside]
        return self.offsets[which] + (pages[inside] - starts[which]), inside

    def mapping_of(self, positions: np.ndarray) -> np.ndarray:
        """The index of the range holding each position."""
        return np.searchsorted(self.offsets, positions, side="right") - 1

    def overlaps(self, other: "PageRanges") -> Iterator[Tuple[int, int, int, int]]:
        """``(first page, position in other, position in self, pages)`` for
        every stretch both map, in address order."""
        mine, theirs = self.offsets.tolist(), other.offsets.tolist()
        i = j = 0
        while i < len(self.starts) and j < len(other.starts):
            lo = max(self.starts[i], other.starts[j])
            hi = min(self.stops[i], other.stops[j])
            if lo < hi:
                yield lo, theirs[j] + lo - other.starts[j], mine[i] + lo - self.starts[i], hi - lo
            if self.stops[i] <= other.stops[j]:
                i += 1
            else:
                j += 1

    def minus(self, other: "PageRanges") -> List[Tuple[int, int]]:
        """The page ranges ``[start, stop)`` of these that ``other`` does not map."""
        return subtract_ranges(list(zip(self.starts, self.stops)), list(zip(other.starts, other.stops)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
