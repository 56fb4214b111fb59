"""Where an object's memory lies: the address ranges that hold it.

CPython writes to the objects a program only reads: the reference count is
the first word of every object, and the GC header of a container sits just
before it.  So an object's memory, for cowmem, is its whole inline block
(pre-header, header and inline items) plus any buffer it owns, and for a
container also the inline blocks of the objects it holds, one level deep.

The layouts read here are those of CPython 3.9 to 3.13, default
(GIL) builds.
"""

from __future__ import annotations

import array
import ctypes
import sys
import sysconfig
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np

Range = Tuple[int, int]

_HAVE_GC = 1 << 14
_GC_HEAD = 2 * ctypes.sizeof(ctypes.c_void_p)
# Objects whose dict (and, from 3.12, weakref list) pointers live in a
# two-word pre-header, before the GC header.
if sys.version_info >= (3, 12):
    _PREHEADER_FLAGS = (1 << 4) | (1 << 3)   # MANAGED_DICT | MANAGED_WEAKREF
elif sys.version_info >= (3, 11):
    _PREHEADER_FLAGS = 1 << 4                # MANAGED_DICT
else:
    _PREHEADER_FLAGS = 0

# Field offsets (bytes) inside PyListObject, PyDictObject and PySetObject.
_WORD = ctypes.sizeof(ctypes.c_void_p)
_LIST_ITEMS, _LIST_ALLOCATED = 3 * _WORD, 4 * _WORD
_TUPLE_ITEMS = 3 * _WORD
_DICT_KEYS, _DICT_VALUES = 4 * _WORD, 5 * _WORD
_SET_MASK, _SET_TABLE = 4 * _WORD, 5 * _WORD
_SET_ENTRY = 2 * _WORD


def _check_build() -> None:
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise NotImplementedError("cowmem does not know the object layout of free-threaded CPython")


_check_build()

_layout_cache: Dict[type, Tuple[int, int]] = {}


def _layout(tp: type) -> Tuple[int, int]:
    """(bytes before id(obj), fixed inline size or 0 when it varies per object)."""
    try:
        return _layout_cache[tp]
    except KeyError:
        pass
    before = (_GC_HEAD if tp.__flags__ & _HAVE_GC else 0) + (2 * _WORD if tp.__flags__ & _PREHEADER_FLAGS else 0)
    # str keeps its characters inline without declaring an item size.
    varying = tp.__itemsize__ or issubclass(tp, str)
    _layout_cache[tp] = (before, 0 if varying else tp.__basicsize__)
    return _layout_cache[tp]


def object_block(obj: Any) -> Range:
    """The inline block of ``obj``: pre-header, GC header, header, inline items."""
    before, size = _layout(type(obj))
    if not size:
        size = obj.__sizeof__()
    return id(obj) - before, id(obj) + size


def _buffer_range(obj: Any) -> List[Range]:
    """The bytes a buffer-protocol object exposes, wherever they live.

    Raises TypeError for an object without the buffer protocol.
    """
    if isinstance(obj, array.array):
        addr, n = obj.buffer_info()
        return [(addr, addr + n * obj.itemsize)]
    if isinstance(obj, np.ndarray):
        arr = obj
    else:
        view = memoryview(obj)
        try:
            arr = np.asarray(view)
        except (TypeError, ValueError, NotImplementedError):
            arr = np.asarray(view.cast("B"))  # a format numpy cannot read
    if arr.size == 0:
        return []
    data = arr.__array_interface__["data"][0]
    reach = [(s * (n - 1)) for s, n in zip(arr.strides, arr.shape)]
    return [(data + sum(min(0, r) for r in reach), data + sum(max(0, r) for r in reach) + arr.itemsize)]


def _word(addr: int) -> int:
    return ctypes.c_ssize_t.from_address(addr).value


