"""Where objects' memory lies: located in a forked helper, so that the caller is left as it was.

Every function here walks objects (see objects.py for what is followed,
what is left out and what is reported as unlocated) in a short-lived fork
of the calling process (helper.py) and gets back only arrays of addresses:
the walk's reference-count writes and allocations never touch the
caller's heap.  Each call costs a fork (about 40 ms per GiB the process
maps) plus the walk, and raises UnverifiedLayoutError where this
interpreter's object layouts could not be verified, LocateError if the
helper died.
"""

from __future__ import annotations

import gc
import sys
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from . import helper
from .index import ObjectIndex, merge_ranges, page_numbers
from .objects import Walker
from .placement import own_block

Range = Tuple[int, int]
Unlocated = Dict[str, Dict[str, int]]


def _check_depth(depth: Optional[int]) -> None:
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be None (follow every reference) or an int >= 0, not {depth!r}")


def memory_ranges(obj: Any, *, depth: Optional[int] = None) -> List[Range]:
    """The address ranges ``[start, stop)`` (bytes) that hold ``obj``'s memory, merged and sorted.

    Everything reachable from ``obj`` is counted (``depth``: levels of
    references to follow; 0 is ``obj`` alone, None all): each object's
    inline block (GC header and pre-header included), the storage it owns
    (list items, dict and set tables, deque blocks, instance attribute
    values) and the buffers it exposes.  Types, modules, functions, code
    objects and immortal objects are left out.  See :func:`locate` for
    what could not be placed.
    """
    _check_depth(depth)

    def job() -> Tuple[None, List[np.ndarray]]:
        walker = Walker()
        walker.add("obj", obj, depth)
        return None, list(merge_ranges(*walker.region_rows(0)))

    _, (starts, stops) = helper.run(job)
    return list(zip(starts.tolist(), stops.tolist()))


def object_block(obj: Any) -> Range:
    """``[start, stop)`` (bytes) of ``obj``'s own block: from its GC header or
    pre-header to the end of its inline part (3.13's inline attribute values
    included), without the storage it owns elsewhere or what it references.

    Computed here, not in a helper: it reads only the object's type and size.
    Raises UnverifiedLayoutError where the layouts are not verified.
    """
    return own_block(obj)


class Located(NamedTuple):
    """Where named objects lie, by region name.

    ``pages``: sorted unique page numbers (address >> 12 on 4 KiB pages)
    holding each object's memory.  ``unlocated``: per region, {type name:
    number of objects} whose memory could not all be placed (an object
    whose C ``__sizeof__`` counts more than cowmem found, a StringDType
    array's string arena); empty when everything was placed.
    """

    pages: Dict[str, np.ndarray]
    unlocated: Unlocated


def locate(objects: Mapping[str, Any], *, depth: Optional[int] = None) -> Located:
    """The pages of each named object, walked to ``depth`` (None: all of it)."""
    _check_depth(depth)
    names = list(objects)
    if not names:
        return Located({}, {})

    def job() -> Tuple[Unlocated, List[np.ndarray]]:
        walker = Walker()
        for name in names:
            walker.add(name, objects[name], depth)
        return walker.unlocated, [page_numbers(*walker.region_rows(i)) for i in range(len(names))]

    unlocated, pages = helper.run(job)
    return Located(dict(zip(names, pages)), unlocated)


def index_objects(objects: Mapping[str, Any], *, depth: Optional[int] = None) -> ObjectIndex:
    """An ObjectIndex of the named objects' memory (one region per name), for explain mode."""
    _check_depth(depth)
    if not objects:
        return ObjectIndex.empty()
    names = list(objects)

    def job() -> Tuple[Any, List[np.ndarray]]:
        walker = Walker()
        for name in names:
            walker.add(name, objects[name], depth)
        index = walker.index()
        return (index.types, index.regions), index.columns

    return _index(helper.run(job))


def index_heap() -> ObjectIndex:
    """An ObjectIndex of this process's whole heap, made in a forked helper.

    What it holds: every object the garbage collector tracks
    (``gc.get_objects()``, taken in the helper right after the fork) and
    every local variable of the calling thread's frames, plus every object
    those reference that the collector does not track (ints, strs, floats,
    bytes, untracked tuples and dicts), and what they reference in turn;
    types, functions and immortal objects included.  Objects that none of
    those reference (held only by C code, or by another thread's frames)
    are missed.

    The result, one row per block of memory, sorted by address and not
    overlapping (see ObjectIndex):

    - ``index.lo``, ``index.hi``: the block's byte addresses ``[lo, hi)``,
      uint64;
    - ``index.types[index.code[i]].name``: the type of the object the block
      belongs to ("str", "dict", "numpy.ndarray");
    - ``index.part[i]``: OBJECT (the object's own block, GC header
      included), STORAGE (what a container owns outside it: list items,
      dict and set tables, deque blocks, attribute values) or BUFFER (a
      buffer's bytes), as in cowmem.index;
    - ``index.owner[i]``: the address (``id()``) of that object;
    - ``index.region`` is 0 everywhere (``index.regions == ("heap",)``).

    ``index.bytes_by_type(pages)`` gives, for a set of page numbers (e.g.
    the pages a child copied), the bytes of each type inside them, largest
    first: ``{"str": 250_000, "dict": 90_000, ...}``.  ``index.lookup(addresses)``
    gives the row of each address (-1 outside every block).

    Costs a fork plus a walk of every object: about as long as a full
    ``gc.collect()`` plus 1 µs per object, in the helper, not here.
    """

    def job() -> Tuple[Any, List[np.ndarray]]:
        roots = gc.get_objects()   # first: before the walk makes objects of its own
        roots += _callers_locals(index_heap.__code__)
        walker = Walker(skip_shared=False)
        walker.add("heap", None, roots=roots)
        index = walker.index()
        return (index.types, index.regions), index.columns

    return _index(helper.run(job))


def _callers_locals(code: Any) -> List[Any]:
    """The values of the local variables of the frames that called ``code``'s function."""
    frame = sys._getframe()
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    found: List[Any] = []
    while frame is not None:
        frame = frame.f_back
        if frame is not None:
            found += list(frame.f_locals.values())
    return found


def _index(result: Tuple[Any, List[np.ndarray]]) -> ObjectIndex:
    (types, regions), columns = result
    return ObjectIndex(*columns, tuple(types), tuple(regions))
