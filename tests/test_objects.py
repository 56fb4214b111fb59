"""memory_ranges: where an object's memory lies."""

import array
import mmap
import sys

import numpy as np
import pytest

from cowmem import memory_ranges


def covers(ranges, start, stop):
    return any(a <= start and stop <= b for a, b in ranges)


def address(buffer):
    return np.frombuffer(buffer, np.uint8).ctypes.data


def assert_merged(ranges):
    assert ranges == sorted(ranges)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:]))


@pytest.mark.parametrize("make", [
    lambda: bytearray(b"x" * 10000),
    lambda: bytes(10000),
    lambda: mmap.mmap(-1, 3 * mmap.PAGESIZE),
    lambda: np.arange(5000.0),
    lambda: memoryview(bytearray(5000)),
])
def test_buffers_are_covered(make):
    obj = make()
    ranges = memory_ranges(obj)
    assert_merged(ranges)
    start = address(obj)
    assert covers(ranges, start, start + len(memoryview(obj).cast("B")))
    assert covers(ranges, id(obj), id(obj) + type(obj).__basicsize__)  # the header


def test_array_array_buffer():
    arr = array.array("d", range(1000))
    addr, n = arr.buffer_info()
    assert covers(memory_ranges(arr), addr, addr + n * arr.itemsize)


def test_strided_ndarray_view_spans_its_extent():
    base = np.arange(1000.0)
    view = base[::-3]
    lo, hi = base.ctypes.data, base.ctypes.data + base.nbytes
    ranges = memory_ranges(view)
    # From the last element reached to the first, inclusive.
    assert covers(ranges, lo + 8 * (999 % 3), hi)


def test_list_covers_header_item_array_and_element_blocks():
    items = [10 ** 6 + i for i in range(1000)]
    ranges = memory_ranges(items)
    assert_merged(ranges)
    # The GC header sits just before a list: 16 bytes on 64-bit CPython.
    assert covers(ranges, id(items) - 16, id(items) + type(items).__basicsize__)
    for x in items:
        assert covers(ranges, id(x), id(x) + sys.getsizeof(x))


def test_dict_and_set_cover_keys_and_values():
    d = {str(i): float(i) for i in range(100)}
    s = {float(i) for i in range(100)}
    rd, rs = memory_ranges(d), memory_ranges(s)
    for k, v in d.items():
        assert covers(rd, id(k), id(k) + sys.getsizeof(k))
        assert covers(rd, id(v), id(v) + sys.getsizeof(v))
    for v in s:
        assert covers(rs, id(v), id(v) + sys.getsizeof(v))
    # The tables live outside the objects and are counted too.
    assert sum(b - a for a, b in rd) >= sys.getsizeof(d)
    assert sum(b - a for a, b in rs) >= sys.getsizeof(s)


def test_object_ndarray_covers_its_items():
    items = [object() for _ in range(10)]
    arr = np.array(items + [None], dtype=object)[:-1]
    ranges = memory_ranges(arr)
    for x in items:
        assert covers(ranges, id(x), id(x) + sys.getsizeof(x))
    assert covers(ranges, arr.ctypes.data, arr.ctypes.data + arr.nbytes)


def test_instance_block_includes_preheader():
    class Plain:
        pass

    obj = Plain()
    # getsizeof counts the GC header and the pre-header (3.11+) too.
    before = sys.getsizeof(obj) - obj.__sizeof__()
    assert covers(memory_ranges(obj), id(obj) - before, id(obj) + obj.__sizeof__())


def test_empty_containers():
    for obj in ([], (), {}, set(), b"", bytearray()):
        ranges = memory_ranges(obj)
        assert covers(ranges, id(obj), id(obj) + type(obj).__basicsize__)
