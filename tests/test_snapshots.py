"""The snapshots' own machinery, checked against numpy on made-up entries:
which pieces a child keeps, and the mappings it compares with the plans'."""

from __future__ import annotations

import mmap
import tempfile

import numpy as np
import pytest

from cowmem._linux import maps
from cowmem._linux.buffers import release, shared_buffer
from cowmem._linux.pagemap import ENTRY_SIZE, PAGE_SIZE
from cowmem._linux.snapshots import _WINDOW, PIECE, PagemapSnapshots, keep_changes

ENTRIES_PER_PAGE = PAGE_SIZE // ENTRY_SIZE
WINDOW_PAGES = _WINDOW // ENTRY_SIZE  # entries the second reading reads at a time


def snapshots_of(page_counts, gap=7):
    """PagemapSnapshots over made-up ranges of the given sizes (in pages), reading a made-up pagemap."""
    ranges, start = [], 1 << 30
    for count in page_counts:
        ranges.append((start, start + count * PAGE_SIZE))
        start += (count + gap) * PAGE_SIZE  # apart: not merged into one range
    size = PagemapSnapshots.bytes_for(ranges)
    private = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    kept = shared_buffer(PagemapSnapshots.kept_bytes(size), populate=False)
    pagemap = tempfile.NamedTemporaryFile(prefix="pagemap-")
    snaps = PagemapSnapshots(ranges, memoryview(private), memoryview(kept), path=pagemap.name)
    snaps.attach()
    return snaps, (private, kept, pagemap)


def close(snaps, buffers):
    snaps.close()
    private, kept, pagemap = buffers
    release(private, kept)
    pagemap.close()


