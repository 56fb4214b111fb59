"""Where one type's objects keep their memory: the rows of the object index for them.

For each object: its inline block (GC header and pre-header, header,
inline items and, from 3.13, inline attribute values); the storage it owns
outside it (list items, dict and set tables, deque blocks, instance
attribute values, bytearray, ``array.array`` and numpy dimension buffers);
and the buffers it exposes (buffer protocol, ``__array_interface__``,
pyarrow buffers when pyarrow is already imported).  An object whose own C
``__sizeof__`` (a Python-level override is ignored) counts more than was
placed is *unlocated*: counted per type, never silently dropped.  So is an
array of numpy's StringDType whose strings live in its allocator's arena.

Everything is read in place, from the objects' fields (layouts.py): no
object is made whose address is then counted.
"""

from __future__ import annotations

import array
import sys
import types
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import layouts, verify
from .index import BUFFER, OBJECT, STORAGE, TypeInfo
from .layouts import WORD
from .peek import gather, view

Range = Tuple[int, int]
_U64 = np.uint64


def _c_sizeof(tp: type) -> Callable[[Any], int]:
    """The C ``__sizeof__`` nearest in ``tp``'s MRO: a Python-level one may count other objects."""
    for klass in tp.__mro__:
        method = klass.__dict__.get("__sizeof__")
        if isinstance(method, (types.MethodDescriptorType, types.WrapperDescriptorType)):
            return method
    return object.__sizeof__


def _extent(data: int, shape: Sequence[int], strides: Optional[Sequence[int]], itemsize: int) -> Optional[Range]:
    """The bytes an array of ``shape`` and ``strides`` at ``data`` reaches; None if it is empty."""
    if not data or any(n == 0 for n in shape):
        return None
    if strides is None:  # C-contiguous
        strides, step = [], itemsize
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
    reach = [s * (n - 1) for s, n in zip(strides, shape)]
    return data + sum(min(0, r) for r in reach), data + sum(max(0, r) for r in reach) + itemsize


def buffer_extent(obj: Any) -> Optional[Range]:
    """The bytes ``obj`` exposes through the buffer protocol or ``__array_interface__``, if any."""
    face = getattr(obj, "__array_interface__", None) if not isinstance(obj, np.ndarray) else None
    if isinstance(obj, np.ndarray) or isinstance(face, dict):
        face = obj.__array_interface__ if face is None else face
        try:
            itemsize = obj.itemsize if isinstance(obj, np.ndarray) else np.dtype(face["typestr"]).itemsize
            return _extent(face["data"][0], face["shape"], face.get("strides"), itemsize)
        except (KeyError, TypeError, ValueError):
            return None
    try:
        with memoryview(obj) as seen:
            if not seen.nbytes:
                return None
            arr = np.asarray(seen) if seen.format in _NUMPY_FORMATS else np.asarray(seen.cast("B"))
    except (TypeError, ValueError, NotImplementedError):
        return None
    face = arr.__array_interface__
    return _extent(face["data"][0], arr.shape, arr.strides, arr.itemsize)


_NUMPY_FORMATS = frozenset("bBhHiIlLqQfdg?ecC") | {"Zf", "Zd"}


def _arrow_ranges(obj: Any, pa: Any) -> List[Range]:
    """The CPU buffers of a pyarrow Buffer, Array, ChunkedArray, RecordBatch or Table."""
    if isinstance(obj, pa.Buffer):
        return [(obj.address, obj.address + obj.size)] if obj.size and getattr(obj, "is_cpu", True) else []
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return [r for column in obj.columns for r in _arrow_ranges(column, pa)]
    if isinstance(obj, pa.ChunkedArray):
        return [r for chunk in obj.chunks for r in _arrow_ranges(chunk, pa)]
    if isinstance(obj, pa.Array):
        # buffers() lists the children's buffers too, but not a dictionary's.
        found = [r for b in obj.buffers() if b is not None for r in _arrow_ranges(b, pa)]
        dictionary = getattr(obj, "dictionary", None)
        return found + (_arrow_ranges(dictionary, pa) if isinstance(dictionary, pa.Array) else [])
    return []


