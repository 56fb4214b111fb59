"""Explain copies: name the write that made the kernel copy each page.

Right after the fork the child hands a userfaultfd to the parent, which
write-protects the child's anonymous memory through it and then serves
every first write to a page: it records the exact address and lifts the
protection of that page, so the child goes on (docs/method.md, "Explaining
copies").  The parent then classifies each page's first-write address
against an address index of the data built before the fork: an object's
reference count, its GC header, another header field, its payload, or
memory outside the data.

The protocol, as measure_fork drives it::

    tracer = FaultTracer(objects)   # parent: builds the object index
    tracer.before_fork()            # parent: checks userfaultfd, makes the socket
    pid = os.fork()
    tracer.arm_child(ranges)        # child: returns once the parent has protected ranges
    tracer.start_serving(pid)       # parent: a thread protects, then serves the faults
    explanation = tracer.stop()     # parent, once the child is gone (tracer.close() on error paths)
"""

from __future__ import annotations

import array
import itertools
import os
import reprlib
import select
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import uffd
from .errors import ExplainError, ExplainUnavailableError
from .objects import _GC_HEAD, _HAVE_GC, _buffer_range, _elements, _layout, _storage, element_blocks
from ._linux import PAGE_SHIFT, PAGE_SIZE, Mapping as MapsEntry, read_maps

Range = Tuple[int, int]

CAUSES = ("refcount", "gc_header", "other_header_field", "payload", "outside_data")
_REFCOUNT, _GC_HEADER, _OTHER_HEADER, _PAYLOAD, _OUTSIDE = range(len(CAUSES))

# What a row of the object index stands for.
_OBJECT, _BUFFER, _STORAGE = 0, 1, 2    # an inline object; a buffer's bytes; a container's item storage
_WORD = 8
_REFCNT_SIZE = 8                        # ob_refcnt: the first word of every object (GIL builds)

# Where a compact str's characters start: after PyASCIIObject for ASCII
# strings, after PyCompactUnicodeObject for the others ('' and chr(256)
# are compact, with 1 and 2 bytes of characters including the NUL).
_ASCII_HEADER = sys.getsizeof("") - 1
_COMPACT_HEADER = sys.getsizeof(chr(256)) - 4

ACK_TIMEOUT = 30.0     # seconds the child waits for the parent to protect its memory


# --- the object index ----------------------------------------------------

def _header_size(tp: type) -> int:
    """Bytes from an object's address to the end of its header, by type.

    ``__basicsize__`` is the header for most types; the exceptions hold
    their value inside it (float, complex: the value follows PyObject_HEAD),
    count a NUL of the payload in it (bytes), or declare the size of a
    non-compact string (str, whose compact header is smaller).
    """
    if tp is float or tp is complex:
        return 2 * _WORD
    if tp is bytes:
        return tp.__basicsize__ - 1
    if tp is str:
        return _COMPACT_HEADER
    return tp.__basicsize__


