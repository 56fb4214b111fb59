"""The multiprocessing experiment behind ``cowmem workers``, measured.

The experiment people run to see what ``multiprocessing`` costs: fork four
workers from a parent holding one big ``data`` object (a numpy array, a
list of ints), have each touch it, and read the system's free memory in
each worker afterwards.  Here every worker also counts, page-exactly, what
its access made the kernel copy, and both numbers are printed side by
side, with the reason in one line.
"""

from __future__ import annotations

import gc
import math
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import psutil

from . import workloads
from .errors import InsufficientMemoryError
from .workers import WorkersReport, run_workers

GiB = 2**30
MiB = 2**20


@dataclass(frozen=True)
class Case:
    """One run of the experiment: the data, what each worker does with it, and why it costs what it does."""

    data: str            # a workloads data kind
    access: str          # a workloads access
    size: int            # elements at scale 1
    built: str           # the code for the data, with {n} (elements) or {side} (of the square)
    does: str            # the code for the access
    why: str             # the explanation, one line

    def data_label(self, n: int) -> str:
        """The code that builds this case's data with ``n`` elements."""
        return self.built.format(n=_count(n), side=_side(n))


SIDE = 15000

CASES: Tuple[Case, ...] = (
    Case("ndarray", "sum", SIDE**2, "np.ones(({side}, {side}))", "data.sum()",
         "numpy keeps the floats in one raw buffer that sum() only reads: its pages stay shared"),
    Case("list_int", "sum", 10**8, "list(range({n}))", "sum(data)",
         "sum() takes each int in turn and writes its refcount, which sits in the int's own header: "
         "every page of ints is copied, a 32-byte block per int"),
    Case("list_int", "iterate", 10**8, "list(range({n}))", "for x in data: pass",
         "binding x to each int writes its refcount, exactly as sum() does: every page of ints is copied"),
    Case("list_same_int", "iterate", 10**8, "[1] * {n}", "for x in data: pass",
         "one int object referenced n times: only its one page can be written "
         "(and not even that from CPython 3.12, where small ints are immortal)"),
)


@dataclass(frozen=True)
class Row:
    """One case as run: its size, the data's estimated memory (bytes), and every worker's outcome."""

    case: Case
    n: int
    data_bytes: int
    report: WorkersReport

    @property
    def label(self) -> str:
        return f"{self.case.data_label(self.n)}, {self.case.does}"


def sizes(scale: float) -> List[Tuple[Case, int]]:
    """Every case with its element count at ``scale`` (the array stays square)."""
    out = []
    for case in CASES:
        if case.data == "ndarray":
            side = max(1, round(SIDE * scale ** 0.5))
            out.append((case, side * side))
        else:
            out.append((case, max(1, round(case.size * scale))))
    return out


def needed_bytes(scale: float, workers: int) -> Tuple[int, Case, int]:
    """The most memory one case may take, in bytes, with that case and its size.

    The worst case is that every worker ends up with a copy of all of the
    data: so it is for spawn, and nearly so for fork over a list of ints
    (whose pointer array, a fifth of it, stays shared).  The data's estimate
    is the parent's peak while building, a little generous, so no further
    headroom is added.
    """
    worst = max(((workloads.estimate_bytes(case.data, n), case, n) for case, n in sizes(scale)),
                key=lambda t: t[0])
    return worst[0] * (1 + workers), worst[1], worst[2]


def check_memory(scale: float, workers: int, available: Optional[int] = None) -> None:
    """Raise InsufficientMemoryError, with the --scale that fits, if the experiment might not fit.

    ``available`` defaults to psutil's available memory (bytes).
    """
    if available is None:
        available = psutil.virtual_memory().available
    need, case, n = needed_bytes(scale, workers)
    if need <= available:
        return
    fit = _round_down(scale * available / need)
    hint = (f"--scale {fit:g} fits" if fit > 0 and needed_bytes(fit, workers)[0] <= available
            else "no --scale fits")
    raise InsufficientMemoryError(
        f"at --scale {scale:g} the largest case, {case.data_label(n)}, needs up to {need / GiB:.1f} GiB "
        f"(the data, {need / (1 + workers) / GiB:.1f} GiB, in the parent and possibly in each of "
        f"{workers} workers) but {available / GiB:.1f} GiB is available; {hint}")


def run(scale: float = 1.0, workers: int = 4, start_method: str = "fork",
        progress: Callable[[str], None] = lambda line: None) -> List[Row]:
    """Run every case with ``workers`` workers; ``progress`` hears a line before each long step.

    Each data kind is built once for the cases that share it, and dropped
    before the next is built.  Call ``check_memory`` first.
    """
    rows = []
    built: Tuple[Optional[str], int, object] = (None, 0, None)
    for case, n in sizes(scale):
        estimate = workloads.estimate_bytes(case.data, n)
        if built[:2] != (case.data, n):
            built = (None, 0, None)
            gc.collect()
            progress(f"building {case.data_label(n)} (about {_human(estimate)})")
            built = (case.data, n, _build(case, n))
        access = workloads.ACCESSES[case.access].run
        progress(f"{workers} workers ({start_method}) run {case.does} on {case.data_label(n)}")
        report = run_workers(access, built[2], workers=workers, start_method=start_method)
        rows.append(Row(case, n, estimate, report))
    return rows


