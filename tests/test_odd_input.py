"""Odd input: one line and exit 2 on the command line; in the library a typed
exception, raised before anything is forked, or a correct measurement."""

from __future__ import annotations

import json
import mmap
import os
import pickle
import resource
import signal
import threading

import numpy as np
import pytest

from cowmem import PAGE_SIZE, CowmemError, ForkMeter, Regions, measure_fork
from cowmem._linux.maps import read_maps
from cowmem.errors import ChildLostError, DescriptorsClosedError, InvalidArgumentError
from cowmem.workers import run_workers

from test_cli import assert_bad_input, run


def assert_no_children():
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def pages(k):
    """A page-aligned view of k pages, each written by the parent, and an access writing each."""
    buf = mmap.mmap(-1, k * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buf, np.uint8)
    view[::PAGE_SIZE] = 1
    span = (view.ctypes.data, view.ctypes.data + view.size)

    def access():
        view[::PAGE_SIZE] = 2
    return buf, span, access


# --- the command line -----------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["measure", "list_int", "iterate", "--size", "1e400"], "must be less than 1e100"),
    (["measure", "list_int", "iterate", "--size", "1e4300"], "must be less than 1e100"),
    (["measure", "list_int", "iterate", "--size", "1e10000000"], "must be less than 1e100"),
    (["measure", "list_int", "iterate", "--size", "9" * 5000], "must be less than 1e100"),
    (["measure", "list_int", "iterate", "--size", "1e-10000000"], "not a whole number"),
    (["workers", "--scale", "1e308"], "--scale: must be at most 1e+06"),
    (["workers", "--scale", "1e6"], "is available"),
])
def test_numbers_too_large_are_one_line_and_exit_2_at_once(args, fragment):
    # The timeout is the test: 1e10000000 once took minutes to parse.
    assert_bad_input(run(*args, timeout=60), fragment)


def test_a_results_file_nested_100000_deep_is_one_line(tmp_path):
    machine = tmp_path / "results" / "m"
    machine.mkdir(parents=True)
    (machine / "machine.json").write_text(json.dumps({"machine": "m", "version": 1}))
    (machine / "abc-env.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_bad_input(run("report", "--results", str(tmp_path / "results")), "nested too deep")


# --- arguments, refused before forking ------------------------------------

@pytest.mark.parametrize("timeout", [float("nan"), 0, -1.0, "5", None, True])
def test_a_timeout_that_is_not_a_positive_number_is_refused(timeout):
    with pytest.raises(InvalidArgumentError, match="timeout"):
        measure_fork(lambda: None, timeout=timeout)
    with pytest.raises(InvalidArgumentError, match="timeout"):
        run_workers(len, b"", workers=1, timeout=timeout)
    assert_no_children()


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 1e300])
def test_a_timeout_of_centuries_or_none_is_waited_out(timeout):
    buf, span, access = pages(10)
    assert measure_fork(access, regions={"pages": span}, timeout=timeout).regions["pages"] == 10 * PAGE_SIZE
    report = run_workers(len, b"x", workers=1, start_method="fork", timeout=timeout)
    assert report.ok
    assert_no_children()


@pytest.mark.parametrize("regions", [5, [("a", (0, 1))], "data", {1, 2}])
def test_regions_that_are_not_a_mapping_are_refused(regions):
    with pytest.raises(InvalidArgumentError, match="regions must map names"):
        measure_fork(lambda: None, regions=regions)
    with pytest.raises(InvalidArgumentError, match="regions must map names"):
        ForkMeter(regions)
    assert_no_children()


@pytest.mark.parametrize("workers", [0, -1, "3", 2.0, True])
def test_a_worker_count_that_is_not_a_positive_int_is_refused(workers):
    with pytest.raises(InvalidArgumentError, match="workers"):
        run_workers(len, b"", workers=workers)


