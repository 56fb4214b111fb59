"""What a registry entry is: a data kind, an access, the traits that pair them.

A data kind offers traits (``NUMBERS``: its elements are numbers, ...); an
access needs some; the pair applies when the kind has every trait the access
needs.  A kind may also need a library: it is then not applicable where that
library, or a recent enough version of it, is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any, Callable, FrozenSet, Mapping, Optional, Tuple, TypeVar

from ..facts import release

# Traits: what a data kind offers, and what an access needs.
NUMBERS = "numbers"
POSITIONS = "positions"
WRITABLE = "writable"
ITERABLE = "iterable"
JSON = "json"
STRINGS = "strings"
TABLE = "table"
FRAME = "frame"
TRACKED = "tracked"
TRAIT_MEANING = {
    NUMBERS: "elements that are numbers",
    POSITIONS: "an element at data[i] for every 0 <= i < len(data)",
    WRITABLE: "element slots that data[:] = ... rewrites in place",
    ITERABLE: "elements that `for x in data` visits",
    JSON: "elements json.dumps can write (numbers, str, lists, dicts)",
    STRINGS: "str elements, or a string column 'name'",
    TABLE: "columns 'id' (int64) and 'name' (strings)",
    FRAME: "the methods of a pandas DataFrame",
    # Not needed by any access: it decides whether the gc.freeze() variant is measured.
    TRACKED: "elements the garbage collector tracks (containers, instances)",
}


@dataclass(frozen=True)
class DataKind:
    """A named way to build the parent's data from a size ``n`` (elements)."""

    name: str
    description: str
    build: Callable[[int], Any]
    bytes_per_element: float
    """Peak parent memory (RSS) per element while building, measured, rounded up."""
    traits: FrozenSet[str] = frozenset()
    requires: Tuple[Tuple[str, str], ...] = ()
    """(distribution, minimum version) pairs the build needs, e.g. ``("pandas", "2.1")``."""
    fixed_bytes: int = 2**20
    """Peak memory on top of the per-element figure: allocator granularity (a new arena, pool or
    mapping; Arrow's memory pool grows by megabytes).  Matters only for small n."""

    def missing(self) -> Optional[str]:
        """Why this kind cannot be built here (a library missing or too old), or None.

        Reads the installed distributions' metadata: imports nothing.
        """
        for distribution, minimum in self.requires:
            try:
                installed = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                return f"data kind {self.name!r} needs {distribution}, which is not installed here"
            if release(installed) < release(minimum):
                return (f"data kind {self.name!r} needs {distribution} >= {minimum}, "
                        f"and {distribution} {installed} is installed here")
        return None


@dataclass(frozen=True)
class Access:
    """A named access the child makes to the built data."""

    name: str
    description: str
    run: Optional[Callable[[Any], Any]]   # None: an access that is not handed the data
    needs: FrozenSet[str] = frozenset()


_T = TypeVar("_T", DataKind, Access)


def by_name(*entries: _T) -> Mapping[str, _T]:
    """A read-only name -> entry table, in the order given; ValueError on a repeated name."""
    registry = {e.name: e for e in entries}
    if len(registry) != len(entries):
        raise ValueError("two registry entries share a name")
    return MappingProxyType(registry)
