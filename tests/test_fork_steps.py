"""measure_fork's prepare and finish: run in the child, outside the snapshots."""

import mmap

import numpy as np
import pytest

from cowmem import PAGE_SIZE, measure_fork
from cowmem.errors import AccessError

PAGES = 64


@pytest.fixture
def buffer():
    """A private anonymous mapping of PAGES pages, every page present in the parent."""
    buf = mmap.mmap(-1, PAGES * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buf, np.uint8)
    view[::PAGE_SIZE] = 1
    return view, (view.ctypes.data, view.ctypes.data + view.size)


def writer(view, first, count):
    """A step writing one byte in each of ``count`` pages from page ``first``."""
    def write():
        view[first * PAGE_SIZE:(first + count) * PAGE_SIZE:PAGE_SIZE] = 2
    return write


def test_what_prepare_and_finish_write_is_not_counted(buffer):
    view, span = buffer
    report = measure_fork(writer(view, 10, 20), regions={"buffer": span},
                          prepare=writer(view, 0, 10), finish=writer(view, 30, PAGES - 30))
    # The access's 20 pages, exactly; prepare's 10 were the child's at the
    # baseline; finish's came after the last snapshot.
    assert report.regions["buffer"] == 20 * PAGE_SIZE
    assert report.unobserved["buffer"] == 10 * PAGE_SIZE


def test_a_page_prepare_wrote_is_unobserved_when_the_access_writes_it_again(buffer):
    view, span = buffer
    report = measure_fork(writer(view, 0, 20), regions={"buffer": span}, prepare=writer(view, 0, 5))
    assert report.regions["buffer"] == 15 * PAGE_SIZE
    assert report.unobserved["buffer"] == 5 * PAGE_SIZE


def test_finish_runs_after_a_failing_access_and_sees_it():
    seen = mmap.mmap(-1, PAGE_SIZE)   # shared: the parent reads what the child wrote
    failure = []

    def access():
        failure.append("access failed")
        raise ValueError("in the access")

    def finish():
        seen[:len(failure[0])] = failure[0].encode()

    with pytest.raises(AccessError) as info:
        measure_fork(access, finish=finish)
    assert info.value.exc_type == "builtins.ValueError" and info.value.child_message == "in the access"
    assert seen[:13] == b"access failed"


@pytest.mark.parametrize("step", ["prepare", "finish"])
def test_a_step_that_raises_is_an_access_error_naming_it(step):
    def broken():
        raise KeyError("no such thing")

    with pytest.raises(AccessError) as info:
        measure_fork(lambda: None, **{step: broken})
    assert info.value.exc_type == "builtins.KeyError"
    assert info.value.child_message == f"in {step}: 'no such thing'"
    assert "broken" in info.value.child_traceback


@pytest.mark.parametrize("step", ["prepare", "finish"])
def test_a_step_must_be_callable(step):
    with pytest.raises(TypeError, match=f"{step} must be callable with no arguments, not int"):
        measure_fork(lambda: None, **{step: 3})
