"""A process's mappings, from ``/proc/PID/maps`` (or the PROCMAP_QUERY ioctl on it)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, List, Sequence

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
# each), which is most of what reading maps costs.  Called through ctypes,
# whose code a measuring child runs anyway: each page of a module's code
# that a forked child runs first costs it a fault.
_QUERY_SIZE = struct.calcsize("=9Q4I2Q")   # struct procmap_query
_PROCMAP_QUERY = (3 << 30) | (_QUERY_SIZE << 16) | (ord("f") << 8) | 17   # _IOWR('f', 17, ...)
_QUERY_WRITABLE, _QUERY_COVERING_OR_NEXT = 0x02, 0x10
_VMA_SHARED = 0x08
# The struct as 64-bit words: size, query_flags, query_addr in; vma_start,
# vma_end, vma_flags out.  The name and build-id sizes stay 0, so the
# kernel fetches neither.
_SIZE, _FLAGS, _ADDR, _START, _END, _VMA_FLAGS = range(6)
_QUERY_WORDS = ctypes.c_uint64 * (_QUERY_SIZE // 8)
_ioctl = ctypes.CDLL(None, use_errno=True).ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int
_query_missing: List[bool] = []


def private_writable_now(path: str = MAPS_PATH) -> List[Range]:
    """The ranges of the private writable mappings of the process ``path`` names, now.

    One ioctl per writable mapping where the kernel has PROCMAP_QUERY,
    else from the maps' text.
    """
    queried = _queried(path, list)
    if queried is not None:
        return queried
    return private_writable_ranges(parse_maps(read_maps_text(path), private_writable_only=True))


def private_writable_are(expected: Sequence[Range], path: str = MAPS_PATH) -> bool:
    """Whether the private writable mappings of the process ``path`` names are ``expected`` now.

    With PROCMAP_QUERY, each is compared as it is found, and no list of
    them is made: a forked child that checks writes fewer pages.
    """
    queried = _queried(path, lambda found: _same(found, expected))
    return private_writable_now(path) == list(expected) if queried is None else queried


def _same(found: Iterable[Range], expected: Sequence[Range]) -> bool:
    count = 0
    for found_range in found:
        if count == len(expected) or found_range != expected[count]:
            return False
        count += 1
    return count == len(expected)


def _queried(path: str, use: Callable[[Iterator[Range]], Any]) -> Any:
    """``use`` of the private writable ranges as PROCMAP_QUERY finds them; None without it."""
    if _query_missing:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        return use(_query_private_writable(fd))
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL):
            raise
        _query_missing.append(True)
        return None
    finally:
        os.close(fd)


def _query_private_writable(fd: int) -> Iterator[Range]:
    query = _QUERY_WORDS(_QUERY_SIZE, _QUERY_WRITABLE | _QUERY_COVERING_OR_NEXT)
    address = ctypes.addressof(query)
    while True:
        if _ioctl(fd, _PROCMAP_QUERY, address):
            error = ctypes.get_errno()
            if error == errno.ENOENT:
                return  # no mapping at or above the address asked for
            raise OSError(error, os.strerror(error))
        if not query[_VMA_FLAGS] & _VMA_SHARED:
            yield query[_START], query[_END]
        query[_ADDR] = query[_END]


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
