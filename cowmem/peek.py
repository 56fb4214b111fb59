"""Reading this process's own memory by address.

Two readers: :func:`gather` reads a value at each of many addresses at
once, for fields of live objects whose layout has been verified (a wrong
address there would crash the process); :class:`SafeReader` reads through
``/proc/self/mem``, where an unmapped address is an OSError, for checking
a layout before trusting it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class _Exposed:
    """Memory exposed to numpy through ``__array_interface__``, without copying."""

    __slots__ = ("__array_interface__",)

    def __init__(self, start: int, count: int, dtype: np.dtype) -> None:
        self.__array_interface__ = {"data": (start, True), "shape": (count,), "typestr": dtype.str,
                                    "version": 3}


def view(start: int, count: int, dtype: Any) -> np.ndarray:
    """``count`` values of ``dtype`` at address ``start``, as an array viewing them in place."""
    dtype = np.dtype(dtype)
    if count == 0:
        return np.zeros(0, dtype)
    return np.asarray(_Exposed(start, count, dtype))


def gather(addresses: np.ndarray, dtype: Any) -> np.ndarray:
    """The value of ``dtype`` at each of ``addresses`` (uint64, each aligned to the dtype's size).

    Only the addresses given are read: one array spans them all, but numpy
    reads nothing else of it.
    """
    dtype = np.dtype(dtype)
    addresses = np.asarray(addresses, np.uint64)
    if addresses.size == 0:
        return np.zeros(0, dtype)
    size = np.uint64(dtype.itemsize)
    low = int(addresses.min()) // dtype.itemsize * dtype.itemsize
    count = (int(addresses.max()) - low) // dtype.itemsize + 1
    return view(low, count, dtype)[(addresses - np.uint64(low)) // size]


_ADDRESS_LIMIT = 1 << 63  # pread's offset is an off_t


class SafeReader:
    """Reads of this process's memory that fail cleanly on an unmapped address (OSError)."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at ``address``; OSError if any of them is not mapped."""
        if not 0 <= address < _ADDRESS_LIMIT:
            # A word that is no pointer (a wrong layout fact) can read as one
            # past what pread's offset takes: OverflowError, not OSError.
            raise OSError(f"no memory at {address:#x}")
        data = os.pread(self._fd, size, address)
        if len(data) != size:
            raise OSError(f"only {len(data)} of {size} bytes readable at {address:#x}")
        return data

    def word(self, address: int) -> int:
        """The unsigned 64-bit word at ``address``."""
        return int.from_bytes(self.read(address, 8), "little")

    def byte(self, address: int) -> int:
        return self.read(address, 1)[0]

    def words(self, address: int, count: int) -> np.ndarray:
        """``count`` unsigned 64-bit words from ``address`` on."""
        return np.frombuffer(self.read(address, 8 * count), np.uint64)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "SafeReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
