"""Finding the processes to watch: a parent and every process forked from it.

Everything comes from ``/proc/PID/stat``.  A process is known by its pid
and its start time (clock ticks since boot), so that a pid the kernel
reuses is never taken for the process that had it before.  The tree is
found by parent pid, from one scan of ``/proc``, since this kernel may lack
``/proc/PID/task/TID/children``.

A child that called ``exec()`` shares nothing with its parent any more: it
is a new *family* head, compared with nobody, whose own forked children are
compared with it (``cowmem watch -- sh -c 'gunicorn ...'`` watches the
shell, and gunicorn's workers against gunicorn).  A child still runs its
parent's program image when its code, stack and heap start where its
parent's do: ``exec()`` lays out a new image, ``fork()`` copies the old one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

_PROC = "/proc"


@dataclass(frozen=True)
class ProcessInfo:
    """One process as ``/proc/PID/stat`` shows it.

    ``start_ticks`` is the start time in clock ticks since boot (10 ms
    here); ``image`` is where the program's code, stack and heap begin
    (zeros when the process cannot be inspected).
    """

    pid: int
    ppid: int
    state: str
    start_ticks: int
    image: Tuple[int, int, int]
    name: str

    @property
    def key(self) -> Tuple[int, int]:
        """(start ticks, pid): the identity of the process, and the order of forks."""
        return self.start_ticks, self.pid

    @property
    def alive(self) -> bool:
        """Running or sleeping: not a zombie waiting to be reaped, nor dead."""
        return self.state not in "ZXx"


def read_stat(pid: int) -> Optional[ProcessInfo]:
    """The process ``pid``, or None if there is none (it exited, or never was)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    close = raw.rindex(b")")
    name = raw[raw.index(b"(") + 1:close].decode(errors="replace")
    fields = raw[close + 2:].split()
    # Field n of proc(5) is fields[n - 3]: 4 ppid, 22 starttime,
    # 26 startcode, 28 startstack, 47 start_brk.
    return ProcessInfo(pid=pid, ppid=int(fields[1]), state=fields[0].decode(),
                       start_ticks=int(fields[19]),
                       image=(int(fields[23]), int(fields[25]), int(fields[44])), name=name)


def read_cmdline(pid: int) -> str:
    """The command line of ``pid``, space-separated ("" for a kernel thread or a gone process)."""
    try:
        with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _all_processes() -> Iterator[ProcessInfo]:
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            info = read_stat(int(entry.name))
            if info is not None:
                yield info


@dataclass(frozen=True)
class Member:
    """A watched process in the tree: its family head, its parent, its depth.

    ``forked`` is True for a process that still runs its parent's image
    (compared with ``parent``), False for the root and for a child that
    called ``exec()`` (a family head, compared with nobody).
    """

    info: ProcessInfo
    parent: Optional[int]
    depth: int
    forked: bool


def tree(root: int) -> List[Member]:
    """The process ``root`` and its descendants, depth first, each family's
    children in the order they were forked.  Empty if ``root`` is gone."""
    processes: Dict[int, ProcessInfo] = {}
    children: Dict[int, List[ProcessInfo]] = {}
    for info in _all_processes():
        processes[info.pid] = info
        children.setdefault(info.ppid, []).append(info)
    head = processes.get(root)
    if head is None:
        return []
    out: List[Member] = []

    def visit(info: ProcessInfo, parent: Optional[ProcessInfo], depth: int) -> None:
        forked = parent is not None and info.image == parent.image
        out.append(Member(info, parent.pid if parent else None, depth, forked))
        for child in sorted(children.get(info.pid, []), key=lambda c: c.key):
            visit(child, info, depth + 1)

    visit(head, None, 0)
    return out