# The bases cowmem knows how to place (the storage methods below), with the
# layout facts reading them needs.  Every type is placed as its nearest
# base here, whose C __sizeof__ counts exactly what is placed; a type whose
# own C __sizeof__ differs is compared with it per object.
_PLACED: Dict[type, Tuple[str, ...]] = {
    object: (), tuple: (), int: (), bytes: (), float: (), complex: (), str: ("str",),
    list: (), dict: ("dict",), set: ("set",), frozenset: ("set",), deque: ("collections.deque",),
    bytearray: ("bytearray",), array.array: (), np.ndarray: ("numpy.ndarray",),
}


class _Kind:
    """What cowmem knows of one type: how to place its instances."""

    def __init__(self, tp: type, arrow: Any) -> None:
        self.tp = tp
        self.name = layouts.qualified_name(tp)   # for the unlocated report
        self.before = layouts.before(tp)
        self.placed = next(k for k in tp.__mro__ if k in _PLACED)   # the base placed for it
        if self.placed is str and tp is not str:
            self.placed = object   # a str subclass keeps its characters in an allocation of their own
        self.facts = _PLACED[self.placed]
        if tp.__flags__ & layouts.MANAGED_DICT:
            self.facts += ("instance attribute values",)
        sizeof, placed_sizeof = _c_sizeof(tp), _c_sizeof(self.placed)
        # A variable-size object's own C __sizeof__ is its inline size (a
        # generator's frame, a memoryview's shape); ob_size need not count items.
        self.var = bool(tp.__itemsize__) and self.placed in (object, tuple, int, bytes)
        if self.var and self.placed is object:
            placed_sizeof = sizeof
        # Else its own C __sizeof__ may count more than its placed base does
        # (an OrderedDict's linked nodes, a Decimal's digits): compared per object.
        self.hidden = None if sizeof is placed_sizeof and tp is not str else sizeof
        self.known_size = placed_sizeof
        self.inline_values = layouts.has_inline_values(tp)
        self.arrow = arrow is not None and self.name.startswith("pyarrow.") and \
            issubclass(tp, (arrow.Buffer, arrow.Array, arrow.ChunkedArray, arrow.Table, arrow.RecordBatch))
        self.exports: Optional[bool] = False if self.placed is not object or self.arrow else None
        self.interface = self.placed is object and hasattr(tp, "__array_interface__")


