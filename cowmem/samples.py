"""One access on given data, measured in a forked child, or in several: the samples asv stores.

What a child copies varies a little from child to child (the interpreter's
own pages, a neighbour's write to a shared page), so a figure worth
comparing is the median of several children with its spread.
"""

from __future__ import annotations

import gc
import traceback
from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

from .fork import measure_fork
from .meter import ForkReport, Regions

CHILDREN = 3
"""Children per measured combination: the fewest that give a median and a spread."""

DATA = "data"
"""The region name under which the data's own memory is counted."""


def _nothing() -> None:
    pass


def measure_access(run: Optional[Callable[[Any], Any]], data: Any, *,
                   regions: Union[Regions, dict, None] = None, gc_freeze: bool = False,
                   timeout: float = 600.0, cross_checks: bool = True, explain: bool = False) -> ForkReport:
    """Fork, run ``run(data)`` in the child, and return what it copied.

    ``run`` None: the child does nothing and is not even handed the data
    (passing it would write its reference count): the cost of measuring
    itself.  ``regions``: as for measure_fork, ``{"data": data}`` by
    default (a Regions located once spares locating the data again for each
    child).  ``gc_freeze``: ``gc.freeze()`` in the parent before the fork,
    ``gc.unfreeze()`` after (which also unfreezes anything the caller
    froze).  ``timeout`` (seconds), ``cross_checks`` and ``explain`` as for
    measure_fork.  Errors are measure_fork's; their tracebacks hold no
    reference to the data.
    """
    if gc_freeze:
        gc.freeze()
    try:
        # Passed inline: a local would keep the data alive through a traceback.
        return measure_fork(partial(run, data) if run is not None else _nothing,
                            regions=regions if regions is not None else {DATA: data},
                            timeout=timeout, cross_checks=cross_checks, explain=explain)
    except BaseException as exc:
        # The traceback's frames hold the data (measure_fork's `regions`):
        # keep the lines, drop the locals, or a caught error keeps gigabytes alive.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        if gc_freeze:
            gc.unfreeze()
        del data


class Samples(NamedTuple):
    """Bytes copied by one access, one entry per child (whole pages)."""

    data_bytes: Tuple[int, ...]
    """Inside the data's own memory (region ``"data"``)."""
    child_bytes: Tuple[int, ...]
    """Anywhere in the child: the data plus the interpreter's own pages."""


def measure_samples(run: Optional[Callable[[Any], Any]], data: Any, regions: Regions, *,
                    children: int = CHILDREN, gc_freeze: bool = False, timeout: float = 600.0) -> Samples:
    """Measure ``run(data)`` in ``children`` forked children, one after the other.

    ``regions`` must name the data's memory ``"data"``.  No cross-checks:
    the samples are the pagemap counts only.  The first child that fails
    raises its error (measure_fork's), and no samples are returned.
    """
    if children < 1:
        raise ValueError(f"children must be at least 1, not {children!r}")
    reports = [measure_access(run, data, regions=regions, gc_freeze=gc_freeze, timeout=timeout,
                              cross_checks=False) for _ in range(children)]
    return Samples(tuple(r.regions[DATA] for r in reports), tuple(r.copied_bytes for r in reports))
