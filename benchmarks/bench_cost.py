"""What measuring costs: measure_fork against a bare fork, and the
measuring's own time against its floor, two raw pagemap reads.

Parents hold 100 MiB (also 1 GiB with ``COWMEM_BENCH_COST_GIB=1``, and
4 GiB with ``=4``) as a bytearray (4 KiB pages), a list of ints, and a
huge-page numpy array.  The larger parents take most of a minute to build
and time, so the default run across many environments leaves them out.
The ``track_*`` ratios are medians over several runs in one process.
"""

import os
import statistics
import time

import numpy as np

from cowmem import _linux, measure_fork

MIB = 1 << 20
RUNS = 5
HELD = ["bytearray", "list_int", "hugepage_ndarray"]


def _sizes():
    largest = os.environ.get("COWMEM_BENCH_COST_GIB", "").strip()
    return {"": [100], "1": [100, 1024], "4": [100, 1024, 4096]}.get(largest, [100])


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
    ranges = _linux.private_writable_ranges(_linux.read_maps())
    _linux.read_entries(ranges)
    _linux.read_entries(ranges)


def _median_seconds(fn):
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure_costs():
    """(held, mib) -> median seconds of a bare fork, measure_fork, a lean one, two pagemap reads."""
    costs = {}
    for held in HELD:
        for mib in _sizes():
            data = _build(held, mib)  # the parent holds it while the forks are timed
            costs[(held, mib)] = (
                _median_seconds(_bare_fork),
                _median_seconds(lambda: measure_fork(lambda: None)),
                _median_seconds(lambda: measure_fork(lambda: None, cross_checks=False)),
                _median_seconds(_two_reads),
            )
            del data  # before the next build
    return costs


class MeasuringCost:
    params = [HELD, _sizes()]
    param_names = ["held", "mib"]
    unit = "ratio"

    # Every parent built and timed once per environment, for all four ratios.
    def setup_cache(self):
        return _measure_costs()

    setup_cache.timeout = 1800

    def setup(self, costs, held, mib):
        self.fork, self.measured, self.lean, self.floor = costs[(held, mib)]

    def track_measure_fork_vs_bare_fork(self, costs, held, mib):
        return self.measured / self.fork

    def track_measuring_vs_two_pagemap_reads(self, costs, held, mib):
        return (self.measured - self.fork) / self.floor

    def track_measuring_without_cross_checks_vs_two_pagemap_reads(self, costs, held, mib):
        return (self.lean - self.fork) / self.floor

    def track_measuring_ms_per_gib(self, costs, held, mib):
        return (self.measured - self.fork) * 1000 / (mib / 1024)
    track_measuring_ms_per_gib.unit = "ms/GiB"
