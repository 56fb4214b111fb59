"""What a forked child copies, seen from outside: its parent compares frame numbers.

The parent forks a child that pauses itself (SIGSTOP) at its baseline, runs
the access, and pauses again.  While the child is stopped the parent reads
``/proc/CHILD/pagemap`` and its own ``/proc/self/pagemap`` for the private
writable mappings it had just before the fork, into buffers it allocated
before the fork.  A page is *copied* when the child's frame at the baseline
was the parent's frame there (shared) and the child has another frame after
the access.  Frame numbers need CAP_SYS_ADMIN (root).

Page numbers are virtual addresses >> 12 (4 KiB pages).  Written from the
kernel's pagemap documentation (Documentation/admin-guide/mm/pagemap.rst);
it shares no code with cowmem.

What the parent does between the fork and the child's last pause writes
(and so copies, in the parent) a few pages of its own heap; a page the
parent copied is the child's alone, and the child's later write to it is
no copy.  The parent keeps this small (buffers and read plans are made
before the fork, its garbage collector is off, a child's maps are parsed
only when they differ from the parent's) and reports it:
``parent_written_pages``.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import select
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# pagemap entry bits (8 bytes per virtual page).
_PRESENT = 1 << 63
_SWAPPED = 1 << 62
_FILE_OR_SHARED = 1 << 61
_PFN_MASK = (1 << 55) - 1
# /proc/kpageflags bits (8 bytes per frame).
KPF_THP = 22
KPF_ZERO_PAGE = 24

_MAPS_BUFFER_BYTES = 4 << 20
_POLL_SECONDS = 0.002

Range = Tuple[int, int]  # [first page, stop page)


class OutsideError(RuntimeError):
    """The outside view could not be taken."""


class NotRootError(OutsideError):
    """Frame numbers read as 0: the reference needs CAP_SYS_ADMIN (root)."""


class ChildFailedError(OutsideError):
    """The child raised (in prepare, access or collect), exited or was killed."""


class ChildTimeoutError(OutsideError):
    """The child overran its timeout; it was killed and reaped."""


@dataclass(frozen=True)
class OutsideResult:
    """The pages one access changed in a forked child, by page number (address >> 12).

    - ``shared_pages``: the child's frame at the baseline was the parent's
      frame at the baseline (present, not the zero page).
    - ``copied_pages``: shared pages where, after the access, the child has
      another present frame.
    - ``fresh_pages``: not present, or the zero page, at the baseline;
      present (not the zero page) after.
    - ``child_exclusive_pages``: after the access, present anonymous pages
      whose frame is not the parent's at that address (copies, fresh pages,
      and pages the parent wrote away from after the fork).
    - ``parent_written_pages``: pages whose frame in the parent changed
      between the fork and the end (the parent copied them itself).
    - ``collected``: what ``collect()`` returned in the child.

    ``frames(page)`` gives the raw frame numbers of one page.
    """

    shared_pages: FrozenSet[int]
    copied_pages: FrozenSet[int]
    fresh_pages: FrozenSet[int]
    child_exclusive_pages: FrozenSet[int]
    parent_written_pages: FrozenSet[int]
    collected: Any
    _pages: np.ndarray
    _entries: Dict[str, np.ndarray]

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={len(getattr(self, name))}" for name in (
            "shared_pages", "copied_pages", "fresh_pages", "child_exclusive_pages",
            "parent_written_pages"))
        return f"OutsideResult({counts} pages, collected={self.collected!r})"

    def frames(self, page: int) -> Dict[str, Optional[int]]:
        """The frame of ``page`` at each moment, None when not present.

        Moments: ``parent_at_fork``, ``parent_baseline``, ``child_baseline``,
        ``child_after``, ``parent_after`` (the parent's are None on a
        mapping only the child has).
        """
        i = int(np.searchsorted(self._pages, page))
        if i >= len(self._pages) or self._pages[i] != page:
            raise KeyError(f"page {page:#x} is in no mapping read")
        return {moment: (int(entries[i]) & _PFN_MASK if int(entries[i]) & _PRESENT else None)
                for moment, entries in self._entries.items()}


def watch(access: Callable[[], Any], *, prepare: Optional[Callable[[], Any]] = None,
          collect: Optional[Callable[[], Any]] = None,
          during: Optional[Callable[[], Any]] = None,
          timeout: float = 60.0) -> OutsideResult:
    """Fork; in the child run ``prepare()``, pause, ``access()``, pause, ``collect()``.

    ``prepare`` is set-up (not measured).  ``collect`` runs after the second
    pause, outside the measured window; its return value is pickled back as
    ``OutsideResult.collected``: watching a child in which another meter
    runs is ``watch(lambda: meter.run(work), collect=meter.report)``.
    ``during`` runs in the parent while the child waits at its baseline
    (after the baseline reads), as a parent that keeps working would.
    ``timeout`` (seconds) bounds the child's whole life.

    Raises NotRootError, ChildFailedError (with the child's traceback) or
    ChildTimeoutError; the child is reaped on every path.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    check_frames_readable()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the parent would write every tracked object's header
    try:
        return _watch(access, prepare, collect, during, timeout, gc_was_enabled)
    finally:
        if gc_was_enabled:
            gc.enable()


def check_frames_readable() -> None:
    """Raise NotRootError unless /proc/self/pagemap shows frame numbers."""
    if os.sysconf("SC_PAGE_SIZE") != PAGE_SIZE:
        raise OutsideError(f"pages of {os.sysconf('SC_PAGE_SIZE')} bytes: the reference "
                           f"assumes {PAGE_SIZE}")
    probe = bytearray(b"x" * PAGE_SIZE)
    page = np.frombuffer(probe, np.uint8).ctypes.data >> PAGE_SHIFT
    try:
        pfn = self_frames([page])[page]
    except PermissionError as exc:
        raise NotRootError(f"/proc/self/pagemap: {exc.strerror}: the outside reference "
                           f"needs CAP_SYS_ADMIN (run the tests as root)") from None
    if pfn == 0:
        raise NotRootError("frame numbers in /proc/self/pagemap read as 0: the outside "
                           "reference needs CAP_SYS_ADMIN (run the tests as root)")


def self_frames(pages) -> Dict[int, Optional[int]]:
    """The frame number of each page of the calling process, None when not present."""
    out = {}
    with open("/proc/self/pagemap", "rb", buffering=0) as f:
        for page in pages:
            entry = int.from_bytes(os.pread(f.fileno(), 8, int(page) * 8), "little")
            out[int(page)] = entry & _PFN_MASK if entry & _PRESENT else None
    return out


def kpageflags(pfns) -> Dict[int, int]:
    """The /proc/kpageflags word of each frame number (``KPF_*`` bit positions)."""
    out = {}
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        for pfn in pfns:
            out[int(pfn)] = int.from_bytes(os.pread(fd, 8, int(pfn) * 8), "little")
    finally:
        os.close(fd)
    return out


# -- the parent's side -------------------------------------------------------

class _Plan:
    """Buffers and read lists for the parent's mappings, made before the fork.

    One shared anonymous mapping holds one array of pagemap entries per
    moment; shared, so it is never among the private mappings read.
    """

    MOMENTS = ("parent_at_fork", "parent_baseline", "child_baseline", "child_after", "parent_after")

    def __init__(self, ranges: List[Range]) -> None:
        self.ranges = ranges
        self.pages = sum(stop - start for start, stop in ranges)
        per_moment = max(self.pages, 1) * 8
        self.buffer = mmap.mmap(-1, per_moment * len(self.MOMENTS))
        self.maps_buffer = mmap.mmap(-1, _MAPS_BUFFER_BYTES)
        self.maps_view = memoryview(self.maps_buffer)
        self.view = view = memoryview(self.buffer)
        self.reads: Dict[str, List[Tuple[int, List[memoryview], int]]] = {}
        for m, moment in enumerate(self.MOMENTS):
            at, plan = m * per_moment, []
            for start, stop in ranges:
                size = (stop - start) * 8
                plan.append((start * 8, [view[at:at + size]], size))
                at += size
            self.reads[moment] = plan
        self.short_reads = 0

    def read(self, fd: int, moment: str) -> None:
        """Read one moment's entries; no allocation beyond the call's own."""
        for offset, buffers, size in self.reads[moment]:
            if os.preadv(fd, buffers, offset) != size:
                self.short_reads += 1

    def entries(self, moment: str) -> np.ndarray:
        m = self.MOMENTS.index(moment)
        return np.frombuffer(self.buffer, np.uint64, self.pages, m * self.pages * 8).copy()

    def close(self) -> None:
        # Released one by one: an interrupted read's frame may still hold a view.
        for plan in self.reads.values():
            for _, buffers, _ in plan:
                buffers[0].release()
        self.reads.clear()
        self.view.release()
        self.maps_view.release()
        self.buffer.close()
        self.maps_buffer.close()


def _watch(access, prepare, collect, during, timeout, gc_was_enabled) -> OutsideResult:
    fds: List[int] = []
    plan = None
    pid = 0
    try:
        fds.extend(os.pipe())
        fds.append(os.open("/proc/self/pagemap", os.O_RDONLY))
        read_fd, write_fd, self_fd = fds
        # Last before the fork: its maps text is the one the child inherits.
        plan, maps_at_fork = _stable_plan()
        with _InterruptHeld() as held:
            plan.read(self_fd, "parent_at_fork")
            pid = os.fork()
            if pid == 0:
                try:  # the child never returns into the caller's code
                    held.undo()
                    _child(access, prepare, collect, write_fd, gc_was_enabled)
                finally:
                    os._exit(4)
        # A Ctrl-C held since before the fork has been raised as the block ended, with pid set.
        fds.remove(write_fd)  # first: an interrupt in between leaks it, never closes it twice
        os.close(write_fd)
        return _observe(pid, plan, maps_at_fork, during, read_fd, self_fd,
                        time.monotonic() + timeout)
    finally:
        if pid:
            _kill_and_reap(pid)
        for fd in fds:
            os.close(fd)
        if plan is not None:
            plan.close()


class _InterruptHeld:
    """Within it a SIGINT is only recorded; leaving it, the program's handler runs for it.

    Blocking SIGINT with pthread_sigmask would not do: it blocks the calling
    thread only, and in a process with other threads (numpy's BLAS workers
    are some) the kernel hands a process-wide SIGINT to one of those.
    CPython's handler then runs in the main thread at its next bytecode:
    inside os.fork()'s at-fork hooks (logging has some), where the
    KeyboardInterrupt is reported as unraisable and lost, or between the
    fork and storing the child's pid, leaving the child unknown.  Python
    handlers run in the main thread only: elsewhere this does nothing.
    """

    def __enter__(self) -> "_InterruptHeld":
        self.previous, self.caught = None, False
        if threading.current_thread() is threading.main_thread() and \
                callable(signal.getsignal(signal.SIGINT)):
            self.previous = signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum, frame) -> None:
        self.caught = True

    def undo(self) -> None:
        """The program's handler back, without raising what was recorded (in the child)."""
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def __exit__(self, *exc) -> None:
        previous = self.previous
        self.undo()
        if previous is not None and self.caught:
            signal.raise_signal(signal.SIGINT)