def test_a_range_over_the_whole_address_space_counts_what_is_mapped():
    everything = (0, 2**47)
    located = Regions({"all": everything})
    mapped = sum(m.stop - m.start for m in read_maps() if m.private_writable)
    # The mapped pages at most, not 2**35 of them (256 GiB of page numbers).
    assert located.pages["all"].size * PAGE_SIZE <= mapped
    buf, span, access = pages(100)
    report = measure_fork(access, regions={"all": everything, "pages": span})
    assert report.regions["pages"] == 100 * PAGE_SIZE
    # Every copied page is in private writable memory, all of it inside the range.
    assert report.regions["all"] == report.copied_bytes


# --- children that break the rules ----------------------------------------

def test_an_access_that_closes_every_descriptor_is_told_so():
    with pytest.raises(DescriptorsClosedError, match="closed or replaced file descriptors"):
        measure_fork(lambda: os.closerange(3, 1 << 16))
    assert_no_children()


def test_descriptors_reopened_as_other_files_are_noticed_and_nothing_is_written_to_them(tmp_path):
    target = tmp_path / "innocent"
    target.write_bytes(b"")

    def take_every_number():
        # Close all but the standard streams and reopen the lowest numbers
        # on a file of the access's own: the numbers cowmem held now name it.
        os.closerange(3, 1 << 16)
        for _ in range(64):
            os.open(target, os.O_RDWR | os.O_APPEND)

    with pytest.raises(DescriptorsClosedError):
        measure_fork(take_every_number)
    assert target.read_bytes() == b""
    assert_no_children()


def test_a_pagemap_descriptor_replaced_by_another_file_is_never_read_as_pagemap():
    def replace_the_pagemap():
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").endswith("/pagemap"):
                    os.dup2(os.open("/dev/zero", os.O_RDONLY), fd)  # reads succeed, all zeros
            except OSError:
                pass

    with pytest.raises(DescriptorsClosedError, match="pagemap"):
        measure_fork(replace_the_pagemap)
    assert_no_children()


class _HoldsALock(CowmemError):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()  # pickle refuses locks


class _TwoArguments(CowmemError):
    def __init__(self, message, extra):
        super().__init__(message)  # pickles its args (message,): unpickling calls it with one


def test_an_error_the_child_cannot_pickle_arrives_as_text(monkeypatch):
    def fail(self, *steps):
        raise _HoldsALock("the original message")

    monkeypatch.setattr(ForkMeter, "run", fail)
    with pytest.raises(CowmemError) as info:
        measure_fork(lambda: None)
    first, *rest = str(info.value).splitlines()
    assert first.startswith("cowmem failed inside the child: _HoldsALock could not be pickled to the parent")
    assert "the original message" in rest
    with pytest.raises(TypeError):
        pickle.dumps(_HoldsALock("x"))  # the case is the case
    assert_no_children()


def test_an_error_the_parent_cannot_unpickle_says_so(monkeypatch):
    def fail(self, *steps):
        raise _TwoArguments("unreadable", "extra")

    monkeypatch.setattr(ForkMeter, "run", fail)
    with pytest.raises(CowmemError, match="the child's report could not be read"):
        measure_fork(lambda: None)
    assert_no_children()


@pytest.fixture
def sigchld_ignored():
    """The kernel reaps every child at once: waitpid finds none."""
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGCHLD, old)


def test_a_child_reaped_elsewhere_is_still_measured_when_it_reported(sigchld_ignored):
    buf, span, access = pages(25)
    assert measure_fork(access, regions={"pages": span}).regions["pages"] == 25 * PAGE_SIZE


def test_a_child_reaped_elsewhere_before_reporting_is_a_clear_error(sigchld_ignored):
    with pytest.raises(ChildLostError, match="reaped by someone else"):
        measure_fork(lambda: os._exit(3))


def test_descriptors_numbered_above_1024_are_waited_on():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit on open files is {hard}: no descriptor above 1024 to try")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    held = []
    try:
        # Take every number up to 1100: cowmem's pipe and pidfd come above.
        while not held or held[-1] < 1100:
            held.append(os.open("/dev/null", os.O_RDONLY))
        buf, span, access = pages(5)
        assert measure_fork(access, regions={"pages": span}).regions["pages"] == 5 * PAGE_SIZE
        assert run_workers(len, b"x", workers=1, start_method="fork").ok
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert_no_children()
