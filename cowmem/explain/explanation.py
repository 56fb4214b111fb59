"""The explanation of a child's copies: the first write to each copied page, by cause.

Each copied page's first write (its exact address, recorded by the fault
server, see tracer.py) is classified against the object index of the data
(causes.py) and summarised per cause and per object type, with one example
per cause that names the object written, the path that reaches it from the
named objects and the field.
"""

from __future__ import annotations

import itertools
import reprlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import helper
from ..errors import CowmemError
from ..index import ObjectIndex, distinct
from ..paths import find_paths
from .._linux.maps import Mapping as MapsEntry
from .._linux.pagemap import PAGE_SHIFT, PAGE_SIZE
from .causes import CAUSES, classify, field_name


@dataclass(frozen=True)
class Data:
    """What the faults are classified against: the named objects and their index.

    ``depth`` is how deep the index followed references (None: all), so
    that the objects of the examples are found again the same way.
    """

    objects: Mapping[str, Any]
    index: ObjectIndex
    depth: Optional[int] = None

    def classify(self, pages: np.ndarray, addresses: np.ndarray, order: np.ndarray) -> "_Faults":
        """The faults at ``addresses`` (one per page of ``pages``), classified."""
        found = classify(self.index, addresses)
        return _Faults(pages, addresses, order, found["cause"], found["row"], found["region"], found["type"],
                       found["part"], found["gc"], found["offset"])


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
    sequence of faults, the columns of ``causes.classify``.
    """

    pages: np.ndarray      # page numbers (address >> PAGE_SHIFT), ascending
    addresses: np.ndarray  # exact address of the first write
    order: np.ndarray
    cause: np.ndarray
    row: np.ndarray        # the object index's row, -1 outside the data
    region: np.ndarray     # -1 outside the data
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
    _data: Optional[Data] = field(default=None, repr=False, compare=False)
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
        copied = distinct(np.asarray(copied_page_numbers, np.uint64))[0]
        keep = np.isin(self._faults.pages, copied, assume_unique=True)
        missing = copied[~np.isin(copied, self._faults.pages, assume_unique=True)]
        return summarise(self._faults.take(keep), int(copied.size), missing,
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
        pages = f"{self.copied_pages:,} {_unit(self.copied_pages).rstrip()} copied"
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
            line = f"  {name:<19} {share.pages:>10,} {_unit(share.pages)} {_percent(share.share):>7}"
            if share.pages:
                line += f"  ({kinds}) e.g. {share.example}"
            lines.append(line)
        line = f"  {'unexplained':<19} {self.unexplained_pages:>10,} {_unit(self.unexplained_pages)} " \
               f"{_percent(self.unexplained_pages / self.copied_pages if self.copied_pages else 0.0):>7}"
        if self.unexplained_pages:
            line += "  (" + ", ".join(f"{k} {v:,}" for k, v in self.unexplained_by_mapping.items()) + ")"
        lines.append(line)
        return "\n".join(lines)


def _unit(pages: int) -> str:
    """"page " or "pages": as wide either way, so that the columns stay aligned."""
    return "page " if pages == 1 else "pages"


def _percent(fraction: float) -> str:
    """"100 %" only when it is all, "0 %" only when it is nothing; else one decimal."""
    if fraction >= 1.0:
        return "100 %"
    if fraction <= 0.0:
        return "0 %"
    return f"{min(max(fraction * 100, 0.1), 99.9):.1f} %"


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


def _describe(data: Data, maps: Sequence[MapsEntry], faults: _Faults, i: int,
              found: Mapping[int, Tuple[str, str]]) -> str:
    """One fault in words: the object, the path to it in the data, the field written."""
    address, region, cause = int(faults.addresses[i]), int(faults.region[i]), int(faults.cause[i])
    if region < 0:
        return f"{_mapping_labels(maps, faults.addresses[i:i + 1])[0]} at {address:#x}"
    info = data.index.types[faults.type[i]]
    name = field_name(info, cause, int(faults.part[i]), int(faults.offset[i]), int(faults.gc[i]))
    owner = int(data.index.owner[faults.row[i]])
    if owner in found:
        path, snippet = found[owner]
        return f"{info.name} {snippet} ({path}) at {address:#x}: {name}"
    return f"{info.name} in {data.index.regions[region]!r} at {address:#x}: {name}"


def _find(data: Data, owners: List[int]) -> Dict[int, Tuple[str, str]]:
    """Path and short repr of the objects at ``owners``, found again in a forked helper.

    Empty where they cannot be found (the data changed since, or the helper
    failed): the examples then name the type and region only.
    """
    if not owners:
        return {}

    def job() -> Tuple[Dict[int, Tuple[str, str]], list]:
        paths = find_paths(dict(data.objects), owners, data.depth)
        return {key: (path, _snippet(obj)) for key, (path, obj) in paths.items()}, []

    try:
        return helper.run(job)[0]
    except CowmemError:
        return {}


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


def _kinds(data: Data, maps: Sequence[MapsEntry], faults: _Faults) -> List[str]:
    """Per fault: the written object's type name, or the mapping label outside the data."""
    labels = _mapping_labels(maps, faults.addresses)
    return [labels[i] if region < 0 else data.index.types[code].name
            for i, (region, code) in enumerate(zip(faults.region.tolist(), faults.type.tolist()))]


def summarise(faults: _Faults, copied_pages: int, missing: np.ndarray, served: int,
               data: Data, maps: Sequence[MapsEntry]) -> Explanation:
    """An Explanation of ``faults`` (one per page) plus ``missing`` unexplained pages."""
    kinds = np.array(_kinds(data, maps, faults), object)
    counts, examples = {}, {}
    for code, name in enumerate(CAUSES):
        mine = faults.cause == code
        counts[name] = _count(kinds[mine])
        if counts[name]:
            # The earliest first write of the most common kind.
            candidates = np.flatnonzero(mine & (kinds == next(iter(counts[name]))))
            examples[name] = int(candidates[np.argmin(faults.order[candidates])])
    owners = sorted({int(data.index.owner[faults.row[i]]) for i in examples.values() if faults.row[i] >= 0})
    found = _find(data, owners)
    causes = {}
    for code, name in enumerate(CAUSES):
        pages = int(np.count_nonzero(faults.cause == code))
        example = _describe(data, maps, faults, examples[name], found) if name in examples else None
        causes[name] = CauseShare(pages, pages / copied_pages if copied_pages else 0.0, counts[name], example)
    unexplained = _count(_mapping_labels(maps, missing << np.uint64(PAGE_SHIFT)))
    return Explanation(copied_pages=copied_pages, causes=causes, unexplained_pages=int(missing.size),
                       unexplained_by_mapping=unexplained, faults_served=served, _faults=faults,
                       _data=data, _maps=tuple(maps))
