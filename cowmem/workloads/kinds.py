"""The data kinds: what the parent builds from a size ``n`` (elements), deterministically."""

from __future__ import annotations

import array
import json
import mmap
import sys
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Dict, List, Mapping, Tuple, TypeVar

import numpy as np

from . import tables
from .registry import (FRAME, ITERABLE, JSON, NUMBERS, POSITIONS, STRINGS, TABLE, TRACKED, WRITABLE,
                       DataKind, by_name)
from .tables import numbered_strings


class Item:
    """A plain class instance holding one int: what ``list_of_instances`` holds.

    Deliberately without ``__slots__``: instances with a ``__dict__`` are the
    common case, and where CPython keeps their attributes changed in 3.11
    and again in 3.12 and 3.13, which is what the suite should show.
    """

    def __init__(self, value: int) -> None:
        self.value = value


@dataclass
class Record:
    """A row as a dataclass: what ``list_of_dataclasses`` holds."""

    id: int
    name: str


class SlotRecord:
    """The same row with ``__slots__``: no ``__dict__``, the two references inside the object."""

    __slots__ = ("id", "name")

    def __init__(self, id: int, name: str) -> None:
        self.id = id
        self.name = name


class PathDataset:
    """A dataset the way a PyTorch DataLoader's workers read one: ``dataset[i]`` -> (path, label).

    The paths are one list of str, the labels a dict keyed by path: the
    layout of the DataLoader report (pytorch/pytorch#13246) whose workers
    grew until the machine ran out of memory.
    """

    def __init__(self, paths: List[str], labels: Dict[str, int]) -> None:
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tuple[str, int]:
        path = self.paths[i]
        return path, self.labels[path]


_PATTERN = bytes(range(256))
_B = TypeVar("_B", bytes, bytearray)


def _pattern(n: int, cls: type[_B]) -> _B:
    """``n`` bytes 0, 1, ..., 255, 0, 1, ... as ``cls``, allocated once (no temporary copy)."""
    whole, rest = divmod(n, len(_PATTERN))
    return cls().join(chain(repeat(_PATTERN, whole), (_PATTERN[:rest],)))


def _same_bigint(n: int) -> list:
    # Made at run time, not a code constant (which some builds make immortal).
    return [int("1" + "0" * 20)] * n


def _shared_ones(n: int) -> np.ndarray:
    # mmap.mmap(-1, size) is anonymous and MAP_SHARED: a write by the child
    # lands in the parent's pages and copies nothing.  It cannot map 0 bytes.
    # The array keeps the mapping alive; it is unmapped when the array dies.
    buffer = mmap.mmap(-1, max(n, 1) * 8)
    arr = np.frombuffer(buffer, dtype=np.float64, count=n)
    arr[:] = 1.0
    return arr


def _dict_str(n: int) -> Dict[str, str]:
    return {f"k{i:09d}": value for i, value in enumerate(numbered_strings(n))}


def _json_document(n: int) -> list:
    # Parsed from text, as a service receives it: json.loads shares each key
    # string between the records, and makes every value anew.
    records = (f'{{"id": {i}, "name": "{i:010d}", "tags": ["{"even" if i % 2 == 0 else "odd"}"]}}'
               for i in range(n))
    return json.loads("[" + ",".join(records) + "]")


def _path_dataset(n: int) -> PathDataset:
    paths = [f"/data/train/class_{i % 10}/{i:08d}.jpg" for i in range(n)]
    return PathDataset(paths, {path: i % 10 for i, path in enumerate(paths)})


# bytes_per_element: the peak RSS growth per element while building, measured
# in fresh processes on CPython 3.9 to 3.13 (Linux x86_64, numpy 2; pandas
# 2.2.3 and 3.1.1, pyarrow 21 and 26) at n from 1e5 to 3e6, hash tables
# included at their worst n (just after a resize, old and new table both
# alive), then rounded up by 5 to 10 %.  Arrow's memory pool adds about 6 MB
# whatever n: the kinds that use it carry it as fixed_bytes.
# Plain instances shrank in 3.11 (no per-instance dict) and again in 3.12.
_INSTANCE_BYTES = 220 if sys.version_info < (3, 11) else 150 if sys.version_info < (3, 12) else 135
_RECORD_BYTES = 295 if sys.version_info < (3, 11) else 225
_ARROW_POOL = 8 * 2**20

_NUMBERS = frozenset({NUMBERS, POSITIONS, WRITABLE, ITERABLE})
_NUMBER_LIST = _NUMBERS | {JSON}
_IMMUTABLE_NUMBERS = frozenset({NUMBERS, POSITIONS, ITERABLE})
_LIST = frozenset({POSITIONS, WRITABLE, ITERABLE})
_STRING_LIST = _LIST | {JSON, STRINGS}
_FRAME = frozenset({TABLE, FRAME, STRINGS})
_FRAME_NEEDS = (tables.PANDAS, tables.PYARROW)

