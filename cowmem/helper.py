"""Run a function in a short-lived forked copy of this process; get back only arrays.

Walking an object graph writes the reference count of every object it
touches and allocates temporaries; done in the process being measured, it
would copy pages of its own and leave freed holes in the heap, where a
child's later allocations land on shared pages (the observer effect).  In
a forked helper those writes hit the helper's copy-on-write pages; the
parent only forks, reads the result from a pipe into arrays it allocates,
and reaps.  The helper ignores Ctrl-C: the parent, interrupted, kills it.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import struct
import traceback
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import children
from .errors import CowmemError, LocateError

Job = Callable[[], Tuple[Any, Sequence[np.ndarray]]]

_LENGTH = struct.Struct("=Q")


def run(job: Job) -> Tuple[Any, List[np.ndarray]]:
    """``job()``'s (picklable value, arrays), computed in a forked helper.

    Raises what the job raised if it was a CowmemError (each pickles as
    itself), else LocateError, also when the helper died or was killed.
    The helper is reaped on every path, Ctrl-C included: signals are held
    back (``children.held_back``) but while waiting for the helper's result.
    """
    with children.held_back() as handlers:
        read_fd, write_fd = os.pipe()
        pid = -1
        try:
            pid = os.fork()
            if pid == 0:
                _helper_main(job, read_fd, write_fd, handlers)   # never returns
            os.close(write_fd)
            write_fd = -1
            poller = select.poll()
            poller.register(read_fd, select.POLLIN)
            children.waiting(poller.poll, None)   # until the result comes, or the helper's end
            received = receive(read_fd)
            status = reap(pid)
            pid = -1
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if pid > 0:
                kill_and_reap(pid)
    return _result(received, status)


def _helper_main(job: Job, read_fd: int, write_fd: int, handlers: children.Handlers) -> None:
    status = 70
    try:
        os.close(read_fd)
        children.put_back(handlers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        gc.disable()   # a collection would walk (and copy) the whole heap for nothing
        try:
            value, arrays = job()
            send(write_fd, ("ok", value), arrays)
        except CowmemError as exc:
            send(write_fd, ("error", exc))
        except BaseException as exc:
            send(write_fd, ("internal", f"{type(exc).__qualname__}: {exc}", traceback.format_exc()))
        status = 0
    finally:
        os._exit(status)


def send(fd: int, message: Any, arrays: Sequence[np.ndarray] = ()) -> None:
    """Write ``message`` (picklable) and ``arrays`` to ``fd``, for :func:`receive`."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    head = pickle.dumps((message, [(a.dtype.str, a.shape) for a in arrays]))
    _write_all(fd, _LENGTH.pack(len(head)) + head)
    for a in arrays:
        if a.size:
            _write_all(fd, memoryview(a).cast("B"))


def receive(fd: int) -> Optional[Tuple[Any, List[np.ndarray]]]:
    """The message and arrays :func:`send` wrote, or None if the writer ended before all of it.

    The arrays are read straight into arrays allocated here: no copy, no
    temporary bytes.
    """
    length = bytearray(_LENGTH.size)
    if not _read_into(fd, memoryview(length)):
        return None
    head = bytearray(_LENGTH.unpack(length)[0])
    if not _read_into(fd, memoryview(head)):
        return None
    message, specs = pickle.loads(head)
    arrays = [np.empty(shape, dtype) for dtype, shape in specs]
    for a in arrays:
        if a.size and not _read_into(fd, memoryview(a).cast("B")):
            return None
    return message, arrays


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_into(fd: int, buffer: memoryview) -> bool:
    """Fill ``buffer`` from ``fd``; False at an early end of file."""
    done = 0
    while done < len(buffer):
        got = os.readv(fd, [buffer[done:]])
        if not got:
            return False
        done += got
    return True


def reap(pid: int) -> int:
    """waitpid ``pid`` to the end, retrying on EINTR; its wait status (0 if already reaped)."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


def kill_and_reap(pid: int) -> None:
    """SIGKILL ``pid`` (if it is still there) and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    reap(pid)


def ending(status: int) -> str:
    """How a process ended, from its wait status: "was killed by SIGSEGV", "exited with status 70"."""
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = f"signal {os.WTERMSIG(status)}"
        return f"was killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def _result(received: Optional[Tuple[Any, List[np.ndarray]]], status: int) -> Tuple[Any, List[np.ndarray]]:
    if received is None:
        raise LocateError(f"the helper process locating objects {ending(status)} before sending its result")
    message, arrays = received
    if message[0] == "error":
        raise message[1]
    if message[0] == "internal":
        raise LocateError(f"locating objects failed in the helper process: {message[1]}\n{message[2]}")
    return message[1], arrays