def _inline_sizes(kind: _Kind, objs: List[Any]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Bytes from each object's address to the end of its inline part (not 3.13's values),
    and for a str whether each is ASCII (else None)."""
    if kind.tp is str:
        return layouts.str_sizes(objs)
    if kind.var:
        return np.fromiter(map(kind.known_size, objs), _U64, len(objs)), None
    return np.full(len(objs), kind.tp.__basicsize__, _U64), None


def own_block(obj: Any) -> Range:
    """``[start, stop)`` (bytes) of ``obj``'s own block: its GC header and pre-header,
    header, inline items and (3.13+) inline attribute values; not what it owns elsewhere.

    Reads only the object's type, size and, on 3.13+, its values' capacity.
    Raises UnverifiedLayoutError if the facts it needs are not verified.
    """
    verify.require(*verify.CORE)
    kind = _Kind(type(obj), None)
    if kind.inline_values:
        verify.require("instance attribute values")
    size = int(_inline_sizes(kind, [obj])[0][0])
    if kind.inline_values:
        size += int(layouts.values_size(gather(np.array([id(obj) + kind.tp.__basicsize__], _U64), np.uint8))[0])
    return id(obj) - kind.before, id(obj) + size


class Rows:
    """Rows of the index in the making: chunks of (lo, hi, code, part, owner) arrays."""

    def __init__(self) -> None:
        self.chunks: List[Tuple[np.ndarray, ...]] = []

    def add(self, lo: np.ndarray, hi: np.ndarray, code: Any, part: int, owner: np.ndarray) -> None:
        lo, hi = np.asarray(lo, _U64), np.asarray(hi, _U64)
        if lo.size:
            self.chunks.append((lo, hi, np.broadcast_to(np.asarray(code, np.int32), lo.shape),
                                np.full(lo.shape, part, np.int8), np.broadcast_to(np.asarray(owner, _U64), lo.shape)))

    def add_ranges(self, ranges: Sequence[Range], code: int, part: int, owners: Sequence[int]) -> None:
        if ranges:
            self.add(np.array([r[0] for r in ranges], _U64), np.array([r[1] for r in ranges], _U64), code, part,
                     np.array(owners, _U64))

    def columns(self) -> List[np.ndarray]:
        if not self.chunks:
            return [np.zeros(0, _U64), np.zeros(0, _U64), np.zeros(0, np.int32), np.zeros(0, np.int8),
                    np.zeros(0, _U64)]
        return [np.concatenate(parts) for parts in zip(*self.chunks)]


class Placer:
    """Places objects, one type at a time, as rows; keeps the table of layout codes (``types``)."""

    def __init__(self) -> None:
        self._kinds: Dict[type, _Kind] = {}
        self._codes: Dict[Tuple[type, bool], int] = {}
        self.types: List[TypeInfo] = []
        self._arrow = sys.modules.get("pyarrow")

    def _kind(self, tp: type) -> _Kind:
        kind = self._kinds.get(tp)
        if kind is None:
            kind = self._kinds[tp] = _Kind(tp, self._arrow)
        return kind

    def code(self, tp: type, ascii_str: bool = False) -> int:
        """The layout code of ``tp`` (for a str: ASCII or not), an index into ``types``."""
        key = (tp, ascii_str)
        if key not in self._codes:
            self._codes[key] = len(self.types)
            self.types.append(TypeInfo(layouts.type_name(tp), layouts.before(tp),
                                       layouts.GC_HEAD if tp.__flags__ & layouts.HAVE_GC else 0,
                                       layouts.header_bytes(tp, ascii_str), layouts.fields_key(tp)))
        return self._codes[key]

    def place(self, tp: type, objs: List[Any], ids: np.ndarray, rows: Rows, unlocated: Dict[str, int]) -> List[Any]:
        """Add the rows of ``objs`` (all of type ``tp``, at ``ids``); return objects they hold unseen by gc.

        Counts in ``unlocated`` (type name -> objects) what it cannot place.
        Raises UnverifiedLayoutError if reading them needs an unverified fact.
        """
        kind = self._kind(tp)
        verify.require(*kind.facts)
        count = len(objs)
        code: Any = self.code(tp)
        sizes, ascii_ = _inline_sizes(kind, objs)
        if ascii_ is not None:
            code = np.where(ascii_, self.code(str, True), code)
        if kind.hidden is not None:
            own = np.fromiter(map(kind.hidden, objs), _U64, count)
            known = sizes if tp is str else np.fromiter(map(kind.known_size, objs), _U64, count)
            self._unlocated(unlocated, kind.name, int(np.count_nonzero(own > known)))
        if kind.inline_values:
            sizes = sizes + layouts.values_size(gather(ids + _U64(tp.__basicsize__), np.uint8))
        rows.add(ids - _U64(kind.before), ids + sizes, code, OBJECT, ids)
        code = self.code(tp)
        if tp.__flags__ & layouts.MANAGED_DICT:
            values = layouts.managed_values(tp, ids)
            has = values != 0
            rows.add(*layouts.values_bounds(values[has], layouts.cached_keys(tp)), code, STORAGE, ids[has])
        place = _STORAGE.get(kind.placed)
        held = place(self, objs, ids, code, rows, unlocated) if place is not None else []
        if kind.arrow:
            for obj in objs:
                found = _arrow_ranges(obj, self._arrow)
                rows.add_ranges(found, code, BUFFER, [id(obj)] * len(found))
        elif kind.exports is not False or kind.interface:
            self._place_buffers(kind, objs, code, rows)
        return held

    def _unlocated(self, unlocated: Dict[str, int], name: str, count: int) -> None:
        if count:
            unlocated[name] = unlocated.get(name, 0) + count

    def _place_buffers(self, kind: _Kind, objs: List[Any], code: int, rows: Rows) -> None:
        found, owners = [], []
        for obj in objs:
            if kind.exports is None and not kind.interface:
                try:
                    memoryview(obj).release()
                    kind.exports = True
                except TypeError:
                    kind.exports = False   # the buffer protocol is the type's, not the object's
                    return
                except ValueError:
                    continue               # e.g. a closed mmap: exports nothing now
            extent = buffer_extent(obj)
            if extent is not None:
                found.append(extent)
                owners.append(id(obj))
        rows.add_ranges(found, code, BUFFER, owners)

    # Storage, per container kind: (objects, their addresses, their layout
    # code, rows, unlocated counts) -> objects they hold that gc does not show.

    def _list(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows, unlocated: Dict[str, int]) -> List[Any]:
        items = gather(ids + _U64(layouts.LIST_ITEMS), _U64)
        allocated = gather(ids + _U64(layouts.LIST_ALLOCATED), _U64)
        full = items != 0
        rows.add(items[full], items[full] + allocated[full] * _U64(WORD), code, STORAGE, ids[full])
        return []

    def _dict(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows, unlocated: Dict[str, int]) -> List[Any]:
        keys = gather(ids + _U64(layouts.DICT_KEYS), _U64)
        values = gather(ids + _U64(layouts.DICT_VALUES), _U64)
        extra = np.fromiter(map(dict.__sizeof__, objs), _U64, len(objs)) - _U64(type(objs[0]).__basicsize__)
        # A combined table (hashes, keys and values in one block) is the
        # dict's own; a split table's keys are its class's, shared by every
        # instance (left out), its values the dict's or its instance's.
        combined = (values == 0) & (extra > 0)
        rows.add(keys[combined], keys[combined] + extra[combined], code, STORAGE, ids[combined])
        split = values != 0
        if layouts.VALUES == "dict":
            rows.add(values[split], values[split] + extra[split], code, STORAGE, ids[split])
        else:
            rows.add(*layouts.values_bounds(values[split], keys[split]), code, STORAGE, ids[split])
        # gc does not show the keys of a table whose keys are all str.
        return [key for table in objs for key in dict.keys(table)]

    def _set(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows, unlocated: Dict[str, int]) -> List[Any]:
        tables = gather(ids + _U64(layouts.SET_TABLE), _U64)
        masks = gather(ids + _U64(layouts.SET_MASK), _U64)
        outside = (tables < ids) | (tables >= ids + _U64(type(objs[0]).__basicsize__))   # not the small table
        rows.add(tables[outside], tables[outside] + (masks[outside] + _U64(1)) * _U64(layouts.SET_ENTRY),
                 code, STORAGE, ids[outside])
        return []

    def _deque(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows, unlocated: Dict[str, int]) -> List[Any]:
        blocks, owners = [], []
        for base in ids.tolist():
            block, last = _word(base + layouts.DEQUE_LEFT), _word(base + layouts.DEQUE_RIGHT)
            blocks.append(block)
            while block != last:
                block = _word(block + layouts.BLOCK_RIGHT)
                blocks.append(block)
            owners += [base] * (len(blocks) - len(owners))
        starts = np.array(blocks, _U64)
        rows.add(starts, starts + _U64(layouts.BLOCK_SIZE), code, STORAGE, np.array(owners, _U64))
        return []

    def _bytearray(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows,
                   unlocated: Dict[str, int]) -> List[Any]:
        start = gather(ids + _U64(layouts.BYTEARRAY_BYTES), _U64)
        alloc = gather(ids + _U64(layouts.BYTEARRAY_ALLOC), _U64)
        owned = (start != 0) & (alloc != 0)
        rows.add(start[owned], start[owned] + alloc[owned], code, STORAGE, ids[owned])
        return []

    def _array(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows, unlocated: Dict[str, int]) -> List[Any]:
        spans, owners = [], []
        for a in objs:
            start = a.buffer_info()[0]
            size = array.array.__sizeof__(a) - type(a).__basicsize__
            if start and size > 0:
                spans.append((start, start + size))
                owners.append(id(a))
        rows.add_ranges(spans, code, STORAGE, owners)
        return []

    def _ndarray(self, objs: List[Any], ids: np.ndarray, code: int, rows: Rows,
                 unlocated: Dict[str, int]) -> List[Any]:
        """Dimensions and strides (one allocation), data, base, and an object array's items."""
        nd = gather(ids + _U64(layouts.NDARRAY_ND), np.int32).astype(_U64)
        dims = gather(ids + _U64(layouts.NDARRAY_DIMS), _U64)
        shaped = (nd > 0) & (dims != 0)
        rows.add(dims[shaped], dims[shaped] + nd[shaped] * _U64(2 * WORD), code, STORAGE, ids[shaped])
        held: List[Any] = []
        extents, owners = [], []
        for arr in objs:
            extent = buffer_extent(arr)
            if extent is not None:
                extents.append(extent)
                owners.append(id(arr))
            if arr.base is not None:
                held.append(arr.base)
            kind = arr.dtype.kind
            if kind == "O":
                held += arr.ravel(order="K").tolist()
            elif kind == "T":
                if arr.size and _has_arena_strings(arr):
                    self._unlocated(unlocated, layouts.qualified_name(type(arr.dtype)), 1)
            elif arr.dtype.hasobject:
                self._unlocated(unlocated, "numpy.ndarray (structured, with objects)", 1)
        rows.add_ranges(extents, code, BUFFER, owners)
        return held


    def buffer_only(self, obj: Any, rows: Rows, unlocated: Dict[str, int]) -> bool:
        """Place ``obj`` as a buffer and its header, which needs no verified layout; False if it is none."""
        extent = buffer_extent(obj)
        if extent is None:
            return False
        code, start = self.code(type(obj)), id(obj)
        stop = start + type(obj).__basicsize__
        rows.add_ranges([(start, stop)], code, OBJECT, [start])
        rows.add_ranges([extent], code, BUFFER, [start])
        outside = 0 if start <= extent[0] < stop else extent[1] - extent[0]
        if _c_sizeof(type(obj))(obj) > stop - start + outside:   # e.g. an ndarray's dimensions
            self._unlocated(unlocated, layouts.qualified_name(type(obj)), 1)
        return True

_STORAGE: Dict[type, Callable[..., List[Any]]] = {
    list: Placer._list, dict: Placer._dict, set: Placer._set, frozenset: Placer._set,
    deque: Placer._deque, bytearray: Placer._bytearray, array.array: Placer._array,
    np.ndarray: Placer._ndarray,
}


def _word(address: int) -> int:
    return int(gather(np.array([address], _U64), _U64)[0])


_ARENA_FLAGS, _SHORT = 0x70, 0x60   # StringDType: initialized | outside the arena, no "long" flag


def _has_arena_strings(arr: np.ndarray) -> bool:
    """Whether a StringDType array keeps any string outside its 16-byte cells.

    The last byte of each cell holds its flags: a short string (inline,
    15 bytes at most) is marked initialized and outside the arena; any
    other initialized string lives in the arena or on the heap.
    """
    extent = buffer_extent(arr)
    if extent is None:
        return False
    if not arr.flags.c_contiguous or arr.itemsize != 16:
        return True   # cannot read the cells simply: say so rather than guess
    flags = view(extent[0], arr.size * 16, np.uint8)[15::16]
    initialized = (flags & 0x40) != 0
    return bool(np.any(initialized & ((flags & _ARENA_FLAGS) != _SHORT)))


