"""The workers primitive: N multiprocessing workers, each start method, each way to fail."""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import sys
import sysconfig
import time

import psutil
import pytest

from cowmem import PAGE_SIZE, UnknownNameError
from cowmem.workers import WorkersReport, question_free_memory, resolve_start_method, run_workers

WORKERS = 3


# Accesses are module-level functions: spawn and forkserver pickle them by name.

def write_every_page(buffer: mmap.mmap) -> None:
    for offset in range(0, len(buffer), PAGE_SIZE):
        buffer[offset] = 2


def length(data: object) -> int:
    return len(data)


def iterate(data: object) -> None:
    for _ in data:
        pass


def is_first(counter: "multiprocessing.sharedctypes.Synchronized") -> bool:
    """True in exactly one worker: the first to take a ticket from the shared counter."""
    with counter.get_lock():
        counter.value += 1
        return counter.value == 1


def fail_in_first(counter: "multiprocessing.sharedctypes.Synchronized") -> None:
    if is_first(counter):
        raise ValueError("boom in the first worker")


def kill_first(counter: "multiprocessing.sharedctypes.Synchronized") -> None:
    if is_first(counter):
        os.kill(os.getpid(), signal.SIGKILL)


def exit_first(counter: "multiprocessing.sharedctypes.Synchronized") -> None:
    if is_first(counter):
        os._exit(3)


def sleep_long(data: object) -> None:
    time.sleep(60)


def filled(pages: int) -> mmap.mmap:
    """``pages`` pages of private anonymous memory, each written (present, so shared after a fork).

    A mapping of its own: page-aligned, and no other object shares its pages.
    """
    buffer = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer.write(b"\x01" * len(buffer))
    return buffer


def assert_no_children() -> None:
    """No worker left: only multiprocessing's own long-lived helpers may remain.

    The forkserver's server and the resource tracker are started once and
    serve every later worker, as multiprocessing intends.
    """
    from multiprocessing import forkserver, resource_tracker

    helpers = {forkserver._forkserver._forkserver_pid, resource_tracker._resource_tracker._pid}
    assert multiprocessing.active_children() == []
    left = [p for p in psutil.Process().children() if p.pid not in helpers]
    assert left == []


def test_fork_workers_each_copy_exactly_the_pages_they_write():
    pages = 200
    buffer = filled(pages)
    report = run_workers(write_every_page, buffer, workers=WORKERS, start_method="fork",
                         regions={"buffer": buffer})
    assert isinstance(report, WorkersReport) and report.ok
    assert report.start_method == "fork" and report.baseline is None
    assert [w.index for w in report.workers] == list(range(WORKERS))
    for worker in report.workers:
        assert worker.regions["buffer"] == pages * PAGE_SIZE
        assert worker.copied_bytes >= pages * PAGE_SIZE
        assert worker.cost_bytes == worker.copied_bytes
    assert_no_children()



def test_fork_workers_that_only_read_copy_nothing_of_the_data():
    buffer = filled(100)
    report = run_workers(length, buffer, workers=WORKERS, start_method="fork", regions={"buffer": buffer})
    assert report.ok
    assert [w.regions["buffer"] for w in report.workers] == [0] * WORKERS
    assert_no_children()


# pymalloc's layout (GIL builds): pools of 4 KiB up to 3.9, 16 KiB from
# 3.10; each pool's blocks follow its 48-byte header; an int of 1000 and
# more takes a 32-byte block.
POOL_SIZE = 4096 if sys.version_info < (3, 10) else 16384
POOL_HEADER = 48
INT_BLOCK = 32


