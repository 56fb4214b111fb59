"""A test's body run in the child that :func:`cowmem.measure_fork` forks.

``measure_fork`` runs the body between its two snapshots and reports what
it copied.  pytest needs more from the child than that: the body's failure
as pytest renders it, its warnings, what it wrote to in-memory captures
(``--capture=sys``, ``capsys``, the log report), its ``record_property``
values and, when it crashes or hangs, where it was.  The parent prepares
two temporary files; after the body the child pickles its notes into one,
and faulthandler writes a crash or hang stack into the other.  The parent
reads both once the child is reaped and replays the notes into its own
pytest machinery, so that the report reads as if the body had run there.

Only the call of the test function is measured: the child's set-up (a
process group of its own, so that every process the body started is
stopped once the child is gone, whether the body passed, failed, crashed
or hung; faulthandler) runs before the baseline snapshot, and the notes
are made after the last one.
"""

from __future__ import annotations

import faulthandler
import inspect
import io
import mmap
import os
import pickle
import signal
import sys
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

import pytest
from _pytest.python import pytest_pyfunc_call as run_test_function

from ..errors import AccessError, ChildExitedError, ChildKilledError, ChildTimeoutError
from ..fork import measure_fork
from ..meter import ForkReport, Regions
from .outcome import CHILD_LONGREPR, BodyError, RerunError, trim_stack

# The parent kills a hung child this long after the child dumped its stack.
KILL_GRACE = 1.0

# pytest's outcome exceptions.  The parent raises them again as they are
# and pytest reports them itself (a skip or an xfail without a traceback).
# They claim to live in builtins (for their repr), so pickle cannot find
# their classes: they travel by index.
_OUTCOMES = (pytest.skip.Exception, pytest.xfail.Exception, pytest.exit.Exception, pytest.fail.Exception)
_QUIET_OUTCOMES = _OUTCOMES[:3]


class ForkedBody:
    """One test's body, run and measured in a forked child, as often as asked.

    ``timeout``: seconds the body may run; the child then dumps its stack
    and is killed KILL_GRACE seconds later, with its process group.
    """

    def __init__(self, item: pytest.Function, timeout: float) -> None:
        self.item = item
        self.timeout = timeout

    def measure(self, *, regions: Optional[Regions] = None, explain: bool = False,
                quiet: bool = False) -> ForkReport:
        """Run the body once in a child and return what it copied.

        The body's outcome is replayed in the parent: its exception is
        raised again, its warnings, captured output and properties are
        added to the parent's.  A crash or a timeout fails the test with
        the child's stack.  With ``quiet`` (a second run, to explain the
        first) the body's output goes to /dev/null, nothing is replayed, and
        any failure is a RerunError.
        """
        failure: Optional[BaseException] = None
        with _Run(self.item, self.timeout, quiet) as run:
            try:
                report = measure_fork(run.access, prepare=run.prepare, finish=run.finish, regions=regions,
                                      explain=explain, timeout=self.timeout + KILL_GRACE, cross_checks=False)
            except AccessError as error:
                failure = run.failure(error)
            except (ChildKilledError, ChildExitedError, ChildTimeoutError) as error:
                failure = run.crash(error)
            else:
                failure = run.failure(None)
            finally:
                # However the body ended, what it started ends with it.
                run.stop_group()
        if failure is None:
            return report
        if quiet:
            raise RerunError(f"{type(failure).__name__}: {failure}")
        raise failure


