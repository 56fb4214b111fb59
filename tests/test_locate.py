"""Regions for any object, located without disturbing the parent, against the independent reference.

The reference (tests/reference/) shares no code with cowmem: ``outside.watch``
compares a child's page frames with the parent's from outside, and
``elements.pages_of`` finds an object's pages from ``id()``, sizes and
ctypes reads of its storage.  cowmem's count of copied pages inside the data
must be within max(3 pages, 2 %) of the reference's copied pages inside the
reference's pages of the data (each is the median of 3 children).
"""

import collections
import ctypes
import dataclasses
import datetime
import decimal
import gc
import json
import os
import pickle
import signal
import statistics
import sys
import threading
import time

import numpy as np
import pytest

from cowmem import PAGE_SIZE, Regions, measure_fork, memory_ranges
from cowmem.errors import LocateError
from cowmem.index import OBJECT, PARTS, STORAGE
from cowmem.locate import index_heap, index_objects, locate

from reference import outside
from reference.elements import pages_of

N = 10**5
RUNS = 3
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the reference reads frame numbers: needs root")


def no_children_left():
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def within_bar(ours, theirs):
    return abs(ours - theirs) <= max(3, 0.02 * max(ours, theirs))


@dataclasses.dataclass
class Record:
    number: int
    name: str


class Slotted:
    __slots__ = ("number", "name")

    def __init__(self, number, name):
        self.number, self.name = number, name


def iterate(data):
    def access():
        for _ in data:
            pass
    return access