def _observe(pid: int, plan: _Plan, maps_at_fork: bytes, during, read_fd: int, self_fd: int,
             deadline: float) -> OutsideResult:
    """The parent's reads around the child's access; the child is reaped on success."""
    view = plan.maps_view
    _wait_stopped(pid, read_fd, deadline, "before its baseline")
    child_fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        plan.read(child_fd, "child_baseline")
        plan.read(self_fd, "parent_baseline")
        extra_baseline: Dict[Range, np.ndarray] = {}
        n = _read_maps(pid, view)
        if view[:n] != maps_at_fork:
            # Mappings the child made before its baseline (prepare, fork hooks).
            for r in _subtract(_private_writable(bytes(view[:n])), plan.ranges):
                extra_baseline[r] = _read_entries(child_fd, r)
        if during is not None:
            during()
        os.kill(pid, signal.SIGCONT)
        _wait_stopped(pid, read_fd, deadline, "during the access")
        plan.read(child_fd, "child_after")
        plan.read(self_fd, "parent_after")
        # The window is over: from here on the parent may allocate freely.
        after_ranges = _private_writable(bytes(view[:_read_maps(pid, view)]))
        extra_after = {r: _read_entries(child_fd, r) for r in _subtract(after_ranges, plan.ranges)}
    finally:
        os.close(child_fd)
    os.kill(pid, signal.SIGCONT)
    payload = _drain(read_fd, deadline)
    collected = _outcome(payload, _wait_exit(pid, deadline))
    if plan.short_reads:
        raise OutsideError(f"{plan.short_reads} short pagemap reads")
    return _result(plan, extra_baseline, extra_after, collected)


