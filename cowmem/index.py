"""The object index: which object's memory each address falls in.

One index serves explain mode (the first write to each copied page, by
object and field), regions (the pages of each named object) and the whole
heap (what kinds of object the copied pages hold).  It is made by walking
objects (objects.py) in a forked helper (locate.py) and sent back as plain
arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from ._linux.pagemap import PAGE_SHIFT

Range = Tuple[int, int]

# What a row stands for.
OBJECT, STORAGE, BUFFER = 0, 1, 2
"""An object's inline block; memory it owns outside it (list items, tables, blocks); a buffer's bytes."""
PARTS = ("object", "storage", "buffer")


class TypeInfo(NamedTuple):
    """A layout code's type: its name and where its header lies (bytes)."""

    name: str       # as layouts.type_name gives it: "int", "ndarray"
    before: int     # bytes before the object's address (GC header, pre-header)
    gc: int         # of which the GC header
    header: int     # from the address to the end of the header
    fields: str     # key in layouts.HEADER_FIELDS / PAYLOAD_NAMES, "" for none


@dataclass(frozen=True)
class ObjectIndex:
    """Sorted, non-overlapping address rows ``[lo, hi)`` (bytes), one per block of memory.

    Columns, one entry per row: ``lo``, ``hi`` (uint64 addresses), ``code``
    (int32, an index into ``types``: the object's type, or for storage and
    buffers their owner's), ``region`` (int32, an index into ``regions``),
    ``part`` (int8: OBJECT, STORAGE or BUFFER) and ``owner`` (uint64, the
    address, ``id()``, of the object the block belongs to).  Where blocks overlap
    (an object held twice, a buffer inside an object already listed) the
    first one listed is kept.
    """

    lo: np.ndarray
    hi: np.ndarray
    code: np.ndarray
    region: np.ndarray
    part: np.ndarray
    owner: np.ndarray
    types: Tuple[TypeInfo, ...]
    regions: Tuple[str, ...]

    @classmethod
    def build(cls, lo: np.ndarray, hi: np.ndarray, code: np.ndarray, region: np.ndarray, part: np.ndarray,
              owner: np.ndarray, types: Sequence[TypeInfo], regions: Sequence[str]) -> "ObjectIndex":
        """An index of possibly unsorted, overlapping rows (the columns as above).

        In address order, a row is kept when it starts at or past the end of
        every row kept before it: a row dropped for an overlap takes no other
        row with it.
        """
        keep = hi > lo
        order = np.argsort(lo[keep], kind="stable")   # addresses mostly ascend already: cheap
        columns = [c[keep][order] for c in (lo, hi, code, region, part, owner)]
        lo, hi = columns[0], columns[1]
        # A row that starts past every end before it is kept; one that starts
        # inside a row kept that way is dropped.  Left are the rows that
        # overlap only rows dropped themselves, rare (it takes blocks that
        # overlap in part), settled one by one in order.
        kept = np.ones(lo.size, bool)
        kept[1:] = lo[1:] >= np.maximum.accumulate(hi)[:-1]
        kept_end = np.maximum.accumulate(np.where(kept, hi, 0))
        settle = np.flatnonzero(~kept[1:] & (lo[1:] >= kept_end[:-1])) + 1
        end = 0
        for i, start, stop, before in zip(settle.tolist(), lo[settle].tolist(), hi[settle].tolist(),
                                          kept_end[settle - 1].tolist()):
            end = max(end, before)
            if start >= end:
                kept[i], end = True, stop
        return cls(*(c[kept] for c in columns), tuple(types), tuple(regions))

    @classmethod
    def empty(cls) -> "ObjectIndex":
        nothing = np.zeros(0, np.uint64)
        return cls(nothing, nothing, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8),
                   nothing, (), ())

    @property
    def columns(self) -> List[np.ndarray]:
        """The columns, in the order ``build`` takes them."""
        return [self.lo, self.hi, self.code, self.region, self.part, self.owner]

    def __len__(self) -> int:
        return int(self.lo.size)

    def lookup(self, addresses: np.ndarray) -> np.ndarray:
        """The row holding each address (uint64), -1 where none does."""
        addresses = np.asarray(addresses, np.uint64)
        row = np.searchsorted(self.lo, addresses, side="right") - 1
        if not self.lo.size:
            return np.full(addresses.shape, -1, np.int64)
        inside = (row >= 0) & (addresses < self.hi[np.maximum(row, 0)])
        return np.where(inside, row, -1)

    def pages(self) -> np.ndarray:
        """Sorted unique page numbers (address >> 12 on 4 KiB pages) that the rows touch."""
        return page_numbers(self.lo, self.hi)

    def bytes_by_type(self, pages: np.ndarray) -> Dict[str, int]:
        """Bytes of each type's rows that lie in ``pages`` (page numbers), largest first.

        Storage and buffers count for their owner's type.  With the copied
        pages of a child, this says what those pages hold: "61 % str, 22 % dict".
        """
        pages = sorted_unique(np.asarray(pages, np.uint64))
        if not pages.size or not self.lo.size:
            return {}
        shift, one = np.uint64(PAGE_SHIFT), np.uint64(1)
        first, last = self.lo >> shift, (self.hi - one) >> shift
        # A row's bytes in the pages: its first page's part, its last page's
        # part (when it has two or more), and every whole page in between.
        inner = np.searchsorted(pages, last, "left") - np.searchsorted(pages, first + one, "left")
        held = np.maximum(inner, 0).astype(np.int64) << PAGE_SHIFT
        head = np.minimum(self.hi, (first + one) << shift) - self.lo
        held += np.where(is_member(pages, first), head, 0).astype(np.int64)
        tail = self.hi - (last << shift)
        held += np.where((last > first) & is_member(pages, last), tail, 0).astype(np.int64)
        totals = np.bincount(self.code, weights=held, minlength=len(self.types)).astype(np.int64)
        named: Dict[str, int] = {}
        for info, total in zip(self.types, totals.tolist()):
            if total:
                named[info.name] = named.get(info.name, 0) + total
        return dict(sorted(named.items(), key=lambda kv: (-kv[1], kv[0])))


