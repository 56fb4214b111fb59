"""A process's mappings, from ``/proc/PID/maps`` (or the PROCMAP_QUERY ioctl on it)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass, replace
from typing import Iterable, List, Sequence

from .ranges import Range, subtract_ranges

MAPS_PATH = "/proc/self/maps"


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/self/maps``: ``[start, stop)`` in bytes."""

    start: int
    stop: int
    perms: str
    label: str

    @property
    def private_writable(self) -> bool:
        """Writable and private: the only kind of mapping fork shares copy-on-write."""
        return self.perms[1] == "w" and self.perms[3] == "p"


def read_maps_text(path: str = MAPS_PATH) -> bytes:
    """The raw text of a maps file, for comparing with another reading."""
    with open(path, "rb", buffering=0) as f:
        return f.readall()


def parse_maps(text: bytes, private_writable_only: bool = False) -> List[Mapping]:
    """The mappings of a maps file's text, in address order (only the private writable ones, if asked)."""
    maps = []
    for line in text.splitlines():
        # "start-stop perms offset dev inode [name]"; the name may hold spaces.
        if private_writable_only:
            perms = line.find(b" ") + 1
            if line[perms + 1:perms + 2] != b"w" or line[perms + 3:perms + 4] != b"p":
                continue
        fields = line.split(None, 5)
        start, _, stop = fields[0].partition(b"-")
        maps.append(Mapping(int(start, 16), int(stop, 16), fields[1].decode(),
                            fields[5].decode(errors="surrogateescape") if len(fields) > 5 else "[anon]"))
    return maps


def read_maps(path: str = MAPS_PATH) -> List[Mapping]:
    """A process's mappings (the calling process's by default), in address order."""
    return parse_maps(read_maps_text(path))


def private_writable_ranges(maps: Iterable[Mapping]) -> List[Range]:
    """The ``[start, stop)`` ranges of the private writable mappings."""
    return [(m.start, m.stop) for m in maps if m.private_writable]


# PROCMAP_QUERY (Linux 6.11+, include/uapi/linux/fs.h): one mapping per
# ioctl on a maps file, without formatting the whole text (a file name
# each), which is most of what reading maps costs.
_QUERY = struct.Struct("=9Q4I2Q")   # struct procmap_query
_PROCMAP_QUERY = (3 << 30) | (_QUERY.size << 16) | (ord("f") << 8) | 17   # _IOWR('f', 17, ...)
_QUERY_WRITABLE, _QUERY_COVERING_OR_NEXT = 0x02, 0x10
_VMA_SHARED = 0x08
_query_missing: List[bool] = []


def private_writable_now(path: str = MAPS_PATH) -> List[Range]:
    """The ranges of the private writable mappings of the process ``path`` names, now.

    One ioctl per writable mapping where the kernel has PROCMAP_QUERY,
    else from the maps' text.
    """
    if not _query_missing:
        fd = os.open(path, os.O_RDONLY)
        try:
            return _query_private_writable(fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
            _query_missing.append(True)
        finally:
            os.close(fd)
    return private_writable_ranges(parse_maps(read_maps_text(path), private_writable_only=True))


def _query_private_writable(fd: int) -> List[Range]:
    query = bytearray(_QUERY.size)
    found: List[Range] = []
    addr = 0
    while True:
        _QUERY.pack_into(query, 0, _QUERY.size, _QUERY_WRITABLE | _QUERY_COVERING_OR_NEXT, addr, *[0] * 12)
        try:
            fcntl.ioctl(fd, _PROCMAP_QUERY, query)
        except FileNotFoundError:
            return found  # no mapping at or above addr
        start, stop, flags = _QUERY.unpack_from(query)[3:6]
        if not flags & _VMA_SHARED:
            found.append((start, stop))
        addr = stop


def subtract_from_maps(maps: Sequence[Mapping], remove: Sequence[Range]) -> List[Mapping]:
    """``subtract_ranges`` on mappings: each piece keeps its mapping's perms and label."""
    out: List[Mapping] = []
    for m in maps:
        if any(start < m.stop and m.start < stop for start, stop in remove):
            out.extend(replace(m, start=start, stop=stop)
                       for start, stop in subtract_ranges([(m.start, m.stop)], remove))
        else:
            out.append(m)
    return out
