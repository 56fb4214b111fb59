"""A multiprocessing.Pool (fork) over watch_app's data, for `cowmem watch` to watch.

The parent builds the data (importing watch_app), starts a Pool of
WORKERS, and for each line on stdin (``round FIRST COUNT``) maps
``watch_app.read`` over parts FIRST .. FIRST + COUNT - 1 of PARTS, one
part per task, answering with one JSON line: the pages each worker (by
pid) read.  The first line it writes gives its pid and its workers'.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time

import watch_app

WORKERS, PARTS = 3, 24


def task(part: int):
    pages, _ = watch_app.read(part, PARTS)
    time.sleep(0.1)  # hold the worker a moment, so that every worker gets a share of the parts
    return os.getpid(), sorted(pages)


def main() -> None:
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        workers = sorted(p.pid for p in multiprocessing.active_children())
        print(json.dumps({"parent": os.getpid(), "workers": workers}), flush=True)
        for line in sys.stdin:
            _, first, count = line.split()
            read_by = {}
            for pid, pages in pool.map(task, range(int(first), int(first) + int(count)), chunksize=1):
                read_by.setdefault(pid, set()).update(pages)
            print(json.dumps({str(pid): sorted(pages) for pid, pages in read_by.items()}), flush=True)


if __name__ == "__main__":
    main()