def _stable_plan() -> Tuple[_Plan, bytes]:
    """The read plan for the parent's private writable mappings, and its maps text.

    Making the plan allocates; the maps are read again until the plan
    covers them.
    """
    for _ in range(5):
        ranges = _private_writable(_read_own_maps())
        plan = _Plan(ranges)
        maps = _read_own_maps()
        if _private_writable(maps) == ranges:
            return plan, maps
        plan.close()
    raise OutsideError("the parent's mappings kept changing while the reads were planned")


def _read_own_maps() -> bytes:
    with open("/proc/self/maps", "rb") as f:
        return f.read()


def _read_maps(pid: int, view: memoryview) -> int:
    """Read /proc/PID/maps into ``view``; the number of bytes."""
    fd = os.open(f"/proc/{pid}/maps", os.O_RDONLY)
    try:
        n = 0
        while True:
            got = os.readv(fd, [view[n:]])
            if not got:
                return n
            n += got
            if n == len(view):
                raise OutsideError(f"/proc/{pid}/maps is longer than {len(view)} bytes")
    finally:
        os.close(fd)


def _private_writable(maps: bytes) -> List[Range]:
    """The private writable mappings of a maps text, as page ranges."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split(None, 5)
        perms = fields[1]
        if perms[1:2] == b"w" and perms[3:4] == b"p":
            start, stop = fields[0].split(b"-")
            ranges.append((int(start, 16) >> PAGE_SHIFT, int(stop, 16) >> PAGE_SHIFT))
    return ranges


def _subtract(ranges: List[Range], minus: List[Range]) -> List[Range]:
    """The parts of ``ranges`` outside every range of ``minus`` (both sorted)."""
    out = []
    for start, stop in ranges:
        for m_start, m_stop in minus:
            if m_stop <= start or m_start >= stop:
                continue
            if m_start > start:
                out.append((start, m_start))
            start = max(start, m_stop)
            if start >= stop:
                break
        if start < stop:
            out.append((start, stop))
    return out


def _read_entries(fd: int, r: Range) -> np.ndarray:
    start, stop = r
    entries = np.zeros(stop - start, np.uint64)
    if os.preadv(fd, [memoryview(entries).cast("B")], start * 8) != entries.nbytes:
        raise OutsideError(f"short pagemap read at page {start:#x}")
    return entries


def _wait_stopped(pid: int, read_fd: int, deadline: float, when: str) -> None:
    """Wait for the child to stop; raise (the child reaped) if it ends instead."""
    while True:
        got, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if got == pid:
            if os.WIFSTOPPED(status):
                return
            payload = _drain(read_fd, deadline)
            try:
                _outcome(payload, status)
            except ChildFailedError as exc:
                raise ChildFailedError(f"{exc} ({when})") from None
            raise ChildFailedError(f"the child ended {when} without an error")
        if time.monotonic() > deadline:
            raise ChildTimeoutError(f"the child did not pause {when} within the timeout")
        time.sleep(_POLL_SECONDS)


def _wait_exit(pid: int, deadline: float) -> int:
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return status
        if time.monotonic() > deadline:
            raise ChildTimeoutError("the child did not exit within the timeout")
        time.sleep(_POLL_SECONDS)


def _drain(fd: int, deadline: float) -> bytes:
    """Everything the child wrote to the pipe, up to its end."""
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChildTimeoutError("the child did not send its outcome within the timeout")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _outcome(payload: bytes, status: int) -> Any:
    """The collected value, or raise the child's error."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        raise ChildFailedError(f"the child was killed by signal {number} "
                               f"({signal.Signals(number).name})")
    try:
        stage, value = pickle.loads(payload)
    except Exception:
        raise ChildFailedError(f"the child exited with status {os.WEXITSTATUS(status)} "
                               f"and no readable outcome") from None
    if stage != "ok":
        raise ChildFailedError(f"{stage} raised in the child:\n{value}")
    return value


