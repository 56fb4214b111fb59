"""Cases the page state makes easy to count wrong: swapped pages, mappings
without a baseline, and a kernel that decides the exclusive bit per folio."""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np
import pytest

from cowmem import PAGE_SIZE, ForkMeter, measure_fork
from cowmem import meter, snapshot_diff
from cowmem._linux import probe, snapshots
from cowmem._linux.buffers import shared_buffer
from cowmem._linux.maps import private_writable_ranges, read_maps
from cowmem._linux.pagemap import FLAG_EXCLUSIVE, FLAG_PRESENT, PAGEMAP_PATH
from cowmem._linux.ranges import subtract_ranges
from cowmem.errors import UnsupportedPlatformError

from capabilities import needs

PRESENT, SWAPPED, EXCLUSIVE = 1 << 63, 1 << 62, 1 << 56
ZERO_FRAME = 7


def entry(*bits, frame=0):
    return sum(bits) | frame


# --- swap: there is no swap on the machine the tests were written on, so
# the swapped entries are made by hand and fed to the real comparison.

def test_swapped_pages_are_counted_apart_never_as_copied_or_fresh():
    cases = [  # (before, after, what the change is)
        (entry(PRESENT, frame=100), entry(PRESENT, EXCLUSIVE, frame=200), "copied"),
        (entry(SWAPPED, frame=0x1234), entry(PRESENT, EXCLUSIVE, frame=300), "swapped"),  # swapped in, written
        (entry(PRESENT, frame=101), entry(SWAPPED, frame=0x2345), "swapped"),             # swapped out meanwhile
        (entry(SWAPPED, frame=0x3456), entry(PRESENT, frame=102), "neither"),             # swapped in, only read
        (entry(SWAPPED, frame=0x4567), entry(SWAPPED, frame=0x4567), "neither"),           # untouched
        (0, entry(PRESENT, EXCLUSIVE, frame=400), "fresh"),
        (entry(PRESENT, frame=ZERO_FRAME), entry(PRESENT, EXCLUSIVE, frame=500), "fresh"),  # the zero page
        (entry(PRESENT, frame=103), entry(PRESENT, EXCLUSIVE, frame=103), "left"),  # the parent took the copy
    ]
    before = np.array([b for b, _, _ in cases], np.uint64)
    after = np.array([a for _, a, _ in cases], np.uint64)
    kinds = [k for _, _, k in cases]
    diff = snapshot_diff.compare(before, after, ZERO_FRAME)
    assert diff.copied.tolist() == [i for i, k in enumerate(kinds) if k == "copied"]
    assert diff.fresh == kinds.count("fresh")
    assert diff.swapped == kinds.count("swapped")
    assert diff.left.tolist() == [i for i, k in enumerate(kinds) if k == "left"]


def test_the_report_counts_written_pages_that_were_swapped_out_in_swapped_bytes(monkeypatch):
    k, swapped_out = 40, 15
    buf = mmap.mmap(-1, k * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buf, np.uint8)
    view[::PAGE_SIZE] = 1
    first = view.ctypes.data >> 12
    read, keep_changes, second = snapshots._read, meter.keep_changes, []

    def swap_some_out(fd, plan):
        read(fd, plan)
        if second:
            # As if the kernel had swapped out the first pages the access
            # wrote, before the second snapshot: a swap entry where the copy was.
            offsets, views = plan
            for offset, (into,) in zip(offsets, views):
                entries = np.frombuffer(into, np.uint64)
                pages = offset // 8 + np.arange(entries.size, dtype=np.uint64)
                entries[(pages >= first) & (pages < first + swapped_out)] = np.uint64(SWAPPED | 0x99)

    def second_reading(reading):
        second.append(True)
        keep_changes(reading)
        second.clear()

    monkeypatch.setattr(snapshots, "_read", swap_some_out)
    monkeypatch.setattr(meter, "keep_changes", second_reading)
    span = (view.ctypes.data, view.ctypes.data + view.size)
    report = measure_fork(lambda: view.__setitem__(slice(None, None, PAGE_SIZE), 2), regions={"pages": span})
    assert report.regions["pages"] == (k - swapped_out) * PAGE_SIZE
    assert report.swapped_bytes == swapped_out * PAGE_SIZE
    assert report.to_dict()["swapped_bytes"] == swapped_out * PAGE_SIZE


# --- pages the parent writes while the child runs the access -------------

