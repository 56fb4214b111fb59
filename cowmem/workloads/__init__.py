"""Named workloads: the data a parent builds and the accesses a forked child makes.

A *data kind* builds one object from a size ``n`` (elements) in the parent,
deterministically; an *access* runs in the child on that object.  A pair
applies when the kind has every trait the access needs (``sum`` needs
numbers, ``write`` needs slots it can write in place, ...).  :func:`measure`
builds, forks and returns what the access made the kernel copy, with the
copies inside the data's own memory under the region name ``"data"``.

The kinds are in ``kinds.py`` (pandas, pyarrow and StringDType ones in
``tables.py``), the accesses in ``accesses.py``, what an entry is in
``registry.py``.
"""

from __future__ import annotations

import difflib
import math
import operator
from typing import Any, Mapping, Optional, Tuple, TypeVar

import numpy as np
import psutil

from ..errors import InsufficientMemoryError, MissingLibraryError, NotApplicableError, UnknownNameError
from ..explain import Explanation
from ..meter import ForkReport, Regions, copied_page_numbers
from ..samples import measure_access
from .accesses import ACCESSES, SAMPLE_SEED
from .kinds import DATA_KINDS, Item, PathDataset, Record, SlotRecord
from .registry import TRACKED, TRAIT_MEANING, Access, DataKind

__all__ = ["DATA_KINDS", "ACCESSES", "GC_VARIANTS", "SAMPLE_SEED", "DataKind", "Access", "Item", "Record",
           "SlotRecord", "PathDataset", "applies", "check_pair", "accesses_for", "tracked_kinds",
           "estimate_bytes", "build", "measure", "explain_in_data"]

GC_VARIANTS = ("plain", "freeze")
"""Parent-side garbage-collector variants: as is, or ``gc.freeze()`` before the fork."""

_T = TypeVar("_T", DataKind, Access)


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
        needs = " and ".join(TRAIT_MEANING[t] for t in sorted(missing))
        raise NotApplicableError(f"access {access!r} does not apply to data kind {data!r}: "
                                 f"it needs {needs}, and {data} ({kind.description}) has none")


def accesses_for(data: str) -> Tuple[str, ...]:
    """The accesses that apply to ``data``, in registry order."""
    return tuple(access for access in ACCESSES if applies(data, access))


def tracked_kinds() -> Tuple[str, ...]:
    """The data kinds whose elements the garbage collector tracks: where ``gc.freeze()`` can matter.

    gc.freeze() only keeps the collector from the objects it tracks; for
    data of untracked elements (ints, str, buffers) it changes at most the
    page of the container's own header.
    """
    return tuple(name for name, kind in DATA_KINDS.items() if TRACKED in kind.traits)


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
    return kind.fixed_bytes + math.ceil(kind.bytes_per_element * size)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def build(data: str, n: int) -> Any:
    """Build data kind ``data`` with ``n`` elements, deterministically.

    Refuses, before allocating anything, a kind whose library is missing
    or too old here (MissingLibraryError, a NotApplicableError, saying
    which) and a size whose estimate exceeds the memory available now
    (InsufficientMemoryError, with both figures).
    """
    kind = _lookup(DATA_KINDS, "data kind", data)
    size = _size(n)
    reason = kind.missing()
    if reason is not None:
        raise MissingLibraryError(reason)
    need = _estimate(kind, size)
    available = psutil.virtual_memory().available
    if need > available:
        raise InsufficientMemoryError(
            f"refusing to build {data!r} with n={size:,}: it needs about {_mib(need)} "
            f"({kind.bytes_per_element:g} bytes per element), and only {_mib(available)} is available")
    return kind.build(size)


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
    if prebuilt is not None and len(prebuilt) != _size(n):
        raise ValueError(f"prebuilt has {len(prebuilt):,} elements, not n={n:,}")
    # Passed inline: a local would keep the data alive through a traceback.
    return measure_access(ACCESSES[access].run, build(data, n) if prebuilt is None else prebuilt,
                          regions=located, gc_freeze=gc_freeze, timeout=timeout,
                          cross_checks=cross_checks, explain=explain)


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
