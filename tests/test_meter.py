"""ForkMeter: the measuring without the forking, for code that forks itself."""

import os

import numpy as np

from cowmem import PAGE_SIZE, ForkMeter, measure_fork


def test_meter_in_a_child_forked_by_hand_matches_measure_fork():
    k = 300
    buf = bytearray(b"\x01") * (1000 * PAGE_SIZE)
    view = np.frombuffer(buf, np.uint8)
    skip = -view.ctypes.data % PAGE_SIZE
    pages = view[skip:skip + k * PAGE_SIZE]

    def access():
        pages[::PAGE_SIZE] = 2

    span = (pages.ctypes.data, pages.ctypes.data + pages.size)
    with ForkMeter({"pages": span}) as meter:
        pid = os.fork()
        if pid == 0:
            try:
                meter.run(access)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0 if hasattr(os, "waitstatus_to_exitcode") else status == 0
        mine = meter.report()  # read in the parent, from shared memory
    theirs = measure_fork(access, regions={"pages": span})
    assert mine.regions["pages"] == theirs.regions["pages"] == k * PAGE_SIZE


def test_report_before_run_is_an_error():
    import pytest
    from cowmem import CowmemError
    with ForkMeter() as meter:
        with pytest.raises(CowmemError, match="run"):
            meter.report()