def pages_only_they_hold(objects):
    """Pages no other object can share with ``objects`` (ints in 32-byte pymalloc blocks, kept alive).

    Every block that overlaps such a page is one of them, and a pool
    header on it belongs to a pool whose every block is one of them: no
    allocation, free or reference count of another object writes it.
    """
    mine = {id(x) for x in objects}

    def blocks(pool):
        return range(pool * POOL_SIZE + POOL_HEADER, (pool + 1) * POOL_SIZE - INT_BLOCK + 1, INT_BLOCK)

    pages = set()
    for page in {address // PAGE_SIZE for address in mine}:
        start, stop = page * PAGE_SIZE, (page + 1) * PAGE_SIZE
        pool = start // POOL_SIZE
        if start % POOL_SIZE == 0 and not all(block in mine for block in blocks(pool)):
            continue  # the header of a pool others allocate in
        if all(block in mine for block in blocks(pool) if start - INT_BLOCK < block < stop):
            pages.add(page)
    return pages


def test_fork_workers_iterating_ints_copy_the_pages_of_their_refcounts():
    # Ints from 1000 up: none is a cached small int living outside the heap.
    # Ints made first take the free blocks of the heap's partly used pools
    # (many, after a long session of tests), so that the data's fill pools
    # of their own.
    holes = list(range(10**7, 10**7 + 200_000))
    data = list(range(1000, 1000 + 50_000))
    int_pages = {id(x) // PAGE_SIZE for x in data}  # each int's refcount is its first word
    alone = pages_only_they_hold(data) if not sysconfig.get_config_var("Py_GIL_DISABLED") else set()
    assert len(alone) >= len(int_pages) // 2  # the case: ints allocated in a row fill pools of their own
    report = run_workers(iterate, data, workers=WORKERS, start_method="fork", regions={"data": data})
    assert report.ok
    for worker in report.workers:
        # Iterating writes every int's refcount and the list's own header, and
        # nothing else of the data.  The header page was the worker's before
        # the measurement began (it wrote the list's refcount receiving its
        # arguments): unobserved, never counted.  So at most the int pages are
        # copied; and at least those that hold nothing but the data's ints:
        # no one but the worker can write them.  The other int pages hold
        # objects the parent may write while the workers run, and a page the
        # parent copied first is the worker's own when the worker writes it.
        assert worker.unobserved["data"] >= PAGE_SIZE
        assert len(alone) * PAGE_SIZE <= worker.regions["data"] <= len(int_pages) * PAGE_SIZE
    assert_no_children()
    del holes   # alive to here: their blocks stay taken while the workers run


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pickled_workers_hold_all_of_the_data_and_not_the_interpreter(method):
    size = 32 << 20
    data = b"\x01" * size
    report = run_workers(length, data, workers=2, start_method=method)
    assert report.ok and report.start_method == method
    baseline = report.baseline
    assert baseline is not None and baseline.ok and baseline.index == -1
    for worker in report.workers:
        assert worker.copied_bytes is None and worker.regions is None
        assert worker.private_bytes == worker.uss_bytes - baseline.uss_bytes
        assert worker.cost_bytes == worker.private_bytes
        # The unpickled copy is all of it; what else differs from the baseline
        # (a few pages of allocator and interpreter state) is far less than the data.
        assert abs(worker.private_bytes - size) <= 1 << 20
    assert_no_children()


def test_default_follows_the_interpreter():
    expected = multiprocessing.get_start_method(allow_none=False)
    assert resolve_start_method("default") == expected
    report = run_workers(length, b"x" * 100, workers=1, start_method="default")
    assert report.requested == "default" and report.start_method == expected
    assert (report.baseline is None) == (expected == "fork")


def test_unknown_and_unavailable_start_methods_are_refused(monkeypatch):
    with pytest.raises(UnknownNameError, match="'bogus' is unknown; choose from: .*fork"):
        resolve_start_method("bogus")
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn"])
    with pytest.raises(UnknownNameError, match="'forkserver' is not available on this platform; "
                                               "choose from: fork, spawn, default"):
        run_workers(length, b"", start_method="forkserver")
    assert_no_children()


@pytest.mark.parametrize("workers", [0, -1])
def test_no_workers_is_refused(workers):
    with pytest.raises(ValueError, match="at least 1"):
        run_workers(length, b"", workers=workers)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_failing_access_fails_its_worker_only(method):
    counter = multiprocessing.get_context(method).Value("i", 0)
    report = run_workers(fail_in_first, counter, workers=WORKERS, start_method=method)
    failed = [w for w in report.workers if not w.ok]
    assert len(failed) == 1 and not report.ok
    assert "ValueError: boom in the first worker" in failed[0].error
    assert "fail_in_first" in failed[0].traceback
    assert failed[0].cost_bytes is None and failed[0].uss_bytes is None
    assert all(w.ok and w.cost_bytes is not None for w in report.workers if w is not failed[0])
    assert_no_children()


def test_a_killed_worker_is_reported_with_its_signal():
    counter = multiprocessing.get_context("fork").Value("i", 0)
    report = run_workers(kill_first, counter, workers=WORKERS, start_method="fork")
    failed = [w for w in report.workers if not w.ok]
    assert len(failed) == 1
    assert "killed by SIGKILL" in failed[0].error and failed[0].traceback is None
    assert sum(w.ok for w in report.workers) == WORKERS - 1
    assert_no_children()


def test_a_worker_that_exits_without_reporting_is_reported_with_its_status():
    counter = multiprocessing.get_context("fork").Value("i", 0)
    report = run_workers(exit_first, counter, workers=WORKERS, start_method="fork")
    failed = [w for w in report.workers if not w.ok]
    assert len(failed) == 1 and "exited with status 3" in failed[0].error
    assert_no_children()


def test_workers_overrunning_the_timeout_are_killed_and_reported():
    start = time.monotonic()
    report = run_workers(sleep_long, b"", workers=2, start_method="fork", timeout=1.0)
    assert time.monotonic() - start < 20
    assert [w.ok for w in report.workers] == [False, False]
    assert all("did not finish within 1 s" in w.error for w in report.workers)
    assert_no_children()


def test_an_unpicklable_access_for_spawn_raises_and_leaves_no_worker():
    with pytest.raises(Exception, match="pickle|Can't"):
        run_workers(lambda data: None, b"", workers=2, start_method="spawn")
    assert_no_children()


def test_the_question_reading_is_memfree_buffers_cached():
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    reading = question_free_memory()
    # Read a moment apart: equal within what the system did in between.
    assert abs(reading - (fields["MemFree"] + fields["Buffers"] + fields["Cached"])) < 256 << 20
    assert 0 < reading <= fields["MemTotal"]


def test_report_to_dict_is_json_ready():
    import json

    report = run_workers(length, b"x" * 10, workers=1, start_method="spawn")
    out = json.loads(json.dumps(report.to_dict()))
    assert out["start_method"] == "spawn" and out["baseline"]["index"] == -1
    assert out["workers"][0]["cost_bytes"] == report.workers[0].private_bytes
