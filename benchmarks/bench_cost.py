"""What measuring costs, side by side with what it cannot do without.

The measuring's own time is ``measure_fork`` with a no-op access minus a
bare fork + ``_exit`` + ``waitpid``; its floor is two raw reads of the
same ranges: ``os.pread`` of each private writable mapping's pagemap
entries, twice, nothing parsed.  The three are timed in turn, round after
round, in one process holding the data (a child forked for it, which
holds nothing else), so that whatever else the machine does weighs on all
three alike; each figure is the median of ROUNDS.

Parents hold 100 MiB (also 1 GiB with ``COWMEM_BENCH_COST_GIB=1``) as a
bytearray (4 KiB pages), a list of ints and a huge-page numpy array.  The
figures are ratios and milliseconds, no copy metric: the gate never reads
them.  ``python -m benchmarks.bench_cost`` prints the table of docs/cost.md (run
it on one core: ``taskset -c 1``).
"""

import gc
import os
import pickle
import statistics
import sys
import time
import traceback

import numpy as np

from cowmem import measure_fork
from cowmem._linux.maps import private_writable_ranges, read_maps

MIB = 1 << 20
ROUNDS = 15
HELD = ["bytearray", "list_int", "hugepage_ndarray"]


def _sizes():
    return [100, 1024] if os.environ.get("COWMEM_BENCH_COST_GIB", "").strip() == "1" else [100]


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


def _raw_floor():
    """Two raw reads of the private writable mappings' pagemap entries, ranges found beforehand."""
    ranges = [((start >> 12) * 8, ((stop - start) >> 12) * 8)
              for start, stop in private_writable_ranges(read_maps())]

    def read_twice():
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        for _ in range(2):
            for offset, size in ranges:
                os.pread(fd, size, offset)
        os.close(fd)
    return read_twice


def _nothing():
    pass


def _measure_fork():
    measure_fork(_nothing)


def _costs_of(held, mib, rounds):
    """Median seconds of (bare fork, measure_fork, raw floor), taken in turn, while holding ``held``."""
    data = _build(held, mib)  # the parent holds it while the three are timed
    _measure_fork()           # the first one probes the kernel, once per process
    floor = _raw_floor()
    times = {fn: [] for fn in (_bare_fork, _measure_fork, floor)}
    gc.disable()
    try:
        for _ in range(rounds):
            for fn in times:
                start = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - start)
            gc.collect()
    finally:
        gc.enable()
    del data
    return tuple(statistics.median(t) for t in times.values())


def _in_a_fresh_child(fn, *args):
    """``fn(*args)`` in a child forked for it: each parent holds its own data
    only, not what earlier ones left (a freed list's heap stays mapped)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(fn(*args), out)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as result:
        sent = result.read()
    _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError(f"the child timing {fn.__name__}{args} failed (wait status {status})")
    return pickle.loads(sent)


def measure_costs(sizes=None, rounds=ROUNDS):
    """(held, mib) -> median seconds of (bare fork, measure_fork, raw floor), each in a fresh child."""
    return {(held, mib): _in_a_fresh_child(_costs_of, held, mib, rounds)
            for held in HELD for mib in sizes or _sizes()}


class MeasuringCost:
    params = [HELD, _sizes()]
    param_names = ["held", "mib"]
    unit = "ratio"

    # Every parent built and timed once per environment, for every figure.
    def setup_cache(self):
        return measure_costs()

    setup_cache.timeout = 1800

    def setup(self, costs, held, mib):
        self.bare, self.measured, self.floor = costs[(held, mib)]

    def track_measuring_vs_raw_floor(self, costs, held, mib):
        return (self.measured - self.bare) / self.floor

    def track_measure_fork_vs_bare_fork(self, costs, held, mib):
        return self.measured / self.bare

    def track_measuring_ms(self, costs, held, mib):
        return (self.measured - self.bare) * 1000
    track_measuring_ms.unit = "ms"

    def track_raw_floor_ms(self, costs, held, mib):
        return self.floor * 1000
    track_raw_floor_ms.unit = "ms"


def main():
    names = {"bytearray": "bytearray (4 KiB pages)", "list_int": "list of ints",
             "hugepage_ndarray": "huge-page numpy array"}
    rounds = int(os.environ.get("COWMEM_BENCH_COST_ROUNDS", ROUNDS))
    print(f"median of {rounds} rounds, each: bare fork, measure_fork, raw floor, in turn")
    print("| parent holds | bare fork | `measure_fork` | its own time | raw floor: two pagemap reads "
          "| own time / floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for (held, mib), (bare, measured, floor) in measure_costs([100, 1024], rounds).items():
        size = f"{mib} MiB" if mib < 1024 else f"{mib // 1024} GiB"
        print(f"| {size} {names[held]} | {bare * 1e3:.1f} ms | {measured * 1e3:.1f} ms "
              f"| {(measured - bare) * 1e3:.1f} ms | {floor * 1e3:.1f} ms | {(measured - bare) / floor:.2f}x |",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
