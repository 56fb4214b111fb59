"""Every failure of the child is reported as what it was, and reaped."""

import ctypes
import faulthandler
import os
import signal
import threading
import time

import pytest

import cowmem
from cowmem._linux import pagemap
from cowmem.errors import (AccessError, ChildExitedError, ChildKilledError, ChildTimeoutError,
                           CowmemError, UnsupportedPlatformError)

from capabilities import needs


def assert_no_children():
    """No child of this process is left, running or zombie."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.fixture(autouse=True)
def reaped():
    yield
    assert_no_children()


def test_access_error_carries_type_and_traceback():
    def broken_access():
        raise ValueError("boom in the child")

    with pytest.raises(AccessError) as info:
        cowmem.measure_fork(broken_access)
    err = info.value
    assert err.exc_type == "builtins.ValueError"
    assert err.child_message == "boom in the child"
    assert "broken_access" in err.child_traceback
    assert "boom in the child" in str(err)
    assert isinstance(err, CowmemError)


def test_sys_exit_in_the_access_is_an_access_error():
    with pytest.raises(AccessError, match="SystemExit"):
        cowmem.measure_fork(lambda: exit(3))


def segfault():
    faulthandler.disable()  # pytest's would print the child's stack
    ctypes.string_at(0)


def abort():
    faulthandler.disable()
    os.abort()


@pytest.mark.parametrize("how, name", [
    (lambda: os.kill(os.getpid(), signal.SIGKILL), "SIGKILL"),
    (segfault, "SIGSEGV"),
    (abort, "SIGABRT"),
])
def test_killed_child_names_the_signal(how, name):
    with pytest.raises(ChildKilledError) as info:
        cowmem.measure_fork(how)
    assert info.value.signal_name == name
    assert name in str(info.value)


def test_child_that_exits_without_reporting():
    with pytest.raises(ChildExitedError) as info:
        cowmem.measure_fork(lambda: os._exit(7))
    assert info.value.exit_code == 7


def test_timeout_kills_and_reaps():
    start = time.monotonic()
    with pytest.raises(ChildTimeoutError) as info:
        cowmem.measure_fork(lambda: time.sleep(60), timeout=0.5)
    assert time.monotonic() - start < 30
    assert info.value.timeout == 0.5


def test_ctrl_c_in_the_parent_reaps_the_child():
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            cowmem.measure_fork(lambda: time.sleep(60))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_no_pagemap_is_a_clear_platform_error(monkeypatch):
    monkeypatch.setattr(pagemap, "PAGEMAP_PATH", "/proc/self/no-such-pagemap")
    with pytest.raises(UnsupportedPlatformError, match="no-such-pagemap"):
        cowmem.measure_fork(lambda: None)


def test_kernel_without_the_exclusive_bit_is_refused(monkeypatch):
    # A pagemap that reports nothing (all zero entries): never a number.
    monkeypatch.setattr(pagemap, "PAGEMAP_PATH", "/dev/zero")
    with pytest.raises(UnsupportedPlatformError, match="exclusive"):
        cowmem.measure_fork(lambda: None)


def test_no_fork_is_a_clear_platform_error(monkeypatch):
    monkeypatch.delattr(os, "fork")
    with pytest.raises(UnsupportedPlatformError, match="fork"):
        cowmem.measure_fork(lambda: None)


def test_threads_in_the_parent_warn():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy-worker")
    thread.start()
    try:
        with pytest.warns(cowmem.ForkSafetyWarning, match="busy-worker"):
            cowmem.measure_fork(lambda: None)
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("kwargs, error", [
    ({"access": 42}, TypeError),
    ({"access": lambda: None, "timeout": 0}, ValueError),
    ({"access": lambda: None, "timeout": -1.0}, ValueError),
    ({"access": lambda: None, "regions": {"bad": (10, 5)}}, ValueError),
])
def test_bad_arguments_fail_before_forking(kwargs, error):
    access = kwargs.pop("access")
    with pytest.raises(error):
        cowmem.measure_fork(access, **kwargs)


@pytest.mark.parametrize("error", [
    AccessError("builtins.ValueError", "boom", "Traceback ...\nValueError: boom\n"),
    ChildKilledError(signal.SIGKILL),
    ChildExitedError(3),
    ChildTimeoutError(1.5),
])
def test_errors_survive_pickling(error):
    # Workers send them across process boundaries.
    import pickle
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)


def test_internal_failure_in_the_child_says_what_failed(monkeypatch):
    def broken_run(self, access, *steps):
        raise RuntimeError("snapshot buffer gone")

    monkeypatch.setattr(cowmem.ForkMeter, "run", broken_run)
    with pytest.raises(CowmemError) as info:
        cowmem.measure_fork(lambda: None)
    assert str(info.value).splitlines()[0] == \
        "cowmem failed inside the child: RuntimeError: snapshot buffer gone"


def test_a_failed_fork_leaks_no_descriptor(monkeypatch):
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", no_fork)
    for _ in range(3):
        with pytest.raises(BlockingIOError):
            cowmem.measure_fork(lambda: None)
    assert len(os.listdir("/proc/self/fd")) == before


@needs("userfaultfd")
def test_a_handler_that_fails_to_start_still_reaps_the_child(monkeypatch):
    from cowmem import explain

    def cannot_serve(self, pid):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(explain.FaultTracer, "start_serving", cannot_serve)
    with pytest.raises(OSError, match="Too many open files"):
        cowmem.measure_fork(lambda: None, explain=True)
