"""Tests of the independent reference (tests/reference/), then cowmem against it.

Expected values come from the case itself: the pages a child writes, the
addresses ``id()`` gives, the sizes CPython's own ``__sizeof__`` computes.
"""

import collections
import ctypes
import dataclasses
import datetime
import decimal
import json
import mmap
import os
import signal
import sys

import numpy as np
import psutil
import pytest

from reference import elements, outside
from reference.elements import pages_of

PAGE = 4096
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="frame numbers need root")
V = sys.version_info[:2]


def page_range(start, size):
    """The page numbers of [start, start + size) bytes."""
    return set(range(start // PAGE, (start + size - 1) // PAGE + 1)) if size > 0 else set()


def whole_pages(start, size):
    """The page numbers of the pages wholly inside [start, start + size) bytes."""
    return set(range(-(-start // PAGE), (start + size) // PAGE))


def address_of(buffer):
    """The address of a writable buffer's first byte."""
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


def no_children_left():
    return psutil.Process().children() == []


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


# -- outside.watch: ground truth ---------------------------------------------

def filled_bytearray(size):
    return bytearray(b"\x01") * size


def filled_private_mmap(size):
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.write(b"\x01" * size)
    return m


def filled_huge_page_array(size):
    array = np.ones(size, np.uint8)  # numpy asks for huge pages from 4 MiB on
    first = array.ctypes.data // PAGE
    flags = outside.kpageflags(outside.self_frames(range(first, first + size // PAGE, 64)).values())
    if not any(f >> outside.KPF_THP & 1 for f in flags.values()):
        pytest.skip("the kernel gave this array no transparent huge page")
    return array


BUFFERS = {"bytearray": filled_bytearray, "private mmap": filled_private_mmap,
           "huge-page array": filled_huge_page_array}


def writer(buf, offsets, value=2):
    """A callable writing ``value`` at each byte offset of ``buf``."""
    def write():
        for offset in offsets:
            buf[offset] = value
    return write


def written_offsets(start, k, stride):
    """Byte offsets of one byte in each of k pages, ``stride`` pages apart."""
    first = -(-start // PAGE)
    return [(first + i * stride) * PAGE - start for i in range(k)]


@needs_root
@pytest.mark.parametrize("kind", BUFFERS)
@pytest.mark.parametrize("k, stride", [(0, 1), (1, 1), (1000, 1), (1000, 3)])
def test_k_pages_written_are_k_copied_pages(kind, k, stride):
    size = 3200 * PAGE
    buf = BUFFERS[kind](size)
    view = memoryview(buf).cast("B")
    start = view_address = np.frombuffer(view, np.uint8).ctypes.data
    offsets = written_offsets(start, k, stride)
    result = outside.watch(writer(view, offsets))
    expected = {(view_address + offset) // PAGE for offset in offsets}
    assert len(expected) == k
    # A bytearray's partial first and last pages hold the allocator's other
    # chunks (one this large can come from the heap), which the parent or the
    # child may write themselves: the pages wholly the buffer's are the case.
    inside = whole_pages(start, size)
    assert result.copied_pages & inside == expected
    assert not result.fresh_pages & inside
    assert not result.parent_written_pages & inside
    assert no_children_left()


@needs_root
def test_a_parent_write_after_the_fork_is_not_the_childs_copy():
    buf = filled_bytearray(16 * PAGE)
    start = address_of(buf)
    p, q = written_offsets(start, 2, 4)
    result = outside.watch(writer(buf, [p, q]), during=writer(buf, [p], 3))
    assert result.copied_pages & whole_pages(start, len(buf)) == {(start + q) // PAGE}
    assert (start + p) // PAGE in result.parent_written_pages
    assert (start + p) // PAGE in result.child_exclusive_pages


@needs_root
def test_a_zero_page_read_then_written_is_fresh_not_copied():
    m = mmap.mmap(-1, 4 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = address_of(m)
    m[0] = 1  # an anonymous page, so that fork copies the mapping's page table
    assert m[PAGE] == 0  # a read maps the shared zero page
    page = start // PAGE + 1
    zero = outside.self_frames([page])[page]
    assert outside.kpageflags([zero])[zero] >> outside.KPF_ZERO_PAGE & 1

    def access():
        m[PAGE] = 1

    result = outside.watch(access)
    assert page in result.fresh_pages
    assert page not in result.copied_pages
    frames = result.frames(page)
    assert frames["child_baseline"] == frames["parent_baseline"] == zero
    assert frames["child_after"] not in (None, zero)


@needs_root
def test_prepare_is_set_up_and_collect_comes_back():
    buf = filled_bytearray(8 * PAGE)
    start = address_of(buf)
    a, b = written_offsets(start, 2, 1)
    # What prepare copies is set-up, copied before the baseline: not the access's copy.
    result = outside.watch(writer(buf, [a, b], 6), prepare=writer(buf, [a], 5),
                           collect=lambda: bytes(buf[a:a + 1]))
    assert result.copied_pages & whole_pages(start, len(buf)) == {(start + b) // PAGE}
    assert result.collected == b"\x06"


@needs_root
def test_mappings_only_the_child_has_are_fresh():
    held = {}

    def prepare():  # mapped before the baseline, not yet touched
        held["early"] = mmap.mmap(-1, 64 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def access():
        held["late"] = mmap.mmap(-1, 64 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for i in range(0, 64, 2):
            held["early"][i * PAGE] = 1
            held["late"][i * PAGE + 1] = 1

    result = outside.watch(access, prepare=prepare,
                           collect=lambda: {name: address_of(m) for name, m in held.items()})
    for start in result.collected.values():
        expected = {start // PAGE + i for i in range(0, 64, 2)}
        assert result.fresh_pages & page_range(start, 64 * PAGE) == expected
        assert expected <= result.child_exclusive_pages
        assert not result.copied_pages & page_range(start, 64 * PAGE)


# -- outside.watch: every way a child can end --------------------------------

def fail():
    raise ValueError("the access failed")


@needs_root
@pytest.mark.parametrize("where", ["prepare", "access", "collect"])
def test_a_child_that_raises_is_reported_and_reaped(where):
    calls = {"prepare": None, "access": lambda: None, "collect": None}
    calls[where] = fail
    fds = open_fds()
    with pytest.raises(outside.ChildFailedError, match=f"(?s){where} raised.*the access failed"):
        outside.watch(calls["access"], prepare=calls["prepare"], collect=calls["collect"])
    assert no_children_left()
    assert open_fds() == fds


@needs_root
def test_a_killed_child_is_reported_and_reaped():
    with pytest.raises(outside.ChildFailedError, match="SIGKILL"):
        outside.watch(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert no_children_left()


@needs_root
def test_a_child_that_exits_is_reported_and_reaped():
    with pytest.raises(outside.ChildFailedError, match="status 7"):
        outside.watch(lambda: os._exit(7))
    assert no_children_left()


@needs_root
@pytest.mark.parametrize("where", ["prepare", "access"])
def test_a_hanging_child_is_killed_and_reaped(where):
    import time
    hang = lambda: time.sleep(60)  # noqa: E731
    fds = open_fds()
    with pytest.raises(outside.ChildTimeoutError):
        if where == "prepare":
            outside.watch(lambda: None, prepare=hang, timeout=0.5)
        else:
            outside.watch(hang, timeout=0.5)
    assert no_children_left()
    assert open_fds() == fds


@needs_root
def test_an_interrupted_parent_reaps_the_child():
    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outside.watch(lambda: None, during=interrupt)
    assert no_children_left()


@needs_root
def test_ctrl_c_at_any_moment_leaves_no_child():
    """SIGINT at 60 moments spread over watch's life: never a child left behind."""
    import random
    import time

    def interrupt(signum, frame):
        os.kill(os.getpid(), signal.SIGINT)

    rng = random.Random(9)
    previous = signal.signal(signal.SIGALRM, interrupt)
    interrupted = 0
    try:
        for _ in range(60):
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0001, 0.03))
            try:
                outside.watch(lambda: time.sleep(0.005))
                # An interrupt due after the watch lands here, however late a
                # loaded machine delivers it; one that never comes fails below.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                interrupted += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
            assert no_children_left()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupted == 60


@needs_root
def test_without_cap_sys_admin_the_error_says_so():
    import shutil
    import subprocess
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop CAP_SYS_ADMIN")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from reference import outside; "
            "outside.watch(lambda: None)")
    run = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin",
                          sys.executable, "-c", code, os.path.dirname(__file__)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "NotRootError: frame numbers in /proc/self/pagemap read as 0" in run.stderr
    assert "needs CAP_SYS_ADMIN" in run.stderr


def test_a_bad_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout"):
        outside.watch(lambda: None, timeout=0)


# -- elements.pages_of ---------------------------------------------------------

def object_pages(o):
    """The pages of a leaf object (int, float, str, bytes): id() and getsizeof."""
    assert isinstance(o, (int, float, str, bytes)), type(o)
    return page_range(id(o), sys.getsizeof(o))


def container_pages(o):
    """The pages of a GC object's struct: its GC header, then __basicsize__ bytes."""
    return page_range(id(o) - 16, 16 + type(o).__basicsize__)


def words(start, count):
    return [ctypes.c_uint64.from_address(start + 8 * i).value for i in range(count)]


def blocks(o, what):
    return [b for b in elements.locate(o).blocks if b.what == what]


@pytest.mark.parametrize("n", [0, 1, 10**5])
def test_a_list_is_its_header_item_array_and_elements(n):
    data = list(range(1000, 1000 + n))
    header = page_range(id(data) - 16, 16 + list.__basicsize__)
    element_pages = set().union(*(object_pages(x) for x in data))
    items = blocks(data, "list items")
    if n:
        (items,) = items
        # The item array holds the elements' addresses, in order.
        assert words(items.start, n) == [id(x) for x in data]
        element_pages |= page_range(items.start, items.stop - items.start)
    else:
        assert items == []
    assert pages_of(data) == header | element_pages


def test_the_list_item_array_is_what_cpython_counts():
    data = [object() for _ in range(100)]
    data.append(object())  # over-allocates
    (items,) = blocks(data, "list items")
    assert 16 + list.__basicsize__ + (items.stop - items.start) == sys.getsizeof(data)


def test_a_tuple_holds_its_items_inline():
    data = tuple(str(i) * 3 for i in range(1000))
    assert pages_of(data) == (page_range(id(data) - 16, sys.getsizeof(data))
                              | set().union(*(object_pages(s) for s in data)))


def test_a_deque_is_its_blocks_and_elements():
    n = 10**4
    data = collections.deque(range(1000, 1000 + n))
    data.rotate(7)  # the first block is not full
    found = blocks(data, "deque block")
    # Each block is a left link, 64 element pointers, a right link, in order.
    slots = [w for b in found for w in words(b.start + 8, 64)]
    ids = [id(x) for x in data]
    first = slots.index(ids[0])
    assert slots[first:first + n] == ids
    for left, right in zip(found, found[1:]):
        assert words(left.start + 8 + 64 * 8, 1) == [right.start]  # rightlink
        assert words(right.start, 1) == [left.start]  # leftlink
    # deque.__sizeof__ counts the struct and the blocks in use.
    block_bytes = sum(b.stop - b.start for b in found)
    assert 16 + collections.deque.__basicsize__ + block_bytes == sys.getsizeof(data)
    element_pages = set().union(*(object_pages(x) for x in data))
    expected = (page_range(id(data) - 16, 16 + collections.deque.__basicsize__) | element_pages
                | set().union(*(page_range(b.start, b.stop - b.start) for b in found)))
    free = blocks(data, "deque free block")
    assert pages_of(data) == expected | set().union(*(page_range(b.start, b.stop - b.start)
                                                      for b in free))


@pytest.mark.parametrize("keys", ["str", "int"])
def test_a_dict_is_its_keys_table_and_items(keys):
    n = 10**4
    data = {(str(i) if keys == "str" else i + 10**6): str(i) * 2 for i in range(n)}
    (table,) = blocks(data, "dict keys")
    # CPython's own __sizeof__ counts the struct and the keys table.
    assert 16 + dict.__basicsize__ + (table.stop - table.start) == sys.getsizeof(data)
    pointers = set(words(table.start, (table.stop - table.start) // 8))
    assert {id(k) for k in data} <= pointers and {id(v) for v in data.values()} <= pointers
    item_pages = set().union(*(object_pages(k) | object_pages(v) for k, v in data.items()))
    assert item_pages | page_range(table.start, table.stop - table.start) <= pages_of(data)


@pytest.mark.parametrize("kind", [set, frozenset])
def test_a_set_is_its_table_and_elements(kind):
    data = kind(str(i) for i in range(5000))
    (table,) = blocks(data, "set table")
    assert 16 + kind.__basicsize__ + (table.stop - table.start) == sys.getsizeof(data)
    assert {id(x) for x in data} <= set(words(table.start, (table.stop - table.start) // 8))
    small = kind(["a1", "b2"])
    assert blocks(small, "set table") == []  # the inline smalltable


class Plain:
    def __init__(self, i):
        self.number = i + 10**6
        self.name = f"name {i}"


class Slotted:
    __slots__ = ("number", "name", "__private")

    def __init__(self, i):
        self.number = i + 10**6
        self.name = f"name {i}"
        self.__private = [i]


@dataclasses.dataclass
class Record:
    number: int
    name: str


def attribute_values(o):
    if hasattr(o, "__slots__"):
        return [getattr(o, "number"), getattr(o, "name"), getattr(o, "_Slotted__private")]
    return [o.number, o.name]


@pytest.mark.parametrize("make", [Plain, Slotted, lambda i: Record(i + 10**6, f"name {i}")],
                         ids=["instance", "slots", "dataclass"])
def test_an_instance_is_its_block_and_attribute_values(make):
    data = [make(i) for i in range(1000)]
    got = pages_of(data)
    for o in data[::97]:
        values = attribute_values(o)
        for v in values:
            assert (container_pages(v) if isinstance(v, list) else object_pages(v)) <= got
        # The values' addresses are stored in the object's blocks (3.11+) or
        # in those of its __dict__ (3.9, 3.10).
        own = elements.locate(o, depth=1).blocks
        stored = {w for b in own for w in words(b.start, (b.stop - b.start) // 8)}
        assert {id(v) for v in values} <= stored
        assert page_range(id(o) - 16, 16) <= got  # the GC header before id()


class Wide:
    pass


def instance_shapes():
    """Instances whose attributes CPython stores differently, and their attribute names."""
    fresh = Plain(1)
    read = Plain(2)
    read.__dict__  # materialises a dict on 3.11+
    deleted = Plain(3)
    deleted.extra = "extra " * 3
    del deleted.number
    wide = Wide()
    for i in range(40):  # more than a shared keys object holds
        setattr(wide, f"attribute_{i}", f"value {i}")
    return {"fresh": (fresh, ["number", "name"]), "dict read": (read, ["number", "name"]),
            "deleted": (deleted, ["name", "extra"]),
            "wide": (wide, [f"attribute_{i}" for i in range(40)])}


@pytest.mark.parametrize("shape", list(instance_shapes()))
def test_every_way_cpython_stores_attributes(shape):
    o, names = instance_shapes()[shape]
    values = [getattr(o, name) for name in names]  # getattr makes no __dict__
    got = pages_of(o)
    stored = {w for b in elements.locate(o, depth=1).blocks
              for w in words(b.start, (b.stop - b.start) // 8)}
    for v in values:
        assert object_pages(v) <= got
        assert id(v) in stored


def test_reading_an_instance_creates_no_dict():
    o = Plain(1)
    if V >= (3, 11):
        before = ctypes.c_uint64.from_address(id(o) - 24).value
        pages_of(o)
        assert ctypes.c_uint64.from_address(id(o) - 24).value == before
    assert pages_of(o) == pages_of(o)


def test_an_instance_block_matches_getsizeof():
    o = Plain(1)
    (own,) = [b for b in elements.locate(o, depth=0).blocks if b.what == "Plain"]
    if V >= (3, 13):  # the inline values follow the object; getsizeof leaves them out
        assert own.stop - own.start > sys.getsizeof(o)
        assert own.start == id(o) - 32
    else:
        assert own.stop - own.start == sys.getsizeof(o)


def test_decimals_and_datetimes():
    small, big = decimal.Decimal(3), decimal.Context(prec=200).divide(1, 7)  # 11 words
    assert blocks(small, "Decimal digits") == []
    (digits,) = blocks(big, "Decimal digits")
    assert type(big).__basicsize__ + (digits.stop - digits.start) + (
        16 if type(big).__flags__ & (1 << 14) else 0) == sys.getsizeof(big)
    tz = datetime.timezone(datetime.timedelta(hours=2))
    aware = datetime.datetime(2024, 1, 1, tzinfo=tz)
    assert page_range(id(tz), type(tz).__basicsize__) <= pages_of(aware)
    naive = datetime.datetime(2024, 1, 1)
    assert pages_of(naive) == page_range(id(naive), 40)


def test_a_json_document_is_every_value_in_it():
    doc = json.loads(json.dumps([{"id": i, "name": f"n{i}", "tags": ["x" * 3, "yy"],
                                  "score": i / 3, "ok": True, "none": None} for i in range(2000)]))
    got = pages_of(doc)
    for record in doc[::50]:
        assert container_pages(record) <= got
        for key, value in record.items():
            assert object_pages(key) <= got
            if isinstance(value, list):
                assert container_pages(value) <= got
            elif not (value is None or value is True or isinstance(value, int) and value <= 256):
                assert object_pages(value) <= got
        for tag in record["tags"]:
            assert object_pages(tag) <= got


def test_what_is_shared_with_the_program_is_left_out():
    assert pages_of(len) == pages_of(None) == pages_of(True) == pages_of(7) == set()
    assert pages_of(int) == pages_of(json) == pages_of(test_decimals_and_datetimes) == set()
    data = [None, True, False, 5, "", "a", b"", (), len, int]
    (items,) = blocks(data, "list items")
    assert pages_of(data) == (page_range(id(data) - 16, 16 + list.__basicsize__)
                              | page_range(items.start, items.stop - items.start))


def test_depth_limits_the_walk():
    inner = [str(i) * 5 for i in range(100)]
    outer = [inner]

    def kinds(depth):
        return collections.Counter(b.what for b in elements.locate(outer, depth=depth).blocks)

    assert kinds(0) == {"list": 1, "list items": 1}
    assert kinds(1) == {"list": 2, "list items": 2}
    assert kinds(None) == {"list": 2, "list items": 2, "str": 100}


def test_other_buffers_are_their_buffer():
    import array
    data = array.array("d", range(10**4))
    address, items = data.buffer_info()
    assert page_range(address, items * data.itemsize) <= pages_of(data)
    assert elements.locate(data).partial == {}


def test_a_numpy_array_is_its_buffer():
    array = np.arange(10**5, dtype=np.int64)
    buffer = page_range(array.ctypes.data, array.nbytes)
    assert buffer <= pages_of(array)
    view = array[::-3]  # negative strides reach below the data pointer
    low = array.ctypes.data + 8 * ((len(array) - 1) % 3)
    assert page_range(low, array.ctypes.data + array.nbytes - low) <= pages_of(view)


def test_an_object_array_is_its_buffer_and_elements():
    array = np.array([f"s{i}" for i in range(5000)], dtype=object)
    got = pages_of(array)
    assert words(array.ctypes.data, 5) == [id(x) for x in array[:5]]
    assert page_range(array.ctypes.data, array.nbytes) <= got
    assert set().union(*(object_pages(s) for s in array)) <= got


def test_a_stringdtype_array_is_its_cells_only():
    StringDType = getattr(getattr(np, "dtypes", None), "StringDType", None)
    if StringDType is None:
        pytest.skip(f"numpy {np.__version__} has no StringDType")
    array = np.array([f"string number {i:06d}" for i in range(10**4)], dtype=StringDType())
    cells = page_range(array.ctypes.data, 16 * array.size)
    header = page_range(id(array), type(array).__basicsize__) | page_range(
        ctypes.c_uint64.from_address(id(array) + 32).value, 16)
    got = pages_of(array)
    assert cells <= got <= cells | header


def test_pandas_frames_are_their_blocks_and_elements():
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    n = 10**4
    strings = [f"s{i}" for i in range(n)]
    frame = pd.DataFrame({"i": np.arange(n), "s": pd.Series(strings, dtype=object)})
    got = pages_of(frame)
    ints = frame["i"].to_numpy()
    assert page_range(ints.ctypes.data, ints.nbytes) <= got
    assert set().union(*(object_pages(s) for s in frame["s"])) <= got


def test_arrow_tables_and_pandas_arrow_strings_are_their_buffers():
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    n = 10**4
    table = pa.table({"i": np.arange(n), "s": [f"s{i}" for i in range(n)]})
    buffers = [b for col in table.columns for chunk in col.chunks for b in chunk.buffers() if b]
    assert buffers and set().union(*(page_range(b.address, b.size) for b in buffers)) <= pages_of(table)
    series = pd.Series([f"s{i}" for i in range(n)], dtype=pd.ArrowDtype(pa.string()))
    chunked = series.array._pa_array
    buffers = [b for chunk in chunked.chunks for b in chunk.buffers() if b]
    assert set().union(*(page_range(b.address, b.size) for b in buffers)) <= pages_of(series)


# -- cowmem against the reference ----------------------------------------------
# cowmem is imported here only, never in tests/reference/.

def cowmem_pages(ranges):
    """Page numbers of cowmem's [start, stop) byte ranges."""
    return {p for start, stop in ranges for p in range(start // PAGE, stop // PAGE)}


def within_bar(a, b):
    """The bar the issue sets: within max(3 pages, 2 %)."""
    return abs(a - b) <= max(3, 0.02 * max(a, b))


@needs_root
@pytest.mark.parametrize("k, stride", [(0, 1), (1, 1), (1000, 1), (1000, 3)])
def test_cowmem_counts_the_ground_truth_buffer_exactly(k, stride):
    cowmem = pytest.importorskip("cowmem")
    buf = filled_bytearray(3200 * PAGE)
    start = address_of(buf)
    access = writer(buf, written_offsets(start, k, stride))
    inside = whole_pages(start, len(buf))      # the heap's chunks share the partial ones
    region = {"buf": (min(inside) * PAGE, (max(inside) + 1) * PAGE)}
    theirs = cowmem.measure_fork(access, regions=region).regions["buf"] // PAGE
    ours = len(outside.watch(access).copied_pages & inside)
    assert theirs == ours == k


def iterate(data):
    def access():
        for _ in data:
            pass
    return access


@needs_root
def test_cowmem_agrees_on_an_iterated_list():
    cowmem = pytest.importorskip("cowmem")
    data = list(range(10**5))
    access = iterate(data)
    theirs = cowmem.measure_fork(access, regions={"data": data}).regions["data"] // PAGE
    result = outside.watch(access)
    in_data = pages_of(data)  # after the watch: the walk allocates
    ours = len(result.copied_pages & in_data)
    print(f"\nlist(range(10**5)) iterated, copied pages in the data: cowmem {theirs}, "
          f"reference {ours} of {len(in_data)}; not shared at the baseline "
          f"{len(in_data - result.shared_pages)}, of which the parent wrote "
          f"{len(result.parent_written_pages & in_data)}")
    # Iterating writes every element's reference count (not the item array):
    # each page holding one and shared at the baseline is copied, unless the
    # parent wrote it first (its own allocations land in free slots of those
    # pools): the parent then took the copy, and the child's write needs none.
    refcounts = {id(x) // PAGE for x in data if x > 256}
    assert (refcounts & result.shared_pages) - result.parent_written_pages <= result.copied_pages
    assert within_bar(theirs, ours)


@needs_root
@pytest.mark.parametrize("kind", ["list", "ground truth"])
def test_watching_the_child_a_fork_meter_measures(kind):
    """cowmem's copied pages are among the outside's; inside the data they are the same.

    Except for data pages cowmem could not observe: already the child's at
    its baseline, because the parent wrote them after the fork or cowmem's
    own set-up in the child copied them (a heap page the data shares with
    its allocations).  cowmem reports how many (``unobserved``).
    """
    cowmem = pytest.importorskip("cowmem")
    if kind == "list":
        data = list(range(10**5))
        access = iterate(data)
        regions = {"data": data}
    else:
        data = filled_bytearray(3200 * PAGE)
        start = address_of(data)
        access = writer(data, written_offsets(start, 1000, 3))
        # Its pages wholly: the partial first and last ones hold the heap's
        # other chunks, which cowmem's comparison, after its second snapshot
        # but inside the outside's window, may write.
        inside = whole_pages(start, len(data))
        regions = {"data": (min(inside) * PAGE, (max(inside) + 1) * PAGE)}
    meter = cowmem.ForkMeter(regions)
    try:
        result = outside.watch(lambda: meter.run(access), collect=lambda: (
            meter.report().copied_ranges, meter.report().unobserved["data"] // PAGE))
    finally:
        meter.close()
    ranges, unobserved = result.collected
    theirs = cowmem_pages(ranges)
    in_data = pages_of(data) if kind == "list" else inside
    missed = (result.copied_pages - theirs) & in_data
    print(f"\n{kind}: cowmem {len(theirs)} copied pages, {len(theirs & in_data)} in the data "
          f"({unobserved} unobserved); outside {len(result.copied_pages)}, "
          f"{len(result.copied_pages & in_data)} in the data")
    assert theirs <= result.copied_pages
    assert len(missed) <= unobserved
    if kind == "ground truth":  # nothing else lives in the buffer
        assert theirs & in_data == result.copied_pages & in_data
