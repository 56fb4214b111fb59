"""The pages holding an object's memory, read from CPython's object layouts.

``pages_of(obj)`` walks ``obj`` and what it holds, and returns the virtual
page numbers (address >> 12) of every block of memory found.  Sizes are in
bytes, addresses are ``id()`` plus offsets of CPython's structs (64-bit GIL
builds, CPython 3.9 to 3.13), read with ctypes.  It shares no code with cowmem.

Counted, per type:

- every object: its block, from ``id(obj)`` minus its pre-header (the
  16-byte GC header of GC types; on 3.11 the managed-dict pointers, on
  3.12+ the managed dict/weakref pointers: 16 more bytes) to the end of the
  struct (``__basicsize__`` plus ``__itemsize__`` per item; ``getsizeof``
  for int, float, str, bytes; 3.13's inline attribute values after it);
- list: the item array (``ob_item``, ``allocated`` pointers); tuple: its
  items are inside its block; dict: the keys table (``ma_keys``) of a
  combined dict, the values array (``ma_values``) of a split one (its keys
  belong to the class); set/frozenset: the hash table unless it is the
  inline ``smalltable``; ``collections.deque``: its linked 64-slot blocks
  (and, 3.11+, its cached free blocks); bytearray: its buffer;
- instances: attribute values in the managed dict or values array (3.11+),
  the ``__dict__`` at ``__dictoffset__`` (3.9/3.10), ``__slots__`` members;
  dataclasses are instances;
- ``decimal.Decimal``: its digit array when not inline; ``datetime``
  objects: the struct (without a tzinfo pointer when naive) and the tzinfo;
- numpy arrays: the shape/strides block and the extent of the buffer the
  array spans (``__array_interface__``); object arrays: their elements;
  ``StringDType`` arrays: the 16-byte cells only, no element is read
  (reading one makes a new str);
- pyarrow Table/RecordBatch/ChunkedArray/Array: every buffer
  (``buffers()``: address, size; dictionaries too) and the object itself;
- any other object with the buffer protocol (``array.array``, ``mmap``):
  its buffer;
- pandas objects are instances: followed through their attributes to the
  block manager, blocks, arrays and indexes; Cython objects (no layout
  known here) through ``gc.get_referents``, their block counted.

Knowingly not counted: what is shared with the rest of the program (types,
modules, functions, code objects, descriptors, numpy dtypes, the
singletons None/True/False/Ellipsis/NotImplemented, small ints -5..256,
empty and one-character latin-1 str/bytes singletons, interned strings
(identifiers and literals the code holds), the empty tuple, the
static empty dict keys; 3.12+ immortal objects; split dicts' shared keys);
malloc headers and allocator slack; a numpy view's base beyond the view's
extent; StringDType's arena (heap strings); pyarrow's C++ metadata and the
temporary Python wrappers its accessors create; C-level storage of types
not listed (reported in ``Located.partial``).

The walk reads attributes and iterates containers: it writes reference
counts and allocates.  Call it where that does not matter, e.g. after the
measurement, in the parent (objects do not move in CPython).
"""

from __future__ import annotations

import collections
import ctypes
import datetime
import decimal
import functools
import gc
import sys
import sysconfig
import types
from dataclasses import dataclass, field
from typing import Any, Counter, Iterable, List, Optional, Set, Tuple

PAGE_SHIFT = 12
_VERSION = sys.version_info[:2]
_WORD = 8
_GC_HEADER = 16

# tp_flags bits.
_HEAPTYPE = 1 << 9
_HAVE_GC = 1 << 14
_MANAGED_DICT = 1 << 4     # 3.11+
_MANAGED_WEAKREF = 1 << 3  # 3.12+
_INLINE_VALUES = 1 << 2    # 3.13+

_SHARED_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                 types.MethodType, types.CodeType, types.FrameType, types.MethodDescriptorType,
                 types.WrapperDescriptorType, types.MethodWrapperType,
                 types.MemberDescriptorType, types.GetSetDescriptorType,
                 types.ClassMethodDescriptorType, property, classmethod, staticmethod)
