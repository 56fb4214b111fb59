"""The JSON output: one object per line, per sample and watched process.

Every object has ``time`` (seconds since the epoch), ``elapsed`` (seconds
since the first sample), ``sample``, ``pid``, ``parent`` (the pid a child
is compared with; null for a parent), ``role``, ``state``, ``name``,
``frames_readable`` and the figures in bytes (``compare.Figures.to_dict``:
``copied_bytes``, ``shared_bytes``, ``fresh_bytes``, ``unsure_bytes``,
``parent_written_bytes``, ``resident_bytes``, ``mappings``).  A process
that exited (or was orphaned) gets one last object with ``state``
"exited" (or "orphaned") and the figures of the last sample that saw it.
"""

from __future__ import annotations

import json
from typing import IO, Any, Dict, Iterator

from .watcher import Sample


def records(sample: Sample) -> Iterator[Dict[str, Any]]:
    """The objects of one sample: its rows, then the processes gone since the last."""
    for row in (*sample.rows, *sample.left):
        record: Dict[str, Any] = {
            "time": round(sample.time, 3), "elapsed": round(sample.elapsed, 3), "sample": sample.index,
            "pid": row.pid, "parent": row.parent, "role": row.role, "state": row.state, "name": row.name,
            "frames_readable": sample.frames_readable,
        }
        record.update(row.figures.to_dict())
        yield record


def write(sample: Sample, stream: IO[str]) -> None:
    """Write one sample's objects, one per line, each flushed on its own.

    A command started with ``watch -- COMMAND`` shares the stream; a pipe
    keeps a write of up to 4096 bytes whole, so flushing each line (a few
    hundred bytes) keeps the command's output from landing inside one.
    """
    for record in records(sample):
        stream.write(json.dumps(record) + "\n")
        stream.flush()
