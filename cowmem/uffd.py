"""Linux's userfaultfd in write-protect mode, from plain Python.

The syscall goes through ctypes and the ioctls through ``fcntl.ioctl``; the
structures are the kernel's (``include/uapi/linux/userfaultfd.h``), packed
with ``struct``.  Only what cowmem's explain mode needs is here: create a
descriptor with the write-protect and exact-address features, register and
write-protect address ranges, and serve the faults (read each message, lift
the protection of its page).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import select
import struct
from typing import Callable, Sequence

from . import children
from .errors import ExplainUnavailableError

# The userfaultfd syscall number; architectures whose ioctl encoding differs
# from the generic one (powerpc, mips, sparc) are deliberately absent.
SYSCALL_NUMBERS = {"x86_64": 323, "aarch64": 282, "riscv64": 282}

UFFD_API = 0xAA
FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
FEATURE_EXACT_ADDRESS = 1 << 11      # Linux 5.18+: without it addresses are page-rounded
WANTED_FEATURES = FEATURE_PAGEFAULT_FLAG_WP | FEATURE_EXACT_ADDRESS
_FEATURE_NAMES = {FEATURE_PAGEFAULT_FLAG_WP: "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
                  FEATURE_EXACT_ADDRESS: "UFFD_FEATURE_EXACT_ADDRESS"}

REGISTER_MODE_WP = 1 << 1
WRITEPROTECT_MODE_WP = 1 << 0

EVENT_PAGEFAULT = 0x12
PAGEFAULT_FLAG_WP = 1 << 1


def _iowr(nr: int, size: int) -> int:
    # The generic _IOC encoding: direction read|write, size, type 0xAA, number.
    return (3 << 30) | (size << 16) | (0xAA << 8) | nr


_API = struct.Struct("=QQQ")                  # api, features, ioctls
_REGISTER = struct.Struct("=QQQQ")            # start, len, mode, ioctls
_WRITEPROTECT = struct.Struct("=QQQ")         # start, len, mode
_RANGE = struct.Struct("=QQ")                 # start, len
UFFDIO_API = _iowr(0x3F, _API.size)
UFFDIO_REGISTER = _iowr(0x00, _REGISTER.size)
UFFDIO_WRITEPROTECT = _iowr(0x06, _WRITEPROTECT.size)
# _IOR, not _IOWR: the kernel header's own historical quirk for UFFDIO_WAKE.
UFFDIO_WAKE = (2 << 30) | (_RANGE.size << 16) | (0xAA << 8) | 0x02

# struct uffd_msg for a page fault: event (u8), 7 reserved bytes, flags (u64),
# address (u64), thread id (u32, zero without UFFD_FEATURE_THREAD_ID), 4 bytes
# of union padding.
MESSAGE = struct.Struct("=B7xQQI4x")
MESSAGE_SIZE = MESSAGE.size                   # 32
PAGE_SIZE = mmap.PAGESIZE


_libc: list = []


def libc() -> ctypes.CDLL:
    """The C library (errno kept), loaded once per process."""
    if not _libc:
        _libc.append(ctypes.CDLL(None, use_errno=True))
    return _libc[0]


def syscall_number() -> int:
    """The userfaultfd syscall number of this machine, or ExplainUnavailableError."""
    machine = platform.machine()
    if not hasattr(os, "fork") or platform.system() != "Linux":
        raise ExplainUnavailableError(f"userfaultfd exists on Linux only (this is {platform.system()})")
    if machine not in SYSCALL_NUMBERS:
        raise ExplainUnavailableError(f"cowmem does not know the userfaultfd syscall on {machine}")
    return SYSCALL_NUMBERS[machine]


def open_write_protect_fd() -> int:
    """A new userfaultfd (close-on-exec, non-blocking) set up for exact write-protect faults.

    Raises ExplainUnavailableError naming the reason (no syscall, no
    privilege, a kernel without one of the features).  The returned
    descriptor belongs to the caller.
    """
    number = syscall_number()
    # No UFFD_USER_MODE_ONLY: with it a kernel-mode write (read() into a
    # protected buffer) fails with EFAULT instead of faulting to the handler.
    fd = libc().syscall(ctypes.c_long(number), ctypes.c_int(os.O_CLOEXEC | os.O_NONBLOCK))
    if fd < 0:
        err = ctypes.get_errno()
        raise ExplainUnavailableError(_open_failure(err)) from OSError(err, os.strerror(err))
    try:
        request = bytearray(_API.pack(UFFD_API, WANTED_FEATURES, 0))
        try:
            fcntl.ioctl(fd, UFFDIO_API, request)
        except OSError as exc:
            raise ExplainUnavailableError(
                f"UFFDIO_API refused the features {_feature_list(WANTED_FEATURES)} "
                f"({exc.strerror}); write-protect faults with exact addresses need "
                "Linux 5.18 or newer") from exc
        _, granted, _ = _API.unpack(request)
        missing = WANTED_FEATURES & ~granted
        if missing:
            raise ExplainUnavailableError(f"the kernel lacks {_feature_list(missing)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


class Opener:
    """Opens one write-protect userfaultfd later, with everything made now: the opening allocates nothing.

    Made in a parent before it forks, called once in the child: whatever
    the child allocates before its baseline may land on a page it shares
    with the data, and copy it unseen.  Making it checks that the kernel
    grants the features (ExplainUnavailableError otherwise), so the call
    only repeats what succeeded; it raises OSError if that fails.
    """

    def __init__(self) -> None:
        # The probe runs before measure_fork holds signals back: a Ctrl-C
        # raised as the syscall returns, before its result is stored, would
        # leak the descriptor.  Held back, it surfaces once it is closed.
        with children.held_back():
            os.close(open_write_protect_fd())
        self._syscall = libc().syscall
        # Plain ints: ctypes passes them as they are, where a c_long would
        # cost an argument object per call.
        self._arguments = (syscall_number(), os.O_CLOEXEC | os.O_NONBLOCK)
        self._request = bytearray(_API.pack(UFFD_API, WANTED_FEATURES, 0))

    def __call__(self) -> int:
        """The new descriptor, set up as :func:`open_write_protect_fd` sets it up."""
        fd = self._syscall(*self._arguments)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "userfaultfd() failed")
        try:
            fcntl.ioctl(fd, UFFDIO_API, self._request)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _open_failure(err: int) -> str:
    if err == errno.ENOSYS:
        return "this kernel has no userfaultfd syscall (CONFIG_USERFAULTFD is off, or a seccomp filter blocks it)"
    if err == errno.EPERM:
        return ("userfaultfd needs CAP_SYS_PTRACE or root for kernel-mode faults while "
                "vm.unprivileged_userfaultfd is 0")
    return f"userfaultfd() failed: {os.strerror(err)}"


def _feature_list(bits: int) -> str:
    return ", ".join(name for bit, name in _FEATURE_NAMES.items() if bits & bit)


def register_write_protect(fd: int, start: int, stop: int) -> None:
    """Register ``[start, stop)`` (bytes, page-aligned) for write-protect faults.

    Only anonymous private (or shmem/hugetlbfs) mappings qualify; a private
    file mapping raises OSError(EINVAL).
    """
    fcntl.ioctl(fd, UFFDIO_REGISTER, bytearray(_REGISTER.pack(start, stop - start, REGISTER_MODE_WP, 0)))


def write_protect(fd: int, start: int, stop: int) -> None:
    """Write-protect the present pages of the registered ``[start, stop)``."""
    fcntl.ioctl(fd, UFFDIO_WRITEPROTECT, bytearray(_WRITEPROTECT.pack(start, stop - start, WRITEPROTECT_MODE_WP)))


def serve_write_faults(fd: int, watch: Sequence[int], record: Callable[[int], object],
                       batch: int = 64) -> None:
    """Serve the write-protect faults of ``fd`` until one of ``watch`` is readable.

    For every fault: ``record(exact address)``, then lift the protection of
    its page, which wakes the faulting thread.  Raises OSError on a message
    other than a write-protect fault (none is requested: registration is
    write-protect only and no event feature is asked for).

    This is the hot loop of explain mode, so it is one flat loop: per fault
    one poll, one read and one ioctl (the faulting thread is blocked until
    served, so a single-threaded child has one fault pending at a time and
    reads rarely batch), nothing built but the recorded int.
    """
    poller = select.poll()
    for watched in (fd, *watch):
        poller.register(watched, select.POLLIN)
    poll, read, ioctl = poller.poll, os.read, fcntl.ioctl
    messages, pack_into = MESSAGE.iter_unpack, _WRITEPROTECT.pack_into
    request = bytearray(_WRITEPROTECT.size)
    page_mask, size = ~(PAGE_SIZE - 1), batch * MESSAGE_SIZE
    while True:
        ready = poll()
        if len(ready) > 1 or ready[0][0] != fd:
            return
        try:
            data = read(fd, size)
        except BlockingIOError:
            continue    # the faulting thread left meanwhile (a fatal signal)
        for event, flags, address, _ in messages(data):
            if event != EVENT_PAGEFAULT or not flags & PAGEFAULT_FLAG_WP:
                raise OSError(errno.EPROTO, f"unexpected userfaultfd message: event {event:#x}, flags {flags:#x}")
            record(address)
            pack_into(request, 0, address & page_mask, PAGE_SIZE, 0)
            try:
                ioctl(fd, UFFDIO_WRITEPROTECT, request)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                # Another thread of the child unmapped the page meanwhile: no
                # protection is left to lift, but the faulting thread still
                # sleeps until it is woken.
                fcntl.ioctl(fd, UFFDIO_WAKE, _RANGE.pack(address & page_mask, PAGE_SIZE))
