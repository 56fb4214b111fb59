"""Shared test set-up."""

import ctypes
import ctypes.util
import signal

# glibc raises its mmap threshold each time a large mmapped block is freed,
# so after a few tests a big array may come from the brk heap instead of a
# mapping of its own, and miss the huge pages a fresh process would get.
# Setting the threshold pins it (and turns the dynamic raising off).
_M_MMAP_THRESHOLD = -3
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if hasattr(_libc, "mallopt"):
    _libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)

# A shell's background job (nohup too) starts with SIGINT ignored, and
# Python leaves it so, as does every process started from here: the Ctrl-C
# tests would then wait out their timeouts for a KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
