"""Checking cowmem's description of the object layouts against objects of known content.

Each fact of layouts.py that reading objects relies on is checked the first
time a process needs it: objects whose content is known (a list of known
objects, a dict, an instance, a deque...) are read at the offsets layouts.py
gives, through ``/proc/self/mem``, so that a wrong guess is an error, not a
crash.  :func:`require` raises UnverifiedLayoutError, naming the fact and
what failed, when a check fails: a free-threaded build (its header starts
with ``ob_tid``) fails the first one.
"""

from __future__ import annotations

import ctypes
import sys
from collections import deque
from typing import Callable, Dict, Optional

import numpy as np

from . import layouts
from .errors import UnverifiedLayoutError
from .peek import SafeReader


class _Sample:
    """A class of the common kind: its instances keep a managed __dict__ (3.11+)."""

    def __init__(self, a: object, b: object, c: object) -> None:
        self.a, self.b, self.c = a, b, c


class _Slotted:
    __slots__ = ("a",)


def _objects(count: int) -> list:
    return [object() for _ in range(count)]


def _check_header(read: SafeReader) -> Optional[str]:
    x = object()
    start = read.word(id(x) + layouts.REFCOUNT)
    held = [x] * 3
    if read.word(id(x) + layouts.REFCOUNT) - start != len(held):
        return f"the reference count is not the word at offset {layouts.REFCOUNT}"
    for y in (x, [], 1.5, "".join(["a", "b"])):
        if read.word(id(y) + layouts.TYPE) != id(type(y)):
            return f"ob_type of a {type(y).__name__} is not at offset {layouts.TYPE}"
    return None


def _check_gc_header(read: SafeReader) -> Optional[str]:
    extra = sys.getsizeof([]) - [].__sizeof__()
    if extra != layouts.GC_HEAD:
        return f"sys.getsizeof(list) - list.__sizeof__() is {extra}, not a {layouts.GC_HEAD}-byte GC header"
    if sys.getsizeof(1.5) != (1.5).__sizeof__():
        return "a float, which is not a container, has bytes before it"
    return None


def _check_preheader(read: SafeReader) -> Optional[str]:
    sample, slotted = _Sample(1, 2, 3), _Slotted()
    expected = layouts.GC_HEAD + (layouts.PREHEADER if layouts._KNOWN >= (3, 11) else 0)
    for obj, before_it in ((sample, expected), (slotted, layouts.GC_HEAD)):
        extra = sys.getsizeof(obj) - obj.__sizeof__()
        if extra != before_it or layouts.before(type(obj)) != before_it:
            return (f"{type(obj).__name__} instances have {extra} bytes before them "
                    f"(flags {type(obj).__flags__:#x}), not {before_it}")
    return None


def _check_immortal(read: SafeReader) -> Optional[str]:
    mortal = object()
    for obj, expected in ((None, layouts.IMMORTAL), (mortal, False)):
        count = read.word(id(obj) + layouts.REFCOUNT) & 0xFFFFFFFF
        if (count >= 1 << 31) != expected or bool(layouts.is_immortal(np.array([id(obj)], np.uint64))[0]) != expected:
            return f"{obj!r} is {'not ' if expected else ''}immortal"
    return None


def _check_list(read: SafeReader) -> Optional[str]:
    items = _objects(3)
    if [int(w) for w in read.words(read.word(id(items) + layouts.LIST_ITEMS), 3)] != list(map(id, items)):
        return f"the word at offset {layouts.LIST_ITEMS} does not point to the items"
    allocated = read.word(id(items) + layouts.LIST_ALLOCATED)
    if list.__sizeof__(items) != list.__basicsize__ + allocated * layouts.WORD:
        return f"the word at offset {layouts.LIST_ALLOCATED} is not the allocated item count"
    return None


