"""Comparing a forked child's pages with its parent's: copied, shared, fresh.

At the moment of ``fork()`` the child maps, at every address of the
parent's private writable mappings, the very frame the parent maps there.
Afterwards, at an address where the child has a present anonymous page:

* **shared**: the child's frame is the parent's frame at that address.
* **copied**: the child has a frame of its own where the parent *still*
  has the page the child was forked with: the child's write made the
  kernel copy it.
* **parent-written**: the parent no longer has the page the child was
  forked with (the parent wrote it, so the kernel gave the parent the
  copy, or it unmapped it): no longer shared, but not the child's doing.
* **fresh**: there was no page at this address at the fork (or the child's
  mapping is not the parent's at all): the child's own new memory.

Which of the last three it is depends on the *origin*, the frame the
parent had at the address when the child was forked, which no single
reading shows.  ``ForkOrigin.infer`` works it out, once, when the child is
first seen, from facts that are certain:

1. the child's frame is the parent's now: that is the origin;
2. the child's frame is also that of a *relative* at that address (a
   sibling, or an ancestor of the parent): an anonymous frame is shared
   only through ``fork()``, so the child was forked with it, and the parent
   has since replaced it;
3. (a child forked while watching) the parent's frame was the same in the
   reading before the fork and in the one after: the parent had it at the
   fork, for a replaced frame never comes back; and a child frame equal to
   the parent's earlier one is the origin (the parent replaced it since);
4. the parent's frame is also that of a relative forked before the child
   (an older sibling, or an ancestor): the parent has had it since then,
   so at this child's fork too.  This decides what rule 3 cannot when the
   parent changed a page in the interval of several forks (gunicorn
   loading its app and forking every worker within one interval).

What remains is *unsure*: the child has a page of its own, the parent a
different one, and nothing seen tells whether the parent still has its
page from before the fork.  Such a page counts as copied (the parent
process of a prefork server rarely writes) and is also reported in
``unsure_bytes``, so that ``copied - unsure`` is a certain lower bound.
Once the parent's frame changes, the parent wrote the page after the fork,
and it moves to parent-written for good.  A child forked while ``watch``
runs has no unsure pages but those its parent changed in the interval of
its fork and no older sibling still shares with the parent.

Approximations, all rare: a page the child freed and faulted in again at
the same address (``madvise(MADV_DONTNEED)``, ``malloc_trim``) counts as
copied; a page moved elsewhere (``mremap``) or merged by KSM compares by
address, not by content; the kernel moving a frame (compaction, NUMA
balancing, khugepaged) looks like a write by whoever holds it; and the
readings of parent and children are a few milliseconds apart.  Fork order
is the start time (10 ms ticks), then the pid, so two children forked in
the same tick across a pid wrap-around are taken in the wrong order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

from .._linux.pagemap import PAGE_SIZE
from .pagemaps import PageRanges, ProcessPages


class Snapshot:
    """A parent's frames at one sample, shared by the origins of all the
    children first seen then (one copy, not one per child).

    ``on(ranges)`` gives the same frames over the parent's later ranges,
    made once for all those children.
    """

    def __init__(self, ranges: PageRanges, frames: np.ndarray) -> None:
        self.ranges = ranges
        self.frames = frames
        self._moved: Optional["Snapshot"] = None

    def on(self, ranges: PageRanges) -> "Snapshot":
        """The frames over ``ranges``: 0 at addresses these ranges did not map."""
        if ranges == self.ranges:
            return self
        if self._moved is None or self._moved.ranges != ranges:
            frames = np.zeros(ranges.npages, np.uint64)
            for _, dst, src, n in self.ranges.overlaps(ranges):
                frames[dst:dst + n] = self.frames[src:src + n]
            self._moved = Snapshot(ranges, frames)
        return self._moved


@dataclass(frozen=True)
class ForkOrigin:
    """The frame each address of the parent held when a child was forked.

    The parent's frames when the child was first seen (``base``), but at
    the pages ``fixed_pages`` (page numbers, address >> 12, sorted), whose
    origin is ``fixed_frames``.  A frame 0 means the parent had no
    anonymous page there, so that the child's page there is fresh.
    ``unsure_pages`` (sorted page numbers) are those whose frame is
    presumed (see the module's text).
    """

    base: Snapshot
    fixed_pages: np.ndarray
    fixed_frames: np.ndarray
    unsure_pages: np.ndarray

    @property
    def ranges(self) -> PageRanges:
        return self.base.ranges

    @classmethod
    def infer(cls, base: Snapshot, child: np.ndarray, *, before: Optional[np.ndarray] = None,
              relatives: Sequence[np.ndarray] = (), older: Sequence[np.ndarray] = ()) -> "ForkOrigin":
        """The origin, from frames over ``base.ranges``: the parent's now
        (``base``) and the child's, the parent's ``before`` the interval of
        the child's fork (None for a child already running when watching
        began), and the relatives' now: ``relatives`` all of them (siblings
        and the parent's ancestors), ``older`` those forked before the child."""
        parent, ranges = base.frames, base.ranges
        own = np.not_equal(child, parent)
        own &= child != 0
        own = np.flatnonzero(own)
        c, p = child[own], parent[own]
        origin, known = p.copy(), p == 0
        for relative in relatives:
            hit = relative[own] == c                       # rule 2
            origin[hit], known = c[hit], known | hit
        if before is not None:
            b = before[own]
            kept = ~known & (c == b) & (b != 0)            # rule 3, the parent replaced it since
            origin[kept], known = c[kept], known | kept
            known |= b == p                                # rule 3, the parent's page held still
        for relative in older:
            known |= relative[own] == p                    # rule 4
        # Where the child has the parent's frame, that is the origin; where
        # it has none, the parent's page came after the fork.
        differs = origin != p
        absent = child == 0
        absent &= parent != 0
        positions = np.concatenate((own[differs], np.flatnonzero(absent)))
        frames = np.concatenate((origin[differs], np.zeros(positions.size - int(differs.sum()), np.uint64)))
        order = np.argsort(positions, kind="stable")
        return cls(base, ranges.page_numbers(positions[order]), frames[order], ranges.page_numbers(own[~known]))

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The origin frames at ``positions`` (sorted) over ``ranges``."""
        frames = self.base.frames[positions]
        if self.fixed_pages.size and positions.size:
            pages = self.ranges.page_numbers(positions)
            index = np.minimum(np.searchsorted(self.fixed_pages, pages), self.fixed_pages.size - 1)
            hit = self.fixed_pages[index] == pages
            frames[hit] = self.fixed_frames[index[hit]]
        return frames

    def absent(self) -> np.ndarray:
        """Over ``ranges``: True where the parent had no anonymous page at the fork."""
        absent = self.base.frames == 0
        if self.fixed_pages.size:
            positions, inside = self.ranges.positions_of(self.fixed_pages)
            absent[positions] = self.fixed_frames[inside] == 0
        return absent

    def on(self, ranges: PageRanges) -> "ForkOrigin":
        """The same origin over the parent's current ``ranges``.  An address
        mapped since the child was first seen had no page at its fork."""
        if ranges == self.ranges:
            return self
        return ForkOrigin(self.base.on(ranges), self.fixed_pages, self.fixed_frames, self.unsure_pages)


@dataclass(frozen=True)
class Figures:
    """What one watched process holds, in bytes (whole pages).

    For a forked child, against its parent (see the module's text):
    ``copied_bytes`` (of which ``unsure_bytes`` presumed), ``shared_bytes``,
    ``fresh_bytes``, ``parent_written_bytes``.  For a parent, against its
    forked children: ``shared_bytes`` with at least one child,
    ``copied_bytes`` its own copies of pages a child still has from its
    fork, ``fresh_bytes`` pages none of them was forked with.
    ``resident_bytes`` is every present private anonymous page.

    Without readable frame numbers (no CAP_SYS_ADMIN) ``copied_bytes`` and
    ``parent_written_bytes`` are None; ``shared_bytes`` is then the pages
    some other process maps too (the parent or a sibling: pagemap's
    exclusive bit cannot say which, and the zero page counts),
    ``copied_at_most_bytes`` the child's own pages at the parent's
    addresses (copied, parent-written and fresh together), and
    ``fresh_bytes`` the pages where the parent has none.

    ``types`` (with ``cowmem.watch.attach()`` in the parent) gives the bytes
    of each type of the parent's objects inside the copied pages, largest
    first.  ``mappings`` gives the copied bytes by mapping name; ``copied_pages``,
    ``unsure_pages`` and ``parent_written_pages`` the page numbers (address
    >> 12, sorted) of the copied pages, of those of them that are unsure,
    and of the parent-written ones; they are not part of the output.
    """

    resident_bytes: int
    shared_bytes: int
    copied_bytes: Optional[int]
    fresh_bytes: Optional[int]
    unsure_bytes: int = 0
    parent_written_bytes: Optional[int] = None
    copied_at_most_bytes: Optional[int] = None
    mappings: Dict[str, int] = field(default_factory=dict)
    copied_pages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False, repr=False)
    unsure_pages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False, repr=False)
    parent_written_pages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False,
                                             repr=False)
    types: Optional[Dict[str, int]] = None

    def to_dict(self) -> Dict[str, object]:
        out = {name: getattr(self, name) for name in (
            "copied_bytes", "shared_bytes", "fresh_bytes", "unsure_bytes", "parent_written_bytes",
            "resident_bytes")}
        if self.copied_bytes is None:
            out["copied_at_most_bytes"] = self.copied_at_most_bytes
        out["mappings"] = dict(self.mappings)
        if self.types is not None:
            out["types"] = dict(self.types)
        return out


@dataclass(frozen=True)
class ChildComparison:
    """A child's figures plus what its parent's figures are built from
    (positions over the parent's ranges)."""

    figures: Figures
    shared: np.ndarray            # bool over the parent's ranges
    parent_copied: np.ndarray     # positions where the parent replaced a page the child still has


def compare_child(parent: ProcessPages, child: ProcessPages, origin: ForkOrigin) -> ChildComparison:
    """The child's figures; ``child`` was read onto the parent's ranges."""
    pf, frames = parent.frames, child.frames
    held = frames != 0
    same = frames == pf
    shared = same & held
    own = np.flatnonzero(held > same)
    o, p = origin.at(own), pf[own]
    born = o == 0
    copied = own[~born & (p == o)]
    copied_pages = parent.ranges.page_numbers(copied)
    unsure_pages = copied_pages[np.isin(copied_pages, origin.unsure_pages, assume_unique=True)]
    written = ~born & (p != o)
    held_inside = int(np.count_nonzero(held))
    figures = Figures(
        resident_bytes=(held_inside + child.outside) * PAGE_SIZE,
        shared_bytes=int(np.count_nonzero(shared)) * PAGE_SIZE,
        copied_bytes=int(copied.size) * PAGE_SIZE,
        unsure_bytes=int(unsure_pages.size) * PAGE_SIZE,
        fresh_bytes=(int(np.count_nonzero(born)) + child.outside) * PAGE_SIZE,
        parent_written_bytes=int(np.count_nonzero(written)) * PAGE_SIZE,
        mappings=_by_mapping(parent.ranges, copied),
        copied_pages=copied_pages,
        unsure_pages=unsure_pages,
        parent_written_pages=parent.ranges.page_numbers(own[written]),
    )
    kept = own[written & (frames[own] == o)]
    return ChildComparison(figures, shared, kept)


def compare_parent(parent: ProcessPages, children: Sequence[ChildComparison],
                   origins: Sequence[ForkOrigin]) -> Figures:
    """The parent's figures against its forked children."""
    held = parent.frames != 0
    shared = np.zeros(held.size, bool)
    new = held.copy()
    replaced = np.zeros(held.size, bool)
    for child, origin in zip(children, origins):
        shared |= child.shared
        new &= origin.absent()
        replaced[child.parent_copied] = True
    return Figures(
        resident_bytes=int(np.count_nonzero(held)) * PAGE_SIZE,
        shared_bytes=int(np.count_nonzero(shared)) * PAGE_SIZE,
        copied_bytes=int(np.count_nonzero(replaced & held)) * PAGE_SIZE,
        fresh_bytes=int(np.count_nonzero(new)) * PAGE_SIZE,
    )


def compare_child_flags(parent: ProcessPages, child: ProcessPages) -> Figures:
    """A child's figures from pagemap's flags alone (frame numbers unreadable);
    ``child`` was read onto the parent's ranges."""
    held = child.anonymous
    both = held & parent.anonymous
    inside = int(np.count_nonzero(held))
    at_most = int(np.count_nonzero(both & child.exclusive))
    in_both = int(np.count_nonzero(both))
    return Figures(
        resident_bytes=(inside + child.outside) * PAGE_SIZE,
        shared_bytes=(in_both - at_most) * PAGE_SIZE,
        copied_bytes=None,
        fresh_bytes=(inside - in_both + child.outside) * PAGE_SIZE,
        copied_at_most_bytes=at_most * PAGE_SIZE,
    )


def compare_parent_flags(parent: ProcessPages) -> Figures:
    """A parent's figures from pagemap's flags alone: shared with some other process."""
    anonymous = parent.anonymous
    return Figures(
        resident_bytes=int(np.count_nonzero(anonymous)) * PAGE_SIZE,
        shared_bytes=int(np.count_nonzero(anonymous & ~parent.exclusive)) * PAGE_SIZE,
        copied_bytes=None,
        fresh_bytes=None,
    )


def _by_mapping(ranges: PageRanges, positions: np.ndarray) -> Dict[str, int]:
    if positions.size == 0:
        return {}
    out: Dict[str, int] = {}
    which, counts = np.unique(ranges.mapping_of(positions), return_counts=True)
    for index, count in zip(which.tolist(), counts.tolist()):
        label = ranges.labels[index]
        out[label] = out.get(label, 0) + count * PAGE_SIZE
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))