@needs("frames")
@pytest.mark.filterwarnings("ignore::cowmem.ForkSafetyWarning")         # the thread holds no lock the child needs
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")   # os.fork's own, from 3.12
def test_a_page_the_parent_writes_during_the_access_is_unobserved_not_lost():
    # The parent's write gives the parent the copy; the child keeps the
    # original frame, alone, and its own write there copies nothing.  A
    # thread of the parent writes, on the access's word, while the main
    # thread waits for the child.
    k, taken = 12, 5
    buf = mmap.mmap(-1, k * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buf, np.uint8)
    view[::PAGE_SIZE] = 1
    (go_read, go_write), (done_read, done_write) = os.pipe(), os.pipe()

    def parent_writes():
        if os.read(go_read, 1):
            view[:taken * PAGE_SIZE:PAGE_SIZE] = 3
            os.write(done_write, b"x")

    def access():
        os.write(go_write, b"x")
        os.read(done_read, 1)
        view[::PAGE_SIZE] = 2

    writer = threading.Thread(target=parent_writes)
    writer.start()
    try:
        report = measure_fork(access, regions={"pages": (view.ctypes.data, view.ctypes.data + view.size)})
    finally:
        os.close(go_write)   # the thread ends, whatever happened to the child
        writer.join()
        for fd in (go_read, done_read, done_write):
            os.close(fd)
    assert report.regions["pages"] == (k - taken) * PAGE_SIZE
    assert report.unobserved["pages"] == taken * PAGE_SIZE
    assert view[::PAGE_SIZE].tolist() == [3] * taken + [1] * (k - taken)   # the parent's writes, not the child's


# --- memory mapped after the snapshots' ranges were read ------------------

def test_pages_of_a_late_mapping_count_as_fresh_only_where_this_process_holds_them_alone():
    n, written = 256, 10
    facts = probe.pagemap_facts()
    late = mmap.mmap(-1, n * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(late, np.uint8)
    start = view.ctypes.data
    view[::PAGE_SIZE] = 1  # present before the fork: shared with the child after it
    known = sorted(subtract_ranges(private_writable_ranges(read_maps()),
                           [(start, start + n * PAGE_SIZE)]))
    shared = shared_buffer(PAGE_SIZE)
    counts = np.frombuffer(shared, np.int64)
    pid = os.fork()
    if pid == 0:
        try:
            view[:written * PAGE_SIZE:PAGE_SIZE] = 2
            counts[0] = snapshot_diff.fresh_in_new_mappings(known, facts)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # The child holds alone the pages it wrote; the others are the parent's
    # too, and no page the child found there is new.
    assert counts[0] == written
    del counts, view


def test_a_meter_whose_process_maps_memory_before_the_fork_counts_none_of_it_as_fresh():
    n = 512
    with ForkMeter() as measure:
        late = mmap.mmap(-1, n * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        late.write(b"\x01" * len(late))  # n pages present, in a mapping the meter never saw
        pid = os.fork()
        if pid == 0:
            try:
                measure.run(lambda: None)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        report = measure.report()
    # The no-op access populates nothing of its own beyond a few interpreter
    # pages; before bit 56 was consulted, all n pages counted as fresh.
    assert report.fresh_pages < n


# --- CONFIG_NO_PAGE_MAPCOUNT ----------------------------------------------

def folio_answer(per_page):
    """A huge page's flags after the probe's writes, as each kind of kernel shows them."""
    flags = np.full(512, FLAG_PRESENT, np.uint8)
    flags[1] |= FLAG_EXCLUSIVE          # this process's own copy
    if per_page:
        flags[0] |= FLAG_EXCLUSIVE      # mapped by this process alone
    return flags


@pytest.fixture
def fresh_facts(monkeypatch):
    """The probe runs again, with whatever answer the test gives it."""
    monkeypatch.setattr(probe, "_facts", {})


def test_a_kernel_that_decides_the_exclusive_bit_per_folio_is_refused(fresh_facts, monkeypatch):
    monkeypatch.setattr(probe, "_huge_page_split_by_both", lambda path: folio_answer(per_page=False))
    with pytest.raises(UnsupportedPlatformError, match="CONFIG_NO_PAGE_MAPCOUNT"):
        measure_fork(lambda: None)
    with pytest.raises(UnsupportedPlatformError, match="per large folio"):
        ForkMeter()


def test_a_kernel_that_decides_it_per_page_is_measured(fresh_facts, monkeypatch):
    monkeypatch.setattr(probe, "_huge_page_split_by_both", lambda path: folio_answer(per_page=True))
    assert probe.pagemap_facts().exclusive_per_page is True
    measure_fork(lambda: None)


def test_without_a_huge_page_the_probe_says_it_cannot_tell(fresh_facts, monkeypatch):
    monkeypatch.setattr(probe, "_huge_page_split_by_both", lambda path: None)
    assert probe.pagemap_facts().exclusive_per_page is None
    measure_fork(lambda: None)


@needs("thp")
def test_this_kernel_decides_the_exclusive_bit_per_page(fresh_facts):
    flags = probe._huge_page_split_by_both(PAGEMAP_PATH)
    assert flags is not None and flags.size == 512
    mine = (flags & FLAG_EXCLUSIVE) != 0
    assert mine[0] and mine[1] and not mine[2:].any()
    assert probe.pagemap_facts().exclusive_per_page is True
