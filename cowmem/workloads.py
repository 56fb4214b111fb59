"""Named workloads: the data a parent builds and the accesses a forked child makes.

A *data kind* builds one object from a size ``n`` (elements) in the parent,
deterministically; an *access* runs in the child on that object.  A pair
applies when the kind has every trait the access needs (``sum`` needs
numbers, ``write`` needs slots it can write in place, ...).  :func:`measure`
builds, forks and returns what the access made the kernel copy, with the
copies inside the data's own memory under the region name ``"data"``.
"""

from __future__ import annotations

import array
import copy
import difflib
import gc
import math
import mmap
import operator
import random
import sys
import traceback
from dataclasses import dataclass
from functools import partial
from itertools import chain, repeat
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType
from typing import Any, Callable, FrozenSet, Iterable, Mapping, Optional, TypeVar

import numpy as np
import psutil

from .errors import InsufficientMemoryError, NotApplicableError, UnknownNameError
from .explain import Explanation
from .fork import measure_fork
from .meter import ForkReport, Regions, copied_page_numbers

# Traits: what a data kind offers, and what an access needs.
NUMBERS = "numbers"
POSITIONS = "positions"
WRITABLE = "writable"
_TRAIT_MEANING = {
    NUMBERS: "elements that are numbers",
    POSITIONS: "an element at data[i] for every 0 <= i < len(data)",
    WRITABLE: "element slots that data[:] = ... rewrites in place",
}

GC_VARIANTS = ("plain", "freeze")
"""Parent-side garbage-collector variants: as is, or ``gc.freeze()`` before the fork."""

SAMPLE_SEED = 20240611
"""Seed of the ``sample`` access's positions: every run touches the same elements."""


@dataclass(frozen=True)
class DataKind:
    """A named way to build the parent's data from a size ``n`` (elements)."""

    name: str
    description: str
    build: Callable[[int], Any]
    bytes_per_element: float
    """Peak parent memory (RSS) per element while building, measured, rounded up."""
    traits: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class Access:
    """A named access the child makes to the built data."""

    name: str
    description: str
    run: Optional[Callable[[Any], Any]]   # None: an access that is not handed the data
    needs: FrozenSet[str] = frozenset()


class Item:
    """A plain class instance holding one int: what ``list_of_instances`` holds.

    Deliberately without ``__slots__``: instances with a ``__dict__`` are the
    common case, and where CPython keeps their attributes changed in 3.11
    and again in 3.12 and 3.13, which is what the suite should show.
    """

    def __init__(self, value: int) -> None:
        self.value = value


_PATTERN = bytes(range(256))
_B = TypeVar("_B", bytes, bytearray)


def _pattern(n: int, cls: type[_B]) -> _B:
    """``n`` bytes 0, 1, ..., 255, 0, 1, ... as ``cls``, allocated once (no temporary copy)."""
    whole, rest = divmod(n, len(_PATTERN))
    return cls().join(chain(repeat(_PATTERN, whole), (_PATTERN[:rest],)))


def _numbered_strings(n: int) -> Iterable[str]:
    # Ten digits: every string is 64 bytes in pymalloc on CPython 3.9 to 3.13
    # (the header shrank from 48 to 40 bytes in 3.12), so bytes per element do
    # not depend on n or on the version.
    return (f"{i:010d}" for i in range(n))


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


# bytes_per_element: the peak RSS growth per element while building, measured
# in fresh processes on CPython 3.9 to 3.13 (Linux x86_64, numpy 2) at n from
# 1e5 to 3e6, hash tables included at their worst n (just after a resize,
# old and new table both alive), then rounded up by 5 to 10 %.
# Plain instances shrank in 3.11 (no per-instance dict) and again in 3.12.
_INSTANCE_BYTES = 220 if sys.version_info < (3, 11) else 150 if sys.version_info < (3, 12) else 135
# Allocator granularity (a new arena, pool or mapping) on top: matters only for small n.
_FIXED_BYTES = 2**20

_ALL = frozenset({NUMBERS, POSITIONS, WRITABLE})
_LIST = frozenset({POSITIONS, WRITABLE})
_IMMUTABLE_NUMBERS = frozenset({NUMBERS, POSITIONS})

_T = TypeVar("_T", DataKind, Access)


def _by_name(*entries: _T) -> Mapping[str, _T]:
    registry = {e.name: e for e in entries}
    if len(registry) != len(entries):
        raise ValueError("two registry entries share a name")
    return MappingProxyType(registry)