class ObjectIndex:
    """A sorted address index of the data's objects, for classifying addresses.

    Per named object: the object itself, the objects it holds one level
    deep (what :func:`cowmem.memory_ranges` counts), and the buffers and
    item storage it owns.  An object's row spans its whole inline block
    (pre-header, GC header, header, inline payload).  Rows are made in
    *parts* (the named object, its elements, each buffer): per row only its
    span and layout code are stored, the rest per part or per layout.
    """

    def __init__(self, objects: Mapping[str, Any]) -> None:
        self.data = _Data(dict(objects), list(objects), [])
        self._codes: Dict[Tuple[type, int], int] = {}
        layouts: List[Tuple[int, int, int]] = []       # per code: before, GC header, header bytes
        spans: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        parts: List[Tuple[int, int, int, int]] = []    # first row, region, first element (-1: none), kind
        rows = 0
        for region, obj in enumerate(self.data.objects.values()):
            pieces = [(self._object_rows([obj], layouts), -1, _OBJECT),
                      (self._object_rows(_as_list(_elements(obj)), layouts), 0, _OBJECT)]
            code = self._code(type(obj), 0, layouts)
            pieces += [((np.array([lo], np.uint64), np.array([hi], np.uint64), np.array([code], np.int32)),
                        -1, kind) for lo, hi, kind in _owned_spans(obj)]
            for span, first, kind in pieces:
                parts.append((rows, region, first, kind))
                spans.append(span)
                rows += span[0].size
        lo, hi, self.code = (np.concatenate([np.zeros(0, dtype), *(span[k] for span in spans)])
                             for k, dtype in enumerate((np.uint64, np.uint64, np.int32)))
        order = np.argsort(lo, kind="stable")   # addresses mostly ascend already: cheap
        lo, hi = lo[order], hi[order]
        # Keep the first of rows that overlap (an object held twice, a buffer
        # inside an object already listed): every address then has one row.
        keep = np.ones(lo.size, bool)
        keep[1:] = lo[1:] >= np.maximum.accumulate(hi)[:-1]
        self.lo, self.hi, self.row = lo[keep], hi[keep], order[keep]
        self.part_row, self.part_region, self.part_first, self.part_kind = _columns(parts, 4)
        self.before, self.gc, self.header = _columns(layouts, 3)

    def _code(self, tp: type, header: int, layouts: List[Tuple[int, int, int]]) -> int:
        """The layout code of ``tp`` objects with ``header`` header bytes (0: the type's)."""
        key = (tp, header or _header_size(tp))
        if key not in self._codes:
            self._codes[key] = len(layouts)
            self.data.types.append(tp)
            before, _ = _layout(tp)
            layouts.append((before, _GC_HEAD if tp.__flags__ & _HAVE_GC else 0, key[1]))
        return self._codes[key]

    def _object_rows(self, items: Sequence[Any],
                     layouts: List[Tuple[int, int, int]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi, layout code) of the inline block of each of ``items``."""
        lo, hi = element_blocks(items)
        count = len(items)
        kinds = set(map(type, items))
        if len(kinds) == 1 and str not in kinds:
            return lo, hi, np.full(count, self._code(kinds.pop(), 0, layouts), np.int32)
        # A str's header is shorter when it is ASCII.
        code = np.fromiter((self._code(type(x), _ASCII_HEADER if type(x) is str and x.isascii() else 0, layouts)
                            for x in items), np.int32, count)
        return lo, hi, code

    def classify(self, addresses: np.ndarray) -> Dict[str, np.ndarray]:
        """Per address: its cause code, and where it falls in the data.

        Keys: ``cause``; ``region`` (-1 outside the data), ``element`` (-1:
        the region's own object), ``type`` (layout code, an index into
        ``data.types``), ``part`` (object, buffer or item storage), ``gc``
        (GC header bytes) and ``offset`` (bytes from the object's address).
        """
        out = {key: np.full(addresses.shape, -1, np.int64)
               for key in ("region", "element", "type", "part", "gc", "offset")}
        out["cause"] = np.full(addresses.shape, _OUTSIDE, np.int8)
        i = np.searchsorted(self.lo, addresses, side="right") - 1
        inside = (i >= 0) & (addresses < self.hi[np.maximum(i, 0)]) if self.lo.size \
            else np.zeros(addresses.shape, bool)   # an empty index: everything is outside
        i = i[inside]
        row = self.row[i]
        code = self.code[row]
        part = np.searchsorted(self.part_row, row, side="right") - 1
        kind, first = self.part_kind[part], self.part_first[part]
        is_object = kind == _OBJECT
        offset = (addresses[inside].astype(np.int64) - self.lo[i].astype(np.int64)
                  - np.where(is_object, self.before[code], 0))
        gc = np.where(is_object, self.gc[code], 0)
        out["cause"][inside] = np.select(
            [~is_object, offset < -gc, offset < 0, offset < _REFCNT_SIZE, offset < self.header[code]],
            [_PAYLOAD, _OTHER_HEADER, _GC_HEADER, _REFCOUNT, _OTHER_HEADER], _PAYLOAD)
        for key, value in (("region", self.part_region[part]), ("type", code), ("part", kind), ("gc", gc),
                           ("offset", offset),
                           ("element", np.where(first >= 0, first + row - self.part_row[part], -1))):
            out[key][inside] = value
        return out


def _columns(rows: Sequence[Tuple[int, ...]], width: int) -> List[np.ndarray]:
    """The columns of ``rows`` (tuples of ``width`` ints) as int64 arrays."""
    return [np.array(column, np.int64) for column in zip(*rows)] if rows else \
        [np.zeros(0, np.int64) for _ in range(width)]


def _owned_spans(obj: Any) -> List[Tuple[int, int, int]]:
    """(lo, hi, part) of the buffer and the item storage ``obj`` owns."""
    try:
        buffers = _buffer_range(obj)
    except TypeError:
        buffers = []   # no buffer protocol
    spans = [(lo, hi, _BUFFER) for lo, hi in buffers] + [(lo, hi, _STORAGE) for lo, hi in _storage(obj)]
    return [s for s in spans if s[1] > s[0]]


@dataclass(frozen=True)
class _Data:
    """The named objects an index was built from, and the types met in them."""

    objects: Dict[str, Any]
    names: List[str]
    types: List[type]

    def element(self, region: int, element: int) -> Any:
        """The object a row stands for (element ``-1``: the region's own object)."""
        obj = self.objects[self.names[region]]
        if element < 0:
            return obj
        if isinstance(obj, (list, tuple)):
            return obj[element]
        return next(itertools.islice(_elements(obj), element, None))


def _as_list(items: Any) -> Sequence[Any]:
    return items if isinstance(items, (list, tuple)) else list(items)


# --- naming the field an address falls in --------------------------------

_STR_FIELDS = {16: "length", 24: "hash", 32: "state"}
_STR_FIELDS.update({40: "wstr", 48: "utf8_length", 56: "utf8", 64: "wstr_length"}
                   if sys.version_info < (3, 12) else {40: "utf8_length", 48: "utf8"})
_HEADER_FIELDS: Dict[type, Dict[int, str]] = {
    list: {16: "ob_size", 24: "ob_item", 32: "allocated"},
    tuple: {16: "ob_size"},
    int: {16: "lv_tag" if sys.version_info >= (3, 12) else "ob_size"},
    bool: {16: "lv_tag" if sys.version_info >= (3, 12) else "ob_size"},
    str: _STR_FIELDS,
    bytes: {16: "ob_size", 24: "ob_shash"},
    dict: {16: "ma_used", 24: "ma_version_tag", 32: "ma_keys", 40: "ma_values"},
    set: {16: "fill", 24: "used", 32: "mask", 40: "table", 48: "hash", 56: "finger"},
    frozenset: {16: "fill", 24: "used", 32: "mask", 40: "table", 48: "hash", 56: "finger"},
}
_PAYLOAD_NAMES = {tuple: "ob_item", int: "ob_digit", bool: "ob_digit", str: "characters",
                  bytes: "ob_sval", float: "ob_fval", complex: "cval"}


def _field_name(tp: type, cause: int, part: int, offset: int, gc: int) -> str:
    """A readable name of the field at ``offset`` bytes from an object's address."""
    if cause == _REFCOUNT:
        return "ob_refcnt"
    if cause == _GC_HEADER:
        return "PyGC_Head._gc_next" if offset < -gc // 2 else "PyGC_Head._gc_prev"
    if part == _STORAGE:
        return f"item storage, slot {offset // _WORD}" if tp is list else f"table byte {offset}"
    if part == _BUFFER:
        return f"buffer byte {offset}"
    if cause == _OTHER_HEADER:
        if offset < 0:
            return "pre-header (managed __dict__ / weakref pointers)"
        if offset // _WORD * _WORD == _WORD:
            return "ob_type"
        name = _HEADER_FIELDS.get(tp, {}).get(offset // _WORD * _WORD)
        return name if name is not None else f"header byte {offset}"
    name = _PAYLOAD_NAMES.get(tp, "payload")
    return f"{name}, byte {offset - _header_size(tp)}"


# --- the explanation -------------------------------------------------------

@dataclass(frozen=True)
class CauseShare:
    """The copied pages one cause explains.

    ``share`` is a fraction (0 to 1) of the copied pages; ``by_kind`` gives
    pages per object type (per mapping label for ``outside_data``), largest
    first; ``example`` names one first write of this cause.
    """

    pages: int
    share: float
    by_kind: Mapping[str, int]
    example: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict."""
        return {"pages": self.pages, "share": self.share, "by_kind": dict(self.by_kind),
                "example": self.example}


@dataclass(frozen=True)
class _Faults:
    """The first write-protect fault of every page, classified; one entry per page.

    Besides the page, the address and the fault's position in the child's
    sequence of faults, the columns of ``ObjectIndex.classify``.
    """

    pages: np.ndarray      # page numbers (address >> PAGE_SHIFT), ascending
    addresses: np.ndarray  # exact address of the first write
    order: np.ndarray
    cause: np.ndarray
    region: np.ndarray     # -1 outside the data
    element: np.ndarray
    type: np.ndarray
    part: np.ndarray
    gc: np.ndarray
    offset: np.ndarray

    def take(self, keep: np.ndarray) -> "_Faults":
        return _Faults(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Explanation:
    """Why the child copied its pages: the first write to each, by cause.

    ``copied_pages`` is the number of pages explained here: every page the
    child faulted on, or, after :meth:`restrict`, the given copied pages.
    ``causes`` maps each of CAUSES, in that order, to a CauseShare;
    ``unexplained_pages`` are copied pages with no fault (memory that
    userfaultfd cannot protect, such as a file's data segment), by mapping
    label in ``unexplained_by_mapping``.  ``faults_served`` counts every
    fault served, set-up included.  It keeps references to the named
    objects, to describe its examples again after :meth:`restrict`.
    """

    copied_pages: int
    causes: Mapping[str, CauseShare]
    unexplained_pages: int
    unexplained_by_mapping: Mapping[str, int]
    faults_served: int
    page_size: int = PAGE_SIZE
    _faults: Optional[_Faults] = field(default=None, repr=False, compare=False)
    _data: Optional[_Data] = field(default=None, repr=False, compare=False)
    _maps: Sequence[MapsEntry] = field(default=(), repr=False, compare=False)

    @property
    def explained_pages(self) -> np.ndarray:
        """Page numbers (address >> 12 on 4 KiB pages) of the explained pages, ascending."""
        return self._faults.pages

    def restrict(self, copied_page_numbers: np.ndarray) -> "Explanation":
        """The explanation of exactly these copied pages (page numbers).

        Faults on other pages (already the child's at the baseline, or never
        copied) are dropped; copied pages without a fault are counted as
        unexplained.
        """
        copied = np.unique(np.asarray(copied_page_numbers, np.uint64))
        keep = np.isin(self._faults.pages, copied, assume_unique=True)
        missing = copied[~np.isin(copied, self._faults.pages, assume_unique=True)]
        return _summarise(self._faults.take(keep), int(copied.size), missing,
                          self.faults_served, self._data, self._maps)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of the breakdown."""
        return {"copied_pages": self.copied_pages, "page_size": self.page_size,
                "faults_served": self.faults_served,
                "causes": {name: share.to_dict() for name, share in self.causes.items()},
                "unexplained_pages": self.unexplained_pages,
                "unexplained_by_mapping": dict(self.unexplained_by_mapping),
                "headline": self.headline()}

    def headline(self) -> str:
        """One line: e.g. "78,431 pages copied, 100 % by reference-count writes to int objects".

        The share stated is that of the most common cause and, within it, the
        most common object type (mapping, outside the data).
        """
        pages = f"{self.copied_pages:,} page{'s' if self.copied_pages != 1 else ''} copied"
        if not self.copied_pages:
            return pages
        name, top = max(self.causes.items(), key=lambda kv: kv[1].pages)
        if top.pages < self.unexplained_pages:
            return f"{pages}, {_percent(self.unexplained_pages / self.copied_pages)} unexplained " \
                   "(memory userfaultfd cannot protect)"
        # The kinds that matter (a twentieth of the cause or more), largest first.
        kinds = [k for i, (k, n) in enumerate(top.by_kind.items()) if i == 0 or n * 20 >= top.pages]
        kind = " and ".join(kinds[:2]) + (" and others" if len(kinds) > 2 else "")
        what = {"refcount": f"reference-count writes to {kind} objects",
                "gc_header": f"GC-header writes to {kind} objects",
                "other_header_field": f"writes to other header fields of {kind} objects",
                "payload": f"writes to the payload of {kind} objects",
                "outside_data": f"writes outside the data, in {kind}"}[name]
        return f"{pages}, {_percent(top.pages / self.copied_pages)} by {what}"

    def pages_of(self, cause: str, kind: Optional[str] = None) -> np.ndarray:
        """Page numbers whose first write had ``cause`` (and, if given, was to a ``kind``
        object, or in a ``kind`` mapping for ``outside_data``), ascending."""
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}; the causes are {', '.join(CAUSES)}")
        faults = self._faults
        mine = faults.cause == CAUSES.index(cause)
        if kind is not None:
            mine &= np.array([k == kind for k in _kinds(self._data, self._maps, faults)], bool)
        return faults.pages[mine]

    @property
    def first_writes(self) -> np.ndarray:
        """The exact address of the first write to each page of ``explained_pages``."""
        return self._faults.addresses

    def format(self) -> str:
        """The breakdown as text: the headline, then one line per cause."""
        lines = [self.headline()]
        for name, share in self.causes.items():
            kinds = ", ".join(f"{k} {v:,}" for k, v in itertools.islice(share.by_kind.items(), 3))
            more = len(share.by_kind) - 3
            kinds += f", {more} more" if more > 0 else ""
            line = f"  {name:<19} {share.pages:>10,} pages {_percent(share.share):>7}"
            if share.pages:
                line += f"  ({kinds}) e.g. {share.example}"
            lines.append(line)
        line = f"  {'unexplained':<19} {self.unexplained_pages:>10,} pages " \
               f"{_percent(self.unexplained_pages / self.copied_pages if self.copied_pages else 0.0):>7}"
        if self.unexplained_pages:
            line += "  (" + ", ".join(f"{k} {v:,}" for k, v in self.unexplained_by_mapping.items()) + ")"
        lines.append(line)
        return "\n".join(lines)


def _percent(fraction: float) -> str:
    """"100 %" only when it is all, "0 %" only when it is nothing; else one decimal."""
    if fraction >= 1.0:
        return "100 %"
    if fraction <= 0.0:
        return "0 %"
    return f"{min(max(fraction * 100, 0.1), 99.9):.1f} %"


def _receive_all(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the other end shuts down."""
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _mapping_labels(maps: Sequence[MapsEntry], addresses: np.ndarray) -> List[str]:
    starts = np.array([m.start for m in maps], np.uint64)
    which = np.searchsorted(starts, addresses, side="right") - 1
    return [maps[w].label if w >= 0 and a < maps[w].stop else "[unmapped]"
            for w, a in zip(which.tolist(), addresses.tolist())]


def _count(labels: Sequence[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for label in labels:
        out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _describe(data: _Data, maps: Sequence[MapsEntry], faults: _Faults, i: int) -> str:
    """One fault in words: the object, where it sits in the data, the field written."""
    address, region, cause = int(faults.addresses[i]), int(faults.region[i]), int(faults.cause[i])
    if region < 0:
        return f"{_mapping_labels(maps, faults.addresses[i:i + 1])[0]} at {address:#x}"
    element = int(faults.element[i])
    tp = data.types[faults.type[i]]
    where = repr(data.names[region]) + ("" if element < 0 else f", element {element}")
    name = _field_name(tp, cause, int(faults.part[i]), int(faults.offset[i]), int(faults.gc[i]))
    return f"{tp.__name__} {_snippet(data.element(region, element))} ({where}) at {address:#x}: {name}"


def _snippet(obj: Any) -> str:
    """A short repr of ``obj`` that never builds a long one first.

    reprlib shortens after the fact for bytes-like objects and ints, and
    ``repr`` of a huge int raises ValueError (3.11+): those are done here.
    """
    if isinstance(obj, (bytes, bytearray)):
        return f"{type(obj).__name__}({bytes(obj[:12])!r}{'...' if len(obj) > 12 else ''}, {len(obj):,} bytes)"
    if isinstance(obj, int) and obj.bit_length() > 64:
        return f"<int of {obj.bit_length():,} bits>"
    return reprlib.repr(obj)


def _kinds(data: _Data, maps: Sequence[MapsEntry], faults: _Faults) -> List[str]:
    """Per fault: the written object's type name, or the mapping label outside the data."""
    labels = _mapping_labels(maps, faults.addresses)
    return [labels[i] if region < 0 else data.types[code].__name__
            for i, (region, code) in enumerate(zip(faults.region.tolist(), faults.type.tolist()))]


def _summarise(faults: _Faults, copied_pages: int, missing: np.ndarray, served: int,
               data: _Data, maps: Sequence[MapsEntry]) -> Explanation:
    """An Explanation of ``faults`` (one per page) plus ``missing`` unexplained pages."""
    kinds = np.array(_kinds(data, maps, faults), object)
    causes = {}
    for code, name in enumerate(CAUSES):
        mine = faults.cause == code
        counts = _count(kinds[mine])
        example = None
        if counts:
            # The earliest first write of the most common kind.
            candidates = np.flatnonzero(mine & (kinds == next(iter(counts))))
            example = _describe(data, maps, faults, int(candidates[np.argmin(faults.order[candidates])]))
        pages = int(np.count_nonzero(mine))
        causes[name] = CauseShare(pages, pages / copied_pages if copied_pages else 0.0, counts, example)
    unexplained = _count(_mapping_labels(maps, missing << np.uint64(PAGE_SHIFT)))
    return Explanation(copied_pages=copied_pages, causes=causes, unexplained_pages=int(missing.size),
                       unexplained_by_mapping=unexplained, faults_served=served, _faults=faults,
                       _data=data, _maps=tuple(maps))


# --- serving the child's faults -------------------------------------------

# The hand-over: the child sends the descriptor with the number of ranges,
# then the ranges; the parent protects them and answers _ARMED, or _FAILED
# followed by the reason.
_HANDOVER = struct.Struct("=cQ")
_ARMED, _FAILED = b"A", b"E"


class FaultTracer:
    """Records the first write to every page of a forked child, and explains it.

    ``objects`` maps region names to the objects of the data (what the
    copied pages are classified against); the index is built here, in the
    parent, before the fork.  See the module docstring for the protocol.
    """

    def __init__(self, objects: Mapping[str, Any]) -> None:
        self._index = ObjectIndex(objects)
        self._addresses = array.array("Q")
        self._maps: List[MapsEntry] = []
        self._ends: Tuple[Optional[socket.socket], Optional[socket.socket]] = (None, None)
        self._stop_pipe: Tuple[int, int] = (-1, -1)
        self._pidfd = -1
        self._thread: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None

    def before_fork(self) -> None:
        """Check that userfaultfd write-protect works here, and open the hand-over socket.

        Raises ExplainUnavailableError (an UnsupportedPlatformError) with the
        reason when it does not.
        """
        os.close(uffd.open_write_protect_fd())
        if not hasattr(os, "pidfd_open"):
            raise ExplainUnavailableError("os.pidfd_open is missing (Python 3.9+ on Linux 5.3+)")
        self._ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stop_pipe = os.pipe()

    def arm_child(self, ranges: Sequence[Range]) -> None:
        """In the child: have the parent write-protect ``ranges`` through a userfaultfd.

        ``ranges`` are ``[start, stop)`` byte ranges of anonymous private
        memory.  The child hands the descriptor over and closes its own copy
        *before* anything is protected; the parent registers and protects
        the ranges (the ioctls act on the descriptor's address space, the
        child's) while the child waits.  So no moment exists in which the
        child holds the descriptor and waits for a fault to be served: a
        parent that stops serving closes it, which wakes the child.

        Raises ExplainError if the parent could not protect a range or did
        not answer within ACK_TIMEOUT seconds.
        """
        parent_end, child_end = self._ends
        parent_end.close()
        for fd in self._stop_pipe:
            os.close(fd)
        flat = array.array("Q", [edge for span in ranges for edge in span])
        fd = uffd.open_write_protect_fd()
        try:
            socket.send_fds(child_end, [_HANDOVER.pack(_ARMED, len(ranges))], [fd])
        finally:
            os.close(fd)
        child_end.sendall(flat.tobytes())
        child_end.settimeout(ACK_TIMEOUT)
        try:
            answer = _receive_all(child_end)
        except socket.timeout:
            answer = b""
        finally:
            child_end.close()
        if answer != _ARMED:
            reason = answer[1:].decode(errors="replace") if answer[:1] == _FAILED \
                else f"no answer within {ACK_TIMEOUT:g} s"
            raise ExplainError(f"the parent could not write-protect the child's memory: {reason}")

    def start_serving(self, pid: int) -> None:
        """In the parent, right after the fork: serve the child ``pid``'s faults in a thread."""
        self._ends[1].close()
        self._pidfd = os.pidfd_open(pid)
        self._thread = threading.Thread(target=self._serve, args=(pid,), name="cowmem-fault-handler",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (closing the descriptor wakes the child) and release everything.

        Never raises; safe to call more than once and on every error path.
        """
        if self._thread is not None:
            os.write(self._stop_pipe[1], b"x")
            try:
                self._thread.join()
            except RuntimeError:
                pass  # a Ctrl-C inside start_serving's Thread.start(): it never started
            self._thread = None
        for end in self._ends:
            if end is not None:
                end.close()
        self._ends = (None, None)
        for fd in (*self._stop_pipe, self._pidfd):
            if fd >= 0:
                os.close(fd)
        self._stop_pipe, self._pidfd = (-1, -1), -1

    def stop(self) -> Explanation:
        """Stop serving and classify every page the child faulted on.

        Call it once the child has exited.  Raises ExplainError if serving
        failed (the faults recorded would be partial).
        """
        self.close()
        if self._failure is not None:
            raise ExplainError(f"serving the child's write faults failed: {self._failure!r}") \
                from self._failure
        addresses = np.frombuffer(self._addresses, np.uint64) if self._addresses else np.zeros(0, np.uint64)
        pages, first = np.unique(addresses >> np.uint64(PAGE_SHIFT), return_index=True)
        faults = _Faults(pages, addresses[first], first, **self._index.classify(addresses[first]))
        return _summarise(faults, int(pages.size), np.zeros(0, np.uint64), int(addresses.size),
                          self._index.data, self._maps)

    # The serving thread.  It must never leave the child blocked: whatever
    # happens, it closes the descriptor, which wakes every faulting thread.

    def _serve(self, pid: int) -> None:
        fd = -1
        try:
            fd, ranges = self._receive()
            if fd < 0:
                return
            # The child waits, so its mappings now are those being protected:
            # every fault falls in one of them.
            self._maps = read_maps(f"/proc/{pid}/maps")
            if self._protect(fd, ranges):
                uffd.serve_write_faults(fd, (self._pidfd, self._stop_pipe[0]), self._addresses.append)
        except BaseException as exc:
            self._failure = exc
        finally:
            if fd >= 0:
                os.close(fd)

    def _receive(self) -> Tuple[int, List[Range]]:
        """The child's descriptor and ranges; -1 if the child ended (or stop came) first."""
        sock = self._ends[0]
        poller = select.poll()
        for fd in (sock.fileno(), self._pidfd, self._stop_pipe[0]):
            poller.register(fd, select.POLLIN)
        if all(fd != sock.fileno() for fd, _ in poller.poll()):
            return -1, []
        message, fds, _, _ = socket.recv_fds(sock, _HANDOVER.size, 1, socket.MSG_WAITALL)
        if len(message) != _HANDOVER.size or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return -1, []        # the child failed before the hand-over
        _, count = _HANDOVER.unpack(message)
        flat = array.array("Q")
        flat.frombytes(sock.recv(count * 2 * flat.itemsize, socket.MSG_WAITALL) if count else b"")
        if len(flat) != 2 * count:
            os.close(fds[0])
            return -1, []        # the child died while sending
        return fds[0], list(zip(flat[::2], flat[1::2]))

    def _protect(self, fd: int, ranges: Sequence[Range]) -> bool:
        """Register and write-protect the child's ranges; tell the child how it went."""
        answer = _ARMED
        try:
            for step in (uffd.register_write_protect, uffd.write_protect):
                for start, stop in ranges:
                    step(fd, start, stop)
        except OSError as exc:
            answer = _FAILED + (f"userfaultfd cannot protect [{start:#x}, {stop:#x}) ({exc.strerror}): "
                                "only anonymous private memory qualifies").encode()
        sock = self._ends[0]
        sock.sendall(answer)
        sock.shutdown(socket.SHUT_WR)
        return answer == _ARMED
