"""A pytest limit on what a test copies: ``@pytest.mark.limit_copied("256 KiB")``.

pytest loads this plugin through the ``pytest11`` entry point ``cowmem``
when cowmem is installed (``-p no:cowmem`` leaves it out).  A marked
test's fixtures are set up in the pytest process as usual; its body runs in
a child forked by :func:`cowmem.measure_fork`, and the test fails when the
body made the kernel copy more than the limit of the parent's memory.  The
docs/pytest.md tells what a forked body
means for fixtures, output, warnings and the rest.

This module is imported by every pytest session where cowmem is
installed: numpy and the measuring code are imported only once a marked
test runs.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import threading
import warnings
from typing import Generator, Iterator, Optional

import pytest

from . import marker
from .marker import Limit
from .outcome import CHILD_LONGREPR, HANDLED

_DEFAULT_TIMEOUT = 300.0
_EXPLAIN = ("auto", "never")
_SETTINGS = pytest.StashKey["_Settings"]()
_PLATFORM = pytest.StashKey[Optional[str]]()


class _Settings:
    """The session's options, read once; a bad ini value is a usage error."""

    def __init__(self, config: pytest.Config) -> None:
        self.off: bool = config.getoption("limit_copied_off")
        timeout = config.getoption("limit_copied_timeout")
        if timeout is None:
            text = config.getini("limit_copied_timeout")
            try:
                timeout = _positive_seconds(text)
            except ValueError:
                raise pytest.UsageError(f"ini option limit_copied_timeout must be a positive number "
                                        f"of seconds, not {text!r}") from None
        self.timeout: float = timeout
        explain = config.getoption("limit_copied_explain") or config.getini("limit_copied_explain")
        if explain not in _EXPLAIN:
            raise pytest.UsageError(f"ini option limit_copied_explain must be auto or never, not {explain!r}")
        self.explain: bool = explain == "auto"


def _positive_seconds(text: str) -> float:
    """``text`` as seconds; ValueError unless it is a positive, finite number."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


def _timeout_option(text: str) -> float:
    try:
        return _positive_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cowmem", "limit_copied: limits on what a test body copies (cowmem)")
    group.addoption(
        "--limit-copied-timeout", type=_timeout_option, default=None, metavar="SECONDS",
        help="seconds a limit_copied test body may run in its forked child before it is "
             f"stopped, with every process it started (ini limit_copied_timeout; default {_DEFAULT_TIMEOUT:g})")
    group.addoption(
        "--limit-copied-explain", choices=_EXPLAIN, default=None,
        help="auto: when a body is over its limit, run it once more to explain the copies by "
             "fixture, and by cause and object type where userfaultfd works (root); never: "
             "report the counts only (ini limit_copied_explain; default auto)")
    group.addoption(
        "--limit-copied-off", action="store_true", default=False,
        help="run limit_copied tests in the pytest process, unmeasured (to debug a body with --pdb)")
    parser.addini("limit_copied_timeout", default=str(_DEFAULT_TIMEOUT),
                  help="default seconds a limit_copied test body may run (--limit-copied-timeout)")
    parser.addini("limit_copied_explain", default="auto",
                  help="auto or never: explain the copies of a body over its limit (--limit-copied-explain)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker.HELP)
    config.stash[_SETTINGS] = _Settings(config)


def _limit(item: pytest.Item) -> Optional[Limit]:
    """The item's limit (None: not marked).  A bad marker fails the test where it is read.

    Not a pytest.UsageError at collection: pytest-xdist's workers cannot
    report one; pytest's own markers (skipif) error the test the same way.
    """
    mark = item.get_closest_marker(marker.NAME)
    if mark is None:
        return None
    try:
        return marker.read(mark.args, mark.kwargs, getattr(item, "fixturenames", ()))
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    written = ", ".join([*map(repr, mark.args), *(f"{k}={v!r}" for k, v in mark.kwargs.items())])
    raise pytest.fail.Exception(f"usage error in @pytest.mark.{marker.NAME}({written}): {problem} "
                                f"(it takes {marker.SIGNATURE})", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check the marker and the platform before the test's fixtures are set up.

    A marked test that cannot be measured here is skipped with the reason.
    """
    if _limit(item) is None or item.config.stash[_SETTINGS].off:
        return
    problem = _platform_problem(item.config)
    if problem is not None:
        pytest.skip(f"{marker.NAME}: cowmem cannot measure here: {problem}")


def _platform_problem(config: pytest.Config) -> Optional[str]:
    """Why cowmem cannot measure on this platform (None: it can); checked once per session."""
    if _PLATFORM not in config.stash:
        from ..errors import UnsupportedPlatformError

        try:
            from .._linux.probe import check_pagemap
            from . import limit  # noqa: F401  (the object layouts refuse unknown interpreters)

            with _forking_from_a_worker(config):
                check_pagemap()
            config.stash[_PLATFORM] = None
        except (UnsupportedPlatformError, NotImplementedError) as exc:
            config.stash[_PLATFORM] = str(exc)
    return config.stash[_PLATFORM]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    limit = _limit(pyfuncitem)
    settings = pyfuncitem.config.stash[_SETTINGS]
    if limit is None or settings.off:
        return None
    if inspect.iscoroutinefunction(pyfuncitem.obj) or inspect.isasyncgenfunction(pyfuncitem.obj):
        return None  # pytest refuses it before calling it (an async plugin wraps it first)
    from .limit import check

    pyfuncitem.stash[HANDLED] = True
    with _forking_from_a_worker(pyfuncitem.config):
        check(pyfuncitem, limit, limit.timeout or settings.timeout, settings.explain)
    return True


@contextlib.contextmanager
def _forking_from_a_worker(config: pytest.Config) -> Iterator[None]:
    """Python 3.12+'s warning of forking a multi-threaded process left out in a pytest-xdist worker.

    The worker runs execnet's I/O thread, which the warning counts and
    cowmem's children (the probe, the locating helper, the body's child)
    never use.  Python threads of the test's own still draw cowmem's
    ForkSafetyWarning, and the warning, as anywhere else.
    """
    with warnings.catch_warnings():
        if hasattr(config, "workerinput") and threading.active_count() == 1:
            warnings.filterwarnings("ignore", r"This process \(pid=\d+\) is multi-threaded", DeprecationWarning)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, pytest.TestReport,
                                                                                       pytest.TestReport]:
    report = yield
    if call.when != "call":
        return report
    longrepr = item.stash.get(CHILD_LONGREPR, None)
    if longrepr is not None:
        del item.stash[CHILD_LONGREPR]
        if report.failed:
            report.longrepr = longrepr
    elif report.passed and not item.stash.get(HANDLED, False) and _limit(item) is not None \
            and not item.config.stash[_SETTINGS].off:
        report.outcome = "failed"
        report.longrepr = (f"{marker.NAME} was not applied: this test was not run through "
                           "pytest_pyfunc_call (a unittest.TestCase method, or another plugin "
                           "ran it), so its body never ran in a measured child")
    return report
