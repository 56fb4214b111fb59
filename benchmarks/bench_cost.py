"""What measuring costs: measure_fork against a bare fork, and the
measuring's own time against its floor, two raw pagemap reads.

Parents hold 100 MiB and 1 GiB (4 GiB with ``COWMEM_BENCH_COST_GIB=4``) as a
bytearray (4 KiB pages), a list of ints, and a huge-page numpy array.
The ``track_*`` ratios are medians over several runs in one process.
"""

import os
import statistics
import time

import numpy as np

from cowmem import measure_fork, pagemap

MIB = 1 << 20
RUNS = 5


def _sizes():
    extra = [4096] if os.environ.get("COWMEM_BENCH_COST_GIB") == "4" else []
    return [100, 1024] + extra


def _build(held, mib):
    if held == "bytearray":
        return bytearray(b"\x01") * (mib * MIB)
    if held == "list_int":
        return list(range(mib * MIB // 40))   # 32 bytes an int, 8 a pointer
    return np.ones(mib * MIB // 8)            # numpy madvises huge pages


def _bare_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _two_reads():
    ranges = pagemap.private_writable_ranges(pagemap.read_maps())
    pagemap.read_entries(ranges)
    pagemap.read_entries(ranges)


def _median_seconds(fn):
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class MeasuringCost:
    params = [["bytearray", "list_int", "hugepage_ndarray"], _sizes()]
    param_names = ["held", "mib"]
    timeout = 900
    unit = "ratio"

    def setup(self, held, mib):
        self.data = _build(held, mib)
        self.fork = _median_seconds(_bare_fork)
        self.measured = _median_seconds(lambda: measure_fork(lambda: None))
        self.lean = _median_seconds(lambda: measure_fork(lambda: None, cross_checks=False))
        self.floor = _median_seconds(_two_reads)

    def teardown(self, held, mib):
        del self.data

    def track_measure_fork_vs_bare_fork(self, held, mib):
        return self.measured / self.fork

    def track_measuring_vs_two_pagemap_reads(self, held, mib):
        return (self.measured - self.fork) / self.floor

    def track_measuring_without_cross_checks_vs_two_pagemap_reads(self, held, mib):
        return (self.lean - self.fork) / self.floor

    def track_measuring_ms_per_gib(self, held, mib):
        return (self.measured - self.fork) * 1000 / (mib / 1024)
    track_measuring_ms_per_gib.unit = "ms/GiB"
