"""What changed between a child's two pagemap snapshots: which pages were copied,
which populated fresh, and where they lie.
"""

from __future__ import annotations

import types
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._linux.maps import private_writable_ranges, read_maps
from ._linux.pagemap import (FLAG_EXCLUSIVE, FLAG_FILE_OR_SHARED, FLAG_PRESENT, FLAG_SWAPPED, PAGE_SHIFT,
                             PAGE_SIZE, PFN_MASK, flags, read_entries)
from ._linux.probe import PagemapFacts
from ._linux.ranges import subtract_ranges


def _per_region(region_pages: Mapping[str, np.ndarray], pages: np.ndarray) -> Mapping[str, int]:
    """Bytes of ``pages`` (sorted, unique) inside each region's own (sorted, unique) pages."""
    return types.MappingProxyType({name: _common(own, pages) * PAGE_SIZE for name, own in region_pages.items()})


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """How many values two sorted unique arrays share: the smaller looked up in the larger."""
    small, large = (a, b) if a.size <= b.size else (b, a)
    if not small.size:
        return 0
    at = large.searchsorted(small).clip(max=large.size - 1)
    return int(np.count_nonzero(large[at] == small))


def _runs(pages: np.ndarray) -> Tuple[Tuple[int, int], ...]:
    """Merge sorted page numbers into byte ranges ``(start, stop)``."""
    if pages.size == 0:
        return ()
    breaks = ((pages[1:] - pages[:-1]) != 1).nonzero()[0]
    firsts = np.concatenate((pages[:1], pages[breaks + 1])).tolist()
    lasts = np.concatenate((pages[breaks], pages[-1:])).tolist()
    return tuple((f << PAGE_SHIFT, (l + 1) << PAGE_SHIFT) for f, l in zip(firsts, lasts))


_PRESENT, _SWAPPED = FLAG_PRESENT, FLAG_SWAPPED
_FILE, _EXCLUSIVE = FLAG_FILE_OR_SHARED, FLAG_EXCLUSIVE
_KIND = _PRESENT | _FILE | _EXCLUSIVE
_NEITHER, _COPIED, _FRESH, _HIDDEN_BY_SWAP = range(4)


def _classes() -> np.ndarray:
    """What a change of a page's flags means, for every pair: index ``before * 256 + after``.

    Copied: present, anonymous and shared before; exclusive after.  Fresh:
    exclusive after and not present (nor swapped out) before, or a file
    page before (a private file page's first write copies the page cache,
    not the parent).  Hidden by swap: swapped out after, or swapped out
    before and exclusive after: whether a copy happened cannot be seen.
    """
    before = np.repeat(np.arange(256, dtype=np.uint8), 256)
    after = np.tile(np.arange(256, dtype=np.uint8), 256)
    mine_after = (after & _KIND) == (_PRESENT | _EXCLUSIVE)
    classes = np.full(65536, _NEITHER, np.uint8)
    classes[mine_after & ((before & _KIND) == _PRESENT)] = _COPIED
    classes[mine_after & ((before & (_PRESENT | _FILE)) != _PRESENT) & ((before & _SWAPPED) == 0)] = _FRESH
    classes[((after & _SWAPPED) != 0) | (mine_after & ((before & _SWAPPED) != 0))] = _HIDDEN_BY_SWAP
    return classes


# Made here, in the parent: a child only reads it.
_CLASSES = _classes()


class Diff(NamedTuple):
    """What happened between two snapshots of the same pages (positions in the snapshots)."""

    copied: np.ndarray   # positions of the copied pages, sorted
    fresh: int           # pages populated without a copy
    swapped: int         # pages swapped out in a snapshot, whose entry changed
    left: np.ndarray     # positions of pages shared before, the child's alone after, in the same frame


def compare(before: np.ndarray, after: np.ndarray, zero_frame: Optional[int],
            changed: Optional[np.ndarray] = None) -> Diff:
    """Classify every page whose entry changed between two snapshots of the same pages.

    By the change of its flags (``_classes``); and where frame numbers are
    readable (``zero_frame`` not None), a copied page must also have a new
    frame and not have been the zero page (a first write to it is fresh).
    One that kept its frame was left to the child: the parent wrote it (and
    took the copy) or dropped it, and a write of the child's there made no
    copy to see.  A page whose entry did not change is none of these, so
    only those that changed (``changed``: their positions, found here if not
    given) are looked at: a few pages for most accesses.
    """
    if changed is None:
        changed = (before != after).nonzero()[0]
    if not changed.size:
        return Diff(changed, 0, 0, changed)
    # Array methods and ready-made scalars: this runs after each fork, where
    # each page of numpy's own that it writes costs a fault.
    b, a = before[changed], after[changed]
    classes = _CLASSES[((b >> _48) & _TOP_BYTE_HIGH) | (a >> _56)]
    copied = changed[classes == _COPIED]
    fresh = (classes == _FRESH).nonzero()[0].size
    left = copied[:0]
    if zero_frame is not None and copied.size:
        frame_before = before[copied] & PFN_MASK
        was_zero = frame_before == np.uint64(zero_frame) if zero_frame else np.zeros(copied.size, bool)
        fresh += was_zero.nonzero()[0].size
        kept = ~was_zero & (frame_before == (after[copied] & PFN_MASK))
        copied, left = copied[~was_zero & ~kept], copied[kept]
    return Diff(copied, fresh, (classes == _HIDDEN_BY_SWAP).nonzero()[0].size, left)


_48, _56, _TOP_BYTE_HIGH = np.uint64(48), np.uint64(56), np.uint64(0xFF00)


def exclusive_positions(entries: np.ndarray) -> np.ndarray:
    """Positions of the present, anonymous, exclusively mapped pages of a snapshot."""
    return ((flags(entries) & _KIND) == (_PRESENT | _EXCLUSIVE)).nonzero()[0]


def fresh_in_new_mappings(known: Sequence[Tuple[int, int]], facts: PagemapFacts) -> int:
    """Pages this process holds alone in private writable memory outside ``known`` (sorted ranges).

    Present, anonymous, exclusively mapped, not the zero page: populated by
    this process.  A present page there without the exclusive bit is still
    shared with the parent (mapped by it after the snapshots' ranges were
    read): not fresh.
    """
    new = subtract_ranges(private_writable_ranges(read_maps()), known)
    if not new:
        return 0
    entries = read_entries(new)
    mine = (flags(entries) & _KIND) == (_PRESENT | _EXCLUSIVE)
    if facts.frames_readable and facts.zero_frame:
        mine &= (entries & PFN_MASK) != np.uint64(facts.zero_frame)
    return int(np.count_nonzero(mine))
