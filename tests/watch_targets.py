"""Processes for `cowmem watch` to watch, whose copies are known by construction.

Run as a script (``python tests/watch_targets.py ...``) in a session of its
own, so that a test can end it and everything it forked with one killpg.

A parent fills a private buffer of PAGES pages (one byte per page, so
every page is present) and forks CHILDREN children, STAGGER seconds
apart.  With ``--parent-writes N`` it rewrites the first N pages of the
buffer after forking the first two children.  On ``go`` (a line on
stdin), each child writes one byte in each of K pages of the buffer: the
pages ``first + i * stride`` for i < K, from page ``--from`` on; with
``--distinct`` child i starts K pages further along than child i - 1, so
that no two children write the same page.  With ``--grandchild K2`` the
first child forks a child of its own that writes K2 pages, K pages
further along than the child's.  ``--exit-after S`` makes the last child
exit S seconds after it has written; ``--parent-exits`` makes the parent exit once
every child has written (its children run on, orphaned).  With ``--late``
the parent first waits for a line on stdin, and only then makes the buffer
and forks: a watcher can see it alone before.

Every event is one JSON line on stdout: with ``--late`` first ``started``
(the parent's pid); ``forked`` (the parent's pid,
the children's and the grandchild's, the buffer's first page number),
then after ``go`` ``written``.  Without ``--wait`` the children write at
once and ``forked`` comes after they have.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import sys
import time

import numpy as np

PAGE = mmap.PAGESIZE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=30_000)
    parser.add_argument("--k", type=int, default=0)
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--stagger", type=float, default=0.0)
    parser.add_argument("--from", dest="first", type=int, default=1000)
    parser.add_argument("--distinct", action="store_true")
    parser.add_argument("--parent-writes", type=int, default=0)
    parser.add_argument("--grandchild", type=int, default=None)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--parent-exits", action="store_true")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--late", action="store_true")
    args = parser.parse_args()

    if args.late:
        say(event="started", parent=os.getpid())
        sys.stdin.readline()
    buffer = mmap.mmap(-1, args.pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(buffer, np.uint8)
    view[::PAGE] = 1
    # Every index the children will write, made before the fork so that
    # each child's own work is the same whatever K is.
    k, grand = args.k, args.grandchild or 0
    starts = [args.first + (i * k if args.distinct else 0) for i in range(args.children)]
    targets = [np.arange(s, s + k, dtype=np.intp) * PAGE + 7 for s in starts]
    grand_target = np.arange(starts[0] + k, starts[0] + k + grand, dtype=np.intp) * PAGE + 7
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    tell_r, tell_w = os.pipe()

    def write_then_wait(target, last: bool, forks_grandchild: bool) -> None:
        if forks_grandchild:
            grandchild = os.fork()
            if grandchild == 0:
                write_then_wait(grand_target, False, False)
            os.write(tell_w, b"%15d\n" % grandchild)
        os.read(go_r, 1)
        view[target] = 2
        os.write(done_w, b"w")
        if last and args.exit_after is not None:
            time.sleep(args.exit_after)
            os._exit(0)
        while True:
            signal.pause()

    children, grandchild = [], 0
    for index in range(args.children):
        if index == 2 and args.parent_writes:
            view[:args.parent_writes * PAGE:PAGE] = 3
        pid = os.fork()
        if pid == 0:
            write_then_wait(targets[index], index == args.children - 1,
                            index == 0 and args.grandchild is not None)
        children.append(pid)
        if index == 0 and args.grandchild is not None:
            grandchild = int(os.read(tell_r, 16))
        if args.stagger:
            time.sleep(args.stagger)
    writers = args.children + (args.grandchild is not None)

    def release() -> None:
        os.write(go_w, b"g" * writers)
        for _ in range(writers):
            os.read(done_r, 1)

    if not args.wait:
        release()
    say(event="forked", parent=os.getpid(), children=children, grandchild=grandchild,
        buffer=view.ctypes.data // PAGE)
    if args.wait:
        sys.stdin.readline()
        release()
        say(event="written")
    if args.parent_exits:
        os._exit(0)
    while True:
        signal.pause()


def say(**event) -> None:
    # One write per line: started by `cowmem watch -- ...`, this shares
    # watch's stdout, and print() under PYTHONUNBUFFERED writes the line and
    # its newline apart, so that one of watch's lines could land between them.
    os.write(sys.stdout.fileno(), (json.dumps(event) + "\n").encode())


if __name__ == "__main__":
    main()
