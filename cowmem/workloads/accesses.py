"""The accesses: what a forked child does with the parent's data."""

from __future__ import annotations

import copy
import gc
import json
import random
from multiprocessing.reduction import ForkingPickler
from typing import Any, Mapping

import numpy as np
# numpy 2 loads numpy.random lazily: random_index would import it in the
# child, and an import there copies pages of the interpreter's own.
import numpy.random  # noqa: F401

from . import tables
from .registry import FRAME, ITERABLE, JSON, NUMBERS, POSITIONS, STRINGS, TABLE, WRITABLE, Access, by_name

SAMPLE_SEED = 20240611
"""Seed of the ``sample`` and ``random_index`` positions: every run touches the same elements."""


def _iterate(data: Any) -> None:
    for _ in data:
        pass


def _sum(data: Any) -> Any:
    # An array's own reduction, as the question's user called it; builtin
    # sum() would make a numpy scalar of every element.
    return data.sum() if isinstance(data, np.ndarray) else sum(data)


def _write(data: Any) -> None:
    # A copy first: numpy skips assigning an array to itself (list, bytearray
    # and array.array copy first in that case anyway).  Values stay the same,
    # which matters for ndarray_shared, whose writes reach the parent.
    data[:] = copy.copy(data)


def _sample(data: Any) -> None:
    n = len(data)
    pick = random.Random(SAMPLE_SEED).randrange
    for _ in range(n // 10):
        data[pick(n)]  # the read is the point: it takes and drops a reference


def _random_index(data: Any) -> None:
    # The order is made in the child (fresh pages, not copies), as a
    # DataLoader's RandomSampler makes it in each epoch; by numpy's legacy
    # generator, whose stream every numpy version keeps the same.
    for i in np.random.RandomState(SAMPLE_SEED).permutation(len(data)).tolist():
        data[i]


ACCESSES: Mapping[str, Access] = by_name(
    # Not even handed the data: passing it would write its reference count.
    Access("none", "nothing: the cost of measuring itself", None),
    Access("len", "len(data): reads only the container's header", len),
    Access("sum", "sum(data), or data.sum() for numpy arrays", _sum, frozenset({NUMBERS})),
    Access("iterate", "for x in data: pass", _iterate, frozenset({ITERABLE})),
    # The collector walks every tracked object of the interpreter whatever
    # the data is, so it applies to all: for untracked data it shows the
    # interpreter's own share.
    Access("gc_collect", "gc.collect() in the child", lambda data: gc.collect()),
    Access("write", "data[:] = copy.copy(data): every element slot rewritten, same values",
           _write, frozenset({WRITABLE})),
    Access("sample", "data[i] for len(data) // 10 random i (fixed seed, drawn with replacement)",
           _sample, frozenset({POSITIONS})),
    Access("copy", "copy.copy(data): a shallow copy (a deep one for a DataFrame before pandas 3)", copy.copy),
    Access("pickle", "pickle data as multiprocessing does to send a result (ForkingPickler.dumps)",
           ForkingPickler.dumps),
    Access("random_index", "data[i] for every i in a shuffled order: one epoch of a DataLoader",
           _random_index, frozenset({POSITIONS})),
    Access("json_dumps", "json.dumps(data)", json.dumps, frozenset({JSON})),
    Access("column_sum", "the 'id' column's sum, by the library's reduction", tables.column_sum,
           frozenset({TABLE})),
    Access("str_len_sum", "the total length of the strings, by the library's string functions",
           tables.str_len_sum, frozenset({STRINGS})),
    Access("itertuples", "for row in data.itertuples(): pass", tables.itertuples, frozenset({FRAME})),
    Access("to_dict", "data.to_dict('records'): one dict per row", tables.to_dict, frozenset({FRAME})),
)