DATA_KINDS: Mapping[str, DataKind] = _by_name(
    DataKind("ndarray", "np.ones(n), float64: one raw buffer of numbers",
             np.ones, 8.5, _ALL),
    DataKind("list_int", "list(range(n)): n distinct int objects (the question's case)",
             lambda n: list(range(n)), 43, _ALL),
    DataKind("list_same_int", "[1] * n: one small int referenced n times (the answer's case)",
             lambda n: [1] * n, 8.5, _ALL),
    DataKind("list_same_bigint", "[10**20] * n: one heap int (not a cached small int) referenced n times",
             _same_bigint, 8.5, _ALL),
    DataKind("list_float", "[float(i) ...]: n distinct float objects",
             lambda n: [float(i) for i in range(n)], 43, _ALL),
    DataKind("list_str", "n distinct 10-character str objects",
             lambda n: list(_numbered_strings(n)), 78, _LIST),
    # Interned strings were immortal in CPython 3.12 only (not before, not in
    # 3.13): the suite's clearest version signal.  In 3.12 they also never die.
    DataKind("list_interned_str", "the list_str strings passed through sys.intern",
             lambda n: list(map(sys.intern, _numbered_strings(n))), 180, _LIST),
    DataKind("tuple_int", "tuple(range(n)): an immutable sequence of n distinct ints",
             lambda n: tuple(range(n)), 43, _IMMUTABLE_NUMBERS),
    # Keys are 0 .. n-1, so data[i] is a key lookup: "sample" applies.
    DataKind("dict_int", "{i: i for i in range(n)}: a hash table of n distinct ints",
             lambda n: {i: i for i in range(n)}, 135, _IMMUTABLE_NUMBERS),
    DataKind("set_int", "set(range(n)): a hash set of n distinct ints",
             lambda n: set(range(n)), 125, frozenset({NUMBERS})),
    DataKind("ndarray_object", "a numpy object array of n distinct ints",
             lambda n: np.fromiter(range(n), dtype=object, count=n), 43, _ALL),
    DataKind("list_of_lists", "[[i] for i in range(n)]: n small GC-tracked containers",
             lambda n: [[i] for i in range(n)], 130, _LIST),
    DataKind("list_of_instances", "[Item(i) ...]: n plain class instances, each with a __dict__",
             lambda n: [Item(i) for i in range(n)], _INSTANCE_BYTES, _LIST),
    DataKind("bytes", "n bytes 0..255 repeating: immutable, one buffer",
             lambda n: _pattern(n, bytes), 1.1, _IMMUTABLE_NUMBERS),
    DataKind("bytearray", "n bytes 0..255 repeating: mutable, one buffer",
             lambda n: _pattern(n, bytearray), 1.1, _ALL),
    DataKind("array_array", "array.array('q', range(n)): n int64 in one buffer",
             lambda n: array.array("q", range(n)), 9, _ALL),
    DataKind("ndarray_shared", "np.ones(n) in an anonymous MAP_SHARED mmap: writes are not copied",
             _shared_ones, 8.5, _ALL),
)


def _iterate(data: Any) -> None:
    for _ in data:
        pass


def _sum(data: Any) -> Any:
    # An array's own reduction, as the question's user called it; builtin
    # sum() would make a numpy scalar of every element.
    return data.sum() if isinstance(data, np.ndarray) else sum(data)


def _write(data: Any) -> None:
    # A copy first: numpy skips assigning an array to itself (list, bytearray
    # and array.array copy first in that case anyway).  Values stay the same,
    # which matters for ndarray_shared, whose writes reach the parent.
    data[:] = copy.copy(data)


