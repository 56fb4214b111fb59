"""CPython's object layouts: the one description cowmem reads objects by.

CPython writes to objects a program only reads: the reference count is the
first word of every object, a container's GC header sits just before it,
and from 3.11 a pre-header of two words (the managed ``__dict__`` and, from
3.12, weakref pointers) before that.  To place an object's memory cowmem
needs these offsets and the fields of the containers it looks into (list
items, dict tables, set tables, deque blocks, instance attribute values,
numpy array dimensions).

Every fact here is what CPython 3.9 to 3.13 (64-bit, default build) do; a
newer interpreter is expected to do as 3.13 does.  None is trusted blindly:
:func:`require` checks a fact against objects of known content the first
time a process needs it (offsets read through ``/proc/self/mem``, so that a
wrong guess is an error, not a crash) and raises UnverifiedLayoutError,
naming the fact and what failed, when the check fails.  A free-threaded
build (its header starts with ``ob_tid``) fails the first check.

All sizes and offsets are in bytes.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import sysconfig
from collections import deque
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .errors import UnverifiedLayoutError
from .peek import SafeReader, gather

WORD = 8

# Type flags.
HAVE_GC = 1 << 14
INLINE_VALUES = 1 << 2          # 3.13+: attribute values stored after the object
MANAGED_WEAKREF = 1 << 3        # 3.12+: the weakref list pointer in the pre-header
MANAGED_DICT = 1 << 4           # 3.11+: the __dict__ (or values) pointer in the pre-header

# Every object: PyObject_HEAD.
REFCOUNT, REFCOUNT_SIZE = 0, 8
TYPE = 8
GC_HEAD = 2 * WORD              # PyGC_Head, just before a container

_VERSION = sys.version_info[:2]
_KNOWN = min(_VERSION, (3, 13))   # newer: expected to be as 3.13, verified like the rest

PREHEADER_FLAGS = {(3, 9): 0, (3, 10): 0, (3, 11): MANAGED_DICT}.get(_KNOWN, MANAGED_DICT | MANAGED_WEAKREF)
PREHEADER = 2 * WORD

# Where an instance's attribute values live when its class manages its __dict__:
#   "dict"      3.9, 3.10: in a dict object (split table), found as a referent;
#   "preheader" 3.11: a values pointer at -4 words, an allocation of its own;
#   "tagged"    3.12: the word at -3 words, values pointer - 1 (odd) until a dict is made;
#   "inline"    3.13+: after the object (tp_basicsize), in the object's own allocation.
VALUES = {(3, 9): "dict", (3, 10): "dict", (3, 11): "preheader", (3, 12): "tagged"}.get(_KNOWN, "inline")
IMMORTAL = _KNOWN >= (3, 12)    # objects whose reference count is never written

LIST_ITEMS, LIST_ALLOCATED = 3 * WORD, 4 * WORD
TUPLE_ITEMS = tuple.__basicsize__
DICT_KEYS, DICT_VALUES = 4 * WORD, 5 * WORD
SET_MASK, SET_TABLE, SET_ENTRY = 4 * WORD, 5 * WORD, 2 * WORD
DEQUE_LEFT, DEQUE_RIGHT, DEQUE_LEFTINDEX, DEQUE_RIGHTINDEX = 3 * WORD, 4 * WORD, 5 * WORD, 6 * WORD
BLOCK_LEN = 64                  # a deque block: left link, 64 item pointers, right link
BLOCK_DATA, BLOCK_RIGHT = WORD, (1 + BLOCK_LEN) * WORD
BLOCK_SIZE = (2 + BLOCK_LEN) * WORD
BYTEARRAY_ALLOC, BYTEARRAY_BYTES, BYTEARRAY_START = 3 * WORD, 4 * WORD, 5 * WORD
NDARRAY_DATA, NDARRAY_ND, NDARRAY_DIMS, NDARRAY_BASE = 2 * WORD, 3 * WORD, 4 * WORD, 6 * WORD

# A compact str's characters follow PyASCIIObject (ASCII) or PyCompactUnicodeObject.
ASCII_HEADER = str.__sizeof__("") - 1
COMPACT_HEADER = str.__sizeof__(chr(256)) - 4


def interpreter() -> str:
    """This interpreter in words, e.g. "CPython 3.14.0 (free-threaded)"."""
    free = " (free-threaded)" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    return f"{platform.python_implementation()} {platform.python_version()}{free}"


# --- what the walk computes from the facts ---------------------------------

def before(tp: type) -> int:
    """Bytes of an object of type ``tp`` before its address: GC header and pre-header."""
    return (GC_HEAD if tp.__flags__ & HAVE_GC else 0) + (PREHEADER if tp.__flags__ & PREHEADER_FLAGS else 0)


def has_inline_values(tp: type) -> bool:
    """Whether ``tp``'s instances store their attribute values after the object (3.13+)."""
    return VALUES == "inline" and bool(tp.__flags__ & INLINE_VALUES)


