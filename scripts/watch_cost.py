"""What one `cowmem watch` sample costs, against the floor: one raw pagemap read of each process.

A parent process fills PARENT_GIB of private memory and forks WORKERS
workers; each writes its own COPY_FRACTION of it, then sleeps.  The
floor is the least any pagemap-based watcher must do: for every process,
read /proc/PID/maps and the pagemap entries of its private writable
mappings into a buffer.  Each of ROUNDS rounds times, side by side, a
first floor (new buffers) and the first sample of a new `Watcher` (which
also works out every child's origin), then a second floor and a second
sample (buffers reused).  Prints the medians and the ratios.

    .venv/bin/python scripts/watch_cost.py                 # both cores
    taskset -c 1 .venv/bin/python scripts/watch_cost.py    # one core

The machine may be shared: the ratio, taken side by side, is the figure.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import statistics
import time

import numpy as np

from cowmem._linux.maps import private_writable_ranges, read_maps
from cowmem._linux.pagemap import read_entries
from cowmem.watch.processes import tree
from cowmem.watch.watcher import Watcher


def start_parent(size: int, workers: int, fraction: float) -> int:
    """Fork the parent; it returns once every worker has written its share."""
    ready_r, ready_w = os.pipe()
    parent = os.fork()
    if parent:
        os.close(ready_w)
        for _ in range(workers):
            os.read(ready_r, 1)
        os.close(ready_r)
        return parent
    os.setpgid(0, 0)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buffer, np.uint8)
    view[::4096] = 1
    share = int(size // 4096 * fraction)
    for index in range(workers):
        if os.fork() == 0:
            view[index * share * 4096:(index + 1) * share * 4096:4096] = 2
            os.write(ready_w, b"x")
            signal.pause()
            os._exit(0)
    signal.pause()
    os._exit(0)


class Floor:
    """Raw reads of each process's pagemap into buffers made once."""

    def __init__(self, pids):
        self.pids = pids
        self.buffers = {pid: np.empty(0, np.uint64) for pid in pids}

    def read(self):
        for pid in self.pids:
            ranges = private_writable_ranges(read_maps(f"/proc/{pid}/maps"))
            need = sum(stop - start for start, stop in ranges) // 4096
            if self.buffers[pid].size < need:
                self.buffers[pid] = np.empty(need, np.uint64)
            read_entries(ranges, f"/proc/{pid}/pagemap", out=self.buffers[pid])


def timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-gib", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--copy-fraction", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    size = int(args.parent_gib * 2**30)
    parent = start_parent(size, args.workers, args.copy_fraction)
    try:
        pids = [m.info.pid for m in tree(parent)]
        firsts, warm = [], []
        for _ in range(args.rounds):
            # A first sample (a new Watcher: every child's origin worked out,
            # every buffer new) against a first floor (new buffers too) ...
            floor, watcher = Floor(pids), Watcher(parent)
            firsts.append((timed(floor.read), timed(watcher.sample)))
            # ... and a later sample against a later floor, both warm.
            warm.append((timed(floor.read), timed(watcher.sample)))
        print(f"parent {args.parent_gib:g} GiB, {args.workers} workers each copying "
              f"{args.copy_fraction:.0%} of it; {args.rounds} rounds on CPUs {sorted(os.sched_getaffinity(0))}")
        for name, pairs in (("first sample", firsts), ("later sample", warm)):
            floors, samples = zip(*pairs)
            ratios = [s / f for f, s in pairs]
            print(f"{name}: {statistics.median(samples) * 1e3:6.1f} ms, floor {statistics.median(floors) * 1e3:6.1f} ms "
                  f"(maps + pagemap of {len(pids)} processes); ratio median {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
    finally:
        os.killpg(parent, signal.SIGKILL)
        os.waitpid(parent, 0)


if __name__ == "__main__":
    main()