def _sample(data: Any) -> None:
    n = len(data)
    pick = random.Random(SAMPLE_SEED).randrange
    for _ in range(n // 10):
        data[pick(n)]  # the read is the point: it takes and drops a reference


ACCESSES: Mapping[str, Access] = _by_name(
    # Not even handed the data: passing it would write its reference count.
    Access("none", "nothing: the cost of measuring itself", None),
    Access("len", "len(data): reads only the container's header", len),
    Access("sum", "sum(data), or data.sum() for numpy arrays", _sum, frozenset({NUMBERS})),
    Access("iterate", "for x in data: pass", _iterate),
    # The collector walks every tracked object of the interpreter whatever
    # the data is, so it applies to all: for untracked data it shows the
    # interpreter's own share.
    Access("gc_collect", "gc.collect() in the child", lambda data: gc.collect()),
    Access("write", "data[:] = copy.copy(data): every element slot rewritten, same values",
           _write, frozenset({WRITABLE})),
    Access("sample", "data[i] for len(data) // 10 random i (fixed seed, drawn with replacement)",
           _sample, frozenset({POSITIONS})),
    Access("copy", "copy.copy(data): a shallow copy", copy.copy),
    Access("pickle", "pickle data as multiprocessing does to send a result (ForkingPickler.dumps)",
           ForkingPickler.dumps),
)


def _lookup(registry: Mapping[str, _T], what: str, name: str) -> _T:
    try:
        return registry[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(registry), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownNameError(f"unknown {what} {name!r}{hint}; valid names: {', '.join(registry)}")


def applies(data: str, access: str) -> bool:
    """Whether ``access`` applies to ``data``; raises UnknownNameError for an unknown name."""
    return _lookup(ACCESSES, "access", access).needs <= _lookup(DATA_KINDS, "data kind", data).traits


def check_pair(data: str, access: str) -> None:
    """Raise UnknownNameError for an unknown name, NotApplicableError (saying why) for a pair that does not apply."""
    kind = _lookup(DATA_KINDS, "data kind", data)
    missing = _lookup(ACCESSES, "access", access).needs - kind.traits
    if missing:
        needs = " and ".join(_TRAIT_MEANING[t] for t in sorted(missing))
        raise NotApplicableError(f"access {access!r} does not apply to data kind {data!r}: "
                                 f"it needs {needs}, and {data} ({kind.description}) has none")


def _size(n: int) -> int:
    """``n`` as a non-negative int; ValueError otherwise (bool is refused, not taken as 0 or 1)."""
    try:
        if isinstance(n, bool):
            raise TypeError
        size = operator.index(n)
    except TypeError:
        raise ValueError(f"n must be a whole number of elements, got {n!r} "
                         f"({type(n).__name__})") from None
    if size < 0:
        raise ValueError(f"n must be >= 0 elements, got {size}")
    return size


def estimate_bytes(data: str, n: int) -> int:
    """Peak parent memory (bytes) that building ``data`` with ``n`` elements needs, a little generous."""
    return _estimate(_lookup(DATA_KINDS, "data kind", data), _size(n))


def _estimate(kind: DataKind, size: int) -> int:
    return _FIXED_BYTES + math.ceil(kind.bytes_per_element * size)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def build(data: str, n: int) -> Any:
    """Build data kind ``data`` with ``n`` elements, deterministically.

    Refuses, before allocating anything, a size whose estimate exceeds the
    memory available now (InsufficientMemoryError, with both figures).
    """
    kind = _lookup(DATA_KINDS, "data kind", data)
    size = _size(n)
    need = _estimate(kind, size)
    available = psutil.virtual_memory().available
    if need > available:
        raise InsufficientMemoryError(
            f"refusing to build {data!r} with n={size:,}: it needs about {_mib(need)} "
            f"({kind.bytes_per_element:g} bytes per element), and only {_mib(available)} is available")
    return kind.build(size)


def _nothing() -> None:
    pass


def measure(data: str, access: str, n: int, *, gc_freeze: bool = False, timeout: float = 600.0,
            prebuilt: Optional[Any] = None, located: Optional[Regions] = None,
            cross_checks: bool = True, explain: bool = False) -> ForkReport:
    """Build ``data`` with ``n`` elements, fork, run ``access`` in the child; what it copied.

    ``report.regions["data"]`` is the bytes copied inside the data's own
    memory.  ``prebuilt``: an object built earlier by ``build(data, n)``, used
    instead of building again, and ``located``: ``Regions({"data": prebuilt})``
    made once, to spare locating its elements again (about 0.3 s per
    million) when measuring it repeatedly.  ``cross_checks``: as for
    measure_fork.  ``gc_freeze``: ``gc.freeze()`` in the parent
    before the fork, and ``gc.unfreeze()`` after (which also unfreezes
    anything the caller froze).  ``timeout`` in seconds, for the child.
    ``explain``: name the write behind each copied page (see measure_fork).
    """
    check_pair(data, access)
    run = ACCESSES[access].run
    if prebuilt is None:
        obj = build(data, n)
    elif len(prebuilt) != _size(n):
        raise ValueError(f"prebuilt has {len(prebuilt):,} elements, not n={n:,}")
    else:
        obj = prebuilt
    if gc_freeze:
        gc.freeze()
    try:
        # Passed inline: a local would keep the data alive through a traceback.
        return measure_fork(partial(run, obj) if run is not None else _nothing,
                            regions=located or {"data": obj}, timeout=timeout,
                            cross_checks=cross_checks, explain=explain)
    except BaseException as exc:
        # The traceback's frames hold the data (measure_fork's `regions`):
        # keep the lines, drop the locals, or a caught error keeps gigabytes alive.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        if gc_freeze:
            gc.unfreeze()
        del obj


def explain_in_data(data: str, access: str, n: int, *, gc_freeze: bool = False,
                    timeout: float = 600.0) -> Explanation:
    """Why the data's own pages were copied: the first write behind each.

    Measures with ``explain=True`` (userfaultfd; ExplainUnavailableError where
    it is missing) and keeps the copied pages inside the data's memory, so
    the interpreter's own copies do not dilute the breakdown.
    """
    obj = build(data, n)
    located = Regions({"data": obj})
    report = measure(data, access, n, gc_freeze=gc_freeze, timeout=timeout, prebuilt=obj,
                     located=located, cross_checks=False, explain=True)
    inside = np.intersect1d(copied_page_numbers(report), located.pages["data"], assume_unique=True)
    return report.explanation.restrict(inside)
