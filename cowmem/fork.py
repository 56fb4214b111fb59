"""Fork a child, run one access in it, and report what the access copied.

The measuring itself is a ForkMeter's (see meter.py); this module forks,
waits with a deadline, reaps the child whatever happens, and turns each
way a child can fail into its own exception.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Mapping, Optional, Tuple, Union

from .errors import (ChildExitedError, ChildKilledError, ChildTimeoutError,
                     CowmemError)
from .meter import ForkMeter, ForkReport, RegionSpec, Regions, copied_page_numbers


class ForkSafetyWarning(RuntimeWarning):
    """The parent runs other threads: the child inherits only the forking one."""


def measure_fork(access: Callable[[], Any], *,
                 regions: Union[Mapping[str, RegionSpec], Regions, None] = None,
                 timeout: float = 60.0,
                 cross_checks: bool = True,
                 explain: bool = False,
                 prepare: Optional[Callable[[], Any]] = None,
                 finish: Optional[Callable[[], Any]] = None) -> ForkReport:
    """Fork, run ``access()`` once in the child, and report what it copied.

    ``access`` sees everything the parent built, as any forked child does;
    its return value is discarded.  ``regions`` maps a name to an object
    (located with :func:`cowmem.memory_ranges`) or to an address range
    ``(start, stop)`` in bytes (a tuple of exactly two ints is always taken
    as a range), or is a :class:`Regions` located earlier, to measure the
    same data repeatedly; the report gives the copied bytes inside each.
    ``cross_checks`` also reads ``smaps_rollup`` before and after (the USS
    and Private_Dirty deltas): two more page-table walks, about as long as
    the two snapshots; without them those fields are None.  With
    ``explain=True`` the parent also serves the child's write-protect faults
    and names the write that caused each copied page (needs userfaultfd).
    ``prepare`` and ``finish``, if given, run in the child before the
    baseline snapshot and after the last one (also when the access raised):
    what they write is not counted (see :meth:`ForkMeter.run`).  They are
    for the caller's own set-up of the child and for sending results back
    through channels of the caller's.

    Raises UnsupportedPlatformError, AccessError, ChildKilledError,
    ChildExitedError or ChildTimeoutError; the child is reaped in every case.
    """
    for name, step in (("access", access), ("prepare", prepare or access), ("finish", finish or access)):
        if not callable(step):
            raise TypeError(f"{name} must be callable with no arguments, not {type(step).__name__}")
    if timeout is None or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    tracer = None
    if explain:
        from .explain import FaultTracer
        if not isinstance(regions, Regions):
            regions = Regions(regions)  # locate once, for the meter and the tracer
        tracer = FaultTracer(regions.objects, depth=regions.depth)   # checks userfaultfd first
    try:
        _warn_if_threaded()
        with ForkMeter(regions, cross_checks=cross_checks) as meter:
            if tracer is not None:
                tracer.before_fork(meter.anonymous_ranges())
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            payload, status = _fork_and_collect(meter, access, prepare, finish, tracer, timeout)
            # The child's own failure first: a handler that broke with it
            # must not hide it.
            _outcome(payload, status)
            report = meter.report()
            if tracer is not None:
                explanation = tracer.stop().restrict(copied_page_numbers(report))
                report = dataclasses.replace(report, explanation=explanation)
    finally:
        if tracer is not None:
            tracer.close()
    return report


def _fork_and_collect(meter: ForkMeter, access: Callable[[], Any], prepare: Optional[Callable[[], Any]],
                      finish: Optional[Callable[[], Any]], tracer: Any, timeout: float) -> Tuple[bytes, int]:
    """Fork, have the child measure, and return its message and wait status.

    From the fork on, any way out of here reaps the child.
    """
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        os.close(read_fd)
        _child_main(meter, access, prepare, finish, write_fd, tracer)  # never returns
    try:
        os.close(write_fd)
        if tracer is not None:
            tracer.start_serving(pid)
    except BaseException:
        os.close(read_fd)
        _kill_and_reap(pid)
        raise
    try:
        return _collect(pid, read_fd, timeout)  # reaps the child on every path
    finally:
        os.close(read_fd)


def _child_main(meter: ForkMeter, access: Callable[[], Any], prepare: Optional[Callable[[], Any]],
                finish: Optional[Callable[[], Any]], write_fd: int, tracer: Any) -> None:
    """The child: measure, send one pickled message on the pipe, and _exit."""
    status = 70
    try:
        try:
            if tracer is not None:
                tracer.arm_child()
            meter.run(access, prepare, finish)
            result: Tuple[str, Any] = ("ok", None)
        except CowmemError as failed:
            # AccessError, ExplainError...: each pickles as itself.
            result = ("error", failed)
        except BaseException as exc:
            result = ("internal", (f"{type(exc).__qualname__}: {exc}", traceback.format_exc()))
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


def _outcome(payload: bytes, status: int) -> None:
    if os.WIFSIGNALED(status):
        raise ChildKilledError(os.WTERMSIG(status))
    if not payload:
        raise ChildExitedError(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
                               else os.WEXITSTATUS(status))
    try:
        kind, value = pickle.loads(payload)
    except Exception as exc:
        raise CowmemError(f"the child's report could not be read ({exc})") from None
    if kind == "error":
        raise value
    if kind != "ok":
        line, child_traceback = value
        raise CowmemError(f"cowmem failed inside the child: {line}\n{child_traceback}")


