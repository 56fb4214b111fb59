"""Named regions: the pages a report counts copies in, located once before the fork."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from ._linux.maps import private_writable_now
from ._linux.pagemap import page_span
from ._linux.ranges import intersect_ranges
from .errors import InvalidArgumentError
from .locate import locate

RegionSpec = Union[Any, Tuple[int, int]]


def is_range(spec: Any) -> bool:
    """A region given as an address range: a tuple of exactly two ints."""
    return (isinstance(spec, tuple) and len(spec) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in spec))


class Regions:
    """Named regions located once, to be measured by several ForkMeters.

    ``regions`` maps a name to an object or to an address range ``(start,
    stop)`` in bytes.  An object's region is all the memory reachable from
    it (as :func:`cowmem.memory_ranges` finds it, to ``depth`` levels of
    references; None follows all), located in a short-lived forked helper
    so that this process's heap is left as it was.  ``pages`` maps each
    name to its sorted page numbers (address >> 12 on 4 KiB pages);
    ``unlocated`` maps each name to {type name: objects} whose memory
    could not all be placed (empty for a range, and when all was found);
    ``objects`` keeps the named objects, for explain mode.

    Raises UnverifiedLayoutError for an object region (other than a buffer)
    on an interpreter whose object layouts could not be verified.
    """

    def __init__(self, regions: Optional[Mapping[str, RegionSpec]] = None, *,
                 depth: Optional[int] = None) -> None:
        if regions is not None and not isinstance(regions, Mapping):
            raise InvalidArgumentError(f"regions must map names to objects or (start, stop) ranges, "
                                       f"not {type(regions).__name__}")
        regions = dict(regions or {})
        for spec in regions.values():
            if is_range(spec) and not 0 <= spec[0] <= spec[1]:
                raise InvalidArgumentError(
                    f"an address range must be (start, stop) with 0 <= start <= stop, not {spec}")
        self.depth = depth
        self.objects: Dict[str, Any] = {name: spec for name, spec in regions.items() if not is_range(spec)}
        located = locate(self.objects, depth=depth)
        # A range counts the private writable memory mapped inside it: only
        # that is ever measured, and (0, 2**47) would be 2**35 page numbers.
        mapped = private_writable_now() if any(map(is_range, regions.values())) else []
        self.pages: Dict[str, np.ndarray] = {
            name: page_span(intersect_ranges([spec], mapped)) if is_range(spec)
            else located.pages[name]
            for name, spec in regions.items()}
        self.unlocated: Dict[str, Dict[str, int]] = {
            name: {} if is_range(spec) else located.unlocated[name] for name, spec in regions.items()}
