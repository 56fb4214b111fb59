"""Fork a child, run one access in it, and report what the access copied.

The child takes pagemap snapshots of every private writable mapping around
the access (see DESIGN.md, "The measuring method"); the parent waits with a
deadline, reaps the child whatever happens, and turns the child's findings
into a ForkReport.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import pagemap
from .errors import (AccessError, ChildExitedError, ChildKilledError, ChildTimeoutError,
                     CowmemError, UnsupportedPlatformError)
from .objects import object_spans
from .pagemap import FILE_OR_SHARED, PAGE_SHIFT, PAGE_SIZE, PFN_MASK, PRESENT

RegionSpec = Union[Any, Tuple[int, int]]


class ForkSafetyWarning(RuntimeWarning):
    """The parent runs other threads: the child inherits only the forking one."""


@dataclass(frozen=True)
class ForkReport:
    """What one access made the kernel do in a forked child.

    Every size is in bytes, a whole number of pages.  A page counts as
    *copied* when it was present and shared with the parent just before the
    access and exclusively the child's just after it (with ``pfn_guard``, also
    only if its frame changed, so that writes by the parent after the fork,
    which leave the child's frame in place, are not charged to the child).
    A page counts as *fresh* when the access populated it without a copy:
    new allocations, first writes to never-touched or zero-page memory.

    ``regions`` gives the copied bytes inside each named region, and
    ``unobserved`` the bytes of each region that were already the child's
    when the baseline was taken (the parent wrote them after the fork, or
    the fork's own bookkeeping did): the access may have written them too,
    unseen.  cowmem keeps this to a few pages at most; it is reported so
    that no reader has to take that on trust.
    """

    copied_bytes: int
    fresh_bytes: int
    regions: Mapping[str, int]
    mappings: Mapping[str, int]
    copied_ranges: Tuple[Tuple[int, int], ...]
    unobserved: Mapping[str, int]
    minor_faults: int
    uss_delta_bytes: Optional[int]
    private_dirty_delta_bytes: Optional[int]
    access_seconds: float
    pfn_guard: bool
    page_size: int = PAGE_SIZE
    explanation: Any = field(default=None, compare=False)

    @property
    def copied_pages(self) -> int:
        """Copied pages (``copied_bytes // page_size``)."""
        return self.copied_bytes // self.page_size

    @property
    def fresh_pages(self) -> int:
        """Fresh pages (``fresh_bytes // page_size``)."""
        return self.fresh_bytes // self.page_size

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of every field (ranges as ``[start, stop]`` lists)."""
        out = {
            "copied_bytes": self.copied_bytes,
            "copied_pages": self.copied_pages,
            "fresh_bytes": self.fresh_bytes,
            "fresh_pages": self.fresh_pages,
            "regions": dict(self.regions),
            "mappings": dict(self.mappings),
            "copied_ranges": [list(r) for r in self.copied_ranges],
            "unobserved": dict(self.unobserved),
            "minor_faults": self.minor_faults,
            "uss_delta_bytes": self.uss_delta_bytes,
            "private_dirty_delta_bytes": self.private_dirty_delta_bytes,
            "access_seconds": self.access_seconds,
            "pfn_guard": self.pfn_guard,
            "page_size": self.page_size,
        }
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


def measure_fork(access: Callable[[], Any], *,
                 regions: Optional[Mapping[str, RegionSpec]] = None,
                 timeout: float = 60.0,
                 cross_checks: bool = True,
                 explain: bool = False) -> ForkReport:
    """Fork, run ``access()`` once in the child, and report what it copied.

    ``access`` sees everything the parent built, as any forked child does;
    its return value is discarded.  ``regions`` maps a name to an object
    (located with :func:`cowmem.memory_ranges`) or to an address range
    ``(start, stop)`` in bytes (a tuple of exactly two ints is always taken
    as a range); the report gives the copied bytes inside each.
    ``cross_checks`` also reads ``smaps_rollup`` before and after (the USS
    and Private_Dirty deltas): two more page-table walks, about as long as
    the two snapshots; without them those fields are None.  With
    ``explain=True`` the parent also serves the child's write-protect faults
    and names the write that caused each copied page (needs userfaultfd).

    Raises UnsupportedPlatformError, AccessError, ChildKilledError,
    ChildExitedError or ChildTimeoutError; the child is reaped in every case.
    """
    if not callable(access):
        raise TypeError(f"access must be callable with no arguments, not {type(access).__name__}")
    if timeout is None or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    pagemap.check_pagemap()
    region_pages = {name: _region_pages(spec) for name, spec in (regions or {}).items()}
    tracer = None
    if explain:
        from .explain import FaultTracer
        tracer = FaultTracer({name: spec for name, spec in (regions or {}).items()
                              if not _is_range(spec)})
        tracer.before_fork()
    _warn_if_threaded()
    zero_frame = _zero_frame()
    targets, snaps = _prepare_snapshots()
    counters = _ProcCounters()
    own = snaps.buffer_ranges() + counters.buffer_ranges()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child_main(access, write_fd, snaps, counters, targets, own, zero_frame, tracer, cross_checks)
        os.close(write_fd)
        try:
            if tracer is not None:
                tracer.start_serving(pid)
            payload, status = _collect(pid, read_fd, timeout)
        finally:
            os.close(read_fd)
            explanation = tracer.stop() if tracer is not None else None
        found = _outcome(payload, status)
        report = _build_report(found, snaps, counters, targets, region_pages, zero_frame)
    finally:
        snaps.close()
        counters.close()
    if explanation is not None:
        copied = _copied_page_numbers(report)
        report = dataclasses.replace(report, explanation=explanation.restrict(copied))
    return report


def _prepare_snapshots() -> Tuple[list, pagemap.PagemapSnapshots]:
    """The parent's private writable mappings and snapshot buffers for them.

    Making the buffers allocates, which can add a mapping (a new allocator
    arena) after the maps were read: read again until they hold still, or a
    page present at the fork would later look fresh.
    """
    for _ in range(5):
        targets = [m for m in pagemap.read_maps() if m.private_writable]
        snaps = pagemap.PagemapSnapshots([(m.start, m.stop) for m in targets])
        now = pagemap.subtract_ranges(pagemap.private_writable_ranges(pagemap.read_maps()),
                                      snaps.buffer_ranges())
        if now == [(m.start, m.stop) for m in targets]:
            break
        snaps.close()
    return targets, snaps


# --- the parent's side -------------------------------------------------

def _is_range(spec: Any) -> bool:
    return (isinstance(spec, tuple) and len(spec) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in spec))


def _region_pages(spec: RegionSpec) -> np.ndarray:
    if _is_range(spec):
        start, stop = spec
        if not 0 <= start <= stop:
            raise ValueError(f"an address range must be (start, stop) with 0 <= start <= stop, not {spec}")
        return pagemap.page_span([(start, stop)])
    starts, stops = object_spans(spec)
    return _pages_of(starts, stops)


def _pages_of(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Sorted unique page numbers touched by byte ranges, vectorised."""
    keep = stops > starts
    first = starts[keep] >> np.uint64(PAGE_SHIFT)
    last = (stops[keep] - np.uint64(1)) >> np.uint64(PAGE_SHIFT)
    small = last - first <= 1  # most objects: one or two pages
    big = [np.arange(f, l + 1, dtype=np.uint64) for f, l in zip(first[~small], last[~small])]
    return np.unique(np.concatenate([first[small], last[small], *big]))


_zero_frame_cache: list = []


def _zero_frame() -> int:
    if not _zero_frame_cache:
        _zero_frame_cache.append(pagemap.zero_page_frame())
    return _zero_frame_cache[0]


def _warn_if_threaded() -> None:
    threads = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if threads:
        warnings.warn(
            f"forking while {len(threads)} other Python thread(s) run ({', '.join(threads)}): "
            "the child inherits only this thread, and any lock another thread held stays "
            "locked in the child; an access that needs one will hang until the timeout",
            ForkSafetyWarning, stacklevel=3)


def _collect(pid: int, read_fd: int, timeout: float) -> Tuple[bytes, int]:
    """Read the child's report until EOF, then reap it; kill it on a deadline.

    The child is reaped on every path out of here, Ctrl-C included.
    """
    deadline = time.monotonic() + timeout
    chunks = []
    status = None
    try:
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    except OSError:
        pidfd = None
    try:
        watch = [read_fd] + ([pidfd] if pidfd is not None else [])
        eof = False
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildTimeoutError(timeout)
            # Without a pidfd, poll the child now and then: a grandchild
            # holding the pipe open must not hide the child's exit.
            ready, _, _ = select.select(watch, [], [], left if pidfd is not None else min(left, 0.1))
            if read_fd in ready:
                chunk = os.read(read_fd, 1 << 20)
                eof = not chunk
                chunks.append(chunk)
            elif pidfd in ready or pidfd is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    chunks.append(_drain(read_fd))
                    break
        if status is None:
            remaining = max(deadline - time.monotonic(), 0.0)
            status = _wait(pid, remaining, timeout)
    except BaseException:
        if status is None:
            _kill_and_reap(pid)
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return b"".join(chunks), status


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    parts = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            parts.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(parts)


def _wait(pid: int, remaining: float, timeout: float) -> int:
    """waitpid with a deadline (the child closed its pipe: it is exiting)."""
    end = time.monotonic() + remaining
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= end:
            raise ChildTimeoutError(timeout)
        time.sleep(0.001)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _outcome(payload: bytes, status: int) -> Dict[str, Any]:
    if os.WIFSIGNALED(status):
        raise ChildKilledError(os.WTERMSIG(status))
    if not payload:
        raise ChildExitedError(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
                               else os.WEXITSTATUS(status))
    try:
        kind, value = pickle.loads(payload)
    except Exception as exc:
        raise CowmemError(f"the child's report could not be read ({exc})") from None
    if kind == "ok":
        return value
    if kind == "access":
        raise AccessError(*value)
    if kind == "platform":
        raise UnsupportedPlatformError(value)
    raise CowmemError(f"cowmem failed inside the child:\n{value}")


def _build_report(found: Dict[str, Any], snaps: pagemap.PagemapSnapshots, counters: "_ProcCounters",
                  targets: list, region_pages: Mapping[str, np.ndarray], zero_frame: int) -> ForkReport:
    diff = _compare(*snaps.entries, zero_frame)
    copied = snaps.page_numbers(diff.copied)
    blind = snaps.page_numbers(diff.blind)
    starts = np.array([m.start >> PAGE_SHIFT for m in targets], np.uint64)
    which = np.searchsorted(starts, copied, side="right") - 1
    by_label: Dict[str, int] = {}
    for index, count in zip(*np.unique(which, return_counts=True)):
        label = targets[index].label
        by_label[label] = by_label.get(label, 0) + int(count) * PAGE_SIZE
    minflt_before, uss_before, dirty_before = counters.parse(0)
    minflt_after, uss_after, dirty_after = counters.parse(1)
    return ForkReport(
        copied_bytes=int(copied.size) * PAGE_SIZE,
        fresh_bytes=(diff.fresh + found["fresh_new"]) * PAGE_SIZE,
        regions=_per_region(region_pages, copied),
        mappings=types.MappingProxyType(dict(sorted(by_label.items(), key=lambda kv: -kv[1]))),
        copied_ranges=_runs(copied),
        unobserved=_per_region(region_pages, blind),
        minor_faults=minflt_after - minflt_before,
        uss_delta_bytes=None if uss_before is None else uss_after - uss_before,
        private_dirty_delta_bytes=None if dirty_before is None else dirty_after - dirty_before,
        access_seconds=found["access_seconds"],
        pfn_guard=diff.pfn_guard,
    )


def _per_region(region_pages: Mapping[str, np.ndarray], pages: np.ndarray) -> Mapping[str, int]:
    return types.MappingProxyType(
        {name: int(np.count_nonzero(np.isin(own, pages, assume_unique=True))) * PAGE_SIZE
         for name, own in region_pages.items()})


def _runs(pages: np.ndarray) -> Tuple[Tuple[int, int], ...]:
    """Merge sorted page numbers into byte ranges ``(start, stop)``."""
    if pages.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(pages) != 1)
    firsts = np.concatenate(([pages[0]], pages[breaks + 1]))
    lasts = np.concatenate((pages[breaks], [pages[-1]]))
    return tuple((int(f) << PAGE_SHIFT, (int(l) + 1) << PAGE_SHIFT) for f, l in zip(firsts, lasts))


def _copied_page_numbers(report: ForkReport) -> np.ndarray:
    parts = [np.arange(start >> PAGE_SHIFT, stop >> PAGE_SHIFT, dtype=np.uint64)
             for start, stop in report.copied_ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


# --- the child's side --------------------------------------------------

class _ProcCounters:
    """Raw copies of ``/proc/self/stat`` and ``smaps_rollup``, before and after.

    The child only copies the bytes (into shared memory, allocating
    nothing); the parent parses them.
    """

    _SIZE = 1 << 14

    def __init__(self) -> None:
        self._buffer = pagemap.shared_buffer(4 * self._SIZE)
        view = memoryview(self._buffer)
        self._views = [[view[k * self._SIZE:(k + 1) * self._SIZE]] for k in range(4)]
        self._lengths_buffer = pagemap.shared_buffer(mmap.PAGESIZE)
        self._lengths = np.frombuffer(self._lengths_buffer, np.int64)
        self._fds: Tuple[int, int] = (-1, -1)

    def buffer_ranges(self) -> list:
        return [pagemap.buffer_range(self._buffer), pagemap.buffer_range(self._lengths_buffer)]

    def attach(self, cross_checks: bool) -> None:
        self._fds = (os.open("/proc/self/stat", os.O_RDONLY),
                     os.open("/proc/self/smaps_rollup" if cross_checks else "/dev/null", os.O_RDONLY))
        pagemap.populate(self._buffer, self._lengths_buffer)

    def read(self, which: int) -> None:
        lengths = self._lengths
        lengths[2 * which] = os.preadv(self._fds[0], self._views[2 * which], 0)
        lengths[2 * which + 1] = os.preadv(self._fds[1], self._views[2 * which + 1], 0)

    def parse(self, which: int) -> Tuple[int, Optional[int], Optional[int]]:
        """(minor faults, USS bytes, Private_Dirty bytes) of reading ``which``;
        None for the last two without cross-checks.

        USS is psutil's: Private_Clean + Private_Dirty + Private_Hugetlb.
        """
        stat = bytes(self._views[2 * which][0][:self._lengths[2 * which]])
        # Fields after the command name, which may contain spaces: minflt is field 10.
        minflt = int(stat[stat.rindex(b")") + 2:].split()[7])
        fields = {}
        rollup = bytes(self._views[2 * which + 1][0][:self._lengths[2 * which + 1]]).decode()
        for line in rollup.splitlines():
            name, _, rest = line.partition(":")
            if name.startswith("Private_"):
                fields[name] = int(rest.split()[0]) * 1024
        if not fields:
            return minflt, None, None
        uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0) + fields.get("Private_Hugetlb", 0)
        return minflt, uss, fields.get("Private_Dirty", 0)

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._views, self._lengths = [], None
        pagemap.release(self._buffer, self._lengths_buffer)


def _child_main(access: Callable[[], Any], write_fd: int, snaps: pagemap.PagemapSnapshots,
                counters: _ProcCounters, targets: list, own: list, zero_frame: int, tracer: Any,
                cross_checks: bool) -> None:
    status = 70
    try:
        try:
            result: Tuple[str, Any] = ("ok", _measure_in_child(access, snaps, counters, targets, own,
                                                               zero_frame, tracer, cross_checks))
        except _AccessFailed as failed:
            result = ("access", failed.args)
        except BaseException:
            result = ("internal", traceback.format_exc())
        data = memoryview(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(write_fd, data):]
        status = 0
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(status)


class _AccessFailed(Exception):
    """The access raised: (type name, message, traceback text)."""


def _measure_in_child(access: Callable[[], Any], snaps: pagemap.PagemapSnapshots, counters: _ProcCounters,
                      targets: list, own: list, zero_frame: int, tracer: Any,
                      cross_checks: bool) -> Dict[str, Any]:
    # Everything between the fork and the baseline may copy a page the
    # access would have copied: only reads into memory prepared by the parent.
    if tracer is not None:
        # userfaultfd registers anonymous memory only, not a file's data segment.
        tracer.arm_child(pagemap.subtract_ranges(
            [(m.start, m.stop) for m in targets if m.label.startswith("[")], own))
    snaps.attach()
    counters.attach(cross_checks)
    snaps.warm_up()
    # The counters read smaps_rollup, a page-table walk as long as a
    # snapshot: outside the snapshots, so that the pages they touch are not
    # counted.  No fault happens in between: the buffers are populated.
    counters.read(0)
    snaps.take(0)
    t0 = time.perf_counter()
    try:
        access()
    except BaseException as exc:
        raise _AccessFailed(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc),
                            traceback.format_exc()) from None
    t1 = time.perf_counter()
    snaps.take(1)
    counters.read(1)
    return {"access_seconds": t1 - t0,
            "fresh_new": _fresh_in_new_mappings([(m.start, m.stop) for m in targets] + own, zero_frame)}


