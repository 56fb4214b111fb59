"""Explain mode: the first write to every copied page, named and classified.

Every case asserts what it determines: the exact pages and addresses the
child wrote, the cause of each page's first write, and that the explained
pages inside the data are exactly the pages the pagemap method counts as
copied there.
"""

import ctypes
import gc
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest

from cowmem import PAGE_SIZE, measure_fork, memory_ranges, uffd
from cowmem.errors import UnsupportedPlatformError
from cowmem.errors import ExplainError, ExplainUnavailableError
from cowmem.explain import CAUSES, FaultTracer
from cowmem.explain.causes import classify
from cowmem.index import ObjectIndex
from cowmem.locate import index_objects
from cowmem._linux.maps import read_maps
from cowmem._linux.pagemap import PAGE_SHIFT, page_span

from capabilities import needs
from test_ground_truth import anon_huge_bytes

SMALL_INTS_IMMORTAL = sys.version_info >= (3, 12)


def copied_pages(report):
    """Page numbers of every page the pagemap method counted as copied."""
    parts = [np.arange(a >> PAGE_SHIFT, b >> PAGE_SHIFT, dtype=np.uint64) for a, b in report.copied_ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def pages_of(obj):
    """Page numbers holding ``obj`` as cowmem counts it (memory_ranges)."""
    return page_span(memory_ranges(obj))


def page(address):
    return address >> PAGE_SHIFT


def object_block(obj):
    """[start, stop) of ``obj``'s header: what getsizeof adds before it (GC header), its basic size."""
    return id(obj) - (sys.getsizeof(obj) - obj.__sizeof__()), id(obj) + type(obj).__basicsize__


def kind(obj):
    """The type name explain mode reports for ``obj``."""
    return type(obj).__qualname__


def explained_in(explanation, pages):
    return np.intersect1d(explanation.explained_pages, pages)


def inner_pages(start, stop):
    """Pages wholly inside ``[start, stop)``: an edge page may hold other data too."""
    return np.arange(-(-start >> PAGE_SHIFT), stop >> PAGE_SHIFT, dtype=np.uint64)


# --- the ground truth -----------------------------------------------------

def _bytearray(npages):
    buf = bytearray(b"\x01") * (npages * PAGE_SIZE)
    return buf, np.frombuffer(buf, np.uint8)


def _ndarray(npages):
    arr = np.ones(npages * PAGE_SIZE // 8)   # large: numpy asks for huge pages
    return arr, arr.view(np.uint8)


@pytest.mark.parametrize("k", [1, 10, 1000])
@pytest.mark.parametrize("make", [_bytearray, _ndarray], ids=["bytearray", "ndarray"])
@needs("userfaultfd")
def test_k_pages_written_are_k_payload_writes_at_their_addresses(make, k):
    obj, view = make(2 * k + 2)
    base = view.ctypes.data
    if isinstance(obj, np.ndarray) and view.size >= 4 << 20:
        # numpy asks for huge pages from 4 MiB on: the case covers exact
        # addresses in huge pages only if the kernel gave them.
        assert anon_huge_bytes(base, base + view.size) >= view.size // 2
    first_page = (base + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    # One byte at offset 100 of every other page: k pages, k known addresses.
    targets = [first_page + 100 + 2 * j * PAGE_SIZE - base for j in range(k)]
    written = np.array([base + t for t in targets], np.uint64)

    def access():
        for t in targets:
            view[t] = 2

    report = measure_fork(access, regions={"data": obj}, explain=True)
    ex = report.explanation
    payload = ex.pages_of("payload", kind(obj))
    assert np.array_equal(payload, page(written))
    assert np.array_equal(ex.first_writes[np.isin(ex.explained_pages, payload)], written)
    assert np.array_equal(explained_in(ex, inner_pages(base, base + view.size)), page(written))
    # The explained set is the copied set; beyond the written pages it holds
    # at most the object's header page (its refcount) and the buffer's two
    # edge pages, which it may share with other memory.
    in_data = np.intersect1d(copied_pages(report), pages_of(obj))
    assert np.array_equal(explained_in(ex, in_data), in_data)
    edges = np.setdiff1d(page_span([(base, base + view.size)]), inner_pages(base, base + view.size))
    assert np.all(np.isin(np.setdiff1d(in_data, payload), np.union1d(page_span([object_block(obj)]), edges)))
    assert np.all(np.isin(ex.pages_of("refcount", kind(obj)), page_span([object_block(obj)])))
    assert ex.causes["payload"].example.startswith(kind(obj))
    assert len(ex.causes["payload"].example) < 300    # no repr of the whole buffer


# --- the question's cases ---------------------------------------------------

@needs("userfaultfd")
def test_iterating_a_list_of_ints_writes_every_int_refcount():
    data = list(range(100_000))

    def access():
        for _ in data:
            pass

    report = measure_fork(access, regions={"data": data}, explain=True)
    ex = report.explanation
    in_data = np.intersect1d(copied_pages(report), pages_of(data))
    explained = explained_in(ex, in_data)
    # Every copied page of the data is explained but those in a file's data
    # segment, which userfaultfd cannot protect: CPython 3.11 keeps the
    # small ints (0..256) in libpython's; 3.12 made them immortal (never
    # written); 3.9 and 3.10 allocate them on the heap.
    file_backed = page_span([(m.start, m.stop) for m in read_maps() if not m.label.startswith("[")])
    unprotectable = np.intersect1d(in_data, file_backed)
    assert np.array_equal(np.setdiff1d(in_data, explained), unprotectable)
    assert np.all(np.isin(unprotectable, page_span([(id(0), id(256) + 32)])))
    if SMALL_INTS_IMMORTAL:
        assert unprotectable.size == 0
    # Every explained page of the data is a reference-count write to an
    # int, but for the page of the list's own header (written first by the
    # loop's reference to the list, or by whatever shares its page).
    refcount_ints = ex.pages_of("refcount", "int")
    assert np.all(np.isin(np.setdiff1d(explained, refcount_ints), page_span([object_block(data)])))
    int_pages = page_span([(id(x), id(x) + 8) for x in data[257:]])
    assert np.array_equal(np.intersect1d(refcount_ints, int_pages), np.intersect1d(in_data, int_pages))
    assert ex.headline().endswith("by reference-count writes to int objects")


@needs("userfaultfd")
def test_gc_collect_writes_the_gc_header_of_every_inner_list():
    # Lists of the same size class made just before and after fill the
    # allocator's partly used pools, so that the data's pages hold lists
    # of the object map only.
    gc.collect()
    gc.disable()
    try:
        before = [[] for _ in range(20_000)]
        data = [[i] for i in range(30_000)]
        after = [[] for _ in range(20_000)]
    finally:
        gc.enable()
    report = measure_fork(gc.collect, regions={"data": data, "before": before, "after": after}, explain=True)
    ex = report.explanation
    # A full collection writes the GC header of every tracked object.  The
    # pages holding an inner list's GC header and no other container's block
    # are each written: copied, unless already the child's at the baseline
    # (unobserved).  In a heap fragmented by earlier tests, fewer of them
    # hold the data's lists alone.
    mine = {id(x) for x in data}
    headers = [(id(x) - 16, id(x)) for x in data]   # 16-byte aligned: never across a page boundary
    others = [(id(x) - 16, id(x) + type(x).__basicsize__) for x in gc.get_objects() if id(x) not in mine]
    alone = np.setdiff1d(page_span(headers), page_span(others))
    in_data = np.intersect1d(copied_pages(report), alone)
    assert alone.size and alone.size - in_data.size <= report.unobserved["data"] // PAGE_SIZE
    assert np.array_equal(explained_in(ex, in_data), in_data)
    # The first write to each is an inner list's GC header, or lies outside
    # every inner list: an untracked block on the page (a freed one, or one
    # the collection frees) written first.  Never another field of a list.
    first = ex.first_writes[np.searchsorted(ex.explained_pages, in_data)]
    starts = np.array(sorted(lo for lo, _ in headers), np.uint64)
    offset = first - starts[np.maximum(np.searchsorted(starts, first, side="right") - 1, 0)]
    size = np.uint64(16 + type(data[0]).__basicsize__)
    in_header, in_list = (first >= starts[0]) & (offset < 16), (first >= starts[0]) & (offset < size)
    assert in_header.any() and not (in_list & ~in_header).any()
    assert np.array_equal(np.intersect1d(ex.pages_of("gc_header", "list"), in_data[in_header]), in_data[in_header])
    assert ex.causes["gc_header"].example.startswith("list ")
    assert "PyGC_Head" in ex.causes["gc_header"].example


@needs("userfaultfd")
def test_reading_a_numpy_array_copies_nothing_of_its_buffer():
    data = np.ones(200_000)
    report = measure_fork(data.sum, regions={"data": data}, explain=True)
    ex = report.explanation
    buffer = np.setdiff1d(inner_pages(data.ctypes.data, data.ctypes.data + data.nbytes),
                          page_span([object_block(data)]))
    assert explained_in(ex, buffer).size == 0
    assert "ndarray" not in ex.causes["payload"].by_kind


# --- the explanation's arithmetic ------------------------------------------

@needs("userfaultfd")
def test_restrict_counts_copied_pages_without_a_fault_as_unexplained():
    data = bytearray(b"\x01") * (8 * PAGE_SIZE)
    view = np.frombuffer(data, np.uint8)
    report = measure_fork(lambda: view.__setitem__(slice(None, None, PAGE_SIZE), 2),
                          regions={"data": data}, explain=True)
    ex = report.explanation
    assert ex.copied_pages == report.copied_pages
    assert sum(c.pages for c in ex.causes.values()) + ex.unexplained_pages == ex.copied_pages
    assert sum(ex.unexplained_by_mapping.values()) == ex.unexplained_pages
    # Restricting to some explained pages plus one that never faulted.
    keep = ex.explained_pages[:3]
    never = np.array([page(id(data)) + (1 << 30)], np.uint64)
    sub = ex.restrict(np.concatenate([keep, never]))
    assert sub.copied_pages == keep.size + 1
    assert sub.unexplained_pages == 1
    assert sub.unexplained_by_mapping == {"[unmapped]": 1}
    rows = sub.format().splitlines()[1:]
    assert next(row for row in rows if row.split()[0] == "unexplained").split()[1:3] == ["1", "page"]
    assert len({row.index(" %") for row in rows}) == 1   # one page or many, the columns line up
    assert np.array_equal(sub.explained_pages, keep)
    assert sub.faults_served == ex.faults_served
    assert abs(sum(c.share for c in sub.causes.values()) + 1 / 4 - 1) < 1e-12


@needs("userfaultfd")
def test_to_dict_is_json_and_format_names_every_cause():
    data = list(range(5000, 15000))
    report = measure_fork(lambda: sum(data), regions={"data": data}, explain=True)
    text = json.dumps(report.to_dict())
    back = json.loads(text)["explanation"]
    assert set(back["causes"]) == set(CAUSES)
    assert back["copied_pages"] == report.copied_pages
    shown = report.explanation.format()
    assert shown.splitlines()[0] == report.explanation.headline()
    for cause in (*CAUSES, "unexplained"):
        assert cause in shown
    with pytest.raises(ValueError, match="unknown cause"):
        report.explanation.pages_of("refcnt")


def test_explain_off_leaves_the_report_without_explanation():
    report = measure_fork(lambda: None)
    assert report.explanation is None
    assert "explanation" not in report.to_dict()


# --- classifying addresses (no fork) -------------------------------------

class Plain:
    pass


def test_classify_names_each_field_of_known_layouts():
    # Strings made at run time: a literal is interned, and immortal on 3.12+.
    items = [10 ** 9, 2.5, "".join(["a", "bc"]), "".join(["é"] * 3), (1, 2), Plain()]
    arr = np.arange(1000.0)
    index = index_objects({"items": items, "arr": arr})
    item_storage = ctypes.c_void_p.from_address(id(items) + 24).value   # PyListObject.ob_item
    ascii_header = sys.getsizeof("") - 1
    cases = {
        id(items): "refcount", id(items) - 8: "gc_header", id(items) - 16: "gc_header",
        id(items) + 8: "other_header_field", item_storage + 16: "payload",
        id(items[0]): "refcount", id(items[0]) + 16: "other_header_field", id(items[0]) + 24: "payload",
        id(items[1]) + 16: "payload",                              # a float's value follows its head
        id(items[2]) + 24: "other_header_field",                   # a str's hash
        id(items[2]) + ascii_header: "payload",                    # ASCII characters
        id(items[3]) + ascii_header: "other_header_field",         # not ASCII: a longer header
        id(items[4]) - 16: "gc_header", id(items[4]) + 24: "payload",   # a tuple's items
        arr.ctypes.data + 800: "payload", id(arr): "refcount",
        1 << 20: "outside_data",
    }
    if sys.version_info >= (3, 11):
        cases[id(items[5]) - 32] = "other_header_field"            # the managed-dict pre-header
    addresses = list(cases)
    found = classify(index, np.array(addresses, np.uint64))
    assert dict(zip(addresses, (CAUSES[c] for c in found["cause"]))) == cases
    owner = {a: int(index.owner[r]) if r >= 0 else None for a, r in zip(addresses, found["row"].tolist())}
    assert owner[id(items[0])] == id(items[0]) and owner[item_storage + 16] == id(items)
    assert owner[arr.ctypes.data + 800] == id(arr)
    assert found["region"][addresses.index(id(items))] == 0
    assert found["region"][addresses.index(id(arr))] == 1
    assert found["region"][addresses.index(1 << 20)] == -1


def test_an_object_met_twice_has_one_row():
    shared = 10 ** 9
    data = [shared] * 1000 + list(range(10 ** 6, 10 ** 6 + 10_000))
    index = index_objects({"data": data, "again": data})
    assert np.all(index.lo[1:] >= index.hi[:-1])
    assert len(index) == 1 + 1 + 1 + 10_000   # the list, its item storage, the shared int, the others


# --- unavailable, failing, never blocking -----------------------------------

def test_no_userfaultfd_syscall_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(uffd.SYSCALL_NUMBERS, os.uname().machine, 100_000)   # ENOSYS
    with pytest.raises(ExplainUnavailableError, match="no userfaultfd syscall") as info:
        measure_fork(lambda: None, explain=True)
    assert isinstance(info.value, UnsupportedPlatformError)
    assert measure_fork(lambda: None).explanation is None   # the plain measurement still works


@needs("userfaultfd")
def test_missing_write_protect_features_are_a_clear_error(monkeypatch):
    monkeypatch.setattr(uffd, "WANTED_FEATURES", uffd.WANTED_FEATURES | (1 << 62))
    with pytest.raises(ExplainUnavailableError, match="UFFDIO_API refused"):
        measure_fork(lambda: None, explain=True)


@needs("userfaultfd")
def test_a_failing_handler_wakes_the_child_and_reports(monkeypatch):
    serve = uffd.serve_write_faults

    def failing(fd, watch, record):
        def record_then_fail(address):
            raise RuntimeError("handler broke")   # before lifting the protection
        serve(fd, watch, record_then_fail)

    monkeypatch.setattr(uffd, "serve_write_faults", failing)
    data = list(range(10 ** 6, 10 ** 6 + 50_000))
    start = time.monotonic()
    with pytest.raises(ExplainError, match="handler broke"):
        measure_fork(lambda: sum(data), regions={"data": data}, explain=True, timeout=30)
    assert time.monotonic() - start < 20   # woken, not timed out


def run_traced(access, objects, ranges):
    """The tracer protocol with a fork of our own: (explanation, child's exit code)."""
    tracer = FaultTracer(objects)
    tracer.before_fork(ranges)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            tracer.arm_child()
            access()
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    tracer.start_serving(pid)
    _, status = os.waitpid(pid, 0)
    return tracer.stop(), os.waitstatus_to_exitcode(status)


def test_an_empty_object_map_explains_everything_as_outside():
    found = classify(ObjectIndex.empty(), np.array([id(1)], np.uint64))
    assert found["cause"].tolist() == [CAUSES.index("outside_data")]


@needs("userfaultfd")
def test_a_file_mapping_is_refused_before_anything_is_protected(tmp_path, capfd):
    path = tmp_path / "data"
    path.write_bytes(b"\0" * PAGE_SIZE)
    with open(path, "r+b") as f:
        mapped = mmap.mmap(f.fileno(), PAGE_SIZE, flags=mmap.MAP_PRIVATE)
    start = np.frombuffer(mapped, np.uint8).ctypes.data
    explanation, code = run_traced(lambda: None, {}, [(start, start + PAGE_SIZE)])
    assert code == 1
    err = capfd.readouterr().err
    assert "ExplainError" in err and "only anonymous private memory qualifies" in err
    assert explanation.faults_served == 0


@needs("userfaultfd")
def test_without_restrict_every_fault_is_explained_set_up_included():
    buf = bytearray(b"\x01") * (4 * PAGE_SIZE)
    view = np.frombuffer(buf, np.uint8)
    base = view.ctypes.data
    ranges = [(m.start, m.stop) for m in read_maps() if m.private_writable and m.label.startswith("[")]

    def access():
        view[PAGE_SIZE + 5] = 2

    explanation, code = run_traced(access, {"buf": buf}, ranges)
    assert code == 0
    assert explanation.faults_served >= explanation.copied_pages == explanation.explained_pages.size
    assert explanation.unexplained_pages == 0
    hit = explanation.pages_of("payload", "bytearray")
    assert np.array_equal(hit, [page(base + PAGE_SIZE + 5)])
    assert explanation.first_writes[np.searchsorted(explanation.explained_pages, hit)][0] == base + PAGE_SIZE + 5


# --- explain mode measures what plain mode measures ----------------------------

PARITY = """
import gc, json, sys
from cowmem import PAGE_SIZE, measure_fork
case = sys.argv[1]
data = {"list": lambda: list(range(10**6, 10**6 + 10**5)), "dict": lambda: {f"key {i}": i for i in range(10**5)},
        "lists": lambda: [[i] for i in range(10**5)]}[case]()
run = gc.collect if case == "lists" else (lambda: [None for _ in (data.items() if case == "dict" else data)])
counts = {"plain": [], "explain": [], "plain unobserved": [], "explain unobserved": []}
for _ in range(7):   # interleaved: each measurement leaves the heap a little different
    for mode, explain in (("plain", False), ("explain", True)):
        report = measure_fork(run, regions={"data": data}, explain=explain)
        counts[mode].append(report.regions["data"] // PAGE_SIZE)
        counts[mode + " unobserved"].append(report.unobserved["data"] // PAGE_SIZE)
print(json.dumps(counts))
"""


@pytest.mark.parametrize("case", ["list", "dict", "lists"], ids=["list iterated", "dict items", "gc.collect over lists"])
def test_explain_counts_the_same_pages_in_the_data_as_plain_mode(case):
    # The faults are served by a process of their own, and the child's
    # hand-over is made by the parent: no code of explain mode's runs in the
    # parent while the child runs, to write a page of the data first (the
    # child's write would then copy nothing).  What is left: the hand-over
    # itself, in the child before its baseline, takes references to a few
    # objects the parent made, which may share a page with the data; such a
    # page is the child's before the baseline, reported as unobserved.  In
    # a fresh interpreter, where the data's pages hold little else.
    out = subprocess.run([sys.executable, "-c", PARITY, case], capture_output=True, text=True, check=True,
                         timeout=600).stdout
    counts = json.loads(out)
    print(f"\nin the data, pages of 7 interleaved pairs: {counts}")
    # Compared pair by pair: a sum of medians taken field by field mixes
    # measurements, and the heap settles over the first pairs.  What the
    # child holds of the data at the end, copied or unobserved, does not
    # depend on the mode; how it splits between the two may, by the pages
    # the hand-over wrote first.
    held = [plain + seen - explain - seen_in_explain for plain, seen, explain, seen_in_explain
            in zip(counts["plain"], counts["plain unobserved"], counts["explain"], counts["explain unobserved"])]
    seen_before = [seen_in_explain - seen for seen, seen_in_explain
                   in zip(counts["plain unobserved"], counts["explain unobserved"])]
    copied = [plain - explain for plain, explain in zip(counts["plain"], counts["explain"])]
    assert abs(statistics.median(held)) <= 1
    assert abs(statistics.median(copied)) <= 1 + abs(statistics.median(seen_before))
