"""The comparison behind `cowmem watch`, on frames whose history is made up,
so that what each page is (copied, shared, fresh, parent-written, unsure)
is known by construction; and the page-range arithmetic, against sets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cowmem import PAGE_SIZE
from cowmem.watch.compare import ForkOrigin, Snapshot, compare_child, compare_parent
from cowmem.watch.pagemaps import PageRanges, ProcessPages

# --- page ranges ----------------------------------------------------------


def random_ranges(rng: random.Random) -> PageRanges:
    cuts = sorted(rng.sample(range(200), 2 * rng.randint(0, 6)))
    pairs = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
    return PageRanges(tuple(a for a, _ in pairs), tuple(b for _, b in pairs), tuple("x" for _ in pairs))


def pages_of(ranges: PageRanges) -> list:
    return [p for a, b in zip(ranges.starts, ranges.stops) for p in range(a, b)]


@pytest.mark.parametrize("seed", range(200))
def test_range_arithmetic_matches_sets(seed):
    rng = random.Random(seed)
    a, b = random_ranges(rng), random_ranges(rng)
    position_a = {p: i for i, p in enumerate(pages_of(a))}
    position_b = {p: i for i, p in enumerate(pages_of(b))}
    seen = set()
    for page, in_b, in_a, count in a.overlaps(b):
        for k in range(count):
            assert position_b[page + k] == in_b + k and position_a[page + k] == in_a + k
            seen.add(page + k)
    assert seen == set(position_a) & set(position_b)
    assert {p for lo, hi in a.minus(b) for p in range(lo, hi)} == set(position_a) - set(position_b)
    assert a.page_numbers(np.arange(a.npages)).tolist() == pages_of(a)
    probe = np.arange(0, 210)
    positions, inside = a.positions_of(probe)
    assert probe[inside].tolist() == sorted(position_a)
    assert positions.tolist() == [position_a[p] for p in probe[inside].tolist()]


# --- made-up histories ----------------------------------------------------

RANGES = PageRanges((100,), (110,), ("[heap]",))   # ten pages, 100..109
N = 10


def pages(frames) -> ProcessPages:
    frames = np.asarray(frames, np.uint64)
    return ProcessPages(0, RANGES, frames, np.zeros(N, np.uint8))


def classify(origin: ForkOrigin, parent, child) -> dict:
    f = compare_child(pages(parent), pages(child), origin).figures
    return {"copied": {int(p) - 100 for p in f.copied_pages}, "unsure": {int(p) - 100 for p in f.unsure_pages},
            "written": {int(p) - 100 for p in f.parent_written_pages}, "shared": f.shared_bytes // PAGE_SIZE,
            "fresh": f.fresh_bytes // PAGE_SIZE}


# Frames at fork: page k holds frame 10 + k.  Later frames are 100+.
AT_FORK = [10 + k for k in range(N)]


def test_a_child_first_seen_at_its_fork_is_exact():
    """Seen sharing everything; then it copies pages 0-2, the parent
    rewrites 3-4 (the child keeps the originals) and 5 (both write), and
    the child maps fresh memory at 9, where the parent had none."""
    parent0 = AT_FORK[:9] + [0]
    origin = ForkOrigin.infer(Snapshot(RANGES, np.array(parent0, np.uint64)), np.array(parent0, np.uint64))
    parent = [10, 11, 12, 103, 104, 105, 16, 17, 18, 0]
    child = [200, 201, 202, 13, 14, 205, 16, 17, 18, 209]
    got = classify(origin, parent, child)
    assert got == {"copied": {0, 1, 2}, "unsure": set(), "written": {3, 4, 5}, "shared": 3, "fresh": 1}


def test_watched_late_siblings_and_history_decide():
    """A child first seen after the fact (no reading before its fork).

    Page 0: it copied, an older sibling still shares the parent's: sure copy.
    Page 1: it copied, only a younger sibling shares the parent's: unsure.
    Page 2: the parent rewrote, a sibling still shares the child's: parent-written.
    Page 3: nobody shares anything: unsure (counted as copied).
    Page 4: the parent has nothing there now: not a copy (fresh).
    """
    parent = np.array([10, 11, 102, 13, 0, 15, 16, 17, 18, 19], np.uint64)
    child = np.array([200, 201, 12, 203, 204, 15, 16, 17, 18, 19], np.uint64)
    older = np.array([10, 301, 12, 303, 0, 15, 16, 17, 18, 19], np.uint64)
    younger = np.array([400, 11, 12, 403, 0, 15, 16, 17, 18, 19], np.uint64)
    origin = ForkOrigin.infer(Snapshot(RANGES, parent.copy()), child, relatives=[older, younger], older=[older])
    got = classify(origin, parent, child)
    assert got == {"copied": {0, 1, 3}, "unsure": {1, 3}, "written": {2}, "shared": 5, "fresh": 1}
    # Later the parent rewrites page 3: it did so after the fork, so page 3
    # was never the child's copy; page 1 stays unsure.
    parent[3] = 503
    assert classify(origin, parent, child)["written"] == {2, 3}
    assert classify(origin, parent, child)["unsure"] == {1}


def test_a_fork_between_two_readings_is_decided_by_them():
    """The parent was read before the fork interval (``before``) and after.

    Page 0: the parent's frame held still, the child's differs: copied, sure.
    Page 1: the parent replaced it in the interval; the child has the
    earlier frame: forked with it, parent-written.
    Page 2: the parent replaced it in the interval and the child has a third
    frame: unsure.
    Page 3: the parent had no page before nor after: the child's is fresh.
    """
    before = np.array([10, 11, 12, 0, 14, 15, 16, 17, 18, 19], np.uint64)
    parent = np.array([10, 101, 102, 0, 14, 15, 16, 17, 18, 19], np.uint64)
    child = np.array([200, 11, 202, 203, 14, 15, 16, 17, 18, 19], np.uint64)
    origin = ForkOrigin.infer(Snapshot(RANGES, parent.copy()), child, before=before)
    got = classify(origin, parent, child)
    assert got == {"copied": {0, 2}, "unsure": {2}, "written": {1}, "shared": 6, "fresh": 1}


def test_an_older_sibling_forked_in_the_same_interval_decides_what_the_readings_cannot():
    """Two children forked in one interval, in which the parent also
    replaced pages 0 and 1 (as gunicorn loads its app, then forks every
    worker at once).  The younger child has its own frames there.

    Page 0: the older sibling still shares the parent's new frame: the
    parent had it at the older's fork, so at the younger's too: copied, sure.
    Page 1: the older sibling copied it too: nothing tells: unsure.
    """
    before = np.array([10, 11, 12, 13, 14, 15, 16, 17, 18, 19], np.uint64)
    parent = np.array([100, 101, 12, 13, 14, 15, 16, 17, 18, 19], np.uint64)
    child = np.array([200, 201, 12, 13, 14, 15, 16, 17, 18, 19], np.uint64)
    older = np.array([100, 301, 12, 13, 14, 15, 16, 17, 18, 19], np.uint64)
    origin = ForkOrigin.infer(Snapshot(RANGES, parent.copy()), child, before=before,
                              relatives=[older], older=[older])
    got = classify(origin, parent, child)
    assert got == {"copied": {0, 1}, "unsure": {1}, "written": set(), "shared": 8, "fresh": 0}


def test_the_parents_figures():
    """The parent shares what any child shares, has copies of what it
    rewrote while a child kept the original, and fresh pages no child was
    forked with."""
    parent0 = AT_FORK[:8] + [0, 0]
    base = Snapshot(RANGES, np.array(parent0, np.uint64))
    origins = [ForkOrigin.infer(base, np.array(parent0, np.uint64)) for _ in range(2)]
    parent = [10, 101, 102, 13, 14, 15, 16, 17, 108, 0]   # rewrote 1, 2; new page at 8
    first = [200, 11, 202, 13, 14, 15, 16, 17, 0, 0]      # copied 0, kept 1, wrote 2 too
    second = [10, 11, 302, 303, 14, 15, 16, 17, 0, 0]     # shares 0, kept 1, copied 2 and 3
    children = [compare_child(pages(parent), pages(c), o) for c, o in zip((first, second), origins)]
    f = compare_parent(pages(parent), children, origins)
    assert f.resident_bytes == 9 * PAGE_SIZE
    assert f.shared_bytes == 6 * PAGE_SIZE     # 0 (second), 3 (first), 4-7
    assert f.copied_bytes == 1 * PAGE_SIZE     # 1: the children still have the original
    assert f.fresh_bytes == 1 * PAGE_SIZE      # 8
