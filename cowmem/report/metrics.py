"""Which benchmarks are copy metrics, what their parameters say, and the explain results.

The suite's results contract: the copy benchmarks are the ``track_`` methods
named below, each with an ``access`` parameter (cowmem's own suite also has
``data`` and ``gc``); ``cowmem.asv.Copies`` subclasses in other projects use
the same three names.  Everything else (timing ratios, ground truth,
platform facts) is never gated by default.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import UnknownNameError
from .results import BenchmarkInfo, Results, Run, display_param, is_measured

COPY_METRICS = ("track_data_mib", "track_child_mib", "track_bytes_per_element")
"""Copied MiB inside the data, copied MiB in the whole child, copied bytes per element."""

# The module of the explain benchmarks: the data's copied MiB by the cause of
# each page's first write (bench_explain.Causes.track_data_mib_by_first_write).
EXPLAIN_MODULE = "bench_explain"


def method(benchmark: str) -> str:
    """``bench_copies.Copies.track_data_mib`` -> ``track_data_mib``."""
    return benchmark.rsplit(".", 1)[-1]


def is_copy_metric(benchmark: str, info: Optional[BenchmarkInfo]) -> bool:
    """A copy benchmark: one of the three names, with an ``access`` parameter."""
    if method(benchmark) not in COPY_METRICS:
        return False
    return info is None or "access" in info.param_names


def select_benchmarks(names: Iterable[str], patterns: Sequence[str],
                      infos: Mapping[str, BenchmarkInfo], copies_only: bool) -> List[str]:
    """The benchmarks to show or gate, sorted.

    ``patterns`` are regular expressions (``-b``); without any, the copy
    metrics when ``copies_only``, else every benchmark.
    """
    try:
        regexes = [re.compile(pattern) for pattern in patterns]
    except re.error as exc:
        raise UnknownNameError(f"bad --bench regular expression: {exc}") from None
    names = sorted(set(names))
    if regexes:
        chosen = [n for n in names if any(regex.search(n) for regex in regexes)]
    elif copies_only:
        chosen = [n for n in names if is_copy_metric(n, infos.get(n))]
    else:
        chosen = names
    if not chosen:
        wanted = ", ".join(patterns) if patterns else "the copy metrics (" + \
            ", ".join(COPY_METRICS) + ")"
        raise UnknownNameError(f"no benchmark matches {wanted}; benchmarks: " + ", ".join(names))
    return chosen


def param_names(benchmark: str, info: Optional[BenchmarkInfo], arity: int) -> Tuple[str, ...]:
    """The benchmark's parameter names; ``param1``... when benchmarks.json has none."""
    if info is not None and len(info.param_names) == arity:
        return info.param_names
    return tuple(f"param{i + 1}" for i in range(arity))


def labels(benchmark: str, info: Optional[BenchmarkInfo],
           combination: Tuple[str, ...]) -> Dict[str, str]:
    """Parameter name -> displayed value; a copy metric without ``data`` gets its class's name.

    A suite with one class per data kind (``ListInt.track_data_mib``, the
    access as parameter) names the kind by the class, in snake case.
    """
    names = param_names(benchmark, info, len(combination))
    shown = {name: display_param(value) for name, value in zip(names, combination)}
    if "data" not in shown and is_copy_metric(benchmark, info):
        shown = {"data": class_kind(benchmark), **shown}
    return shown


def class_kind(benchmark: str) -> str:
    """``bench_numbers.ListInt.track_data_mib`` -> ``list_int``: the kind a class measures."""
    kind = benchmark.split(".")[-2] if benchmark.count(".") >= 2 else benchmark
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def combination_text(shown: Mapping[str, str]) -> str:
    """``data=list_int access=iterate gc=plain``: one combination's parameters."""
    return " ".join(f"{name}={value}" for name, value in shown.items())


def explain_causes(results: Results, run: Run, data: str, access: str
                   ) -> Optional[Dict[str, float]]:
    """MiB of the data's copied pages by the cause of their first write, when explained.

    Read from the explain benchmarks (module ``bench_explain``), whose
    combinations name the pair (``pair="list_int x iterate"``, or ``data``
    and ``access``) and the ``cause``.  None when the run has no explain
    result for the pair; causes that copied nothing are left out.
    """
    causes: Dict[str, float] = {}
    found = False
    for (benchmark, combination), value in run.values.items():
        if not benchmark.startswith(EXPLAIN_MODULE + "."):
            continue
        shown = {name: display_param(v) for name, v in
                 zip(param_names(benchmark, results.info(benchmark), len(combination)),
                     combination)}
        pair = shown.get("pair", f"{shown.get('data')} x {shown.get('access')}")
        if pair != f"{data} x {access}" or "cause" not in shown:
            continue
        found = found or is_measured(value)
        if is_measured(value) and value > 0:
            causes[shown["cause"]] = value
    return causes if found else None

