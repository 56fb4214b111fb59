"""Watching a parent and its forked children over time, one sample at a time.

Each sample finds the process tree, reads every process's pages, then
finds the tree again.  A child is compared with its parent from the frames
it was forked with (``compare.ForkOrigin``), worked out when the child is
first seen.  A child first seen at a sample's start that was not there at
the previous sample's end was forked in the interval between: the
parent's readings from that sample and from this one bracket its fork,
which makes its origin exact.  A child already running when watching
began, or forked while a sample was being taken, gets its origin from the
frames alone, with the unsure pages that leaves.

``Watcher`` does nothing to the watched processes but read ``/proc``: no
signal, no ptrace, no write.  Reading a process's pagemap takes its memory
map lock for reading, as ``ps`` and ``top`` do.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from .._linux.probe import check_pagemap, zero_page_frame
from ..errors import UnknownNameError, UnsupportedPlatformError
from ..index import ObjectIndex
from . import hook, processes
from .compare import (ChildComparison, Figures, ForkOrigin, Snapshot, compare_child, compare_child_flags,
                      compare_parent, compare_parent_flags)
from .pagemaps import PageRanges, PageReader, ProcessGone, ProcessPages

Key = Tuple[int, int]


class NoSuchProcessError(UnknownNameError):
    """There is no running process with the pid given to watch."""


@dataclass(frozen=True)
class Row:
    """One watched process in one sample.

    ``role`` is "parent" for the watched parent and for a child that called
    ``exec()`` (each compared with its own forked children), "child" for a
    forked process (compared with ``parent``, the pid it was forked from).
    ``state`` is "running", or for a row of ``Sample.left`` "exited" or
    "orphaned" (it runs on, but its parent exited).
    """

    pid: int
    parent: Optional[int]
    role: str
    depth: int
    name: str
    figures: Figures
    state: str = "running"


@dataclass(frozen=True)
class Sample:
    """One look at the watched processes.

    ``time`` in seconds since the epoch, ``elapsed`` since the first sample,
    ``cost_seconds`` what taking it took.  ``left`` holds the processes gone
    since the previous sample, with the figures they had then.
    ``parent_exited`` is True once the watched parent is gone: there is
    nothing more to compare with, and ``rows`` is empty.
    """

    index: int
    time: float
    elapsed: float
    rows: Tuple[Row, ...]
    left: Tuple[Row, ...]
    parent_exited: bool
    frames_readable: bool
    cost_seconds: float

    def children(self) -> List[Row]:
        return [row for row in self.rows if row.role == "child"]


@dataclass
class _Tracked:
    """What the watcher keeps of one process from sample to sample.

    ``pages`` is its read over its own mappings (taken when it is a parent
    of forked children, or a family head), ``as_child`` its read onto its
    parent's mappings (when it is a forked child).
    """

    member: processes.Member
    name: str
    reader: PageReader
    child_reader: PageReader
    pages: Optional[ProcessPages] = None
    previous: Optional[ProcessPages] = None  # the last sample's (still valid: see PageReader)
    as_child: Optional[ProcessPages] = None
    origin: Optional[ForkOrigin] = None
    row: Optional[Row] = None
    index: Optional[hook.IndexFile] = None   # what attach() wrote, for a parent
    types: Optional[Tuple[ObjectIndex, np.ndarray, Dict[str, int]]] = None  # index, copied pages, what they hold


class Watcher:
    """Samples of the process ``pid`` and every process forked from it.

    Raises NoSuchProcessError if there is no such running process, and
    UnsupportedPlatformError if its pagemap cannot be read (watch it as
    root, or as the user it runs as; without CAP_SYS_ADMIN the figures are
    those of ``compare.compare_child_flags``).
    """

    def __init__(self, pid: int) -> None:
        info = processes.read_stat(pid)
        if info is None or not info.alive:
            raise NoSuchProcessError(f"no running process with pid {pid}")
        check_pagemap()
        self.pid = pid
        self._zero_frame = zero_page_frame()
        self.frames_readable = bool(self._zero_frame)
        self._tracked: Dict[Key, _Tracked] = {}
        self._seen_at_end: Optional[Set[Key]] = None
        self._index = 0
        self._first: Optional[float] = None
        self._read(PageReader(pid, self._zero_frame))  # fail now, not at the first sample

    def sample(self) -> Sample:
        """Take one sample now."""
        began, now = time.perf_counter(), time.time()
        if self._first is None:
            self._first = now
        members = [m for m in processes.tree(self.pid) if m.info.alive]
        current = self._read_all(members)
        seen_at_end = {m.info.key for m in processes.tree(self.pid)}
        root = members[0].info.key if members and members[0].info.pid == self.pid else None
        if root in current and current[root].pages is not None:
            self._compare(current)
            rows = tuple(t.row for t in current.values() if t.row is not None)
        else:
            rows, current = (), {}
        left = tuple(self._left(t) for key, t in self._tracked.items()
                     if key not in current and t.row is not None)
        self._tracked, self._seen_at_end = current, seen_at_end
        self._index += 1
        return Sample(self._index, now, now - self._first, rows, left, parent_exited=not rows,
                      frames_readable=self.frames_readable, cost_seconds=time.perf_counter() - began)

    def _read_all(self, members: List[processes.Member]) -> Dict[Key, _Tracked]:
        """Read every member, parents before their children (the tree's order)."""
        parents = {m.parent for m in members if m.forked}
        current: Dict[Key, _Tracked] = {}
        by_pid: Dict[int, _Tracked] = {}
        for member in members:
            tracked = self._follow(member)
            parent = by_pid.get(member.parent) if member.forked else None
            try:
                if member.info.pid in parents or not member.forked:
                    tracked.pages = self._read(tracked.reader)
                if parent is not None and parent.pages is not None:
                    tracked.as_child = self._read(tracked.child_reader, parent.pages.ranges)
            except ProcessGone:
                continue
            current[member.info.key] = by_pid[member.info.pid] = tracked
        return current

    def _follow(self, member: processes.Member) -> _Tracked:
        old = self._tracked.get(member.info.key)
        if old is None:
            pid = member.info.pid
            return _Tracked(member, _name(member.info), PageReader(pid, self._zero_frame),
                            PageReader(pid, self._zero_frame), index=hook.IndexFile(member.info))
        return _Tracked(member, old.name, old.reader, old.child_reader, previous=old.pages, origin=old.origin,
                        index=old.index, types=old.types)

    def _read(self, reader: PageReader, onto: Optional[PageRanges] = None) -> ProcessPages:
        try:
            return reader.read(onto)
        except PermissionError as exc:
            raise UnsupportedPlatformError(
                f"cannot read /proc/{reader.pid}/pagemap ({exc.strerror}): watch as root, "
                "or as the user the processes run as") from None

    def _compare(self, current: Dict[Key, _Tracked]) -> None:
        by_pid = {t.member.info.pid: key for key, t in current.items()}
        # Children grouped by parent, in fork order (the tree's order).
        families: Dict[Key, List[Key]] = {}
        for key, tracked in current.items():
            if tracked.as_child is not None:
                families.setdefault(by_pid[tracked.member.parent], []).append(key)
        compared = {parent_key: self._compare_family(current[parent_key], [current[k] for k in child_keys], current)
                    for parent_key, child_keys in families.items()}
        for key, tracked in current.items():
            if not tracked.member.forked:
                tracked.row = self._row(tracked, "parent", self._parent_figures(tracked.pages, compared.get(key, [])))
        for parent_key, child_keys in families.items():
            index = current[parent_key].index.current() if self.frames_readable else None
            if index is not None:
                for key in child_keys:
                    self._name_types(current[key], index)

    @staticmethod
    def _name_types(child: _Tracked, index: ObjectIndex) -> None:
        """Say which types of the parent's objects the child's copied pages hold."""
        pages = child.row.figures.copied_pages
        known = child.types
        if known is None or known[0] is not index or not np.array_equal(known[1], pages):
            child.types = (index, pages, hook.held_by_type(index, pages))  # only when they change
        child.row = dataclasses.replace(child.row, figures=dataclasses.replace(child.row.figures,
                                                                               types=child.types[2]))

    def _compare_family(self, parent: _Tracked, children: List[_Tracked],
                        current: Dict[Key, _Tracked]) -> List[Tuple[ChildComparison, ForkOrigin]]:
        """Compare each child with the parent; sets their rows."""
        pages = parent.pages
        if not self.frames_readable:
            for child in children:
                child.row = self._row(child, "child", compare_child_flags(pages, child.as_child))
            return []
        frames = [child.as_child.frames for child in children]
        before = base = ancestors = None
        compared = []
        for i, child in enumerate(children):
            key = child.member.info.key
            if child.origin is None:
                forked_between = (self._seen_at_end is not None and key not in self._seen_at_end
                                  and parent.previous is not None)
                if forked_between and before is None:
                    before = parent.previous.aligned(parent.previous.frames, pages.ranges)
                if base is None:
                    base = Snapshot(pages.ranges, pages.frames.copy())
                    ancestors = [a.aligned(a.frames, pages.ranges) for a in self._ancestors(parent, current)]
                child.origin = ForkOrigin.infer(
                    base, frames[i],
                    before=before if forked_between else None,
                    relatives=[f for j, f in enumerate(frames) if j != i] + ancestors,
                    older=[f for j, f in enumerate(frames) if children[j].member.info.key < key] + ancestors)
            else:
                child.origin = child.origin.on(pages.ranges)
            comparison = compare_child(pages, child.as_child, child.origin)
            child.row = self._row(child, "child", comparison.figures)
            compared.append((comparison, child.origin))
        return compared

    @staticmethod
    def _ancestors(parent: _Tracked, current: Dict[Key, _Tracked]) -> List[ProcessPages]:
        """The reads of the processes ``parent`` was forked from, nearest first."""
        by_pid = {t.member.info.pid: t for t in current.values()}
        out, member = [], parent.member
        while member.forked and member.parent in by_pid and by_pid[member.parent].pages is not None:
            ancestor = by_pid[member.parent]
            out.append(ancestor.pages)
            member = ancestor.member
        return out

    def _parent_figures(self, pages: ProcessPages,
                        compared: List[Tuple[ChildComparison, ForkOrigin]]) -> Figures:
        if not self.frames_readable:
            return compare_parent_flags(pages)
        return compare_parent(pages, [c for c, _ in compared], [o for _, o in compared])

    def _row(self, tracked: _Tracked, role: str, figures: Figures) -> Row:
        member = tracked.member
        return Row(member.info.pid, member.parent if member.forked else None, role, member.depth,
                   tracked.name, figures)

    def _left(self, tracked: _Tracked) -> Row:
        info = processes.read_stat(tracked.member.info.pid)
        still = info is not None and info.key == tracked.member.info.key and info.alive
        row = tracked.row
        return Row(row.pid, row.parent, row.role, row.depth, row.name, row.figures,
                   "orphaned" if still and tracked.member.info.pid != self.pid else "exited")


def _name(info: processes.ProcessInfo) -> str:
    return processes.read_cmdline(info.pid) or info.name
