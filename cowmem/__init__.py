"""cowmem: page-exact measurement of what a forked child copies.

After ``fork()`` parent and child share every page copy-on-write; CPython
writes to objects a program only reads (reference counts, GC headers), so
reading a list can copy it.  :func:`measure_fork` runs one access in a
forked child and reports, from ``/proc/self/pagemap``, exactly which pages
the access made the kernel copy.
"""

from .errors import (AccessError, ChildExitedError, ChildKilledError, ChildTimeoutError,
                     CowmemError, ExplainError, ExplainUnavailableError, InsufficientMemoryError,
                     NotApplicableError, UnknownNameError, UnsupportedPlatformError)
from .explain import CAUSES, Explanation
from .fork import ForkSafetyWarning, measure_fork
from .meter import ForkMeter, ForkReport, Regions
from .objects import memory_ranges
from .pagemap import PAGE_SIZE

__version__ = "0.1.0"

__all__ = [
    "measure_fork", "ForkReport", "ForkMeter", "Regions", "memory_ranges", "PAGE_SIZE",
    "CowmemError", "UnsupportedPlatformError", "AccessError", "ChildKilledError",
    "ChildExitedError", "ChildTimeoutError", "UnknownNameError", "NotApplicableError",
    "InsufficientMemoryError", "ForkSafetyWarning", "ExplainError", "ExplainUnavailableError",
    "Explanation", "CAUSES",
]
