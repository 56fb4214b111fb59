"""A storm of SIGINTs into loops of measure_fork and run_workers; run by test_interrupts.py.

    python tests/storm.py MODE COUNT SEED    (MODE: plain, explain, workers or locate)

Each round starts one measurement and has a separate sender process
deliver one SIGINT at a random moment within it, then waits until that
signal has surfaced as a KeyboardInterrupt (inside the call, or after it
when the call finished first).  The access forks a grandchild that would
sleep for a minute.  After each round it checks that nothing of cowmem's
is left: this process is a child subreaper, so a grandchild orphaned by
its parent's death is reparented here and can be seen, alive or not yet
reaped, like any of cowmem's own children.  A dead grandchild is told
from an unreaped child of cowmem's by its process group: a child leads
its own, a grandchild is in its parent's.  Prints one JSON object.

``locate`` locates a list's memory (``Regions``), which forks a helper,
while a second thread runs, as in a program with threads: the kernel may
hand the SIGINT to either.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil

from cowmem import Regions, measure_fork
from cowmem.workers import run_workers

PR_SET_CHILD_SUBREAPER = 36
PAGE = mmap.PAGESIZE

DATA = bytearray(b"\x01") * (2000 * PAGE)
VIEW = np.frombuffer(DATA, np.uint8)
LIST = list(range(200_000))

SENDER = """
import os, signal, sys, time
target = int(sys.argv[1])
for line in sys.stdin:
    time.sleep(float(line))
    os.kill(target, signal.SIGINT)
"""


def spawn_grandchild() -> None:
    """Fork a process that would sleep for a minute."""
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)


def access() -> None:
    spawn_grandchild()
    VIEW[::PAGE] = 2


def worker_access(data: object) -> None:
    access()


def round_of(mode: str) -> None:
    if mode == "workers":
        run_workers(worker_access, None, workers=2, start_method="fork")
    elif mode == "locate":
        Regions({"list": LIST})
    else:
        measure_fork(access, explain=mode == "explain")


def leftovers(sender: int) -> list:
    """cowmem's processes still alive or unreaped: every child of this process but the sender,
    and the dead grandchildren.

    Orphaned grandchildren arrive here once their parent is reaped; dead
    ones are reaped here.  A process just killed may take a moment to
    die: give it up to a second.
    """
    deadline = time.monotonic() + 1.0
    while True:
        left = []
        for child in psutil.Process().children():
            if child.pid == sender:
                continue
            try:
                zombie = child.status() == psutil.STATUS_ZOMBIE
                group = os.getpgid(child.pid)
            except (psutil.NoSuchProcess, ProcessLookupError):
                continue
            if zombie and group not in (child.pid, os.getpgrp()):
                os.waitpid(child.pid, 0)  # a grandchild, dead
                continue
            left.append({"pid": child.pid, "zombie": zombie, "leads_group": group == child.pid})
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


def _idle() -> None:
    while True:
        time.sleep(0.0005)


def main() -> None:
    mode, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Python leaves SIGINT ignored when it starts so (a shell's background
    # job, nohup): the storm needs it to raise KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(os.getpid())],
                              stdin=subprocess.PIPE, text=True)
    rng = random.Random(seed)
    if mode == "locate":
        threading.Thread(target=_idle, daemon=True).start()
    round_of(mode)  # warm: the first round probes the kernel once
    took = []
    for _ in range(5):
        start = time.perf_counter()
        round_of(mode)
        took.append(time.perf_counter() - start)
    span = min(took)  # signals at random moments of the shortest round: most land inside
    fds_before = len(os.listdir("/proc/self/fd"))
    summary = {"mode": mode, "sent": 0, "before": 0, "inside": 0, "after": 0, "twice": 0, "other": [],
               "leftovers": [],
               "round_ms": round(span * 1e3, 1)}
    for _ in range(count):
        delay = rng.uniform(0, span)
        summary["sent"] += 1
        seen, started = False, False
        try:
            # A signal sent at once may come before the call starts: counted apart.
            sender.stdin.write(f"{delay}\n")
            sender.stdin.flush()
            started = True
            try:
                round_of(mode)
            except KeyboardInterrupt:
                seen = True
                summary["inside"] += 1
            except BaseException as exc:  # any other exception is the failure looked for
                summary["other"].append(f"{type(exc).__name__}: {exc}")
            # The call ended first: the signal surfaces while waiting here.
            deadline = time.monotonic() + delay + 10
            while not seen and time.monotonic() < deadline:
                time.sleep(0.001)
        except KeyboardInterrupt:
            summary["twice" if seen else "after" if started else "before"] += 1
        try:
            time.sleep(0.005)  # a second KeyboardInterrupt for the one signal would surface here
        except KeyboardInterrupt:
            summary["twice"] += 1
        summary["leftovers"] += leftovers(sender.pid)
    summary["fds_leaked"] = len(os.listdir("/proc/self/fd")) - fds_before
    sender.stdin.close()
    sender.wait()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
