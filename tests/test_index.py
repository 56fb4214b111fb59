"""ObjectIndex.build: which of overlapping rows it keeps.

The rule, checked against a plain loop that shares nothing with the
vectorised build: in address order (rows that start together in the order
given), a row is kept when it starts at or past the end of every row kept
before it.
"""

import random

import numpy as np
import pytest

from cowmem.index import OBJECT, ObjectIndex


def index_of(rows):
    lo, hi = (np.array([r[i] for r in rows], np.uint64) for i in (0, 1))
    n = len(rows)
    return ObjectIndex.build(lo, hi, np.zeros(n, np.int32), np.zeros(n, np.int32), np.full(n, OBJECT, np.int8),
                             np.arange(n, dtype=np.uint64), (), ())


def kept_by_loop(rows):
    kept, end = [], 0
    for n, (lo, hi) in sorted(enumerate(rows), key=lambda r: r[1][0]):
        if hi > lo and lo >= end:
            kept.append(n)
            end = hi
    return kept


def test_a_row_dropped_for_an_overlap_takes_no_other_row_with_it():
    # [5, 200) overlaps [0, 10) and is dropped; [100, 150) overlaps only it.
    rows = [(0, 10), (5, 200), (100, 150), (150, 160)]
    assert index_of(rows).owner.tolist() == [0, 2, 3]


def test_the_first_of_rows_that_start_together_is_kept():
    assert index_of([(8, 16), (8, 32), (8, 16)]).owner.tolist() == [0]
    assert index_of([(8, 32), (8, 16), (16, 24)]).owner.tolist() == [0]


@pytest.mark.parametrize("seed", range(20))
def test_build_keeps_what_the_rule_keeps(seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(rng.randrange(1, 400)):
        lo = rng.randrange(0, 4000)
        rows.append((lo, lo + rng.choice([0, 1, 8, 16, 64, 300])))
    index = index_of(rows)
    assert index.owner.tolist() == kept_by_loop(rows)
    assert np.all(index.lo[1:] >= index.hi[:-1])
