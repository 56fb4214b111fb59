"""``cowmem watch``: each forked child's copied, shared and fresh memory, live."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import List, Optional

from ..cli import UsageError
from .arguments import scale, size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Watch a parent process and every process forked from it: for each child, the pages it "
        "copied from the parent, those it still shares, and its own fresh memory. Needs root "
        "(frame numbers). Ctrl-C stops watching; the watched processes are left as they are.")
    parser.usage = "%(prog)s (--parent PID | -- COMMAND ...) [options]"
    parser.add_argument("--parent", type=int, metavar="PID", help="watch this running process and its children")
    parser.add_argument("program", nargs="*", metavar="COMMAND",
                        help="after --: start this command (its output goes where watch's goes) "
                             "and watch the process it starts")
    parser.add_argument("--interval", type=scale, default=1.0, metavar="SECONDS",
                        help="seconds between samples (default 1)")
    parser.add_argument("--once", action="store_true", help="take one sample and exit")
    parser.add_argument("--count", type=size, metavar="N", help="take N samples and exit")
    parser.add_argument("--json", action="store_true",
                        help="write one JSON object per sample and process (one per line) instead of the table")
    parser.add_argument("--plot", metavar="FILE",
                        help="at the end, write each child's copied MiB over time (.png, .svg or .pdf)")


def run(args: argparse.Namespace) -> int:
    from ..watch import json_lines, plot
    from ..watch.table import LiveTable
    from ..watch.watcher import Watcher

    if (args.parent is None) == (not args.program):
        raise UsageError("give either --parent PID or -- COMMAND ...")
    if args.once and args.count:
        raise UsageError("--once and --count exclude each other")
    if args.plot:
        try:
            plot.check(args.plot)
        except plot.PlotUnavailableError as exc:
            raise UsageError(str(exc)) from None
    count = 1 if args.once else args.count
    started = _start(args.program) if args.program else None
    try:
        watcher = Watcher(started.pid if started else args.parent)
    except BaseException:
        if started is not None:
            _leave(started)
        raise
    table = None if args.json else LiveTable(sys.stdout, args.interval)
    timeline = plot.Timeline()
    taken = 0
    try:
        if started is not None and count == 1:
            time.sleep(args.interval)  # one sample of a command that has not yet started anything says little
        while True:
            began = time.monotonic()
            sample = watcher.sample()
            taken += 1
            if args.json:
                json_lines.write(sample, sys.stdout)
            else:
                table.show(sample)
            timeline.add(sample)
            if sample.parent_exited or (count is not None and taken >= count):
                break
            _reap(started)
            time.sleep(max(0.0, args.interval - (time.monotonic() - began)))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: finish the outputs, leave the processes be
    finally:
        if args.plot:
            if timeline.series:
                timeline.save(args.plot)
            else:
                print("cowmem watch: no forked child was seen: no plot written", file=sys.stderr)
        if started is not None:
            _leave(started)
    return 0


def _start(command: List[str]) -> subprocess.Popen:
    """Start the command in a session of its own, so that the terminal's
    Ctrl-C, meant for watch, does not reach it."""
    try:
        return subprocess.Popen(command, start_new_session=True)
    except OSError as exc:
        raise UsageError(f"cannot start {command[0]!r}: {exc.strerror}") from None


def _reap(started: Optional[subprocess.Popen]) -> None:
    # The started command is watch's own child: reaped once it exits, so
    # that it reads as gone rather than as a zombie kept by watch.
    if started is not None:
        started.poll()


def _leave(started: subprocess.Popen) -> None:
    if started.poll() is None:
        print(f"cowmem watch: {started.args[0]} (pid {started.pid}) still runs; "
              f"stop it with: kill {started.pid}", file=sys.stderr)
