"""Shared test set-up."""

import ctypes
import ctypes.util

# glibc raises its mmap threshold each time a large mmapped block is freed,
# so after a few tests a big array may come from the brk heap instead of a
# mapping of its own, and miss the huge pages a fresh process would get.
# Setting the threshold pins it (and turns the dynamic raising off).
_M_MMAP_THRESHOLD = -3
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if hasattr(_libc, "mallopt"):
    _libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
