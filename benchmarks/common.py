"""What the asv suite's benchmarks share: the size, the units, the measurements.

Every number comes from cowmem (``cowmem.asv.Copies``, ``cowmem.workloads``
or ``cowmem.measure_fork``); this module only decides what to measure, at
which size, and hands asv a value it can store.
"""

from __future__ import annotations

import abc
import mmap
import os
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np

from cowmem import PAGE_SIZE, MissingLibraryError, measure_fork, workloads
from cowmem.asv import Copies
from cowmem.samples import CHILDREN

MIB = 1 << 20

SIZE_VARIABLE = "COWMEM_BENCH_SIZE"
# 5 * 10**4 elements keep one environment's run under a minute on a 2-core
# machine, each combination measured in three children; the copied bytes per
# element do not depend on the size (the question used 10**8).
DEFAULT_SIZE = 5 * 10**4


def bench_size() -> int:
    """Elements per data kind: ``$COWMEM_BENCH_SIZE`` (e.g. ``100_000_000``), else 5 * 10**4."""
    text = os.environ.get(SIZE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_SIZE
    try:
        size = int(text)
    except ValueError:
        size = 0  # refused below, with the text
    if size < 1:
        raise ValueError(f"{SIZE_VARIABLE} must be a whole number of elements, at least 1 "
                         f"(e.g. 100000000 or 100_000_000), not {text!r}")
    return size


# --- one benchmark class per data kind, on cowmem.asv.Copies ---

class KindCopies(Copies):
    """Copies of one registry data kind: ``data`` (the kind), ``access`` (those that apply), ``gc``.

    A subclass names its kind; ``accesses`` (default: every one that
    applies but ``none``) and ``gc_variants`` (default: plain) may narrow or
    widen what is measured.  The parameters are the kind's own, so that
    asv's graph of each shows a handful of lines, and a pair that does not
    apply is not a parameter at all.  ``none`` is left out: it is not handed
    the data, so it copies none of any kind's (the ground truth's zero-page
    case measures the measuring itself).  A kind whose library is missing
    in an environment is n/a there, with the reason.
    """

    param_names = ["data", "access", "gc"]
    accesses: Sequence[str] = ()
    gc_variants: Sequence[str] = ("plain",)
    # COWMEM_BENCH_SIZE may be the question's 10**8: a child may iterate for minutes.
    child_timeout = 600.0

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """The registry name of the data kind."""

    def __init_subclass__(cls, **kwargs):
        if isinstance(cls.kind, str):   # else still abstract: a base for classes that name their kind
            accesses = cls.accesses or [a for a in workloads.accesses_for(cls.kind) if a != "none"]
            cls.params = [[cls.kind], list(accesses), list(cls.gc_variants)]
        super().__init_subclass__(**kwargs)

    def build(self):
        try:
            return workloads.build(self.kind, bench_size())
        except MissingLibraryError as exc:
            raise NotImplementedError(str(exc)) from None   # asv's n/a, with the reason

    def elements(self, data):
        return bench_size()

    def access(self, data, access, gc):
        return workloads.ACCESSES[access].run

    def gc_freeze(self, data, access, gc):
        return gc == "freeze"


# --- ground truth: k pages written in a filled buffer ---

GROUND_TRUTH_PAGES = 16384  # 64 MiB: large enough for huge pages under numpy


def filled_buffer(kind: str, pages: int) -> Union[bytearray, np.ndarray]:
    """A buffer of ``pages`` pages, every page written in the parent (present, so shareable)."""
    if kind == "bytearray":
        return bytearray(b"\x01") * (pages * PAGE_SIZE)
    if kind == "ndarray":
        return np.ones(pages * PAGE_SIZE, dtype=np.uint8)
    raise ValueError(f"unknown buffer kind {kind!r}: 'bytearray' or 'ndarray'")


def write_one_byte_every(buffer: Union[bytearray, np.ndarray, mmap.mmap], count: int,
                         stride: int) -> Callable[[], None]:
    """An access writing one byte at offsets 0, stride, ... (``count`` writes), from C."""
    view = np.frombuffer(buffer, dtype=np.uint8)
    if count * stride > view.size:
        raise ValueError(f"{count} writes {stride} bytes apart do not fit in {view.size} bytes")

    def access() -> None:
        view[:count * stride:stride] = 2
    return access


def buffer_range(buffer: Union[bytearray, np.ndarray, mmap.mmap]) -> Tuple[int, int]:
    """The address range ``(start, stop)`` of a buffer's bytes, without its object's header."""
    view = np.frombuffer(buffer, dtype=np.uint8)
    return view.ctypes.data, view.ctypes.data + view.size


def copied_bytes(region: Tuple[int, int], access: Callable[[], None]) -> List[int]:
    """Bytes the access copied inside the address range ``region``, in each of CHILDREN children."""
    return [measure_fork(access, regions={"region": region}, cross_checks=False).regions["region"]
            for _ in range(CHILDREN)]


# --- transparent huge pages ---

HUGE_PAGE = 2 * MIB
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


class HugePageBuffer:
    """``count`` huge pages of anonymous private memory, 2 MiB-aligned, each filled.

    The mapping is over-allocated by one huge page so that an aligned run
    exists inside it; ``madvise(MADV_HUGEPAGE)`` asks for huge pages, which
    THP's ``madvise`` mode (and ``always``) grants on the first touch when
    the kernel finds free 2 MiB blocks.
    """

    def __init__(self, count: int) -> None:
        self._map = mmap.mmap(-1, (count + 1) * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        base = np.frombuffer(self._map, dtype=np.uint8)
        skip = -base.ctypes.data % HUGE_PAGE
        self._map.madvise(mmap.MADV_HUGEPAGE, skip, count * HUGE_PAGE)
        self.array = base[skip:skip + count * HUGE_PAGE]
        self.array[:] = 1
        self.range = buffer_range(self.array)

    def huge_bytes(self) -> int:
        """Bytes of the aligned run that the kernel backs with huge pages (smaps' AnonHugePages).

        madvise split the mapping: the run is the one line of smaps holding its start.
        """
        start = self.range[0]
        with open("/proc/self/smaps") as smaps:
            inside = False
            for line in smaps:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):  # a mapping's "start-stop ..." line
                    low, high = (int(x, 16) for x in head.split("-"))
                    inside = low <= start < high
                elif inside and head == "AnonHugePages:":
                    return int(line.split()[1]) * 1024
        return 0


def huge_page_buffer(count: int) -> HugePageBuffer:
    """A fully huge-page-backed buffer, or NotImplementedError (asv's n/a) saying why not."""
    try:
        with open(THP_ENABLED) as f:
            mode = f.read().strip()
    except OSError:
        raise NotImplementedError(f"no transparent huge pages here ({THP_ENABLED} is missing)") from None
    if "[never]" in mode:
        raise NotImplementedError(f"transparent huge pages are disabled ({THP_ENABLED}: {mode})")
    buffer = HugePageBuffer(count)
    backed = buffer.huge_bytes()
    if backed < count * HUGE_PAGE:
        raise NotImplementedError(f"the kernel backed only {backed // MIB} of {count * HUGE_PAGE // MIB} MiB "
                                  "with huge pages (no free 2 MiB blocks?)")
    return buffer
