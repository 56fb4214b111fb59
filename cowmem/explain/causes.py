"""The cause of a first write: which field of which object an address falls in."""

from __future__ import annotations

from typing import Dict

import numpy as np

from .. import layouts
from ..index import BUFFER, OBJECT, STORAGE, ObjectIndex, TypeInfo

CAUSES = ("refcount", "gc_header", "other_header_field", "payload", "outside_data")
REFCOUNT, GC_HEADER, OTHER_HEADER, PAYLOAD, OUTSIDE = range(len(CAUSES))


def classify(index: ObjectIndex, addresses: np.ndarray) -> Dict[str, np.ndarray]:
    """Per address (uint64): its cause code, and where it falls in the data.

    Keys: ``cause`` (an index into CAUSES); ``row`` (the index row, -1
    outside the data), ``region`` (-1 outside), ``type`` (layout code, an
    index into ``index.types``), ``part`` (OBJECT, STORAGE or BUFFER),
    ``gc`` (GC header bytes) and ``offset`` (bytes from the object's
    address, or from the start of the storage or buffer).
    """
    addresses = np.asarray(addresses, np.uint64)
    row = index.lookup(addresses)
    inside = row >= 0
    out = {key: np.full(addresses.shape, -1, np.int64) for key in ("region", "type", "part", "gc", "offset")}
    out["row"] = row
    out["cause"] = np.full(addresses.shape, OUTSIDE, np.int8)
    if not np.any(inside):
        return out
    before, gc, header = (np.array(column, np.int64) for column in
                          zip(*((t.before, t.gc, t.header) for t in index.types)))
    rows = row[inside]
    code, part = index.code[rows], index.part[rows]
    is_object = part == OBJECT
    offset = (addresses[inside].astype(np.int64) - index.lo[rows].astype(np.int64)
              - np.where(is_object, before[code], 0))
    gc_bytes = np.where(is_object, gc[code], 0)
    out["cause"][inside] = np.select(
        [~is_object, offset < -gc_bytes, offset < 0, offset < layouts.REFCOUNT_SIZE, offset < header[code]],
        [PAYLOAD, OTHER_HEADER, GC_HEADER, REFCOUNT, OTHER_HEADER], PAYLOAD)
    for key, value in (("region", index.region[rows]), ("type", code), ("part", part), ("gc", gc_bytes),
                       ("offset", offset)):
        out[key][inside] = value
    return out


def field_name(info: TypeInfo, cause: int, part: int, offset: int, gc: int) -> str:
    """A readable name of the field at ``offset`` (as ``classify`` gives it) of a ``info`` object."""
    if cause == REFCOUNT:
        return "ob_refcnt"
    if cause == GC_HEADER:
        return "PyGC_Head._gc_next" if offset < -gc // 2 else "PyGC_Head._gc_prev"
    if part == STORAGE:
        return f"item storage, slot {offset // layouts.WORD}" if info.fields == "list" else f"storage byte {offset}"
    if part == BUFFER:
        return f"buffer byte {offset}"
    if cause == OTHER_HEADER:
        if offset < 0:
            return "pre-header (managed __dict__ / weakref pointers)"
        word = offset // layouts.WORD * layouts.WORD
        if word == layouts.TYPE:
            return "ob_type"
        return layouts.HEADER_FIELDS.get(info.fields, {}).get(word, f"header byte {offset}")
    return f"{layouts.PAYLOAD_NAMES.get(info.fields, 'payload')}, byte {offset - info.header}"
