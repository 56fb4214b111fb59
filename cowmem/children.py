"""Child processes that leave nothing behind, Ctrl-C included.

measure_fork, run_workers and the platform probe start children by three
rules:

* **Signals are held back while a child starts** (``deferred_signals``).
  A Python signal handler runs between any two bytecodes, including inside
  ``os.fork()``, whose at-fork hooks are Python code: a KeyboardInterrupt
  raised there is raised after the child exists but before its pid is
  known, and nothing could clean it up.  While held back, a signal is only
  recorded; it is raised again right after, where the child is known.
* **Every child leads its own process group** (``become_child`` in the
  child, ``lead_own_group`` in the parent: both, since either may run
  first), so that whatever the child forks in turn can be reached too.
* **Ending a child kills its whole group, then reaps it** (``end``).  An
  unreaped child keeps its pid, and so its group id, from being reused by
  an unrelated process, so the group killed is certainly its own.
"""

from __future__ import annotations

import contextlib
import _signal
import os
import select
import signal
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

Handlers = Dict[int, Any]

# The signal module's own functions wrap every value in an enum, at tens
# of microseconds a signal: its C module's do not.
_SIGNALS = sorted(int(s) for s in signal.valid_signals())

_held: List[int] = []
# The handlers replaced by the outermost deferred_signals() still open.
_replaced: List[Handlers] = []


def _hold(signum: int, frame: Any) -> None:
    _held.append(signum)


@contextlib.contextmanager
def deferred_signals() -> Iterator[Handlers]:
    """Hold back every signal that has a Python handler, then raise them again.

    Yields the handlers it replaced: a child forked inside the block must
    put them back with :func:`become_child`.  Only the main thread runs
    Python signal handlers, so in any other thread nothing can interrupt
    the block and this does nothing.  Nested blocks share the outermost one.
    """
    if _replaced or threading.current_thread() is not threading.main_thread():
        yield _replaced[0] if _replaced else {}
        return
    replaced: Handlers = {}
    _replaced.append(replaced)
    try:
        for signum in _SIGNALS:
            if callable(_signal.getsignal(signum)):
                # signal() runs the handlers of signals already pending
                # first: one may raise here, before anything changed.
                replaced[signum] = _signal.signal(signum, _hold)
        yield replaced
    finally:
        _put_back(replaced)
        _replaced.clear()
        held = list(dict.fromkeys(_held))
        _held.clear()
        for signum in held:
            signal.raise_signal(signum)  # its own handler runs now, and may raise


def _put_back(handlers: Handlers) -> None:
    for signum, handler in handlers.items():
        _signal.signal(signum, handler)


def become_child(handlers: Handlers) -> None:
    """In a child forked inside ``deferred_signals()``: its handlers back, its own process group."""
    _held.clear()
    _replaced.clear()
    _put_back(handlers)
    lead_own_group()


def lead_own_group(pid: int = 0) -> None:
    """Make ``pid`` (0: this process) the leader of a new process group.

    From the parent it fails once the child has exec'd or is gone; the
    child does it itself too, so either suffices.
    """
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass


def leads_own_group() -> bool:
    """True when this process leads its own process group."""
    return os.getpgrp() == os.getpid()


def open_pidfd(pid: int) -> Optional[int]:
    """A pidfd for ``pid`` (readable once it has exited), or None where Linux or Python has none."""
    pidfd_open: Optional[Callable[[int], int]] = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:
        return None


def has_exited(pidfd: int) -> bool:
    """True once the process behind ``pidfd`` has exited (reaped or not)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` and ``pid`` itself; gone or foreign is no error.

    Call it only while ``pid`` is alive or an unreaped child of this
    process: then its group id cannot belong to anyone else.
    """
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass  # no such group (the child has not made it yet), or gone


def end(pid: int) -> Optional[int]:
    """Kill the child ``pid`` with its whole process group, reap it, return its wait status.

    On a child that has exited already, only what it left running is
    killed, and the status is the child's own.  None when something else
    reaped it first (SIGCHLD ignored, or a handler that waits for every
    child).  Never interrupted: signals are held back until it returns.
    """
    with deferred_signals():
        kill_group(pid)
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return None
