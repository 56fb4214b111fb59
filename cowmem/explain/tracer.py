"""Serving a child's write-protect faults, from a process of their own.

Right after the fork the child hands a userfaultfd to the *fault server*,
a process forked from the parent just before the child.  The server
write-protects the child's anonymous memory through it and serves every
first write to a page: it records the exact address and lifts the
protection of that page, so the child goes on.  The parent only waits.

Why a process and not a thread of the parent: serving runs Python code,
which allocates.  In the parent, those allocations land on heap pages the
parent shares with the child; a page the parent writes becomes the
parent's copy, the child's frame becomes the child's own, and the child's
own write to it then copies nothing.  Explain mode counted 5 to 13 pages
fewer in the data than the plain measurement that way.  The server's
writes go to the server's own copies and leave parent and child sharing.

The child does as little as it can before its baseline, since whatever
it allocates may land on a page it shares with the data: the hand-over
message is made in the parent, before the fork.

The protocol, as measure_fork drives it::

    tracer = FaultTracer(objects)   # parent: checks userfaultfd, indexes the objects (in a forked helper)
    tracer.before_fork(ranges)      # parent: forks the fault server, prepares the hand-over of ranges
    pid = os.fork()
    tracer.arm_child()              # child: returns once the server has protected the ranges
    tracer.start_serving(pid)       # parent: lets go of the child's end of the hand-over
    explanation = tracer.stop()     # parent, once the child is gone (tracer.close() on error paths)
"""

from __future__ import annotations

import array
import ctypes
import gc
import os
import select
import signal
import socket
import struct
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import helper, uffd
from ..errors import ExplainError
from ..index import distinct
from ..locate import index_objects
from .._linux.maps import read_maps
from .._linux.pagemap import PAGE_SHIFT
from .explanation import Data, Explanation, summarise

Range = Tuple[int, int]

ACK_TIMEOUT = 30.0      # seconds the child waits for the server to protect its memory
RESULT_TIMEOUT = 30.0   # seconds the parent waits for the server's faults once the child is gone

# The hand-over: the child sends the descriptor with the number of ranges,
# then the ranges; the server protects them and answers _ARMED, or _FAILED
# followed by the reason.
_HANDOVER = struct.Struct("=cQ")
_ARMED, _FAILED = b"A", b"E"


