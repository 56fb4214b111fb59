"""The live table: one line per watched process and a total line, in MiB.

On a terminal each sample redraws the table in place (the cursor goes
back up over the previous one); elsewhere (a pipe, a file) each sample's
table is written after the last, so nothing is lost.
"""

from __future__ import annotations

from typing import IO, List, Optional, Sequence

from .compare import Figures
from .watcher import Row, Sample

_COLUMNS = ("resident", "shared", "copied", "unsure", "fresh", "parent_written")
_HEADERS = ("RESIDENT", "SHARED", "COPIED", "UNSURE", "FRESH", "P-WROTE")
_WIDTH = 10
_NAME_WIDTH = 40
_TYPES_WIDTH = 30


def _mib(count: Optional[int], prefix: str = "") -> str:
    return "-" if count is None else f"{prefix}{count / 2**20:,.1f}"


def _cells(figures: Figures) -> List[str]:
    copied = (_mib(figures.copied_bytes) if figures.copied_bytes is not None
              else _mib(figures.copied_at_most_bytes, "<= "))
    return [_mib(figures.resident_bytes), _mib(figures.shared_bytes), copied,
            _mib(figures.unsure_bytes) if figures.copied_bytes is not None else "-",
            _mib(figures.fresh_bytes), _mib(figures.parent_written_bytes)]


def _short(command: str) -> str:
    """A command line with paths cut to their last part: "python -m gunicorn ..."."""
    return " ".join(word.rsplit("/", 1)[-1] if "/" in word else word for word in command.split(" "))


def holds(figures: Figures, shown: int = 3) -> str:
    """What the copied pages hold, as shares of the copied bytes: "61% str, 22% dict, 9% list"."""
    if not figures.types or not figures.copied_bytes:
        return ""
    top = list(figures.types.items())[:shown]
    return ", ".join(f"{100 * held / figures.copied_bytes:.0f}% {name}" for name, held in top)


def _line(pid: str, role: str, cells: Sequence[str], name: str, types: Optional[str] = None) -> str:
    held = "" if types is None else f"  {types:<{_TYPES_WIDTH}}"
    return (f"{pid:>8}  {role:<10}" + "".join(f"{cell:>{_WIDTH}}" for cell in cells)
            + held + f"  {name[:_NAME_WIDTH]}").rstrip()


def _total(children: Sequence[Row]) -> List[str]:
    def add(name: str) -> Optional[int]:
        values = [getattr(row.figures, name) for row in children]
        return None if any(v is None for v in values) else sum(values)

    total = Figures(resident_bytes=add("resident_bytes"), shared_bytes=add("shared_bytes"),
                    copied_bytes=add("copied_bytes"), fresh_bytes=add("fresh_bytes"),
                    unsure_bytes=add("unsure_bytes") or 0, parent_written_bytes=add("parent_written_bytes"),
                    copied_at_most_bytes=add("copied_at_most_bytes"))
    return _cells(total)


def render(sample: Sample, interval: Optional[float] = None) -> List[str]:
    """The lines of the table for one sample."""
    children = sample.children()
    every = f", every {interval:g} s" if interval else ""
    head = (f"cowmem watch: sample {sample.index} at {sample.elapsed:,.1f} s{every}, "
            f"{len(children)} forked child{'' if len(children) == 1 else 'ren'}, in MiB")
    typed = any(row.figures.types is not None for row in children)
    lines = [head, _line("PID", "ROLE", _HEADERS, "COMMAND", "COPIED PAGES HOLD" if typed else None)]
    for row in sample.rows:
        role = "  " * row.depth + row.role
        lines.append(_line(str(row.pid), role, _cells(row.figures), _short(row.name),
                           holds(row.figures) if typed else None))
    lines.append(_line("total", f"{len(children)} child", _total(children), "(forked children)",
                       "" if typed else None))
    lines.extend(_notes(sample))
    return lines


def _notes(sample: Sample) -> List[str]:
    notes = []
    if sample.left:
        notes.append("gone since the last sample: " + ", ".join(f"{row.pid} ({row.state})" for row in sample.left))
    if sample.parent_exited:
        notes.append("the watched parent exited: nothing more to compare with")
    if not sample.frames_readable:
        notes.append("frame numbers are unreadable (no CAP_SYS_ADMIN): COPIED is an upper bound "
                     "(copied, parent-written and fresh together), SHARED is with any process")
    return notes


class LiveTable:
    """Writes each sample's table to ``stream``, in place on a terminal.

    The sample that finds the parent gone adds its notes below the last
    table instead, so that the last figures stay on screen.
    """

    def __init__(self, stream: IO[str], interval: Optional[float] = None) -> None:
        self.stream = stream
        self.interval = interval
        self._in_place = stream.isatty()
        self._drawn = 0

    def show(self, sample: Sample) -> None:
        if sample.parent_exited:
            lines, self._drawn = _notes(sample), 0
        else:
            lines = render(sample, self.interval)
        if self._in_place and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
        elif self._drawn:
            self.stream.write("\n")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
