"""The failure message of a test over its limit, and the hint chosen for it.

The message gives the bytes copied and the limit, the mappings the copies
are in, what the second run found (the fixtures' share; the share by cause
and object type where explain mode works), and one hint picked from that:
what usually helps against the write that dominates.
"""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional

from .marker import Limit

# Values whose reference counts a container of them makes the child write
# page after page, and which a numpy array (or array.array, bytes) holds
# as one buffer instead.
_SCALARS = {"int", "float", "complex", "bool", "str", "bytes", "float64", "int64", "Decimal"}


def failure_message(limit: Limit, report: Any, counted: int, findings: Any) -> str:
    """The text of the failure: counts, mappings, the explanation, a hint."""
    page = report.page_size
    where = f" inside the fixtures {', '.join(limit.regions)}" if limit.regions else ""
    lines = [f"{limit.describe()}: the test body copied {_size(counted, page)} of the parent's "
             f"memory{where}; its limit is {limit.limit:,} bytes."]
    if limit.regions:
        lines.append(f"The whole child copied {_size(report.copied_bytes, page)}.")
        lines += _unseen(report, page, "the body")
    lines.append("Copied pages per mapping: "
                 + _pages_by_name({_label(k): v for k, v in report.mappings.items()}, page) + ".")
    second = findings.report
    if second is not None:
        lines.append(f"A second run of the body, with the fixtures located, copied "
                     f"{_size(second.copied_bytes, page)}; pages inside the fixtures: "
                     + _pages_by_name(dict(second.regions), page) + ".")
        lines += _unseen(second, page, "it")
        explanation = second.explanation
        if explanation is not None:
            scope = " (the pages inside the fixtures)" if limit.regions else ""
            text = explanation.format().splitlines()
            lines.append(f"Explained{scope}: {text[0]}" + ("" if explanation.copied_pages else
                                                          ": the second run copied none to explain."))
            if explanation.copied_pages:
                lines += ["  " + line for line in text[1:]]
    if findings.note:
        lines.append(findings.note[:1].upper() + findings.note[1:] + ".")
    lines.append("Hint: " + hint(findings, report if limit.regions else None))
    return "\n".join(lines)


def _unseen(report: Any, page_size: int, who: str) -> List[str]:
    blind = {name: n for name, n in report.unobserved.items() if n}
    if not blind:
        return []
    return [f"Pages of the fixtures already the child's when {who} began, or written by the parent meanwhile "
            "(writes to them are not seen): "
            + _pages_by_name(blind, page_size) + "."]


def hint(findings: Any, first: Optional[Any]) -> str:
    """What usually helps against what was found, most specific first.

    ``first``: the first run's report when it located the fixtures (regions).
    """
    if findings.headers_only:
        return ("the only pages copied inside the fixtures hold the fixture objects' own headers: "
                "the body takes a reference to each object it uses, which writes its header's page "
                "(or two, when the header spans a page boundary).  Allow two pages per fixture used.")
    second = findings.report
    explanation = None if second is None else second.explanation
    if explanation is not None and explanation.copied_pages:
        cause, share = max(explanation.causes.items(), key=lambda kv: kv[1].pages)
        if share.pages < explanation.unexplained_pages:
            mappings = ", ".join(_label(k) for k in explanation.unexplained_by_mapping)
            return (f"most copied pages are in memory userfaultfd cannot watch ({mappings}), such as "
                    "a file-backed data segment; see the whole child's mappings above.")
        kind = next(iter(share.by_kind))
        text = _REFCOUNT_HINTS[kind in _SCALARS] if cause == "refcount" else _CAUSE_HINTS[cause]
        return text.format(kind=kind)
    for report in (second, first):
        if report is not None and any(report.regions.values()):
            name = max(report.regions, key=report.regions.get)
            return _container_hint(name, findings.objects[name])
    return ("explain mode (--limit-copied-explain=auto, with userfaultfd: as root) names the "
            "write behind each copied page.")


_REFCOUNT_HINTS = {
    True: ("reading a Python object writes its reference count, so every page of {kind} objects "
           "the body reads is copied.  Hold such values in a numpy array (or array.array, "
           "bytes): the child then reads one buffer and copies none of it."),
    False: ("reading a Python object writes its reference count, so every page of {kind} "
            "objects the body reads is copied (gc.freeze() does not prevent that).  Fewer, "
            "larger objects help: columns in numpy arrays instead of many small objects."),
}
_CAUSE_HINTS = {
    "gc_header": (
        "a garbage collection in the child walks the parent's {kind} objects and writes their "
        "GC headers.  Call gc.freeze() in the parent once the data is built (in the fixture, "
        "before the fork): frozen objects are not traversed."),
    "other_header_field": (
        "the body modifies {kind} objects of the parent (a size, an item pointer, a version "
        "tag): appending to, resizing or assigning into the parent's containers copies their "
        "pages.  Build new containers in the child instead."),
    "payload": (
        "the body writes into the {kind} objects' own data: each page it modifies is copied.  "
        "Modify a copy of just the part that changes, or keep what workers write in shared "
        "memory (multiprocessing.shared_memory)."),
    "outside_data": (
        "most copies are outside the test's fixtures (in {kind}): the interpreter's and "
        "libraries' own memory, module-level data or caches.  Data kept in a module or a cache "
        "is explained by object type once a fixture hands it to the test; to leave the "
        "interpreter's own copies out, count only the fixtures with regions=[...]."),
}


def _container_hint(name: str, obj: Any) -> str:
    kind = type(obj).__name__
    if isinstance(obj, (list, tuple, dict, set, frozenset)):
        return (f"most copies are in {name!r}, a {kind} of Python objects: reading its elements "
                "writes their reference counts, a garbage collection their GC headers.  Hold "
                "the values in a numpy array, or call gc.freeze() in the parent if the collector "
                "is the cause; as root, explain mode (userfaultfd) tells which.")
    return (f"most copies are in {name!r} (a {kind}); as root, explain mode (userfaultfd) names "
            "the write behind each copied page.")


def _size(count: int, page_size: int) -> str:
    """"3,219,456 bytes (786 pages, 3.1 MiB)"."""
    pages = count // page_size
    mib = f", {count / 2**20:,.1f} MiB" if count >= 2**20 / 10 else ""
    return f"{count:,} bytes ({pages:,} page{'' if pages == 1 else 's'}{mib})"


def _pages_by_name(sizes: Mapping[str, int], page_size: int) -> str:
    return ", ".join(f"{name} {n // page_size:,}" for name, n in sizes.items()) or "none"


def _label(label: str) -> str:
    """A mapping's label, a file's by its name only."""
    return os.path.basename(label) if label.startswith("/") else label
