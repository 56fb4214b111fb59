"""The in-parent hook: ``attach()`` indexes the parent's heap for ``cowmem watch``.

Called in the parent once its data is loaded and before it forks its
workers (gunicorn: a ``when_ready(server)`` hook), ``attach()`` writes
the parent's object index (``cowmem.locate.index_heap``: the one index
that explain mode and regions use too) to a file named by the parent's
pid and start time.  ``cowmem watch`` finds it there, and says of each
worker which types of the parent's objects its copied pages hold.

The parent only imports cowmem's locating code (and numpy), forks and
waits: a forked helper makes the index (a fork of its own, inside
``index_heap``, walks the heap) and writes the file itself, so that no
array of the index, nor any object of the walk, is ever made in the
parent.  What the imports cost the parent's sharing is measured by
``scripts/watch_attach_cost.py``.
"""

from __future__ import annotations

import atexit
import json
import os
from typing import Optional

import numpy as np

from .._linux.pagemap import PAGE_SHIFT as _PAGE_SHIFT
from ..errors import CowmemError
from ..index import ObjectIndex, TypeInfo
from . import processes

_DIRECTORY = "/tmp"
_COLUMNS = ("lo", "hi", "code", "region", "part", "owner")


def index_path(pid: int, start_ticks: Optional[int] = None) -> str:
    """Where the index of the process ``pid`` (as it runs now, or as it
    started at ``start_ticks``) is kept."""
    if start_ticks is None:
        info = processes.read_stat(pid)
        if info is None:
            raise CowmemError(f"no process with pid {pid}")
        start_ticks = info.start_ticks
    return os.path.join(_DIRECTORY, f"cowmem-watch-{pid}-{start_ticks}.npz")


def attach(path: Optional[str] = None) -> str:
    """Index this process's heap for ``cowmem watch``; returns the file written.

    Call it in the parent after its data is loaded and before it forks,
    once (each call walks the whole heap again, in a helper).  The file is
    removed when the parent exits normally.  Raises what
    ``cowmem.locate.index_heap`` raises (UnverifiedLayoutError on an
    interpreter whose object layouts could not be verified).
    """
    # Imported here, in the parent, before any fork: whatever the helper
    # imported would be indexed as the parent's objects.
    from .. import helper
    from ..locate import index_heap

    target = path or index_path(os.getpid())

    def job():
        save(index_heap(), target)
        return target, []

    helper.run(job)
    atexit.register(_remove, target, os.getpid())
    return target


def _remove(path: str, owner: int) -> None:
    # Workers inherit the handler: only the parent that attached removes its index.
    if os.getpid() == owner:
        try:
            os.remove(path)
        except OSError:
            pass


def save(index: ObjectIndex, path: str) -> None:
    """Write ``index`` to ``path`` (numpy's .npz, no pickles), replacing any
    earlier one at once, so that a reader never sees half a file."""
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "wb") as f:
        np.savez(f, types=np.array(json.dumps([list(t) for t in index.types])),
                 regions=np.array(json.dumps(list(index.regions))),
                 **dict(zip(_COLUMNS, index.columns)))
    os.replace(partial, path)


class IndexFile:
    """The index ``attach()`` wrote for one process, read again when it changes.

    Only a file owned by root or by the process's own user is read (and
    never as a pickle): another user cannot plant an index for it.
    """

    def __init__(self, info: processes.ProcessInfo) -> None:
        self.pid = info.pid
        self.path = index_path(info.pid, info.start_ticks)
        self._stamp: Optional[tuple] = None
        self._index: Optional[ObjectIndex] = None

    def current(self) -> Optional[ObjectIndex]:
        """The index as the file holds it now; None if there is none (yet)."""
        try:
            stat = os.stat(self.path)
            if stat.st_uid not in (0, os.stat(f"/proc/{self.pid}").st_uid):
                return None
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            self._index, self._stamp = _load(self.path), stamp
        return self._index


def _load(path: str) -> Optional[ObjectIndex]:
    try:
        with np.load(path, allow_pickle=False) as data:
            types = tuple(TypeInfo(*t) for t in json.loads(str(data["types"])))
            regions = tuple(json.loads(str(data["regions"])))
            return ObjectIndex(*(data[name] for name in _COLUMNS), types, regions)
    except (OSError, ValueError, KeyError):
        return None


def held_by_type(index: ObjectIndex, pages: np.ndarray) -> dict:
    """Bytes of each type's objects inside ``pages`` (page numbers, sorted),
    largest first: what a worker's copied pages hold.

    ``ObjectIndex.bytes_by_type`` on the rows that touch those pages only:
    a heap has millions of rows, a worker's copies touch a few of them.
    """
    if not pages.size or not len(index):
        return {}
    pages = pages.astype(np.uint64)
    shift = np.uint64(_PAGE_SHIFT)
    first = np.searchsorted(index.hi, pages << shift, side="right")
    stop = np.searchsorted(index.lo, (pages + np.uint64(1)) << shift, side="left")
    counts = np.maximum(stop - first, 0)
    if not counts.sum():
        return {}
    rows = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
    rows = rows[np.concatenate(([True], rows[1:] != rows[:-1]))]  # a row on two pages comes twice, in a row
    near = ObjectIndex(*(column[rows] for column in index.columns), index.types, index.regions)
    return near.bytes_by_type(pages)
