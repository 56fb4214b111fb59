"""The question's experiment: N multiprocessing workers touch the parent's data.

``run_workers`` starts N ``multiprocessing`` workers with one start method,
concurrently, and each runs one access on the parent's data.  What a worker
costs depends on how the data reaches it:

* ``fork``: the worker shares the parent's pages copy-on-write, so what it
  costs is what the access makes the kernel copy.  The worker counts those
  pages itself, page-exactly, with ``measure_fork``'s own child-side code.
* ``spawn`` and ``forkserver``: the data is pickled to the worker and rebuilt
  there, so the worker holds its own full copy.  Its cost is its private
  memory (USS) minus that of a baseline worker that ran the same code
  without the data, so that interpreter start-up is not charged to the data.
* ``default``: whatever the running interpreter uses
  (``multiprocessing.get_start_method()``): ``fork`` on Linux up to CPython
  3.13, ``forkserver`` from 3.14.

Each worker also takes the question's own reading, the system's free memory
(``MemFree + Buffers + Cached``), right after its access, so that the two
methods can be shown side by side.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import children
from ._linux.probe import pagemap_facts
from .errors import (AccessError, ChildExitedError, ChildKilledError, ChildTimeoutError, InvalidArgumentError,
                     UnknownNameError)
from .fork import LONGEST_WAIT, check_timeout
from .meter import ForkMeter, located

START_METHODS = ("fork", "forkserver", "spawn", "default")


@dataclass(frozen=True)
class WorkerResult:
    """What one worker cost; every size in bytes.

    ``cost_bytes`` is the headline: ``copied_bytes`` for ``fork``,
    ``private_bytes`` for ``spawn`` and ``forkserver``.  A failed worker has
    ``ok`` False, its ``error`` in one line, and None in every measurement.
    """

    index: int
    ok: bool
    error: Optional[str] = None
    traceback: Optional[str] = None
    copied_bytes: Optional[int] = None       # fork: pages the access made the kernel copy, x page size
    regions: Optional[Dict[str, int]] = None  # fork: region name -> the part of copied_bytes inside it
    unobserved: Optional[Dict[str, int]] = None  # fork: region name -> bytes the worker may have written unseen
    fresh_bytes: Optional[int] = None        # fork: pages newly populated during the access
    uss_bytes: Optional[int] = None          # the worker's unique set size after the access
    private_bytes: Optional[int] = None      # spawn/forkserver: uss_bytes minus the baseline worker's
    access_seconds: Optional[float] = None
    free_memory_after: Optional[int] = None  # the question's reading, taken in the worker after the access

    @property
    def cost_bytes(self) -> Optional[int]:
        """Bytes this worker duplicated because of the data: copied (fork) or private (others)."""
        return self.copied_bytes if self.copied_bytes is not None else self.private_bytes


@dataclass(frozen=True)
class WorkersReport:
    """The outcome of one ``run_workers`` call.

    ``start_method`` is the method actually used (``default`` resolved).
    ``baseline`` is the data-less worker of ``spawn``/``forkserver`` (None
    for ``fork``).  ``free_memory_before`` is the question's reading in the
    parent just before the workers started, in bytes.
    """

    requested: str
    start_method: str
    workers: Tuple[WorkerResult, ...]
    baseline: Optional[WorkerResult]
    free_memory_before: int

    @property
    def ok(self) -> bool:
        """True when every worker (and the baseline, if any) succeeded."""
        return all(w.ok for w in self.workers) and (self.baseline is None or self.baseline.ok)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict; each worker also carries ``cost_bytes``."""
        def one(w: Optional[WorkerResult]) -> Optional[Dict[str, Any]]:
            return None if w is None else {**asdict(w), "cost_bytes": w.cost_bytes}
        return {"requested": self.requested, "start_method": self.start_method,
                "workers": [one(w) for w in self.workers], "baseline": one(self.baseline),
                "free_memory_before": self.free_memory_before}


def question_free_memory() -> int:
    """The question's reading: ``MemFree + Buffers + Cached`` from /proc/meminfo, in bytes.

    System-wide and lagging by up to a second: kept only to be shown beside
    cowmem's numbers, never to measure with.
    """
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            field, amount = line.split()[:2]
            if field in ("MemFree:", "Buffers:", "Cached:"):
                total += int(amount) * 1024  # the kernel writes kB, meaning KiB
    return total