class FaultTracer:
    """Records the first write to every page of a forked child, and explains it.

    ``objects`` maps region names to the objects of the data (what the
    copied pages are classified against), indexed to ``depth`` levels of
    references (None: all) in a forked helper, here, before the fork.  See
    the module docstring for the protocol.

    Raises ExplainUnavailableError (an UnsupportedPlatformError) with the
    reason when userfaultfd write-protect does not work here, before
    indexing anything.
    """

    def __init__(self, objects: Mapping[str, Any], *, depth: Optional[int] = None) -> None:
        self._open = uffd.Opener()
        self._data = Data(dict(objects), index_objects(objects, depth=depth), depth)
        self._handover: Tuple[Any, ...] = ()
        self._child_end: Optional[socket.socket] = None
        self._results = self._stop = -1
        self._server = -1

    def before_fork(self, ranges: Sequence[Range]) -> None:
        """Fork the fault server and prepare the hand-over of ``ranges`` to write-protect.

        ``ranges`` are the child's ``[start, stop)`` byte ranges of anonymous
        private memory (the parent's, which the child inherits).
        """
        server_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # What the child sends, and where it receives the answer, made here.
        self._handover = (_Handover(child_end.fileno(), len(ranges)),
                          array.array("Q", [edge for span in ranges for edge in span]).tobytes(),
                          bytearray(1 << 12))
        results, report = os.pipe()
        stop, stopped = os.pipe()
        try:
            # No KeyboardInterrupt between the fork and knowing the server's pid.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
            try:
                self._server = os.fork()
                if self._server == 0:
                    _server_main(server_end, stop, report, (child_end.fileno(), results, stopped), mask)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        except BaseException:
            child_end.close()
            os.close(results)
            os.close(stopped)
            raise
        finally:
            server_end.close()
            os.close(report)
            os.close(stop)
        self._child_end, self._results, self._stop = child_end, results, stopped

    def arm_child(self) -> None:
        """In the child: have the server write-protect the ranges through a userfaultfd.

        The child hands the descriptor over and closes its own copy *before*
        anything is protected; the server registers and protects the ranges
        (the ioctls act on the descriptor's address space, the child's)
        while the child waits.  So no moment exists in which the child holds
        the descriptor and waits for a fault to be served: a server that
        stops serving closes it, which wakes the child.  All it sends and
        receives was made by the parent: it allocates next to nothing.

        Raises ExplainError if the server could not protect a range or did
        not answer within ACK_TIMEOUT seconds.
        """
        os.close(self._results)
        os.close(self._stop)
        handover, ranges, answer = self._handover
        child_end = self._child_end
        received = 0
        try:
            fd = self._open()
            try:
                handover.send(fd)
            finally:
                os.close(fd)
            child_end.sendall(ranges)
            child_end.settimeout(ACK_TIMEOUT)
            received = child_end.recv_into(answer)   # the server answers once it has protected all
        except socket.timeout:
            pass
        finally:
            child_end.close()
        if not received or answer[0] != _ARMED[0]:
            reason = answer[1:received].decode(errors="replace") if received and answer[:1] == _FAILED \
                else f"no answer within {ACK_TIMEOUT:g} s"
            raise ExplainError(f"the fault server could not write-protect the child's memory: {reason}")

    def start_serving(self, pid: int) -> None:
        """In the parent, right after forking child ``pid``: the server serves it from now on."""
        self._release_child_end()

    def close(self) -> None:
        """Stop the server (its descriptor closes, which wakes the child) and release everything.

        Never raises; safe to call more than once and on every error path.
        """
        self._release_child_end()
        if self._server > 0:
            helper.kill_and_reap(self._server)
            self._server = -1
        for fd in (self._results, self._stop):
            if fd >= 0:
                os.close(fd)
        self._results = self._stop = -1

    def stop(self) -> Explanation:
        """Stop the server, collect its faults and classify every page the child faulted on.

        Call it once the child has exited.  Raises ExplainError if serving
        failed (the faults recorded would be partial).
        """
        self._release_child_end()
        received, ended = None, "sent nothing"
        try:
            os.close(self._stop)   # the server stops serving and reports
            self._stop = -1
            poller = select.poll()
            poller.register(self._results, select.POLLIN)
            if poller.poll(RESULT_TIMEOUT * 1000):
                received = helper.receive(self._results)
                if received is None:
                    ended, self._server = helper.ending(helper.reap(self._server)), -1
            else:
                ended = f"sent nothing within {RESULT_TIMEOUT:g} s"
        finally:
            self.close()
        if received is None:
            raise ExplainError(f"the fault server {ended}: the explanation would be partial")
        (outcome,), arrays = received
        if outcome != "ok":
            raise ExplainError(f"serving the child's write faults failed: {outcome}")
        addresses = arrays[0] if arrays else np.zeros(0, np.uint64)
        pages, first = distinct(addresses >> np.uint64(PAGE_SHIFT))
        faults = self._data.classify(pages, addresses[first], first)
        # The child inherited this process's mappings: where its faults fell.
        return summarise(faults, int(pages.size), np.zeros(0, np.uint64), int(addresses.size), self._data,
                         read_maps())

    def _release_child_end(self) -> None:
        if self._child_end is not None:
            self._child_end.close()
            self._child_end = None


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


_CMSG_HEADER = struct.Struct("@Nii")   # struct cmsghdr: cmsg_len, cmsg_level, cmsg_type