_SINGLETON_IDS = frozenset(map(id, (None, True, False, Ellipsis, NotImplemented)))
_ALL_BYTES = bytes(range(256))
_DEQUE_BLOCK = 64        # pointers per deque block
_DEQUE_BLOCK_BYTES = _WORD + _DEQUE_BLOCK * _WORD + _WORD  # leftlink, data, rightlink
_DATETIME_TYPES = {datetime.datetime: 40, datetime.time: 32}  # struct size when naive


@dataclass(frozen=True)
class Block:
    """One block of memory: [start, stop) in bytes, and what it is."""

    start: int
    stop: int
    what: str


@dataclass
class Located:
    """What the walk found: the blocks, and the types it could only partly read.

    ``partial`` counts, per type name, the objects whose own block is
    counted but whose C-level storage (if any) is not known here.
    """

    blocks: List[Block] = field(default_factory=list)
    partial: Counter[str] = field(default_factory=collections.Counter)

    def pages(self) -> Set[int]:
        """The page numbers (address >> 12) of every block."""
        out: Set[int] = set()
        for b in self.blocks:
            if b.stop > b.start:
                out.update(range(b.start >> PAGE_SHIFT, ((b.stop - 1) >> PAGE_SHIFT) + 1))
        return out


def pages_of(obj: Any, *, depth: Optional[int] = None) -> Set[int]:
    """The virtual page numbers (address >> 12) holding ``obj``'s memory (see the module doc).

    ``depth`` limits how far the walk goes: 0 is ``obj`` with its own
    storage (item array, table, buffer), 1 adds what it holds, and so on;
    None is unlimited.
    """
    return locate(obj, depth=depth).pages()


def locate(obj: Any, *, depth: Optional[int] = None) -> Located:
    """The blocks of ``obj``'s memory and of everything it holds (see :func:`pages_of`)."""
    check_interpreter()
    return _Walk(depth).run(obj)


class UnknownLayoutError(RuntimeError):
    """This interpreter's object layouts are not described here."""


def check_interpreter() -> None:
    """Raise UnknownLayoutError unless this is a 64-bit GIL build of CPython 3.9-3.13."""
    gil_disabled = sysconfig.get_config_var("Py_GIL_DISABLED")
    if (sys.implementation.name != "cpython" or not (3, 9) <= _VERSION <= (3, 13)
            or gil_disabled or ctypes.sizeof(ctypes.c_void_p) != _WORD):
        build = " free-threaded" if gil_disabled else ""
        raise UnknownLayoutError(
            f"the reference knows the object layouts of 64-bit CPython 3.9-3.13 (GIL builds), "
            f"not {sys.implementation.name} {sys.version.split()[0]}{build}")


# -- raw reads ---------------------------------------------------------------

def _word(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


def _byte(address: int) -> int:
    return ctypes.c_uint8.from_address(address).value


def _object_at(address: int) -> Any:
    """The object whose address is ``address`` (it must be alive)."""
    return ctypes.cast(address, ctypes.py_object).value


def _preheader(t: type) -> int:
    """Bytes allocated before ``id()`` for instances of ``t``."""
    size = _GC_HEADER if t.__flags__ & _HAVE_GC else 0
    if _VERSION >= (3, 12) and t.__flags__ & (_MANAGED_DICT | _MANAGED_WEAKREF):
        size += 2 * _WORD
    elif _VERSION == (3, 11) and t.__flags__ & _MANAGED_DICT:
        size += 2 * _WORD
    return size


def _immortal(obj: Any) -> bool:
    """3.12+: the low 32 bits of the reference count, as a signed int, are negative."""
    return _VERSION >= (3, 12) and ctypes.c_int32.from_address(id(obj)).value < 0


def _interned(s: str) -> bool:
    """PyASCIIObject.state.interned (the low 2 bits after length and hash) is set."""
    return ctypes.c_uint32.from_address(id(s) + 32).value & 3 != 0


def _usable(size: int) -> int:
    """Entries of a dict keys table with ``size`` index slots (USABLE_FRACTION)."""
    return (size << 1) // 3


def _shared(obj: Any) -> bool:
    """True for what the object shares with the rest of the program (see the module doc)."""
    if id(obj) in _SINGLETON_IDS or isinstance(obj, _SHARED_TYPES) or _immortal(obj):
        return True
    t = type(obj)
    if t is int:
        return -5 <= obj <= 256
    if t is str:
        return len(obj) == 0 or _interned(obj) or (len(obj) == 1 and ord(obj) < 256
                                                     and obj is chr(ord(obj)))
    if t is bytes:
        return len(obj) == 0 or (len(obj) == 1 and obj is _ALL_BYTES[obj[0]:obj[0] + 1])
    if t is tuple:
        return len(obj) == 0
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.dtype)


