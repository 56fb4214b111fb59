"""The exceptions cowmem raises: one base class, one subclass per failure."""

from __future__ import annotations


class CowmemError(Exception):
    """Base class of every error cowmem raises."""


class UnsupportedPlatformError(CowmemError):
    """This platform cannot measure copy-on-write page-exactly.

    Raised when there is no ``os.fork``, no readable ``/proc/self/pagemap``,
    or a kernel that does not report the exclusively-mapped bit (bit 56).
    cowmem never falls back to a number it cannot stand behind.
    """


class ExplainUnavailableError(UnsupportedPlatformError):
    """userfaultfd write-protect faults are unavailable here; ``reason`` says why.

    The plain measurement does not need them and still works.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"explain mode is unavailable: {reason}")
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.reason,)


class ExplainError(CowmemError):
    """Serving the child's write-protect faults failed; the explanation would be partial.

    The child was not left blocked: closing the descriptor woke it, and the
    plain measurement is unaffected.
    """


class AccessError(CowmemError):
    """The access raised an exception in the child.

    ``exc_type`` is the qualified name of the child's exception class and
    ``child_traceback`` the child's formatted traceback.
    """

    def __init__(self, exc_type: str, message: str, child_traceback: str) -> None:
        super().__init__(f"the access raised {exc_type}: {message}\n"
                         f"--- child traceback ---\n{child_traceback.rstrip()}")
        self.exc_type = exc_type
        self.child_message = message
        self.child_traceback = child_traceback

    def __reduce__(self):  # picklable, to cross process boundaries
        return type(self), (self.exc_type, self.child_message, self.child_traceback)


class ChildKilledError(CowmemError):
    """The child was killed by a signal (``signal_name``, e.g. ``SIGKILL``)."""

    def __init__(self, signum: int) -> None:
        import signal

        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        hint = {
            "SIGKILL": " (the kernel's OOM killer sends SIGKILL when memory runs out)",
            "SIGSEGV": " (a segmentation fault in the child)",
            "SIGABRT": " (the child aborted)",
        }.get(name, "")
        super().__init__(f"the child was killed by {name}{hint}")
        self.signum = signum
        self.signal_name = name

    def __reduce__(self):
        return type(self), (self.signum,)


class ChildExitedError(CowmemError):
    """The child exited (e.g. ``os._exit`` in the access) without reporting."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"the child exited with status {exit_code} before reporting "
                         "(did the access call os._exit?)")
        self.exit_code = exit_code

    def __reduce__(self):
        return type(self), (self.exit_code,)


class ChildTimeoutError(CowmemError):
    """The child overran its timeout; it was killed with SIGKILL and reaped."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the child did not finish within {timeout:g} s; "
                         "it was killed and reaped")
        self.timeout = timeout

    def __reduce__(self):
        return type(self), (self.timeout,)


class DescriptorsClosedError(CowmemError):
    """The access closed (or replaced) a file descriptor cowmem's child uses.

    The child reads its pagemap and counters through descriptors it opened,
    and reports through a pipe: an access that closes descriptors it did
    not open (``os.closerange``, a daemonizing library) leaves nothing
    cowmem could trust or deliver, so nothing is reported.
    """


class ChildLostError(CowmemError):
    """Something else reaped the child before cowmem read how it ended.

    SIGCHLD set to SIG_IGN makes the kernel reap every child; a SIGCHLD
    handler that waits for any child does the same.  A child that had
    reported in full is still measured; this is raised when it had not.
    """


class InvalidArgumentError(CowmemError, TypeError, ValueError):
    """An argument of the wrong type or out of range, refused before anything is forked.

    Also a TypeError and a ValueError, as Python's own checks would raise.
    """


class UnknownNameError(CowmemError, ValueError):
    """An unknown data kind or access name; the message lists the valid ones."""


class NotApplicableError(CowmemError, ValueError):
    """A data kind and access pair that does not apply (asv shows it as n/a)."""


class MissingLibraryError(NotApplicableError):
    """A data kind needs a library (or a version of it) that is not installed here; n/a in asv."""


class InsufficientMemoryError(CowmemError, MemoryError):
    """A size that would not fit in available memory, refused before building."""


class UnverifiedLayoutError(CowmemError):
    """cowmem has not verified how this interpreter lays out ``fact``; ``reason`` says what failed.

    Checked at first use against objects of known content.  Element-level
    regions (following an object's references) and explain mode need the
    layouts; page counts of the whole child, of address ranges and of
    buffers do not, and still work.
    """

    def __init__(self, fact: str, reason: str, interpreter: str) -> None:
        super().__init__(f"cowmem has not verified how {interpreter} lays out {fact} ({reason}): "
                         "it cannot locate objects by their references or explain copies here; "
                         "page counts of the whole child, of address ranges and of buffers still work")
        self.fact = fact
        self.reason = reason
        self.interpreter = interpreter

    def __reduce__(self):
        return type(self), (self.fact, self.reason, self.interpreter)


class LocateError(CowmemError):
    """The short-lived helper process that locates objects failed (it died, or sent nothing)."""