# The flag bits of a pagemap entry (63 present, 62 swapped, 61 file or
# shared, 56 exclusive) all live in its top byte.
_PRESENT, _SWAPPED, _FILE, _EXCLUSIVE = 0x80, 0x40, 0x20, 0x01


def _flags(entries: np.ndarray) -> np.ndarray:
    """The top byte of every entry, as a contiguous uint8 array."""
    top = 7 if sys.byteorder == "little" else 0
    return np.ascontiguousarray(entries.view(np.uint8)[top::8])


class _Diff(NamedTuple):
    copied: np.ndarray   # positions of the copied pages in the snapshots
    fresh: int           # pages populated without a copy
    blind: np.ndarray    # positions of pages already the child's at the baseline
    pfn_guard: bool


def _compare(before: np.ndarray, after: np.ndarray, zero_frame: int) -> _Diff:
    """What happened to each page between two snapshots of the same pages.

    Copied: present, anonymous and shared before; exclusive after; and,
    where PFNs are readable, a new frame and not the zero page before.
    Fresh: exclusive after and not present (or the zero page) before.
    Blind: exclusive already before (the parent, or the fork's own
    bookkeeping, wrote it first): a write by the access cannot be seen.
    """
    fb, fa = _flags(before), _flags(after)
    kind = _PRESENT | _FILE | _EXCLUSIVE
    mine_after = (fa & kind) == (_PRESENT | _EXCLUSIVE)
    mine = np.flatnonzero(mine_after)
    if mine.size == 0:
        # The child has written pages of its own by now (its stack, at the
        # least): a kernel that shows none as exclusive does not report bit 56.
        raise UnsupportedPlatformError(
            "this kernel does not report the exclusively-mapped bit (56) in pagemap "
            "(Linux 4.2+ does): copied pages cannot be told from shared ones")
    # Without CAP_SYS_ADMIN every frame number reads as 0.
    pfn_guard = bool(np.any(after[mine[:64]] & PFN_MASK))
    candidates = np.flatnonzero(mine_after & ((fb & kind) == _PRESENT))
    fresh = int(np.count_nonzero(mine_after & ((fb & (_PRESENT | _FILE)) != _PRESENT) & ((fb & _SWAPPED) == 0)))
    if pfn_guard:
        pfn_b = before[candidates] & PFN_MASK
        was_zero = pfn_b == np.uint64(zero_frame) if zero_frame else np.zeros(pfn_b.shape, bool)
        fresh += int(np.count_nonzero(was_zero))
        candidates = candidates[~was_zero & (pfn_b != (after[candidates] & PFN_MASK))]
    blind = np.flatnonzero((fb & kind) == (_PRESENT | _EXCLUSIVE))
    return _Diff(candidates, fresh, blind, pfn_guard)


def _fresh_in_new_mappings(known: list, zero_frame: int) -> int:
    """Present anonymous pages, not the zero page, in private writable memory mapped since the fork."""
    new = pagemap.subtract_ranges(pagemap.private_writable_ranges(pagemap.read_maps()), known)
    if not new:
        return 0
    entries = pagemap.read_entries(new)
    populated = entries[(entries & (PRESENT | FILE_OR_SHARED)) == PRESENT]
    return int(np.count_nonzero((populated & PFN_MASK) != np.uint64(zero_frame))) if zero_frame \
        else int(populated.size)
