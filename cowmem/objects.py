"""Follow an object graph in this process and list the memory that holds it.

Walked breadth first from each named object: everything reachable through
``gc.get_referents``, plus what containers that do not expose it that way
hold (a dict's str keys, a numpy array's base and the items of an object
array).  Left out
is what the data shares with the rest of the program: types, modules and
their namespaces, functions and descriptors, code objects, numpy dtypes
and, from 3.12, immortal objects.  The first layer (the named object
itself) is never left out.

For every object met, the rows say where its memory lies (see index.py):
its inline block (GC header and pre-header, header, inline items and, from
3.13, inline attribute values); the storage it owns outside it (list
items, dict and set tables, deque blocks, instance attribute values,
bytearray, ``array.array`` and numpy dimension buffers); and the buffers
it exposes (buffer protocol, ``__array_interface__``, pyarrow buffers when
pyarrow is already imported).  An object whose own ``__sizeof__`` (the C
one: a Python-level override is ignored) counts more than was placed is
*unlocated*: counted per type, never silently dropped.  So is an array of
numpy's StringDType whose strings live in its allocator's arena.

The walk reads objects in place and records only the addresses of objects
that exist: it creates no object whose address it counts.  It writes
reference counts and allocates as it goes, so cowmem runs it in a forked
helper (locate.py), never in the process being measured.
"""

from __future__ import annotations

import array
import gc
import sys
import types
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import layouts
from .errors import UnverifiedLayoutError
from .index import BUFFER, OBJECT, STORAGE, ObjectIndex, TypeInfo, distinct, is_member, sorted_unique
from .layouts import WORD
from .peek import gather, view

Range = Tuple[int, int]

_SHARED_TYPES: Tuple[type, ...] = (
    type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
    types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
    types.GetSetDescriptorType, types.MemberDescriptorType, types.ClassMethodDescriptorType,
    np.dtype, np.ufunc)

_U64 = np.uint64


def addresses(items: Sequence[Any]) -> np.ndarray:
    """``id()`` of every item, as uint64.

    A list's or tuple's item pointers are those addresses: copied straight
    from its item storage, ten times faster than calling id() per item.
    """
    count = len(items)
    if not count:
        return np.zeros(0, _U64)
    if type(items) is list:
        start = int(gather(np.array([id(items) + layouts.LIST_ITEMS], _U64), _U64)[0])
    elif type(items) is tuple:
        start = id(items) + layouts.TUPLE_ITEMS
    else:
        return np.fromiter(map(id, items), _U64, count)
    return view(start, count, _U64).copy()


def _pick(items: Sequence[Any], positions: np.ndarray) -> List[Any]:
    return [items[i] for i in positions.tolist()]


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


# How each kind of container owns memory outside its inline block: the C
# __sizeof__ that counts exactly what cowmem places for it, and the facts
# reading it needs.
_PLACED: Dict[type, Tuple[str, ...]] = {
    object: (), tuple: (), int: (), bytes: (), float: (), complex: (), str: ("str",),
    list: (), dict: ("dict",), set: ("set",), frozenset: ("set",), deque: ("collections.deque",),
    bytearray: ("bytearray",), array.array: (), np.ndarray: ("numpy.ndarray",),
}


class _Kind:
    """What cowmem knows of one type: how to place its instances."""

    def __init__(self, tp: type, arrow: Any) -> None:
        self.tp = tp
        self.name = layouts.type_name(tp)
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


class _Rows:
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


class _Seen:
    """A set of addresses as sorted chunks of geometric sizes: 8 bytes per address."""

    def __init__(self) -> None:
        self._chunks: List[np.ndarray] = []

    def add_new(self, ids: np.ndarray) -> np.ndarray:
        """Add ``ids`` (sorted, unique); return which of them were not in the set."""
        new = np.ones(ids.size, bool)
        for chunk in self._chunks:
            new &= ~is_member(chunk, ids)
        if np.any(new):
            self._chunks.append(ids[new])
            while len(self._chunks) > 1 and self._chunks[-2].size <= 2 * self._chunks[-1].size:
                last = self._chunks.pop()
                self._chunks[-1] = sorted_unique(np.concatenate((self._chunks[-1], last)))
        return new


