"""Test helpers for `cowmem watch`: targets to watch, and watch run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Set

TARGETS = Path(__file__).with_name("watch_targets.py")


class Target:
    """``watch_targets.py`` running in a session of its own (see its docstring)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(TARGETS), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.children: List[int] = []
        if "--late" in args:
            self.parent: int = self._event("started")["parent"]
        else:
            self._forked()

    def begin(self) -> None:
        """With ``--late``: let the parent make its buffer and fork."""
        self._say("begin")
        self._forked()

    def _forked(self) -> None:
        forked = self._event("forked")
        self.parent = forked["parent"]
        self.children = forked["children"]
        self.grandchild: int = forked["grandchild"]
        self.buffer_page: int = forked["buffer"]

    def _say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _event(self, name: str) -> Dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the target exited (status {self.proc.wait()}) before {name!r}")
        event = json.loads(line)
        assert event["event"] == name, event
        return event

    def go(self) -> None:
        """Let the children write, and wait until they have."""
        self._say("go")
        self._event("written")

    def pages(self, first: int, count: int, stride: int = 1) -> set:
        """Page numbers (address >> 12) of ``count`` buffer pages from page ``first`` of it."""
        return {self.buffer_page + first + i * stride for i in range(count)}

    def stop(self) -> None:
        """End the target and everything it forked (its session's process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def cowmem(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m cowmem ARGS`` in a new interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cowmem", *args], capture_output=True, text=True,
                          timeout=timeout)


def records(stdout: str) -> List[Dict]:
    """The JSON objects of `cowmem watch --json`, one per line (every line must parse)."""
    return [json.loads(line) for line in stdout.splitlines()]


def by_pid(objects: Sequence[Dict], sample: Optional[int] = None) -> Dict[int, Dict]:
    """The objects of one sample (the last by default), keyed by pid."""
    last = max(o["sample"] for o in objects) if sample is None else sample
    return {o["pid"]: o for o in objects if o["sample"] == last}


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Read(NamedTuple):
    """What one worker says it read: page numbers, and bytes by type on them."""

    pages: Set[int]
    heads: Dict[str, int]


def client(port: int, parts: int, first: int, count: int, concurrency: int = 3) -> Dict[int, Read]:
    """Ask watch_app for parts ``first`` .. ``first + count - 1`` of ``parts``,
    ``concurrency`` at a time; what each worker (by pid) says it read."""
    def get(part: int) -> Dict:
        url = f"http://127.0.0.1:{port}/read?part={part}&of={parts}"
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())

    read_by: Dict[int, Read] = {}
    with ThreadPoolExecutor(concurrency) as pool:
        for answer in pool.map(get, range(first, first + count)):
            read = read_by.setdefault(answer["pid"], Read(set(), {}))
            read.pages.update(answer["pages"])
            for name, held in answer["heads"].items():
                read.heads[name] = read.heads.get(name, 0) + held
    return read_by