DATA_KINDS: Mapping[str, DataKind] = by_name(
    DataKind("ndarray", "np.ones(n), float64: one raw buffer of numbers",
             np.ones, 8.5, _NUMBERS),
    DataKind("list_int", "list(range(n)): n distinct int objects (the question's case)",
             lambda n: list(range(n)), 43, _NUMBER_LIST),
    DataKind("list_same_int", "[1] * n: one small int referenced n times (the answer's case)",
             lambda n: [1] * n, 8.5, _NUMBER_LIST),
    DataKind("list_same_bigint", "[10**20] * n: one heap int (not a cached small int) referenced n times",
             _same_bigint, 8.5, _NUMBER_LIST),
    DataKind("list_float", "[float(i) ...]: n distinct float objects",
             lambda n: [float(i) for i in range(n)], 43, _NUMBER_LIST),
    DataKind("list_str", "n distinct 10-character str objects",
             lambda n: list(numbered_strings(n)), 78, _STRING_LIST),
    # Interned strings are immortal in CPython 3.12.0 to 3.12.6 only (not
    # before, not from 3.12.7 or in 3.13): the suite's clearest version
    # signal.  Immortal, they also never die.
    DataKind("list_interned_str", "the list_str strings passed through sys.intern",
             lambda n: list(map(sys.intern, numbered_strings(n))), 180, _STRING_LIST),
    DataKind("tuple_int", "tuple(range(n)): an immutable sequence of n distinct ints",
             lambda n: tuple(range(n)), 43, _IMMUTABLE_NUMBERS | {JSON}),
    # Keys are 0 .. n-1, so data[i] is a key lookup: "sample" applies.
    DataKind("dict_int", "{i: i for i in range(n)}: a hash table of n distinct ints",
             lambda n: {i: i for i in range(n)}, 135, _IMMUTABLE_NUMBERS | {JSON}),
    DataKind("set_int", "set(range(n)): a hash set of n distinct ints",
             lambda n: set(range(n)), 125, frozenset({NUMBERS, ITERABLE})),
    DataKind("ndarray_object", "a numpy object array of n distinct ints",
             lambda n: np.fromiter(range(n), dtype=object, count=n), 43, _NUMBERS),
    DataKind("list_of_lists", "[[i] for i in range(n)]: n small GC-tracked containers",
             lambda n: [[i] for i in range(n)], 130, _LIST | {JSON, TRACKED}),
    DataKind("list_of_instances", "[Item(i) ...]: n plain class instances, each with a __dict__",
             lambda n: [Item(i) for i in range(n)], _INSTANCE_BYTES, _LIST | {TRACKED}),
    DataKind("bytes", "n bytes 0..255 repeating: immutable, one buffer",
             lambda n: _pattern(n, bytes), 1.1, _IMMUTABLE_NUMBERS),
    DataKind("bytearray", "n bytes 0..255 repeating: mutable, one buffer",
             lambda n: _pattern(n, bytearray), 1.1, _NUMBERS),
    DataKind("array_array", "array.array('q', range(n)): n int64 in one buffer",
             lambda n: array.array("q", range(n)), 9, _NUMBERS),
    DataKind("ndarray_shared", "np.ones(n) in an anonymous MAP_SHARED mmap: writes are not copied",
             _shared_ones, 8.5, _NUMBERS),
    # The data people share: tables, strings, records, documents, datasets.
    DataKind("frame_object_str", "pandas DataFrame: int64 'id', 'name' an object column of n str",
             tables.frame_object_str, 105, _FRAME, (tables.PANDAS,)),
    DataKind("frame_arrow_str", "the same frame, 'name' as pandas 3's default str dtype (pyarrow)",
             tables.frame_arrow_str, 145, _FRAME, _FRAME_NEEDS, _ARROW_POOL),
    DataKind("frame_default_str", "the same frame from a list of str with pandas' default dtypes",
             tables.frame_default_str, 155, _FRAME, _FRAME_NEEDS, _ARROW_POOL),
    DataKind("arrow_table", "pyarrow Table: int64 'id' and 'name' strings in Arrow buffers",
             tables.arrow_table, 135, frozenset({TABLE, STRINGS}), (tables.PYARROW,), _ARROW_POOL),
    DataKind("ndarray_stringdtype", "the n strings as a numpy StringDType array (numpy 2)",
             tables.ndarray_stringdtype, 100, _LIST | {STRINGS}, (tables.NUMPY_STRINGDTYPE,)),
    DataKind("dict_str", "{key: value}: n distinct 10-character str keys and str values",
             _dict_str, 250, frozenset({ITERABLE, JSON})),
    DataKind("json_document", "json.loads of n records {id, name, tags: [tag]}: dicts, lists, str",
             _json_document, 620, _LIST | {JSON, TRACKED}),
    DataKind("list_of_dataclasses", "[Record(id=i, name=s) ...]: n dataclass instances",
             lambda n: [Record(i, s) for i, s in enumerate(numbered_strings(n))], _RECORD_BYTES,
             _LIST | {TRACKED}),
    DataKind("list_of_slots", "[SlotRecord(i, s) ...]: the same rows as __slots__ instances",
             lambda n: [SlotRecord(i, s) for i, s in enumerate(numbered_strings(n))], 175,
             _LIST | {TRACKED}),
    DataKind("path_dataset", "a DataLoader-style dataset: n file-path str and a dict path -> label",
             _path_dataset, 210, frozenset({POSITIONS, ITERABLE})),
)