def values_size(capacity: np.ndarray) -> np.ndarray:
    """Bytes of a 3.13+ values block: a word of header, the values, one order byte per value."""
    capacity = capacity.astype(np.uint64)
    return np.uint64(WORD) + capacity * np.uint64(WORD) + (capacity + np.uint64(WORD - 1)) // np.uint64(WORD) * np.uint64(WORD)


def values_bounds(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` of the allocation behind each values pointer (3.11+, uint64 addresses).

    3.11 and 3.12 allocate a prefix (insertion order) before the values and
    store its size, a multiple of 8 and at least count + 2, in the byte just
    before them: the values end at most (prefix - 2) words after.  3.13+
    starts the block with its capacity.
    """
    if VALUES == "inline":
        return values, values + values_size(gather(values, np.uint8))
    prefix = gather(values - np.uint64(1), np.uint8).astype(np.uint64)
    return values - prefix, values + np.maximum(prefix, np.uint64(2)) * np.uint64(WORD) - np.uint64(2 * WORD)


def managed_values(tp: type, ids: np.ndarray) -> np.ndarray:
    """The separate values pointer of each instance of ``tp`` (3.11, 3.12); 0 where there is none."""
    if not tp.__flags__ & MANAGED_DICT or VALUES not in ("preheader", "tagged"):
        return np.zeros(ids.shape, np.uint64)
    if VALUES == "preheader":
        return gather(ids - np.uint64(4 * WORD), np.uint64)
    tagged = gather(ids - np.uint64(3 * WORD), np.uint64)
    return np.where(tagged & np.uint64(1), tagged + np.uint64(1), np.uint64(0))


def str_sizes(strings: list) -> Tuple[np.ndarray, np.ndarray]:
    """(inline bytes, ASCII or not) of each exact str: header and characters, NUL included.

    What ``__sizeof__`` adds beyond that is a cached UTF-8 (or, up to 3.11,
    wchar_t) copy in an allocation of its own.
    """
    count = len(strings)
    ascii_ = np.fromiter(map(str.isascii, strings), bool, count)
    lengths = np.fromiter(map(len, strings), np.uint64, count)
    kinds = np.ones(count, np.uint64)
    wide = np.flatnonzero(~ascii_)
    if wide.size:
        top = np.fromiter(map(ord, map(max, (strings[i] for i in wide.tolist()))), np.uint64, wide.size)
        kinds[wide] = np.where(top < 256, 1, np.where(top < 65536, 2, 4))
    sizes = np.where(ascii_, np.uint64(ASCII_HEADER) + lengths + np.uint64(1),
                     np.uint64(COMPACT_HEADER) + (lengths + np.uint64(1)) * kinds)
    return sizes, ascii_


def is_immortal(ids: np.ndarray) -> np.ndarray:
    """Per object address: is it immortal (3.12+: the low 32 bits of the count, signed, negative)?"""
    if not IMMORTAL:
        return np.zeros(ids.shape, bool)
    return gather(ids + np.uint64(REFCOUNT), np.int32) < 0


# --- naming fields, for explain mode ------------------------------------------

_INT_SIZE_FIELD = "lv_tag" if _KNOWN >= (3, 12) else "ob_size"
_STR_FIELDS = {2 * WORD: "length", 3 * WORD: "hash", 4 * WORD: "state"}
_STR_FIELDS.update({5 * WORD: "wstr", 6 * WORD: "utf8_length", 7 * WORD: "utf8", 8 * WORD: "wstr_length"}
                   if _KNOWN < (3, 12) else {5 * WORD: "utf8_length", 6 * WORD: "utf8"})
_SET_FIELDS = {2 * WORD: "fill", 3 * WORD: "used", SET_MASK: "mask", SET_TABLE: "table", 6 * WORD: "hash",
               7 * WORD: "finger"}
HEADER_FIELDS: Dict[str, Dict[int, str]] = {
    "list": {2 * WORD: "ob_size", LIST_ITEMS: "ob_item", LIST_ALLOCATED: "allocated"},
    "tuple": {2 * WORD: "ob_size"},
    "int": {2 * WORD: _INT_SIZE_FIELD},
    "bool": {2 * WORD: _INT_SIZE_FIELD},
    "str": _STR_FIELDS,
    "bytes": {2 * WORD: "ob_size", 3 * WORD: "ob_shash"},
    "dict": {2 * WORD: "ma_used", 3 * WORD: "ma_version_tag", DICT_KEYS: "ma_keys", DICT_VALUES: "ma_values"},
    "set": _SET_FIELDS,
    "frozenset": _SET_FIELDS,
}
"""Per builtin type name: header field names by offset from the object's address."""
PAYLOAD_NAMES = {"tuple": "ob_item", "int": "ob_digit", "bool": "ob_digit", "str": "characters",
                 "bytes": "ob_sval", "float": "ob_fval", "complex": "cval"}
"""Per builtin type name: what its payload (the bytes after the header) is called."""
_NAMED = {tp.__name__: tp for tp in (list, tuple, int, bool, str, bytes, dict, set, frozenset, float, complex)}


def fields_key(tp: type) -> str:
    """The key of ``tp`` in HEADER_FIELDS and PAYLOAD_NAMES: its name if it is that builtin, else ""."""
    return tp.__name__ if _NAMED.get(tp.__name__) is tp else ""


def header_bytes(tp: type, ascii_str: bool = False) -> int:
    """Bytes from an object's address to the end of its header.

    ``__basicsize__`` for most types; the exceptions hold their value inside
    it (float, complex: the value follows PyObject_HEAD), count a NUL of the
    payload in it (bytes), or declare the size of a non-compact string (str,
    whose compact header is smaller, and smaller still when ASCII).
    """
    if tp is float or tp is complex:
        return 2 * WORD
    if tp is bytes:
        return tp.__basicsize__ - 1
    if tp is str:
        return ASCII_HEADER if ascii_str else COMPACT_HEADER
    return tp.__basicsize__


def type_name(tp: type) -> str:
    """``tp``'s name as cowmem reports it: ``int``, ``numpy.ndarray``, ``decimal.Decimal``."""
    module, name = type.__dict__["__module__"].__get__(tp), type.__dict__["__qualname__"].__get__(tp)
    return name if module == "builtins" else f"{module}.{name}"


# --- verifying the facts against known objects ----------------------------------

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
    start = read.word(id(x) + REFCOUNT)
    held = [x] * 3
    if read.word(id(x) + REFCOUNT) - start != len(held):
        return f"the reference count is not the word at offset {REFCOUNT}"
    for y in (x, [], 1.5, "".join(["a", "b"])):
        if read.word(id(y) + TYPE) != id(type(y)):
            return f"ob_type of a {type(y).__name__} is not at offset {TYPE}"
    return None


def _check_gc_header(read: SafeReader) -> Optional[str]:
    extra = sys.getsizeof([]) - [].__sizeof__()
    if extra != GC_HEAD:
        return f"sys.getsizeof(list) - list.__sizeof__() is {extra}, not a {GC_HEAD}-byte GC header"
    if sys.getsizeof(1.5) != (1.5).__sizeof__():
        return "a float, which is not a container, has bytes before it"
    return None


def _check_preheader(read: SafeReader) -> Optional[str]:
    sample, slotted = _Sample(1, 2, 3), _Slotted()
    expected = GC_HEAD + (PREHEADER if _KNOWN >= (3, 11) else 0)
    for obj, before_it in ((sample, expected), (slotted, GC_HEAD)):
        extra = sys.getsizeof(obj) - obj.__sizeof__()
        if extra != before_it or before(type(obj)) != before_it:
            return (f"{type(obj).__name__} instances have {extra} bytes before them "
                    f"(flags {type(obj).__flags__:#x}), not {before_it}")
    return None


def _check_immortal(read: SafeReader) -> Optional[str]:
    mortal = object()
    for obj, expected in ((None, IMMORTAL), (mortal, False)):
        count = read.word(id(obj) + REFCOUNT) & 0xFFFFFFFF
        if (count >= 1 << 31) != expected or bool(is_immortal(np.array([id(obj)], np.uint64))[0]) != expected:
            return f"{obj!r} is {'not ' if expected else ''}immortal"
    return None


def _check_list(read: SafeReader) -> Optional[str]:
    items = _objects(3)
    if [int(w) for w in read.words(read.word(id(items) + LIST_ITEMS), 3)] != list(map(id, items)):
        return f"the word at offset {LIST_ITEMS} does not point to the items"
    allocated = read.word(id(items) + LIST_ALLOCATED)
    if list.__sizeof__(items) != list.__basicsize__ + allocated * WORD:
        return f"the word at offset {LIST_ALLOCATED} is not the allocated item count"
    return None


def _check_dict(read: SafeReader) -> Optional[str]:
    values = _objects(5)
    table = {f"key {i}": v for i, v in enumerate(values)}
    keys, split = read.word(id(table) + DICT_KEYS), read.word(id(table) + DICT_VALUES)
    extra = dict.__sizeof__(table) - dict.__basicsize__
    if split or not keys or extra <= 0 or read.word(keys) != 1:
        return f"a dict's keys are not an owned table at offset {DICT_KEYS}, with no values at {DICT_VALUES}"
    if not np.isin(list(map(id, values)), read.words(keys, extra // WORD)).all():
        return f"the {extra} bytes at ma_keys do not hold the dict's values"
    instance = _Sample(*values[:3])
    if VALUES == "dict":
        own = read.word(id(vars(instance)) + DICT_VALUES)
        if not own or [int(w) for w in read.words(own, 3)] != list(map(id, values[:3])):
            return "an instance __dict__'s split values are not at ma_values"
        return None
    vars(instance)   # makes the dict; its table stays the instance's values
    own = read.word(id(vars(instance)) + DICT_VALUES)
    return _check_values(read, own, values[:3]) if own else "an instance __dict__ has no split values"


def _check_values(read: SafeReader, values: int, held: list) -> Optional[str]:
    first = values + (WORD if VALUES == "inline" else 0)
    if [int(w) for w in read.words(first, len(held))] != list(map(id, held)):
        return f"the values at {values:#x} are not the instance's attributes"
    if VALUES == "inline":
        capacity = read.byte(values)
        ok = capacity >= len(held)
    else:
        prefix = read.byte(values - 1)
        ok = prefix % WORD == 0 and prefix >= len(held) + 2
    lo, hi = (int(b[0]) for b in values_bounds(np.array([values], np.uint64)))
    return None if ok and lo <= values and hi >= first + len(held) * WORD else \
        f"the values block at {values:#x} does not say its size as expected"


def _check_instance(read: SafeReader) -> Optional[str]:
    held = _objects(3)
    instance = _Sample(*held)
    if VALUES == "dict":
        return None
    if VALUES == "inline":
        if not has_inline_values(_Sample):
            return f"a plain class lacks the inline-values flag (flags {_Sample.__flags__:#x})"
        values = id(instance) + _Sample.__basicsize__
        if read.byte(values + 2) != 1:
            return "the values after the object are not marked embedded"
        return _check_values(read, values, held)
    values = int(managed_values(_Sample, np.array([id(instance)], np.uint64))[0])
    return _check_values(read, values, held) if values else "no values pointer in the pre-header"


def _check_set(read: SafeReader) -> Optional[str]:
    members = _objects(20)
    big, small = set(members), {members[0]}
    mask, table = read.word(id(big) + SET_MASK), read.word(id(big) + SET_TABLE)
    if set.__sizeof__(big) != set.__basicsize__ + (mask + 1) * SET_ENTRY:
        return f"the word at offset {SET_MASK} is not the table's mask"
    if not np.isin(list(map(id, members)), read.words(table, (mask + 1) * SET_ENTRY // WORD)).all():
        return f"the word at offset {SET_TABLE} does not point to the table"
    inline = read.word(id(small) + SET_TABLE)
    if not id(small) <= inline < id(small) + set.__basicsize__ or set.__sizeof__(small) != set.__basicsize__:
        return "a small set's table is not inside the object"
    return None


def _check_deque(read: SafeReader) -> Optional[str]:
    items = _objects(150)
    queue = deque(items)
    block, last = read.word(id(queue) + DEQUE_LEFT), read.word(id(queue) + DEQUE_RIGHT)
    first, stop = read.word(id(queue) + DEQUE_LEFTINDEX), read.word(id(queue) + DEQUE_RIGHTINDEX)
    found, blocks = [], 0
    while blocks <= len(items) // BLOCK_LEN + 2:
        words = read.words(block + BLOCK_DATA, BLOCK_LEN)
        blocks += 1
        found += words[first:stop + 1 if block == last else BLOCK_LEN].tolist()
        if block == last:
            break
        block, first = read.word(block + BLOCK_RIGHT), 0
    if found != list(map(id, items)):
        return "the blocks linked from the deque do not hold its items"
    if (deque.__sizeof__(queue) - deque.__basicsize__) % BLOCK_SIZE:
        return f"deque.__sizeof__ does not count {BLOCK_SIZE}-byte blocks"
    return None


def _check_bytearray(read: SafeReader) -> Optional[str]:
    data = bytearray(b"cowmem")
    start = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
    alloc = read.word(id(data) + BYTEARRAY_ALLOC)
    if read.word(id(data) + BYTEARRAY_BYTES) != start or read.word(id(data) + BYTEARRAY_START) != start:
        return f"the words at offsets {BYTEARRAY_BYTES} and {BYTEARRAY_START} do not point to the bytes"
    if bytearray.__sizeof__(data) != bytearray.__basicsize__ + alloc:
        return f"the word at offset {BYTEARRAY_ALLOC} is not the allocated size"
    return None


def _check_str(read: SafeReader) -> Optional[str]:
    for text, kind, header in (("".join(["a", "bc"]), 1, ASCII_HEADER), ("é" * 3, 1, COMPACT_HEADER),
                               (chr(0x1F600) * 2, 4, COMPACT_HEADER)):
        sizes, _ = str_sizes([text])
        raw = read.read(id(text) + header, (len(text) + 1) * kind)
        if sizes[0] != str.__sizeof__(text) or raw != text.encode(f"utf-32-le" if kind == 4 else "latin-1") + bytes(kind):
            return f"the characters of {text!r} are not {header} bytes after its address"
    return None


def _check_ndarray(read: SafeReader) -> Optional[str]:
    owner = np.arange(6.0)
    arr = owner.reshape(2, 3)
    data = arr.__array_interface__["data"][0]
    dims = read.word(id(arr) + NDARRAY_DIMS)
    if (read.word(id(arr) + NDARRAY_DATA) != data or read.word(id(arr) + NDARRAY_ND) & 0xFFFFFFFF != 2
            or read.words(dims, 4).tolist() != [*arr.shape, *arr.strides]
            or read.word(id(arr) + NDARRAY_BASE) != id(owner)):
        return "the data, nd, dimensions and base fields are not where expected"
    if owner.__sizeof__() != np.ndarray.__basicsize__ + 2 * WORD + owner.nbytes:
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
            raise UnverifiedLayoutError(fact, _verified[fact], interpreter())