# -- the walk ----------------------------------------------------------------

class _Walk:
    def __init__(self, depth: Optional[int]) -> None:
        self.depth = depth
        self.found = Located()
        self.seen: Set[int] = set()
        self.stack: List[Tuple[Any, int]] = []

    def run(self, obj: Any) -> Located:
        self.push(obj, 0)
        while self.stack:
            o, level = self.stack.pop()
            self.visit(o, level)
        return self.found

    def push(self, obj: Any, level: int) -> None:
        if id(obj) in self.seen or (self.depth is not None and level > self.depth) or _shared(obj):
            return
        self.seen.add(id(obj))
        self.stack.append((obj, level))

    def push_all(self, objects: Iterable[Any], level: int) -> None:
        for o in objects:
            self.push(o, level)

    def add(self, start: int, size: int, what: str) -> None:
        if start and size > 0:
            self.found.blocks.append(Block(start, start + size, what))

    def visit(self, o: Any, level: int) -> None:
        t = type(o)
        self.add(id(o) - _preheader(t), _preheader(t) + _own_size(o), t.__name__)
        inner = level + 1
        handler = next((h for h in _HANDLERS if h.applies(o)), None)
        if handler is not None:
            handler.read(self, o, inner)
        if t.__flags__ & _HEAPTYPE:
            _instance_attributes(self, o, inner)
        base = _c_base(t)
        if base is not None and (handler is None or not handler.knows(base)):
            # A C class with no layout known here: its block is counted, what it
            # references is followed, its private storage is not known.
            self.found.partial[f"{base.__module__}.{base.__qualname__}"] += 1
            if t.__flags__ & _HAVE_GC:
                self.push_all(gc.get_referents(o), inner)


@functools.lru_cache(maxsize=None)
def _c_base(t: type) -> Optional[type]:
    """The first class of ``t``'s MRO written in C (other than object), or None."""
    for cls in t.__mro__[:-1]:
        if not cls.__flags__ & _HEAPTYPE:
            return cls
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None) or ""
        if path.endswith((".so", ".pyd")):  # Cython classes are heap types too
            return cls
    return None


_LEAVES = (int, float, complex, str, bytes, bool, range, slice, type(None))


def _own_size(o: Any) -> int:
    """Bytes of ``o``'s own block from ``id(o)`` on."""
    t = type(o)
    if isinstance(o, (int, float, complex, str, bytes)) and not t.__flags__ & _HEAPTYPE:
        return sys.getsizeof(o) - _preheader(t)
    if isinstance(o, tuple):
        return t.__basicsize__ + _WORD * len(o)
    if isinstance(o, (int, bytes)):  # subclasses: the base's items, the class's struct
        return max(sys.getsizeof(o) - _preheader(t), t.__basicsize__)
    if t in _DATETIME_TYPES and not _byte(id(o) + 24):  # hastzinfo
        return _DATETIME_TYPES[t]
    size = t.__basicsize__
    if t.__itemsize__ and not isinstance(o, (str, float, complex)):
        size += t.__itemsize__ * abs(ctypes.c_ssize_t.from_address(id(o) + 16).value)
    if _VERSION >= (3, 13) and t.__flags__ & _INLINE_VALUES:
        size += _values_size_313(_byte(id(o) + t.__basicsize__))
    return size