def resolve_start_method(name: str) -> str:
    """The start method ``name`` stands for; ``default`` is the interpreter's.

    Raises UnknownNameError, listing the methods this platform offers, for a
    name that is unknown or unavailable here.
    """
    available = multiprocessing.get_all_start_methods()
    if name == "default":
        return multiprocessing.get_start_method(allow_none=False)
    if name not in available:
        known = "unknown" if name not in START_METHODS else "not available on this platform"
        raise UnknownNameError(f"start method {name!r} is {known}; "
                               f"choose from: {', '.join(available + ['default'])}")
    return name


def run_workers(access: Callable[[Any], Any], data: Any, *, workers: int = 4,
                start_method: str = "fork", regions: Optional[Mapping[str, Any]] = None,
                timeout: float = 600.0) -> WorkersReport:
    """Start ``workers`` processes at once; each runs ``access(data)``; report each one's cost.

    ``regions`` (fork only, as for ``measure_fork``): name -> object or
    ``(start, stop)`` address range; each worker reports the copied bytes
    inside each.  Locating a big container's elements takes a while, so
    name only the regions you need.  For ``spawn``/``forkserver``,
    ``access`` and ``data`` reach the worker by pickling, as any
    multiprocessing argument does, so both must be picklable.  ``timeout``
    (seconds, ``float("inf")`` for none) bounds the whole run; a worker that
    overruns it is killed and reported failed.  Every worker leads its own
    process group; on return, Ctrl-C included, no worker is left, nor
    anything a worker started.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers must be a whole number, at least 1, not {workers!r}")
    timeout = check_timeout(timeout)
    method = resolve_start_method(start_method)
    ctx = multiprocessing.get_context(method)
    if method == "fork":
        pagemap_facts()
        regions = located(regions)
    else:
        _start_helpers(method)
    jobs: List[Tuple[int, Any, bool]] = [(i, data, True) for i in range(workers)]
    if method != "fork":
        jobs.append((-1, None, False))  # the baseline: same code, same imports, no data, no access
    free_before = question_free_memory()
    started: List[_Started] = []
    readers: List[multiprocessing.connection.Connection] = []
    meters: List[ForkMeter] = []
    # While workers run, a signal's handler runs only between two starts or
    # while waiting for them (children.py): never half-way through one.
    with children.held_back() as handlers:
        try:
            for index, payload, with_data in jobs:
                reader, writer = ctx.Pipe(duplex=False)
                readers.append(reader)
                measure = None
                if method == "fork":
                    # Each worker its own buffers, made last before it starts,
                    # to cover the parent's mappings as the worker inherits
                    # them.  No cross-checks: USS deltas nobody reads here.
                    measure = ForkMeter(regions, cross_checks=False)
                    meters.append(measure)
                try:
                    # A forked worker inherits the held-back handlers and puts
                    # the program's back; spawn and forkserver start afresh.
                    proc = ctx.Process(target=_worker, name=f"cowmem-worker-{index}", daemon=True,
                                       args=(writer, access, payload, with_data, measure,
                                             handlers if method == "fork" else {}))
                    proc.start()
                    started.append(_Started(proc))
                finally:
                    writer.close()  # only the worker writes: its exit then shows here as EOF
                children.waiting(len, ())  # a Ctrl-C meanwhile surfaces here, between two starts
            results = _collect([s.proc for s in started], readers, [index for index, _, _ in jobs], timeout)
        finally:
            _stop(started)
            for reader in readers:
                reader.close()
            for meter in meters:
                meter.close()
    measured = results[:workers]
    baseline = results[workers] if method != "fork" else None
    if baseline is not None:
        measured = [_with_private(w, baseline) for w in measured]
    return WorkersReport(start_method, method, tuple(measured), baseline, free_before)


def _start_helpers(method: str) -> None:
    """Start multiprocessing's long-lived helpers now, outside any held-back signals.

    spawn and forkserver start a resource tracker (and forkserver its
    server) on first use; started inside ``children.held_back()`` they
    would keep its handlers for good.
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    if method == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class _Started:
    """A started worker: its process, and a pidfd that tells, safely, whether it still runs."""

    def __init__(self, proc: multiprocessing.process.BaseProcess) -> None:
        self.proc = proc
        # Opened right after start, while the worker is alive or unreaped.
        self.pidfd = children.open_pidfd(proc.pid)
        children.lead_own_group(proc.pid)

    def kill(self) -> None:
        """SIGKILL the worker and its process group, unless it has ended already.

        An ended worker may have been reaped (multiprocessing polls its
        children whenever it starts one), and its pid and group id may
        belong to someone else by now.  A worker that ends by itself kills
        its own group (``_worker``).
        """
        if self.pidfd is None:
            if self.proc.is_alive():
                children.kill_group(self.proc.pid)
        elif not children.has_exited(self.pidfd):
            children.kill_group(self.proc.pid)

    def close(self) -> None:
        self.proc.join()
        self.proc.close()
        if self.pidfd is not None:
            os.close(self.pidfd)


