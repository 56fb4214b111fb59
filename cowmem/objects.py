"""Follow an object graph in this process and list the memory that holds it.

Walked breadth first from each named object: everything reachable through
``gc.get_referents``, plus what containers that do not expose it that way
hold (a dict's str keys, a numpy array's base and the items of an object
array).  Left out is what the data shares with the rest of the program:
types, modules and their namespaces, functions and descriptors, code
objects, numpy dtypes and, from 3.12, immortal objects.  The first layer
(the named object itself) is never left out.  Where each object's memory
lies is placement.py's.

The walk reads objects in place and records only the addresses of objects
that exist: it creates no object whose address it counts.  It writes
reference counts and allocates as it goes, so cowmem runs it in a forked
helper (locate.py), never in the process being measured.
"""

from __future__ import annotations

import gc
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import layouts, verify
from .errors import UnverifiedLayoutError
from .index import ObjectIndex, distinct, is_member, sorted_unique
from .peek import gather, view
from .placement import Placer, Rows

SHARED_TYPES: Tuple[type, ...] = (
    type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
    types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
    types.GetSetDescriptorType, types.MemberDescriptorType, types.ClassMethodDescriptorType,
    np.dtype, np.ufunc)
"""Types whose instances the data shares with the rest of the program: never followed."""

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


def _once(items: List[Any]) -> Tuple[List[Any], np.ndarray]:
    """``items`` each once, and their addresses; in their order when none repeats."""
    ids = addresses(items)
    ordered = np.sort(ids, kind="stable")
    if not np.any(ordered[1:] == ordered[:-1]):
        return items, ids
    ids, first = distinct(ids)
    return _pick(items, first), ids


class _Seen:
    """A set of addresses as sorted chunks of geometric sizes: 8 bytes per address."""

    def __init__(self) -> None:
        self._chunks: List[np.ndarray] = []

    def add_new(self, ids: np.ndarray) -> np.ndarray:
        """Add ``ids`` (distinct, in any order); return which of them were not in the set."""
        new = np.ones(ids.size, bool)
        for chunk in self._chunks:
            new &= ~is_member(chunk, ids)
        if np.any(new):
            self._chunks.append(np.sort(ids[new], kind="stable"))
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
        self._placer = Placer()
        self.types = self._placer.types    # per layout code
        self.regions: List[str] = []
        self._columns: List[List[np.ndarray]] = []
        self.unlocated: Dict[str, Dict[str, int]] = {}
        try:
            verify.require(*verify.CORE)
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
        rows, unlocated = Rows(), {}
        self.regions.append(name)
        self.unlocated[name] = unlocated
        start = [root] if roots is None else roots
        if self._unverified is not None:
            for obj in start:
                if not self._placer.buffer_only(obj, rows, unlocated):
                    raise self._unverified
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

    def _walk(self, level: List[Any], depth: Optional[int], rows: Rows, unlocated: Dict[str, int]) -> None:
        level, ids = _once(level)
        seen = _Seen()
        seen.add_new(ids)
        steps = 0
        while level:
            more: List[Any] = []
            for tp, objs, kind_ids in self._groups(level, ids):
                more += self._placer.place(tp, objs, kind_ids, rows, unlocated)
            steps += 1
            if depth is not None and steps > depth:
                break
            level, ids = self._next(gc.get_referents(*level) + more, seen)

    def _groups(self, level: List[Any], ids: np.ndarray) -> List[Tuple[type, List[Any], np.ndarray]]:
        """The objects of ``level`` (at ``ids``) by type."""
        one = set(map(type, level))
        if len(one) == 1:
            return [(one.pop(), level, ids)]
        kinds = list(map(type, level))
        type_ids = addresses(kinds)
        order = np.argsort(type_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(type_ids[order])) + 1
        return [(kinds[int(group[0])], _pick(level, group), ids[group])
                for group in np.split(order, bounds)]

    def _next(self, children: List[Any], seen: _Seen) -> Tuple[List[Any], np.ndarray]:
        """The objects of the next level: new, and not shared with the rest of the program."""
        children, ids = _once(children)
        keep = np.ones(ids.size, bool)
        if self.skip_shared:
            kinds = set(map(type, children))
            shared = {tp for tp in kinds if issubclass(tp, SHARED_TYPES)}
            if shared:
                keep &= ~np.fromiter(map(shared.__contains__, map(type, children)), bool, len(children))
            if dict in kinds:
                keep &= ~is_member(self._namespaces, ids)
            keep &= ~layouts.is_immortal(ids)
        keep[keep] = seen.add_new(ids[keep])
        if np.all(keep):
            return children, ids
        kept = np.flatnonzero(keep)
        return _pick(children, kept), ids[kept]