def distinct(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(the sorted distinct values, the position of each one's first occurrence).

    By sorting (numpy 2.3+'s ``np.unique`` hashes, many times slower on
    millions of addresses), and not at all when they ascend already.
    """
    if np.all(values[1:] > values[:-1]):
        return values, np.arange(values.size)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.ones(ordered.size, bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first], order[first]


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values (as ``distinct``, without the positions)."""
    ordered = np.sort(values, kind="stable")   # radix: many times the default on addresses
    keep = np.ones(ordered.size, bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def is_member(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``sorted_values`` (sorted, unique)."""
    if not sorted_values.size:
        return np.zeros(values.shape, bool)
    at = np.minimum(np.searchsorted(sorted_values, values), sorted_values.size - 1)
    return sorted_values[at] == values


def page_numbers(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Sorted unique page numbers touched by byte ranges ``[start, stop)``, vectorised."""
    keep = stops > starts
    shift = np.uint64(PAGE_SHIFT)
    first = starts[keep] >> shift
    last = (stops[keep] - np.uint64(1)) >> shift
    # Most objects lie in one page, some in two, a few (buffers) in more.
    longer = np.flatnonzero(last - first > 1)
    inner = [np.arange(f + 1, l, dtype=np.uint64) for f, l in zip(first[longer].tolist(), last[longer].tolist())]
    return sorted_unique(np.concatenate([first, last[last != first], *inner]))


def merge_ranges(starts: np.ndarray, stops: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Merge overlapping or touching ranges; (starts, stops), sorted."""
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    if starts.size == 0:
        return starts, stops
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], np.maximum.accumulate(stops[order])
    # A new run starts where a range begins after everything before it ended.
    new = np.ones(starts.size, bool)
    new[1:] = starts[1:] > stops[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, starts.size - 1)
    return starts[first], stops[last]