def _worker(conn: multiprocessing.connection.Connection, access: Callable[[Any], Any], data: Any,
            with_data: bool, measure: Optional[ForkMeter], handlers: children.Handlers) -> None:
    """The body of every worker; sends ("ok", fields) or ("error", line, traceback).

    It leads its own process group, and its last act kills that group:
    whatever the access left running goes with it.
    """
    children.become_child(handlers)
    import psutil

    try:
        fields: Dict[str, Any] = {}
        if with_data and measure is not None:
            fields.update(_copies(measure, lambda: access(data)))
        elif with_data:
            start = time.perf_counter()
            access(data)
            fields["access_seconds"] = time.perf_counter() - start
        fields["free_memory_after"] = question_free_memory()
        # A psutil.Process() made in the parent would report the parent.
        fields["uss_bytes"] = psutil.Process().memory_full_info().uss
        conn.send(("ok", fields))
    except AccessError as exc:
        conn.send(("error", f"the access raised {exc.exc_type}: {exc.child_message}", exc.child_traceback))
    except BaseException as exc:  # the parent must hear of every failure, whatever it is
        conn.send(("error", f"{type(exc).__qualname__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        if children.leads_own_group():
            os.killpg(0, signal.SIGKILL)


def _copies(meter: ForkMeter, access: Callable[[], Any]) -> Dict[str, Any]:
    """Measure ``access()`` in this worker; raises AccessError if it raises."""
    meter.run(access)
    report = meter.report()
    return {"copied_bytes": report.copied_bytes, "regions": dict(report.regions),
            "unobserved": dict(report.unobserved), "fresh_bytes": report.fresh_bytes,
            "access_seconds": report.access_seconds}


def _collect(procs: Sequence[multiprocessing.process.BaseProcess],
             readers: Sequence[multiprocessing.connection.Connection],
             indices: Sequence[int], timeout: float) -> List[WorkerResult]:
    """Wait for every worker's message until the deadline; one result per worker, in order."""
    deadline = time.monotonic() + timeout
    results: Dict[int, WorkerResult] = {}
    pending = {reader: pos for pos, reader in enumerate(readers)}
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready = children.waiting(partial(multiprocessing.connection.wait, list(pending)),
                                 min(remaining, LONGEST_WAIT))
        for reader in ready:
            pos = pending.pop(reader)
            try:
                message = reader.recv()
            except EOFError:  # it died before reporting: the exit status says how
                children.waiting(procs[pos].join, max(0.0, deadline - time.monotonic()))
                message = ("error", _exit_reason(procs[pos].exitcode), None)
            results[pos] = _result(indices[pos], message)
    for pos in pending.values():
        results[pos] = _result(indices[pos], ("error", str(ChildTimeoutError(timeout)), None))
    return [results[pos] for pos in range(len(readers))]


def _exit_reason(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "the worker closed its pipe without reporting and did not exit"
    if exitcode < 0:
        return str(ChildKilledError(-exitcode))
    return str(ChildExitedError(exitcode))


def _result(index: int, message: tuple) -> WorkerResult:
    if message[0] == "ok":
        return WorkerResult(index=index, ok=True, **message[1])
    return WorkerResult(index=index, ok=False, error=message[1], traceback=message[2])


def _with_private(worker: WorkerResult, baseline: WorkerResult) -> WorkerResult:
    if not (worker.ok and baseline.ok):
        return worker
    return dataclasses.replace(worker, private_bytes=worker.uss_bytes - baseline.uss_bytes)


def _stop(started: Sequence[_Started]) -> None:
    """Leave no worker running, nor anything a worker started: kill every group, reap every worker."""
    for worker in started:
        worker.kill()
    for worker in started:
        worker.close()
