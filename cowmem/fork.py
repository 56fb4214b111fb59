"""Fork a child, run one access in it, and report what the access copied.

The measuring itself is a ForkMeter's (see meter.py); this module forks,
waits with a deadline, ends the child and everything it started whatever
happens (see children.py), and turns each way a child can fail into its
own exception.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import pickle
import select
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

from . import children
from ._linux.buffers import shared_buffer
from ._linux.pagemap import PAGE_SIZE
from .errors import (ChildExitedError, ChildKilledError, ChildLostError, ChildTimeoutError,
                     CowmemError, DescriptorsClosedError, InvalidArgumentError)
from .meter import ForkMeter, ForkReport, RegionSpec, Regions, copied_page_numbers, located


class ForkSafetyWarning(RuntimeWarning):
    """The parent runs other threads: the child inherits only the forking one."""


# The child's exit status when it could not send its report.
_UNSENT = 70
# Set in the child's note when the pipe to the parent was closed or replaced.
_PIPE_GONE = 1
# The longest single wait, in seconds: any timeout, infinity included, is waited out in such steps.
LONGEST_WAIT = 3600.0


def check_timeout(timeout: Any) -> float:
    """``timeout`` as seconds: a positive real number, infinity for none; else InvalidArgumentError."""
    # float first: an abstract class's isinstance writes a dozen pages after every fork.
    if not (type(timeout) is float or isinstance(timeout, numbers.Real) and not isinstance(timeout, bool)) \
            or not timeout > 0:
        raise InvalidArgumentError(f"timeout must be a positive number of seconds "
                                   f"(float('inf') for none), not {timeout!r}")
    return float(timeout)


def measure_fork(access: Callable[[], Any], *,
                 regions: Union[Mapping[str, RegionSpec], Regions, None] = None,
                 timeout: float = 60.0,
                 cross_checks: bool = False,
                 explain: bool = False,
                 prepare: Optional[Callable[[], Any]] = None,
                 finish: Optional[Callable[[], Any]] = None) -> ForkReport:
    """Fork, run ``access()`` once in the child, and report what it copied.

    ``access`` sees everything the parent built, as any forked child does;
    its return value is discarded.  ``regions`` maps a name to an object
    (located with :func:`cowmem.memory_ranges`) or to an address range
    ``(start, stop)`` in bytes (a tuple of exactly two ints is always taken
    as a range; it counts the private writable memory mapped inside it when
    located), or is a :class:`Regions` located earlier, to measure the
    same data repeatedly; the report gives the copied bytes inside each.
    ``timeout`` is in seconds (``float("inf")``: none).  ``cross_checks``
    also reads ``smaps_rollup`` before and after (the USS and Private_Dirty
    deltas): two more page-table walks, about as long as the two
    snapshots; without them those fields are None.  With ``explain=True``
    the parent also serves the child's write-protect faults and names the
    write that caused each copied page (needs userfaultfd).  ``prepare``
    and ``finish``, if given, run in the child before the baseline snapshot
    and after the last one (also when the access raised): what they write
    is not counted (see :meth:`ForkMeter.run`).  They are for the caller's
    own set-up of the child and for sending results back through channels
    of the caller's.

    The child leads its own process group: whatever the access forks and
    leaves running is killed with it when the measurement ends.

    Raises InvalidArgumentError before forking, UnsupportedPlatformError,
    AccessError, ChildKilledError, ChildExitedError, ChildTimeoutError,
    DescriptorsClosedError or ChildLostError; the child is reaped in every
    case, Ctrl-C included.
    """
    for name, step in (("access", access), ("prepare", prepare or access), ("finish", finish or access)):
        if not callable(step):
            raise InvalidArgumentError(f"{name} must be callable with no arguments, not {type(step).__name__}")
    timeout = check_timeout(timeout)
    regions = located(regions)  # once, for the meter and the tracer
    tracer = None
    if explain:
        from .explain import FaultTracer
        tracer = FaultTracer(regions.objects, depth=regions.depth)   # checks userfaultfd first
    # From here on cowmem owns descriptors, buffers and then a child: a
    # signal's handler runs only while waiting for the child (children.py).
    with children.held_back() as handlers:
        try:
            _warn_if_threaded()
            note = shared_buffer(PAGE_SIZE, populate=False)
            try:
                with ForkMeter(regions, cross_checks=cross_checks) as meter:
                    if tracer is not None:
                        tracer.before_fork(meter.anonymous_ranges())
                    for stream in (sys.stdout, sys.stderr):
                        if stream is not None:
                            stream.flush()
                    payload, status = _fork_and_collect(meter, (access, prepare, finish), tracer, timeout,
                                                        note, handlers)
                    # The child's own failure first: a handler that broke with it
                    # must not hide it.
                    _outcome(payload, status, note[0])
                    report = meter.report()
                    if tracer is not None:
                        explanation = tracer.stop().restrict(copied_page_numbers(report))
                        report = dataclasses.replace(report, explanation=explanation)
            finally:
                note.close()
        finally:
            if tracer is not None:
                tracer.close()
    return report


Steps = Tuple[Callable[[], Any], Optional[Callable[[], Any]], Optional[Callable[[], Any]]]


def _fork_and_collect(meter: ForkMeter, steps: Steps, tracer: Any, timeout: float,
                      note: Any, handlers: children.Handlers) -> Tuple[bytes, Optional[int]]:
    """Fork, have the child measure, and return its message and wait status (None: reaped elsewhere).

    From the fork on, any way out of here ends the child and its process group.
    """
    read_fd, write_fd = os.pipe()
    try:
        pipe = os.fstat(write_fd)
        collector = _Collector(read_fd, timeout)
        pid = os.fork()
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        _child_main(meter, steps, read_fd, write_fd, (pipe.st_dev, pipe.st_ino),
                    tracer, handlers, note)  # never returns
    pidfd = None
    try:
        os.close(write_fd)
        children.lead_own_group(pid)
        pidfd = children.open_pidfd(pid)
        if tracer is not None:
            tracer.start_serving(pid)
        payload = collector.collect(pid, pidfd)
    except BaseException:
        children.end(pid)
        raise
    else:
        return payload, children.end(pid)
    finally:
        os.close(read_fd)
        if pidfd is not None:
            os.close(pidfd)


def _child_main(meter: ForkMeter, steps: Steps, read_fd: int, write_fd: int,
                pipe: Tuple[int, int], tracer: Any, handlers: children.Handlers, note: Any) -> None:
    """The child: measure, send one pickled message on the pipe, and _exit."""
    status = _UNSENT
    try:
        children.become_child(handlers)
        os.close(read_fd)
        try:
            if tracer is not None:
                tracer.arm_child()
            meter.run(*steps)
            message = _OK
        except CowmemError as failed:
            # AccessError, ExplainError...: each pickles as itself.
            message = _pickled(("error", failed))
        except BaseException as exc:
            message = _pickled(("internal", (f"{type(exc).__qualname__}: {exc}", traceback.format_exc())))
        if not _is_pipe(write_fd, pipe):
            note[0] = _PIPE_GONE   # the access closed it, or replaced it with a file of its own
        else:
            data = memoryview(message)
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


def _pickled(result: Tuple[str, Any]) -> bytes:
    try:
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        # Only an error can fail to pickle ("ok" and "internal" carry
        # strings): send what it said as strings instead.
        error = result[1]
        return pickle.dumps(("internal", (f"{type(error).__qualname__} could not be pickled to the parent "
                                          f"({type(exc).__name__}: {exc}); it said:", str(error))),
                            protocol=pickle.HIGHEST_PROTOCOL)


# Made here: the child of every measurement that went well sends it as it is.
_OK = _pickled(("ok", None))


def _is_pipe(fd: int, pipe: Tuple[int, int]) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == pipe


def _warn_if_threaded() -> None:
    if threading.active_count() == 1:  # the common case, without making a list
        return
    threads = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if threads:
        warnings.warn(
            f"forking while {len(threads)} other Python thread(s) run ({', '.join(threads)}): "
            "the child inherits only this thread, and any lock another thread held stays "
            "locked in the child; an access that needs one will hang until the timeout",
            ForkSafetyWarning, stacklevel=3)


class _Collector:
    """Reads the child's message until the child has exited; ChildTimeoutError at the deadline.

    Made before the fork, so that the parent allocates nothing between the
    fork and its first wait: while the child sets up and runs the access,
    every page the parent writes is copied, and the child then holds the
    original alone, as if it had been its own all along (never counted as
    copied).  The child is left unreaped, for ``children.end``.  Its exit
    shows on the pidfd; without one it is polled now and then.  EOF alone
    is not enough: a grandchild may hold the pipe open, or the child may
    still be exiting.
    """

    _POLL_MS = 50  # without a pidfd

    def __init__(self, read_fd: int, timeout: float) -> None:
        self.read_fd, self.timeout = read_fd, timeout
        self.deadline = time.monotonic() + timeout
        self.poller = select.poll()
        self.poller.register(read_fd, select.POLLIN)
        self.first_ms = math.ceil(min(timeout, LONGEST_WAIT) * 1000)
        self.chunks: List[bytes] = []

    def collect(self, pid: int, pidfd: Optional[int]) -> bytes:
        if pidfd is not None:
            self.poller.register(pidfd, select.POLLIN)
        wait_ms = self.first_ms if pidfd is not None else self._POLL_MS
        while True:
            events = children.waiting(self.poller.poll, wait_ms)
            ready = {fd for fd, _ in events}
            if self.read_fd in ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if chunk:
                    self.chunks.append(chunk)
                else:
                    self.poller.unregister(self.read_fd)
            if (pidfd in ready) if pidfd is not None else _exited(pid):
                self.chunks.append(_drain(self.read_fd))
                return b"".join(self.chunks)
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ChildTimeoutError(self.timeout)
            wait_ms = math.ceil(min(left, LONGEST_WAIT if pidfd is not None else self._POLL_MS / 1000) * 1000)


def _exited(pid: int) -> bool:
    """The child has ended (or was reaped by someone else); it is not reaped here."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _drain(fd: int) -> bytes:
    """What is left in the pipe of a child that has exited (a grandchild may still hold it open)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    parts = []
    while poller.poll(0):
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def _outcome(payload: bytes, status: Optional[int], note: int) -> None:
    if status is not None and os.WIFSIGNALED(status):
        raise ChildKilledError(os.WTERMSIG(status))
    if not payload:
        if note == _PIPE_GONE:
            raise DescriptorsClosedError(
                "the access closed or replaced file descriptors it did not open (os.closerange?), "
                "among them the pipe cowmem's child reports through: nothing was measured")
        if status is None:
            raise ChildLostError(
                "the child was reaped by someone else before it reported (SIGCHLD ignored, or a "
                "SIGCHLD handler that waits for every child): cowmem cannot tell how it ended")
        raise ChildExitedError(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
                               else os.WEXITSTATUS(status))
    try:
        kind, value = pickle.loads(payload)
    except Exception as exc:
        raise CowmemError(f"the child's report could not be read ({type(exc).__name__}: {exc})") from None
    if kind == "error":
        raise value
    if kind != "ok":
        line, child_traceback = value
        raise CowmemError(f"cowmem failed inside the child: {line}\n{child_traceback}")
