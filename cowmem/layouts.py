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
verify.py checks each against objects of known content the first time a
process needs it, and refuses what fails.

All sizes and offsets are in bytes.
"""

from __future__ import annotations

import platform
import sys
import sysconfig
from typing import Dict, Tuple

import numpy as np

from .peek import gather

WORD = 8

# Type flags.
HAVE_GC = 1 << 14
HEAPTYPE = 1 << 9
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

# 3.11, 3.12: a values array has one slot per entry or usable slot of its class's shared keys
# (PyHeapTypeObject.ht_cached_keys) when it was made; those counts only shrink as instances are made.
HT_CACHED_KEYS = {(3, 11): 109 * WORD, (3, 12): 110 * WORD}.get(_KNOWN, 0)
KEYS_USABLE, KEYS_NENTRIES = 2 * WORD, 3 * WORD   # PyDictKeysObject.dk_usable, dk_nentries

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


def values_bounds(values: np.ndarray, keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` of the allocation behind each values pointer (3.11+, uint64 addresses).

    ``keys``: the address of the shared keys each array was made for (3.11,
    3.12; a class's ``cached_keys``, a split dict's ``ma_keys``; 0 for
    none), unread on 3.13+, whose block starts with its capacity.  3.11 and
    3.12 allocate a prefix (insertion order) before the values and store
    its size, a multiple of 8 bytes rounded up from slots + 2, in the byte
    just before them; the values are 8 bytes per slot of the keys
    (``values_slots``).
    """
    if VALUES == "inline":
        return values, values + values_size(gather(values, np.uint8))
    prefix = gather(values - np.uint64(1), np.uint8).astype(np.uint64)
    return values - prefix, values + values_slots(keys, values.shape) * np.uint64(WORD)


def values_slots(keys: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Value slots of the arrays made for each shared keys object (3.11, 3.12): dk_nentries + dk_usable.

    An array made when the keys had more usable slots is longer: its extra
    slots stay NULL, as no key indexes them (CPython's own walk of the
    values stops here too).  0 where ``keys`` is 0.
    """
    keys = np.broadcast_to(np.asarray(keys, np.uint64), shape)
    slots = np.zeros(shape, np.uint64)
    known = keys != 0
    slots[known] = (gather(keys[known] + np.uint64(KEYS_NENTRIES), np.uint64)
                    + gather(keys[known] + np.uint64(KEYS_USABLE), np.uint64))
    return slots


def cached_keys(tp: type) -> int:
    """The address of the shared keys of ``tp``'s instances' values arrays (3.11, 3.12); 0 elsewhere."""
    if VALUES not in ("preheader", "tagged") or not tp.__flags__ & HEAPTYPE:
        return 0
    return int(gather(np.array([id(tp) + HT_CACHED_KEYS], np.uint64), np.uint64)[0])


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
    """``tp``'s name in the object index and explanations: ``int``, ``ndarray``, ``Decimal``."""
    return type.__dict__["__qualname__"].__get__(tp)


def qualified_name(tp: type) -> str:
    """``tp``'s name with its module, as the unlocated report gives it: ``decimal.Decimal``."""
    module = type.__dict__["__module__"].__get__(tp)
    return type_name(tp) if module == "builtins" else f"{module}.{type_name(tp)}"