class _Run:
    """One forked run: what the parent prepares, and the child's side of it."""

    def __init__(self, item: pytest.Function, timeout: float, quiet: bool) -> None:
        self.item = item
        self.timeout = timeout
        self.quiet = quiet
        # The call pytest's own pytest_pyfunc_call makes, prepared here.
        self._function = item.obj
        self._positional, self._keywords = _arguments(
            item.obj, {name: item.funcargs[name] for name in item._fixtureinfo.argnames})
        self._captures = [] if quiet else _captures(item)
        self._properties = len(item.user_properties)
        self._warnings = warnings.catch_warnings(record=True)
        self._notes = tempfile.TemporaryFile()
        self._crash = tempfile.TemporaryFile()
        self._devnull = open(os.devnull, "w") if quiet else None
        # The child's pid, written by the child: its process group, once it is gone.
        self._pid_page = mmap.mmap(-1, mmap.PAGESIZE)
        self._pid = memoryview(self._pid_page).cast("q")
        self._log: List[warnings.WarningMessage] = []
        # Set in the child.
        self._first_warning = 0
        self._returned: Any = None
        self._raised: Optional[BaseException] = None

    def __enter__(self) -> "_Run":
        self._log = self._warnings.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._warnings.__exit__(*exc)
            if not self.quiet:
                self._replay()
        finally:
            self._pid.release()
            self._pid_page.close()
            for file in (self._notes, self._crash, self._devnull):
                if file is not None:
                    file.close()

    # --- in the child ---------------------------------------------------

    def prepare(self) -> None:
        """Before the baseline: a process group of its own, faulthandler into the crash file."""
        os.setpgid(0, 0)
        self._pid[0] = os.getpid()
        crash = self._crash.fileno()
        faulthandler.enable(crash, all_threads=True)
        faulthandler.dump_traceback_later(self.timeout, file=crash)
        if self._devnull is not None:
            for fd in (1, 2):
                os.dup2(self._devnull.fileno(), fd)
            sys.stdout = sys.stderr = self._devnull
        self._first_warning = len(self._log)

    def access(self) -> None:
        """The body, and only the body: what this runs is what is measured."""
        try:
            if self._keywords:
                result = self._function(**self._keywords)
            else:
                result = self._function(*self._positional)
        except BaseException as exc:
            self._raised = exc
            raise
        if result is not None:
            self._returned = result

    def finish(self) -> None:
        """After the last snapshot: write the notes, if there is anything to say."""
        faulthandler.cancel_dump_traceback_later()
        failure = self._raised
        if failure is None and self._returned is not None:
            # pytest's own verdict on a returned value: a warning, or a
            # failure for an awaitable.
            returned = self._returned
            self.item.obj = lambda **_: returned
            try:
                run_test_function(self.item)
            except BaseException as exc:
                failure = exc
        notes: Dict[str, Any] = {}
        if len(self._log) > self._first_warning:
            notes["warnings"] = [_portable_warning(w) for w in self._log[self._first_warning:]]
        for index, capture in enumerate(self._captures):
            added = capture.added()
            if added is not None:
                notes.setdefault("captures", {})[index] = added
        if len(self.item.user_properties) > self._properties:
            notes["properties"] = self.item.user_properties[self._properties:]
        if failure is not None:
            notes["failure"] = self._portable_failure(failure)
        if notes:
            data = memoryview(_dumps(notes))
            while data:
                data = data[os.write(self._notes.fileno(), data):]

    def _portable_failure(self, exc: BaseException) -> Tuple[Optional[bytes], Any]:
        """The exception (pickled, when it pickles) and pytest's rendering of it."""
        try:
            pickled: Optional[bytes] = _dumps(exc)
        except Exception:
            pickled = None
        if isinstance(exc, _QUIET_OUTCOMES):
            return pickled, None
        longrepr = self.item.repr_failure(pytest.ExceptionInfo.from_exception(exc))
        try:
            _dumps(longrepr)
        except Exception:
            longrepr = str(longrepr)
        return pickled, longrepr

    # --- in the parent, once the child is gone ----------------------------

    def _notes_sent(self) -> Dict[str, Any]:
        data = _read(self._notes)
        return pickle.loads(data) if data else {}

    def _replay(self) -> None:
        """Add the child's warnings, captured text and properties to the parent's."""
        notes = self._notes_sent()
        for index, added in notes.get("captures", {}).items():
            self._captures[index].append(added)
        self.item.user_properties.extend(notes.get("properties", []))
        # The parent's own warnings (measure_fork's), then the body's.
        for w in self._log:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        for message, category, filename, lineno in notes.get("warnings", []):
            warnings.warn_explicit(message, category, filename, lineno)

    def failure(self, error: Optional[AccessError]) -> Optional[BaseException]:
        """The exception to raise for the body's (None: it passed); the child's own when it pickled.

        ``error``: measure_fork's, when the body raised.
        """
        sent = self._notes_sent().get("failure")
        if sent is None and error is None:
            return None
        pickled, longrepr = sent or (None, None)
        exc = _loads(pickled) if pickled is not None else None
        if exc is None:
            exc = BodyError(f"{error.exc_type}: {error.child_message}") if error is not None else \
                BodyError("the body failed")
            if longrepr is None and error is not None:
                longrepr = error.child_traceback
        if longrepr is not None:
            self.item.stash[CHILD_LONGREPR] = longrepr
        if isinstance(exc, pytest.skip.Exception):
            exc._use_item_location = True  # the child's skip line is not the parent's
        return exc

    def crash(self, error: Exception) -> BaseException:
        """The failure of a body that crashed, exited or hung, with the child's stack."""
        if isinstance(error, ChildTimeoutError):
            what = (f"the test body ran longer than its timeout of {self.timeout:g} s "
                    "(limit_copied's timeout=, --limit-copied-timeout, ini limit_copied_timeout); "
                    "its child was killed with every process it started")
        elif isinstance(error, ChildKilledError):
            what = f"the test body crashed: {error}"
        else:
            what = (f"the test body ended its forked child with exit status {error.exit_code} "
                    "before the child could report (os._exit?)")
        stack = _read(self._crash).decode(errors="replace")
        if stack.strip():
            stop = {run_test_function.__code__.co_filename, __file__}
            what += "\n\nThe child's stack, from faulthandler:\n" + trim_stack(stack, stop)
        return pytest.fail.Exception(what, pytrace=False)

    def stop_group(self) -> None:
        """Kill what is left of the child's process group (the processes the body started)."""
        pid = self._pid[0]
        if pid > 0:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # none left