class _Handover:
    """The child's hand-over message (the range count and a descriptor), made in the parent.

    Sent with libc's sendmsg over a msghdr built here: socket.sendmsg would
    allocate its buffers in the child, before its baseline.
    """

    def __init__(self, sock: int, count: int) -> None:
        self._sendmsg = uffd.libc().sendmsg
        self._sendmsg.restype = ctypes.c_ssize_t
        self._head = ctypes.create_string_buffer(_HANDOVER.pack(_ARMED, count), _HANDOVER.size)
        self._iovec = _Iovec(ctypes.addressof(self._head), _HANDOVER.size)
        space = _CMSG_HEADER.size + ctypes.sizeof(ctypes.c_size_t)   # CMSG_SPACE(sizeof(int))
        self._control = (ctypes.c_ubyte * space)()
        _CMSG_HEADER.pack_into(self._control, 0, _CMSG_HEADER.size + ctypes.sizeof(ctypes.c_int),
                               socket.SOL_SOCKET, socket.SCM_RIGHTS)
        self._fd = ctypes.c_int.from_buffer(self._control, _CMSG_HEADER.size)
        self._message = _Msghdr(None, 0, ctypes.pointer(self._iovec), 1, ctypes.addressof(self._control), space, 0)
        self._arguments = (sock, ctypes.byref(self._message), 0)   # plain ints: no argument objects per call

    def send(self, fd: int) -> None:
        """Send the message with ``fd`` attached (SCM_RIGHTS); OSError if it did not all go."""
        self._fd.value = fd
        if self._sendmsg(*self._arguments) != _HANDOVER.size:
            raise OSError(ctypes.get_errno(), "sending the userfaultfd to the fault server failed")


# --- the fault server ---------------------------------------------------------------
# It must never leave the child blocked: whatever happens, it closes the
# descriptor (by exiting, at the latest), which wakes every faulting thread.

def _server_main(sock: socket.socket, stop: int, report: int, inherited: Tuple[int, ...], mask: Any) -> None:
    """Protect the child's ranges, serve its faults until ``stop`` closes, report them on ``report``."""
    status = 70
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent, interrupted, kills it
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in inherited:
            os.close(fd)
        gc.disable()   # a collection would walk (and copy) the whole heap for nothing
        addresses = array.array("Q")
        try:
            fd, ranges = _receive(sock)
            if fd >= 0:
                try:
                    if _protect(sock, fd, ranges):
                        uffd.serve_write_faults(fd, (stop,), addresses.append)
                finally:
                    os.close(fd)
            outcome = "ok"
        except BaseException as exc:
            outcome = repr(exc)
        helper.send(report, (outcome,), [np.frombuffer(addresses, np.uint64)] if addresses else [])
        status = 0
    finally:
        os._exit(status)


def _receive(sock: socket.socket) -> Tuple[int, List[Range]]:
    """The child's descriptor and ranges; fd -1 if the child ended before handing over."""
    message, fds, _, _ = socket.recv_fds(sock, _HANDOVER.size, 1, socket.MSG_WAITALL)
    if len(message) != _HANDOVER.size or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return -1, []           # the child failed before the hand-over
    _, count = _HANDOVER.unpack(message)
    flat = array.array("Q")
    flat.frombytes(sock.recv(count * 2 * flat.itemsize, socket.MSG_WAITALL) if count else b"")
    if len(flat) != 2 * count:
        os.close(fds[0])
        return -1, []           # the child died while sending
    return fds[0], list(zip(flat[::2], flat[1::2]))


def _protect(sock: socket.socket, fd: int, ranges: Sequence[Range]) -> bool:
    """Register and write-protect the child's ranges; tell the child how it went."""
    answer = _ARMED
    try:
        for step in (uffd.register_write_protect, uffd.write_protect):
            for start, stop in ranges:
                step(fd, start, stop)
    except OSError as exc:
        answer = _FAILED + (f"userfaultfd cannot protect [{start:#x}, {stop:#x}) ({exc.strerror}): "
                            "only anonymous private memory qualifies").encode()
    sock.sendall(answer)
    sock.shutdown(socket.SHUT_WR)
    return answer == _ARMED


def _receive_all(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the other end shuts down."""
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