def _kill_and_reap(pid: int) -> None:
    """SIGKILL the child unless it was reaped already, and reap it.

    A Ctrl-C (or a signal handler's SystemExit) arriving meanwhile is held
    until the child is reaped, then raised.
    """
    interrupted = None
    while True:
        try:
            try:
                got, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # reaped already
            if got != pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            break
        except (KeyboardInterrupt, SystemExit) as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _result(plan: _Plan, extra_baseline: Dict[Range, np.ndarray],
            extra_after: Dict[Range, np.ndarray], collected: Any) -> OutsideResult:
    """Classify every page read (see OutsideResult)."""
    # One row per page: the parent's mappings, then those only the child has
    # after the access (absent at its baseline unless it made them before).
    rows = [np.arange(a, b, dtype=np.uint64) for a, b in plan.ranges]
    child_baseline, child_after = [plan.entries("child_baseline")], [plan.entries("child_after")]
    for (start, stop), after in sorted(extra_after.items()):
        baseline = np.zeros_like(after)
        for (b_start, b_stop), entries in extra_baseline.items():
            lo, hi = max(start, b_start), min(stop, b_stop)
            if lo < hi:
                baseline[lo - start:hi - start] = entries[lo - b_start:hi - b_start]
        rows.append(np.arange(start, stop, dtype=np.uint64))
        child_baseline.append(baseline)
        child_after.append(after)
    pages = np.concatenate(rows) if rows else np.zeros(0, np.uint64)
    e = {"child_baseline": np.concatenate(child_baseline),
         "child_after": np.concatenate(child_after)}
    for moment in ("parent_at_fork", "parent_baseline", "parent_after"):
        e[moment] = np.zeros(len(pages), np.uint64)  # the parent has no child-only row
        e[moment][:plan.pages] = plan.entries(moment)
    if any((entries & _SWAPPED).any() for entries in e.values()):
        raise OutsideError("swapped-out pages: their frames cannot be compared")
    present = {m: (entries & _PRESENT) != 0 for m, entries in e.items()}
    pfn = {m: entries & _PFN_MASK for m, entries in e.items()}

    changed = (present["child_baseline"] != present["child_after"]) | \
        (pfn["child_baseline"] != pfn["child_after"])
    not_parents = present["child_after"] & (~present["parent_after"]
                                            | (pfn["parent_after"] != pfn["child_after"]))
    # The zero page is present in both and the same frame, but holds no data.
    candidates = np.union1d(pfn["child_baseline"][changed & present["child_baseline"]],
                            pfn["child_after"][(changed | not_parents) & present["child_after"]])
    zero = np.array([p for p, f in kpageflags(candidates).items() if f >> KPF_ZERO_PAGE & 1],
                    np.uint64)
    real_baseline = present["child_baseline"] & ~np.isin(pfn["child_baseline"], zero)
    real_after = present["child_after"] & ~np.isin(pfn["child_after"], zero)

    shared = real_baseline & present["parent_baseline"] & \
        (pfn["parent_baseline"] == pfn["child_baseline"])
    copied = shared & real_after & (pfn["child_after"] != pfn["child_baseline"])
    fresh = ~real_baseline & real_after
    exclusive = real_after & not_parents & ((e["child_after"] & _FILE_OR_SHARED) == 0)
    parent_written = present["parent_at_fork"] & present["parent_after"] & \
        (pfn["parent_at_fork"] != pfn["parent_after"])
    order = np.argsort(pages, kind="stable")
    return OutsideResult(
        shared_pages=_page_set(pages[shared]),
        copied_pages=_page_set(pages[copied]),
        fresh_pages=_page_set(pages[fresh]),
        child_exclusive_pages=_page_set(pages[exclusive]),
        parent_written_pages=_page_set(pages[parent_written]),
        collected=collected,
        _pages=pages[order],
        _entries={m: entries[order] for m, entries in e.items()},
    )


def _page_set(pages: np.ndarray) -> FrozenSet[int]:
    return frozenset(pages.tolist())


# -- the child's side --------------------------------------------------------

def _child(access, prepare, collect, write_fd: int, gc_was_enabled: bool) -> None:
    """Run in the child; never returns."""
    status, stage = 3, "prepare"
    try:
        if gc_was_enabled:
            gc.enable()
        if prepare is not None:
            prepare()
        os.kill(os.getpid(), signal.SIGSTOP)
        error = None
        try:
            access()
        except BaseException as exc:  # reported after the second pause
            error = exc
        os.kill(os.getpid(), signal.SIGSTOP)
        if error is not None:
            status, outcome = 1, ("access", _format(error))
        else:
            stage = "collect"
            status, outcome = 0, ("ok", collect() if collect is not None else None)
        _send(write_fd, pickle.dumps(outcome))
    except BaseException as exc:
        try:
            status = 2
            _send(write_fd, pickle.dumps((stage, _format(exc))))
        except BaseException:
            pass
    finally:
        os._exit(status)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