def _arguments(function: Any, args: Dict[str, Any]) -> Tuple[tuple, Dict[str, Any]]:
    """The fixtures as positional arguments where the signature allows it, else as keywords.

    A call with a ready tuple allocates nothing in the child; keywords
    make a new dict there.
    """
    try:
        params = list(inspect.signature(function).parameters.values())[:len(args)]
    except (TypeError, ValueError):
        return (), args
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if [p.name for p in params] == list(args) and all(p.kind in positional for p in params):
        return tuple(args.values()), {}
    return (), args


class _Capture:
    """An in-memory stream of the parent's: what the child adds to it goes back."""

    def __init__(self, buffer: Union[io.BytesIO, io.StringIO], text: Optional[io.TextIOWrapper] = None) -> None:
        self.buffer, self.text = buffer, text
        self.mark = self._end()

    def _end(self) -> int:
        if self.text is not None:
            self.text.flush()
        return self.buffer.tell()

    def added(self) -> Union[bytes, str, None]:
        """In the child: what was written since the fork (None: nothing)."""
        end = self._end()
        if end == self.mark:
            return None
        # Shorter than at the fork: the body read the capture out (capsys);
        # what is left came after.
        return self.buffer.getvalue()[self.mark if end > self.mark else 0:]

    def append(self, data: Union[bytes, str]) -> None:
        """In the parent: add what the child wrote.  Into the buffer, so that a
        tee capture does not print it a second time."""
        if self.text is not None:
            self.text.flush()
        self.buffer.write(data)


def _captures(item: pytest.Function) -> List[_Capture]:
    """The in-memory captures active now: pytest's sys-level capture or capsys, the log report."""
    captures = []
    for stream in (sys.stdout, sys.stderr):
        buffer = getattr(stream, "buffer", None)
        if isinstance(stream, io.TextIOWrapper) and isinstance(buffer, io.BytesIO):
            captures.append(_Capture(buffer, stream))
    logging_plugin = item.config.pluginmanager.get_plugin("logging-plugin")
    stream = getattr(getattr(logging_plugin, "report_handler", None), "stream", None)
    if isinstance(stream, io.StringIO):
        captures.append(_Capture(stream))
    return captures


def _read(file: Any) -> bytes:
    return os.pread(file.fileno(), os.fstat(file.fileno()).st_size, 0)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in _OUTCOMES:
            return _outcome, (_OUTCOMES.index(type(obj)), obj.args, vars(obj))
        return NotImplemented


def _outcome(index: int, args: tuple, state: dict) -> BaseException:
    exc = BaseException.__new__(_OUTCOMES[index], *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _dumps(obj: Any) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return out.getvalue()


def _loads(data: bytes) -> Optional[BaseException]:
    try:
        return pickle.loads(data)
    except Exception:
        return None  # a class the parent cannot import or rebuild


def _portable_warning(w: warnings.WarningMessage) -> Tuple[Any, type, str, int]:
    """A warning as ``warn_explicit`` takes it, made to pickle."""
    portable = (w.message, w.category, w.filename, w.lineno)
    try:
        pickle.loads(_dumps(portable))
        return portable
    except Exception:
        return (f"{w.category.__module__}.{w.category.__qualname__}: {w.message}", UserWarning,
                w.filename, w.lineno)
