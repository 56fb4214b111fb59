"""Finding objects again by address, with the path that reaches them from the data.

Explain mode names the object behind a copied page's first write: the
index (made before the fork) holds addresses only, and the object is found
again here, in a forked helper, after the measurement.
"""

from __future__ import annotations

import gc
import sys
import types
from collections import deque
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from . import layouts
from .objects import SHARED_TYPES


def find_paths(objects: Dict[str, Any], wanted: Sequence[int], depth: Optional[int] = None) -> Dict[int, Tuple[str, Any]]:
    """The object at each of ``wanted`` (addresses) reachable from the named objects, with its path.

    Breadth first, so the path is a shortest one, written as Python would
    reach it: ``data[3]``, ``data['key'].name``, ``data._mgr.blocks[1].values[57]``
    (an array's items by flat index).  Addresses not reached are left out.
    The walk's allocations are its own: cowmem runs it in a forked helper.
    """
    wanted_set, found = set(wanted), {}
    namespaces = {id(vars(m)) for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)}
    for name, root in objects.items():
        if id(root) in wanted_set:
            found[id(root)] = (name, root)
        parents: Dict[int, Tuple[int, str]] = {id(root): (0, name)}
        level, steps = [root], 0
        while level and len(found) < len(wanted_set) and (depth is None or steps < depth):
            following = []
            for obj in level:
                for child, label in _labelled(obj):
                    key = id(child)
                    if key in parents or isinstance(child, SHARED_TYPES) or key in namespaces:
                        continue
                    parents[key] = (id(obj), label)
                    following.append(child)
                    if key in wanted_set and key not in found:
                        found[key] = (_path(parents, key), child)
            level, steps = following, steps + 1
    return found


def _path(parents: Dict[int, Tuple[int, str]], key: int) -> str:
    labels = []
    while key:
        key, label = parents[key]
        labels.append(label)
    return "".join(reversed(labels))


def _labelled(obj: Any) -> Any:
    """(object held, how ``obj`` holds it) pairs, for paths."""
    if isinstance(obj, (list, tuple, deque)):
        return ((x, f"[{i}]") for i, x in enumerate(obj))
    if isinstance(obj, dict):
        return (pair for k, v in obj.items() for pair in ((k, f" key {_short(k)}"), (v, f"[{_short(k)}]")))
    if isinstance(obj, (set, frozenset)):
        return ((x, " member") for x in obj)
    if isinstance(obj, np.ndarray):
        items = enumerate(obj.ravel(order="K").tolist()) if obj.dtype.kind == "O" else ()
        return [*([(obj.base, ".base")] if obj.base is not None else []), *((x, f"[{i}]") for i, x in items)]
    attributes = getattr(obj, "__dict__", None)
    named = [(v, f".{k}") for k, v in attributes.items()] if isinstance(attributes, dict) else []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                named.append((getattr(obj, slot), f".{slot}"))
    return named or [(x, f" -> {layouts.type_name(type(x))}") for x in gc.get_referents(obj)]


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."