def _values_size_313(capacity: int) -> int:
    """3.13 values array: a word of header, the values, the insertion order bytes."""
    return _WORD + capacity * _WORD + -(-capacity // _WORD) * _WORD


# -- containers --------------------------------------------------------------

class _Handler:
    types: Tuple[type, ...] = ()

    def applies(self, o: Any) -> bool:
        return isinstance(o, self.types)

    def knows(self, base: type) -> bool:
        """Whether this handler reads all of the storage of a C class ``base``."""
        return True


class _Container(_Handler):
    def knows(self, base: type) -> bool:
        # A C subclass (OrderedDict of dict) may have storage of its own.
        return base in self.types or base in _KNOWN_C_SUBCLASSES


class _List(_Container):
    types = (list,)

    def read(self, walk: _Walk, o: list, level: int) -> None:
        # PyListObject: PyObject_VAR_HEAD, ob_item, allocated.
        walk.add(_word(id(o) + 24), _WORD * _word(id(o) + 32), "list items")
        walk.push_all(list.__iter__(o), level)


class _Tuple(_Container):
    types = (tuple,)

    def read(self, walk: _Walk, o: tuple, level: int) -> None:
        walk.push_all(tuple.__iter__(o), level)


class _Dict(_Container):
    types = (dict,)

    def read(self, walk: _Walk, o: dict, level: int) -> None:
        # PyDictObject: PyObject_HEAD, ma_used, ma_version_tag, ma_keys, ma_values.
        keys, values = _word(id(o) + 32), _word(id(o) + 40)
        if values:
            walk.add(*_split_values(keys, values), "dict values")
        elif keys != _EMPTY_KEYS:
            walk.add(keys, _keys_size(keys), "dict keys")
        for k, v in dict.items(o):
            walk.push(k, level)
            walk.push(v, level)


def _keys_size(keys: int) -> int:
    """Bytes of a combined dict's PyDictKeysObject: header, indices, entries."""
    if _VERSION >= (3, 11):
        # dk_refcnt; dk_log2_size, dk_log2_index_bytes, dk_kind (uint8); dk_version;
        # dk_usable; dk_nentries; then indices, then entries (24 bytes, 16 for str keys).
        log2_size, log2_index_bytes, kind = _byte(keys + 8), _byte(keys + 9), _byte(keys + 10)
        entry = 24 if kind == 0 else 16
        return 32 + (1 << log2_index_bytes) + entry * _usable(1 << log2_size)
    # 3.9/3.10: dk_refcnt, dk_size, dk_lookup, dk_usable, dk_nentries, indices, entries.
    size = _word(keys + 8)
    index_bytes = 1 if size <= 0xff else 2 if size <= 0xffff else 4 if size <= 0xffffffff else 8
    return 40 + index_bytes * size + 24 * _usable(size)


def _split_values(keys: int, values: int) -> Tuple[int, int]:
    """(start, size) of a split dict's values array."""
    if _VERSION >= (3, 13):
        return values, _values_size_313(_byte(values))
    if _VERSION >= (3, 11):
        # The pointers are preceded by insertion-order bytes; [-1] is the prefix size.
        prefix = _byte(values - 1)
        return values - prefix, prefix + _WORD * _shared_keys_usable(keys)
    return values, _WORD * _usable(_word(keys + 8))


def _shared_keys_usable(keys: int) -> int:
    """3.11/3.12: value slots of a shared keys object (dk_nentries + dk_usable)."""
    return _word(keys + 16) + _word(keys + 24)


_EMPTY_KEYS = _word(id({}) + 32)


class _Set(_Container):
    types = (set, frozenset)

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        # PySetObject: PyObject_HEAD, fill, used, mask, table, hash, finger, smalltable[8].
        mask, table = _word(id(o) + 32), _word(id(o) + 40)
        if table != id(o) + 64:
            walk.add(table, 16 * (mask + 1), "set table")
        walk.push_all(set.__iter__(o) if isinstance(o, set) else frozenset.__iter__(o), level)


class _Deque(_Container):
    types = (collections.deque,)

    def read(self, walk: _Walk, o: collections.deque, level: int) -> None:
        # dequeobject: PyObject_VAR_HEAD, leftblock, rightblock, leftindex,
        # rightindex, state, maxlen, (3.11+) numfreeblocks, freeblocks[16].
        block, right = _word(id(o) + 24), _word(id(o) + 32)
        for _ in range(len(o) // _DEQUE_BLOCK + 2):
            walk.add(block, _DEQUE_BLOCK_BYTES, "deque block")
            if block == right:
                break
            block = _word(block + _WORD + _DEQUE_BLOCK * _WORD)  # rightlink
        else:
            raise AssertionError("deque blocks do not lead to the right block")
        if _VERSION >= (3, 11):
            for i in range(_word(id(o) + 72)):
                walk.add(_word(id(o) + 80 + _WORD * i), _DEQUE_BLOCK_BYTES, "deque free block")
        walk.push_all(collections.deque.__iter__(o), level)


class _ByteArray(_Container):
    types = (bytearray,)

    def read(self, walk: _Walk, o: bytearray, level: int) -> None:
        # PyByteArrayObject: PyObject_VAR_HEAD, ob_alloc, ob_bytes, ob_start, ob_exports.
        walk.add(_word(id(o) + 32), _word(id(o) + 24), "bytearray buffer")


class _Decimal(_Handler):
    def applies(self, o: Any) -> bool:
        return type(o) is decimal.Decimal and type(o).__basicsize__ == 104  # the C version

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        # PyDecObject: PyObject_HEAD, hash, mpd_t {flags, exp, digits, len, alloc, data},
        # data[4] inline.
        data, alloc = _word(id(o) + 64), _word(id(o) + 56)
        if data != id(o) + 72:
            walk.add(data, _WORD * alloc, "Decimal digits")


class _DateTime(_Handler):
    types = (datetime.datetime, datetime.time)

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        if o.tzinfo is not None and o.tzinfo is not datetime.timezone.utc:
            walk.push(o.tzinfo, level)


class _Leaf(_Handler):
    types = _LEAVES + (datetime.date, datetime.timedelta, datetime.timezone)

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        pass


# -- numpy and pyarrow ---------------------------------------------------------

class _NumpyArray(_Handler):
    def applies(self, o: Any) -> bool:
        numpy = sys.modules.get("numpy")
        return numpy is not None and isinstance(o, numpy.ndarray)

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        # PyArrayObject_fields: PyObject_HEAD, data, nd (int), dimensions, strides, ...
        # dimensions and strides share one block of max(2, 2 nd) npy_intp.
        nd = ctypes.c_int.from_address(id(o) + 24).value
        if nd:
            walk.add(_word(id(o) + 32), _WORD * max(2, 2 * nd), "ndarray shape")
        start, size = _array_extent(o)
        walk.add(start, size, "ndarray buffer")
        if o.dtype.char == "T":
            return  # StringDType: the cells only; reading one would make a str
        if o.dtype.kind == "O":
            walk.push_all(o.flat, level)
        elif o.dtype.hasobject:
            walk.found.partial["numpy structured dtype with objects"] += 1


def _array_extent(o: Any) -> Tuple[int, int]:
    """(start, size) in bytes of the buffer span an array's strides reach."""
    address = o.__array_interface__["data"][0]
    if o.size == 0:
        return address, 0
    low = high = 0
    for n, stride in zip(o.shape, o.strides):
        low += min(0, (n - 1) * stride)
        high += max(0, (n - 1) * stride)
    return address + low, high - low + o.itemsize


class _Arrow(_Handler):
    def applies(self, o: Any) -> bool:
        pa = sys.modules.get("pyarrow")
        return pa is not None and isinstance(o, (pa.Table, pa.RecordBatch, pa.ChunkedArray,
                                                 pa.Array, pa.Buffer))

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        # The wrappers the accessors return are new objects: only their buffers count.
        pa = sys.modules["pyarrow"]
        arrays = [o] if isinstance(o, pa.Array) else []
        if isinstance(o, (pa.Table, pa.RecordBatch)):
            columns = o.columns
            arrays = [c for col in columns for c in (col.chunks if isinstance(col, pa.ChunkedArray) else [col])]
        elif isinstance(o, pa.ChunkedArray):
            arrays = o.chunks
        elif isinstance(o, pa.Buffer):
            walk.add(o.address, o.size, "arrow buffer")
        while arrays:
            array = arrays.pop()
            for buffer in array.buffers():
                if buffer is not None:
                    walk.add(buffer.address, buffer.size, "arrow buffer")
            if isinstance(array, pa.DictionaryArray):
                arrays.append(array.dictionary)


# C subclasses of containers with no storage beyond their base's (the
# default_factory is a function or a type: shared).
_KNOWN_C_SUBCLASSES = (collections.defaultdict,)

class _BufferExporter(_Handler):
    """Any other object with the buffer protocol (array.array, mmap): its buffer."""

    def applies(self, o: Any) -> bool:
        try:
            with memoryview(o):
                return True
        except TypeError:
            return False

    def read(self, walk: _Walk, o: Any, level: int) -> None:
        import numpy  # a cowmem dependency; reads the address of read-only buffers too
        with memoryview(o) as view:
            if not view.c_contiguous:
                walk.found.partial[f"non-contiguous buffer of {type(o).__qualname__}"] += 1
            elif view.nbytes:
                with view.cast("B") as raw:
                    walk.add(numpy.frombuffer(raw, numpy.uint8).ctypes.data, view.nbytes, "buffer")


_HANDLERS = (_DateTime(), _Leaf(), _List(), _Tuple(), _Dict(), _Set(), _Deque(), _ByteArray(),
             _Decimal(), _NumpyArray(), _Arrow(), _BufferExporter())


# -- instances of Python classes ---------------------------------------------

def _instance_attributes(walk: _Walk, o: Any, level: int) -> None:
    """The attribute values of a Python class's instance: managed dict, __dict__, slots."""
    t = type(o)
    if _VERSION >= (3, 11) and t.__flags__ & _MANAGED_DICT:
        _managed_attributes(walk, o, level)
    elif t.__dictoffset__ > 0:
        address = _word(id(o) + t.__dictoffset__)
        if address:
            walk.push(_object_at(address), level)
    for cls in t.__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{cls.__name__.lstrip('_')}{name}"
            member = cls.__dict__.get(name)
            if isinstance(member, types.MemberDescriptorType):
                try:
                    walk.push(member.__get__(o, t), level)
                except AttributeError:
                    pass  # an empty slot


def _managed_attributes(walk: _Walk, o: Any, level: int) -> None:
    """3.11+: the dict pointer is 3 words before the object, values beside it."""
    t = type(o)
    dict_or_values = _word(id(o) - 3 * _WORD)
    if _VERSION == (3, 11):
        values = _word(id(o) - 4 * _WORD)
        if dict_or_values:
            walk.push(_object_at(dict_or_values), level)
        elif values:
            slots = _shared_keys_usable(_cached_keys(t))
            walk.add(values - _byte(values - 1), _byte(values - 1) + _WORD * slots, "values")
            _push_values(walk, values, slots, level)
    elif _VERSION == (3, 12):
        if dict_or_values & 1:  # tagged: a values array
            values = dict_or_values + 1
            slots = _shared_keys_usable(_cached_keys(t))
            walk.add(values - _byte(values - 1), _byte(values - 1) + _WORD * slots, "values")
            _push_values(walk, values, slots, level)
        elif dict_or_values:
            walk.push(_object_at(dict_or_values), level)
    else:
        if dict_or_values:
            walk.push(_object_at(dict_or_values), level)
        elif t.__flags__ & _INLINE_VALUES:
            values = id(o) + t.__basicsize__
            if _byte(values + 3):  # valid
                _push_values(walk, values + _WORD, _byte(values), level)


def _push_values(walk: _Walk, first: int, count: int, level: int) -> None:
    for i in range(count):
        address = _word(first + _WORD * i)
        if address:
            walk.push(_object_at(address), level)


def _cached_keys(t: type) -> int:
    """A Python class's shared keys (``ht_cached_keys``), found beside ht_qualname."""
    return _word(id(t) + _cached_keys_offset())


@functools.lru_cache(maxsize=None)
def _cached_keys_offset() -> int:
    """Offset of ht_cached_keys in PyHeapTypeObject: the word after ht_qualname.

    PyHeapTypeObject has ht_name, ht_slots, ht_qualname, ht_cached_keys in a
    row; found in two probe classes, so no struct size is assumed.
    """
    class Outer:
        class Inner:
            pass
    offsets = []
    for cls in (Outer, Outer.Inner):
        name, qualname = id(cls.__name__), id(cls.__qualname__)
        words = [_word(id(cls) + i * _WORD) for i in range(type.__basicsize__ // _WORD)]
        offsets.append({(i + 3) * _WORD for i in range(len(words) - 3)
                        if words[i] == name and words[i + 2] == qualname})
    common = offsets[0] & offsets[1]
    if len(common) != 1:
        raise AssertionError(f"ht_cached_keys not found in PyHeapTypeObject: {offsets}")
    return common.pop()