def _storage(obj: Any) -> List[Range]:
    """Memory a container owns outside its inline block."""
    base = id(obj)
    if isinstance(obj, list):
        items, allocated = _word(base + _LIST_ITEMS), _word(base + _LIST_ALLOCATED)
        return [(items, items + allocated * _WORD)] if items else []
    if isinstance(obj, dict):
        keys, values = _word(base + _DICT_KEYS), _word(base + _DICT_VALUES)
        extra = dict.__sizeof__(obj) - type(obj).__basicsize__
        # A combined table holds hashes, keys and values in one block that
        # __sizeof__ counts.  A split table (an instance's __dict__) shares
        # its keys with other instances; it is left to the header.
        return [(keys, keys + extra)] if not values and extra > 0 else []
    if isinstance(obj, (set, frozenset)):
        table, mask = _word(base + _SET_TABLE), _word(base + _SET_MASK)
        inline = base <= table < base + type(obj).__basicsize__
        return [] if inline else [(table, table + (mask + 1) * _SET_ENTRY)]
    return []


def _elements(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, dict):
        return (x for kv in obj.items() for x in kv)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        return obj.ravel(order="K")
    return ()


def object_spans(obj: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Unmerged ``(starts, stops)`` arrays of what ``memory_ranges`` counts."""
    spans: List[Range] = [object_block(obj)]
    try:
        spans += _buffer_range(obj)
    except TypeError:
        pass  # no buffer
    spans += _storage(obj)
    starts, stops = element_blocks(_elements(obj))
    own_starts = np.array([s for s, _ in spans], np.uint64)
    own_stops = np.array([e for _, e in spans], np.uint64)
    return np.concatenate((starts, own_starts)), np.concatenate((stops, own_stops))


def memory_ranges(obj: Any) -> List[Range]:
    """The address ranges ``[start, stop)`` (bytes) that hold ``obj``'s memory, merged.

    Counted: ``obj``'s inline block (from its GC header or pre-header to the
    end of its inline items); the buffer of numpy arrays, bytes, bytearray,
    memoryview, ``array.array``, ``mmap`` and any other buffer-protocol
    object; the item storage of lists, dicts and sets; and for list, tuple,
    dict (keys and values), set and numpy object arrays, the inline blocks
    of the objects held, one level deep.
    """
    return merge_ranges(*object_spans(obj))


def addresses(items: Sequence[Any]) -> np.ndarray:
    """``id()`` of every item, as uint64.

    A list's or tuple's item pointers are those addresses: copied straight
    from its item storage, ten times faster than calling id() per item.
    """
    count = len(items)
    if type(items) is list:
        start = ctypes.c_void_p.from_address(id(items) + _LIST_ITEMS).value
    elif type(items) is tuple:
        start = id(items) + _TUPLE_ITEMS
    else:
        return np.fromiter(map(id, items), np.uint64, count)
    if not count:
        return np.zeros(0, np.uint64)
    return np.frombuffer((ctypes.c_uint64 * count).from_address(start), np.uint64).copy()


def element_blocks(items: Iterable[Any]) -> Tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the inline block of each of ``items``, in order."""
    items = items if isinstance(items, (list, tuple)) else list(items)
    count = len(items)
    starts = addresses(items)
    types = set(map(type, items))
    if len(types) == 1:
        # One type, the common case: vectorised.
        tp = types.pop()
        before, size = _layout(tp)
        sizes = np.fromiter(map(tp.__sizeof__, items), np.uint64, count) if not size else np.uint64(size)
        return starts - np.uint64(before), starts + sizes
    befores, sizes = np.empty(count, np.uint64), np.empty(count, np.uint64)
    for i, x in enumerate(items):
        before, size = _layout(type(x))
        befores[i], sizes[i] = before, size or x.__sizeof__()
    return starts - befores, starts + sizes


def merge_ranges(starts: np.ndarray, stops: np.ndarray) -> List[Range]:
    """Merge overlapping or touching ranges; returns them sorted as int pairs."""
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    if starts.size == 0:
        return []
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], np.maximum.accumulate(stops[order])
    # A new run starts where a range begins after everything before it ended.
    new = np.ones(starts.size, bool)
    new[1:] = starts[1:] > stops[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, starts.size - 1)
    return list(zip(starts[first].tolist(), stops[last].tolist()))