class Walker:
    """Walks object graphs and lists their memory, per region, into one index.

    ``skip_shared=False`` keeps types, modules, functions and immortal
    objects (for an index of the whole heap).  Raises UnverifiedLayoutError
    when a fact it needs has not been verified on this interpreter, except
    for a region that is a buffer, which is then placed as its buffer and
    header (page counts of buffers need no layouts).
    """

    def __init__(self, *, skip_shared: bool = True) -> None:
        self.skip_shared = skip_shared
        self._kinds: Dict[type, _Kind] = {}
        self._codes: Dict[Tuple[type, bool], int] = {}
        self.types: List[TypeInfo] = []
        self.regions: List[str] = []
        self._columns: List[List[np.ndarray]] = []
        self.unlocated: Dict[str, Dict[str, int]] = {}
        self._arrow = sys.modules.get("pyarrow")
        try:
            layouts.require(*layouts.CORE)
            self._unverified: Optional[UnverifiedLayoutError] = None
        except UnverifiedLayoutError as exc:
            self._unverified = exc
        shared = [vars(m) for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)]
        self._namespaces = sorted_unique(np.fromiter(map(id, shared), _U64, len(shared)))

    # --- public -----------------------------------------------------------

    def add(self, name: str, root: Any, depth: Optional[int] = None, *,
            roots: Optional[List[Any]] = None) -> None:
        """Walk from ``root`` (or from every object of ``roots``) as region ``name``.

        ``depth``: levels of references to follow (0: the object alone;
        None: all).
        """
        rows, unlocated = _Rows(), {}
        self.regions.append(name)
        self.unlocated[name] = unlocated
        start = [root] if roots is None else roots
        if self._unverified is not None:
            for obj in start:
                self._buffer_only(obj, rows, unlocated)
        else:
            self._walk(start, depth, rows, unlocated)
        lo, hi, code, part, owner = rows.columns()
        self._columns.append([lo, hi, code, np.full(lo.shape, len(self.regions) - 1, np.int32), part, owner])

    def region_rows(self, region: int) -> Tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of every row of region number ``region``, unsorted and overlapping."""
        lo, hi = self._columns[region][:2]
        return lo, hi

    def index(self) -> ObjectIndex:
        """Every region's rows as one ObjectIndex."""
        if not self._columns:
            return ObjectIndex.empty()
        return ObjectIndex.build(*(np.concatenate(c) for c in zip(*self._columns)), self.types, self.regions)

    # --- the walk ---------------------------------------------------------------

    def _walk(self, level: List[Any], depth: Optional[int], rows: _Rows, unlocated: Dict[str, int]) -> None:
        ids, first = distinct(addresses(level))
        level = _pick(level, first)
        seen = _Seen()
        seen.add_new(ids)
        steps = 0
        while level:
            more: List[Any] = []
            for kind, objs, kind_ids in self._groups(level, ids):
                more += self._place(kind, objs, kind_ids, rows, unlocated)
            steps += 1
            if depth is not None and steps > depth:
                break
            level, ids = self._next(gc.get_referents(*level) + more, seen)

    def _groups(self, level: List[Any], ids: np.ndarray) -> List[Tuple[_Kind, List[Any], np.ndarray]]:
        kinds = list(map(type, level))
        if len(set(kinds)) == 1:
            return [(self._kind(kinds[0]), level, ids)]
        type_ids = addresses(kinds)
        order = np.argsort(type_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(type_ids[order])) + 1
        return [(self._kind(kinds[int(group[0])]), _pick(level, group), ids[group])
                for group in np.split(order, bounds)]

    def _buffer_only(self, obj: Any, rows: _Rows, unlocated: Dict[str, int]) -> None:
        """Place a buffer and its header, which needs no verified layout; refuse anything else."""
        extent = buffer_extent(obj)
        if extent is None:
            raise self._unverified
        code, start = self._code(type(obj)), id(obj)
        stop = start + type(obj).__basicsize__
        rows.add_ranges([(start, stop)], code, OBJECT, [start])
        rows.add_ranges([extent], code, BUFFER, [start])
        outside = 0 if start <= extent[0] < stop else extent[1] - extent[0]
        if _c_sizeof(type(obj))(obj) > stop - start + outside:   # e.g. an ndarray's dimensions
            self._unlocated(unlocated, layouts.type_name(type(obj)), 1)

    def _kind(self, tp: type) -> _Kind:
        kind = self._kinds.get(tp)
        if kind is None:
            kind = self._kinds[tp] = _Kind(tp, self._arrow)
        return kind

    def _next(self, children: List[Any], seen: _Seen) -> Tuple[List[Any], np.ndarray]:
        """The objects of the next level: new, and not shared with the rest of the program."""
        if not children:
            return [], np.zeros(0, _U64)
        ids, first = distinct(addresses(children))
        keep = np.ones(ids.size, bool)
        if self.skip_shared:
            shared = {tp: issubclass(tp, _SHARED_TYPES) for tp in set(map(type, children))}
            if any(shared.values()):
                keep &= ~np.fromiter(map(shared.__getitem__, map(type, children)), bool, len(children))[first]
            keep &= ~layouts.is_immortal(ids) & ~is_member(self._namespaces, ids)
        keep[keep] = seen.add_new(ids[keep])
        if np.all(keep) and first.size == len(children) and np.all(first[1:] > first[:-1]):
            return children, ids   # ascending, distinct and new already: the common case, no copy
        kept = np.flatnonzero(keep)
        return _pick(children, first[kept]), ids[kept]

    # --- placing one type's objects --------------------------------------------------

    def _code(self, tp: type, ascii_str: bool = False) -> int:
        key = (tp, ascii_str)
        if key not in self._codes:
            self._codes[key] = len(self.types)
            self.types.append(TypeInfo(layouts.type_name(tp), layouts.before(tp),
                                       layouts.GC_HEAD if tp.__flags__ & layouts.HAVE_GC else 0,
                                       layouts.header_bytes(tp, ascii_str), layouts.fields_key(tp)))
        return self._codes[key]

    def _place(self, kind: _Kind, objs: List[Any], ids: np.ndarray, rows: _Rows,
               unlocated: Dict[str, int]) -> List[Any]:
        """Add the rows of ``objs`` (all of type ``kind.tp``); return objects they hold unseen by gc."""
        layouts.require(*kind.facts)
        tp, count = kind.tp, len(objs)
        code: Any = self._code(tp)
        if tp is str:
            sizes, ascii_ = layouts.str_sizes(objs)
            code = np.where(ascii_, self._code(str, True), code)
        elif kind.var:
            sizes = np.fromiter(map(kind.known_size, objs), _U64, count)
        else:
            sizes = np.full(count, tp.__basicsize__, _U64)
        if kind.hidden is not None:
            own = np.fromiter(map(kind.hidden, objs), _U64, count)
            known = sizes if tp is str else np.fromiter(map(kind.known_size, objs), _U64, count)
            self._unlocated(unlocated, kind.name, int(np.count_nonzero(own > known)))
        if kind.inline_values:
            sizes = sizes + layouts.values_size(gather(ids + _U64(tp.__basicsize__), np.uint8))
        rows.add(ids - _U64(kind.before), ids + sizes, code, OBJECT, ids)
        code = self._code(tp)
        if tp.__flags__ & layouts.MANAGED_DICT:
            values = layouts.managed_values(tp, ids)
            has = values != 0
            rows.add(*layouts.values_bounds(values[has]), code, STORAGE, ids[has])
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

    def _place_buffers(self, kind: _Kind, objs: List[Any], code: int, rows: _Rows) -> None:
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

    def _list(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows, unlocated: Dict[str, int]) -> List[Any]:
        items = gather(ids + _U64(layouts.LIST_ITEMS), _U64)
        allocated = gather(ids + _U64(layouts.LIST_ALLOCATED), _U64)
        full = items != 0
        rows.add(items[full], items[full] + allocated[full] * _U64(WORD), code, STORAGE, ids[full])
        return []

    def _dict(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows, unlocated: Dict[str, int]) -> List[Any]:
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
            rows.add(*layouts.values_bounds(values[split]), code, STORAGE, ids[split])
        # gc does not show the keys of a table whose keys are all str.
        return [key for table in objs for key in dict.keys(table)]

    def _set(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows, unlocated: Dict[str, int]) -> List[Any]:
        tables = gather(ids + _U64(layouts.SET_TABLE), _U64)
        masks = gather(ids + _U64(layouts.SET_MASK), _U64)
        outside = (tables < ids) | (tables >= ids + _U64(type(objs[0]).__basicsize__))   # not the small table
        rows.add(tables[outside], tables[outside] + (masks[outside] + _U64(1)) * _U64(layouts.SET_ENTRY),
                 code, STORAGE, ids[outside])
        return []

    def _deque(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows, unlocated: Dict[str, int]) -> List[Any]:
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

    def _bytearray(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows,
                   unlocated: Dict[str, int]) -> List[Any]:
        start = gather(ids + _U64(layouts.BYTEARRAY_BYTES), _U64)
        alloc = gather(ids + _U64(layouts.BYTEARRAY_ALLOC), _U64)
        owned = (start != 0) & (alloc != 0)
        rows.add(start[owned], start[owned] + alloc[owned], code, STORAGE, ids[owned])
        return []

    def _array(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows, unlocated: Dict[str, int]) -> List[Any]:
        spans, owners = [], []
        for a in objs:
            start = a.buffer_info()[0]
            size = array.array.__sizeof__(a) - type(a).__basicsize__
            if start and size > 0:
                spans.append((start, start + size))
                owners.append(id(a))
        rows.add_ranges(spans, code, STORAGE, owners)
        return []

    def _ndarray(self, objs: List[Any], ids: np.ndarray, code: int, rows: _Rows,
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
                    self._unlocated(unlocated, layouts.type_name(type(arr.dtype)), 1)
            elif arr.dtype.hasobject:
                self._unlocated(unlocated, "numpy.ndarray (structured, with objects)", 1)
        rows.add_ranges(extents, code, BUFFER, owners)
        return held


_STORAGE: Dict[type, Callable[..., List[Any]]] = {
    list: Walker._list, dict: Walker._dict, set: Walker._set, frozenset: Walker._set,
    deque: Walker._deque, bytearray: Walker._bytearray, array.array: Walker._array,
    np.ndarray: Walker._ndarray,
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


# --- finding objects again, with the path that reaches them ------------------------

def find_paths(objects: Dict[str, Any], wanted: Sequence[int], depth: Optional[int] = None) -> Dict[int, Tuple[str, Any]]:
    """The object at each of ``wanted`` (addresses) reachable from the named objects, with its path.

    Breadth first, so the path is a shortest one, written as Python would
    reach it: ``data[3]``, ``data['key'].name``, ``data._mgr.blocks[1].values[57]``
    (an array's items by flat index).  Addresses not reached are left out.
    The walk's allocations are its own: cowmem runs it in a forked helper.
    """
    wanted_set, found = set(wanted), {}
    namespaces = {id(vars(m)) for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)}
    for name, root in objects.items():
        if id(root) in wanted_set:
            found[id(root)] = (name, root)
        parents: Dict[int, Tuple[int, str]] = {id(root): (0, name)}
        level, steps = [root], 0
        while level and len(found) < len(wanted_set) and (depth is None or steps < depth):
            following = []
            for obj in level:
                for child, label in _labelled(obj):
                    key = id(child)
                    if key in parents or isinstance(child, _SHARED_TYPES) or key in namespaces:
                        continue
                    parents[key] = (id(obj), label)
                    following.append(child)
                    if key in wanted_set and key not in found:
                        found[key] = (_path(parents, key), child)
            level, steps = following, steps + 1
    return found


def _path(parents: Dict[int, Tuple[int, str]], key: int) -> str:
    labels = []
    while key:
        key, label = parents[key]
        labels.append(label)
    return "".join(reversed(labels))


def _labelled(obj: Any) -> Any:
    """(object held, how ``obj`` holds it) pairs, for paths."""
    if isinstance(obj, (list, tuple, deque)):
        return ((x, f"[{i}]") for i, x in enumerate(obj))
    if isinstance(obj, dict):
        return (pair for k, v in obj.items() for pair in ((k, f" key {_short(k)}"), (v, f"[{_short(k)}]")))
    if isinstance(obj, (set, frozenset)):
        return ((x, " member") for x in obj)
    if isinstance(obj, np.ndarray):
        items = enumerate(obj.ravel(order="K").tolist()) if obj.dtype.kind == "O" else ()
        return [*([(obj.base, ".base")] if obj.base is not None else []), *((x, f"[{i}]") for i, x in items)]
    attributes = getattr(obj, "__dict__", None)
    named = [(v, f".{k}") for k, v in attributes.items()] if isinstance(attributes, dict) else []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                named.append((getattr(obj, slot), f".{slot}"))
    return named or [(x, f" -> {layouts.type_name(type(x))}") for x in gc.get_referents(obj)]


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."