def pagemap_holds(snaps, entries):
    """Write ``entries`` (laid end to end, as in a snapshot) where a pagemap holds the ranges' entries."""
    at = 0
    for start, stop in snaps.ranges:
        n = (stop - start) // PAGE_SIZE
        with open(snaps.path, "r+b") as f:
            f.seek((start // PAGE_SIZE) * ENTRY_SIZE)
            f.write(entries[at:at + n].tobytes())
        at += n


def readings(snaps, before, after, keep_baseline=False):
    """Take the baseline with the pagemap holding ``before``, then the changes with it holding ``after``."""
    pagemap_holds(snaps, before)
    snaps.reset()
    snaps.take_baseline()
    assert (snaps.baseline == before).all()
    pagemap_holds(snaps, after)
    keep_changes(snaps.second_reading())
    if keep_baseline:
        snaps.keep_baseline()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("page_counts", [[1], [3, 700, 1], [PIECE - 1, PIECE + 1], [40_000],
                                         [5, 16 * PIECE + 3, 2], [WINDOW_PAGES - 1, 2, WINDOW_PAGES + 1]])
def test_the_changes_kept_are_exactly_the_entries_that_differ(page_counts, seed):
    rng = np.random.default_rng(seed)
    snaps, buffers = snapshots_of(page_counts)
    try:
        n = snaps.npages
        before = rng.integers(0, 1 << 63, n, dtype=np.uint64)
        after = before.copy()
        # Changes at the edges of pieces, of memcmp's chunks and of the windows, and anywhere.
        edges = [0, n - 1, PIECE - 1, PIECE, 16 * PIECE - 1, 16 * PIECE, 16 * PIECE + 1,
                 WINDOW_PAGES - 1, WINDOW_PAGES, 2 * WINDOW_PAGES - 1]
        changed = sorted({p for p in edges if p < n} | set(rng.integers(0, n, 1 + n // 997).tolist()))
        changed = [p for p in changed if rng.random() < 0.7]
        after[changed] ^= np.uint64(1 << 56)
        readings(snaps, before, after)
        assert snaps.changed_positions().tolist() == (before != after).nonzero()[0].tolist() == changed
        kept_before, kept_after = snaps.kept_entries
        assert (kept_before[changed] == before[changed]).all() and (kept_after[changed] == after[changed]).all()
    finally:
        close(snaps, buffers)


def test_with_regions_the_whole_baseline_is_kept():
    snaps, buffers = snapshots_of([3, 2 * PIECE + 5])
    try:
        before = np.arange(1, snaps.npages + 1, dtype=np.uint64)
        after = before.copy()
        after[PIECE + 2] += np.uint64(1)
        readings(snaps, before, after, keep_baseline=True)
        assert (snaps.kept_entries[0][:before.size] == before).all()
        assert snaps.changed_positions().tolist() == [PIECE + 2]
    finally:
        close(snaps, buffers)


def test_nothing_kept_from_an_earlier_run_shows_as_a_change():
    snaps, buffers = snapshots_of([2 * PIECE])
    try:
        before = np.ones(snaps.npages, np.uint64)
        after = before.copy()
        after[::PIECE // 2] = 2
        readings(snaps, before, after)
        assert snaps.changed_positions().size == 4
        readings(snaps, before, before)  # a second run in the same buffers, where nothing changed
        assert snaps.changed_positions().size == 0
    finally:
        close(snaps, buffers)


def test_the_last_pieces_padding_is_no_entry():
    # Entries past the last one, in the last piece's kept pages, hold
    # whatever an earlier, larger plan left there.
    snaps, buffers = snapshots_of([PIECE + 3])
    try:
        kept_before, kept_after = snaps.kept_entries
        kept_before[PIECE + 3:], kept_after[PIECE + 3:] = 5, 6
        before = np.ones(snaps.npages, np.uint64)
        after = before.copy()
        after[PIECE + 1] = 9
        readings(snaps, before, after)
        assert snaps.changed_positions().tolist() == [PIECE + 1]
    finally:
        close(snaps, buffers)


def test_the_warm_up_keeps_nothing_and_reads_nothing_into_the_baseline():
    snaps, buffers = snapshots_of([3, PIECE + 1])
    try:
        before = np.arange(7, 7 + snaps.npages, dtype=np.uint64)
        pagemap_holds(snaps, before)
        snaps.reset()
        snaps.baseline[:] = 0
        snaps.warm_up()
        assert snaps.changed_positions().size == 0
        assert not snaps.baseline.any()
    finally:
        close(snaps, buffers)


def test_page_numbers_and_positions_are_inverse():
    snaps, buffers = snapshots_of([3, 10, 1])
    try:
        positions = np.arange(snaps.npages)
        pages = snaps.page_numbers(positions)
        expected = [(start >> 12) + k for start, stop in snaps.ranges for k in range((stop - start) >> 12)]
        assert pages.tolist() == expected
        assert snaps.positions_of(pages).tolist() == positions.tolist()
        outside = np.array([expected[0] - 1, expected[2] + 1, expected[-1] + 1], np.uint64)
        assert snaps.positions_of(outside).size == 0
    finally:
        close(snaps, buffers)


# --- the mappings, compared with the plans' ------------------------------

@pytest.fixture(params=["PROCMAP_QUERY", "maps text"])
def query(request, monkeypatch):
    if request.param == "maps text":
        monkeypatch.setattr(maps, "_query_missing", [True])
    elif maps._query_missing:
        pytest.skip("this kernel has no PROCMAP_QUERY (Linux 6.11+)")
    return request.param


def text_ranges():
    return maps.private_writable_ranges(maps.parse_maps(maps.read_maps_text(), private_writable_only=True))


def test_the_private_writable_mappings_are_those_of_the_maps_text(query):
    assert maps.private_writable_now() == text_ranges()


def test_a_new_mapping_or_a_missing_one_is_told_apart(query):
    now = maps.private_writable_now()
    assert maps.private_writable_are(now)
    assert not maps.private_writable_are(now[:-1])
    assert not maps.private_writable_are(now + [(1 << 46, (1 << 46) + PAGE_SIZE)])
    late = mmap.mmap(-1, 64 * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        assert not maps.private_writable_are(now)
        assert maps.private_writable_are(text_ranges())
    finally:
        late.close()
