"""cowmem: page-exact measurement of what a forked child copies.

After ``fork()`` parent and child share every page copy-on-write; CPython
writes to objects a program only reads (reference counts, GC headers), so
reading a list can copy it.  :func:`measure_fork` runs one access in a
forked child and reports, from ``/proc/self/pagemap``, exactly which pages
the access made the kernel copy.

The names below are imported on first use: ``cowmem.report`` and
``cowmem publish`` read results anywhere, without numpy or the measuring code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

from .errors import (AccessError, ChildExitedError, ChildKilledError, ChildLostError, ChildTimeoutError,
                     CowmemError, DescriptorsClosedError, ExplainError, ExplainUnavailableError,
                     InsufficientMemoryError, InvalidArgumentError, LocateError, MissingLibraryError,
                     NotApplicableError, UnknownNameError, UnsupportedPlatformError, UnverifiedLayoutError)

__version__ = "0.2.0"

# Public name -> the module that defines it.
_LAZY: Dict[str, str] = {
    "measure_fork": "fork", "ForkSafetyWarning": "fork",
    "ForkMeter": "meter", "ForkReport": "meter", "Regions": "regions",
    "memory_ranges": "locate",
    "PAGE_SIZE": "_linux.pagemap",
    "Explanation": "explain", "CAUSES": "explain",
}

if TYPE_CHECKING:
    from ._linux.pagemap import PAGE_SIZE
    from .explain import CAUSES, Explanation
    from .fork import ForkSafetyWarning, measure_fork
    from .locate import memory_ranges
    from .meter import ForkMeter, ForkReport
    from .regions import Regions

__all__ = [
    "measure_fork", "ForkReport", "ForkMeter", "Regions", "memory_ranges", "PAGE_SIZE",
    "CowmemError", "UnsupportedPlatformError", "AccessError", "ChildKilledError",
    "ChildExitedError", "ChildTimeoutError", "UnknownNameError", "NotApplicableError",
    "InsufficientMemoryError", "MissingLibraryError", "ForkSafetyWarning", "ExplainError",
    "ExplainUnavailableError", "UnverifiedLayoutError", "LocateError",
    "InvalidArgumentError", "DescriptorsClosedError", "ChildLostError",
    "Explanation", "CAUSES",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cowmem' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
