"""Which pages a process wrote, and when, from the kernel's own record of its page faults.

After a fork every page of private memory is write-protected in both
processes, so the first write to each page faults, and a copy is made
only in such a fault.  The kernel's x86 tracepoints
``exceptions:page_fault_user`` and ``exceptions:page_fault_kernel`` (a
write of the kernel's to user memory, as ``read()`` into it) log each
fault's address and error code (bit 1: a write), in order with the lines
a process writes to ``trace_marker``.  So a page copied by
what ran between two markers has a fault between them: a page a meter
counts as the access's copy, whose first fault came before the access
began or after it ended, was written by something else (the meter's own
work, if nothing else ran).

Each trace uses an instance of its own (``instances/NAME``), with its own
buffer and settings, so that traces of other runs on the machine do not
mix with it.  Needs root and tracefs (``mount -t tracefs nodev
/sys/kernel/tracing``).  Written from the kernel's tracing documentation
(Documentation/trace/ftrace.rst, events.rst); it shares no code with cowmem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

PAGE_SHIFT = 12
TRACEFS = "/sys/kernel/tracing"
EVENTS = ("exceptions/page_fault_user", "exceptions/page_fault_kernel")
# Per CPU: room for every fault of a measurement of a large parent, none overwritten.
BUFFER_KB = 16384

# "  python3-4242    [001] d..1.  1234.567890: page_fault_user: address=0x7f.. ip=0x.. error_code=0x7"
_LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(.*?\)\s+)?\[\d+\]\s+\S+\s+[\d.]+:\s+"
                   r"(?P<event>\w+):\s+(?P<rest>.*)$")
_FAULT = re.compile(r"\baddress=(0x[0-9a-f]+)\s+ip=(\S+)\s+error_code=(0x[0-9a-f]+)")
_WRITE = 0x2


def missing() -> Optional[str]:
    """Why fault traces cannot be taken here, or None."""
    if os.geteuid() != 0:
        return "tracing page faults needs root"
    if not all(os.path.isdir(os.path.join(TRACEFS, "events", e)) for e in EVENTS):
        return (f"no tracefs with the page-fault tracepoints at {TRACEFS} "
                f"(as root: mount -t tracefs nodev {TRACEFS})")
    return None


@dataclass(frozen=True)
class Event:
    pid: int
    page: Optional[int]    # the page number a write faulted on; None for a marker
    marker: Optional[str]  # the marker's text; None for a fault
    ip: str = ""           # the faulting instruction: an address, or a kernel symbol


class FaultTrace:
    """Page faults of a process and of every process it forks from now on, in order, with markers."""

    def __init__(self) -> None:
        self.dir = os.path.join(TRACEFS, "instances", f"cowmem-test-{os.getpid()}")
        os.mkdir(self.dir)
        try:
            self._write("buffer_size_kb", str(BUFFER_KB))
            self._write("options/event-fork", "1")
            self.marker = os.open(os.path.join(self.dir, "trace_marker"), os.O_WRONLY)
        except BaseException:
            os.rmdir(self.dir)
            raise

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(value)

    def start(self, pid: int) -> None:
        """Trace ``pid`` and, from now on, the processes it forks."""
        self._write("trace", "")
        self._write("set_event_pid", str(pid))
        for event in EVENTS:
            self._write(f"events/{event}/enable", "1")

    def mark(self, text: bytes) -> None:
        """A marker line, in order with the faults (one write to ``self.marker``, an fd)."""
        os.write(self.marker, text)

    def stop(self) -> List[Event]:
        """The markers and write faults since ``start``, in order; AssertionError if the buffer lost any."""
        for event in EVENTS:
            self._write(f"events/{event}/enable", "0")
        lost = self._overruns()
        assert not lost, f"the trace buffer overwrote {lost} events: raise BUFFER_KB"
        events = []
        with open(os.path.join(self.dir, "trace")) as f:
            for line in f:
                found = _LINE.match(line)
                if found is None:
                    continue
                pid, kind, rest = int(found["pid"]), found["event"], found["rest"]
                if kind == "tracing_mark_write":
                    events.append(Event(pid, None, rest.strip()))
                elif kind.startswith("page_fault_"):
                    fault = _FAULT.search(rest)
                    if fault is not None and int(fault.group(3), 16) & _WRITE:
                        events.append(Event(pid, int(fault.group(1), 16) >> PAGE_SHIFT, None,
                                            fault.group(2)))
        return events

    def _overruns(self) -> int:
        total = 0
        per_cpu = os.path.join(self.dir, "per_cpu")
        for cpu in os.listdir(per_cpu):
            with open(os.path.join(per_cpu, cpu, "stats")) as f:
                for line in f:
                    if line.startswith("overrun:"):
                        total += int(line.split()[1])
        return total

    def close(self) -> None:
        os.close(self.marker)
        for event in EVENTS:
            self._write(f"events/{event}/enable", "0")
        self._write("set_event_pid", "")
        os.rmdir(self.dir)

    def __enter__(self) -> "FaultTrace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def code_at(ip: str, maps: List[Tuple[int, int, int, str]]) -> str:
    """An instruction address as ``file+offset`` (``maps``: ``mappings()``), for ``addr2line`` or ``nm``."""
    if ip.startswith("0x"):
        address = int(ip, 16)
        for lo, hi, offset, path in maps:
            if lo <= address < hi:
                return f"{os.path.basename(path)}+{address - lo + offset:#x}"
    return ip


def mappings() -> List[Tuple[int, int, int, str]]:
    """This process's file mappings (a forked child has the same): (start, stop, file offset, path)."""
    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 5:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                found.append((lo, hi, int(fields[2], 16), fields[5]))
    return found


def first_faults_between(events: List[Event], begin: str, end: str) -> Tuple[int, Dict[int, Tuple[str, str]]]:
    """The process that wrote marker ``begin``, and for each page it wrote
    with a fault, where its first such write fell ("before", "between" or
    "after" the markers) and the instruction that made it."""
    (pid,) = {e.pid for e in events if e.marker == begin}
    maps = mappings()
    where: Dict[int, Tuple[str, str]] = {}
    moment = "before"
    for e in events:
        if e.pid != pid:
            continue
        if e.marker == begin:
            moment = "between"
        elif e.marker == end:
            moment = "after"
        elif e.page is not None:
            if e.page not in where:
                where[e.page] = (moment, code_at(e.ip, maps))
    assert moment == "after", f"marker {end!r} not found"
    return pid, where
