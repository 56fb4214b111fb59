"""Address range arithmetic: ``[start, stop)`` ranges in bytes, sorted and disjoint."""

from __future__ import annotations

from typing import List, Sequence, Tuple

Range = Tuple[int, int]


def subtract_ranges(ranges: Sequence[Range], remove: Sequence[Range]) -> List[Range]:
    """The parts of ``ranges`` (sorted, disjoint) not covered by any range in ``remove``."""
    cuts = sorted(r for r in remove if r[1] > r[0])
    out: List[Range] = []
    first = 0
    for start, stop in ranges:
        while first < len(cuts) and cuts[first][1] <= start:
            first += 1
        pos, k = start, first
        while k < len(cuts) and cuts[k][0] < stop:
            if cuts[k][0] > pos:
                out.append((pos, cuts[k][0]))
            pos = max(pos, cuts[k][1])
            k += 1
        if pos < stop:
            out.append((pos, stop))
    return out


def _merge_adjacent(ranges: Sequence[Range]) -> List[Range]:
    """Sorted ranges with each run of touching ones made one (one read instead of several)."""
    out: List[Range] = []
    for start, stop in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def intersect_ranges(ranges: Sequence[Range], within: Sequence[Range]) -> List[Range]:
    """The parts of ``ranges`` inside ``within`` (sorted, disjoint)."""
    return [(max(start, w_start), min(stop, w_stop))
            for start, stop in ranges for w_start, w_stop in within
            if max(start, w_start) < min(stop, w_stop)]
