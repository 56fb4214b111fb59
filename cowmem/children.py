"""Child processes that leave nothing behind, Ctrl-C included.

measure_fork, run_workers, the locating helper and the platform probe
start children by three rules (the helper, which forks nothing, stays in
its parent's process group):

* **Signals wait for a safe moment** (``held_back``).  A Python signal
  handler runs between any two bytecodes: a KeyboardInterrupt raised inside
  ``os.fork()`` (whose at-fork hooks are Python code) comes after the child
  exists but before its pid is known, and one raised in the middle of a
  clean-up leaves the rest undone.  So while cowmem owns a child, every
  signal that has a Python handler is only recorded, except inside the
  waits (``waiting``), where nothing is half done; those recorded are
  raised again when the operation ends.
* **Every child leads its own process group** (``become_child`` in the
  child, ``lead_own_group`` in the parent: both, since either may run
  first), so that whatever the child forks in turn can be reached too.
* **Ending a child kills its whole group, then reaps it** (``end``).  An
  unreaped child keeps its pid, and so its group id, from being reused by
  an unrelated process, so the group killed is certainly its own.
"""

from __future__ import annotations

import _signal
import os
import select
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

Handlers = Dict[int, Any]

# The signal module's own functions wrap every value in an enum, at tens of
# microseconds a signal; its C module's do not.
_SIGNALS = sorted(int(s) for s in signal.valid_signals())


# The state of the outermost held_back() open in this process, made once,
# here: held_back and waiting run between a fork and the child's baseline,
# where every object made or written can be a page the measurement sees
# (docs/method.md, "Disturbing what is measured").
_handlers: Handlers = {}      # the program's own, replaced meanwhile
_pending: List[int] = []
_state = [False, False]       # [holding, interruptible]


def _hold(signum: int, frame: Any) -> None:
    if _state[1]:
        _handlers[signum](signum, frame)
    else:
        _pending.append(signum)


class held_back:
    """Record every signal that has a Python handler; run their handlers at the end.

    Inside, a signal's handler runs only within :func:`waiting`.
    ``with held_back() as handlers``: the program's handlers, which a child
    forked inside must put back with :func:`become_child`.  Only the main
    thread runs Python signal handlers, so in another thread nothing can
    interrupt cowmem and this does nothing.  Nested blocks share the
    outermost one.
    """

    def __enter__(self) -> Handlers:
        self._outermost = not _state[0] and threading.current_thread() is threading.main_thread()
        if not self._outermost:
            return _handlers
        _state[0] = True
        try:
            for signum in _SIGNALS:
                if callable(_signal.getsignal(signum)):
                    # signal() first runs the handlers of signals already
                    # pending: one may raise here, before anything is owned.
                    _handlers[signum] = _signal.signal(signum, _hold)
        except BaseException:
            self._release()
            raise
        return _handlers

    def __exit__(self, *exc: Any) -> None:
        if self._outermost:
            self._release()

    @staticmethod
    def _release() -> None:
        # Blocked while their handlers go back: a program's handler back in
        # place could otherwise run (and raise) half-way through, leaving the
        # state held for good and every later block doing nothing.  Those
        # held, and any arriving meanwhile, are delivered as the block lifts:
        # their own handlers run then, and may raise.
        blocked = _signal.pthread_sigmask(_signal.SIG_BLOCK, list(_handlers))
        try:
            _state[1] = False
            _put_back(_handlers)
            _handlers.clear()
            _state[0] = False
            # Cleared first: a signal taken by another thread (the mask is this
            # thread's) may still surface here, and must not leave them queued.
            held = list(dict.fromkeys(_pending))
            _pending.clear()
            for signum in held:
                _signal.raise_signal(signum)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)


def waiting(wait: Callable[[Any], Any], arg: Any) -> Any:
    """``wait(arg)``, with the signals held back by ``held_back()`` let through meanwhile.

    Those held so far run their handlers first.  A plain call, not a
    context manager: a ``with`` makes objects, and the first wait comes
    right after a fork.
    """
    if not _state[0]:
        return wait(arg)
    _state[1] = True
    try:
        while _pending:
            signum = _pending.pop(0)
            _handlers[signum](signum, sys._getframe())
        return wait(arg)
    finally:
        _state[1] = False


def _put_back(handlers: Handlers) -> None:
    for signum, handler in handlers.items():
        _signal.signal(signum, handler)


def put_back(handlers: Handlers) -> None:
    """In a child forked inside ``held_back()``: the program's handlers back, nothing held."""
    _put_back(handlers)
    _state[0] = _state[1] = False
    _pending.clear()


def become_child(handlers: Handlers) -> None:
    """In a child forked inside ``held_back()``: its handlers back, its own process group."""
    put_back(handlers)
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
    child).  Call it inside ``held_back()``, so that nothing interrupts it.
    """
    kill_group(pid)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