def _check_dict(read: SafeReader) -> Optional[str]:
    values = _objects(5)
    table = {f"key {i}": v for i, v in enumerate(values)}
    keys, split = read.word(id(table) + layouts.DICT_KEYS), read.word(id(table) + layouts.DICT_VALUES)
    extra = dict.__sizeof__(table) - dict.__basicsize__
    if split or not keys or extra <= 0 or read.word(keys) != 1:
        return f"a dict's keys are not an owned table at offset {layouts.DICT_KEYS}, with no values at {layouts.DICT_VALUES}"
    if not np.isin(list(map(id, values)), read.words(keys, extra // layouts.WORD)).all():
        return f"the {extra} bytes at ma_keys do not hold the dict's values"
    instance = _Sample(*values[:3])
    if layouts.VALUES == "dict":
        own = read.word(id(vars(instance)) + layouts.DICT_VALUES)
        if not own or [int(w) for w in read.words(own, 3)] != list(map(id, values[:3])):
            return "an instance __dict__'s split values are not at ma_values"
        return None
    split = vars(instance)   # makes the dict; its table stays the instance's values
    own, keys = read.word(id(split) + layouts.DICT_VALUES), read.word(id(split) + layouts.DICT_KEYS)
    return _check_values(read, own, keys, split, values[:3]) if own else "an instance __dict__ has no split values"


def _check_values(read: SafeReader, values: int, keys: int, split: Optional[dict], held: list) -> Optional[str]:
    """The values array at ``values`` holds ``held`` first, and layouts.values_bounds places it.

    3.11, 3.12: ``keys`` are the shared keys it was made for, ``split`` a
    split dict of those keys, whose ``__sizeof__`` counts 8 bytes per slot;
    the array is its prefix and its slots, exactly.
    """
    first = values + (layouts.WORD if layouts.VALUES == "inline" else 0)
    if [int(w) for w in read.words(first, len(held))] != list(map(id, held)):
        return f"the values at {values:#x} are not the instance's attributes"
    if layouts.VALUES == "inline":
        ok = read.byte(values) >= len(held)
        start, stop = values, first + len(held) * layouts.WORD   # at least
    else:
        prefix = read.byte(values - 1)
        slots = read.word(keys + layouts.KEYS_NENTRIES) + read.word(keys + layouts.KEYS_USABLE)
        if split is None or slots * layouts.WORD != dict.__sizeof__(split) - dict.__basicsize__:
            return (f"the words at offsets {layouts.KEYS_NENTRIES} and {layouts.KEYS_USABLE} of shared keys "
                    "do not count the value slots that a split dict's size does")
        # CPython rounds slots + 2 up to a multiple of 8 (more slots, for an array made when the keys had more).
        ok = prefix % layouts.WORD == 0 and len(held) <= slots and slots + 2 <= prefix
        start, stop = values - prefix, values + slots * layouts.WORD   # exactly
    lo, hi = (int(b[0]) for b in layouts.values_bounds(np.array([values], np.uint64), np.array([keys], np.uint64)))
    placed = lo <= start and hi >= stop if layouts.VALUES == "inline" else (lo, hi) == (start, stop)
    return None if ok and placed else f"the values block at {values:#x} does not say its size as expected"


def _check_instance(read: SafeReader) -> Optional[str]:
    held = _objects(3)
    instance = _Sample(*held)
    if layouts.VALUES == "dict":
        return None
    if layouts.VALUES == "inline":
        if not layouts.has_inline_values(_Sample):
            return f"a plain class lacks the inline-values flag (flags {_Sample.__flags__:#x})"
        values = id(instance) + _Sample.__basicsize__
        if read.byte(values + 2) != 1:
            return "the values after the object are not marked embedded"
        return _check_values(read, values, 0, None, held)
    values = int(layouts.managed_values(_Sample, np.array([id(instance)], np.uint64))[0])
    if not values:
        return "no values pointer in the pre-header"
    split = vars(_Sample(*held))   # another instance's dict: its keys are the class's
    keys = read.word(id(_Sample) + layouts.HT_CACHED_KEYS)
    if keys != read.word(id(split) + layouts.DICT_KEYS) or layouts.cached_keys(_Sample) != keys:
        return f"the word at offset {layouts.HT_CACHED_KEYS} of a class is not its instances' shared keys"
    return _check_values(read, values, keys, split, held)


def _check_set(read: SafeReader) -> Optional[str]:
    members = _objects(20)
    big, small = set(members), {members[0]}
    mask, table = read.word(id(big) + layouts.SET_MASK), read.word(id(big) + layouts.SET_TABLE)
    if set.__sizeof__(big) != set.__basicsize__ + (mask + 1) * layouts.SET_ENTRY:
        return f"the word at offset {layouts.SET_MASK} is not the table's mask"
    if not np.isin(list(map(id, members)), read.words(table, (mask + 1) * layouts.SET_ENTRY // layouts.WORD)).all():
        return f"the word at offset {layouts.SET_TABLE} does not point to the table"
    inline = read.word(id(small) + layouts.SET_TABLE)
    if not id(small) <= inline < id(small) + set.__basicsize__ or set.__sizeof__(small) != set.__basicsize__:
        return "a small set's table is not inside the object"
    return None


def _check_deque(read: SafeReader) -> Optional[str]:
    items = _objects(150)
    queue = deque(items)
    block, last = read.word(id(queue) + layouts.DEQUE_LEFT), read.word(id(queue) + layouts.DEQUE_RIGHT)
    first, stop = read.word(id(queue) + layouts.DEQUE_LEFTINDEX), read.word(id(queue) + layouts.DEQUE_RIGHTINDEX)
    found, blocks = [], 0
    while blocks <= len(items) // layouts.BLOCK_LEN + 2:
        words = read.words(block + layouts.BLOCK_DATA, layouts.BLOCK_LEN)
        blocks += 1
        found += words[first:stop + 1 if block == last else layouts.BLOCK_LEN].tolist()
        if block == last:
            break
        block, first = read.word(block + layouts.BLOCK_RIGHT), 0
    if found != list(map(id, items)):
        return "the blocks linked from the deque do not hold its items"
    if (deque.__sizeof__(queue) - deque.__basicsize__) % layouts.BLOCK_SIZE:
        return f"deque.__sizeof__ does not count {layouts.BLOCK_SIZE}-byte blocks"
    return None


def _check_bytearray(read: SafeReader) -> Optional[str]:
    data = bytearray(b"cowmem")
    start = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
    alloc = read.word(id(data) + layouts.BYTEARRAY_ALLOC)
    if read.word(id(data) + layouts.BYTEARRAY_BYTES) != start or read.word(id(data) + layouts.BYTEARRAY_START) != start:
        return f"the words at offsets {layouts.BYTEARRAY_BYTES} and {layouts.BYTEARRAY_START} do not point to the bytes"
    if bytearray.__sizeof__(data) != bytearray.__basicsize__ + alloc:
        return f"the word at offset {layouts.BYTEARRAY_ALLOC} is not the allocated size"
    return None


def _check_str(read: SafeReader) -> Optional[str]:
    for text, kind, header in (("".join(["a", "bc"]), 1, layouts.ASCII_HEADER), ("é" * 3, 1, layouts.COMPACT_HEADER),
                               (chr(0x1F600) * 2, 4, layouts.COMPACT_HEADER)):
        sizes, _ = layouts.str_sizes([text])
        raw = read.read(id(text) + header, (len(text) + 1) * kind)
        if sizes[0] != str.__sizeof__(text) or raw != text.encode("utf-32-le" if kind == 4 else "latin-1") + bytes(kind):
            return f"the characters of {text!r} are not {header} bytes after its address"
    return None


def _check_ndarray(read: SafeReader) -> Optional[str]:
    owner = np.arange(6.0)
    arr = owner.reshape(2, 3)
    data = arr.__array_interface__["data"][0]
    dims = read.word(id(arr) + layouts.NDARRAY_DIMS)
    if (read.word(id(arr) + layouts.NDARRAY_DATA) != data or read.word(id(arr) + layouts.NDARRAY_ND) & 0xFFFFFFFF != 2
            or read.words(dims, 4).tolist() != [*arr.shape, *arr.strides]
            or read.word(id(arr) + layouts.NDARRAY_BASE) != id(owner)):
        return "the data, nd, dimensions and base fields are not where expected"
    if owner.__sizeof__() != np.ndarray.__basicsize__ + 2 * layouts.WORD + owner.nbytes:
        return "ndarray.__sizeof__ does not count header, dimensions and data"
    return None


_CHECKS: Dict[str, Callable[[SafeReader], Optional[str]]] = {
    "the object header (ob_refcnt, ob_type)": _check_header,
    "the GC header": _check_gc_header,
    "the pre-header": _check_preheader,
    "immortal objects": _check_immortal,
    "list": _check_list,
    "dict": _check_dict,
    "instance attribute values": _check_instance,
    "set": _check_set,
    "collections.deque": _check_deque,
    "bytearray": _check_bytearray,
    "str": _check_str,
    "numpy.ndarray": _check_ndarray,
}
CORE = tuple(list(_CHECKS)[:5])
"""The facts any walk of an object graph needs; the rest are checked when their type is met."""

_verified: Dict[str, Optional[str]] = {}


def require(*facts: str) -> None:
    """Check ``facts`` (keys of the checks above) once per process; raise if one fails.

    Raises UnverifiedLayoutError naming the first fact whose check failed.
    """
    for fact in facts:
        if fact not in _verified:
            try:
                with SafeReader() as read:
                    _verified[fact] = _CHECKS[fact](read)
            except OSError as exc:
                _verified[fact] = f"reading a guessed field failed: {exc}"
        if _verified[fact] is not None:
            raise UnverifiedLayoutError(fact, _verified[fact], layouts.interpreter())