def json_document():
    records = [{"id": i, "name": f"name {i}", "tags": ["a", "b"], "score": i / 3} for i in range(N // 4)]
    return json.loads(json.dumps({"records": records, "count": len(records)}))


def object_frame():
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    strings = pd.Series([f"string {i}" for i in range(N)], dtype=object)
    frame = pd.DataFrame({"number": np.arange(N), "text": strings})
    assert frame["text"].dtype == object
    return frame


# (data, access): every access reads, as a worker does.
KINDS = {
    "deque iterated": (lambda: collections.deque(range(10**6, 10**6 + N)), iterate),
    "list iterated": (lambda: list(range(10**6, 10**6 + N)), iterate),
    "dict items": (lambda: {f"key {i}": i + 10**6 for i in range(N)}, lambda d: lambda: [None for _ in d.items()]),
    "tuple iterated": (lambda: tuple(range(10**6, 10**6 + N)), iterate),
    "frozenset iterated": (lambda: frozenset(range(10**6, 10**6 + N)), iterate),
    "bytes counted": (lambda: bytes(range(256)) * (N // 10), lambda b: lambda: b.count(7)),
    "dataclasses read": (lambda: [Record(i, str(i)) for i in range(N)], lambda d: lambda: [r.number for r in d]),
    "__slots__ read": (lambda: [Slotted(i, str(i)) for i in range(N)], lambda d: lambda: [r.number for r in d]),
    "decimals summed": (lambda: [decimal.Decimal(i) / 7 for i in range(N)], lambda d: lambda: sum(d)),
    "datetimes compared": (lambda: [datetime.datetime(2000, 1, 1) + datetime.timedelta(seconds=i) for i in range(N)],
                           lambda d: lambda: max(d)),
    "JSON document dumped": (json_document, lambda d: lambda: json.dumps(d)),
    "DataFrame object strings read": (object_frame, lambda f: lambda: sum(map(len, f["text"].to_numpy()))),
}


def copied_in_data(data, access):
    """(cowmem's copied pages in the data, the reference's), medians of RUNS children each."""
    ours = statistics.median(measure_fork(access, regions={"data": data}).regions["data"] // PAGE_SIZE
                             for _ in range(RUNS))
    watched = [outside.watch(access) for _ in range(RUNS)]
    in_data = pages_of(data)   # after the watches: the reference's walk allocates
    return ours, statistics.median(len(w.copied_pages & in_data) for w in watched)


@needs_root
@pytest.mark.parametrize("kind", list(KINDS))
def test_copied_pages_in_the_data_agree_with_the_reference(kind):
    make, accessor = KINDS[kind]
    data = make()
    ours, theirs = copied_in_data(data, accessor(data))
    print(f"\n{kind}: cowmem {ours}, reference {theirs} pages")
    assert theirs > 0 or kind == "bytes counted"
    assert within_bar(ours, theirs)


@needs_root
def test_a_pickled_stringdtype_array_copies_a_few_pages_and_says_its_arena_is_unlocated():
    data = np.array([f"a string longer than fifteen bytes, {i:08d}" for i in range(N)], dtype=np.dtypes.StringDType())
    access = lambda: pickle.dumps(data)   # noqa: E731
    ours, theirs = copied_in_data(data, access)
    print(f"\nStringDType pickled: cowmem {ours}, reference {theirs} pages")
    # Only the array object's header is written (its reference count); the
    # cells and the arena are read.  Locating made no str of an element.
    assert ours <= 4 and within_bar(ours, theirs)
    assert Regions({"data": data}).unlocated["data"] == {"numpy.dtypes.StringDType": 1}


def test_short_stringdtype_strings_live_in_their_cells():
    data = np.array(["short", "strings", ""], dtype=np.dtypes.StringDType())
    assert Regions({"data": data}).unlocated["data"] == {}


def test_locating_makes_no_object_whose_address_it_counts():
    # Reading a StringDType element makes a new str; locating reads none.
    data = np.array([f"element {i:040d}" for i in range(1000)], dtype=np.dtypes.StringDType())
    cells = (data.ctypes.data, data.ctypes.data + data.nbytes)
    header = (id(data), id(data) + type(data).__basicsize__)
    for start, stop in memory_ranges(data):
        assert any(a <= start and stop <= b for a, b in [cells, header]) or stop - start == 2 * 8


# --- what is followed, what is left out ------------------------------------

def covered(ranges, start, stop):
    return any(a <= start and stop <= b for a, b in ranges)


def test_the_whole_graph_is_followed_and_depth_limits_it():
    inner = [10**9 + i for i in range(100)]
    data = {"inner": inner, "more": ({"deep": 10**12},)}
    deep = data["more"][0]
    everything = memory_ranges(data)
    for obj in (inner, *inner, deep, deep["deep"]):
        assert covered(everything, id(obj), id(obj) + type(obj).__basicsize__)
    one = memory_ranges(data, depth=1)
    assert covered(one, id(inner), id(inner) + 8) and not covered(one, id(inner[0]), id(inner[0]) + 8)
    alone = memory_ranges(data, depth=0)
    assert not covered(alone, id(inner), id(inner) + 8)
    with pytest.raises(ValueError, match="depth"):
        memory_ranges(data, depth=-1)


def shared_function():
    pass


def test_what_the_program_shares_is_left_out():
    import json as module
    data = [shared_function, module, Record, shared_function.__code__, 10**9]
    ranges = memory_ranges(data)
    for shared in data[:4]:
        assert not covered(ranges, id(shared), id(shared) + 8)
    assert covered(ranges, id(data[4]), id(data[4]) + 8)


def test_immortal_objects_are_left_out_where_there_are_some():
    data = [None, True, 7, 10**9]
    ranges = memory_ranges(data)
    immortal = [x for x in data if __import__("sys").getrefcount(x) >= 2**31]
    assert (len(immortal) == 3) == (__import__("sys").version_info >= (3, 12))
    for x in immortal:
        assert not covered(ranges, id(x), id(x) + 8)
    assert covered(ranges, id(data[3]), id(data[3]) + 8)


def test_a_numpy_object_array_is_followed_through_its_items():
    items = [f"item {i}" for i in range(100)]
    data = np.array(items + [None], dtype=object)[:-1]
    ranges = memory_ranges(data)
    for item in items:
        assert covered(ranges, id(item), id(item) + item.__sizeof__())


def test_pyarrow_buffers_are_located_once_pyarrow_is_imported():
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    table = pa.table({"n": pa.array(range(10**4)), "s": pa.array([f"s{i}" for i in range(10**4)])})
    ranges = memory_ranges(table)
    for column in table.columns:
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None and buffer.size:
                    assert covered(ranges, buffer.address, buffer.address + buffer.size)


# --- unlocated memory is reported, never dropped -----------------------------

def test_what_cannot_be_placed_is_reported_per_type():
    data = {"big": decimal.Decimal("1" * 500), "small": decimal.Decimal("1.5"),
            "ordered": collections.OrderedDict((i, i) for i in range(10)), "plain": [1, 2]}
    # A Decimal's digits beyond its inline words, an OrderedDict's linked
    # nodes: their C __sizeof__ counts memory cowmem cannot see into.
    assert sys_sizeof_exceeds(data["big"]) and not sys_sizeof_exceeds(data["small"])
    regions = Regions({"data": data, "plain": data["plain"], "range": (0, PAGE_SIZE)})
    assert regions.unlocated == {"data": {"decimal.Decimal": 1, "collections.OrderedDict": 1}, "plain": {},
                                 "range": {}}
    report = measure_fork(lambda: None, regions=regions)
    assert report.unlocated == regions.unlocated
    assert report.to_dict()["unlocated"] == regions.unlocated


def sys_sizeof_exceeds(obj):
    """Whether ``obj``'s __sizeof__ counts more than its type's basic size."""
    return obj.__sizeof__() > type(obj).__basicsize__


def test_the_command_line_shows_what_went_unlocated(monkeypatch, capsys):
    from cowmem import cli, workloads
    data = np.array(["x" * 40] * 10, dtype=np.dtypes.StringDType())
    monkeypatch.setattr(workloads, "measure",
                        lambda *a, **k: measure_fork(lambda: None, regions={"data": data}))
    monkeypatch.setattr(workloads, "check_pair", lambda *a: None)
    assert cli.main(["measure", "list_int", "len", "--size", "10"]) == 0
    out = capsys.readouterr().out
    assert "unlocated" in out and "numpy.dtypes.StringDType 1" in out
    assert cli.main(["measure", "list_int", "len", "--size", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unlocated"] == {"data": {"numpy.dtypes.StringDType": 1}}


# --- the observer effect: locating leaves the parent as it found it -------------

@pytest.mark.parametrize("make", [lambda: [(i, str(i)) for i in range(N)], lambda: {str(i): i for i in range(N)}],
                         ids=["list of tuples", "dict"])
def test_locating_regions_does_not_change_what_an_allocating_access_copies(make):
    data = make()
    access = lambda: pickle.dumps(data)   # noqa: E731
    without, located = [], []
    for _ in range(RUNS):
        without.append(measure_fork(access).copied_pages)
        located.append(measure_fork(access, regions={"data": data}).copied_pages)
    print(f"\nwhole child, pickling: without regions {without}, with regions {located}")
    assert abs(statistics.median(located) - statistics.median(without)) <= 0.1 * statistics.median(without)


@needs_root
def test_the_whole_child_count_with_regions_agrees_with_the_reference():
    data = [(i, str(i)) for i in range(N)]
    access = lambda: pickle.dumps(data)   # noqa: E731
    ours = statistics.median(measure_fork(access, regions={"data": data}).copied_pages for _ in range(RUNS))
    theirs = statistics.median(len(outside.watch(access).copied_pages) for _ in range(RUNS))
    print(f"\nwhole child, pickling a list of tuples: cowmem {ours}, reference {theirs}")
    assert abs(ours - theirs) <= 0.1 * theirs


def test_the_helper_writes_nothing_the_parent_holds():
    data = [(i, str(i)) for i in range(N)]
    before = {id(x): sys_refcount(x) for x in data[:1000]}
    gc_counts = gc.get_count()
    locate({"data": data})
    assert {id(x): sys_refcount(x) for x in data[:1000]} == before
    assert gc.get_count()[1:] == gc_counts[1:]   # no collection ran here


def sys_refcount(obj):
    import sys
    return sys.getrefcount(obj)


# --- the helper: reaped on every path -----------------------------------------

def test_a_helper_that_dies_is_reported_and_reaped(monkeypatch):
    from cowmem import objects
    monkeypatch.setattr(objects.Walker, "add", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(LocateError, match="killed by SIGKILL"):
        memory_ranges([1, 2, 3])
    no_children_left()


def test_a_helper_that_raises_is_reported_with_its_traceback(monkeypatch):
    from cowmem import objects

    def broken(*args, **kwargs):
        raise ZeroDivisionError("walk broke")

    monkeypatch.setattr(objects.Walker, "add", broken)
    with pytest.raises(LocateError, match="ZeroDivisionError: walk broke") as info:
        memory_ranges([1, 2, 3])
    assert "broken" in str(info.value)
    no_children_left()


def test_ctrl_c_while_locating_reaps_the_helper(monkeypatch):
    from cowmem import objects
    monkeypatch.setattr(objects.Walker, "add", lambda *a, **k: time.sleep(30))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        memory_ranges([1, 2, 3])
    timer.join()
    assert time.monotonic() - start < 10
    no_children_left()


# --- the whole heap, for cowmem watch --------------------------------------------

def test_the_heap_index_holds_every_object_and_says_what_pages_hold():
    strings = [f"a string of the heap index, number {i}" for i in range(20_000)]
    table = {i: i for i in range(20_000, 30_000)}
    index = index_heap()
    assert index.regions == ("heap",)
    rows = index.lookup(np.array([id(strings), id(strings[7]), id(table)], np.uint64))
    assert np.all(rows >= 0)
    assert [index.types[c].name for c in index.code[rows]] == ["list", "str", "dict"]
    assert index.part[rows].tolist() == [OBJECT] * 3 and index.owner[rows].tolist() == [id(strings), id(strings[7]),
                                                                                     id(table)]
    storage = index.lookup(np.array([ctypes_list_items(strings)], np.uint64))
    assert storage.tolist() != [-1]
    assert index.part[storage].tolist() == [STORAGE] and index.owner[storage].tolist() == [id(strings)]
    # The pages wholly inside the strings' span hold mostly str.
    string_pages = np.unique(np.array([id(s) >> 12 for s in strings], np.uint64))
    held = index.bytes_by_type(string_pages)
    assert next(iter(held)) == "str" and held["str"] >= 0.9 * len(strings) * strings[0].__sizeof__()
    assert sum(held.values()) <= string_pages.size * PAGE_SIZE


def ctypes_list_items(items):
    import ctypes
    return ctypes.c_void_p.from_address(id(items) + 24).value   # PyListObject.ob_item


# --- attribute values arrays (3.11, 3.12): their own bytes, not their neighbours' ---------

V = sys.version_info[:2]
separate_values = pytest.mark.skipif(V not in ((3, 11), (3, 12)),
                                     reason=f"CPython {V} keeps no values array of its own after a prefix")


class NineAttributes:
    """Once its class's shared keys have settled, an instance's values array (3.11, 3.12) has
    10 slots (9 entries, 1 usable) after a 16-byte prefix (slots + 2 rounded up to 8 bytes):
    96 bytes, though the prefix alone would leave room for 14 slots."""

    def __init__(self, i):
        self.a, self.b, self.c, self.d, self.e, self.f, self.g, self.h, self.i = (i,) * 9


def settled_instances(count):
    [NineAttributes(i) for i in range(40)]   # the keys' usable slots shrink by one per instance, down to 1
    return [NineAttributes(i) for i in range(count)]


def values_array(o):
    """(address, prefix bytes, slots) of a 3.11/3.12 instance's values array, by ctypes and sizeof."""
    if V == (3, 11):
        values = ctypes.c_uint64.from_address(id(o) - 32).value    # 4 words before the object
    else:
        tagged = ctypes.c_uint64.from_address(id(o) - 24).value    # 3 words before: values - 1 (odd), or a dict
        assert tagged & 1
        values = tagged + 1
    sibling = type(o)(0)   # its split dict's size counts 8 bytes per slot of the class's keys
    slots = (dict.__sizeof__(vars(sibling)) - dict.__basicsize__) // 8
    return values, ctypes.c_uint8.from_address(values - 1).value, slots


@separate_values
def test_an_instance_values_array_is_its_prefix_and_slots():
    o = settled_instances(1)[0]
    values, prefix, slots = values_array(o)
    assert (prefix, slots) == (16, 10)
    index = index_objects({"o": o}, depth=0)
    (row,) = np.flatnonzero(index.part == STORAGE)
    assert (index.lo[row], index.hi[row], index.owner[row]) == (values - prefix, values + 8 * slots, id(o))


@separate_values
def test_a_materialized_dict_values_array_is_its_prefix_and_slots():
    o = settled_instances(1)[0]
    table = vars(o)   # a split dict, which takes the instance's values array over
    values = ctypes.c_uint64.from_address(id(table) + 40).value   # PyDictObject.ma_values
    prefix, slots = ctypes.c_uint8.from_address(values - 1).value, (dict.__sizeof__(table) - dict.__basicsize__) // 8
    assert (prefix, slots) == (16, 10)
    index = index_objects({"table": table}, depth=0)
    (row,) = np.flatnonzero(index.part == STORAGE)
    assert (index.lo[row], index.hi[row], index.owner[row]) == (values - prefix, values + 8 * slots, id(table))


def test_the_heap_index_gives_a_str_made_beside_attribute_values_to_the_str():
    kept = settled_instances(20_000)
    size = 96
    if V in ((3, 11), (3, 12)):
        _, prefix, slots = values_array(kept[0])
        size = prefix + 8 * slots       # strs of the values arrays' size: in the same allocator pools,
    del kept[::2]                       # where they fill the holes left between the arrays
    strings = [f"{i:0{size - sys.getsizeof('')}d}" for i in range(10_000)]
    assert {sys.getsizeof(s) for s in strings} == {size}
    index = index_heap()
    ids = np.array([id(s) for s in strings], np.uint64)
    rows = index.lookup(ids)
    assert np.all(rows >= 0)
    claimed = rows[index.owner[rows] != ids]
    assert [(index.types[index.code[r]].name, PARTS[index.part[r]]) for r in claimed] == []
    assert {index.types[c].name for c in index.code[rows]} == {"str"} and np.all(index.part[rows] == OBJECT)
