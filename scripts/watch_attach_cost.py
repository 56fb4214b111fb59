"""What cowmem.watch.attach() costs the parent's sharing, measured side by side.

A parent imports tests/watch_app.py (its dict of str and list of ints),
forks two witness children that only sleep, then calls attach() (or,
for the controls, does nothing, or only imports what attach() imports),
then forks WORKERS workers that each read part i
of WORKERS of the data and sleep.  One `Watcher` sample then gives:

* the witnesses' parent-written pages: what the parent itself wrote
  while attaching (two witnesses hold the pages as they were before:
  shared between them, they are told from the witnesses' own copies);
* each worker's copied pages: whether a worker forked after attach()
  copies more for the same reads (attach leaving the heap otherwise).

ROUNDS runs of each, alternately; prints the medians and attach()'s time.

    .venv/bin/python scripts/watch_attach_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3

PARENT = r"""
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import watch_app
attach = sys.argv[2] == "attach"

def sleep_forever():
    while True:
        signal.pause()

witnesses = []
for _ in range(2):  # two: the pages the parent rewrites are then still shared between them
    witnesses.append(os.fork())
    if witnesses[-1] == 0:
        sleep_forever()
took = 0.0
if sys.argv[2] == "import":
    import cowmem.locate, cowmem.watch.hook
if attach:
    import cowmem.watch
    t = time.perf_counter()
    cowmem.watch.attach()
    took = time.perf_counter() - t
r, w = os.pipe()
workers = []
for i in range(int(sys.argv[3])):
    pid = os.fork()
    if pid == 0:
        watch_app.read(i, int(sys.argv[3]))
        os.write(w, b"x")
        sleep_forever()
    workers.append(pid)
for _ in workers:
    os.read(r, 1)
print(json.dumps({"witnesses": witnesses, "workers": workers, "seconds": took}), flush=True)
sleep_forever()
"""


def run(mode: str):
    from cowmem.watch.watcher import Watcher

    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(ROOT / "tests"), mode, str(WORKERS)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        started = json.loads(proc.stdout.readline())
        rows = {row.pid: row.figures for row in Watcher(proc.pid).sample().children()}
        return (statistics.mean(rows[pid].parent_written_bytes for pid in started["witnesses"]),
                statistics.mean(rows[pid].copied_bytes for pid in started["workers"]), started["seconds"])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for name in os.listdir("/tmp"):
            if name.startswith(f"cowmem-watch-{proc.pid}-"):
                os.remove(os.path.join("/tmp", name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = {"control": [], "import": [], "attach": []}
    for _ in range(args.rounds):
        for mode in results:
            results[mode].append(run(mode))
    mib = 2**20
    for mode, runs in results.items():
        written, copied, seconds = zip(*runs)
        print(f"{mode:>8}: parent wrote {statistics.median(written) / mib:6.2f} MiB after the witnesses' fork "
              f"(runs: {', '.join(f'{w / mib:.2f}' for w in written)}); each worker copied "
              f"{statistics.median(copied) / mib:6.2f} MiB (runs: {', '.join(f'{c / mib:.2f}' for c in copied)})"
              + (f"; attach() took {statistics.median(seconds):.2f} s" if mode == "attach" else ""))


if __name__ == "__main__":
    main()