def _build(case: Case, n: int) -> object:
    data = workloads.build(case.data, n)
    if case.data == "ndarray":
        side = _side(n)
        data = np.asarray(data).reshape(side, side)  # a square array: a view, no copy
    return data


# Why spawn and forkserver cost what they do, whatever the data and the access.
PICKLED_WHY = ("the data is pickled to each worker and rebuilt there: "
               "the worker holds its own copy of all of it, whatever the access")


def format_rows(rows: List[Row], scale: float) -> str:
    """The table ``cowmem workers`` prints: one row per case, failures underneath."""
    first = rows[0].report
    method = first.requested + (f" ({first.start_method})" if first.start_method != first.requested else "")
    fork = first.start_method == "fork"
    cost = ("copied = pages each worker's access made the kernel copy (cowmem, pagemap)" if fork else
            "duplicated = each worker's USS minus that of a worker started without the data")
    head = (f"The multiprocessing experiment: {len(first.workers)} workers, start method {method}, scale {scale:g}; "
            f"CPython {platform.python_version()}, numpy {np.__version__}\n"
            f"{cost}; free-memory drop = the system's MemFree+Buffers+Cached, "
            "before the workers minus in each worker after its access")
    table = [("case", "data (est.)", f"{cost.split()[0]} per worker", "per element", "free-memory drop",
              "verdict", "why")]
    notes = []
    for row in rows:
        costs = [w.cost_bytes for w in row.report.workers if w.ok and w.cost_bytes is not None]
        drops = [row.report.free_memory_before - w.free_memory_after
                 for w in row.report.workers if w.ok]
        if costs:
            copied = _spread(costs)
            per_element = f"{sum(costs) / len(costs) / row.n:.2f} B"
            verdict = _verdict(sum(costs) / len(costs), row.data_bytes, cost.split()[0])
        else:
            copied, per_element, verdict = "failed", "", ""
        if len(costs) < len(row.report.workers):
            copied += f" ({len(costs)} of {len(row.report.workers)})"
        table.append((row.label, _human(row.data_bytes), copied, per_element,
                      _spread(drops) if drops else "", verdict, row.case.why if fork else PICKLED_WHY))
        for w in (*row.report.workers, *([row.report.baseline] if row.report.baseline else [])):
            if not w.ok:
                who = "the baseline worker" if w.index < 0 else f"worker {w.index}"
                notes.append(f"  {row.label}: {who} failed: {w.error}")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) if i in (0, 5) else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(r, widths))) + "  " + r[-1]
             for r in table]
    return "\n".join([head, "", *lines, *notes])


# A worker copies some of the interpreter's own pages (its stack, frames,
# allocator state) whatever the data: measured at 30 to 200 KiB here.
INTERPRETER_ALLOWANCE = MiB


def _verdict(cost: float, data_bytes: int, word: str) -> str:
    """``word`` when a worker copied over 1% of the data beyond the interpreter's allowance.

    Otherwise "shared", unless the allowance is over a quarter of the data:
    then the numbers cannot tell sharing from copying.
    """
    if cost >= 0.01 * data_bytes + INTERPRETER_ALLOWANCE:
        return word
    return "shared" if data_bytes >= 4 * INTERPRETER_ALLOWANCE else "too small to tell"


def _spread(values: List[int]) -> str:
    low, high = _human(min(values)), _human(max(values))
    return low if low == high else f"{low} to {high}"


def _human(count: float) -> str:
    if abs(count) >= GiB:
        return f"{count / GiB:.2f} GiB"
    if abs(count) >= MiB:
        return f"{count / MiB:.1f} MiB"
    return f"{count / 1024:.0f} KiB" if abs(count) >= 1024 else f"{int(count)} B"


def _count(n: int) -> str:
    """10**8 for powers of ten, else 31_622_777."""
    exponent = len(str(n)) - 1
    return f"10**{exponent}" if n == 10**exponent and exponent > 1 else f"{n:_}"


def _side(n: int) -> int:
    return max(1, round(n ** 0.5))


def _round_down(value: float) -> float:
    """Down to two significant digits: 0.5873 -> 0.58."""
    if value <= 0:
        return 0.0
    digits = 1 - math.floor(math.log10(value))
    # The epsilon keeps 0.58 from flooring to 0.57 through binary rounding.
    return math.floor(value * 10**digits + 1e-9) / 10**digits


def stderr_progress() -> Callable[[str], None]:
    """A progress printer to stderr, each line stamped with the seconds since it was made."""
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"cowmem workers [{time.monotonic() - start:6.1f} s] {line}", file=sys.stderr, flush=True)
    return say
